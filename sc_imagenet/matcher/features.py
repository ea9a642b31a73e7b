"""The matcher's feature extractors and its learned projection.

Two extractors, one contract: `forward(images uint8 (B, 3, S, S)) -> list of (B, C_l, g, g)`, one map per
level, every level resampled to the cost grid g × g (CATs resamples its hyperpixel layers to 16 × 16 the
same way).

- `SmallCNN`: trained from scratch with the matcher, so its features owe nothing to the pseudo-labeller's
  backbone (issue 20: on the generator's own frozen descriptors the release teaches almost nothing new).
  A stride-4 patch stem and three stride-2 stages, each with a residual convolution; the levels are
  strides 8, 16 and 32, the multi-level "hyperpixel" idea of CATs on a network small enough to train on a
  CPU (no full-resolution convolution: the 16 × 16 cost volume never sees finer than stride 8).
- `FrozenBackbone`: any backbone of the project's registry (`sc_imagenet.matching.backbones`), frozen, one
  level (its token map). Only the projection on top of it learns.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sc_imagenet.matching.backbones import Backbone, CheckpointError, create_backbone
from sc_imagenet.matching.backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD

LEVEL_STAGES = (1, 2, 3)  # CNN stages (0-based) whose outputs are the levels: strides 8, 16, 32


class FeatureError(ValueError):
    """A registry backbone that cannot be built here (unknown name, missing or unfit weights); names it."""


def resample(x: torch.Tensor, grid: int) -> torch.Tensor:
    """`(B, C, h, w)` → `(B, C, grid, grid)`: bilinear, anti-aliased when shrinking (a coarser level is
    upsampled, a finer one averaged down, never subsampled)."""
    if x.shape[-2:] == (grid, grid):
        return x
    return F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False,
                         antialias=x.shape[-1] > grid)


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: batches of 8 pairs (and a final partial batch) give poor batch statistics,
    # and evaluation then computes exactly what training did
    return nn.GroupNorm(math.gcd(8, channels), channels)


class _Stage(nn.Module):
    """A strided convolution (the stem: 4 × 4 patches at stride 4; later stages: 3 × 3 at stride 2), then one
    residual 3 × 3 convolution, each normalised and rectified."""

    def __init__(self, cin: int, cout: int, stem: bool) -> None:
        super().__init__()
        down = nn.Conv2d(cin, cout, 4, 4, bias=False) if stem else nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.down = nn.Sequential(down, _norm(cout), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return F.relu(x + self.body(x))


class SmallCNN(nn.Module):
    """A stride-4 stem and three stride-2 stages on ImageNet-normalised input; levels at strides 8, 16 and 32,
    each resampled to the grid."""

    def __init__(self, channels: list[int], grid: int) -> None:
        super().__init__()
        cins = [3, *channels[:-1]]
        self.stages = nn.ModuleList([_Stage(a, b, stem=i == 0) for i, (a, b) in enumerate(zip(
            cins, channels, strict=True))])
        self.grid = grid
        self.out_channels = [channels[i] for i in LEVEL_STAGES]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images.float() / 255.0 - self.mean) / self.std
        levels = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in LEVEL_STAGES:
                levels.append(resample(x, self.grid))
        return levels


class FrozenBackbone(nn.Module):
    """A registry backbone, frozen: the S × S frame is handed to its own `encode` (which resizes to its input
    size and normalises as it was trained), its token map resampled to the grid. One level."""

    def __init__(self, name: str, grid: int, checkpoint: Path | None = None, input_size: int | None = None) -> None:
        super().__init__()
        import importlib

        importlib.import_module("sc_imagenet.matching.backbones")  # registers every backbone
        kwargs: dict = {}
        if checkpoint is not None:
            kwargs["checkpoint"] = checkpoint
        if input_size is not None:
            kwargs["input_size"] = input_size
        try:
            self.backbone: Backbone = create_backbone(name, **kwargs)
        except (ValueError, FileNotFoundError, CheckpointError) as exc:  # unknown name, no or unfit weights
            raise FeatureError(f"matcher features {name!r}: {exc}") from None
        self.grid = grid
        self.out_channels = [self.backbone.out_dim]

    def train(self, mode: bool = True) -> FrozenBackbone:
        super().train(mode)
        self.backbone.eval()  # frozen: never in training mode (ViT dropout, norms)
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        rgb = images.permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()
        feats = self.backbone.encode([np.ascontiguousarray(im) for im in rgb])
        h, w = feats.grid
        tokens = feats.tokens.to(images.device).float()
        x = tokens.transpose(1, 2).reshape(len(rgb), -1, h, w)
        return [resample(x, self.grid)]


class Projection(nn.Module):
    """The learned projection: one 1 × 1 convolution per level to a common width D. Its output is both what
    is correlated (after L2 normalisation) and the appearance embedding the aggregator reads. Orthogonal
    initialisation: a frozen backbone's cosine similarities survive the projection roughly as they were."""

    def __init__(self, in_channels: list[int], dim: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList([nn.Conv2d(c, dim, 1) for c in in_channels])
        for conv in self.levels:
            nn.init.orthogonal_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """list of `(B, C_l, g, g)` → `(B, L, D, g, g)`."""
        return torch.stack([conv(x) for conv, x in zip(self.levels, levels, strict=True)], dim=1)
