"""Run-length encoding of binary masks.

Format: the mask (H, W) is flattened in row-major (C) order and stored as int32 run lengths that
alternate zeros, ones, zeros, … and always START WITH A RUN OF ZEROS (length 0 when the first pixel is
set). The runs sum to H·W. Examples (H·W = 6): all-false → [6]; all-true → [0, 6];
[0 1 1 0 0 1] → [1, 2, 2, 1].
"""

from __future__ import annotations

import numpy as np


def encode_rle(mask: np.ndarray) -> np.ndarray:
    """Bool-like mask (H, W) → int32 run lengths (see module docstring)."""
    flat = np.asarray(mask).astype(bool, copy=False).ravel()
    if flat.size == 0:
        return np.zeros(1, np.int32)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat[0]:
        runs = np.concatenate([[0], runs])
    return runs.astype(np.int32)


def decode_rle(rle: np.ndarray | list[int], height: int, width: int) -> np.ndarray:
    """Run lengths → bool mask (height, width). Raises ValueError if the runs do not cover H·W pixels."""
    runs = np.asarray(rle, dtype=np.int64).ravel()
    if np.any(runs < 0) or int(runs.sum()) != height * width:
        raise ValueError(
            f"RLE covers {int(runs.sum())} pixels with {int(np.sum(runs < 0))} negative runs; "
            f"expected {height}x{width}={height * width}"
        )
    values = np.zeros(runs.size, bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape(height, width)
