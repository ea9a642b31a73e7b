"""Pseudo-label quality against the synthetic ground truth (`sc_imagenet.synth.true_correspondence`).

A label (P_s → P_t) is *strictly* correct at α when its source point lies on the source object (the
ground truth has a true location for it, visible in the target) and ‖P_t − true‖ ≤ α · max side of
the target object's true (visible-mask) box. A label on the background counts as wrong: it teaches
a model nothing. Beside it: the fraction of source points on the object, and PCK over on-object
points only. Figures are per keypoint (pooled) and per pair (mean over pairs), with a bootstrap
95 % interval over pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sc_imagenet.boxes import object_size
from sc_imagenet.evaluate.pck import bootstrap_interval
from sc_imagenet.synth.groundtruth import load_groundtruth, true_correspondence

ALPHAS = (0.05, 0.1)


@dataclass(frozen=True)
class LabelTruth:
    """Per label of one pair: `on_object` (K,) bool and `error` (K,) in target-object sizes (inf off the object)."""

    on_object: np.ndarray
    error: np.ndarray

    def subset(self, idx: np.ndarray) -> LabelTruth:
        return LabelTruth(self.on_object[idx], self.error[idx])


class TruthOracle:
    """Scores labels of a synthetic dataset; caches the true target-object sizes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        gt = load_groundtruth(self.root)
        inst = gt.instances[gt.instances["instance"] == 0]
        sizes = object_size(np.asarray(list(inst["bbox"]), np.float64).reshape(-1, 4))
        self._size = dict(zip(map(str, inst["image_id"]), sizes.tolist(), strict=True))

    def object_size(self, image_id: str) -> float:
        return self._size.get(image_id, float("nan"))

    def truth(self, src_id: str, trg_id: str, src_xy: np.ndarray, trg_xy: np.ndarray) -> LabelTruth:
        src_xy = np.asarray(src_xy, np.float32).reshape(-1, 2)
        trg_xy = np.asarray(trg_xy, np.float32).reshape(-1, 2)
        if len(src_xy) == 0:
            return LabelTruth(np.zeros(0, bool), np.zeros(0, np.float64))
        true, valid = true_correspondence(self.root, src_id, trg_id, src_xy)
        size = self.object_size(trg_id)
        err = np.linalg.norm(trg_xy.astype(np.float64) - true, axis=1) / size
        return LabelTruth(valid, np.where(valid & np.isfinite(err), err, np.inf))

    def errors(self, src_id: str, trg_id: str, src_xy: np.ndarray, trg_xy: np.ndarray) -> np.ndarray:
        """Each label's true error in target-object sizes (inf off the object): `train.monitor.TruthFn`."""
        return self.truth(src_id, trg_id, src_xy, trg_xy).error


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties; NaN pairs dropped)."""
    frame = pd.DataFrame({"x": np.asarray(x, np.float64), "y": np.asarray(y, np.float64)}).dropna()
    if len(frame) < 3:
        return float("nan")
    rx, ry = frame["x"].rank().to_numpy(), frame["y"].rank().to_numpy()  # average ranks
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def summarize(truths: Sequence[LabelTruth], alphas: Sequence[float] = ALPHAS, seed: int = 0) -> dict[str, float]:
    """Strict PCK per keypoint and per pair, the on-object fraction and PCK over on-object points,
    with a bootstrap interval for strict PCK@0.1 (per keypoint)."""
    truths = [t for t in truths if len(t.error)]
    points = sum(len(t.error) for t in truths)
    out: dict[str, float] = {"pairs": len(truths), "points": points}
    if not points:
        return out
    err = np.concatenate([t.error for t in truths])
    on = np.concatenate([t.on_object for t in truths])
    out["on_object"] = round(float(on.mean()), 4)
    for a in alphas:
        out[f"strict_pck@{a:g}"] = round(float((err <= a).mean()), 4)
        out[f"strict_pck_per_pair@{a:g}"] = round(float(np.mean([(t.error <= a).mean() for t in truths])), 4)
        out[f"on_object_pck@{a:g}"] = round(float((err[on] <= a).mean()), 4) if on.any() else float("nan")
    hits = [(t.error <= 0.1).sum() for t in truths]
    lo, hi = bootstrap_interval(hits, [len(t.error) for t in truths], seed=seed)
    out["strict_pck@0.1_ci95"] = [round(lo, 4), round(hi, 4)]  # type: ignore[assignment]
    return out


def image_true_accuracy(edge_src_ids: Sequence[str], truths: Sequence[LabelTruth], image_ids: Sequence[str],
                        alpha: float = 0.1) -> np.ndarray:
    """Per image of `image_ids`: strict PCK@alpha over all candidates of its outgoing edges (`truths`, one
    per edge, in the order of `edge_src_ids`); NaN for an image without a scored candidate. The "true
    accuracy" an image's consistency score is compared with (Spearman)."""
    acc: dict[str, list[np.ndarray]] = {}
    for s, t in zip(edge_src_ids, truths, strict=True):
        acc.setdefault(s, []).append(t.error <= alpha)
    return np.array([np.concatenate(acc[s]).mean() if s in acc and sum(map(len, acc[s])) else np.nan
                     for s in image_ids])


METHOD_POINT_OFFSETS = {"loop3": "point_offset", "loop2": "point_fb_offset"}


def _points(kps: object) -> np.ndarray:
    return np.asarray(kps if kps is not None else [], np.float32).reshape(-1, 2)


def _method_points(edge: object, method: str, truth: LabelTruth, keypoints: int, threshold: float,
                   seed: int, point_order: str) -> np.ndarray | None:
    """Indices of the `keypoints` labels a method keeps for one edge (None if it cannot reach that many)."""
    from sc_imagenet.dataset.selection import choose_points

    k = len(truth.error)
    if method in METHOD_POINT_OFFSETS:
        return choose_points(getattr(edge, METHOD_POINT_OFFSETS[method]), threshold, keypoints, point_order)[0]
    if k < keypoints:
        return None
    if method == "score":
        return np.arange(keypoints)
    if method == "oracle":
        return np.argsort(truth.error, kind="stable")[:keypoints]
    rng = np.random.default_rng([seed, len(truth.error)])
    return np.sort(rng.choice(k, keypoints, replace=False))


def evaluate_dataset(oracle: TruthOracle, edges: pd.DataFrame, images: pd.DataFrame, chosen: pd.DataFrame,
                     fraction: float, keypoints: int, threshold: float, seed: int,
                     point_order: str = "score") -> dict[str, object]:
    """Every quality figure of the dataset half on synthetic data (docs/dataset.md).

    edges: one row per edge with `src_id, trg_id, wnid, src_kps, trg_kps` (all candidates, label order)
    and the consistency columns `point_offset`, `point_fb_offset`; images: one row per source image with
    `src_id, wnid, selected` and the image scores; chosen: the `select` rows (`keep`, final `src_kps`,
    `trg_kps`). Returns nested dicts of `summarize` outputs plus Spearman and the method comparison.
    """
    from sc_imagenet.dataset.selection import IMAGE_SCORE_COLUMNS, select_top

    truths = [oracle.truth(e.src_id, e.trg_id, _points(e.src_kps), _points(e.trg_kps))
              for e in edges.itertuples(index=False)]
    selected = dict(zip(images["src_id"], images["selected"], strict=True))
    both = np.array([selected.get(s, False) and selected.get(t, False)
                     for s, t in zip(edges["src_id"], edges["trg_id"], strict=True)], bool)
    src_sel = np.array([selected.get(s, False) for s in edges["src_id"]], bool)
    top = [t.subset(np.arange(min(keypoints, len(t.error)))) for t in truths]
    filtered = []
    for e, t in zip(edges.itertuples(index=False), truths, strict=True):
        off = np.asarray(e.point_offset, np.float64)
        filtered.append(t.subset(np.flatnonzero(np.isfinite(off) & (off <= threshold))))
    kept = chosen[chosen["keep"]]
    exported = [oracle.truth(r.src_id, r.trg_id, _points(r.src_kps), _points(r.trg_kps))
                for r in kept.itertuples(index=False)]
    edge_pos = {(s, t): i for i, (s, t) in enumerate(zip(edges["src_id"], edges["trg_id"], strict=True))}
    kept_top = [top[edge_pos[(r.src_id, r.trg_id)]] for r in kept.itertuples(index=False)]

    true_acc = image_true_accuracy(edges["src_id"], truths, images["src_id"])
    out: dict[str, object] = {
        "candidates": summarize(truths, seed=seed),
        "raw_topk": summarize(top, seed=seed),
        "filtered_candidates": summarize(filtered, seed=seed),
        "exported": summarize(exported, seed=seed),
        "exported_pairs_unfiltered_topk": summarize(kept_top, seed=seed),
        "selected_image_pairs": summarize([t for t, b in zip(top, both, strict=True) if b], seed=seed),
        "rejected_image_pairs": summarize([t for t, b in zip(top, src_sel, strict=True) if not b], seed=seed),
        "spearman": round(spearman(images["score"], true_acc), 4),
    }
    # the same selection rate with each ranking; the point rule follows the ranking's own signal
    scopes = list(images["wnid"])
    ids = list(images["src_id"])
    comparison: dict[str, dict[str, float]] = {}
    for method in ("loop3", "loop2", "score", "random", "oracle"):
        if method in IMAGE_SCORE_COLUMNS:
            score = images[IMAGE_SCORE_COLUMNS[method]].to_numpy(np.float64)
        elif method == "random":
            score = np.random.default_rng([seed, 7]).random(len(images))
        else:
            score = true_acc
        sel, _ = select_top(score, scopes, ids, fraction)
        chosen_ids = {i for i, k in zip(ids, sel, strict=True) if k}
        mask = [s in chosen_ids and t in chosen_ids for s, t in zip(edges["src_id"], edges["trg_id"], strict=True)]
        pairs = [t for t, m in zip(top, mask, strict=True) if m]
        final = []
        for e, t, m in zip(edges.itertuples(index=False), truths, mask, strict=True):
            pick = _method_points(e, method, t, keypoints, threshold, seed, point_order) if m else None
            if pick is not None:
                final.append(t.subset(pick))
        a, b = summarize(pairs, seed=seed), summarize(final, seed=seed)
        comparison[method] = {
            "spearman": round(spearman(score, true_acc), 4),
            "selected_pairs_topk_strict_pck@0.1": a.get("strict_pck@0.1", float("nan")),
            "selected_pairs_topk_ci95": a.get("strict_pck@0.1_ci95"),
            "final_labels_strict_pck@0.1": b.get("strict_pck@0.1", float("nan")),
            "final_labels_ci95": b.get("strict_pck@0.1_ci95"),
            "final_labels_on_object": b.get("on_object", float("nan")),
            "final_pairs": b.get("pairs", 0),
        }
    out["comparison"] = comparison
    return out


def quality_line(q: dict[str, Any]) -> str:
    """One line of the headline figures (`sc-imagenet status`, the build summary)."""

    def pck(key: str) -> str:
        part = q.get(key, {})
        return f"{part.get('strict_pck@0.1', float('nan')):.3f}"

    return (f"strict PCK@0.1: candidates {pck('candidates')}, raw top-k {pck('raw_topk')}, exported "
            f"{pck('exported')} (on object {q.get('exported', {}).get('on_object', float('nan')):.2f}); "
            f"selected-image pairs {pck('selected_image_pairs')} vs rejected {pck('rejected_image_pairs')}; "
            f"Spearman(score, true accuracy) {q.get('spearman', float('nan')):.2f}")
