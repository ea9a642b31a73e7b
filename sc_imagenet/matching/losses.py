"""Losses of the cascade (paper Eq. 2 and the pixel level's L_P), pure tensor functions.

Volumes are `(B, h_s, w_s, h_t, w_t)`; foreground masks `(B, h, w)` in [0, 1] on the matching grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def adaptive_pool(volume: Tensor, fg_s: Tensor | None = None, fg_t: Tensor | None = None) -> Tensor:
    """AP(v) of Eq. 2 → `(B,)`: for every source cell its best similarity over the target (foreground)
    cells, averaged over the source (foreground) cells. A pair that truly matches has a good partner
    for every object cell; a cross-category pair does not."""
    B, hs, ws, ht, wt = volume.shape
    v = volume.reshape(B, hs * ws, ht * wt)
    if fg_t is not None:
        keep_t = fg_t.reshape(B, 1, ht * wt) > 0.5
        keep_t = keep_t | ~keep_t.any(dim=-1, keepdim=True)  # an empty mask means "no constraint"
        v = v.masked_fill(~keep_t, float("-inf"))
    best = v.max(dim=-1).values  # (B, N_s)
    w = torch.ones_like(best) if fg_s is None else fg_s.reshape(B, hs * ws).to(best.dtype)
    w = torch.where(w.sum(dim=1, keepdim=True) > 0, w, torch.ones_like(w))
    return (best * w).sum(dim=1) / w.sum(dim=1)


def contrastive_loss(v_pos: Tensor, v_neg: Tensor, fg_s: Tensor | None = None, fg_t: Tensor | None = None,
                     fg_t_neg: Tensor | None = None) -> Tensor:
    """Eq. 2: mean over the batch of −AP(v_pos) + AP(v_neg). v_neg pairs each source with a target
    of another category (batch shifting)."""
    return (-adaptive_pool(v_pos, fg_s, fg_t) + adaptive_pool(v_neg, fg_s, fg_t_neg)).mean()


def pixel_level_loss(volume: Tensor, src_idx: Tensor, trg_grid_xy: Tensor, valid: Tensor,
                     logit_scale: Tensor | float = 10.0, sigma: float = 0.75, bias: Tensor | float = 0.0,
                     mode: str = "bce") -> Tensor:
    """Pixel-level supervision by the region level's pseudo-labels (L_P of Eq. 3).

    volume `(B, h_s, w_s, h_t, w_t)`; src_idx `(B, K)` flat source cells; trg_grid_xy `(B, K, 2)`
    continuous target grid coordinates (col, row); valid `(B, K)` bool. Each labelled source cell's row of
    the volume becomes logits over the target cells, `row × logit_scale + bias` (a multiplier, i.e. an
    inverse temperature), and is compared with a Gaussian of width `sigma` cells around the
    pseudo-labelled target:

    - mode `bce` (paper, "as in [44]"): binary cross-entropy per target cell towards the Gaussian, with a
      positive-class weight (positives are ~1 cell in hundreds). The bias absorbs the overall level of the
      similarities (cosines of non-negative descriptors are all positive), so the volume only has to rank.
    - mode `ce` (ours): cross-entropy of the softmax over target cells against the Gaussian normalised to a
      distribution — a ranking loss (the bias cancels).
    """
    if mode not in ("bce", "ce"):
        raise ValueError(f"pixel loss mode must be 'bce' or 'ce', got {mode!r}")
    B, hs, ws, ht, wt = volume.shape
    if not bool(valid.any()):
        return volume.sum() * 0.0
    rows = volume.reshape(B, hs * ws, ht * wt)
    b_idx, k_idx = torch.nonzero(valid, as_tuple=True)
    logits = rows[b_idx, src_idx[b_idx, k_idx]] * logit_scale + bias  # (M, N_t)
    ys, xs = torch.meshgrid(torch.arange(ht, device=volume.device), torch.arange(wt, device=volume.device),
                            indexing="ij")
    cells = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1).to(volume.dtype)  # (N_t, 2) (col, row)
    d2 = ((cells[None] - trg_grid_xy[b_idx, k_idx][:, None, :].to(volume.dtype)) ** 2).sum(-1)
    target = torch.exp(-d2 / (2 * sigma**2))
    if mode == "ce":
        target = target / target.sum(dim=-1, keepdim=True)
        return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
    # positives are ~1 cell among hundreds: weight them up so the loss is not won by predicting "no"
    pos_weight = torch.tensor(float(ht * wt) / (2 * torch.pi * sigma**2 + 1.0), device=volume.device)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
