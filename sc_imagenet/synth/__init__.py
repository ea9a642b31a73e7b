"""Synthetic demo dataset with exact semantic-correspondence ground truth (docs/synth.md).

`SynthConfig`, `DEMO_CATEGORIES` and `is_complete` import only pydantic/json; the generator and the
ground-truth readers (numpy, OpenCV, pandas) load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sc_imagenet.synth.config import (
    BROKEN_KINDS,
    DEMO_CATEGORIES,
    READABLE_BROKEN,
    SYNTH_VERSION,
    UNREADABLE_BROKEN,
    Category,
    SynthConfig,
)
from sc_imagenet.synth.meta import GT_DIR, is_complete

if TYPE_CHECKING:
    from sc_imagenet.synth.dataset import generate_dataset
    from sc_imagenet.synth.groundtruth import (
        GroundTruth,
        Keypoints,
        keypoints_for,
        load_groundtruth,
        true_correspondence,
    )
    from sc_imagenet.synth.rle import decode_rle, encode_rle

_LAZY = {
    "generate_dataset": "sc_imagenet.synth.dataset",
    "true_correspondence": "sc_imagenet.synth.groundtruth",
    "load_groundtruth": "sc_imagenet.synth.groundtruth",
    "keypoints_for": "sc_imagenet.synth.groundtruth",
    "GroundTruth": "sc_imagenet.synth.groundtruth",
    "Keypoints": "sc_imagenet.synth.groundtruth",
    "decode_rle": "sc_imagenet.synth.rle",
    "encode_rle": "sc_imagenet.synth.rle",
}

__all__ = [
    "BROKEN_KINDS",
    "DEMO_CATEGORIES",
    "GT_DIR",
    "READABLE_BROKEN",
    "SYNTH_VERSION",
    "UNREADABLE_BROKEN",
    "Category",
    "GroundTruth",
    "Keypoints",
    "SynthConfig",
    "decode_rle",
    "encode_rle",
    "generate_dataset",
    "is_complete",
    "keypoints_for",
    "load_groundtruth",
    "true_correspondence",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
