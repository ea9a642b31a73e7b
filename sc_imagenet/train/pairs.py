"""Training pairs and batches (paper §3.5): images of one category paired at random, each image used at
most once per epoch, and batches arranged so that batch shifting always gives cross-category negatives.

Batch shifting pairs the source of batch position i with the target of position i+1 (cyclically), so
a negative is a true negative exactly when cyclically adjacent positions hold different categories.
That is possible iff no category fills more than ⌊B/2⌋ of the B positions. Each batch is therefore
filled from the categories with the most pairs left, at most ⌊B/2⌋ pairs from any one category, and
arranged by `alternate`. Pairs that cannot join such a batch (the tail of a much larger category) wait
for a later epoch, where every category is reshuffled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Pair = tuple[str, str, str]  # (src_id, trg_id, wnid)


def category_pairs(images_by_wnid: Mapping[str, Sequence[str]], rng: np.random.Generator) -> dict[str, list[Pair]]:
    """Every category's images shuffled and paired consecutively (an odd image out waits for a later epoch)."""
    out: dict[str, list[Pair]] = {}
    for wnid in sorted(images_by_wnid):
        ids = list(images_by_wnid[wnid])
        order = rng.permutation(len(ids))
        pairs = [(ids[order[i]], ids[order[i + 1]], wnid) for i in range(0, len(ids) - 1, 2)]
        if pairs:
            out[wnid] = pairs
    return out


def alternate(batch: Sequence[Pair]) -> list[Pair]:
    """Reorder a batch so cyclically adjacent pairs differ in category whenever no category holds more than
    half of it: group by category (largest group first), then fill the even positions, then the odd ones."""
    groups: dict[str, list[Pair]] = {}
    for pair in batch:
        groups.setdefault(pair[2], []).append(pair)
    ordered = [p for g in sorted(groups.values(), key=len, reverse=True) for p in g]
    n = len(ordered)
    out: list[Pair | None] = [None] * n
    slots = list(range(0, n, 2)) + list(range(1, n, 2))
    for slot, pair in zip(slots, ordered, strict=True):
        out[slot] = pair
    return [p for p in out if p is not None]


def epoch_batches(images_by_wnid: Mapping[str, Sequence[str]], seed: int, epoch: int,
                  batch_size: int) -> list[list[Pair]]:
    """The epoch's batches, deterministic for (seed, epoch). Every batch has `batch_size` (≥ 2) pairs, no
    category more than ⌊batch_size/2⌋ times, arranged so every batch-shifted negative is cross-category.

    The number of batches depends only on the categories' sizes, so it is the same in every epoch."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 for batch shifting, got {batch_size}")
    rng = np.random.default_rng([seed, epoch])
    left = category_pairs(images_by_wnid, rng)
    tie_break = {wnid: float(r) for wnid, r in zip(sorted(left), rng.random(len(left)), strict=True)}
    cap = batch_size // 2
    out: list[list[Pair]] = []
    while True:
        batch: list[Pair] = []
        taken: dict[str, int] = {}
        while len(batch) < batch_size:
            open_ = [w for w in left if taken.get(w, 0) < min(cap, len(left[w]))]
            if not open_:
                break
            # the category with the most pairs left first, so large categories are not stranded at the end
            wnid = max(open_, key=lambda w: (len(left[w]) - taken.get(w, 0), tie_break[w]))
            batch.append(left[wnid][taken.get(wnid, 0)])
            taken[wnid] = taken.get(wnid, 0) + 1
        if len(batch) < batch_size:
            return out
        for wnid, n in taken.items():
            del left[wnid][:n]
        out.append(alternate(batch))


def negatives_are_cross_category(batch: Sequence[Pair]) -> bool:
    """True when every batch-shifted negative (source i against target i+1, cyclically) is another category."""
    return all(batch[i][2] != batch[(i + 1) % len(batch)][2] for i in range(len(batch)))
