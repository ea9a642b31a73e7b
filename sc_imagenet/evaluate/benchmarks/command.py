"""`sc-imagenet eval`: score registered methods on a benchmark folder (docs/evaluate.md).

    sc-imagenet eval --benchmark pf-willow --root /data/PF-WILLOW --method nn nn-rhm \\
        [--generator generator.pt] [--limit 100] [--predictions out.parquet] [--json out.json]

Order of work: the method names, the generator checkpoint and the output folders are checked, then the benchmark
is loaded (every annotation it needs is read and validated, so a missing or malformed file stops the
run here, naming it), then the methods are built and each is scored with a progress bar over pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sc_imagenet.evaluate.benchmarks.base import BENCHMARKS, BenchmarkError, load_benchmark
from sc_imagenet.evaluate.benchmarks.score import (
    format_differences,
    format_results,
    merge_columns,
    paired_differences,
    score_benchmark,
    write_predictions,
)
from sc_imagenet.io.checkpoints import CheckpointError, load_checkpoint
from sc_imagenet.registry import UnknownNameError

DEFAULT_BACKBONE = "dense-sift"


def generator_backbone(checkpoint: Path) -> tuple[str, int]:
    """(backbone name, input size) a generator checkpoint was trained with."""
    from sc_imagenet.matching.settings import GeneratorConfig

    cfg = GeneratorConfig.from_settings(load_checkpoint(checkpoint, map_location="cpu")["settings"])
    return cfg.backbone, cfg.input_size


def _check_output(path: Path | None, flag: str) -> None:
    if path is None:
        return
    if path.exists() and path.is_dir():
        raise BenchmarkError(f"{flag} {path} is a folder")
    parent = path.parent
    while not parent.exists():  # the folder is created on write; its nearest existing parent must be a folder
        parent = parent.parent
    if not parent.is_dir():
        raise BenchmarkError(f"{flag} {path}: {parent} is not a folder")


def run(args: argparse.Namespace) -> int:
    """The `eval` subcommand (its arguments are defined in `sc_imagenet.cli`, so that parsing imports no
    torch). Exit 0, or 2 with a one-line error for a bad name, root, file or option."""
    try:
        return _run(args)
    except (BenchmarkError, UnknownNameError, FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from sc_imagenet.devices import resolve_device
    from sc_imagenet.evaluate import METHODS, MethodContext  # also registers "generator" and "matcher"

    BENCHMARKS[args.benchmark]  # unknown name: UnknownNameError listing the known ones
    for name in args.method:
        METHODS[name]
    if getattr(args, "reference", None) is None:
        args.reference = args.method[0]
    elif args.reference not in args.method:
        raise BenchmarkError(f"--reference {args.reference} is not one of --method {' '.join(args.method)}")
    generator = Path(args.generator) if args.generator else None
    if "generator" in args.method and generator is None:
        raise BenchmarkError("--method generator needs --generator <out>/artifacts/train/generator.pt")
    if generator is not None and not generator.is_file():
        raise BenchmarkError(f"--generator {generator} does not exist")
    matcher = getattr(args, "matcher", None)
    if "matcher" in args.method and matcher is None:
        raise BenchmarkError("--method matcher needs --matcher <DIR>/matcher.pt (written by sc-imagenet pretrain)")
    if matcher is not None and not Path(matcher).is_file():
        raise BenchmarkError(f"--matcher {matcher} does not exist")
    _check_output(args.predictions, "--predictions")
    _check_output(args.json, "--json")

    backbone, input_size = args.backbone, args.input_size
    if generator is not None and (backbone is None or input_size is None):
        trained_backbone, trained_size = generator_backbone(generator)  # baselines on the generator's own backbone
        backbone = backbone or trained_backbone
        input_size = input_size or trained_size
    backbone = backbone or DEFAULT_BACKBONE

    bench = load_benchmark(args.benchmark, args.root, args.split, args.limit, args.seed)

    kwargs: dict[str, Any] = {} if input_size is None else {"input_size": input_size}
    if args.backbone_checkpoint is not None:
        kwargs["checkpoint"] = args.backbone_checkpoint
    options: dict[str, Any] = {"backbone_checkpoint": args.backbone_checkpoint}
    if generator is not None:
        options["generator"] = generator
    if matcher is not None:
        options["matcher"] = Path(matcher)
    ctx = MethodContext(backbone, resolve_device(args.device), kwargs, options)
    results, columns = [], []
    for name in args.method:
        res, cols = score_benchmark(METHODS[name](ctx), bench, tuple(args.alphas), name, seed=args.seed)
        res.update(backbone=backbone, input_size=input_size, generator=None if generator is None else str(generator),
                   matcher=None if matcher is None else str(matcher))
        results.append(res)
        columns.append(cols)
    print(format_results(results, args.alphas))
    diffs = []
    if len(results) > 1:
        diffs = paired_differences(results, columns, args.method.index(args.reference), tuple(args.alphas),
                                   seed=args.seed)
        print(format_differences(diffs, args.alphas))
    if args.predictions is not None:
        write_predictions(args.predictions, merge_columns(columns))
        print(f"predictions: {args.predictions} ({len(columns[0]['pair_id'])} keypoints × {len(columns)} method(s))")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results, "differences": diffs}, indent=2, default=str) + "\n")
    return 0
