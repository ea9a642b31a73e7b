"""The trained generator as an evaluation method, and its comparison with mutual nearest neighbours.

    python -m sc_imagenet.evaluate --root DIR --method generator mnn --generator <out>/artifacts/train/generator.pt
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sc_imagenet.evaluate.methods import Method, from_flow, mutual_nn_transfer, nearest_neighbour_flow
from sc_imagenet.evaluate.pairs import sample_eval_pairs
from sc_imagenet.evaluate.registry import MethodContext, register_method
from sc_imagenet.evaluate.run import evaluate


def generator_transfer(checkpoint: Path, device: str = "cpu", backbone_checkpoint: Path | None = None) -> Method:
    """Dense transfer by the generator's pixel-level volume: each point moves by its source cell's
    displacement to its sub-cell best target position (`PseudoLabelGenerator.flow`,
    `from_flow(mode="displacement")`)."""
    from sc_imagenet.matching.builder import load_generator

    return from_flow(load_generator(Path(checkpoint), device, backbone_checkpoint).flow, mode="displacement")


class HeldOutPCK:
    """A validator for training (`train.loop.Validator`): PCK@0.05 / @0.1 per keypoint of a generator, as it
    stands, on the same `n_pairs` held-out pairs every time (`val_pck005`, `val_pck01`)."""

    def __init__(self, root: Path, n_pairs: int, seed: int) -> None:
        self.root, self.seed = Path(root), seed
        self.pairs = sample_eval_pairs(self.root, n_pairs, seed=seed)

    def __call__(self, generator: Any) -> dict[str, float]:
        res = evaluate(from_flow(generator.flow, mode="displacement"), self.pairs, self.root, seed=self.seed)
        return {"val_pck005": float(res["pck@0.05"]), "val_pck01": float(res["pck@0.1"])}


def _factory(ctx: MethodContext) -> Method:
    if "generator" not in ctx.options:
        raise ValueError("the generator method needs --generator <generator.pt>")
    return generator_transfer(ctx.options["generator"], ctx.device, ctx.options.get("backbone_checkpoint"))


register_method("generator", _factory)


def evaluate_generator_vs_mnn(checkpoint: Path, root: Path, n_pairs: int, seed: int,
                              backbone_checkpoint: Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """PCK@0.05/0.1 per keypoint and per pair, each with its bootstrap 95 % interval over pairs (`…_ci95`),
    on the same held-out pairs of the generator (`pck@α`) and of its own frozen backbone
    with mutual nearest neighbours (`mnn_pck@α`, the issue's baseline) and with nearest neighbours
    under the generator's own transfer — sub-cell soft-argmax (T 0.05) and displacement (`nn_pck@α`,
    method `nn-refine-disp`): what training adds on top of the read-out."""
    from sc_imagenet.matching.builder import load_generator

    gen = load_generator(Path(checkpoint), device, backbone_checkpoint)
    pairs = sample_eval_pairs(root, n_pairs, seed=seed)
    runs = {"": from_flow(gen.flow, mode="displacement"), "mnn_": mutual_nn_transfer(gen.backbone),
            "nn_": from_flow(nearest_neighbour_flow(gen.backbone, refine=True), mode="displacement")}
    out: dict[str, Any] = {}
    for prefix, method in runs.items():
        res = evaluate(method, pairs, root, seed=seed)
        out.update({f"{prefix}{k}": v for k, v in res.items() if k.startswith(("pck@", "pck_per_pair@"))})
    out["eval_pairs"] = float(len(pairs))
    return out
