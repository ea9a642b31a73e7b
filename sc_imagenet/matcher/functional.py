"""The matcher's pure parts: cost volume, soft-argmax flow, end-point error, frame conversions.

Frames. Every image is resized (no crop, aspect not kept) to an `S × S` frame (S = 256, as CATs). Points
are float `(x, y)` with pixel centres at integers (the project's convention, docs/evaluate.md), so a point
of an `H × W` image maps to `((x + ½)·S/W − ½, (y + ½)·S/H − ½)`. The cost volume lives on a `g × g` grid
over that frame; cell `(r, c)` (flat index `r·g + c`) is centred at `((c + ½)·S/g − ½, (r + ½)·S/g − ½)`.

A flow is `(B, 2, g, g)`: for each SOURCE cell, the target position of its content minus the cell's own
centre, in frame pixels (x then y). A point between cell centres takes the bilinear interpolation of the
four around it (what upsampling the flow to S × S and reading it at the point gives, CATs' read-out).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sc_imagenet.matching.backbones.preprocess import resize_square

EPS = 1e-6


# ---------------------------------------------------------------------------------------------- frames


def cell_centres(grid: int, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`(g·g, 2)` float32 frame-pixel centres of every cell, row-major."""
    c = (torch.arange(grid, dtype=torch.float32, device=device) + 0.5) * size / grid - 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def frame_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """RGB uint8 `(H_i, W_i, 3)` each → uint8 `(B, 3, size, size)`, resized without a crop (area when
    shrinking, bilinear when enlarging: the backbones' `resize_square`, so training and evaluation agree)."""
    return torch.from_numpy(resize_square(images, size)).permute(0, 3, 1, 2).contiguous()


def to_frame(points: np.ndarray, hw: tuple[int, int], size: int) -> np.ndarray:
    """`(N, 2)` original pixels of an `(H, W)` image → the `size × size` frame."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    h, w = hw
    return np.stack([(pts[:, 0] + 0.5) * size / w - 0.5, (pts[:, 1] + 0.5) * size / h - 0.5], axis=1)


def from_frame(points: np.ndarray, hw: tuple[int, int], size: int) -> np.ndarray:
    """Inverse of `to_frame`."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    h, w = hw
    return np.stack([(pts[:, 0] + 0.5) * w / size - 0.5, (pts[:, 1] + 0.5) * h / size - 0.5], axis=1)


# ---------------------------------------------------------------------------------------------- cost


def correlation(src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every source cell with every target cell, per level.

    src, trg: `(B, L, D, g, g)` features → `(B, L, g·g, g·g)`, entry `[b, l, i, j]` = cos(src cell i, trg
    cell j) on level l: the 4-D cost volume (source row, source col, target row, target col) flattened to 2-D."""
    s = F.normalize(src.flatten(3), dim=2, eps=EPS)  # (B, L, D, N)
    t = F.normalize(trg.flatten(3), dim=2, eps=EPS)
    return s.transpose(2, 3) @ t


def mutual_filter(cost: torch.Tensor) -> torch.Tensor:
    """Mutual nearest-neighbour re-weighting (Rocco et al., NeurIPS 2018; CATs applies it before aggregating):
    each positive entry is scaled by its ratio to the best entry of its row and of its column, so a match that
    is best both ways keeps its value and a one-sided one fades. Negative similarities carry no match
    evidence and become 0 (the ratios would flip their sign). `(..., N_s, N_t)` → same shape."""
    pos = cost.clamp(min=0)
    row = pos.amax(dim=-1, keepdim=True).clamp(min=EPS)
    col = pos.amax(dim=-2, keepdim=True).clamp(min=EPS)
    return pos * (pos / row) * (pos / col)


# ---------------------------------------------------------------------------------------------- flow


def soft_argmax_flow(cost: torch.Tensor, grid: int, size: int, temperature: float) -> torch.Tensor:
    """Dense source → target flow from a cost `(B, g·g, g·g)` (source × target cells).

    Each source row becomes a distribution over target cells, softmax(cost / β) (SFNet's soft-argmax with
    temperature, which CATs uses with β = 0.02); its mean position is where the source cell goes. The flow
    is that position minus the source cell's centre: `(B, 2, g, g)` frame pixels, differentiable."""
    centres = cell_centres(grid, size, cost.device).to(cost.dtype)  # (N, 2)
    prob = torch.softmax(cost / temperature, dim=-1)  # (B, N_s, N_t)
    target = prob @ centres  # (B, N_s, 2): expected target position
    flow = target - centres.unsqueeze(0)
    return flow.transpose(1, 2).reshape(cost.shape[0], 2, grid, grid)


def sample_flow(flow: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    """The flow at arbitrary frame points: bilinear between cell centres, constant beyond the outer ones.

    flow `(B, 2, g, g)`, points `(B, K, 2)` frame pixels → `(B, K, 2)`. With `align_corners=False` grid_sample
    puts the g cell centres at normalised `(c + ½)/g·2 − 1`, the same places as `cell_centres`."""
    norm = (points + 0.5) / size * 2.0 - 1.0
    out = F.grid_sample(flow, norm.unsqueeze(1).to(flow.dtype), mode="bilinear", padding_mode="border",
                        align_corners=False)  # (B, 2, 1, K)
    return out[:, :, 0, :].transpose(1, 2)


def transfer_points(flow: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    """Where each source point lands in the target frame: the point plus the flow at it. `(B, K, 2)`."""
    return points + sample_flow(flow, points, size)


def keypoint_epe(flow: torch.Tensor, src_kps: torch.Tensor, trg_kps: torch.Tensor,
                 mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CATs' objective: the end-point error of the flow at the annotated keypoints.

    `(mean EPE over every unmasked keypoint of the batch, per-point EPE (B, K))`; frame pixels. src_kps,
    trg_kps `(B, K, 2)`, mask `(B, K)` bool: padded points (the loaders pad every pair to 40) count nowhere,
    and a batch without a single keypoint gives 0 (with a gradient of 0), never NaN."""
    pred = transfer_points(flow, src_kps, size)
    epe = torch.linalg.vector_norm(pred - trg_kps, dim=-1)
    m = mask.to(epe.dtype)
    return (epe * m).sum() / m.sum().clamp(min=1.0), epe


def pck_hits(pred: torch.Tensor, trg_kps: torch.Tensor, mask: torch.Tensor, threshold: torch.Tensor,
             alpha: float) -> tuple[int, int]:
    """(correct, counted) keypoints: correct iff ‖pred − true‖ ≤ α · threshold (per pair, frame pixels)."""
    dist = torch.linalg.vector_norm(pred - trg_kps, dim=-1)
    ok = (dist <= alpha * threshold.unsqueeze(1)) & mask
    return int(ok.sum()), int(mask.sum())
