"""Foreground masks that keep pseudo-labels on the object (docs/foreground.md).

Sources (`create_foreground(name, **kwargs)`): `detector_mask`, `box`, `saliency`, `none`.
Later stages use `sc_imagenet.stages.single_instance.foreground_provider(single_instance_dir, data_root,
source).mask_for(image_id, (h, w))`, a `ForegroundProvider` over the manifest's kept rows.
"""

from __future__ import annotations

# importing `sources` registers the built-in sources
from sc_imagenet.foreground import sources as _sources  # noqa: F401
from sc_imagenet.foreground.base import (
    FOREGROUND_SOURCES,
    DetectionRecord,
    ForegroundSource,
    create_foreground,
    foreground_names,
    register_foreground,
)
from sc_imagenet.foreground.geometry import box_mask, ones_mask, polygon_mask, resample_mask, scale_points
from sc_imagenet.foreground.provider import ForegroundProvider
from sc_imagenet.foreground.saliency import DEFAULT_BLUR, SALIENCY_METHODS, binarize, normalize01, saliency_mask
from sc_imagenet.foreground.sources import BoxSource, DetectorMaskSource, NoneSource, SaliencySource

__all__ = [
    "DEFAULT_BLUR",
    "FOREGROUND_SOURCES",
    "SALIENCY_METHODS",
    "BoxSource",
    "DetectionRecord",
    "DetectorMaskSource",
    "ForegroundProvider",
    "ForegroundSource",
    "NoneSource",
    "SaliencySource",
    "binarize",
    "box_mask",
    "create_foreground",
    "foreground_names",
    "normalize01",
    "ones_mask",
    "polygon_mask",
    "register_foreground",
    "resample_mask",
    "saliency_mask",
    "scale_points",
]
