"""PCK, the SPair-71k way: a predicted point is correct iff its distance to the truth is at most
α · max(w, h) of the TARGET object's box.

Points are float32 (N, 2) (x, y) in original target-image pixels. Boxes are `[x1, y1, x2, y2]` with
exclusive x2/y2 (the synthetic ground truth's visible-mask boxes), so w = x2 − x1 and h = y2 − y1.
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

from sc_imagenet.synth.groundtruth import true_correspondence

DEFAULT_ALPHAS = (0.05, 0.1)


def bbox_threshold(bbox: ArrayLike) -> float:
    """max(x2 − x1, y2 − y1) of a `[x1, y1, x2, y2]` box (exclusive x2/y2): PCK's distance unit."""
    x1, y1, x2, y2 = np.asarray(bbox, np.float64).reshape(4)
    return float(max(x2 - x1, y2 - y1))


def correct_mask(pred_xy: ArrayLike, true_xy: ArrayLike, bbox: ArrayLike, alpha: float) -> np.ndarray:
    """(N,) bool: ‖pred − true‖₂ ≤ alpha · max(w, h) of `bbox`; False where pred is not finite."""
    pred = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    true = np.asarray(true_xy, np.float64).reshape(-1, 2)
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} differ")
    dist = np.linalg.norm(pred - true, axis=1)
    return np.isfinite(dist) & (dist <= alpha * bbox_threshold(bbox))


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
    """Sums correct counts over pairs. `add` takes one pair; `summary` gives the per-keypoint headline
    `pck@α` and the per-pair mean `pck_per_pair@α` (pairs with no valid point are skipped by the latter)."""

    alphas: Sequence[float] = DEFAULT_ALPHAS
    correct: dict[float, int] = field(default_factory=dict)
    per_pair: dict[float, list[float]] = field(default_factory=dict)
    n_points: int = 0
    n_pairs: int = 0

    def add(self, pred_xy: ArrayLike, true_xy: ArrayLike, bbox: ArrayLike, valid: ArrayLike | None = None) -> None:
        n, correct = pck_counts(pred_xy, true_xy, bbox, self.alphas, valid)
        self.n_pairs += 1
        self.n_points += n
        for a in self.alphas:
            self.correct[a] = self.correct.get(a, 0) + correct[a]
            if n:
                self.per_pair.setdefault(a, []).append(correct[a] / n)

    def summary(self, prefix: str = "") -> dict[str, float]:
        out: dict[str, float] = {}
        for a in self.alphas:
            out[prefix + _key(a)] = self.correct.get(a, 0) / self.n_points if self.n_points else float("nan")
        for a in self.alphas:
            scores = self.per_pair.get(a, [])
            out[prefix + f"pck_per_pair@{a:g}"] = float(np.mean(scores)) if scores else float("nan")
        return out
