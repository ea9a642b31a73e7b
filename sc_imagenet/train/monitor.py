"""What training is watched with: figures about each step's labels, added to the log rows.

A `TrainMonitor` sees, after every optimizer step, the step's pairs and the labels each level of the
cascade passed down (`CascadeGenerator.last_labels`: "region" = the image level's suspected matches,
"pixel" = the pixel level's pseudo-labels), and returns its figures when a log row is written. It only
reads: the trained parameters are the same with or without one.

`LabelAccuracy` is the monitor for data with a known truth (synthetic builds): the strict accuracy of
each level's labels, i.e. the share within `alpha` of the target object's size of the true
correspondence, a label off the object counting as wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from sc_imagenet.matching.cascade import Labels
from sc_imagenet.train.pairs import Pair

# (src_id, trg_id, src_xy (K, 2), trg_xy (K, 2)) → each label's true error in target-object sizes (inf: off the object)
TruthFn = Callable[[str, str, np.ndarray, np.ndarray], np.ndarray]


class TrainMonitor(Protocol):
    def observe(self, step: int, epoch: int, batch: Sequence[Pair], labels: Mapping[str, Sequence[Labels]]) -> None:
        """After optimizer step `step` of `epoch`: its pairs and, per level, the labels it passed down."""

    def flush(self) -> dict[str, float | None]:
        """The figures since the previous flush (a log row's extra columns)."""


def accuracy_column(level: str, alpha: float = 0.1) -> str:
    """The log column of a level's label accuracy: `labels_region_pck01`, `labels_pixel_pck01`."""
    return f"labels_{level}_pck{str(alpha).replace('.', '')}"


class LabelAccuracy:
    """Strict PCK@`alpha` of every level's labels against `truth`, per log interval and per epoch.

    `flush()` → `{labels_<level>_pck01: share or None}` since the last flush; `per_pair` keeps every pair's
    (hits, labels) by level and epoch, for totals and intervals per epoch (`epoch_summary`)."""

    levels = ("region", "pixel")

    def __init__(self, truth: TruthFn, alpha: float = 0.1) -> None:
        self.truth, self.alpha = truth, alpha
        self._since = {lvl: [0, 0] for lvl in self.levels}
        self.per_pair: dict[str, dict[int, list[tuple[int, int]]]] = {lvl: {} for lvl in self.levels}

    def observe(self, step: int, epoch: int, batch: Sequence[Pair], labels: Mapping[str, Sequence[Labels]]) -> None:
        for level in self.levels:
            for (src_id, trg_id, _), (sxy, txy, _) in zip(batch, labels.get(level, ()), strict=False):
                if not len(sxy):
                    continue
                err = np.asarray(self.truth(src_id, trg_id, sxy, txy), np.float64)
                hits, n = int(np.sum(err <= self.alpha)), len(err)
                self._since[level][0] += hits
                self._since[level][1] += n
                self.per_pair[level].setdefault(epoch, []).append((hits, n))

    def flush(self) -> dict[str, float | None]:
        out = {accuracy_column(lvl, self.alpha): (h / n if n else None) for lvl, (h, n) in self._since.items()}
        self._since = {lvl: [0, 0] for lvl in self.levels}
        return out

    def epoch_summary(self, level: str = "pixel") -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Epoch → (hits per pair, labels per pair) of a level."""
        return {e: (np.array([h for h, _ in rows], np.float64), np.array([n for _, n in rows], np.float64))
                for e, rows in sorted(self.per_pair[level].items())}
