"""The trained generator as a predictor: what the `label` and `consistency` stages call.

    gen = PseudoLabelGenerator(backbone, model)
    src_xy, trg_xy, score = gen.match(src_rgb, trg_rgb, k=32)     # (k, 2), (k, 2), (k,) original pixels
    grid, trg_xy = gen.flow(src_rgb, trg_rgb)                     # (h, w), (h*w, 2) target pixel per source cell

Batched, for many pairs among a set of images (`label`): every image is encoded once, its foreground
mask resized to the grid once, and one pair-head forward per pair gives both read-outs:

    feats = gen.encode(images)                                    # one backbone batch (or `cat_features`)
    fg = [gen.grid_mask(m, feats.grid) for m in masks]            # (h, w) cell fractions, or None
    out = gen.label_pairs(take_features(feats, s), take_features(feats, t), src_hw, trg_hw, k=64,
                          fg_s=[fg[i] for i in s], fg_t=[fg[i] for i in t])
    out[b].flow, out[b].src_xy, out[b].trg_xy, out[b].score      # as `flow(...)[1]` and `match(...)`

Features are computed once per image (`encode`), so a caller matching one image against many reuses
them; the volume comes from the pixel level (or the image level if no pixel level was trained), PMPS
regularises it (RHM) and picks one-to-one pairs for `match`, NMS spreads them; `flow` (dense) takes
the plain argmax of the refined volume, refined to sub-cell precision. `match`, `flow` and
`label_pairs` share one implementation (`_pair_volume`, `_flows`, `_candidates`), so a pair's
read-outs are the same whichever entry point computed them. With `amp` on a CUDA device the
backbone and the pair head run under bf16 autocast; the volume is read out in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from sc_imagenet.devices import use_amp
from sc_imagenet.matching.backbones.base import Backbone, Features
from sc_imagenet.matching.cascade import CascadeGenerator, grid_masks
from sc_imagenet.matching.geometry import grid_to_pixels, index_to_pixels, soft_argmax_3x3

HW = tuple[int, int]


class PairLabel(NamedTuple):
    """The generator's read-outs of one pair (original pixels, `(x, y)`)."""

    flow: np.ndarray  # (h_s*w_s, 2) float32: target pixel of every source cell (row-major), sub-cell
    src_xy: np.ndarray  # (K, 2) float32: candidates' source points, best first (K <= k)
    trg_xy: np.ndarray  # (K, 2) float32: their target points
    score: np.ndarray  # (K,) float32: PMPS confidence, non-increasing


def take_features(features: Features, index: Sequence[int] | torch.Tensor) -> Features:
    """The features of images `index` (in that order, repeats allowed) of a batch."""
    idx = torch.as_tensor(index, dtype=torch.long, device=features.tokens.device)
    return Features(features.tokens.index_select(0, idx), features.grid, features.global_token.index_select(0, idx))


def cat_features(parts: Sequence[Features]) -> Features:
    """Batches of the same backbone (same grid) concatenated into one."""
    if not parts:
        raise ValueError("cat_features: nothing to concatenate")
    grids = {p.grid for p in parts}
    if len(grids) != 1:
        raise ValueError(f"cat_features: features on different grids {sorted(grids)}")
    if len(parts) == 1:
        return parts[0]
    return Features(torch.cat([p.tokens for p in parts]), parts[0].grid,
                    torch.cat([p.global_token for p in parts]))


class PseudoLabelGenerator:
    """The trained generator's read-outs in original pixels: pseudo-label candidates (`match`), the dense
    flow (`flow`), and both for many pairs at once (`encode`, `label_pairs`)."""

    def __init__(self, backbone: Backbone, model: CascadeGenerator, nms_cells: float = 1.0,
                 amp: bool = False) -> None:
        self.backbone = backbone
        self.model = model.eval()
        self.level = model.settings.dense_level
        self.nms_cells = nms_cells
        self.amp = amp  # bf16 autocast of the backbone and the pair head; only on CUDA

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when `amp` is on and the model sits on a CUDA device; a no-op otherwise."""
        if use_amp(self.amp, self.device):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ features and masks

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray]) -> Features:
        """One backbone batch: RGB uint8 `(H_i, W_i, 3)` images → features on the model's device."""
        with self.autocast():
            f = self.backbone.encode(images)
        return Features(f.tokens.to(self.device), f.grid, f.global_token.to(self.device))


    def pair_features(self, src_rgb: np.ndarray, trg_rgb: np.ndarray) -> tuple[Features, Features]:
        """Both images encoded in one backbone batch, split into (source, target) features."""
        f = self.encode([src_rgb, trg_rgb])
        return take_features(f, [0]), take_features(f, [1])

    def grid_mask(self, mask: np.ndarray | None, grid: HW) -> torch.Tensor | None:
        """A full-resolution foreground mask → `(h, w)` fraction of each grid cell that is foreground
        (`cascade.grid_masks`), on the model's device; None stays None (no constraint)."""
        return None if mask is None else grid_masks([mask], grid, self.device)[0]

    # ------------------------------------------------------------------ the shared read-outs

    @torch.no_grad()
    def _pair_volume(self, src: Features, trg: Features) -> torch.Tensor:
        """`(B, h_s, w_s, h_t, w_t)` float32 volume of the dense level: the one pair-head forward."""
        with self.autocast():
            v = self.model.volume(self.level, src, trg)
        return v.float()

    @torch.no_grad()
    def volume(self, src: Features, trg: Features) -> torch.Tensor:
        """`(B, h_s, w_s, h_t, w_t)` refined volume, RHM-regularised when the model uses RHM."""
        v = self._pair_volume(src, trg)
        if self.model.settings.use_rhm:
            v = self.model.pmps.confidence(v)
        return v

    @property
    def subcell_temperature(self) -> float:
        """Softmax temperature of the flow's sub-cell refinement: the inverse of the logit scale the
        pixel level learned with its CE/BCE loss (how sharp its trained volume is meant to be read);
        0.05 (the `nn-refine` default) for a model without a pixel level."""
        if self.level != "pixel":
            return 0.05
        return float(1.0 / self.model.pixel_log_scale.detach().exp())

    @torch.no_grad()
    def _flows(self, v: torch.Tensor, trg_grid: HW, trg_hw: Sequence[HW], subcell: bool = True) -> list[np.ndarray]:
        """Per pair of a `(B, h_s, w_s, h_t, w_t)` volume: `(h_s*w_s, 2)` float32 target pixels of every
        source cell's best match (argmax, then `soft_argmax_3x3` at `subcell_temperature`)."""
        B, hs, ws = v.shape[:3]
        rows = v.reshape(B * hs * ws, -1).float()
        best = rows.argmax(dim=1)
        if subcell:
            refined = soft_argmax_3x3(rows, best, trg_grid, self.subcell_temperature).reshape(B, hs * ws, 2)
            return [grid_to_pixels(refined[b], trg_grid, trg_hw[b]) for b in range(B)]
        best_np = best.cpu().numpy().reshape(B, hs * ws)
        return [index_to_pixels(best_np[b], trg_grid, trg_hw[b]) for b in range(B)]

    @torch.no_grad()
    def _candidates(self, v: torch.Tensor, k: int, src_grid: HW, trg_grid: HW, src_hw: Sequence[HW],
                    trg_hw: Sequence[HW], fg_s: Sequence[torch.Tensor | None] | None = None,
                    fg_t: Sequence[torch.Tensor | None] | None = None,
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per pair: top-k one-to-one PMPS pairs (RHM, foreground-constrained by the `(h, w)` grid masks,
        NMS at `nms_cells`) in original pixels. Pairs with and without masks run in separate PMPS
        batches, so a missing mask means "no constraint", never "all foreground"."""
        B = v.shape[0]
        fs = list(fg_s) if fg_s is not None else [None] * B
        ft = list(fg_t) if fg_t is not None else [None] * B
        if len(fs) != B or len(ft) != B:
            raise ValueError(f"fg_s / fg_t: one entry per pair ({B}), got {len(fs)} / {len(ft)}")
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None] * B
        patterns: dict[tuple[bool, bool], list[int]] = {}
        for b in range(B):
            patterns.setdefault((fs[b] is None, ft[b] is None), []).append(b)
        for (no_s, no_t), idx in patterns.items():
            vb = v if len(idx) == B else v[torch.as_tensor(idx, device=v.device)]
            gs = None if no_s else torch.stack([fs[b] for b in idx])
            gt = None if no_t else torch.stack([ft[b] for b in idx])
            sel = self.model.pmps(vb, k, gs, gt, nms_radius=self.nms_cells)
            src_idx, trg_idx = sel["src_idx"].cpu().numpy(), sel["trg_idx"].cpu().numpy()
            score = sel["score"].float().cpu().numpy()  # numpy has no bf16
            for row, b in enumerate(idx):
                ok = src_idx[row] >= 0
                out[b] = (index_to_pixels(src_idx[row][ok], src_grid, src_hw[b]),
                          index_to_pixels(trg_idx[row][ok], trg_grid, trg_hw[b]),
                          score[row][ok].astype(np.float32))
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ entry points

    @torch.no_grad()
    def label_pairs(self, src: Features, trg: Features, src_hw: Sequence[HW], trg_hw: Sequence[HW], k: int,
                    fg_s: Sequence[torch.Tensor | None] | None = None,
                    fg_t: Sequence[torch.Tensor | None] | None = None) -> list[PairLabel]:
        """B pairs (`src`, `trg`: B features each, e.g. `take_features` of an `encode`d group; `src_hw`,
        `trg_hw`: original `(H, W)` per pair; `fg_s`, `fg_t`: per pair an `(h, w)` grid mask from
        `grid_mask`, or None) → one `PairLabel` per pair, from ONE pair-head forward of the B pairs:
        the dense flow exactly as `flow` and the candidates exactly as `match(..., k)`."""
        B = src.tokens.shape[0]
        if trg.tokens.shape[0] != B or len(src_hw) != B or len(trg_hw) != B:
            raise ValueError(f"label_pairs: {B} source features, {trg.tokens.shape[0]} target features, "
                             f"{len(src_hw)} / {len(trg_hw)} image sizes")
        v = self._pair_volume(src, trg)
        flows = self._flows(v, trg.grid, trg_hw)
        cands = self._candidates(v, k, src.grid, trg.grid, src_hw, trg_hw, fg_s, fg_t)
        return [PairLabel(f, *c) for f, c in zip(flows, cands, strict=True)]

    @torch.no_grad()
    def match(self, src_rgb: np.ndarray, trg_rgb: np.ndarray, k: int = 32, fg_s: np.ndarray | None = None,
              fg_t: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k one-to-one matches in original pixels, foreground-constrained when masks are given."""
        src, trg = self.pair_features(src_rgb, trg_rgb)
        v = self._pair_volume(src, trg)
        gs, gt = self.grid_mask(fg_s, src.grid), self.grid_mask(fg_t, trg.grid)
        return self._candidates(v, k, src.grid, trg.grid, [src_rgb.shape[:2]], [trg_rgb.shape[:2]], [gs], [gt])[0]

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
        v = self.volume(src, trg) if hough else self._pair_volume(src, trg)
        return src.grid, self._flows(v, trg.grid, [trg_rgb.shape[:2]], subcell)[0]
