"""The registered foreground sources: `detector_mask`, `box`, `saliency`, `none`.

Each returns float32 (h, w) in [0, 1] for out_hw = (h, w); detection coordinates are in
original-image pixels and are scaled to the output (see `geometry`).
"""

from __future__ import annotations

import numpy as np

from sc_imagenet.foreground.base import DetectionRecord, ForegroundSource, register_foreground
from sc_imagenet.foreground.geometry import box_mask, ones_mask, polygon_mask
from sc_imagenet.foreground.saliency import SALIENCY_METHODS, saliency_mask
from sc_imagenet.foreground.saliency import binarize as binarize_map


@register_foreground("detector_mask")
class DetectorMaskSource(ForegroundSource):
    """The kept instance's segmentation polygon from the detect stage.

    Falls back to the box when the record has no usable polygon (a detector without a mask head, or
    a polygon with fewer than 3 vertices): the mask is then exactly what `box` gives. As good as the
    detector's masks.
    """

    needs_detection = True

    def mask(self, out_hw: tuple[int, int], *, image: np.ndarray | None = None,
             record: DetectionRecord | None = None) -> np.ndarray:
        self._require(image, record)
        assert record is not None
        if record.polygon is not None and len(record.polygon) >= 3:
            return polygon_mask(record.polygon, record.hw, out_hw)
        if record.box is not None:
            return box_mask(record.box, record.hw, out_hw)
        raise ValueError("detection record has neither a polygon nor a box")


@register_foreground("box")
class BoxSource(ForegroundSource):
    """The kept detection's box: covers the whole object but also the background inside the box."""

    needs_detection = True

    def mask(self, out_hw: tuple[int, int], *, image: np.ndarray | None = None,
             record: DetectionRecord | None = None) -> np.ndarray:
        self._require(image, record)
        assert record is not None
        if record.box is None:
            raise ValueError("detection record has no box")
        return box_mask(record.box, record.hw, out_hw)


@register_foreground("saliency")
class SaliencySource(ForegroundSource):
    """OpenCV's weight-free static saliency, optionally binarised.

    method: "spectral_residual" or "fine_grained". binarize: "otsu", a float threshold in [0, 1],
    or None for the soft map. blur: Gaussian sigma as a fraction of the shorter image side (None: the
    method's tuned default, `DEFAULT_BLUR`).
    """

    needs_image = True

    def __init__(self, method: str = "spectral_residual", binarize: str | float | None = "otsu",
                 blur: float | None = None) -> None:
        if method not in SALIENCY_METHODS:
            raise ValueError(f"unknown saliency method {method!r}; known: {sorted(SALIENCY_METHODS)}")
        if isinstance(binarize, str) and binarize != "otsu":
            raise ValueError(f"binarize must be 'otsu', a float threshold or None, got {binarize!r}")
        self.method = method
        self.binarize = binarize
        self.blur = blur

    def mask(self, out_hw: tuple[int, int], *, image: np.ndarray | None = None,
             record: DetectionRecord | None = None) -> np.ndarray:
        self._require(image, record)
        assert image is not None
        soft = saliency_mask(image, out_hw, method=self.method, blur=self.blur)
        return soft if self.binarize is None else binarize_map(soft, self.binarize)


@register_foreground("none")
class NoneSource(ForegroundSource):
    """No foreground prior: every pixel counts as foreground."""

    def mask(self, out_hw: tuple[int, int], *, image: np.ndarray | None = None,
             record: DetectionRecord | None = None) -> np.ndarray:
        return ones_mask(out_hw)
