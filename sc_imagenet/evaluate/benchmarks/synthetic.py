"""The project's synthetic data (`sc-imagenet synth --out DIR`) as a benchmark: the pairs of
`sample_eval_pairs(root, n, seed)` (n = `--limit`, 100 if unset), each pair's named keypoints visible
in both images scored, PCK length max side of the target instance's visible-mask box — the same
figures as `python -m sc_imagenet.evaluate` (docs/evaluate.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sc_imagenet.boxes import object_size
from sc_imagenet.evaluate.benchmarks.base import (
    Benchmark,
    BenchmarkError,
    BenchmarkPair,
    BenchmarkSpec,
    register_benchmark,
)
from sc_imagenet.evaluate.pairs import EvalPair, require_synthetic, sample_eval_pairs

DEFAULT_PAIRS = 100
THRESHOLD_RULE = "α × max side of the target instance's visible-mask box"


def to_benchmark_pair(p: EvalPair) -> BenchmarkPair:
    return BenchmarkPair(f"{p.src_id}-{p.trg_id}", p.wnid, p.src_path, p.trg_path, p.src_kps, p.trg_kps, p.valid,
                         np.arange(len(p.src_kps), dtype=np.int64), float(object_size(p.trg_bbox)))


def load(root: Path, split: str, limit: int | None, seed: int) -> Benchmark:
    try:
        require_synthetic(root)
    except FileNotFoundError as exc:
        raise BenchmarkError(str(exc)) from None
    n = DEFAULT_PAIRS if limit is None else limit
    pairs = [to_benchmark_pair(p) for p in sample_eval_pairs(root, n, seed=seed)]
    return Benchmark("synthetic", root, split, f"sampled, seed {seed}", THRESHOLD_RULE, pairs, len(pairs))


register_benchmark(BenchmarkSpec("synthetic", load, ("all",),
                                 "the project's synthetic dataset with exact ground truth (sc-imagenet synth)"))
