"""Training pairs: images of the same category paired at random, each image used once per epoch
(paper §3.5), batches mixing categories so that batch shifting gives cross-category negatives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def epoch_pairs(images_by_wnid: Mapping[str, Sequence[str]], seed: int, epoch: int) -> list[tuple[str, str, str]]:
    """(src_id, trg_id, wnid) pairs for one epoch, deterministic for (seed, epoch).

    Every category's images are shuffled and paired consecutively (an odd image out waits for a
    later epoch). The pairs are then interleaved round-robin over categories, so consecutive pairs
    (one batch) come from different categories whenever more than one category has pairs left.
    """
    rng = np.random.default_rng([seed, epoch])
    per_cat: list[list[tuple[str, str, str]]] = []
    for wnid in sorted(images_by_wnid):
        ids = list(images_by_wnid[wnid])
        order = rng.permutation(len(ids))
        pairs = [(ids[order[i]], ids[order[i + 1]], wnid) for i in range(0, len(ids) - 1, 2)]
        if pairs:
            per_cat.append(pairs)
    cat_order = rng.permutation(len(per_cat))
    queues = [per_cat[i] for i in cat_order]
    out: list[tuple[str, str, str]] = []
    while queues:
        for q in queues:
            out.append(q.pop())
        queues = [q for q in queues if q]
    return out


Pair = tuple[str, str, str]


def batches(pairs: Sequence[Pair], batch_size: int, drop_last: bool = True) -> list[list[Pair]]:
    """Consecutive slices of `batch_size` pairs (batch shifting needs ≥ 2 pairs per batch)."""
    out = [list(pairs[i : i + batch_size]) for i in range(0, len(pairs), batch_size)]
    if drop_last and out and len(out[-1]) < batch_size:
        out.pop()
    return out
