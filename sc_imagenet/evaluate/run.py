"""Keypoint-transfer PCK of one or more methods on a synthetic dataset (docs/evaluate.md).

    .venv/bin/python -m sc_imagenet.evaluate --root builds/demo/data --backbone dense-sift --method nn mnn

The root must already hold a synthetic dataset with ground truth (`<root>/_groundtruth/`, made by
`sc-imagenet synth --out DIR`); nothing is generated here. Prints one table row per method.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sc_imagenet.evaluate.methods import Method
from sc_imagenet.evaluate.pairs import EvalPair, require_synthetic, sample_eval_pairs, sample_object_points
from sc_imagenet.evaluate.pck import DEFAULT_ALPHAS, PCKAccumulator
from sc_imagenet.evaluate.registry import METHODS, MethodContext
from sc_imagenet.io.images import load_rgb
from sc_imagenet.synth.groundtruth import true_correspondence


def evaluate(method: Method, pairs: Sequence[EvalPair], root: Path | str, alphas: Sequence[float] = DEFAULT_ALPHAS,
             dense_points: int = 0, seed: int = 0, accumulator: PCKAccumulator | None = None) -> dict[str, Any]:
    """PCK of `method` over `pairs` (see `sc_imagenet.evaluate.pck` for the convention).

    Each pair's images are loaded with `load_rgb` and the method is called once with the source's named
    keypoints (all of them; only the `valid` ones are scored) followed, if `dense_points` > 0, by that
    many random source object pixels (`sample_object_points`), scored against `true_correspondence`
    as `dense_pck@α` / `dense_pck_per_pair@α`. Returns {"pck@α", "pck_per_pair@α", their bootstrap 95 %
    intervals over pairs "pck@α_ci95", "pck_per_pair@α_ci95" ([lo, hi]), ..., "n_pairs", "n_keypoints",
    "seconds_per_pair"} (the method's own time, image loading excluded). `accumulator` (optional, empty) receives
    the named keypoints' per-pair counts, e.g. to compare two methods pair by pair.
    """
    root = Path(root)
    kp_acc = accumulator if accumulator is not None else PCKAccumulator(tuple(alphas))
    dense_acc = PCKAccumulator(tuple(alphas))
    seconds = 0.0
    for pair in pairs:
        src_rgb, trg_rgb = load_rgb(root / pair.src_path), load_rgb(root / pair.trg_path)
        dense = sample_object_points(root, pair.src_id, dense_points, seed) if dense_points else np.zeros((0, 2))
        query = np.concatenate([pair.src_kps, dense]).astype(np.float32)
        start = time.perf_counter()
        pred = np.asarray(method(src_rgb, trg_rgb, query), np.float32).reshape(-1, 2)
        seconds += time.perf_counter() - start
        if len(pred) != len(query):
            raise ValueError(f"method returned {len(pred)} points for {len(query)} queries")
        n_kp = len(pair.src_kps)
        kp_acc.add(pred[:n_kp], pair.trg_kps, pair.trg_bbox, pair.valid)
        if dense_points:
            true, valid = true_correspondence(root, pair.src_id, pair.trg_id, dense)
            dense_acc.add(pred[n_kp:], true, pair.trg_bbox, valid)
    out: dict[str, Any] = kp_acc.summary(intervals=True, seed=seed)
    if dense_points:
        out.update(dense_acc.summary(prefix="dense_"))
        out["n_dense_points"] = dense_acc.n_points
    out.update(n_pairs=len(pairs), n_keypoints=kp_acc.n_points, seconds_per_pair=seconds / max(len(pairs), 1))
    return out


def format_table(rows: dict[str, dict[str, Any]], alphas: Sequence[float] = DEFAULT_ALPHAS) -> str:
    """Plain-text table, one line per method: headline (per-keypoint) PCK, per-pair PCK (each with its 95 %
    interval when the results have one), counts, time."""
    cols = [f"pck@{a:g}" for a in alphas] + [f"pck_per_pair@{a:g}" for a in alphas]
    extra = [c for c in next(iter(rows.values()), {}) if c.startswith("dense_pck@")]
    cols += [*extra, "n_pairs", "n_keypoints", "seconds_per_pair"]
    width = max([6, *(len(n) for n in rows)])
    lines = ["method".ljust(width) + "  " + "  ".join(cols)]
    for name, res in rows.items():
        cells = [_cell(res, c).rjust(len(c)) for c in cols]
        lines.append(name.ljust(width) + "  " + "  ".join(cells))
    return "\n".join(lines)


def _cell(res: dict[str, Any], col: str) -> str:
    value = res[col]
    if not isinstance(value, float):
        return str(value)
    ci = res.get(f"{col}_ci95")
    return f"{value:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sc_imagenet.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="synthetic dataset root (with _groundtruth/)")
    ap.add_argument("--backbone", default="dense-sift", help="backbone registry name")
    ap.add_argument("--method", nargs="+", default=["nn", "mnn"], choices=sorted(METHODS))
    ap.add_argument("--pairs", type=int, default=100, help="number of evaluation pairs")
    ap.add_argument("--seed", type=int, default=0, help="pair-sampling seed")
    ap.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS))
    ap.add_argument("--input-size", type=int, default=None, help="backbone input side (backbone default if unset)")
    ap.add_argument("--backbone-checkpoint", type=Path, default=None, help="backbone weights (ViT backbones)")
    ap.add_argument("--generator", type=Path, default=None,
                    help="trained generator checkpoint (<out>/artifacts/train/generator.pt) for --method generator")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dense-points", type=int, default=0, help="also score this many random object points/pair")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    try:
        require_synthetic(args.root)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pairs = sample_eval_pairs(args.root, args.pairs, seed=args.seed)
    kwargs: dict[str, Any] = {} if args.input_size is None else {"input_size": args.input_size}
    if args.backbone_checkpoint is not None:
        kwargs["checkpoint"] = args.backbone_checkpoint
    options: dict[str, Any] = {} if args.generator is None else {"generator": args.generator,
                                                                 "backbone_checkpoint": args.backbone_checkpoint}
    ctx = MethodContext(args.backbone, args.device, kwargs, options)
    results = {name: evaluate(METHODS[name](ctx), pairs, args.root, args.alphas, args.dense_points, args.seed)
               for name in args.method}
    print(f"{len(pairs)} pairs from {args.root} (seed {args.seed}), backbone {args.backbone}")
    print(format_table(results, args.alphas))
    if args.json:
        args.json.write_text(json.dumps({"backbone": args.backbone, "seed": args.seed, "results": results}, indent=2))
    return 0
