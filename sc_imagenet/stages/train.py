"""Stage `train`: the cascaded pseudo-label generator, weakly supervised by category labels only.

Input: the single-instance images (pairs drawn within each category, each image once per epoch)
and their foreground masks. Output: a manifest with one row per logging step; beside it, in the
stage's artifact folder (`<out>/artifacts/train/`), the final generator checkpoint (`generator.pt`,
path and sha256 in `_stage.json`) and the resume points (`checkpoints/<fingerprint>/`, so a killed
run resumes and a changed setting starts afresh). When the data are synthetic, the record also holds
PCK of the generator vs. the same backbone's plain mutual nearest neighbours on held-out pairs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import Field
from tqdm.auto import tqdm

from sc_imagenet.config import BuildConfig, ConfigError
from sc_imagenet.io.integrity import build_relative
from sc_imagenet.io.manifest import ShardWriter, file_sha256
from sc_imagenet.io.weights import WeightsError, resolve_weights, weights_sha256
from sc_imagenet.matching.settings import LEVELS, fingerprint_fields
from sc_imagenet.stages.base import Stage, StageContext, StageFigures, StageOutput, register_stage
from sc_imagenet.stages.schema import column, manifest_schema
from sc_imagenet.stages.single_instance import SingleInstanceStage, foreground_provider, read_kept_images

if TYPE_CHECKING:
    from sc_imagenet.train.loop import TrainData, TrainResult

SCHEMA = manifest_schema(
    column("step", pa.int64(), "optimizer steps done"),
    column("epoch", pa.int32(), "epoch of that step (each image is used once per epoch)"),
    column("L_I", pa.float32(), "image-level loss at that step (0 if the level is not trained)"),
    column("L_R", pa.float32(), "region-level loss at that step (0 if the level is not trained)"),
    column("L_P", pa.float32(), "pixel-level loss at that step (0 if the level is not trained)"),
    column("total", pa.float32(), "λ1 L_I + λ2 L_R + λ3 L_P"),
    column("lr", pa.float32(), "learning rate"),
    column("labels_per_pair", pa.float32(),
           "pseudo-labels per pair the pixel level was trained on since the previous row (at most train.pixel_pairs)"),
    column("pairs_per_s", pa.float32(), "training throughput since the previous row", "pairs/s", volatile=True),
    *(column(f"beta_{lvl}", pa.float32(), f"β of the {lvl} level's volume mix (null: level not trained)",
             diagnostic=True) for lvl in LEVELS),
    column("logit_scale", pa.float32(), "the pixel loss's logit scale (learned by default)", diagnostic=True),
    column("labels_region_pck01", pa.float32(),
           "synthetic data: strict PCK@0.1 of the image level's suspected matches (the regions' centres) since "
           "the previous row; null otherwise", diagnostic=True),
    column("labels_pixel_pck01", pa.float32(),
           "synthetic data: strict PCK@0.1 of the pixel level's pseudo-labels since the previous row; null otherwise",
           diagnostic=True),
    column("val_pck005", pa.float32(),
           "synthetic data: PCK@0.05 of the generator at that step on `train.val_pairs` held-out pairs; null on rows "
           "without a validation", diagnostic=True),
    column("val_pck01", pa.float32(), "as val_pck005, at PCK@0.1", diagnostic=True),
    column("status", pa.string(), "`logged`"),
)
KEPT_COLUMNS = SingleInstanceStage.columns("image_id", "rel_path", "wnid")
EVAL_SEED_OFFSET = 500  # held-out synthetic evaluation data: data seed + 500 (never trained on)


def backbone_checkpoint(cfg: BuildConfig) -> Path | None:
    if cfg.train.backbone_checkpoint is None:
        return None
    try:
        path, _ = resolve_weights("backbones", cfg.train.backbone_checkpoint, "train.backbone_checkpoint")
    except WeightsError as exc:
        raise ConfigError(str(exc)) from None
    return path


def held_out_dataset(cfg: BuildConfig, out_dir: Path) -> Path:
    """`<out>/eval-data`: the synthetic evaluation dataset of a synthetic build, generated with the data seed
    + 500, so none of its images was trained on (made on first use)."""
    from sc_imagenet.synth import generate_dataset, is_complete

    synth = cfg.data.synthetic.model_copy(update={"seed": cfg.data.synthetic.seed + EVAL_SEED_OFFSET,
                                                  "images_per_category": 12, "include_broken": False})
    root = out_dir / "eval-data"
    if not is_complete(root, synth):
        shutil.rmtree(root, ignore_errors=True)
        generate_dataset(root, synth, progress=False)
    return root


def train_data_from_manifest(single_instance_dir: Path, data_root: Path, foreground: str) -> TrainData:
    """The kept images of a `single_instance` manifest as training data, with their foreground masks."""
    from sc_imagenet.train.data import build_train_data  # torch loads only when training runs

    kept = read_kept_images(single_instance_dir, KEPT_COLUMNS)
    image_id, rel_path, wnid = (kept.column(c).to_pylist() for c in KEPT_COLUMNS)
    provider = None if foreground == "none" else foreground_provider(single_instance_dir, data_root, foreground)
    return build_train_data(image_id, rel_path, wnid, data_root,
                            None if provider is None else (lambda i, hw: provider.mask_for(i, hw)))


def launch_torchrun(ctx: StageContext, ckpt_dir: Path) -> TrainResult:
    """Multi-GPU (or multi-process CPU/gloo) training: `torchrun --standalone` runs
    `sc_imagenet.stages.train_worker` in `train.processes` processes; rank 0 reports the result."""
    spec = {"config": ctx.cfg.model_dump(mode="json"), "single_instance_dir": str(ctx.inputs["single_instance"]),
            "data_root": str(ctx.data_root), "ckpt_dir": str(ckpt_dir),
            "backbone_checkpoint": str(backbone_checkpoint(ctx.cfg) or "") or None,
            "result": str(ckpt_dir / "result.json")}
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    spec_path = ckpt_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={ctx.cfg.train.processes}", "-m", "sc_imagenet.stages.train_worker", str(spec_path)]
    ctx.log(f"[train] launching {ctx.cfg.train.processes} processes: {' '.join(cmd[2:])}")
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"distributed training failed (torchrun exit {proc.returncode}); checkpoints in {ckpt_dir}")
    from sc_imagenet.train.loop import TrainResult

    doc = json.loads(Path(spec["result"]).read_text())
    return TrainResult(Path(doc["checkpoint"]), doc["steps"], doc["rows"], doc["resumed_from"])


class TrainFigures(StageFigures):
    """`train`'s record: where the generator is (`label` loads it from here) and, on synthetic data, its PCK on
    held-out pairs next to its backbone's (`mnn_`, `nn_`; `…_ci95` and per-pair figures are kept undeclared)."""

    checkpoint: str  # generator.pt, relative to the build folder
    checkpoint_sha256: str
    steps: int
    resumed_from_step: int | None
    images: int
    categories: int
    eval_pairs: float | None = None
    pck_005: float | None = Field(None, alias="pck@0.05")
    pck_01: float | None = Field(None, alias="pck@0.1")
    mnn_pck_005: float | None = Field(None, alias="mnn_pck@0.05")
    mnn_pck_01: float | None = Field(None, alias="mnn_pck@0.1")
    nn_pck_005: float | None = Field(None, alias="nn_pck@0.05")
    nn_pck_01: float | None = Field(None, alias="nn_pck@0.1")

    def checkpoint_path(self, out_dir: Path) -> Path | None:
        return self.build_path(self.checkpoint, out_dir)

    def pck(self) -> dict[str, tuple[float, float]]:
        """Method (`generator`, `mnn`, `nn`) → its (PCK@0.05, PCK@0.1), for the methods that were measured."""
        pairs = {"generator": (self.pck_005, self.pck_01), "mnn": (self.mnn_pck_005, self.mnn_pck_01),
                 "nn": (self.nn_pck_005, self.nn_pck_01)}
        return {k: (a, b) for k, (a, b) in pairs.items() if a is not None and b is not None}


@register_stage
class TrainStage(Stage):
    name = "train"
    # 2 still: the curve columns (β … val_pck01) came later as nullable diagnostics that readers treat as optional;
    # a bump would retrain every finished generator
    schema_version = 2
    schema = SCHEMA
    figures_model = TrainFigures
    partitioned = False
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
        how = {"device", "log_every", "checkpoint_every", "cache_features", "feature_cache_gb", "eval_pairs",
               "val_pairs", "val_every"}
        return {"seed": cfg.seed, "data_root": str(data_root),
                "train": fingerprint_fields(t, how),
                "backbone_sha256": weights_sha256(ckpt) if ckpt else None}

    def run(self, ctx: StageContext) -> StageOutput:
        from sc_imagenet.train.loop import train_generator  # torch loads only when training runs

        t = ctx.cfg.train
        data = train_data_from_manifest(ctx.inputs["single_instance"], ctx.data_root, t.foreground)
        by_wnid = data.images_by_wnid
        ckpt_root = ctx.artifacts() / "checkpoints"
        for other in ckpt_root.glob("*"):
            if other.name != ctx.fingerprint:
                shutil.rmtree(other, ignore_errors=True)  # checkpoints of other settings cannot resume this run
        bar = tqdm(desc="train", unit="step", disable=not ctx.progress)

        def on_step(step: int, total: int) -> None:
            bar.total = total
            bar.n = step
            bar.refresh()
            ctx.report_progress(step, total)

        ckpt_dir = ckpt_root / ctx.fingerprint
        if t.processes > 1:
            result = launch_torchrun(ctx, ckpt_dir)
        else:
            monitor, validate = self.watchers(ctx)
            result = train_generator(t, ctx.cfg.seed, data, ckpt_dir, backbone_checkpoint(ctx.cfg), ctx.log, on_step,
                                     monitor=monitor, validate=validate)
        bar.close()
        final = ctx.artifacts() / "generator.pt"
        shutil.copy2(result.checkpoint, final)
        extra: dict[str, Any] = {"checkpoint": build_relative(final, ctx.out_dir),
                                 "checkpoint_sha256": file_sha256(final),
                                 "steps": result.steps, "resumed_from_step": result.resumed_from,
                                 "images": sum(len(v) for v in by_wnid.values()), "categories": len(by_wnid)}
        if ctx.cfg.data.source == "synthetic" and t.eval_pairs > 0:
            extra.update(self.evaluate(ctx, final))
        path = ctx.shard()
        with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
            writer.write_many({**r, "status": "logged"} for r in result.rows)
        summary = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in result.rows[-10:]]
        pck = {k: v for k, v in extra.items() if "pck" in k and not k.endswith("_ci95")}
        if pck:
            summary.append({"step": "PCK", **pck})
        return StageOutput(len(result.rows), {"logged": len(result.rows)}, [path], 0, TrainFigures.check(extra),
                           summary, [final])

    @staticmethod
    def watchers(ctx: StageContext) -> tuple[Any, Any]:
        """The learning curves' monitor and validator: on synthetic data, the labels' accuracy against the
        truth and PCK on held-out pairs; nothing elsewhere (no truth)."""
        if ctx.cfg.data.source != "synthetic":
            return None, None
        from sc_imagenet.dataset.quality import TruthOracle
        from sc_imagenet.evaluate.generator import HeldOutPCK
        from sc_imagenet.train.monitor import LabelAccuracy

        oracle = TruthOracle(ctx.data_root)
        monitor = LabelAccuracy(oracle.errors)
        n = ctx.cfg.train.val_pairs
        validate = HeldOutPCK(held_out_dataset(ctx.cfg, ctx.out_dir), n, ctx.cfg.seed) if n else None
        return monitor, validate

    @staticmethod
    def evaluate(ctx: StageContext, checkpoint: Path) -> dict[str, Any]:
        """PCK of the trained generator and of the backbone's mutual nearest neighbours, on held-out
        synthetic pairs (a dataset generated with another seed: no image of it was trained on)."""
        from sc_imagenet.evaluate import evaluate_generator_vs_mnn

        root = held_out_dataset(ctx.cfg, ctx.out_dir)
        scores = evaluate_generator_vs_mnn(checkpoint, root, ctx.cfg.train.eval_pairs, ctx.cfg.seed,
                                           backbone_checkpoint(ctx.cfg))
        ctx.log("[train] PCK on held-out synthetic pairs (per keypoint, 95 % interval over pairs): " + ", ".join(
            f"{k}={v:.3f} [{scores[k + '_ci95'][0]:.3f}, {scores[k + '_ci95'][1]:.3f}]"
            for k, v in scores.items() if k + "_ci95" in scores and "per_pair" not in k))
        return scores
