"""Object templates: part layout, palette roles and named keypoints, rasterized to a label map.

Template space is u = (u_x, u_y) ∈ [-1, 1]², u_y pointing down. A template is rasterized once into a
(S, S) uint8 part-label map (0 = background, 1..P = part ids in `parts` order); raster pixel (row r,
col c) has its centre at u = ((c + 0.5)·2/S − 1, (r + 0.5)·2/S − 1), so sampling "nearest" at u reads
pixel floor((u + 1)·S/2). The designs themselves live in `template_defs.py`, the drawing primitives
(`PartSpec`, `TemplateSpec`, `Canvas`) in `canvas.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from sc_imagenet.synth.canvas import RASTER_SIZE, ROLES, Canvas, PartSpec, TemplateSpec
from sc_imagenet.synth.template_defs import TEMPLATE_SPECS

__all__ = ["RASTER_SIZE", "ROLES", "Canvas", "PartSpec", "Template", "TemplateSpec", "get_template", "raster_to_uv",
           "rasterize", "sample_labels"]


@dataclass(frozen=True)
class Template:
    """A rasterized template.

    labels: (S,S) uint8 part ids; edges: (S,S) bool outline band between different labels (drawn
    darker so parts stand out); boundary_uv: (M,2) template coords of object-mask boundary pixels
    (their image under a warp bounds the warped object); keypoints_uv: (N,2) float64.
    """

    spec: TemplateSpec
    labels: np.ndarray
    edges: np.ndarray
    boundary_uv: np.ndarray
    keypoints_uv: np.ndarray

    @property
    def size(self) -> int:
        return self.labels.shape[0]

    @property
    def part_names(self) -> list[str]:
        return [p.name for p in self.spec.parts]

    @property
    def keypoint_names(self) -> list[str]:
        return [k[0] for k in self.spec.keypoints]

    def mask_extent(self) -> float:
        """Largest side of the object mask's bounding box, in template units."""
        lo, hi = self.boundary_uv.min(axis=0), self.boundary_uv.max(axis=0)
        return float(np.max(hi - lo))


def raster_to_uv(rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Raster pixel indices → template coordinates of their centres, (N,2) float64 (u_x, u_y)."""
    scale = 2.0 / size
    return np.stack([(cols + 0.5) * scale - 1.0, (rows + 0.5) * scale - 1.0], axis=1)


def sample_labels(labels: np.ndarray, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Nearest-neighbour lookup of a (S,S) raster at template points (ux, uy: same-shape arrays).

    Points outside [-1, 1)² read 0 (background). Returns an array shaped like ux, dtype of labels.
    """
    size = labels.shape[0]
    cols = np.floor((ux + 1.0) * (size / 2)).astype(np.int32)
    rows = np.floor((uy + 1.0) * (size / 2)).astype(np.int32)
    inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    out = np.zeros(ux.shape, labels.dtype)
    out[inside] = labels[rows[inside], cols[inside]]
    return out


def rasterize(spec: TemplateSpec, size: int = RASTER_SIZE) -> Template:
    """Draw a template spec into its label map and derive outline, boundary and keypoints."""
    canvas = Canvas(size, spec.parts)
    spec.draw(canvas)
    labels = canvas.labels
    missing = [p.name for i, p in enumerate(spec.parts) if not np.any(labels == i + 1)]
    if missing:
        raise ValueError(f"template {spec.name}: parts fully hidden or empty: {missing}")
    # Outline: pixels whose 4-neighbour has another label, widened to ~0.02 template units.
    diff = np.zeros_like(labels, dtype=bool)
    diff[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    diff[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    diff[1:, :] |= labels[1:, :] != labels[:-1, :]
    diff[:-1, :] |= labels[1:, :] != labels[:-1, :]
    width = max(1, round(0.02 * size / 2))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    edges = (cv2.dilate(diff.astype(np.uint8), kernel) > 0) & (labels > 0)
    mask = (labels > 0).astype(np.uint8)
    boundary = (mask > 0) & (cv2.erode(mask, np.ones((3, 3), np.uint8), borderValue=0) == 0)
    rows, cols = np.nonzero(boundary)
    kp = np.array([[k[1], k[2]] for k in spec.keypoints], np.float64).reshape(-1, 2)
    return Template(spec, labels, edges, raster_to_uv(rows, cols, size), kp)


@cache
def get_template(wnid: str) -> Template:
    """The rasterized template of an object category (cached per process)."""
    if wnid not in TEMPLATE_SPECS:
        raise KeyError(f"no template for {wnid}; object templates: {sorted(TEMPLATE_SPECS)}")
    return rasterize(TEMPLATE_SPECS[wnid])
