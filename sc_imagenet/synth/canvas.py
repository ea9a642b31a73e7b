"""Template drawing primitives: part and template specs and the `Canvas` they are drawn on.

Shared by `templates.py` (rasterization, lookups) and `template_defs.py` (the designs), which import
this module and never each other the other way round. Template space is u = (u_x, u_y) ∈ [-1, 1]²,
u_y pointing down (see `templates.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
