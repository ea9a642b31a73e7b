"""Train generator variants on one synthetic build and measure each: pseudo-label accuracy while training
(against the synthetic truth) and keypoint-transfer PCK on the build's held-out `eval-data`.

How the generator's settings are chosen (docs/generator.md): on a VALIDATION build (data seed 1, seed 1),
never on the demo, whose figures are the reported test figures.

    sc-imagenet build --config demo --out /tmp/val --set data.synthetic.seed=1 --set seed=1 \\
        --stages categories,index,detect,single_instance --no-prefect
    python benchmarks/generator_sweep.py --build /tmp/val --variants default paper-region volume-residual \\
        --json benchmarks/results/generator-sweep-val.json

Each variant is the build's own `train` config plus the overrides below; every variant trains from the
same seed on the same pairs. Results are appended to `--json` as they finish (a rerun skips variants
already there). Baselines (`--baselines`, no training) are scored once on the same pairs.

Learning curves (docs/generator.md): every variant's log rows are kept under `curve` (losses, β, logit
scale, the strict accuracy of the labels each level passes down); with `--val-every N` they also hold
PCK on `--val-pairs` of the held-out pairs every N steps. The `oracle-labels` variant trains the pixel
level on the true correspondences at its pseudo-labels' source points: what perfect labels would teach
it, i.e. the ceiling of what better labels can buy with this network and backbone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sc_imagenet.config import read_resolved_config
from sc_imagenet.dataset.quality import TruthOracle
from sc_imagenet.evaluate.generator import HeldOutPCK
from sc_imagenet.evaluate.methods import from_flow
from sc_imagenet.evaluate.pairs import sample_eval_pairs
from sc_imagenet.evaluate.pck import PCKAccumulator, bootstrap_interval, paired_difference
from sc_imagenet.evaluate.registry import METHODS, MethodContext
from sc_imagenet.evaluate.run import evaluate
from sc_imagenet.matching.builder import load_generator
from sc_imagenet.stages.train import held_out_dataset, train_data_from_manifest
from sc_imagenet.synth.groundtruth import true_correspondence
from sc_imagenet.train.loop import train_generator
from sc_imagenet.train.monitor import LabelAccuracy

# Every addition to the paper has a switch; the variants below turn them off one at a time.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    # the region level before the audit: one argmax cell pair per region, ≤ region_pairs labels per pair
    "region-argmax": {"region_select": "argmax", "region_matches": 1, "pixel_pairs": 6, "region_pairs": 6},
    "region-argmax-16": {"region_select": "argmax", "region_matches": 1, "region_pairs": 16},
    "regions-8x2": {"region_pairs": 8, "region_matches": 2},
    "regions-4x4": {"region_pairs": 4, "region_matches": 4},
    "regions-6x4": {"region_pairs": 6, "region_matches": 4},
    "regions-6x8": {"region_pairs": 6, "region_matches": 8},
    "regions-8x4": {"region_pairs": 8, "region_matches": 4},
    "volume-residual": {"volume_mix": "residual"},
    "volume-mvam": {"volume_mix": "mvam"},
    "no-adapter": {"adapter_levels": []},
    "rhm-relu": {"rhm_appearance": "relu"},
    "rhm-no-debias": {"rhm_debias": False},
    "fixed-logit-scale": {"learn_logit_scale": False},
    "pixel-bce": {"pixel_loss": "bce"},
    "pixel-ce": {"pixel_loss": "ce"},
    # candidates against "the generator does not learn" (issue: learning curves); each is a train switch
    "beta-0.5": {"beta_init": 0.5},
    "ema-teacher": {"label_teacher": "ema", "teacher_decay": 0.99},
    "label-keep-0.5": {"label_keep": 0.5},
    "adamw": {"optimizer": "adamw", "lr": 3e-4, "adapter_lr": 3e-4},
    "adapter-conv": {"adapter_kind": "conv3"},
    "oracle-labels": {},  # the default network trained on true labels (see the module docstring)
}
ORACLE = "oracle-labels"


def true_labels(root: Path) -> Any:
    """A `relabel` hook: each pseudo-label's target replaced by the true correspondence of its source point;
    labels whose source point has none (off the object) are dropped."""

    def relabel(batch: list, labels: list) -> list:
        out = []
        for (src_id, trg_id, _), (sxy, _txy, score) in zip(batch, labels, strict=True):
            if not len(sxy):
                out.append((sxy, _txy, score))
                continue
            true, valid = true_correspondence(root, src_id, trg_id, sxy)
            out.append((sxy[valid], true[valid].astype(np.float32), score[valid]))
        return out

    return relabel


def label_summary(monitor: LabelAccuracy) -> dict[str, Any]:
    """Strict PCK@0.1 of the pixel level's labels per epoch (with an interval over pairs) and labels per pair,
    and the image level's (`labels_region_…`)."""
    out: dict[str, Any] = {}
    for level, prefix in (("pixel", "labels"), ("region", "labels_region")):
        for epoch, (hits, counts) in monitor.epoch_summary(level).items():
            out[f"{prefix}_pck@0.1_epoch{epoch}"] = float(hits.sum() / max(counts.sum(), 1))
            out[f"{prefix}_pck@0.1_epoch{epoch}_ci95"] = list(bootstrap_interval(hits, counts))
            out[f"{prefix}_per_pair_epoch{epoch}"] = float(counts.mean())
    return out


def score(method: Any, pairs: list, root: Path, seed: int) -> dict[str, Any]:
    """PCK per keypoint and per pair with intervals, and the per-pair correct counts (`hits@α`, `counts`) that
    `paired_vs` compares on the same pairs."""
    acc = PCKAccumulator()
    res = evaluate(method, pairs, root, seed=seed, accumulator=acc)
    out = {k: v for k, v in res.items() if k.startswith(("pck@", "pck_per_pair@"))}
    out.update({f"hits@{a:g}": acc.hits[a] for a in acc.alphas}, counts=acc.counts)
    return out


def paired_vs(row: dict[str, Any], ref: dict[str, Any], seed: int) -> dict[str, list[float]]:
    """`row` minus `ref` per keypoint on the same pairs, with a paired bootstrap interval."""
    return {f"diff_vs_default@{a}": list(paired_difference(row[f"hits@{a}"], ref[f"hits@{a}"], row["counts"],
                                                            seed=seed)) for a in ("0.05", "0.1")}


def brief(row: dict[str, Any]) -> dict[str, Any]:
    """A result row for the console: floats rounded; intervals and the per-pair counts (kept in `--json` for
    `paired_vs`) left out."""
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
            if "ci95" not in k and not k.startswith(("hits@", "counts", "curve"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", type=Path, required=True, help="a synthetic build with `single_instance` done")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--baselines", nargs="*", default=["nn", "mnn", "nn-refine-disp", "nn-rhm"])
    parser.add_argument("--eval-pairs", type=int, default=200)
    parser.add_argument("--val-every", type=int, default=0,
                        help="score --val-pairs held-out pairs every N steps while training (0: no curve of PCK)")
    parser.add_argument("--val-pairs", type=int, default=100)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra train overrides for every variant (YAML values)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--keep", type=Path, default=None,
                        help="folder to keep each variant's generator in (<variant>.pt), e.g. to score the one "
                        "chosen here on a test set with `sc-imagenet eval --method generator --generator …`")
    args = parser.parse_args()
    import yaml

    cfg = read_resolved_config(args.build)
    if cfg is None:
        raise SystemExit(f"{args.build} has no config.resolved.yaml: build it first (see this script's docstring)")
    data_root = Path(cfg.data.root) if cfg.data.root else args.build / "data"
    eval_root = held_out_dataset(cfg, args.build)
    pairs = sample_eval_pairs(eval_root, args.eval_pairs, seed=cfg.seed)
    results: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {}
    results.setdefault("build", str(args.build))
    results.setdefault("eval_pairs", len(pairs))
    ctx = MethodContext(cfg.train.backbone, "cpu", {"input_size": cfg.train.input_size})
    for name in args.baselines:
        if f"baseline:{name}" not in results:
            results[f"baseline:{name}"] = score(METHODS[name](ctx), pairs, eval_root, cfg.seed)
            args.json.write_text(json.dumps(results, indent=1))
            print(name, brief(results[f"baseline:{name}"]), flush=True)
    extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    data = train_data_from_manifest(args.build / "manifests" / "single_instance", data_root, cfg.train.foreground)
    oracle = TruthOracle(data_root)
    validate = HeldOutPCK(eval_root, args.val_pairs, cfg.seed) if args.val_every else None
    for name in args.variants:
        if name in results:
            continue
        tcfg = cfg.train.model_validate({**cfg.train.model_dump(), **extra, **VARIANTS[name], "eval_pairs": 0,
                                         "device": "cpu", "checkpoint_every": 10_000, "val_every": args.val_every})
        monitor = LabelAccuracy(oracle.errors)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = train_generator(tcfg, cfg.seed, data, Path(tmp), log=lambda _: None, monitor=monitor,
                                  validate=validate, relabel=true_labels(data_root) if name == ORACLE else None)
            wall = time.perf_counter() - t0
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy2(res.checkpoint, args.keep / f"{name}.pt")
            gen = load_generator(res.checkpoint)
            row = {"overrides": {**extra, **VARIANTS[name]}, "train_s": round(wall, 1), **label_summary(monitor),
                   "curve": [{k: v for k, v in r.items() if k != "pairs_per_s"} for r in res.rows],
                   "beta": {k: round(float(v.detach()), 4) for k, v in gen.model.beta.items()},
                   "logit_scale": float(gen.model.pixel_log_scale.detach().exp()),
                   **score(from_flow(gen.flow, mode="displacement"), pairs, eval_root, cfg.seed)}
        if name != "default" and "hits@0.1" in results.get("default", {}):
            row.update(paired_vs(row, results["default"], cfg.seed))
        results[name] = row
        args.json.write_text(json.dumps(results, indent=1))
        print(name, brief(row), flush=True)


if __name__ == "__main__":
    main()
