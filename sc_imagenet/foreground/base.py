"""The foreground-source contract and registry.

A foreground source turns what is known about one image (its pixels and/or its kept detection) into
a float32 (h, w) mask in [0, 1] at whatever resolution the caller works at (a feature map, a
resized image). Sources register themselves with `@register_foreground("name")`; callers build one
with `create_foreground(name, **kwargs)` and never branch on the name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sc_imagenet.registry import Registry


@dataclass(frozen=True)
class DetectionRecord:
    """The kept detection of one image, as the `single_instance` manifest stores it.

    width, height: size of the ORIGINAL image in pixels. box: (4,) float32 [x1, y1, x2, y2] or None.
    polygon: (K, 2) float32 (x, y) instance outline or None (models without masks). Coordinates are
    original-image pixels, centres at integer coordinates.
    """

    width: int
    height: int
    box: np.ndarray | None = None
    polygon: np.ndarray | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    @classmethod
    def from_lists(cls, width: int, height: int, box: list[float] | None,
                   mask_poly: list[float] | None) -> DetectionRecord:
        """From manifest values: `box` 4 floats or None, `mask_poly` flattened (x0, y0, x1, y1, ...) or None."""
        b = None if box is None else np.asarray(box, dtype=np.float32).reshape(4)
        p = None if mask_poly is None else np.asarray(mask_poly, dtype=np.float32).reshape(-1, 2)
        return cls(int(width), int(height), b, p)


class ForegroundSource(ABC):
    """One way of producing a foreground mask. Subclasses set the class attributes below.

    needs_detection: `mask` requires `record`. needs_image: `mask` requires `image` (uint8 (H, W, 3)
    RGB, the original image). The provider uses both flags to load only what is needed.
    """

    name: ClassVar[str]
    needs_detection: ClassVar[bool] = False
    needs_image: ClassVar[bool] = False

    @abstractmethod
    def mask(self, out_hw: tuple[int, int], *, image: np.ndarray | None = None,
             record: DetectionRecord | None = None) -> np.ndarray:
        """float32 (h, w) mask in [0, 1] for an output of size out_hw = (h, w)."""

    def _require(self, image: np.ndarray | None, record: DetectionRecord | None) -> None:
        if self.needs_image and image is None:
            raise ValueError(f"foreground source {self.name!r} needs the image")
        if self.needs_detection and record is None:
            raise ValueError(f"foreground source {self.name!r} needs the image's DetectionRecord")


FOREGROUND_SOURCES: Registry[type[ForegroundSource]] = Registry("foreground source")


def register_foreground(name: str) -> Callable[[type[ForegroundSource]], type[ForegroundSource]]:
    """Class decorator: register a `ForegroundSource` subclass under `name` (sets `cls.name`)."""

    def deco(cls: type[ForegroundSource]) -> type[ForegroundSource]:
        FOREGROUND_SOURCES.check_free(name)
        cls.name = name
        FOREGROUND_SOURCES.register(name, cls)
        return cls

    return deco


def foreground_names() -> list[str]:
    """Registered source names, sorted."""
    return sorted(FOREGROUND_SOURCES)


def create_foreground(name: str, **kwargs: Any) -> ForegroundSource:
    """Instantiate the source registered as `name` with its keyword arguments."""
    return FOREGROUND_SOURCES[name](**kwargs)  # unknown name: ValueError listing the known sources
