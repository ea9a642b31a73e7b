"""CATs' training augmentations, re-derived, as pure functions of an image, its points and a seeded generator.

What CATs does to a training pair (its `data/dataset.py`; the SC-ImageNet fork loads the release the same
way), and what is kept here:

- a random crop that keeps the object's box (probability 0.5): the left and top edges are drawn between the
  image border and the box, the right and bottom ones between the box and the border, then the crop is
  resized to 256 × 256 and the keypoints follow. Kept, with one change: the kept region is the box together
  with every keypoint, so no keypoint can fall outside the crop (CATs clamps such points onto the border,
  which teaches wrong positions);
- seven photometric transforms, each with probability 0.2, on each image independently: gray, posterize,
  equalize, sharpen, brightness/contrast, solarize, colour jitter (albumentations defaults: limits 0.2,
  solarize threshold 128). Kept, written with PIL (no albumentations dependency); posterize draws 4 to 8 bits
  where albumentations keeps 4.
- Not used, as in CATs: flips (they would swap left and right parts, whose keypoints are named).

Every draw comes from the `numpy.random.Generator` passed in, so a pair's augmentation depends only on its
seed: the same in every epoch order, with any number of loader processes, and after a resume.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

CROP_P = 0.5
PHOTOMETRIC_P = 0.2
LIMIT = 0.2  # brightness, contrast, saturation, hue (fraction of the hue circle)
SOLARIZE_THRESHOLD = 128


def keep_region(hw: tuple[int, int], points: np.ndarray, box: np.ndarray | None) -> tuple[float, float, float, float]:
    """The region a crop must keep: the box (if any) together with the points' extent, clipped to the image.
    `[x1, y1, x2, y2]` in pixels, pixel centres at integers."""
    h, w = hw
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if box is not None:
        b = np.asarray(box, np.float64).reshape(4)
        lo, hi = np.minimum(lo, b[:2]), np.maximum(hi, b[2:])
    x1, y1 = max(0.0, float(lo[0])), max(0.0, float(lo[1]))
    x2, y2 = min(w - 1.0, float(hi[0])), min(h - 1.0, float(hi[1]))
    return x1, y1, max(x1, x2), max(y1, y2)


def random_crop(rng: np.random.Generator, hw: tuple[int, int], keep: tuple[float, float, float, float],
                p: float = CROP_P) -> tuple[int, int, int, int]:
    """`(left, top, right, bottom)`, right and bottom exclusive, containing every pixel of `keep`; the whole
    image with probability 1 − p."""
    h, w = hw
    if rng.random() >= p:
        return 0, 0, w, h
    x1, y1, x2, y2 = keep
    left = int(rng.integers(0, math.floor(x1) + 1))
    top = int(rng.integers(0, math.floor(y1) + 1))
    right = int(rng.integers(min(math.ceil(x2) + 1, w), w + 1))
    bottom = int(rng.integers(min(math.ceil(y2) + 1, h), h + 1))
    return left, top, right, bottom


def _hue_shift(im: Image.Image, shift: float) -> Image.Image:
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + round(shift * 256)) % 256).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _jitter(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    im = ImageEnhance.Brightness(im).enhance(1 + rng.uniform(-LIMIT, LIMIT))
    im = ImageEnhance.Contrast(im).enhance(1 + rng.uniform(-LIMIT, LIMIT))
    im = ImageEnhance.Color(im).enhance(1 + rng.uniform(-LIMIT, LIMIT))
    return _hue_shift(im, rng.uniform(-LIMIT, LIMIT))  # a shift of up to ±0.2 of the hue circle


def photometric(rgb: np.ndarray, rng: np.random.Generator, p: float = PHOTOMETRIC_P) -> np.ndarray:
    """RGB uint8 `(H, W, 3)` → the same size, after each of the seven transforms with probability p."""
    im = Image.fromarray(rgb)
    if rng.random() < p:
        im = ImageOps.grayscale(im).convert("RGB")
    if rng.random() < p:
        im = ImageOps.posterize(im, int(rng.integers(4, 9)))
    if rng.random() < p:
        im = ImageOps.equalize(im)
    if rng.random() < p:
        im = ImageEnhance.Sharpness(im).enhance(1 + 2 * rng.uniform(0.2, 0.5))
    if rng.random() < p:
        im = ImageEnhance.Brightness(im).enhance(1 + rng.uniform(-LIMIT, LIMIT))
        im = ImageEnhance.Contrast(im).enhance(1 + rng.uniform(-LIMIT, LIMIT))
    if rng.random() < p:
        im = ImageOps.solarize(im, SOLARIZE_THRESHOLD)
    if rng.random() < p:
        im = _jitter(im, rng)
    return np.asarray(im.convert("RGB"))
