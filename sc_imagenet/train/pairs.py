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

import heapq
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

    The number of batches depends only on the categories' sizes, so it is the same in every epoch. Cost:
    O(pairs · log categories) — each pick takes the category with the most pairs left from a heap — so a
    plan for ImageNet's 379 k images takes about a second; callers build it once per epoch (`EpochPlan`)."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 for batch shifting, got {batch_size}")
    rng = np.random.default_rng([seed, epoch])
    left = category_pairs(images_by_wnid, rng)
    tie_break = {wnid: float(r) for wnid, r in zip(sorted(left), rng.random(len(left)), strict=True)}
    cap = batch_size // 2
    used = dict.fromkeys(left, 0)  # pairs of each category already placed in earlier batches
    # max-heap of open categories on (pairs left, tie break); a category's key changes only when it is picked
    heap = [(-len(pairs), -tie_break[wnid], wnid) for wnid, pairs in left.items()]
    heapq.heapify(heap)
    out: list[list[Pair]] = []
    while True:
        batch: list[Pair] = []
        capped: list[str] = []  # picked ⌊B/2⌋ times in this batch: back on the heap for the next one
        while len(batch) < batch_size and heap:
            # the category with the most pairs left first, so large categories are not stranded at the end
            _, _, wnid = heapq.heappop(heap)
            batch.append(left[wnid][used[wnid]])
            used[wnid] += 1
            remaining = len(left[wnid]) - used[wnid]
            if remaining == 0:
                continue
            if sum(p[2] == wnid for p in batch) < cap:
                heapq.heappush(heap, (-remaining, -tie_break[wnid], wnid))
            else:
                capped.append(wnid)
        if len(batch) < batch_size:
            return out
        for wnid in capped:
            heapq.heappush(heap, (-(len(left[wnid]) - used[wnid]), -tie_break[wnid], wnid))
        out.append(alternate(batch))


class EpochPlan:
    """Training batches by global step: the current epoch's plan, built once when the epoch starts, so a
    step costs O(batch) whatever the dataset's size. With `world` processes, optimizer step `s` of an epoch
    takes batches `s·world … s·world + world − 1`; `rank` picks its own."""

    def __init__(self, images_by_wnid: Mapping[str, Sequence[str]], seed: int, batch_size: int,
                 world: int = 1, rank: int = 0) -> None:
        self.images_by_wnid, self.seed, self.batch_size = images_by_wnid, seed, batch_size
        self.world, self.rank = world, rank
        self.builds = 0  # plans built so far (tests: one per epoch)
        self._epoch, self._batches = 0, self._build(0)
        self.steps_per_epoch = len(self._batches) // world  # the same in every epoch (see `epoch_batches`)

    def _build(self, epoch: int) -> list[list[Pair]]:
        self.builds += 1
        return epoch_batches(self.images_by_wnid, self.seed, epoch, self.batch_size)

    def batch(self, step: int) -> tuple[int, list[Pair]]:
        """(epoch, this rank's batch) of global optimizer step `step` (0-based)."""
        if self.steps_per_epoch == 0:
            raise ValueError("no complete batch in an epoch")
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._build(epoch)
        return epoch, self._batches[within * self.world + self.rank]


def negatives_are_cross_category(batch: Sequence[Pair]) -> bool:
    """True when every batch-shifted negative (source i against target i+1, cyclically) is another category."""
    return all(batch[i][2] != batch[(i + 1) % len(batch)][2] for i in range(len(batch)))
