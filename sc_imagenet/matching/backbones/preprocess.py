"""Shared input handling: validate RGB uint8 images and resize them (no crop) to a square."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

# ImageNet statistics: DINO, iBOT and DINOv2 were all trained with them (timm's default config for
# `vit_base_patch16_224` says 0.5/0.5, which belongs to other weights, so it is not used).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_square(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """RGB uint8 `(H_i, W_i, 3)` each → uint8 `(B, size, size, 3)`; aspect ratio is not kept.

    Area interpolation when shrinking (no aliasing), bilinear when enlarging.
    """
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"image {i}: expected RGB uint8 (H, W, 3), got {desc}")
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"image {i} is empty: {img.shape}")
        shrink = img.shape[0] * img.shape[1] > size * size
        out[i] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def to_normalized_tensor(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 `(B, S, S, 3)` → float32 `(B, 3, S, S)`, `(x / 255 - mean) / std` per channel."""
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def check_input(x: torch.Tensor, size: int) -> None:
    """Raise ValueError unless `x` is `(B, 3, size, size)`."""
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
        raise ValueError(f"expected input (B, 3, {size}, {size}), got {tuple(x.shape)}")
