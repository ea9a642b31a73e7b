"""Learned aggregation of the 4-D cost volume (CATs, with a VAT-style convolutional front).

Two parts, both residual and zero-initialised on their output, so an untrained aggregator returns the raw
cost unchanged and the matcher starts as a soft-argmax nearest-neighbour read-out of its features:

- `Smoothing` (after VAT's idea of treating the cost as a 4-D volume and convolving it before attention,
  in the centre-pivot form of HSNet, Min et al. ICCV 2021): a 4-D k⁴ kernel restricted to its two pivot slices,
  a 2-D convolution over the target cells for every source cell plus one over the source cells for every
  target cell. It encodes local smoothness: neighbouring source cells should land on neighbouring
  target cells. Cost O(N · g² · k²), against O(N² · k²) for a full 4-D convolution.
- `CostTransformer` (CATs §3.3): every source cell is a token holding its whole row of the cost (its
  correlation with every target cell) concatenated with its appearance embedding (the projected feature),
  plus a learned position. Self-attention across tokens lets each cell's match distribution see every other
  cell's, which is where global consistency comes from. CATs' "swapping" pass runs the same blocks on the
  transposed volume first (tokens = target cells, with target appearance), so the aggregation is
  consistent in both directions. CATs also attends across levels at each cell; a learned L × L mixing
  replaces that attention here (3 levels: an attention over 3 tokens costs a full projection for nothing).
  Tokens are projected from N + D to `dim` and back, which keeps a 16 × 16 volume trainable on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CenterPivot4d(nn.Module):
    """`(B, C_in, N_s, N_t)` → `(B, C_out, N_s, N_t)`, N = g²: a k × k convolution over the target grid for
    each source cell, plus one over the source grid for each target cell."""

    def __init__(self, cin: int, cout: int, grid: int, kernel: int = 3) -> None:
        super().__init__()
        self.grid = grid
        self.over_target = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
        self.over_source = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n, _ = x.shape
        g = self.grid
        t = self.over_target(x.permute(0, 2, 1, 3).reshape(b * n, c, g, g))  # (B·N_s, C', g, g)
        t = t.reshape(b, n, -1, n).permute(0, 2, 1, 3)
        s = self.over_source(x.permute(0, 3, 1, 2).reshape(b * n, c, g, g))  # (B·N_t, C', g, g)
        s = s.reshape(b, n, -1, n).permute(0, 2, 3, 1)
        return t + s


class Smoothing(nn.Module):
    """`x + CP(GELU(CP(x)))` on `(B, L, N, N)`; the second convolution starts at zero."""

    def __init__(self, levels: int, hidden: int, grid: int) -> None:
        super().__init__()
        self.inner = CenterPivot4d(levels, hidden, grid)
        self.outer = CenterPivot4d(hidden, levels, grid)
        for conv in (self.outer.over_target, self.outer.over_source):
            nn.init.zeros_(conv.weight)
        nn.init.zeros_(self.outer.over_target.bias)

    def forward(self, cost: torch.Tensor) -> torch.Tensor:
        return cost + self.outer(F.gelu(self.inner(cost)))


class Block(nn.Module):
    """Pre-norm transformer block on `(B, L, N, dim)`: self-attention across the N cells of each level, a
    learned mixing across the L levels at each cell, and an MLP; each residual."""

    def __init__(self, dim: int, heads: int, levels: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mix = nn.Parameter(torch.zeros(levels, levels)) if levels > 1 else None
        self.norm2 = nn.LayerNorm(dim)
        hidden = round(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, lv, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b * lv, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v)  # (B·L, heads, N, d/heads)
        x = x + self.proj(att.transpose(1, 2).reshape(b, lv, n, d))
        if self.mix is not None:
            x = x + torch.einsum("lm,bmnd->blnd", self.mix, x)
        return x + self.mlp(self.norm2(x))


class CostTransformer(nn.Module):
    """CATs' aggregator: `(cost (B, L, N, N), app_src, app_trg (B, L, D, N))` → aggregated cost `(B, N, N)`."""

    def __init__(self, grid: int, levels: int, app_dim: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float) -> None:
        super().__init__()
        n = grid * grid
        self.grid = grid
        self.embed = nn.Linear(n + app_dim, dim)
        # separable learned positions (row, column), one table per level, as CATs
        self.pos_row = nn.Parameter(torch.randn(levels, grid, 1, dim // 2) * 0.02)
        self.pos_col = nn.Parameter(torch.randn(levels, 1, grid, dim // 2) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads, levels, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n)
        nn.init.zeros_(self.head.weight)  # an untrained aggregator adds nothing: the raw cost comes through
        nn.init.zeros_(self.head.bias)
        self.level_weights = nn.Parameter(torch.full((levels,), 1.0 / levels))

    def positions(self) -> torch.Tensor:
        g = self.grid
        rows = self.pos_row.expand(-1, g, g, -1)
        cols = self.pos_col.expand(-1, g, g, -1)
        return torch.cat([rows, cols], dim=-1).flatten(1, 2)  # (L, N, dim)

    def update(self, cost: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        """One pass: tokens are the rows of `cost` (B, L, N, N) with `appearance` (B, L, D, N) of the same cells."""
        x = self.embed(torch.cat([cost, appearance.transpose(2, 3)], dim=-1)) + self.positions()
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def forward(self, cost: torch.Tensor, app_src: torch.Tensor, app_trg: torch.Tensor) -> torch.Tensor:
        swapped = cost + self.update(cost.transpose(2, 3), app_trg).transpose(2, 3)  # tokens: target cells
        refined = swapped + self.update(swapped, app_src)  # tokens: source cells
        return torch.einsum("l,blst->bst", self.level_weights, refined)
