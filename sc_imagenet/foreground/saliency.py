"""Weight-free saliency (OpenCV contrib `cv2.saliency`) and mask binarisation.

These detectors are classical, bottom-up cues: spectral residual (Hou & Zhang 2007) flags what is
unusual in the image's log-amplitude spectrum, fine-grained (Montabone & Soto 2010) computes a
centre-surround contrast over several scales. Neither knows what an object is, so they are much
weaker than a learned salient-object detector such as the paper's SelfReformer (docs/foreground.md).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def _contrib(factory: str) -> Callable[[], object]:
    """A `cv2.saliency` factory, looked up when used: a plain (non-contrib) OpenCV build can still
    import this package and use every other foreground source."""

    def create() -> object:
        module = getattr(cv2, "saliency", None)
        if module is None:
            raise RuntimeError("saliency foreground needs OpenCV's contrib modules (cv2.saliency): install "
                               "opencv-contrib-python-headless instead of opencv-python (see the Makefile)")
        return getattr(module, factory)()

    return create


# name → factory of a `cv2.saliency.StaticSaliency` object (a mapping, so a new method is one line)
SALIENCY_METHODS: dict[str, Callable[[], object]] = {
    "spectral_residual": _contrib("StaticSaliencySpectralResidual_create"),
    "fine_grained": _contrib("StaticSaliencyFineGrained_create"),
}

# Default blur per method (Gaussian sigma / shorter image side), the best mean IoU on synthetic
# seed 11 (195 images; docs/foreground.md): spectral residual's map is speckled and gains from merging
# (0.39 → 0.46), fine-grained's is already blob-like and loses detail beyond 0.02.
DEFAULT_BLUR: dict[str, float] = {"spectral_residual": 0.04, "fine_grained": 0.02}

# Saliency is computed on a copy at most this many pixels on its longer side: fine-grained costs
# ~7 ms at 300 px and grows with the pixel count, and a blob-level cue gains nothing from more detail.
WORK_MAX_SIDE = 512

# below this spread a map is treated as flat: min-max normalising it would only amplify noise
_FLAT = 1e-6


def _as_rgb_u8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W) gray, got shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def normalize01(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to float32 [0, 1]; non-finite values count as 0 and a flat map becomes all 0."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if v.size == 0:
        return v
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < _FLAT:
        return np.zeros_like(v)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0)


def saliency_mask(
    image_rgb: np.ndarray,
    out_hw: tuple[int, int],
    method: str = "spectral_residual",
    blur: float | None = None,
) -> np.ndarray:
    """Soft saliency map, float32 (h, w) in [0, 1], aligned with the image resized to `out_hw`.

    image_rgb: uint8 (H, W, 3) RGB (a (H, W) grayscale array is accepted). out_hw: (h, w).
    method: a key of `SALIENCY_METHODS`. blur: Gaussian sigma as a fraction of the image's shorter
    side, applied before normalising (0 disables, None takes `DEFAULT_BLUR[method]`); it merges
    speckle into blobs, which helps Otsu. Images longer than `WORK_MAX_SIDE` are shrunk first.
    A constant image has no salient region and gives all zeros (never NaN).
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"unknown saliency method {method!r}; known: {sorted(SALIENCY_METHODS)}")
    h, w = (int(v) for v in out_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"out_hw must be positive (h, w), got {out_hw}")
    rgb = _as_rgb_u8(image_rgb)
    if rgb.size == 0 or int(rgb.max()) == int(rgb.min()):
        # spectral residual returns ~1 everywhere plus float noise on flat input; don't normalise noise
        return np.zeros((h, w), np.float32)
    scale = WORK_MAX_SIDE / max(rgb.shape[:2])
    if scale < 1:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    detector = SALIENCY_METHODS[method]()
    ok, sal = detector.computeSaliency(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # OpenCV expects BGR
    if not ok or sal is None:
        raise RuntimeError(f"cv2.saliency {method} failed on an image of shape {rgb.shape}")
    sal = np.nan_to_num(np.asarray(sal, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    blur = DEFAULT_BLUR[method] if blur is None else float(blur)
    if blur > 0:
        sigma = blur * min(sal.shape[:2])
        sal = cv2.GaussianBlur(sal, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    sal = normalize01(sal)
    if sal.shape[:2] != (h, w):
        shrink = h <= sal.shape[0] and w <= sal.shape[1]
        sal = cv2.resize(sal, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.clip(sal, 0.0, 1.0).astype(np.float32)


def binarize(mask: np.ndarray, method: str | float = "otsu") -> np.ndarray:
    """Threshold a soft [0, 1] map to float32 {0, 1}.

    method: "otsu" (threshold chosen on the map's 256-bin histogram) or a float t (pixels >= t
    are foreground). A constant map has no threshold to find: Otsu then keeps it as it is (>= 0.5).
    """
    m = np.nan_to_num(np.asarray(mask, dtype=np.float32), nan=0.0)
    if isinstance(method, str):
        if method != "otsu":
            raise ValueError(f"binarize method must be 'otsu' or a float threshold, got {method!r}")
        u8 = np.round(np.clip(m, 0.0, 1.0) * 255).astype(np.uint8)
        if m.size == 0 or int(u8.max()) == int(u8.min()):
            return (m >= 0.5).astype(np.float32)
        t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return (u8 > t).astype(np.float32)
    return (m >= float(method)).astype(np.float32)
