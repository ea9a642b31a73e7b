"""Matching Volume Aggregation Module (paper §3.1, Eq. 1): `v_f = ρ(Φ(Ψ(F_s, F_t)))`.

- Ψ, `GatedCrossAttention`: global-token gates and gated multi-head cross-attention,

      G_s = σ(<W_q F_s, W_k T_t> / √d)        (B, N_s, 1)
      G_t = σ(<W_q F_t, W_k T_s> / √d)        (B, N_t, 1)
      F̃_s = LN(F_s + G_s ⊙ MHA(F_s, G_t ⊙ F_t))   (queries F_s, keys/values the gated F_t)
      F̃_t = LN(F_t + G_t ⊙ MHA(F_t, G_s ⊙ F_s))   (same weights: the module is symmetric)

  The paper writes `σ(F_s ⊗ T_t)` with ⊗ a vector inner product, i.e. one scalar per token; we take it
  between learned projections (scaled like attention logits) so the gate is trainable and stays out of
  sigmoid saturation for raw ViT features. `gate="channel"` gives a per-channel gate `σ(W_q F ⊙ W_k T)`
  and `gate="none"` fixes `G = 1` (ablation). The paper's `MHA(…) ⊙ G_s` is applied to the attention
  branch *before* the residual + LayerNorm: a per-token scalar applied after them would be cancelled
  exactly by the cosine similarity of Φ, so it would have no effect on the volume.
- Φ, `correlation_4d`: cosine similarity of all token pairs, reshaped to `(B, h_s, w_s, h_t, w_t)`.
- ρ, `VolumeAggregator` (`volume.py`): 4D window attention on a downsampled volume, channel
  redistribution back to full size, residual (zero-initialised, so `v_f = v_r` at initialisation).

Tokens are row-major over their `(h, w)` grid (`geometry.py`); global tokens are passed separately.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sc_imagenet.matching.volume import Pooling, VolumeAggregator

Gate = Literal["scalar", "channel", "none"]


def _check_tokens(x: Tensor, name: str, dim: int | None = None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, N, C), got {tuple(x.shape)}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} has {x.shape[-1]} channels, expected {dim}")


def _check_grid(x: Tensor, grid: tuple[int, int], name: str) -> None:
    if len(grid) != 2 or min(grid) < 0:
        raise ValueError(f"grid for {name} must be (h, w) with h, w >= 0, got {grid}")
    if grid[0] * grid[1] != x.shape[1]:
        raise ValueError(f"{name} has {x.shape[1]} tokens but its grid {tuple(grid)} has {grid[0] * grid[1]} cells")


def correlation_4d(
    F_s: Tensor, F_t: Tensor, grid_s: tuple[int, int], grid_t: tuple[int, int], eps: float = 1e-8
) -> Tensor:
    """Cosine similarity of every source/target token pair.

    Args:
        F_s: `(B, N_s, C)` source tokens, row-major over `grid_s = (h_s, w_s)`.
        F_t: `(B, N_t, C)` target tokens, row-major over `grid_t = (h_t, w_t)`.

    Returns:
        `(B, h_s, w_s, h_t, w_t)` volume in [-1, 1]; entry `[b, i, j, k, l]` compares source cell `(i, j)`
        with target cell `(k, l)`.
    """
    _check_tokens(F_s, "F_s")
    _check_tokens(F_t, "F_t", F_s.shape[-1])
    if F_s.shape[0] != F_t.shape[0]:
        raise ValueError(f"batch sizes differ: F_s {F_s.shape[0]}, F_t {F_t.shape[0]}")
    _check_grid(F_s, grid_s, "F_s")
    _check_grid(F_t, grid_t, "F_t")
    corr = F.normalize(F_s, dim=-1, eps=eps) @ F.normalize(F_t, dim=-1, eps=eps).transpose(1, 2)
    return corr.reshape(F_s.shape[0], *grid_s, *grid_t)


class TokenAdapter(nn.Module):
    """A learned metric on the backbone tokens: `F ↦ F + F Wᵀ`, `W` (C, C) zero-initialised.

    The residual volume of a level is `cos(F_s, F_t) + β·MVAM(F_s, F_t)`; without an adapter its first
    term is fixed by the frozen backbone, so a level can only re-rank matches through β·MVAM. The adapter
    makes that term trainable too while starting exactly at the backbone's own metric (W = 0), so early
    pseudo-labels are not degraded. Applied to patch and global tokens alike.

    Shape: `(…, C)` → `(…, C)`.
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, in_dim, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        return x + self.linear(x)


class ConvTokenAdapter(nn.Module):
    """A learned metric with spatial context: `F ↦ F + conv3×3(F)` over the token grid, zero-initialised.

    `TokenAdapter` maps each token alone, so over a weight-free local descriptor (dense SIFT) it can only
    re-weight what one cell already holds; this one also mixes in the 8 neighbouring cells, as a small
    learned layer on top of the backbone would. A global token `(B, C)` (no grid) gets the centre tap only.

    Shape: tokens `(B, N, C)` with `grid = (h, w)`, `h·w = N` → `(B, N, C)`; `(B, C)` → `(B, C)`.
    """

    def __init__(self, in_dim: int, kernel: int = 3) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {kernel}")
        self.conv = nn.Conv2d(in_dim, in_dim, kernel, padding=kernel // 2, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        k = self.conv.kernel_size[0] // 2
        if x.dim() == 2:
            return x + x @ self.conv.weight[:, :, k, k].T
        _check_tokens(x, "x")
        if grid is None:
            raise ValueError("ConvTokenAdapter needs the token grid")
        _check_grid(x, grid, "x")
        B, N, C = x.shape
        img = x.transpose(1, 2).reshape(B, C, *grid)
        return x + self.conv(img).reshape(B, C, N).transpose(1, 2)


class GatedCrossAttention(nn.Module):
    """Ψ(F_s, F_t): global-token-gated multi-head cross-attention in both directions (paper Eq. 1).

    Args:
        in_dim: channels `C` of the input tokens (and of the global tokens).
        dim: internal width `d`; a linear input projection is added when `in_dim != dim`.
        heads: attention heads (`dim % heads == 0`).
        gate: "scalar" (default, one gate per token), "channel" or "none".

    Shape: `F_s (B, N_s, C)`, `F_t (B, N_t, C)`, `T_s (B, C)`, `T_t (B, C)` →
    `(F̃_s (B, N_s, d), F̃_t (B, N_t, d))`.
    """

    def __init__(self, in_dim: int, dim: int = 128, heads: int = 4, gate: Gate = "scalar") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if gate not in ("scalar", "channel", "none"):
            raise ValueError(f"gate must be 'scalar', 'channel' or 'none', got {gate!r}")
        self.in_dim, self.dim, self.gate = in_dim, dim, gate
        self.proj_in: nn.Module = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        self.gate_q = nn.Linear(dim, dim, bias=False)
        self.gate_k = nn.Linear(dim, dim, bias=False)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def _check(self, F_s: Tensor, F_t: Tensor, T_s: Tensor, T_t: Tensor) -> None:
        _check_tokens(F_s, "F_s", self.in_dim)
        _check_tokens(F_t, "F_t", self.in_dim)
        B = F_s.shape[0]
        for name, x in (("F_t", F_t), ("T_s", T_s), ("T_t", T_t)):
            if x.shape[0] != B:
                raise ValueError(f"batch size of {name} ({x.shape[0]}) differs from F_s ({B})")
        for name, x in (("T_s", T_s), ("T_t", T_t)):
            if x.dim() != 2 or x.shape[1] != self.in_dim:
                raise ValueError(f"{name} must have shape (B, {self.in_dim}), got {tuple(x.shape)}")

    def _gate(self, F_x: Tensor, T_y: Tensor) -> Tensor:
        """Projected tokens `(B, N, d)` gated by the other image's projected global token `(B, d)`."""
        if self.gate == "none":
            return F_x.new_ones(*F_x.shape[:2], 1)
        prod = self.gate_q(F_x) * self.gate_k(T_y)[:, None, :]
        if self.gate == "channel":
            return torch.sigmoid(prod)
        return torch.sigmoid(prod.sum(dim=-1, keepdim=True) / math.sqrt(self.dim))

    def gates(self, F_s: Tensor, F_t: Tensor, T_s: Tensor, T_t: Tensor) -> tuple[Tensor, Tensor]:
        """`(G_s (B, N_s, g), G_t (B, N_t, g))` in (0, 1), `g = 1` (scalar/none) or `d` (channel)."""
        self._check(F_s, F_t, T_s, T_t)
        P_s, P_t, Q_s, Q_t = (self.proj_in(x) for x in (F_s, F_t, T_s, T_t))
        return self._gate(P_s, Q_t), self._gate(P_t, Q_s)

    def _attend(self, query: Tensor, context: Tensor, g_query: Tensor, g_context: Tensor) -> Tensor:
        if query.shape[0] == 0 or query.shape[1] == 0 or context.shape[1] == 0:
            msg = torch.zeros_like(query)
        else:
            msg = self.attn(query, context * g_context, context * g_context, need_weights=False)[0]
        return self.norm(query + g_query * msg)

    def forward(self, F_s: Tensor, F_t: Tensor, T_s: Tensor, T_t: Tensor) -> tuple[Tensor, Tensor]:
        self._check(F_s, F_t, T_s, T_t)
        P_s, P_t, Q_s, Q_t = (self.proj_in(x) for x in (F_s, F_t, T_s, T_t))
        G_s, G_t = self._gate(P_s, Q_t), self._gate(P_t, Q_s)
        return self._attend(P_s, P_t, G_s, G_t), self._attend(P_t, P_s, G_t, G_s)


class MVAM(nn.Module):
    """Matching Volume Aggregation Module: tokens of an image pair → refined 4D similarity volume.

    Args:
        in_dim: backbone token width `C`.
        dim, heads, gate: `GatedCrossAttention` width, heads and gate kind.
        agg_channels, agg_heads, window, depth, downsample, pooling: `VolumeAggregator` settings.
        use_cross_attention: False skips Ψ (cosine of the raw backbone tokens; ablation).
        use_aggregation: False skips ρ (returns `v_r`; ablation).

    `forward(F_s (B, N_s, C), F_t (B, N_t, C), T_s (B, C), T_t (B, C), grid_s, grid_t)` →
    `v_f (B, h_s, w_s, h_t, w_t)`; `correlate(...)` (same arguments) returns the raw `v_r`.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = 128,
        heads: int = 4,
        agg_channels: int = 16,
        window: int = 2,
        depth: int = 1,
        downsample: int = 2,
        use_aggregation: bool = True,
        use_cross_attention: bool = True,
        gate: Gate = "scalar",
        agg_heads: int = 4,
        pooling: Pooling = "avg",
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.cross: GatedCrossAttention | None = (
            GatedCrossAttention(in_dim, dim, heads, gate) if use_cross_attention else None
        )
        self.aggregator: VolumeAggregator | None = (
            VolumeAggregator(agg_channels, agg_heads, window, depth, downsample, pooling=pooling)
            if use_aggregation
            else None
        )

    def correlate(
        self, F_s: Tensor, F_t: Tensor, T_s: Tensor, T_t: Tensor, grid_s: tuple[int, int], grid_t: tuple[int, int]
    ) -> Tensor:
        """`v_r = Φ(Ψ(F_s, F_t))`: `(B, h_s, w_s, h_t, w_t)` cosine volume of the refined tokens."""
        _check_tokens(F_s, "F_s", self.in_dim)
        _check_tokens(F_t, "F_t", self.in_dim)
        _check_grid(F_s, grid_s, "F_s")
        _check_grid(F_t, grid_t, "F_t")
        if self.cross is not None:
            F_s, F_t = self.cross(F_s, F_t, T_s, T_t)
        return correlation_4d(F_s, F_t, grid_s, grid_t)

    def forward(
        self, F_s: Tensor, F_t: Tensor, T_s: Tensor, T_t: Tensor, grid_s: tuple[int, int], grid_t: tuple[int, int]
    ) -> Tensor:
        v_r = self.correlate(F_s, F_t, T_s, T_t, grid_s, grid_t)
        return v_r if self.aggregator is None else self.aggregator(v_r)
