"""Object boxes `[x1, y1, x2, y2]` in original-image pixels, and the size of the object they bound.

One definition of an object's size serves every part of the project that measures distances in it:
PCK's threshold (`evaluate.pck`, the benchmark loaders), the loop offsets of `consistency` and `pairs`,
the pseudo-label quality against synthetic truth (`dataset.quality`) and the release's scale ratio
(`dataset.scimagenet`). It lives outside the domain packages because both `dataset` and `evaluate` use it
and the release reader must not load torch, which importing anything under `evaluate` does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def object_size(boxes: ArrayLike) -> np.ndarray:
    """The longer side of each box, max(x2 − x1, y2 − y1), in float64: `(..., 4)` boxes → `(...)` sizes
    (one box gives a 0-d array; `float(...)` it). SPair-71k's PCK unit. No `+ 1`: a synthetic mask box's
    x2/y2 are exclusive and a detector's are the far corner, so x2 − x1 is the width either way.

    The coordinates are widened to float64 before subtracting, whatever the input dtype. A NaN
    coordinate gives a NaN size, a degenerate box 0."""
    b = np.asarray(boxes, np.float64)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4) [x1, y1, x2, y2], got shape {b.shape}")
    return np.maximum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])
