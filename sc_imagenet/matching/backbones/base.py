"""The backbone contract: frozen feature extractors returning patch tokens on a grid.

    bb = create_backbone("dense-sift", input_size=224)
    feats = bb.encode([rgb_a, rgb_b])       # RGB uint8 (H_i, W_i, 3), any sizes
    feats.tokens: (B, h*w, C)  feats.grid: (h, w)  feats.global_token: (B, C)

Images are resized (no crop) to `input_size × input_size` inside `preprocess`; geometry between
the grid and original pixels is `sc_imagenet.matching.geometry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from sc_imagenet.registry import Registry


@dataclass
class Features:
    tokens: torch.Tensor  # (B, h*w, C), row-major over the grid, no cls/register tokens
    grid: tuple[int, int]  # (h, w)
    global_token: torch.Tensor  # (B, C): the cls token for ViTs, mean-pooled tokens otherwise


class Backbone(nn.Module, ABC):
    """Frozen: parameters never require grad, and `encode` runs under `torch.no_grad()`."""

    name: ClassVar[str]
    patch_size: int  # input pixels per grid cell
    input_size: int  # square side of the network input
    out_dim: int  # C

    @abstractmethod
    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 `(H_i, W_i, 3)` → `(B, 3, S, S)` float tensor, resized and normalised."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Features:
        """`(B, 3, S, S)` → Features with grid `(S // patch_size, S // patch_size)`."""

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        b = next(self.buffers(), None)
        return (p if p is not None else b).device if (p is not None or b is not None) else torch.device("cpu")

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray]) -> Features:
        return self(self.preprocess(images).to(self.device))


BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: register a backbone factory under `name` (ValueError if taken)."""
    return BACKBONES.decorator(name)


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    model = BACKBONES[name](**kwargs)  # unknown name: ValueError listing the known backbones
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def list_backbones() -> list[str]:
    return sorted(BACKBONES)
