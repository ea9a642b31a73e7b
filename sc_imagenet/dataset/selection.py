"""Selection (paper §3.4–3.5): rank images, keep the top fraction, split by group, pick each pair's
keypoints and each image's pairs. Pure functions on arrays; `stages/select.py` wires them."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

# the image score each ranking (`select.rank_by`) reads, by its column in `consistency`'s image table
IMAGE_SCORE_COLUMNS = {"loop3": "consistent", "loop2": "fb_consistent", "score": "match_score"}


def stable_uniform(seed: int, *keys: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, keys): the same on every machine and run."""
    rng = np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])
    return float(rng.random())


def top_count(n: int, fraction: float) -> int:
    """How many of `n` images the top `fraction` keeps: rounded half up, at least one of a non-empty set."""
    return 0 if n == 0 else max(1, min(n, math.floor(n * fraction + 0.5)))


def rank_within(scores: np.ndarray, scopes: Sequence[str], tiebreak: Sequence[str]) -> np.ndarray:
    """Rank (0 = best) of every image within its scope, by decreasing score; NaN scores rank last,
    ties broken by `tiebreak` (image ids) so the order never depends on input order."""
    scores = np.asarray(scores, np.float64)
    key = np.where(np.isfinite(scores), -scores, np.inf)
    order = sorted(range(len(scores)), key=lambda i: (scopes[i], key[i], tiebreak[i]))
    ranks = np.zeros(len(scores), np.int64)
    current, r = None, 0
    for i in order:
        if scopes[i] != current:
            current, r = scopes[i], 0
        ranks[i] = r
        r += 1
    return ranks


def select_top(scores: np.ndarray, scopes: Sequence[str], tiebreak: Sequence[str],
               fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(selected (N,) bool, rank (N,)): the top `fraction` of each scope (a category, or one global scope)."""
    ranks = rank_within(scores, scopes, tiebreak)
    sizes: dict[str, int] = {}
    for s in scopes:
        sizes[s] = sizes.get(s, 0) + 1
    keep = np.array([ranks[i] < top_count(sizes[s], fraction) for i, s in enumerate(scopes)], bool)
    return keep, ranks


def val_groups(groups: Sequence[tuple[str, int, int]], val_fraction: float, seed: int) -> set[tuple[str, int]]:
    """Whole groups `(wnid, group, weight)` for the val split: groups in a seeded order until they hold
    `val_fraction` of the total weight (the `select` stage weighs a group by its kept pairs), rounded to
    the nearest group. A pair never crosses splits because both of its images are in one group."""
    if val_fraction <= 0 or not groups or sum(n for _, _, n in groups) == 0:
        return set()
    total = sum(n for _, _, n in groups)
    order = sorted(groups, key=lambda g: (stable_uniform(seed, "val", g[0], str(g[1])), g[0], g[1]))
    chosen: set[tuple[str, int]] = set()
    taken = 0
    for wnid, group, n in order:
        if abs(taken + n - val_fraction * total) > abs(taken - val_fraction * total):
            break
        chosen.add((wnid, group))
        taken += n
    return chosen


def choose_points(offsets: np.ndarray, threshold: float, keypoints: int,
                  order: str = "consistency") -> tuple[np.ndarray | None, int]:
    """`keypoints` candidates among those with offset ≤ threshold (the consistent ones), chosen by
    `order`: `score` = label order (the generator's confidence), `consistency` = lowest offset first,
    `balanced` = lowest `offset / threshold + label rank / keypoints` (both signals, each in its own
    unit: measured on the demo's validation build, a candidate's accuracy falls with its rank and with
    its offset at about these rates). Ties keep label order. (None, n_consistent) when fewer pass."""
    off = np.asarray(offsets, np.float64)
    ok = np.flatnonzero(np.isfinite(off) & (off <= threshold))
    if len(ok) < keypoints:
        return None, len(ok)
    if order == "consistency":
        ok = ok[np.argsort(off[ok], kind="stable")]
    elif order == "balanced":
        ok = ok[np.argsort(off[ok] / threshold + ok / keypoints, kind="stable")]
    elif order != "score":
        raise ValueError(f"order must be 'score', 'consistency' or 'balanced', got {order!r}")
    return ok[:keypoints], len(ok)


def passing_counts(lists: Sequence[Sequence[float] | np.ndarray | None], threshold: float) -> np.ndarray:
    """`choose_points`' count for many edges at once: per list (an edge's per-candidate offsets), how many values
    are finite and ≤ `threshold`; a null list has none."""
    lengths = np.array([0 if v is None else len(v) for v in lists], np.int64)
    if not lengths.sum():
        return np.zeros(len(lists), np.int64)
    flat = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in lists if v is not None])
    passing = np.isfinite(flat) & (flat <= threshold)
    return np.bincount(np.repeat(np.arange(len(lists)), lengths)[passing], minlength=len(lists)).astype(np.int64)


def one_direction(scores: Sequence[float], picks: Sequence[np.ndarray | None]) -> int | None:
    """Which direction of an unordered pair to keep (index 0 = a → b with a < b, 1 = b → a): the higher pair
    score among the directions with enough consistent keypoints (`picks[i]` not None); NaN scores count as
    lowest, a tie keeps a → b. None when neither direction has enough."""
    ok = [i for i in (0, 1) if picks[i] is not None]
    if not ok:
        return None
    return max(ok, key=lambda i: (scores[i] if np.isfinite(scores[i]) else -np.inf, -i))
