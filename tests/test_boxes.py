"""The one definition of an object's size (sc_imagenet/boxes.py) and the callers that use it."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from sc_imagenet.boxes import object_size
from sc_imagenet.dataset.scimagenet import scale_ratio
from sc_imagenet.evaluate.benchmarks.base import BenchmarkError, bbox_length
from sc_imagenet.stages.consistency import MIN_OBJECT_SIZE, object_sizes


def test_object_size_is_the_longer_side_of_each_box() -> None:
    boxes = np.array([[10, 20, 50, 30], [0, 0, 5, 40], [2, 2, 2, 2]], np.float32)
    sizes = object_size(boxes)
    assert sizes.dtype == np.float64 and sizes.shape == (3,)
    assert sizes.tolist() == [40.0, 40.0, 0.0]  # no + 1: x2 is exclusive (masks) or the far corner (detector)
    one = object_size([1.5, 2.0, 4.0, 3.0])
    assert one.shape == () and float(one) == 2.5
    assert object_size(boxes.reshape(3, 1, 4)).shape == (3, 1)
    assert object_size(np.zeros((0, 4))).shape == (0,)


def test_object_size_subtracts_in_float64() -> None:
    # 2**24 − 0.5 does not exist in float32 (it rounds to 2**24): the size must not depend on the input dtype
    box = np.array([0.5, 0.0, 2.0**24, 1.0], np.float32)
    assert float(box[2] - box[0]) == 2.0**24
    assert float(object_size(box)) == 2.0**24 - 0.5


def test_object_size_propagates_nan_and_checks_the_shape() -> None:
    assert math.isnan(float(object_size([0.0, 0.0, 10.0, np.nan])))  # unknown height: unknown size
    assert math.isnan(float(object_size([np.nan, 0.0, 10.0, 5.0])))
    for bad in ([1.0, 2.0, 3.0], 5.0, np.zeros((2, 3))):
        with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
            object_size(bad)


def test_callers_agree_with_it() -> None:
    assert bbox_length([10, 20, 50, 30], "f") == 40.0
    assert scale_ratio([0, 0, 10, 4], [0, 0, 3, 20]) == 2.0
    # a NaN height no longer hides behind a finite width
    with pytest.raises(BenchmarkError, match="has no extent"):
        bbox_length([0, 0, 10, np.nan], "f")
    kept = pa.table({"image_id": ["a", "b", "c"],
                     "box": pa.array([[0.0, 0.0, 30.5, 12.0], [5.0, 5.0, 5.25, 5.5], [1.0, 1.0, 1.0, 1.0]],
                                     pa.list_(pa.float32()))})
    sizes = object_sizes(kept)
    assert sizes == {"a": 30.5, "b": MIN_OBJECT_SIZE, "c": MIN_OBJECT_SIZE}  # floored: offsets are divided by it
    assert all(type(v) is float for v in sizes.values())
