"""`sc-imagenet pretrain`: train the matcher on a release, or fine-tune it on a benchmark's labelled split.

    sc-imagenet pretrain --release <out>/export/SC-ImageNet --out runs/pre [--epochs 10]
    sc-imagenet pretrain --benchmark spair --data /data/SPair-71k --init runs/pre/matcher.pt --out runs/ft
    sc-imagenet pretrain --benchmark synthetic --data <synthetic root> --limit 100 --out runs/ft

The arguments are declared in `sc_imagenet.cli` (parsing imports no torch); this module checks them, runs
`pretrain.pretrain` behind a progress bar and prints one summary line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sc_imagenet.matcher.settings import MatcherConfig, PretrainSettings

# the settings a command-line flag sets, flag destination → settings field
SETTING_FLAGS = {"batch_size": "batch_size", "lr": "lr", "seed": "seed", "max_steps": "max_steps",
                 "workers": "workers", "checkpoint_every": "checkpoint_every", "val_pairs": "val_pairs"}
CONFIG_FLAGS = {"features": "features", "backbone_checkpoint": "backbone_checkpoint", "grid": "grid"}


class PretrainUsageError(ValueError):
    """Options that do not go together."""


def _source(args: argparse.Namespace):
    from sc_imagenet.matcher.data import BENCHMARK_SOURCES, RELEASE, TrainingSource

    if (args.release is None) == (args.benchmark is None):
        raise PretrainUsageError("give the training data as --release <out>/export/SC-ImageNet or as "
                                 "--benchmark spair|pf-pascal|synthetic --data DIR")
    if args.release is not None:
        if args.data is not None:
            raise PretrainUsageError("--data goes with --benchmark; a release is given with --release alone")
        return TrainingSource(RELEASE, Path(args.release), args.split or "trn", args.limit, 0)
    if args.benchmark not in BENCHMARK_SOURCES:
        raise PretrainUsageError(f"--benchmark {args.benchmark!r}: fine-tuning reads {', '.join(BENCHMARK_SOURCES)}")
    if args.data is None:
        raise PretrainUsageError(f"--benchmark {args.benchmark} needs --data <its folder>")
    split = args.split or ("all" if args.benchmark == "synthetic" else "trn")
    return TrainingSource(args.benchmark, Path(args.data), split, args.limit, args.seed)


def _settings(args: argparse.Namespace) -> tuple[MatcherConfig | None, PretrainSettings]:
    given = {field: getattr(args, flag) for flag, field in SETTING_FLAGS.items() if getattr(args, flag) is not None}
    if args.no_augment:
        given["augment"] = False
    settings = PretrainSettings(**given)
    arch = {field: getattr(args, flag) for flag, field in CONFIG_FLAGS.items() if getattr(args, flag) is not None}
    if arch and args.init is not None:
        raise PretrainUsageError(f"--init {args.init} brings its own architecture; drop "
                                 + ", ".join("--" + k.replace("_", "-") for k in arch))
    if "backbone_checkpoint" in arch:  # a file is recorded absolute, so the matcher loads from any folder
        given = Path(arch["backbone_checkpoint"])
        arch["backbone_checkpoint"] = str(given.resolve() if given.is_file() else given)
    return (MatcherConfig(**arch) if arch else None), settings


def run(args: argparse.Namespace) -> int:
    """Exit 0; 2 with one `error:` line for bad options, data or checkpoints; 3 when training cannot go on."""
    from sc_imagenet.dataset.scimagenet import ReleaseError
    from sc_imagenet.evaluate.benchmarks.base import BenchmarkError
    from sc_imagenet.io.checkpoints import CheckpointError
    from sc_imagenet.io.weights import WeightsError
    from sc_imagenet.matcher.data import MatcherDataError
    from sc_imagenet.matcher.features import FeatureError
    from sc_imagenet.registry import UnknownNameError

    try:
        return _run(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        print(f"error: {problems}", file=sys.stderr)
        return 2
    except (PretrainUsageError, CheckpointError, WeightsError, UnknownNameError, FileNotFoundError, ReleaseError,
            BenchmarkError, MatcherDataError, FeatureError) as exc:  # each names its option or file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from sc_imagenet.matcher.pretrain import MatcherTrainingError

        if isinstance(exc, MatcherTrainingError):
            print(f"error: {exc}", file=sys.stderr)
            return 3
        raise


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sc_imagenet.devices import resolve_device
    from sc_imagenet.matcher.pretrain import pretrain

    source = _source(args)
    config, settings = _settings(args)
    if args.init is not None and not Path(args.init).is_file():
        raise PretrainUsageError(f"--init {args.init} does not exist")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PretrainUsageError(f"--out {out} is not a folder")
    device = resolve_device(args.device)

    bar: Any = None

    def on_step(step: int, total: int, row: dict[str, Any]) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=step - 1, desc="pretrain", unit="step", file=sys.stderr,
                       disable=not sys.stderr.isatty())
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.2f}", epoch=row["epoch"])

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        res = pretrain(source, out, args.init, args.epochs, config=config, settings=settings, device=device, log=log,
                       on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    epochs = res.steps / res.steps_per_epoch
    val = (f", val PCK@0.1 {res.val['val_pck@0.1']:.3f} on {res.val_pairs} pairs (256² frame)" if res.val else "")
    loss = "" if res.last_loss is None else f", last loss {res.last_loss:.2f} px EPE"
    ran = (f"{res.steps - (res.resumed_from or 0)} steps in {res.seconds:.0f} s"
           + (f", resumed at step {res.resumed_from}" if res.resumed_from else ""))
    print(f"matcher: {res.checkpoint} at step {res.steps}/{res.total_steps} ({epochs:.2f} epochs of "
          f"{res.steps_per_epoch} steps on {res.train_pairs} {source.kind} pairs; {ran}{loss}{val}; "
          f"{res.parameters:,} parameters); log {res.log}")
    return 0
