"""Detections of one image, in original-image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageDetections:
    """boxes `(N, 4)` float32 `[x1, y1, x2, y2]`; conf `(N,)` float32; cls `(N,)` int32; polygons: one
    `(K_i, 2)` float32 xy outline per detection (the instance mask), or None when the model does not
    segment. Sorted by descending confidence."""

    boxes: np.ndarray
    conf: np.ndarray
    cls: np.ndarray
    polygons: list[np.ndarray] | None = None
    error: str | None = None  # set when the image could not be decoded; the arrays are then empty

    @classmethod
    def failed(cls, error: str) -> ImageDetections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), None, error)

    def __len__(self) -> int:
        return len(self.conf)


@dataclass
class DecodedImage:
    """One image ready for a detector: RGB uint8 `(H, W, 3)`, or an error from decoding."""

    image_id: str
    rel_path: str
    rgb: np.ndarray | None
    error: str | None = None
