"""The matcher network: features → learned projection → 4-D cost volume → aggregation → soft-argmax flow.

    net = MatcherNet(MatcherConfig())
    out = net(src, trg)          # uint8 (B, 3, 256, 256) each
    out.flow                     # (B, 2, 16, 16) source → target, frame pixels (functional.py)
    out.cost                     # (B, 256, 256) the aggregated cost the flow was read from
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sc_imagenet.matcher import functional as fn
from sc_imagenet.matcher.aggregation import CostTransformer, Smoothing
from sc_imagenet.matcher.features import FrozenBackbone, Projection, SmallCNN
from sc_imagenet.matcher.settings import MatcherConfig

FROZEN_PREFIX = "features.backbone."  # state-dict keys of a frozen registry backbone: never saved with the matcher


@dataclass
class MatcherOutput:
    flow: torch.Tensor  # (B, 2, g, g) frame pixels
    cost: torch.Tensor  # (B, N, N) aggregated


class MatcherNet(nn.Module):
    def __init__(self, cfg: MatcherConfig, backbone_checkpoint: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.features: nn.Module
        if cfg.uses_cnn:
            self.features = SmallCNN(cfg.cnn_channels, cfg.grid)
        else:
            self.features = FrozenBackbone(cfg.features, cfg.grid, backbone_checkpoint, cfg.backbone_input_size)
        self.projection = Projection(self.features.out_channels, cfg.proj_dim)
        self.smoothing = nn.Sequential(*[Smoothing(cfg.levels, cfg.smoothing_channels, cfg.grid)
                                         for _ in range(cfg.smoothing)])
        self.aggregator = CostTransformer(cfg.grid, cfg.levels, cfg.proj_dim, cfg.dim, cfg.depth, cfg.heads,
                                          cfg.mlp_ratio)

    def check_input(self, x: torch.Tensor, what: str) -> None:
        s = self.cfg.input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"{what}: expected (B, 3, {s}, {s}) images, got {tuple(x.shape)}")

    def forward(self, src: torch.Tensor, trg: torch.Tensor) -> MatcherOutput:
        self.check_input(src, "source")
        self.check_input(trg, "target")
        b = src.shape[0]
        # one pass of the extractor over both images (its normalisation layers see one batch)
        proj = self.projection(self.features(torch.cat([src, trg])))  # (2B, L, D, g, g)
        ps, pt = proj[:b], proj[b:]
        cost = fn.correlation(ps, pt)  # (B, L, N, N)
        if self.cfg.mutual_filter:
            cost = fn.mutual_filter(cost)
        cost = self.smoothing(cost)
        cost = self.aggregator(cost, ps.flatten(3), pt.flatten(3))
        return MatcherOutput(fn.soft_argmax_flow(cost, self.cfg.grid, self.cfg.input_size, self.cfg.temperature), cost)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The state dict without a frozen registry backbone (its weights are its own checkpoint's)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(FROZEN_PREFIX)}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(FROZEN_PREFIX)]
        if missing or unexpected:
            raise ValueError(f"matcher weights do not fit the architecture: missing {missing[:5]}, "
                             f"unexpected {list(unexpected)[:5]}")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
