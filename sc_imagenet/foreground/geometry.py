"""Rasterising detections (polygon, box) into foreground masks at any output size.

Coordinates follow the project's image convention (docs/synth.md): points are (x, y) float32 in
pixels of the ORIGINAL image, pixel centres at integer coordinates, so pixel (row i, col j) is the
point (x=j, y=i) and covers [j−½, j+½] × [i−½, i+½]. Boxes are [x1, y1, x2, y2] in the same
coordinates. Output masks are float32 (h, w) with values in {0, 1}.

A detection first becomes a set of ORIGINAL-image pixels (exactly what a same-size mask holds),
which is then resampled to (h, w) the way `cv2.resize` resamples the image itself: the image's
extent [−½, W−½] maps onto [−½, w−½], i.e. x' = (x + ½)·w/W − ½ (`scale_points`). An output pixel is
foreground iff at least half of its area is covered by foreground pixels (INTER_AREA when shrinking,
INTER_LINEAR, which puts the boundary on the original pixel edges, when enlarging).

Why not rasterise the scaled polygon directly at (h, w): `cv2.fillPoly` keeps every pixel the
outline touches, a dilation of up to one OUTPUT pixel, which on a small feature map costs a lot
(mean IoU 0.75 instead of 0.92 at 40×40 on the synthetic data, docs/foreground.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# fillPoly takes int32 vertices; 8 fractional bits keep sub-pixel vertex positions.
_SHIFT = 8


def _check_hw(hw: tuple[int, int], what: str) -> tuple[int, int]:
    h, w = (int(v) for v in hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"{what} must be positive (h, w), got {hw}")
    return h, w


def scale_points(points_xy: np.ndarray, orig_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Map (N, 2) (x, y) points from original-image pixels to output pixels, aligned like `cv2.resize`.

    x' = (x + ½)·w/W − ½, y' = (y + ½)·h/H − ½. Returns float32 (N, 2).
    """
    big_h, big_w = _check_hw(orig_hw, "orig_hw")
    h, w = _check_hw(out_hw, "out_hw")
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return ((pts + 0.5) * np.array([w / big_w, h / big_h]) - 0.5).astype(np.float32)


def resample_mask(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resample a {0, 1} (H, W) mask to float32 (h, w) in {0, 1}: 1 where ≥ half the area is foreground."""
    h, w = _check_hw(out_hw, "out_hw")
    m = np.asarray(mask, dtype=np.float32)
    if m.shape == (h, w):
        return m.copy()
    shrink = h <= m.shape[0] and w <= m.shape[1]
    cover = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return (cover >= 0.5 - 1e-6).astype(np.float32)  # tolerance: area weights are not exact in float


def ones_mask(out_hw: tuple[int, int]) -> np.ndarray:
    """All-foreground float32 (h, w) mask (the `none` source: no restriction)."""
    return np.ones(_check_hw(out_hw, "out_hw"), dtype=np.float32)


def polygon_mask(polygon_xy: np.ndarray, orig_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Rasterise a polygon into a float32 (h, w) mask in {0, 1}.

    polygon_xy: (K, 2) vertices (x, y) in original-image pixels (K >= 3; fewer, or non-finite
    vertices, give an empty mask). orig_hw: (H, W) of the original image; out_hw: (h, w).
    At the original size a pixel is set when `cv2.fillPoly` covers it (outline pixels included,
    which suits outlines traced through boundary-pixel centres, as ultralytics' `masks.xy` roughly
    are); other sizes resample that pixel set (module docstring).
    """
    big_h, big_w = _check_hw(orig_hw, "orig_hw")
    full = np.zeros((big_h, big_w), dtype=np.uint8)
    pts = np.asarray(polygon_xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) >= 3 and np.isfinite(pts).all():
        fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(full, [fixed.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return resample_mask(full, out_hw)


def box_mask(box_xyxy: np.ndarray, orig_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """float32 (h, w) mask in {0, 1} of a box: at the original size, the pixels whose centre lies in
    the box (edges included); other sizes resample that pixel set like `polygon_mask`.

    box_xyxy: (4,) [x1, y1, x2, y2] in original-image pixels (centre convention). A detector box in
    the edge convention ([x1, x2) covering columns x1..x2−1) therefore gains at most one column at
    x2 and one row at y2, which is negligible for a foreground prior.
    """
    big_h, big_w = _check_hw(orig_hw, "orig_hw")
    x1, y1, x2, y2 = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
    cols, rows = np.arange(big_w), np.arange(big_h)
    inside = ((rows >= y1) & (rows <= y2))[:, None] & ((cols >= x1) & (cols <= x2))[None, :]
    return resample_mask(inside, out_hw)


def points_on_mask(mask: np.ndarray, points_xy: np.ndarray, level: float = 0.5) -> np.ndarray:
    """(N,) bool: the pixel of each `(x, y)` point (pixel centres at integers) lies on `mask` (value > level);
    points outside the image are off the mask. mask: `(H, W)` at the points' resolution."""
    pts = np.asarray(points_xy, np.float64).reshape(-1, 2)
    return MaskAtlas([mask], level).contains(np.zeros(len(pts), np.int64), pts)


class MaskAtlas:
    """Pixel masks of several images (each `(H, W)`, on where > `level`; `None`: no mask) in one flat array, so
    that points on different images are tested in one vectorised call: a batch of pairs costs one call rather
    than one per pair."""

    def __init__(self, masks: Sequence[np.ndarray | None], level: float = 0.5) -> None:
        on = [np.asarray(m).reshape(-1) > level for m in masks if m is not None]
        sizes = np.array([0 if m is None else np.asarray(m).size for m in masks], np.int64)
        self.flat = np.concatenate(on) if on else np.zeros(0, bool)
        self.start = np.cumsum(sizes) - sizes
        self.hw = np.array([(0, 0) if m is None else np.shape(m)[:2] for m in masks], np.int64).reshape(-1, 2)
        self.has_mask = np.array([m is not None for m in masks], bool)

    def contains(self, image: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
        """(N,) bool: point `i` `(x, y)` lies on the mask of image `image[i]` (its own pixel, as
        `points_on_mask`); every point of an image without a mask does."""
        image = np.asarray(image, np.int64).reshape(-1)
        pts = np.floor(np.asarray(points_xy, np.float64).reshape(-1, 2) + 0.5)
        h, w = self.hw[image, 0], self.hw[image, 1]
        x, y = pts[:, 0], pts[:, 1]
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)  # NaN compares False: off the image
        out = ~self.has_mask[image]
        look = inside & ~out
        out[look] = self.flat[self.start[image[look]] + y[look].astype(np.int64) * w[look] + x[look].astype(np.int64)]
        return out
