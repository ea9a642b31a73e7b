"""Volume-level aggregation ρ(v_r) of the MVAM (paper §3.1, "4D window attention" after [14]).

A single-channel 4D similarity volume `(B, h_s, w_s, h_t, w_t)` is

1. downsampled by `f` in all four dims (4D average pooling done with reshapes; sizes that are not a
   multiple of `f` are zero-padded and the mean is taken over the valid cells only), or, with
   `pooling="unshuffle"`, folded space-to-depth (the `f⁴` fine values of a coarse cell become its channels),
2. lifted to `channels` features per coarse cell with a pointwise linear,
3. refined by `depth` pre-norm transformer blocks of 4D window self-attention: non-overlapping windows
   of `window` cells in each of the 4 dims (`window⁴` tokens), multi-head attention with a learned
   relative-position bias, then an MLP. Odd-numbered blocks shift the window grid by `window // 2`
   in every dim (done by front padding, not a cyclic roll), so information crosses window borders when
   `depth >= 2`. Padded cells are masked out of the attention keys,
4. redistributed back to full resolution: LayerNorm + a linear to `f⁴` values per coarse cell that a
   4D pixel-shuffle rearranges into the `f×f×f×f` fine cells, cropped to the original size,
5. added to the input volume (residual). The redistribution linear is zero-initialised, so a fresh
   aggregator is exactly the identity: training starts from the raw cosine volume.

Internal layout is channel-last `(B, a, b, c, d, C)`. Cost for a `28×28×28×28` volume with `f=2`,
`window=2`: `14⁴ = 38 416` coarse tokens per pair in `7⁴ = 2 401` windows of 16 tokens, i.e. attention
over 16×16 matrices, linear in the number of cells.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Pooling = Literal["avg", "unshuffle"]


def check_volume(volume: Tensor, name: str = "volume") -> None:
    """Raise a clear error unless `volume` is a `(B, h_s, w_s, h_t, w_t)` tensor."""
    if not isinstance(volume, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(volume).__name__}")
    if volume.dim() != 5:
        raise ValueError(f"{name} must have shape (B, h_s, w_s, h_t, w_t), got {tuple(volume.shape)}")


def _pad_spatial(x: Tensor, front: tuple[int, ...], back: tuple[int, ...]) -> Tensor:
    """Zero-pad the 4 spatial dims of a channel-last `(B, a, b, c, d, C)` tensor."""
    pads: list[int] = [0, 0]  # channel dim
    for fr, bk in zip(reversed(front), reversed(back), strict=True):
        pads += [fr, bk]
    return F.pad(x, pads) if any(pads) else x


def avg_pool4d(x: Tensor, factor: int) -> Tensor:
    """Mean over non-overlapping `factor⁴` blocks of `(B, a, b, c, d, C)` → `(B, ⌈a/f⌉, …, C)`.

    Trailing partial blocks average only their valid cells (zero padding is not counted).
    """
    if factor == 1:
        return x
    B, *dims, C = x.shape
    coarse = [math.ceil(n / factor) for n in dims]
    xp = _pad_spatial(x, (0,) * 4, tuple(m * factor - n for m, n in zip(coarse, dims, strict=True)))
    a, b, c, d = coarse
    f = factor
    sums = xp.reshape(B, a, f, b, f, c, f, d, f, C).sum(dim=(2, 4, 6, 8))
    counts = [(n - torch.arange(m, device=x.device) * f).clamp(max=f) for m, n in zip(coarse, dims, strict=True)]
    counts = [cnt_1d.to(x.dtype) for cnt_1d in counts]
    cnt = counts[0][:, None, None, None] * counts[1][None, :, None, None]
    cnt = cnt * counts[2][None, None, :, None] * counts[3][None, None, None, :]
    return sums / cnt[..., None]


def space_to_depth4d(v: Tensor, factor: int) -> Tensor:
    """`(B, A, B', C', D)` → `(B, ⌈A/f⌉, …, f⁴)`: each coarse cell's fine values (zero-padded) as channels."""
    B, *dims = v.shape
    f = factor
    coarse = [math.ceil(n / f) for n in dims]
    vp = _pad_spatial(v.unsqueeze(-1), (0,) * 4, tuple(m * f - n for m, n in zip(coarse, dims, strict=True)))
    a, b, c, d = coarse
    vp = vp.reshape(B, a, f, b, f, c, f, d, f).permute(0, 1, 3, 5, 7, 2, 4, 6, 8)
    return vp.reshape(B, a, b, c, d, f**4)


def depth_to_space4d(x: Tensor, factor: int) -> Tensor:
    """4D pixel-shuffle: `(B, a, b, c, d, f⁴)` → `(B, a·f, b·f, c·f, d·f)` (inverse of `space_to_depth4d`)."""
    B, a, b, c, d, ch = x.shape
    f = factor
    if ch != f**4:
        raise ValueError(f"expected {f**4} channels for factor {f}, got {ch}")
    x = x.reshape(B, a, b, c, d, f, f, f, f).permute(0, 1, 5, 2, 6, 3, 7, 4, 8)
    return x.reshape(B, a * f, b * f, c * f, d * f)


def window_partition4d(x: Tensor, window: int) -> Tensor:
    """`(B, a·w, b·w, c·w, d·w, C)` → `(B, nW, w⁴, C)`, windows and in-window tokens row-major."""
    B, A, Bb, Cc, D, C = x.shape
    w = window
    x = x.reshape(B, A // w, w, Bb // w, w, Cc // w, w, D // w, w, C).permute(0, 1, 3, 5, 7, 2, 4, 6, 8, 9)
    return x.reshape(B, -1, w**4, C)


def window_reverse4d(windows: Tensor, window: int, dims: tuple[int, ...]) -> Tensor:
    """Inverse of `window_partition4d`: `(B, nW, w⁴, C)` → `(B, *dims, C)` (dims multiples of `w`)."""
    B, _, _, C = windows.shape
    w = window
    a, b, c, d = (n // w for n in dims)
    x = windows.reshape(B, a, b, c, d, w, w, w, w, C).permute(0, 1, 5, 2, 6, 3, 7, 4, 8, 9)
    return x.reshape(B, *dims, C)


def _relative_index(window: int) -> Tensor:
    """`(w⁴, w⁴)` index into a `(2w-1)⁴` relative-position table."""
    r = torch.arange(window)
    coords = torch.stack(torch.meshgrid(r, r, r, r, indexing="ij"), dim=-1).reshape(-1, 4)
    rel = coords[:, None, :] - coords[None, :, :] + (window - 1)
    base = 2 * window - 1
    return ((rel[..., 0] * base + rel[..., 1]) * base + rel[..., 2]) * base + rel[..., 3]


class WindowAttention4d(nn.Module):
    """Multi-head self-attention inside 4D windows with a learned relative-position bias.

    `forward(x: (B, nW, T, C), valid: (nW, T) bool | None) -> (B, nW, T, C)` with `T = window⁴`.
    """

    def __init__(self, channels: int, heads: int, window: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.rel_bias = nn.Parameter(torch.zeros(heads, (2 * window - 1) ** 4))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        self.register_buffer("rel_index", _relative_index(window), persistent=False)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        B, nW, T, C = x.shape
        q, k, v = self.qkv(x).reshape(B, nW, T, 3, self.heads, C // self.heads).permute(3, 0, 1, 4, 2, 5)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, nW, H, T, T)
        attn = attn + self.rel_bias[:, self.rel_index]
        if valid is not None:
            attn = attn.masked_fill(~valid[:, None, None, :], float("-inf"))
        out = attn.softmax(dim=-1) @ v  # (B, nW, H, T, dh)
        return self.proj(out.permute(0, 1, 3, 2, 4).reshape(B, nW, T, C))


class WindowBlock4d(nn.Module):
    """Pre-norm residual block: 4D (optionally shifted) window attention + MLP on `(B, a, b, c, d, C)`."""

    def __init__(self, channels: int, heads: int, window: int, shift: int = 0, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift must be in [0, window), got {shift} for window {window}")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(channels)
        self.attn = WindowAttention4d(channels, heads, window)
        self.norm2 = nn.LayerNorm(channels)
        hidden = max(1, round(channels * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        dims = tuple(x.shape[1:5])
        w, s = self.window, self.shift
        front = (s,) * 4
        back = tuple((-(n + s)) % w for n in dims)
        y = _pad_spatial(self.norm1(x), front, back)
        padded = tuple(y.shape[1:5])
        valid = None
        if any(front) or any(back):
            mask = _pad_spatial(torch.ones(1, *dims, 1, dtype=torch.bool, device=x.device), front, back)
            valid = window_partition4d(mask, w)[0, :, :, 0]  # (nW, T); every window has >= 1 valid cell
        y = window_reverse4d(self.attn(window_partition4d(y, w), valid), w, padded)
        y = y[:, s : s + dims[0], s : s + dims[1], s : s + dims[2], s : s + dims[3]]
        x = x + y
        return x + self.mlp(self.norm2(x))


class VolumeAggregator(nn.Module):
    """ρ(·): 4D window-attention refinement of a similarity volume at `1/downsample` resolution.

    Args:
        channels: feature width of the coarse volume (e.g. 16).
        heads: attention heads per block (`channels % heads == 0`).
        window: window side in each of the 4 dims (`window⁴` tokens per window).
        depth: number of window blocks; odd blocks use windows shifted by `window // 2`.
        downsample: factor `f` of the 4D downsampling and of the channel redistribution (`f⁴` outputs).
        mlp_ratio: hidden width of each block's MLP relative to `channels`.
        pooling: "avg" (4D mean pooling, the default) or "unshuffle" (space-to-depth, keeps the `f⁴` values).
        zero_init: zero the redistribution linear so the module starts as the identity.

    Shape: `(B, h_s, w_s, h_t, w_t)` → `(B, h_s, w_s, h_t, w_t)`.
    """

    def __init__(
        self,
        channels: int = 16,
        heads: int = 4,
        window: int = 2,
        depth: int = 1,
        downsample: int = 2,
        mlp_ratio: float = 2.0,
        pooling: Pooling = "avg",
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if window < 1 or downsample < 1 or depth < 0 or channels < 1:
            raise ValueError("window, downsample and channels must be >= 1 and depth >= 0")
        if pooling not in ("avg", "unshuffle"):
            raise ValueError(f"pooling must be 'avg' or 'unshuffle', got {pooling!r}")
        self.downsample, self.pooling = downsample, pooling
        self.lift = nn.Linear(1 if pooling == "avg" else downsample**4, channels)
        self.blocks = nn.ModuleList(
            WindowBlock4d(channels, heads, window, shift=(i % 2) * (window // 2), mlp_ratio=mlp_ratio)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(channels)
        self.redistribute = nn.Linear(channels, downsample**4)
        if zero_init:
            nn.init.zeros_(self.redistribute.weight)
            nn.init.zeros_(self.redistribute.bias)

    def forward(self, volume: Tensor) -> Tensor:
        check_volume(volume)
        if volume.numel() == 0:
            return volume.clone()
        f = self.downsample
        x = avg_pool4d(volume.unsqueeze(-1), f) if self.pooling == "avg" else space_to_depth4d(volume, f)
        x = self.lift(x)
        for block in self.blocks:
            x = block(x)
        delta = depth_to_space4d(self.redistribute(self.norm(x)), f)
        hs, ws, ht, wt = volume.shape[1:]
        return volume + delta[:, :hs, :ws, :ht, :wt]
