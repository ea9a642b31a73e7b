"""PCK, the SPair-71k way: a predicted point is correct iff its distance to the truth is at most
α · max(w, h) of the TARGET object's box.

Points are float32 (N, 2) (x, y) in original target-image pixels. Boxes are `[x1, y1, x2, y2]` with
exclusive x2/y2 (the synthetic ground truth's visible-mask boxes), so w = x2 − x1 and h = y2 − y1
(`sc_imagenet.boxes.object_size`, the project's object size).
Non-finite predictions count as wrong.

Aggregation over pairs (`PCKAccumulator`): the headline `pck@α` is per keypoint, i.e. all correct
keypoints / all valid keypoints of all pairs. The per-pair mean (`pck_per_pair@α`, what SPair papers
call "per image") is reported alongside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from sc_imagenet.boxes import object_size
from sc_imagenet.synth.groundtruth import true_correspondence

DEFAULT_ALPHAS = (0.05, 0.1)


def correct_mask(pred_xy: ArrayLike, true_xy: ArrayLike, bbox: ArrayLike, alpha: float) -> np.ndarray:
    """(N,) bool: ‖pred − true‖₂ ≤ alpha · max(w, h) of `bbox`; False where pred is not finite."""
    pred = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    true = np.asarray(true_xy, np.float64).reshape(-1, 2)
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} differ")
    dist = np.linalg.norm(pred - true, axis=1)
    return np.isfinite(dist) & (dist <= alpha * float(object_size(np.reshape(bbox, 4))))


def _key(alpha: float) -> str:
    return f"pck@{alpha:g}"


def pck_counts(pred_xy: ArrayLike, true_xy: ArrayLike, bbox: ArrayLike, alphas: Sequence[float] = DEFAULT_ALPHAS,
               valid: ArrayLike | None = None) -> tuple[int, dict[float, int]]:
    """(number of counted points, {α: number correct}) for one pair; see `pck`."""
    pred = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    true = np.asarray(true_xy, np.float64).reshape(-1, 2)
    keep = np.ones(len(true), bool) if valid is None else np.asarray(valid, bool).reshape(-1)
    if keep.shape != (len(true),) or pred.shape != true.shape:
        raise ValueError(f"shapes differ: pred {pred.shape}, true {true.shape}, valid {keep.shape}")
    return int(keep.sum()), {a: int(correct_mask(pred[keep], true[keep], bbox, a).sum()) for a in alphas}


def pck(pred_xy: ArrayLike, true_xy: ArrayLike, bbox: ArrayLike, alphas: Sequence[float] = DEFAULT_ALPHAS,
        valid: ArrayLike | None = None) -> dict[str, float]:
    """PCK of one pair: {"pck@α": fraction of the (valid) points that are correct, ..., "n": count}.

    pred_xy, true_xy: (N, 2); bbox: the target object's box; valid: optional (N,) bool mask of the points
    that count. With no points counted every PCK is NaN.
    """
    n, correct = pck_counts(pred_xy, true_xy, bbox, alphas, valid)
    out: dict[str, float] = {"n": n}
    for a in alphas:
        out[_key(a)] = correct[a] / n if n else float("nan")
    return out


def dense_pck(root: Path | str, src_id: str, trg_id: str, src_points: ArrayLike, pred_xy: ArrayLike,
              bbox: ArrayLike, alphas: Sequence[float] = DEFAULT_ALPHAS) -> dict[str, float]:
    """PCK of arbitrary source points (e.g. `pairs.sample_object_points`), scored against
    `true_correspondence(root, src_id, trg_id, src_points)`; points without a valid truth (occluded or
    outside in the target) are left out. src_points, pred_xy: (N, 2); bbox: the target object's box."""
    true, valid = true_correspondence(root, src_id, trg_id, src_points)
    return pck(pred_xy, true, bbox, alphas, valid=valid)


@dataclass
class PCKAccumulator:
    """Collects correct counts pair by pair. `add` takes one pair; `summary` gives the per-keypoint headline
    `pck@α` and the per-pair mean `pck_per_pair@α` (pairs with no valid point are skipped by the latter),
    with `intervals=True` also their bootstrap 95 % intervals over pairs (`pck@α_ci95`, ...)."""

    alphas: Sequence[float] = DEFAULT_ALPHAS
    hits: dict[float, list[int]] = field(default_factory=dict)  # per pair, per α
    counts: list[int] = field(default_factory=list)  # valid keypoints per pair

    @property
    def n_points(self) -> int:
        return int(sum(self.counts))

    @property
    def n_pairs(self) -> int:
        return len(self.counts)

    def add(self, pred_xy: ArrayLike, true_xy: ArrayLike, bbox: ArrayLike, valid: ArrayLike | None = None) -> None:
        n, correct = pck_counts(pred_xy, true_xy, bbox, self.alphas, valid)
        self.counts.append(n)
        for a in self.alphas:
            self.hits.setdefault(a, []).append(correct[a])

    def summary(self, prefix: str = "", intervals: bool = False, n_boot: int = 1000,
                seed: int = 0) -> dict[str, object]:
        hits = {a: self.hits.get(a, [0] * self.n_pairs) for a in self.alphas}
        out = summarise_hits(hits, self.counts, self.alphas, intervals, n_boot, seed)
        return {prefix + k: v for k, v in out.items()}


def summarise_hits(hits: dict[float, Sequence[float]], counts: Sequence[float], alphas: Sequence[float],
                   intervals: bool = True, n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
    """`pck@α` (pooled over keypoints), `pck_per_pair@α` (mean over pairs with at least one keypoint) and, with
    `intervals`, their bootstrap 95 % intervals `…_ci95` = [lo, hi], from per-pair correct counts `hits[α]`
    and scored keypoints `counts`."""
    c = np.asarray(counts, np.float64)
    total, scored = c.sum(), c > 0
    out: dict[str, object] = {}
    for a in alphas:
        h = np.asarray(hits[a], np.float64)
        out[_key(a)] = float(h.sum() / total) if total else float("nan")
    for a in alphas:
        h = np.asarray(hits[a], np.float64)
        out[f"pck_per_pair@{a:g}"] = float(np.mean(h[scored] / c[scored])) if scored.any() else float("nan")
    if intervals:
        for a in alphas:
            h = np.asarray(hits[a], np.float64)
            out[f"{_key(a)}_ci95"] = list(bootstrap_interval(h, c, False, n_boot, seed))
            out[f"pck_per_pair@{a:g}_ci95"] = list(bootstrap_interval(h, c, True, n_boot, seed))
    return out


def bootstrap_interval(hits: ArrayLike, counts: ArrayLike, per_pair: bool = False, n_boot: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of a PCK, resampling PAIRS (keypoints of one pair are not independent).

    hits, counts: (P,) correct and scored keypoints of each pair. `per_pair=False` gives the interval of
    the pooled per-keypoint PCK (Σ hits / Σ counts), `per_pair=True` that of the mean of the pairs' own
    PCKs (pairs with no scored keypoint are left out). NaN bounds when there is nothing to resample."""
    h = np.asarray(hits, np.float64).reshape(-1)
    c = np.asarray(counts, np.float64).reshape(-1)
    if h.shape != c.shape:
        raise ValueError(f"hits {h.shape} and counts {c.shape} differ")
    keep = c > 0
    h, c = h[keep], c[keep]
    if not len(h):
        return float("nan"), float("nan")
    idx = np.random.default_rng([seed, 0xB007]).integers(0, len(h), size=(n_boot, len(h)))
    stats = (h / c)[idx].mean(axis=1) if per_pair else h[idx].sum(axis=1) / c[idx].sum(axis=1)
    return _percentile_interval(stats, level)


def _percentile_interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_difference(hits_a: ArrayLike, hits_b: ArrayLike, counts: ArrayLike, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """Per-keypoint PCK of method A minus method B on the SAME pairs, with a paired bootstrap interval
    (both methods resampled with the same pairs, so pair difficulty cancels): (difference, lo, hi)."""
    a, b = np.asarray(hits_a, np.float64).reshape(-1), np.asarray(hits_b, np.float64).reshape(-1)
    c = np.asarray(counts, np.float64).reshape(-1)
    if not (a.shape == b.shape == c.shape):
        raise ValueError(f"hits {a.shape}, {b.shape} and counts {c.shape} differ")
    if c.sum() <= 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng([seed, 0xD1FF]).integers(0, len(c), size=(n_boot, len(c)))
    stats = (a[idx].sum(axis=1) - b[idx].sum(axis=1)) / np.maximum(c[idx].sum(axis=1), 1e-12)
    return float((a.sum() - b.sum()) / c.sum()), *_percentile_interval(stats, level)


def pck_from_distances(distances: Sequence[np.ndarray], thresholds: Sequence[float],
                       alphas: Sequence[float] = DEFAULT_ALPHAS, n_boot: int = 1000,
                       seed: int = 0) -> dict[str, object]:
    """PCK of many pairs from each pair's keypoint distances `‖pred − true‖₂` ((N_p,) per pair, NaN or inf
    = wrong) and its threshold length (a point is correct iff distance ≤ α · threshold, as `correct_mask`):
    `pck@α` (per keypoint, pooled), `pck_per_pair@α` (mean over pairs with at least one keypoint) and their
    bootstrap 95 % intervals `pck@α_ci95`, `pck_per_pair@α_ci95` = [lo, hi] (`bootstrap_interval`)."""
    hits, counts = hits_from_distances(distances, thresholds, alphas)
    return summarise_hits(hits, counts, alphas, True, n_boot, seed)


def hits_from_distances(distances: Sequence[np.ndarray], thresholds: Sequence[float],
                        alphas: Sequence[float] = DEFAULT_ALPHAS) -> tuple[dict[float, list[int]], list[int]]:
    """Per pair: correct keypoints at each α (distance ≤ α · threshold; NaN or inf = wrong) and keypoints."""
    if len(distances) != len(thresholds):
        raise ValueError(f"{len(distances)} distance arrays for {len(thresholds)} thresholds")
    dists = [np.nan_to_num(np.asarray(d, np.float64).reshape(-1), nan=np.inf) for d in distances]
    hits = {a: [int(np.count_nonzero(d <= a * float(t))) for d, t in zip(dists, thresholds, strict=True)]
            for a in alphas}
    return hits, [len(d) for d in dists]
