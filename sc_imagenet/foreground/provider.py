"""Foreground masks by image id, for the stages after `single_instance`.

`ForegroundProvider` indexes a table of kept detections (one row per image: the columns in
`ForegroundProvider.COLUMNS`, as the `single_instance` stage writes them; build it from a manifest
with `sc_imagenet.stages.single_instance.foreground_provider`) by image id and answers
`mask_for(image_id, (h, w))` with the configured source. The table stays in Arrow memory (compact
list columns) and a `DetectionRecord` is built per call, so only an id → row dict grows with the
number of images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sc_imagenet.foreground.base import DetectionRecord, ForegroundSource, create_foreground
from sc_imagenet.io.images import load_rgb


class ForegroundProvider:
    """Masks for kept images.

    table: one row per kept image with the columns in `COLUMNS` (`box` `[x1, y1, x2, y2]` and
    `mask_poly` flattened `(K, 2)` xy, original-image pixels; `mask_poly` may be null). data_root: the
    image root that `rel_path` is relative to. source, **kwargs: passed to `create_foreground` (e.g.
    `"saliency", method="fine_grained"`). origin: where the table came from, for error messages.
    """

    COLUMNS = ("image_id", "rel_path", "width", "height", "box", "mask_poly")

    def __init__(self, table: pa.Table, data_root: Path, source: str, origin: str = "the kept-image table",
                 **kwargs: Any) -> None:
        missing = [c for c in self.COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"ForegroundProvider: {origin} lacks column(s) {missing}")
        self.origin = origin
        self.data_root = Path(data_root)
        self.source: ForegroundSource = create_foreground(source, **kwargs)
        ids = table.column("image_id").to_pylist()
        self._row: dict[str, int] = {}
        for pos, image_id in enumerate(ids):
            if image_id in self._row:
                raise ValueError(f"image_id {image_id!r} appears twice among kept rows of {origin}")
            self._row[image_id] = pos
        self._table = table

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._row

    @property
    def image_ids(self) -> list[str]:
        """Ids of the kept images, in manifest order."""
        return list(self._row)

    def _pos(self, image_id: str) -> int:
        try:
            return self._row[image_id]
        except KeyError:
            raise KeyError(f"image_id {image_id!r} is not a kept image of {self.origin} "
                           "(unknown, or dropped by the single-instance policy)") from None

    def rel_path(self, image_id: str) -> str:
        return self._table.column("rel_path")[self._pos(image_id)].as_py()

    def record(self, image_id: str) -> DetectionRecord:
        """The kept detection of `image_id` (original-image pixels)."""
        pos = self._pos(image_id)
        col = self._table.column
        return DetectionRecord.from_lists(col("width")[pos].as_py(), col("height")[pos].as_py(),
                                          col("box")[pos].as_py(), col("mask_poly")[pos].as_py())

    def mask_for(self, image_id: str, out_hw: tuple[int, int], image: np.ndarray | None = None) -> np.ndarray:
        """float32 (h, w) mask in [0, 1] for the kept image `image_id`, aligned with the image resized to out_hw.

        image: the decoded uint8 (H, W, 3) RGB image if the caller already has it; otherwise it is
        loaded from `data_root / rel_path`, and only when the source needs pixels.
        KeyError if `image_id` is unknown or was not kept.
        """
        record = self.record(image_id)
        if self.source.needs_image and image is None:
            image = load_rgb(self.data_root / self.rel_path(image_id))
        return self.source.mask(out_hw, image=image, record=record)
