"""The trained generator as a predictor: what the `label` and `consistency` stages call.

    gen = Generator(backbone, model)
    src_xy, trg_xy, score = gen.match(src_rgb, trg_rgb, k=32)     # (k, 2), (k, 2), (k,) original pixels
    grid, trg_xy = gen.flow(src_rgb, trg_rgb)                     # (h, w), (h*w, 2) target pixel per source cell

Features are computed once per image (`features_for`), so a caller matching one image against
many reuses them; the volume comes from the pixel level (or the image level if no pixel level was
trained), PMPS regularises it (RHM) and picks one-to-one pairs for `match`, NMS spreads them; `flow`
(dense) takes the plain argmax of the refined volume, refined to sub-cell precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sc_imagenet.matching.backbones.base import Backbone, Features
from sc_imagenet.matching.cascade import CascadeGenerator, grid_masks
from sc_imagenet.matching.geometry import grid_to_pixels, index_to_pixels, soft_argmax_3x3
from sc_imagenet.matching.pmps import hough_confidence


class Generator:
    def __init__(self, backbone: Backbone, model: CascadeGenerator, nms_cells: float = 1.0) -> None:
        self.backbone = backbone
        self.model = model.eval()
        self.level = model.settings.dense_level
        self.nms_cells = nms_cells

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def features_for(self, images: Sequence[np.ndarray]) -> Features:
        f = self.backbone.encode(images)
        return Features(f.tokens.to(self.device), f.grid, f.global_token.to(self.device))

    def pair_features(self, src_rgb: np.ndarray, trg_rgb: np.ndarray) -> tuple[Features, Features]:
        """Both images encoded in one backbone batch, split into (source, target) features."""
        f = self.features_for([src_rgb, trg_rgb])
        return (Features(f.tokens[:1], f.grid, f.global_token[:1]),
                Features(f.tokens[1:], f.grid, f.global_token[1:]))

    @torch.no_grad()
    def volume(self, src: Features, trg: Features) -> torch.Tensor:
        """`(B, h_s, w_s, h_t, w_t)` refined volume, RHM-regularised when the model uses RHM."""
        v = self.model.volume(self.level, src, trg)
        if self.model.settings.use_rhm:
            v = hough_confidence(v, L=self.model.settings.rhm_L, appearance=self.model.pmps.appearance)
        return v

    @torch.no_grad()
    def match(self, src_rgb: np.ndarray, trg_rgb: np.ndarray, k: int = 32, fg_s: np.ndarray | None = None,
              fg_t: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k one-to-one matches in original pixels, foreground-constrained when masks are given."""
        src, trg = self.pair_features(src_rgb, trg_rgb)
        v = self.model.volume(self.level, src, trg)
        gs = grid_masks(None if fg_s is None else [fg_s], src.grid, self.device)
        gt = grid_masks(None if fg_t is None else [fg_t], trg.grid, self.device)
        sel = self.model.pmps(v, k, gs, gt, nms_radius=self.nms_cells)
        ok = (sel["src_idx"][0] >= 0).cpu().numpy()
        src_xy = index_to_pixels(sel["src_idx"][0].cpu().numpy()[ok], src.grid, src_rgb.shape[:2])
        trg_xy = index_to_pixels(sel["trg_idx"][0].cpu().numpy()[ok], trg.grid, trg_rgb.shape[:2])
        return src_xy, trg_xy, sel["score"][0].float().cpu().numpy()[ok].astype(np.float32)

    @property
    def subcell_temperature(self) -> float:
        """Softmax temperature of the flow's sub-cell refinement: the inverse of the logit scale the
        pixel level learned with its CE/BCE loss (how sharp its trained volume is meant to be read);
        0.05 (the `nn-refine` default) for a model without a pixel level."""
        if self.level != "pixel":
            return 0.05
        return float(1.0 / self.model.pixel_log_scale.detach().exp())

    @torch.no_grad()
    def flow(self, src_rgb: np.ndarray, trg_rgb: np.ndarray, hough: bool = False,
             subcell: bool = True) -> tuple[tuple[int, int], np.ndarray]:
        """For every source cell, the target pixel of its best match: `((h, w), (h*w, 2))` float32.

        The argmax is over the refined volume itself by default: RHM's single translation prior suits
        picking a few confident pairs (`match`) but drags the dense field of rotated or deformed
        instances towards one offset (measured on the demo: PCK@0.1 0.49 without vs 0.45 with).
        `hough=True` uses the RHM-regularised volume as `match` does. With `subcell` the target is the
        soft-argmax over the 3×3 cells around the best one (`soft_argmax_3x3` at
        `subcell_temperature`) instead of that cell's centre."""
        src, trg = self.pair_features(src_rgb, trg_rgb)
        v = self.volume(src, trg)[0] if hough else self.model.volume(self.level, src, trg)[0]
        h, w = src.grid
        rows = v.reshape(h * w, -1).float()
        best = rows.argmax(dim=1)
        if subcell:
            refined = soft_argmax_3x3(rows, best, trg.grid, self.subcell_temperature)
            return src.grid, grid_to_pixels(refined, trg.grid, trg_rgb.shape[:2])
        return src.grid, index_to_pixels(best.cpu().numpy(), trg.grid, trg_rgb.shape[:2])
