"""Pseudo Matching Pair Selection (paper §3.1): regularized Hough matching, greedy one-to-one, NMS.

Layouts: a volume is `(B, h_s, w_s, h_t, w_t)`; flat cell indices are row-major (`n = i * w + j`, see
`geometry.py`); offsets and NMS radii are in grid cells.

1. `hough_confidence` — regularized Hough matching (RHM, after Hyperpixel Flow) in a translation Hough
   space. Each candidate match `(i_s, j_s) → (i_t, j_t)` votes for its offset `(dy, dx) = (i_t - i_s,
   j_t - j_s)`, `dy ∈ [-(h_s-1), h_t-1]`, `dx ∈ [-(w_s-1), w_t-1]`, with weight = its appearance score
   (relu of the similarity by default, times optional foreground weights of both cells). The
   `(h_s+h_t-1) × (w_s+w_t-1)` vote histogram is smoothed with a separable Gaussian of kernel size `L`
   (the "hyperpixel length" of the paper's ablation, default 5) and `sigma = L / 3` unless given,
   background-corrected (`debias`: the votes a structureless volume would cast are subtracted, see
   `hough_histogram`), normalised to max 1, and read back: `confidence = appearance × histogram[offset]`.
   `L = 1` or `use_hough=False` returns the appearance unchanged (the "w/o RHM" ablation).
2. `greedy_one_to_one` — repeatedly take the global maximum and drop its row and column.
3. `nms_pairs` — suppress pairs close to a better kept pair (spreads the pseudo-labels).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sc_imagenet.matching.volume import check_volume

Appearance = Literal["relu", "softmax", "raw"]
NMSMode = Literal["src", "trg", "either", "both"]


def appearance_scores(volume: Tensor, kind: Appearance = "relu", temperature: float = 0.05) -> Tensor:
    """Non-negative match weights from a similarity volume `(B, h_s, w_s, h_t, w_t)` (same shape).

    "relu": `max(v, 0)`; "softmax": softmax over the target cells of each source cell at `temperature`
    (`p(t | s)`); "raw": the volume itself (only sensible for volumes that are already non-negative).
    """
    check_volume(volume)
    if kind == "relu":
        return volume.clamp_min(0)
    if kind == "softmax":
        B, hs, ws, ht, wt = volume.shape
        if volume.numel() == 0:
            return volume.clone()
        return torch.softmax(volume.reshape(B, hs * ws, ht * wt) / temperature, dim=-1).reshape(volume.shape)
    if kind == "raw":
        return volume
    raise ValueError(f"appearance must be 'relu', 'softmax' or 'raw', got {kind!r}")


def offset_index(grid_s: tuple[int, int], grid_t: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """`(h_s, w_s, h_t, w_t)` long: flat bin of each match's offset in the `(h_s+h_t-1, w_s+w_t-1)` space.

    Bin `(dy + h_s - 1, dx + w_s - 1)`; bin `(h_s - 1, w_s - 1)` is the zero offset.
    """
    hs, ws = grid_s
    ht, wt = grid_t
    def ar(n: int) -> Tensor:
        return torch.arange(n, device=device, dtype=torch.long)

    by = ar(ht)[None, None, :, None] - ar(hs)[:, None, None, None] + hs - 1
    bx = ar(wt)[None, None, None, :] - ar(ws)[None, :, None, None] + ws - 1
    return by * (ws + wt - 1) + bx


def hough_votes(weights: Tensor) -> Tensor:
    """Translation Hough histogram `(B, h_s+h_t-1, w_s+w_t-1)` of match weights `(B, h_s, w_s, h_t, w_t)`.

    Bin `[b, dy + h_s - 1, dx + w_s - 1]` sums the weights of all matches with offset `(dy, dx)`.
    """
    check_volume(weights, "weights")
    B, hs, ws, ht, wt = weights.shape
    Hy, Wx = max(hs + ht - 1, 0), max(ws + wt - 1, 0)
    hist = weights.new_zeros(B, Hy * Wx)
    if weights.numel() == 0:
        return hist.reshape(B, Hy, Wx)
    idx = offset_index((hs, ws), (ht, wt), weights.device).reshape(1, -1).expand(B, -1)
    return hist.scatter_add(1, idx, weights.reshape(B, -1)).reshape(B, Hy, Wx)


def gaussian_kernel1d(L: int, sigma: float | None = None, device: torch.device | None = None) -> Tensor:
    """Normalised `(L,)` Gaussian taps (`sigma = L / 3` by default); `L` must be odd and >= 1."""
    if not isinstance(L, int) or L < 1 or L % 2 == 0:
        raise ValueError(f"L must be an odd integer >= 1, got {L!r}")
    sigma = L / 3 if sigma is None else sigma
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    x = torch.arange(L, dtype=torch.float32, device=device) - (L - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth_histogram(hist: Tensor, L: int, sigma: float | None = None) -> Tensor:
    """Separable Gaussian smoothing (zero padding, same size) of a `(B, H, W)` histogram."""
    if hist.dim() != 3:
        raise ValueError(f"hist must have shape (B, H, W), got {tuple(hist.shape)}")
    k = gaussian_kernel1d(L, sigma, hist.device).to(hist.dtype)
    if L == 1 or hist.numel() == 0:
        return hist
    x = hist.unsqueeze(1)
    x = F.conv2d(x, k.view(1, 1, L, 1), padding=(L // 2, 0))
    x = F.conv2d(x, k.view(1, 1, 1, L), padding=(0, L // 2))
    return x.squeeze(1)


def offset_counts(grid_s: tuple[int, int], grid_t: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """`(h_s+h_t-1, w_s+w_t-1)` number of candidate matches with each offset (same bins as `hough_votes`).

    Offset `dy` is shared by `max(0, min(h_s, h_t - dy) - max(0, -dy))` row pairs (likewise columns), so
    the counts form a pyramid peaking around the zero offset.
    """
    def overlap(n_s: int, n_t: int) -> Tensor:
        d = torch.arange(-(n_s - 1), n_t, device=device)
        return (torch.minimum(torch.full_like(d, n_s), n_t - d) - (-d).clamp_min(0)).clamp_min(0)

    return (overlap(grid_s[0], grid_t[0])[:, None] * overlap(grid_s[1], grid_t[1])[None, :]).float()


def _check_fg(fg: Tensor | None, B: int, grid: tuple[int, int], name: str) -> None:
    if fg is not None and tuple(fg.shape) != (B, *grid):
        raise ValueError(f"{name} must have shape {(B, *grid)}, got {tuple(fg.shape)}")


def hough_histogram(
    weights: Tensor,
    L: int = 5,
    sigma: float | None = None,
    debias: bool = True,
    support: Tensor | None = None,
) -> Tensor:
    """Smoothed, background-corrected translation Hough histogram, normalised to max 1 per batch element.

    Args:
        weights: `(B, h_s, w_s, h_t, w_t)` non-negative vote weights.
        L, sigma: Gaussian smoothing of the histogram (`smooth_histogram`).
        debias: subtract the votes a structureless volume would cast: `mean weight × smoothed number of
            candidate matches per offset`, clamped at 0. Without it the pyramid of match counts per offset
            (`offset_counts`) drags the peak toward the zero offset whenever the background similarity is
            non-negligible, and more so for larger `L`.
        support: optional `(B, h_s, w_s, h_t, w_t)` weights of the matches that are allowed to vote (e.g. the
            foreground product); the expected background is then computed over the support only.

    Returns:
        `(B, h_s+h_t-1, w_s+w_t-1)` in [0, 1]. A batch element without any excess vote (e.g. a constant
        volume) gets an all-ones histogram, i.e. no Hough information.
    """
    check_volume(weights, "weights")
    B, hs, ws, ht, wt = weights.shape
    hist = smooth_histogram(hough_votes(weights), L, sigma)
    if debias:
        if support is None:
            count = offset_counts((hs, ws), (ht, wt), weights.device).to(hist.dtype).expand(B, -1, -1)
            n = float(hs * ws * ht * wt)
            mean = weights.reshape(B, -1).sum(1) / max(n, 1.0)
        else:
            count = hough_votes(support.to(hist.dtype))
            mean = weights.reshape(B, -1).sum(1) / support.reshape(B, -1).sum(1).clamp_min(1e-12)
        hist = (hist - mean[:, None, None] * smooth_histogram(count, L, sigma)).clamp_min(0)
    peak = hist.amax(dim=(1, 2), keepdim=True) if hist.numel() else hist.new_ones(B, 1, 1)
    return torch.where(peak > 0, hist / peak.clamp_min(torch.finfo(hist.dtype).tiny), torch.ones_like(hist))


def hough_confidence(
    volume: Tensor,
    L: int = 5,
    sigma: float | None = None,
    appearance: Appearance = "relu",
    fg_s: Tensor | None = None,
    fg_t: Tensor | None = None,
    use_hough: bool = True,
    temperature: float = 0.05,
    debias: bool = True,
) -> Tensor:
    """Regularized Hough matching confidence of every candidate match.

    Args:
        volume: `(B, h_s, w_s, h_t, w_t)` similarity volume.
        L: Gaussian kernel size over the Hough (offset) space, odd; `L = 1` disables the regularization.
        sigma: Gaussian std in offset cells (default `L / 3`).
        appearance: how similarities become vote weights (`appearance_scores`).
        fg_s, fg_t: optional foreground weights in [0, 1], `(B, h_s, w_s)` / `(B, h_t, w_t)`; they multiply
            both the votes and the returned confidence (background matches neither vote nor get selected).
        use_hough: False returns the (foreground-weighted) appearance (ablation "w/o RHM").
        temperature: for `appearance="softmax"`.
        debias: background correction of the histogram (`hough_histogram`).

    Returns:
        `(B, h_s, w_s, h_t, w_t)` confidence = appearance × `hough_histogram[offset of the match]`.
    """
    app = appearance_scores(volume, appearance, temperature)
    B, hs, ws, ht, wt = volume.shape
    _check_fg(fg_s, B, (hs, ws), "fg_s")
    _check_fg(fg_t, B, (ht, wt), "fg_t")
    support = None
    if fg_s is not None or fg_t is not None:
        ones_s = app.new_ones(B, hs, ws) if fg_s is None else fg_s.to(app.dtype)
        ones_t = app.new_ones(B, ht, wt) if fg_t is None else fg_t.to(app.dtype)
        support = ones_s[:, :, :, None, None] * ones_t[:, None, None, :, :]
        app = app * support
    gaussian_kernel1d(L, sigma)  # validate L / sigma even when the Hough step is skipped
    if not use_hough or L == 1 or app.numel() == 0:
        return app
    hist = hough_histogram(app, L, sigma, debias, support).flatten(1)
    idx = offset_index((hs, ws), (ht, wt), volume.device).reshape(1, -1).expand(B, -1)
    return app * hist.gather(1, idx).reshape(app.shape)


def greedy_one_to_one(
    scores: Tensor, k: int, min_score: float = float("-inf"), pad_score: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy one-to-one selection of up to `k` pairs from `(B, N_s, N_t)` scores.

    Each step takes the largest remaining score (ties: lowest flat index) and removes its source row and
    target column, so no source or target cell is used twice. Only scores `> min_score` are taken (NaN
    counts as `-inf`). When fewer than `k` pairs qualify the rest is padding: index `-1` and score
    `pad_score` (0 by default, so padding never injects `inf` into losses); a pair is valid iff
    `src_idx >= 0`. Valid scores come out in non-increasing order.

    Returns:
        `src_idx (B, k)` long, `trg_idx (B, k)` long, `score (B, k)` (gathered from `scores`, so it keeps grad).
    """
    if not isinstance(scores, Tensor) or scores.dim() != 3:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must have shape (B, N_s, N_t), got {shape}")
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    B, Ns, Nt = scores.shape
    dtype = scores.dtype if scores.is_floating_point() else torch.float32
    src = torch.full((B, k), -1, dtype=torch.long, device=scores.device)
    trg = src.clone()
    flat_sel = src.clone()
    if B == 0 or Ns * Nt == 0:
        return src, trg, torch.full((B, k), pad_score, dtype=dtype, device=scores.device)
    work = scores.detach().to(dtype).clone()
    work = work.masked_fill(work.isnan(), float("-inf"))
    # Per-row maxima are kept up to date instead of re-scanning the whole matrix each step: removing
    # column t only invalidates the rows whose best column was t.
    # argmax (first maximal index on ties, so picks match a global argmax) + gather rather than
    # `max(dim=...)`, which has a large fixed per-call overhead on multi-threaded CPU builds
    row_arg = work.argmax(dim=2)  # (B, N_s)
    row_val = work.gather(2, row_arg[..., None])[..., 0]
    rows = torch.arange(B, device=scores.device)
    for step in range(min(k, Ns, Nt)):
        s = row_val.argmax(dim=1)
        val = row_val.gather(1, s[:, None])[:, 0]
        t = row_arg.gather(1, s[:, None])[:, 0]
        ok = val > min_score
        if not bool(ok.any()):
            break
        src[:, step] = torch.where(ok, s, -1)
        trg[:, step] = torch.where(ok, t, -1)
        flat_sel[:, step] = torch.where(ok, s * Nt + t, -1)
        b, s_ok, t_ok = rows[ok], s[ok], t[ok]
        work[b, :, t_ok] = float("-inf")
        row_val[b, s_ok] = float("-inf")
        row_arg[b, s_ok] = -1
        stale_b, stale_s = ((row_arg == t[:, None]) & ok[:, None]).nonzero(as_tuple=True)
        if stale_b.numel():
            stale_rows = work[stale_b, stale_s]  # (M, N_t)
            new_arg = stale_rows.argmax(dim=1)
            row_arg[stale_b, stale_s] = new_arg
            row_val[stale_b, stale_s] = stale_rows.gather(1, new_arg[:, None])[:, 0]
    valid = flat_sel >= 0
    gathered = scores.to(dtype).reshape(B, Ns * Nt).gather(1, flat_sel.clamp_min(0))
    score = torch.where(valid, gathered, torch.full_like(gathered, pad_score))
    return src, trg, score


def nms_pairs(
    src_xy: Tensor,
    trg_xy: Tensor,
    score: Tensor,
    radius: float,
    mode: NMSMode = "either",
    valid: Tensor | None = None,
    max_keep: int | None = None,
) -> Tensor:
    """Greedy non-maximum suppression of correspondence pairs.

    Pairs are visited by decreasing score (ties: lower index first); a pair is dropped when an already
    kept pair is "close": mode "src": source points within `radius` (Euclidean, inclusive); "trg": target
    points within `radius`; "either" (default): source OR target within `radius`, which spreads the kept
    pairs in both images; "both": source AND target within `radius` (only removes near-duplicates).

    Args:
        src_xy, trg_xy: `(B, K, 2)` point coordinates (any consistent unit, e.g. grid cells or pixels).
        score: `(B, K)`; pairs with non-finite score, or `valid == False`, are never kept and suppress nothing.
        valid: optional `(B, K)` bool.
        max_keep: stop after this many kept pairs per batch element (the result is then the best
            `max_keep` survivors of the full NMS); None keeps all survivors.

    Returns:
        keep `(B, K)` bool.
    """
    if src_xy.dim() != 3 or src_xy.shape[-1] != 2:
        raise ValueError(f"src_xy must have shape (B, K, 2), got {tuple(src_xy.shape)}")
    if trg_xy.shape != src_xy.shape:
        raise ValueError(f"trg_xy must have shape {tuple(src_xy.shape)}, got {tuple(trg_xy.shape)}")
    if score.shape != src_xy.shape[:2]:
        raise ValueError(f"score must have shape {tuple(src_xy.shape[:2])}, got {tuple(score.shape)}")
    if mode not in ("src", "trg", "either", "both"):
        raise ValueError(f"mode must be 'src', 'trg', 'either' or 'both', got {mode!r}")
    ok = score.isfinite()
    if valid is not None:
        if valid.shape != score.shape:
            raise ValueError(f"valid must have shape {tuple(score.shape)}, got {tuple(valid.shape)}")
        ok = ok & valid.bool()
    B, K = score.shape
    keep = torch.zeros(B, K, dtype=torch.bool, device=score.device)
    if K == 0 or B == 0:
        return keep
    order = torch.argsort(score.detach().masked_fill(~ok, float("-inf")), dim=1, descending=True, stable=True)
    s = src_xy.detach().float().gather(1, order[..., None].expand(-1, -1, 2))
    t = trg_xy.detach().float().gather(1, order[..., None].expand(-1, -1, 2))
    alive = ok.gather(1, order)  # (B, K) in score order
    kept = torch.zeros_like(keep)
    rows = torch.arange(B, device=score.device)
    r2 = float(radius) ** 2
    # one iteration per kept pair: keep the best alive pair, kill everything close to it
    for _ in range(K if max_keep is None else min(K, max_keep)):
        has = alive.any(dim=1)
        if not bool(has.any()):
            break
        first = alive.to(torch.uint8).argmax(dim=1)  # first alive = best remaining
        kept[rows, first] |= has
        near_s = ((s - s[rows, first][:, None]) ** 2).sum(-1) <= r2
        near_t = ((t - t[rows, first][:, None]) ** 2).sum(-1) <= r2
        close = {"src": near_s, "trg": near_t, "either": near_s | near_t, "both": near_s & near_t}[mode]
        alive = alive & ~close
        alive[rows, first] = False
    return keep.scatter(1, order, kept)


def _flat_to_xy(idx: Tensor, width: int) -> Tensor:
    """Flat row-major cell indices `(B, K)` → `(B, K, 2)` float `(x, y)` grid coordinates."""
    return torch.stack([idx % width, idx // width], dim=-1).float()


class PMPS(nn.Module):
    """Pseudo Matching Pair Selection: RHM confidence → greedy one-to-one → optional NMS.

    Args:
        L, sigma, appearance, use_hough, debias: see `hough_confidence`.
        nms_mode: closeness rule of `nms_pairs`.

    `forward(volume (B, h_s, w_s, h_t, w_t), k, fg_s=None, fg_t=None, nms_radius=None, min_score=0.0,
    candidates=None)` →
    `{"src_idx": (B, k) long, "trg_idx": (B, k) long, "score": (B, k)}`, flat row-major cell indices into
    the source / target grids, `-1` (score 0) for padding, sorted by decreasing confidence. Only matches with
    confidence `> min_score` are selected. With `nms_radius` (grid cells) the greedy one-to-one pairs
    (all `min(N_s, N_t)` of them, or the best `candidates`) are computed first, NMS-filtered, and the best `k`
    survivors returned; the full greedy pass costs ~0.3–0.6 s per 28×28 pair on CPU, `candidates` bounds it.
    """

    def __init__(
        self,
        L: int = 5,
        use_hough: bool = True,
        sigma: float | None = None,
        appearance: Appearance = "relu",
        nms_mode: NMSMode = "either",
        debias: bool = True,
    ) -> None:
        super().__init__()
        gaussian_kernel1d(L, sigma)
        self.L, self.use_hough, self.sigma, self.appearance = L, use_hough, sigma, appearance
        self.nms_mode, self.debias = nms_mode, debias

    def confidence(self, volume: Tensor, fg_s: Tensor | None = None, fg_t: Tensor | None = None) -> Tensor:
        """`(B, h_s, w_s, h_t, w_t)` RHM confidence with this module's settings."""
        return hough_confidence(
            volume, self.L, self.sigma, self.appearance, fg_s, fg_t, self.use_hough, debias=self.debias
        )

    def forward(
        self,
        volume: Tensor,
        k: int,
        fg_s: Tensor | None = None,
        fg_t: Tensor | None = None,
        nms_radius: float | None = None,
        min_score: float = 0.0,
        candidates: int | None = None,
    ) -> dict[str, Tensor]:
        conf = self.confidence(volume, fg_s, fg_t)
        B, hs, ws, ht, wt = conf.shape
        scores = conf.reshape(B, hs * ws, ht * wt)
        if nms_radius is None:
            src, trg, score = greedy_one_to_one(scores, k, min_score)
            return {"src_idx": src, "trg_idx": trg, "score": score}
        if not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        n_all = min(hs * ws, ht * wt) if candidates is None else min(hs * ws, ht * wt, max(candidates, k))
        src, trg, score, keep = self._greedy_then_nms(scores, k, n_all, min_score, nms_radius, ws, wt)
        # candidates are already sorted by score: move kept ones to the front, keep their order
        K = keep.shape[1]
        pos = torch.arange(K, device=keep.device).expand(B, K)
        order = torch.argsort(torch.where(keep, pos, pos + K), dim=1)[:, :k]
        kept = keep.gather(1, order)
        src_k = torch.where(kept, src.gather(1, order), -1)
        trg_k = torch.where(kept, trg.gather(1, order), -1)
        score_k = torch.where(kept, score.gather(1, order), torch.zeros_like(score[:, :1]))
        if order.shape[1] < k:  # fewer candidates than k: pad
            pad = k - order.shape[1]
            src_k = F.pad(src_k, (0, pad), value=-1)
            trg_k = F.pad(trg_k, (0, pad), value=-1)
            score_k = F.pad(score_k, (0, pad), value=0.0)
        return {"src_idx": src_k, "trg_idx": trg_k, "score": score_k}

    def _greedy_then_nms(self, scores: Tensor, k: int, n_all: int, min_score: float, nms_radius: float, ws: int,
                         wt: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The first `n_all` greedy one-to-one pairs, NMS-filtered to the best `k` survivors.

        The greedy pass is sequential (one step per pair) and dominates a training step at ImageNet's
        32×32 grid when run over all 1,024 cells. Its first n pairs do not depend on how many are asked for,
        and NMS visits pairs in that same order, so a prefix that already holds `k` survivors (or holds
        every valid pair) gives exactly the full pass's result: the prefix starts at 4k and doubles until then.
        """
        n = min(n_all, max(4 * k, 16))
        while True:
            src, trg, score = greedy_one_to_one(scores, n, min_score)
            keep = nms_pairs(_flat_to_xy(src, ws), _flat_to_xy(trg, wt), score, nms_radius, self.nms_mode,
                             src >= 0, max_keep=k)
            # done for a batch element: k survivors, or the greedy pass ran out of valid pairs (padding)
            if n >= n_all or bool(((keep.sum(dim=1) >= k) | (src[:, -1] < 0)).all()):
                return src, trg, score, keep
            n = min(n_all, 2 * n)
