"""The per-category pair graph of `label` (docs/dataset.md): seeded cliques of near-equal size.

    groups = pair_groups(image_ids, group_size=20, seed=0, key="n01530575")   # [[id, ...], ...]
    edges = group_edges(groups)                                               # [(src, trg, group), ...]

Pure and deterministic: the permutation is seeded from a stable hash of (`seed`, `key`) (never
Python's `hash()`, which is salted per process), and depends on the set of ids, not on their order.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

MIN_GROUP = 3  # the smallest clique in which a loop I_s → I_m → I_t closes


def group_seed(seed: int, key: str) -> int:
    """Stable 32-bit seed of (`seed`, `key`) (crc32; the same on every machine and process)."""
    return zlib.crc32(f"{int(seed)}:{key}".encode())


def n_groups(n: int, group_size: int) -> int:
    """How many groups `n` images make: `ceil(n / group_size)`, but never so many that a group would
    get fewer than 3 images (with `group_size` 3 or 4, e.g. 4 images make one group of 4, not two of 2);
    0 when `n < 3`."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if n < MIN_GROUP:
        return 0
    return max(1, min(math.ceil(n / group_size), n // MIN_GROUP))


def group_sizes(n: int, group_size: int) -> list[int]:
    """Sizes of the groups `pair_groups` makes of `n` images (near-equal: they differ by at most one,
    larger ones first)."""
    m = n_groups(n, group_size)
    if m == 0:
        return []
    base, extra = divmod(n, m)
    return [base + 1] * extra + [base] * (m - extra)


def pair_groups(image_ids: Sequence[str], group_size: int, seed: int, key: str) -> list[list[str]]:
    """Split `image_ids` (a category's readable kept images) into seeded groups of near-equal size.

    The ids are sorted, permuted with `numpy.random.default_rng(group_seed(seed, key))` and cut into
    `group_sizes(n, group_size)` consecutive runs. Fewer than 3 ids: no groups."""
    ids = sorted(image_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("pair_groups: image ids must be unique")
    sizes = group_sizes(len(ids), group_size)
    if not sizes:
        return []
    order = np.random.default_rng(group_seed(seed, key)).permutation(len(ids))
    out, start = [], 0
    for size in sizes:
        out.append([ids[i] for i in order[start:start + size]])
        start += size
    return out


def group_edges(groups: Sequence[Sequence[str]]) -> list[tuple[str, str, int]]:
    """Every ordered pair of distinct images inside each group: `(src, trg, group_index)`, groups in
    order, then sources and targets in group order (g·(g−1) edges per group of g)."""
    return [(s, t, gi) for gi, group in enumerate(groups) for s in group for t in group if s != t]


def regroup(members: Sequence[tuple[str, int]], group_size: int) -> list[list[str]]:
    """The second graph (`pairs`): `(image id, clique of the first graph)` of a category's selected images
    → cliques of near-equal size (`group_sizes`). Images are ordered by their first clique, then id, and cut
    into consecutive runs, so images that shared a clique stay together where sizes allow and the edges the
    first graph already holds are reused instead of labelled again."""
    order = sorted(members, key=lambda m: (m[1], m[0]))
    if len({i for i, _ in order}) != len(order):
        raise ValueError("regroup: image ids must be unique")
    out, start = [], 0
    for size in group_sizes(len(order), group_size):
        out.append([i for i, _ in order[start:start + size]])
        start += size
    return out
