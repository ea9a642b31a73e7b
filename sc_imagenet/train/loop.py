"""The training loop of the cascaded generator: deterministic, resumable, NaN-safe.

Data come in as callables (image id → RGB, image id → foreground mask), so the loop knows nothing
about manifests. The backbone is frozen; image-level features are computed once per image and kept
(`cache_features`). A checkpoint holds model, optimizer, scheduler, position in the epoch, RNG
states and the log rows so far, so a killed run resumes to exactly the parameters an uninterrupted
run reaches.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sc_imagenet.config import TrainConfig
from sc_imagenet.devices import resolve_device, use_amp
from sc_imagenet.io.checkpoints import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sc_imagenet.matching.backbones import Backbone, Features
from sc_imagenet.matching.builder import make_backbones
from sc_imagenet.matching.cascade import CascadeGenerator, Labels, PairBatch
from sc_imagenet.matching.predictor import PseudoLabelGenerator
from sc_imagenet.train.monitor import TrainMonitor
from sc_imagenet.train.pairs import EpochPlan, Pair

# (the step's pairs, the pixel level's labels) → replacement labels (ablations only)
Relabel = Callable[[list[Pair], list[Labels]], list[Labels]]
# the generator as it stands → figures for the log row (e.g. PCK on held-out pairs); called every `val_every` steps
Validator = Callable[[PseudoLabelGenerator], Mapping[str, float]]


class TrainingDivergedError(RuntimeError):
    """A non-finite loss: training stops and the last good checkpoint is kept."""


@dataclass
class TrainData:
    images_by_wnid: Mapping[str, Sequence[str]]
    load_image: Callable[[str], np.ndarray]  # image id → RGB uint8 (H, W, 3)
    load_fg: Callable[[str, tuple[int, int]], np.ndarray] | None = None  # (id, (H, W)) → float32 mask


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    param_checksum: float | None = None  # sum of all trained parameters (DDP sync checks)


def param_groups(model: CascadeGenerator, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Parameter groups: the token adapters at `adapter_lr` (when set), everything else at `lr`."""
    adapter = list(model.adapter.parameters())
    ids = {id(p) for p in adapter}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": rest}]
    if adapter:
        groups.append({"params": adapter, "lr": cfg.adapter_lr or cfg.lr})
    return groups


class FeatureCache:
    """Image-level features, computed once per image (never per pair) and kept up to `max_bytes`: at
    ImageNet's size every image's tokens would not fit in memory, so images past the budget are encoded
    again when they come back in a later epoch (the same features: the backbone is frozen)."""

    def __init__(self, backbone: Backbone, load_image: Callable[[str], np.ndarray], keep: bool,
                 max_bytes: float = float("inf")) -> None:
        self.backbone, self.load_image, self.keep, self.max_bytes = backbone, load_image, keep, max_bytes
        self.store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.bytes = 0
        self.grid: tuple[int, int] | None = None

    def _add(self, image_id: str, value: tuple[torch.Tensor, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in value)
        if self.keep and self.bytes + size <= self.max_bytes:
            self.store[image_id] = (value[0].clone(), value[1].clone())  # not a view pinning the whole batch
            self.bytes += size

    def get(self, ids: Sequence[str], images: Sequence[np.ndarray], device: torch.device) -> Features:
        missing = [i for i, image_id in enumerate(ids) if image_id not in self.store]
        fresh: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if missing:
            f = self.backbone.encode([images[i] for i in missing])
            self.grid = f.grid
            for j, i in enumerate(missing):
                fresh[ids[i]] = (f.tokens[j].cpu(), f.global_token[j].cpu())
                self._add(ids[i], fresh[ids[i]])
        rows = [self.store.get(i) or fresh[i] for i in ids]
        return Features(torch.stack([r[0] for r in rows]).to(device), self.grid,
                        torch.stack([r[1] for r in rows]).to(device))


def make_optimizer(model: CascadeGenerator, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_teacher(model: CascadeGenerator) -> CascadeGenerator:
    """A frozen copy of the model that an EMA keeps close to it (`ema_update`)."""
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: CascadeGenerator, model: CascadeGenerator, decay: float) -> None:
    """teacher ← decay·teacher + (1 − decay)·model, parameter by parameter (buffers copied)."""
    for t, m in zip(teacher.parameters(), model.parameters(), strict=True):
        t.lerp_(m.detach(), 1.0 - decay)
    for t, m in zip(teacher.buffers(), model.buffers(), strict=True):
        t.copy_(m)


def validate_generator(validate: Validator, backbone: Backbone, model: CascadeGenerator, amp: bool) -> dict[str, float]:
    """Score the model as the `label` stage would read it, then hand it back in training mode."""
    try:
        with torch.no_grad():
            return dict(validate(PseudoLabelGenerator(backbone, model, amp=amp)))
    finally:
        model.train()


def _dist() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside `torchrun`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def train_generator(cfg: TrainConfig, seed: int, data: TrainData, ckpt_dir: Path,
                    backbone_checkpoint: Path | None = None, log: Callable[[str], None] = print,
                    on_step: Callable[[int, int], None] | None = None, device: str | None = None,
                    monitor: TrainMonitor | None = None, validate: Validator | None = None,
                    relabel: Relabel | None = None) -> TrainResult:
    """Train (or resume training) and return the final checkpoint. `on_step(step, total_steps)`.

    Learning curves: every log row holds the losses, each level's β and the logit scale; `monitor` sees each
    step's labels per level and adds its figures (e.g. their accuracy against a truth) to the next row;
    `validate(generator)` runs every `cfg.val_every` steps (0: at each epoch's end) and its figures join that
    step's row. Neither changes what is trained. `relabel(batch, labels)` replaces the pixel level's labels
    (ablations only, see `PairBatch.relabel`).

    Under `torchrun` (a process group is initialised) the model is wrapped in DistributedDataParallel:
    each optimizer step takes `world` consecutive batches of the epoch, one per process; rank 0 writes
    checkpoints and log rows, every rank resumes from the same checkpoint.
    """
    rank, world = _dist()
    device = device or resolve_device(cfg.device)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    backbone, region_backbone = make_backbones(cfg, backbone_checkpoint, device)
    model = CascadeGenerator(backbone.out_dim, cfg).to(device)
    opt = make_optimizer(model, cfg)
    teacher = make_teacher(model) if cfg.label_teacher == "ema" else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)  # constant, as in the paper
    amp = use_amp(cfg.amp, device)
    plan = EpochPlan(data.images_by_wnid, seed, cfg.batch_size, world, rank)  # built once per epoch
    per_epoch = plan.steps_per_epoch
    if per_epoch == 0:
        raise ValueError(f"not enough images for one batch of {cfg.batch_size} same-category pairs from at least "
                         "two categories (batch shifting needs cross-category negatives)")
    total = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * per_epoch)
    step, rows, resumed = 0, [], None
    last = latest_checkpoint(ckpt_dir, on_skip=lambda path, why: log(f"[train] warning: {why}; trying an older one"))
    if last is not None:
        state = load_checkpoint(last, map_location=device)
        model.load_state_dict(state["model"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, rows, resumed = int(state["step"]), list(state["rows"]), int(state["step"])
        set_rng_state(state["rng"])
        log(f"[train] resuming from {last.name} (step {step} of {total})")

    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
            find_unused_parameters=True)  # levels left out of a step (no region pairs) leave params unused

    def checkpoint() -> Path:
        path = checkpoint_path(ckpt_dir, step)
        if rank == 0:
            extra = {} if teacher is None else {"teacher": teacher.state_dict()}
            save_checkpoint(ckpt_dir, step, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                "scheduler": sched.state_dict(), "step": step, "rows": rows,
                                                "rng": rng_state(), "settings": cfg.model_dump(mode="json"),
                                                **extra})
        _barrier(world)
        return path

    cache = FeatureCache(backbone, data.load_image, cfg.cache_features, cfg.feature_cache_gb * 2**30)
    if validate is not None and rank == 0 and step == 0:  # where the curve starts: the untrained read-out
        start = validate_generator(validate, backbone, model, amp)
        rows.append({"step": 0, "epoch": 0, **model.diagnostics(), **start})
    model.train()
    t_log, pairs_since, labels_since = time.perf_counter(), 0, 0
    while step < total:
        epoch, batch = plan.batch(step)
        src_ids, trg_ids = [p[0] for p in batch], [p[1] for p in batch]
        src_img = [data.load_image(i) for i in src_ids]
        trg_img = [data.load_image(i) for i in trg_ids]
        fg = data.load_fg
        pb = PairBatch(src_img, trg_img, cache.get(src_ids, src_img, torch.device(device)),
                       cache.get(trg_ids, trg_img, torch.device(device)),
                       None if fg is None else [fg(i, im.shape[:2]) for i, im in zip(src_ids, src_img, strict=True)],
                       None if fg is None else [fg(i, im.shape[:2]) for i, im in zip(trg_ids, trg_img, strict=True)],
                       None if relabel is None else (lambda labels, b=batch: relabel(b, labels)))
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            losses = net(pb, region_backbone, teacher)
        total_loss = losses["total"]
        if not math.isfinite(float(total_loss.detach())):
            raise TrainingDivergedError(
                f"non-finite loss at step {step} (epoch {epoch}): "
                + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                + f"; the last good checkpoint is kept in {ckpt_dir}")
        opt.zero_grad(set_to_none=True)
        total_loss.backward()
        opt.step()
        sched.step()
        if teacher is not None:
            ema_update(teacher, model, cfg.teacher_decay)
        step += 1
        pairs_since += len(batch) * world
        labels_since += sum(len(lab[0]) for lab in model.last_labels.get("pixel", [])) * world
        if monitor is not None:
            monitor.observe(step, epoch, batch, model.last_labels)
        validate_now = validate is not None and rank == 0 and (
            step % cfg.val_every == 0 if cfg.val_every else step % per_epoch == 0 or step == total)
        if step % cfg.log_every == 0 or step == total or validate_now:
            now = time.perf_counter()
            value = {k: float(v.detach()) for k, v in losses.items()}
            row = {"step": step, "epoch": epoch, "L_I": value.get("image", 0.0), "L_R": value.get("region", 0.0),
                   "L_P": value.get("pixel", 0.0), "total": value["total"],
                   "lr": float(sched.get_last_lr()[0]), "labels_per_pair": labels_since / max(pairs_since, 1),
                   "pairs_per_s": pairs_since / max(now - t_log, 1e-9), **model.diagnostics()}
            if monitor is not None:
                row.update(monitor.flush())
            if validate_now:
                row.update(validate_generator(validate, backbone, model, amp))
            rows.append(row)
            t_log, pairs_since, labels_since = time.perf_counter(), 0, 0
        if step % cfg.checkpoint_every == 0 and step < total:
            checkpoint()
        if on_step is not None:
            on_step(step, total)
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    # resumed at the last step: the checkpoint it resumed from is the result, byte for byte (a repaired
    # generator.pt is then the one that was damaged, and the label stage downstream stays valid)
    final = last if last is not None and resumed == step else checkpoint()
    return TrainResult(final, step, rows, resumed, checksum)
