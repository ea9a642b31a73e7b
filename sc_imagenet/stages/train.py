"""Stage `train`: the cascaded pseudo-label generator, weakly supervised by category labels only.

Input: the single-instance images (pairs drawn within each category, each image once per epoch)
and their foreground masks. Output: a manifest with one row per logging step, the final generator
checkpoint (`generator.pt`, sha256 in `_stage.json`), and — when the data are synthetic — PCK of
the generator vs. the same backbone's plain mutual nearest neighbours on held-out synthetic pairs.
Checkpoints live in `checkpoints/<fingerprint>/`, so a killed run resumes and a changed setting
starts afresh.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from sc_imagenet.config import BuildConfig, ConfigError
from sc_imagenet.io.images import load_rgb
from sc_imagenet.io.manifest import ShardWriter, file_sha256, read_manifest
from sc_imagenet.io.weights import WeightsError, resolve_weights, weights_sha256
from sc_imagenet.stages.base import Stage, StageContext, StageOutput, register_stage

SCHEMA = pa.schema([
    ("step", pa.int64()),
    ("epoch", pa.int32()),
    ("L_I", pa.float32()),
    ("L_R", pa.float32()),
    ("L_P", pa.float32()),
    ("total", pa.float32()),
    ("lr", pa.float32()),
    ("pairs_per_s", pa.float32()),
    ("status", pa.string()),
])
EVAL_SEED_OFFSET = 500  # held-out synthetic evaluation data: data seed + 500 (never trained on)


def backbone_checkpoint(cfg: BuildConfig) -> Path | None:
    if cfg.train.backbone_checkpoint is None:
        return None
    try:
        path, _ = resolve_weights("backbones", cfg.train.backbone_checkpoint, "train.backbone_checkpoint")
    except WeightsError as exc:
        raise ConfigError(str(exc)) from None
    return path


@register_stage
class TrainStage(Stage):
    name = "train"
    schema_version = 1
    inputs = ("single_instance",)
    description = "weakly supervised training of the cascaded pseudo-label generator"
    tags = ("gpu",)

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        t = cfg.train
        import inspect

        from sc_imagenet.matching.backbones import BACKBONES, list_backbones

        if t.backbone not in list_backbones():
            raise ConfigError(f"train.backbone: unknown backbone {t.backbone!r}; known: {list_backbones()}")
        ckpt = backbone_checkpoint(cfg)
        if ckpt is None and "checkpoint" in inspect.signature(BACKBONES[t.backbone]).parameters:
            raise ConfigError(f"train.backbone_checkpoint: backbone {t.backbone!r} needs local weights (a "
                              "models/registry.yaml entry or a path); nothing is downloaded. The weight-free "
                              "choice is train.backbone: dense-sift")
        # how, not what: device, logging and checkpoint cadence stay out
        how = {"device", "log_every", "checkpoint_every", "cache_features", "eval_pairs"}
        return {"seed": cfg.seed, "data_root": str(data_root),
                "train": {k: v for k, v in t.model_dump(mode="json").items() if k not in how},
                "backbone_sha256": weights_sha256(ckpt) if ckpt else None}

    def run(self, ctx: StageContext) -> StageOutput:
        from sc_imagenet.foreground import ForegroundProvider
        from sc_imagenet.train.loop import TrainData, train_generator

        t = ctx.cfg.train
        si_dir = ctx.inputs["single_instance"]
        kept = read_manifest(si_dir, columns=["image_id", "rel_path", "wnid"], filter=pc.field("keep"))
        by_wnid: dict[str, list[str]] = defaultdict(list)
        paths: dict[str, str] = {}
        for image_id, rel, wnid in zip(*(kept.column(c).to_pylist() for c in ("image_id", "rel_path", "wnid")),
                                       strict=True):
            by_wnid[wnid].append(image_id)
            paths[image_id] = rel
        provider = None if t.foreground == "none" else ForegroundProvider(si_dir, ctx.data_root, t.foreground)
        data = TrainData(
            dict(by_wnid), lambda i: load_rgb(ctx.data_root / paths[i]),
            None if provider is None else (lambda i, hw: provider.mask_for(i, hw)),
        )
        ckpt_root = ctx.stage_dir / "checkpoints"
        for other in ckpt_root.glob("*"):
            if other.name != ctx.fingerprint:
                shutil.rmtree(other, ignore_errors=True)  # checkpoints of other settings cannot resume this run
        bar = tqdm(desc="train", unit="step", disable=not ctx.progress)

        def on_step(step: int, total: int) -> None:
            bar.total = total
            bar.n = step
            bar.refresh()
            ctx.report_progress(step, total)

        result = train_generator(t, ctx.cfg.seed, data, ckpt_root / ctx.fingerprint, backbone_checkpoint(ctx.cfg),
                                 ctx.log, on_step)
        bar.close()
        final = ctx.stage_dir / "generator.pt"
        shutil.copy2(result.checkpoint, final)
        extra: dict[str, Any] = {"checkpoint": str(final), "checkpoint_sha256": file_sha256(final),
                                 "steps": result.steps, "resumed_from_step": result.resumed_from,
                                 "images": sum(len(v) for v in by_wnid.values()), "categories": len(by_wnid)}
        if ctx.cfg.data.source == "synthetic" and t.eval_pairs > 0:
            extra.update(self.evaluate(ctx, final))
        path = ctx.shard()
        with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
            writer.write_many({**r, "status": "logged"} for r in result.rows)
        summary = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in result.rows[-10:]]
        pck = {k: v for k, v in extra.items() if "pck" in k}
        if pck:
            summary.append({"step": "PCK", **pck})
        return StageOutput(len(result.rows), {"logged": len(result.rows)}, [path], 0, extra, summary)

    @staticmethod
    def evaluate(ctx: StageContext, checkpoint: Path) -> dict[str, float]:
        """PCK of the trained generator and of the backbone's mutual nearest neighbours, on held-out
        synthetic pairs (a dataset generated with another seed: no image of it was trained on)."""
        from sc_imagenet.evaluate import evaluate_generator_vs_mnn
        from sc_imagenet.synth import generate_dataset, is_complete

        synth = ctx.cfg.data.synthetic.model_copy(update={"seed": ctx.cfg.data.synthetic.seed + EVAL_SEED_OFFSET,
                                                          "images_per_category": 12, "include_broken": False})
        root = ctx.out_dir / "eval-data"
        if not is_complete(root, synth):
            shutil.rmtree(root, ignore_errors=True)
            generate_dataset(root, synth, progress=False)
        scores = evaluate_generator_vs_mnn(checkpoint, root, ctx.cfg.train.eval_pairs, ctx.cfg.seed,
                                           backbone_checkpoint(ctx.cfg))
        ctx.log("[train] PCK on held-out synthetic pairs: " + ", ".join(f"{k}={v:.3f}" for k, v in scores.items()))
        return scores
