"""Detector registry. A detector maps a batch of RGB images to `ImageDetections` in original pixels.

    det = create_detector("ultralytics", weights=path, imgsz=640, device="auto", half="auto")
    [dets] = det.detect([rgb])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sc_imagenet.detect.types import ImageDetections
from sc_imagenet.devices import resolve_device, torch_threads_kept, use_amp
from sc_imagenet.registry import Registry


class Detector(ABC):
    name: ClassVar[str]
    class_names: list[str]
    has_masks: bool

    @abstractmethod
    def detect(self, images: Sequence[np.ndarray]) -> list[ImageDetections]:
        """images: RGB uint8 `(H_i, W_i, 3)`, any sizes. Returns one result per image, same order."""


DETECTORS: Registry[Callable[..., Detector]] = Registry("detector backend")


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Class decorator: register a `Detector` subclass under its `name` (ValueError if taken)."""
    DETECTORS.register(cls.name, cls)
    return cls


def create_detector(name: str, **kwargs: Any) -> Detector:
    return DETECTORS[name](**kwargs)  # unknown name: ValueError listing the known backends


@register_detector
class UltralyticsDetector(Detector):
    """Any local ultralytics detection or segmentation checkpoint (YOLOv8, YOLO11, …)."""

    name = "ultralytics"

    def __init__(self, weights: Path, imgsz: int = 640, device: str = "auto", half: bool | str = "auto",
                 conf_floor: float = 0.05, iou: float = 0.6, max_det: int = 50) -> None:
        from sc_imagenet.detect.offline import load_yolo

        with torch_threads_kept():
            self.model = load_yolo(weights)
        self.device = resolve_device(device)
        self.half = use_amp(half, self.device)
        # ultralytics ≥ 8.4 spells fp16 inference `quantize=16` (its old `half` flag is deprecated)
        self.kwargs = {"imgsz": imgsz, "conf": conf_floor, "iou": iou, "max_det": max_det,
                       "quantize": 16 if self.half else 32, "device": self.device, "verbose": False}
        # ultralytics sets up its predictor on the first `predict`, and that setup sets torch's CPU thread
        # count to its own choice (1 on a 2-core machine); our restore afterwards means later batches ran
        # with another thread count than the first, and results differed in the last bits depending on
        # which category came first (a resumed build vs an uninterrupted one). Set it up now, on a blank
        # image, so every real batch runs with the same settings.
        with torch_threads_kept():
            self.model.predict(np.zeros((32, 32, 3), np.uint8), **self.kwargs)
        names = self.model.names
        self.class_names = [names[i] for i in sorted(names)]
        self.has_masks = self.model.task == "segment"

    def detect(self, images: Sequence[np.ndarray]) -> list[ImageDetections]:
        if not images:
            return []
        # ultralytics takes numpy arrays as BGR (OpenCV order)
        bgr = [np.ascontiguousarray(img[..., ::-1]) for img in images]
        with torch_threads_kept():
            results = self.model.predict(bgr, **self.kwargs)
            return [self._convert(r) for r in results]

    def _convert(self, r: Any) -> ImageDetections:
        conf = r.boxes.conf.float().cpu().numpy().astype(np.float32)
        order = np.argsort(-conf, kind="stable")
        boxes = r.boxes.xyxy.float().cpu().numpy().astype(np.float32)[order]
        cls = r.boxes.cls.cpu().numpy().astype(np.int32)[order]
        polygons = None
        if self.has_masks:
            xy = r.masks.xy if r.masks is not None else []
            polygons = [np.asarray(xy[i], np.float32).reshape(-1, 2) for i in order] if len(xy) else []
        return ImageDetections(boxes, conf[order], cls, polygons)
