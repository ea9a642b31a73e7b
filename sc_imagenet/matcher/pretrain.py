"""Resumable (pre-)training of the matcher with CATs' objective (docs/matcher.md).

    result = pretrain(Path("<out>/export/SC-ImageNet"), Path("runs/pre"), epochs=10)        # on a release
    result = pretrain(TrainingSource("spair", Path("/data/SPair-71k")), Path("runs/ft"),
                      init=Path("runs/pre/matcher.pt"), epochs=5)                           # fine-tuning

`out_dir/matcher.pt` (`checkpoint.py`) holds the model, the optimizer and the position (step, epoch), and is
rewritten atomically every `checkpoint_every` steps, at every epoch's end and at the last step;
`out_dir/train_log.parquet` holds one row per step (step, epoch, loss, lr, seconds, and after each epoch the
validation PCK). A run that stops (a crash, a kill, Ctrl-C) is continued by calling `pretrain` again with the
same `out_dir`: it loads `matcher.pt` and goes on from its step, and since every batch and every
augmentation is a function of (seed, epoch, position), it reaches the weights an uninterrupted run reaches.
Raising `epochs` (or `max_steps`) on a finished run trains it further; changing anything else is another run
and is refused, naming what differs.

With `init`, training starts from that matcher's weights and architecture with a fresh optimizer: the
paper's protocol of pre-training on SC-ImageNet and fine-tuning on a benchmark's `trn` split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sc_imagenet.io.atomic import atomic_path
from sc_imagenet.io.checkpoints import rng_state, set_rng_state
from sc_imagenet.matcher import functional as fn
from sc_imagenet.matcher.checkpoint import CHECKPOINT_NAME, LOG_NAME, build_matcher, read_matcher, save_matcher
from sc_imagenet.matcher.data import (
    RELEASE,
    MatcherDataError,
    PairDataset,
    StepBatches,
    TrainingPair,
    TrainingSource,
    load_pairs,
    source_of,
    steps_per_epoch,
)
from sc_imagenet.matcher.model import MatcherNet, count_parameters
from sc_imagenet.matcher.settings import MatcherConfig, PretrainSettings

ALPHAS = (0.05, 0.1)
LOG_COLUMNS = ("step", "epoch", "loss", "lr", "seconds", *(f"val_pck@{a}" for a in ALPHAS))

StepCallback = Callable[[int, int, dict[str, Any]], None]  # (step, total steps, the step's log row)


class MatcherTrainingError(RuntimeError):
    """Training cannot go on: a non-finite loss, or an output folder that belongs to another run."""


@dataclass
class PretrainResult:
    checkpoint: Path
    log: Path
    steps: int  # the step the checkpoint is at
    total_steps: int
    steps_per_epoch: int
    train_pairs: int
    val_pairs: int
    parameters: int  # trained parameters
    resumed_from: int | None = None
    seconds: float = 0.0  # this call's training time
    last_loss: float | None = None
    val: dict[str, float] = field(default_factory=dict)  # the last validation (val_pck@α, val_epe)


def learning_rate(settings: PretrainSettings, step: int) -> float:
    """Linear warm-up over `warmup_steps`, then constant: a function of the step alone, so a resumed run
    needs no scheduler state and more epochs never change the steps already taken."""
    if settings.warmup_steps == 0:
        return settings.lr
    return settings.lr * min(1.0, (step + 1) / settings.warmup_steps)


@torch.no_grad()
def validate(net: MatcherNet, dataset: PairDataset, batch_size: int, device: str) -> dict[str, float]:
    """PCK at `ALPHAS` (per keypoint, in the 256 × 256 frame, the target box's max side as length) and the
    mean end-point error, over `dataset` without augmentation."""
    was_training = net.training
    net.eval()
    hits = dict.fromkeys(ALPHAS, 0)
    counted, epe_sum = 0, 0.0
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}
        flow = net(batch["src"], batch["trg"]).flow
        pred = fn.transfer_points(flow, batch["src_kps"], net.cfg.input_size)
        for a in ALPHAS:
            ok, n = fn.pck_hits(pred, batch["trg_kps"], batch["mask"], batch["threshold"], a)
            hits[a] += ok
        counted += n
        _, epe = fn.keypoint_epe(flow, batch["src_kps"], batch["trg_kps"], batch["mask"], net.cfg.input_size)
        epe_sum += float((epe * batch["mask"]).sum())
    net.train(was_training)
    out = {f"val_pck@{a}": hits[a] / max(counted, 1) for a in ALPHAS}
    out["val_epe"] = epe_sum / max(counted, 1)
    return out


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: [r.get(c, math.nan) for r in rows] for c in LOG_COLUMNS},
                     schema=pa.schema([("step", pa.int64()), ("epoch", pa.int64()),
                                       *((c, pa.float64()) for c in LOG_COLUMNS[2:])]))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _run_identity(source: TrainingSource, n_pairs: int, init: Path | None, cfg: MatcherConfig,
                  settings: PretrainSettings) -> dict[str, Any]:
    return {"data": {**source.describe(), "pairs": n_pairs}, "init": None if init is None else str(init.resolve()),
            "config": cfg.model_dump(mode="json"), "settings": settings.run_identity()}


def _differences(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(stored) | set(current)):
        was, now = stored.get(k), current.get(k)
        if isinstance(was, dict) and isinstance(now, dict):
            out += _differences(was, now, f"{prefix}{k}.")
        elif was != now:
            out.append(f"{prefix}{k} ({was!r} there, {now!r} now)")
    return out


def _validation_pairs(source: TrainingSource, n: int, log: Callable[[str], None]) -> list[TrainingPair]:
    val = source.validation()
    if val is None or n == 0:
        return []
    try:
        return load_pairs(val)[:n]
    except ValueError as exc:  # a benchmark copy without its val split: train without validation
        if source.kind == RELEASE:
            raise
        log(f"[pretrain] no validation ({exc})")
        return []


def pretrain(data: Path | str | TrainingSource, out_dir: Path | str, init: Path | str | None = None,
             epochs: int | None = None, *, config: MatcherConfig | None = None,
             settings: PretrainSettings | None = None, device: str = "cpu",
             backbone_checkpoint: Path | None = None, log: Callable[[str], None] = print,
             on_step: StepCallback | None = None) -> PretrainResult:
    """Train (or continue training) a matcher on `data` — a release folder (its `trn` split) or a
    `TrainingSource` — into `out_dir`. `init`: a `matcher.pt` to start from (its architecture; `config` must
    then be None or the same). `epochs` overrides `settings.epochs`. `on_step(step, total, row)` after every
    step. Errors: MatcherDataError / ReleaseError / BenchmarkError for data, MatcherCheckpointError for a bad
    `init` or `matcher.pt`, MatcherTrainingError for a diverged run or an `out_dir` of another run."""
    settings = settings or PretrainSettings()
    if epochs is not None:
        settings = PretrainSettings.model_validate({**settings.model_dump(), "epochs": epochs})
    source = source_of(data)
    out_dir = Path(out_dir)
    ckpt_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
    init = None if init is None else Path(init)

    train_pairs = load_pairs(source)
    if not train_pairs:
        raise MatcherDataError(f"{source.kind} {source.root}: split {source.split!r} holds no pairs to train on")
    val_pairs = _validation_pairs(source, settings.val_pairs, log)

    state = read_matcher(ckpt_path, device) if ckpt_path.exists() else None
    init_state = read_matcher(init, device) if init is not None else None
    base = state if state is not None else init_state
    cfg = MatcherConfig.model_validate(base["config"]) if base is not None else (config or MatcherConfig())
    if config is not None and config != cfg:
        what = f"{ckpt_path} was trained" if state is not None else f"--init {init} is"
        diff = _differences(cfg.model_dump(mode="json"), config.model_dump(mode="json"))
        raise MatcherTrainingError(f"{what} with another architecture: " + "; ".join(diff))
    run = _run_identity(source, len(train_pairs), init, cfg, settings)
    if state is not None and state.get("run") != run:
        diff = _differences(state.get("run") or {}, run)
        raise MatcherTrainingError(f"{ckpt_path} belongs to another run; it differs in: " + "; ".join(diff)
                                   + ". Choose another output folder, or delete it to start over")

    torch.manual_seed(settings.seed)  # the initial weights are a function of the seed
    net = build_matcher(cfg, backbone_checkpoint).to(device)
    if init_state is not None:
        net.load_trainable_state(init_state["model"])
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    per_epoch = steps_per_epoch(len(train_pairs), settings.batch_size)
    total = settings.epochs * per_epoch if settings.max_steps is None else min(settings.max_steps,
                                                                                settings.epochs * per_epoch)
    step, rows, resumed = 0, [], None
    if state is not None:
        net.load_trainable_state(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, rows, resumed = int(state["step"]), list(state.get("rows", [])), int(state["step"])
        set_rng_state(state["rng"])
        log(f"[pretrain] resuming {ckpt_path} at step {step} of {total}" if step < total else
            f"[pretrain] {ckpt_path} is at step {step} of {total}: nothing left to train")

    result = PretrainResult(ckpt_path, log_path, step, total, per_epoch, len(train_pairs), len(val_pairs),
                            count_parameters(net), resumed)
    if rows:
        result.last_loss = rows[-1]["loss"]
        evaluated = [r for r in rows if not math.isnan(r.get("val_pck@0.1", math.nan))]
        if evaluated:
            result.val = {k: evaluated[-1][k] for k in LOG_COLUMNS[5:]}

    def checkpoint() -> None:
        save_matcher(ckpt_path, {
            "config": cfg.model_dump(mode="json"), "model": net.trainable_state(), "optimizer": opt.state_dict(),
            "step": step, "epoch": step // per_epoch, "steps_per_epoch": per_epoch, "total_steps": total,
            "complete": step >= total, "run": run, "rng": rng_state(), "rows": rows})
        write_log(log_path, rows)

    if step >= total:
        if not log_path.exists():
            write_log(log_path, rows)
        return result

    train_set = PairDataset(train_pairs, cfg.input_size, augment=settings.augment)
    val_set = PairDataset(val_pairs, cfg.input_size, augment=False)
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=StepBatches(len(train_pairs), settings.batch_size, settings.seed, step, total),
        num_workers=settings.workers)
    net.train()
    started = time.perf_counter()
    tick = started
    for batch in loader:
        epoch = step // per_epoch
        lr = learning_rate(settings, step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device) for k, v in batch.items()}
        flow = net(batch["src"], batch["trg"]).flow
        loss, _ = fn.keypoint_epe(flow, batch["src_kps"], batch["trg_kps"], batch["mask"], cfg.input_size)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise MatcherTrainingError(f"non-finite loss at step {step} (epoch {epoch}); the last good checkpoint "
                                       f"is kept in {ckpt_path}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        now = time.perf_counter()
        row: dict[str, Any] = {"step": step, "epoch": epoch, "loss": value, "lr": lr, "seconds": now - tick}
        epoch_end = step % per_epoch == 0 or step == total
        if epoch_end and len(val_set):
            result.val = validate(net, val_set, settings.batch_size, device)
            row.update({k: result.val[k] for k in LOG_COLUMNS[5:]})
        rows.append(row)
        if epoch_end or step % settings.checkpoint_every == 0:
            checkpoint()
        result.last_loss = value
        if on_step is not None:
            on_step(step, total, row)
        tick = time.perf_counter()
    result.steps = step
    result.seconds = time.perf_counter() - started
    return result
