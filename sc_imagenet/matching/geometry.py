"""Grid ↔ pixel conventions shared by every matching module.

A backbone sees the image resized (no crop, aspect not kept) to a square `S×S` input and returns
an `(h, w)` grid of tokens, row-major: token `n` is cell `(n // w, n % w)`. Pixel centres sit at
integer coordinates, so cell `(i, j)` of an image of original size `(H, W)` is centred at

    x = (j + 0.5) * W / w - 0.5,    y = (i + 0.5) * H / h - 0.5

All functions take and return float32 `(N, 2)` `(x, y)` arrays/tensors in ORIGINAL image pixels.
"""

from __future__ import annotations

import numpy as np
import torch


def cell_centers(grid: tuple[int, int], orig_hw: tuple[int, int]) -> np.ndarray:
    """`(h*w, 2)` pixel centres of every cell, row-major."""
    h, w = grid
    H, W = orig_hw
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    x = (jj.reshape(-1) + 0.5) * W / w - 0.5
    y = (ii.reshape(-1) + 0.5) * H / h - 0.5
    return np.stack([x, y], axis=1).astype(np.float32)


def index_to_pixels(index: np.ndarray | torch.Tensor, grid: tuple[int, int], orig_hw: tuple[int, int]) -> np.ndarray:
    """Flat cell indices `(N,)` → `(N, 2)` pixel centres."""
    idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index).astype(np.int64)
    h, w = grid
    H, W = orig_hw
    x = (idx % w + 0.5) * W / w - 0.5
    y = (idx // w + 0.5) * H / h - 0.5
    return np.stack([x, y], axis=1).astype(np.float32)


def pixels_to_index(points_xy: np.ndarray, grid: tuple[int, int], orig_hw: tuple[int, int]) -> np.ndarray:
    """`(N, 2)` pixels → flat index `(N,)` of the cell containing each point (clamped to the grid)."""
    pts = np.asarray(points_xy, np.float64).reshape(-1, 2)
    h, w = grid
    H, W = orig_hw
    j = np.clip(np.floor((pts[:, 0] + 0.5) * w / W), 0, w - 1).astype(np.int64)
    i = np.clip(np.floor((pts[:, 1] + 0.5) * h / H), 0, h - 1).astype(np.int64)
    return i * w + j


def pixels_to_grid(points_xy: np.ndarray, grid: tuple[int, int], orig_hw: tuple[int, int]) -> np.ndarray:
    """`(N, 2)` pixels → continuous grid coordinates `(N, 2)` (col, row) with cell centres at integers."""
    pts = np.asarray(points_xy, np.float32).reshape(-1, 2)
    h, w = grid
    H, W = orig_hw
    return np.stack([(pts[:, 0] + 0.5) * w / W - 0.5, (pts[:, 1] + 0.5) * h / H - 0.5], axis=1).astype(np.float32)


def grid_to_pixels(grid_xy: np.ndarray, grid: tuple[int, int], orig_hw: tuple[int, int]) -> np.ndarray:
    """Inverse of `pixels_to_grid`."""
    g = np.asarray(grid_xy, np.float32).reshape(-1, 2)
    h, w = grid
    H, W = orig_hw
    return np.stack([(g[:, 0] + 0.5) * W / w - 0.5, (g[:, 1] + 0.5) * H / h - 0.5], axis=1).astype(np.float32)


def soft_argmax_3x3(sim_rows: torch.Tensor, best: torch.Tensor, grid: tuple[int, int],
                    temperature: float = 0.05) -> np.ndarray:
    """Sub-cell refinement: the softmax(sim / temperature)-weighted mean position of the 3×3 cells around
    each `best` cell (cells off the grid are ignored). sim_rows (N, h*w), best (N,) flat indices.
    Returns (N, 2) float32 continuous grid coordinates (col, row), cell centres at integers."""
    h, w = grid
    rows, cols = best // w, best % w
    d = torch.tensor([-1, 0, 1], device=best.device)
    nr = (rows[:, None, None] + d[None, :, None]).expand(-1, 3, 3).reshape(len(best), 9)
    nc = (cols[:, None, None] + d[None, None, :]).expand(-1, 3, 3).reshape(len(best), 9)
    inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
    vals = torch.gather(sim_rows, 1, (nr.clamp(0, h - 1) * w + nc.clamp(0, w - 1)))
    weights = torch.softmax(vals.masked_fill(~inside, float("-inf")) / temperature, dim=1)
    gx = (weights * nc.to(weights.dtype)).sum(1)
    gy = (weights * nr.to(weights.dtype)).sum(1)
    return torch.stack([gx, gy], 1).cpu().numpy().astype(np.float32)
