"""Object templates: part layout, palette roles and named keypoints, rasterized to a label map.

Template space is u = (u_x, u_y) ∈ [-1, 1]², u_y pointing down. A template is rasterized once into a
(S, S) uint8 part-label map (0 = background, 1..P = part ids in `parts` order); raster pixel (row r,
col c) has its centre at u = ((c + 0.5)·2/S − 1, (r + 0.5)·2/S − 1), so sampling "nearest" at u reads
pixel floor((u + 1)·S/2). The designs themselves live in `template_defs.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np

RASTER_SIZE = 512
ROLES = ("primary", "secondary", "accent", "dark")
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel accurate shapes on the 512² raster


@dataclass(frozen=True)
class PartSpec:
    """One part. `color` (RGB 0-255) is the fixed colour of accent/dark parts; primary and secondary
    parts take the per-instance colours drawn around the template's base HSV."""

    name: str
    role: str
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class TemplateSpec:
    wnid: str
    name: str
    parts: tuple[PartSpec, ...]
    keypoints: tuple[tuple[str, float, float], ...]  # (name, u_x, u_y)
    primary_hsv: tuple[float, float, float]  # hue in [0, 1), saturation and value in [0, 1]
    secondary_hsv: tuple[float, float, float]
    draw: Callable[[Canvas], None] = field(repr=False)


class Canvas:
    """Draws parts into the label map using template coordinates; later calls paint over earlier ones."""

    def __init__(self, size: int, parts: Sequence[PartSpec]) -> None:
        self.size = size
        self.labels = np.zeros((size, size), np.uint8)
        self.ids = {p.name: i + 1 for i, p in enumerate(parts)}

    def _fix(self, pts: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Template points (N,2) → cv2 fixed-point raster coordinates (N,2) int32."""
        p = (np.asarray(pts, np.float64).reshape(-1, 2) + 1.0) * (self.size / 2) - 0.5
        return np.round(p * (1 << _SHIFT)).astype(np.int32)

    def _len(self, length: float) -> int:
        return round(length * self.size / 2 * (1 << _SHIFT))

    def _paint(self, draw: Callable[[np.ndarray, int], None], part: str, within: str | None) -> None:
        """Run a cv2 draw call with the part's id; with `within`, keep only pixels of that part
        (clips decorations such as bands to the part they sit on)."""
        if within is None:
            draw(self.labels, self.ids[part])
            return
        scratch = np.zeros_like(self.labels)
        draw(scratch, 1)
        self.labels[(scratch > 0) & (self.labels == self.ids[within])] = self.ids[part]

    def ellipse(
        self,
        part: str,
        center: tuple[float, float],
        axes: tuple[float, float],
        angle: float = 0.0,
        start: float = 0.0,
        end: float = 360.0,
        width: float | None = None,
        within: str | None = None,
    ) -> None:
        """Ellipse with semi-axes `axes` rotated by `angle` degrees; `start`..`end` (degrees, clockwise
        on screen from the rotated +u_x axis) draw a pie sector, or an arc of `width` template units."""
        c = self._fix([center])[0]
        ax = (self._len(axes[0]), self._len(axes[1]))
        thick = -1 if width is None else self._thick(width)
        self._paint(
            lambda img, v: cv2.ellipse(
                img, (int(c[0]), int(c[1])), ax, angle, start, end, v, thick, cv2.LINE_8, _SHIFT
            ),
            part,
            within,
        )

    def circle(self, part: str, center: tuple[float, float], r: float, within: str | None = None) -> None:
        self.ellipse(part, center, (r, r), within=within)

    def poly(self, part: str, pts: Sequence[tuple[float, float]], within: str | None = None) -> None:
        """Filled polygon through template points."""
        fixed = self._fix(pts)
        self._paint(lambda img, v: cv2.fillPoly(img, [fixed], v, cv2.LINE_8, _SHIFT), part, within)

    def line(
        self, part: str, pts: Sequence[tuple[float, float]], width: float, within: str | None = None
    ) -> None:
        """Polyline of `width` template units with round joints and caps."""
        fixed = self._fix(pts)
        thick = self._thick(width)

        def draw(img: np.ndarray, v: int) -> None:
            for a, b in itertools.pairwise(fixed):
                cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), v, thick, cv2.LINE_8, _SHIFT)

        self._paint(draw, part, within)

    def _thick(self, width: float) -> int:
        # cv2 thickness is integer raster pixels (the shift applies only to coordinates)
        return max(1, round(width * self.size / 2))


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
    from sc_imagenet.synth.template_defs import TEMPLATE_SPECS

    if wnid not in TEMPLATE_SPECS:
        raise KeyError(f"no template for {wnid}; object templates: {sorted(TEMPLATE_SPECS)}")
    return rasterize(TEMPLATE_SPECS[wnid])
