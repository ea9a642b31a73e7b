"""Rasterising detections (polygon, box) into foreground masks at any output size.

Coordinates follow the project's image convention (docs/synth.md): points are (x, y) float32 in
pixels of the ORIGINAL image, pixel centres at integer coordinates, so pixel (row i, col j) is the
point (x=j, y=i). Boxes are [x1, y1, x2, y2] in the same coordinates. Output masks are float32
(h, w) with values in {0, 1}.

Scaling to an output of (h, w) maps the image's pixel extent [-1/2, W-1/2] onto [-1/2, w-1/2]:
x' = (x + 1/2)·w/W − 1/2 (same for y with h/H). This is the alignment `cv2.resize` uses, so a mask
rasterised here lines up with a resized image or a resized saliency map; plain x·w/W would shift
the mask by (w/W − 1)/2 output pixels.
"""

from __future__ import annotations

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
    """Map (N, 2) (x, y) points from original-image pixels to output pixels (centre-aligned). float32."""
    big_h, big_w = _check_hw(orig_hw, "orig_hw")
    h, w = _check_hw(out_hw, "out_hw")
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    scale = np.array([w / big_w, h / big_h])
    return ((pts + 0.5) * scale - 0.5).astype(np.float32)


def ones_mask(out_hw: tuple[int, int]) -> np.ndarray:
    """All-foreground float32 (h, w) mask (the `none` source: no restriction)."""
    return np.ones(_check_hw(out_hw, "out_hw"), dtype=np.float32)


def polygon_mask(polygon_xy: np.ndarray, orig_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Rasterise a polygon into a float32 (h, w) mask in {0, 1}.

    polygon_xy: (K, 2) vertices (x, y) in original-image pixels (K >= 3; fewer gives an empty mask).
    orig_hw: (H, W) of the original image; out_hw: (h, w) of the mask. A pixel is set when
    `cv2.fillPoly` covers its centre, boundary pixels included.
    """
    h, w = _check_hw(out_hw, "out_hw")
    mask = np.zeros((h, w), dtype=np.uint8)
    pts = scale_points(polygon_xy, orig_hw, out_hw)
    if len(pts) < 3 or not np.isfinite(pts).all():
        return mask.astype(np.float32)
    fixed = np.round(pts.astype(np.float64) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [fixed.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask.astype(np.float32)


def box_mask(box_xyxy: np.ndarray, orig_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """float32 (h, w) mask in {0, 1}: 1 where the pixel centre lies in the scaled box (edges included).

    box_xyxy: (4,) [x1, y1, x2, y2] in original-image pixels (centre convention). A detector box in
    the edge convention ([x1, x2) covering columns x1..x2-1) therefore gains at most one pixel per
    side, which is negligible for a foreground prior.
    """
    h, w = _check_hw(out_hw, "out_hw")
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
    (x1, y1), (x2, y2) = scale_points(box.reshape(2, 2), orig_hw, out_hw).astype(np.float64)
    inside_x = (np.arange(w) >= x1) & (np.arange(w) <= x2)
    inside_y = (np.arange(h) >= y1) & (np.arange(h) <= y2)
    return (inside_y[:, None] & inside_x[None, :]).astype(np.float32)
