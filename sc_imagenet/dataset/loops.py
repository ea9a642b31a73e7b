"""Closed-loop consistency over stored dense flows (paper §3.4; docs/dataset.md, "The loop").

For a source image s, a loop (m, t) tests the candidates (P_s, P_t) of edge s → t: P_s travels
through the third image, Q_t = F_{m→t}(F_{s→m}(P_s)), and comes back, P'_s = F_{t→s}(Q_t). Its offset

    d = max(‖P'_s − P_s‖ / size_s, ‖Q_t − P_t‖ / size_t)

is the paper's closed loop (`closure`) tied to the label itself (`arrival`: the detour must arrive
where the pseudo-label says). Everything here is numpy on arrays: a flow lookup is a bilinear
interpolation of the stored per-cell target points, vectorised over every (candidate, loop) of an
image at once; no generator runs. `stages/consistency.py` wires it to the manifests.

Conventions (docs/dataset.md): pixels `(x, y)` with pixel centres at integers; a flow of edge s → t
holds, for every cell of the source grid `(h, w)` (row-major), the target pixel of its match; a
point is looked up at continuous grid coordinates with cell centres at integers (the formula of
`matching.geometry.pixels_to_grid`, repeated here so this module stays numpy-only), clamped to the
grid's border.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Flow(NamedTuple):
    """The dense flow of one edge s → t: `cells` `(h·w, 2)` target pixels of every source cell
    (row-major) on the source grid `grid = (h, w)` of an image of `src_hw = (H, W)` pixels."""

    cells: np.ndarray
    grid: tuple[int, int]
    src_hw: tuple[float, float]


class LoopOffsets(NamedTuple):
    """Per point: `offset` = max(`closure`, `arrival`), each in units of the object's size."""

    offset: np.ndarray  # the loop offset d
    closure: np.ndarray  # ‖P'_s − P_s‖ / size_s: the paper's closed loop
    arrival: np.ndarray  # ‖Q_t − P_t‖ / size_t: the detour against the label's own target


# --- flow lookup -------------------------------------------------------------------------------------


def _bilinear(cells: np.ndarray, start: np.ndarray | int, h: np.ndarray | int, w: np.ndarray | int,
              H: np.ndarray | float, W: np.ndarray | float, points: np.ndarray) -> np.ndarray:
    """Bilinear lookup of flows stored in `cells` at `points` `(N, 2)`; `start` (first cell of each
    point's flow), `h, w` (its grid) and `H, W` (its source image size) are scalars or `(N,)`.
    Non-finite points give NaN."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    w_f = np.asarray(w, np.float64)
    h_f = np.asarray(h, np.float64)
    gx = (pts[:, 0] + 0.5) * w_f / W - 0.5  # matching.geometry.pixels_to_grid
    gy = (pts[:, 1] + 0.5) * h_f / H - 0.5
    finite = np.isfinite(gx) & np.isfinite(gy)
    gx = np.clip(np.where(finite, gx, 0.0), 0.0, w_f - 1)
    gy = np.clip(np.where(finite, gy, 0.0), 0.0, h_f - 1)
    x0f, y0f = np.floor(gx), np.floor(gy)
    x0, y0 = x0f.astype(np.int64), y0f.astype(np.int64)
    w_i = np.asarray(w, np.int64)
    step_x = x0 + 1 < w_i  # the right neighbour exists (else the border cell is read twice)
    step_y = (y0 + 1 < np.asarray(h, np.int64)) * w_i
    i00 = start + y0 * w_i + x0
    i10 = i00 + step_y
    fx = (gx - x0f)[:, None]
    fy = (gy - y0f)[:, None]
    gather = _cell_gather(cells)
    c00, c01, c10, c11 = gather(i00), gather(i00 + step_x), gather(i10), gather(i10 + step_x)
    top = c00 + (c01 - c00) * fx
    bottom = c10 + (c11 - c10) * fx
    out = top + (bottom - top) * fy
    out[~finite] = np.nan
    return out


def _cell_gather(cells: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """`rows ↦ cells[rows]` as float64 `(N, 2)`. A float cell's (x, y) is read as one complex number: a gather of
    single elements is about twice as fast as one of rows, and the values are the same."""
    complex_of = {np.dtype(np.float32): np.complex64, np.dtype(np.float64): np.complex128}.get(cells.dtype)
    if complex_of is None or cells.ndim != 2 or cells.shape[1] != 2 or not cells.flags.c_contiguous:
        return lambda rows: cells[rows].astype(np.float64)
    flat = cells.view(complex_of).reshape(-1)
    return lambda rows: flat[rows].view(cells.dtype).reshape(-1, 2).astype(np.float64)


def _check_flow(cells: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    cells = np.asarray(cells).reshape(-1, 2)
    h, w = (int(v) for v in grid)
    if h < 1 or w < 1 or len(cells) != h * w:
        raise ValueError(f"a flow on a {h}×{w} grid needs {h * w} cells, got {len(cells)}")
    return cells


def lookup_flow(flow: np.ndarray, grid: tuple[int, int], src_hw: tuple[float, float],
                points: np.ndarray) -> np.ndarray:
    """The flow `(h·w, 2)` (row-major source grid `grid = (h, w)` of an image of `src_hw = (H, W)`
    pixels) at arbitrary source pixels `points` `(N, 2)`: bilinear over the 4 surrounding cells,
    clamped at the border. Returns `(N, 2)` float64 target pixels."""
    cells = _check_flow(flow, grid)
    h, w = (int(v) for v in grid)
    return _bilinear(cells, 0, h, w, float(src_hw[0]), float(src_hw[1]), points)


@dataclass(frozen=True)
class FlowBank:
    """Many flows in one array, so that points on different flows are looked up in one vectorised
    call: flow `e` is `cells[start[e] : start[e] + h·w]` on grid `grid[e] = (h, w)` of a source image
    of `src_hw[e] = (H, W)` pixels."""

    cells: np.ndarray  # (C, 2) float32
    start: np.ndarray  # (E,) int64
    grid: np.ndarray  # (E, 2) int64: (h, w)
    src_hw: np.ndarray  # (E, 2) float64: (H, W)

    def __post_init__(self) -> None:
        n = len(self.start)
        if self.grid.shape != (n, 2) or self.src_hw.shape != (n, 2):
            raise ValueError("FlowBank: start, grid and src_hw must describe the same flows")
        if n and ((self.grid < 1).any() or (self.start + self.grid[:, 0] * self.grid[:, 1] > len(self.cells)).any()
                  or (self.start < 0).any()):
            raise ValueError("FlowBank: a flow lies outside `cells` or has an empty grid")

    @classmethod
    def from_flows(cls, flows: Sequence[Flow]) -> FlowBank:
        cells = [_check_flow(f.cells, f.grid).astype(np.float32) for f in flows]
        sizes = np.array([len(c) for c in cells], np.int64)
        return cls(cells=np.concatenate(cells) if cells else np.zeros((0, 2), np.float32),
                   start=np.cumsum(sizes) - sizes,
                   grid=np.array([f.grid for f in flows], np.int64).reshape(-1, 2),
                   src_hw=np.array([f.src_hw for f in flows], np.float64).reshape(-1, 2))

    def __len__(self) -> int:
        return len(self.start)

    def lookup(self, edge: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Point `i` looked up on flow `edge[i]`: `(N,)`, `(N, 2)` → `(N, 2)` float64."""
        e = np.asarray(edge, np.int64).reshape(-1)
        return _bilinear(self.cells, self.start[e], self.grid[e, 0], self.grid[e, 1],
                         self.src_hw[e, 0], self.src_hw[e, 1], points)


# --- offsets -------------------------------------------------------------------------------------------


def _distance(a: np.ndarray, b: np.ndarray, size: np.ndarray | float) -> np.ndarray:
    d = np.asarray(a, np.float64).reshape(-1, 2) - np.asarray(b, np.float64).reshape(-1, 2)
    return np.sqrt((d * d).sum(axis=1)) / size


def _loop_terms(P_s: np.ndarray, P_t: np.ndarray, Q_t: np.ndarray, P2_s: np.ndarray,
                size_s: np.ndarray | float, size_t: np.ndarray | float) -> LoopOffsets:
    closure = _distance(P2_s, P_s, size_s)
    arrival = _distance(Q_t, P_t, size_t)
    return LoopOffsets(np.maximum(closure, arrival), closure, arrival)


def loop_offsets(P_s: np.ndarray, P_t: np.ndarray, flow_sm: Flow, flow_mt: Flow, flow_ts: Flow,
                 size_s: float, size_t: float) -> LoopOffsets:
    """3-image loop offsets of candidates `(P_s, P_t)` (each `(N, 2)`) of edge s → t through I_m:
    Q_t = F_mt(F_sm(P_s)), P'_s = F_ts(Q_t), d = max(‖P'_s − P_s‖/size_s, ‖Q_t − P_t‖/size_t)."""
    Q_t = lookup_flow(*flow_mt, lookup_flow(*flow_sm, P_s))
    return _loop_terms(P_s, P_t, Q_t, lookup_flow(*flow_ts, Q_t), size_s, size_t)


def forward_backward_offsets(P_s: np.ndarray, P_t: np.ndarray, flow_ts: Flow, size_s: float) -> np.ndarray:
    """The 2-image alternative: ‖F_ts(P_t) − P_s‖ / size_s, `(N,)`."""
    return _distance(lookup_flow(*flow_ts, P_t), P_s, size_s)


# --- drawing loops -------------------------------------------------------------------------------------


def image_rng(seed: int, image_id: Hashable) -> np.random.Generator:
    """The loop draw's generator of one image: fixed by (seed, image id) on every machine and run
    (crc32, never Python's salted `hash`)."""
    return np.random.default_rng([int(seed), zlib.crc32(str(image_id).encode())])


def _draw_positions(n: int, loops: int, rng: np.random.Generator) -> np.ndarray:
    """`(L, 2)` distinct ordered pairs `(i, j)`, `i ≠ j`, of positions in `range(n)`,
    L = min(loops, n(n−1)). Pair number k ∈ [0, n(n−1)) decodes to i = k // (n−1), j = the (k mod
    (n−1))-th position other than i, so nothing is enumerated: numpy's `choice` without replacement
    draws L distinct numbers in O(L) when the range is large (Floyd) and shuffles it when small."""
    total = n * (n - 1)
    count = min(int(loops), total) if n >= 2 else 0
    if count <= 0:
        return np.zeros((0, 2), np.int64)
    k = np.asarray(rng.choice(total, size=count, replace=False), np.int64)
    i = k // (n - 1)
    r = k % (n - 1)
    return np.stack([i, r + (r >= i)], axis=1)


def draw_loops(others: Sequence[Hashable], loops: int, rng: np.random.Generator) -> np.ndarray:
    """`(L, 2)` distinct ordered pairs `(m, t)`, `m ≠ t`, of elements of `others` (the other images of
    the source's group), L = min(loops, len(others)·(len(others)−1)); deterministic given `rng`."""
    arr = np.asarray(list(others))
    if len(set(arr.tolist())) != len(arr):
        raise ValueError("draw_loops: `others` holds an image twice")
    pos = _draw_positions(len(arr), loops, rng)
    return arr[pos] if len(pos) else arr[:0].reshape(0, 2)


# --- one source image ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """One edge s → t: its dense flow and its K candidates (best first)."""

    flow: Flow
    src_kps: np.ndarray  # (K, 2) source pixels
    trg_kps: np.ndarray  # (K, 2) target pixels
    scores: np.ndarray  # (K,)


@dataclass(frozen=True)
class EdgeBank:
    """Edges (of a group or a whole category) in flat arrays: edge `e` has flow `e` of `flows` and
    candidates `kps_start[e] : kps_start[e] + kps_count[e]`; `index` maps `(src, trg)` to `e`."""

    flows: FlowBank
    src_kps: np.ndarray  # (P, 2) float32
    trg_kps: np.ndarray  # (P, 2) float32
    scores: np.ndarray  # (P,) float32
    kps_start: np.ndarray  # (E,) int64
    kps_count: np.ndarray  # (E,) int64
    index: Mapping[tuple[Hashable, Hashable], int]

    def __post_init__(self) -> None:
        n = len(self.flows)
        if len(self.kps_start) != n or len(self.kps_count) != n or len(self.index) != n:
            raise ValueError("EdgeBank: flows, candidate ranges and index must describe the same edges")
        if len(self.src_kps) != len(self.trg_kps) or len(self.src_kps) != len(self.scores):
            raise ValueError("EdgeBank: src_kps, trg_kps and scores must have one row per candidate")
        if n and (self.kps_start + self.kps_count > len(self.src_kps)).any():
            raise ValueError("EdgeBank: a candidate range lies outside the candidate arrays")

    @classmethod
    def from_edges(cls, edges: Mapping[tuple[Hashable, Hashable], Edge]) -> EdgeBank:
        keys = list(edges)
        values = [edges[k] for k in keys]
        src = [np.asarray(e.src_kps, np.float32).reshape(-1, 2) for e in values]
        trg = [np.asarray(e.trg_kps, np.float32).reshape(-1, 2) for e in values]
        sc = [np.asarray(e.scores, np.float32).reshape(-1) for e in values]
        if any(len(a) != len(b) or len(a) != len(c) for a, b, c in zip(src, trg, sc, strict=True)):
            raise ValueError("EdgeBank: an edge's src_kps, trg_kps and scores differ in length")
        count = np.array([len(a) for a in src], np.int64)

        def cat(arrs: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
            return np.concatenate(arrs) if arrs else np.zeros(shape, np.float32)

        return cls(FlowBank.from_flows([e.flow for e in values]), cat(src, (0, 2)), cat(trg, (0, 2)),
                   cat(sc, (0,)), np.cumsum(count) - count, count, {k: i for i, k in enumerate(keys)})

    def edge(self, src: Hashable, trg: Hashable) -> int:
        try:
            return self.index[(src, trg)]
        except KeyError:
            raise KeyError(f"no edge {src} → {trg}: a loop needs every ordered pair of the group") from None


def _segment_mean(values: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(keys, minlength=n)[:n]
    sums = np.bincount(keys, weights=values, minlength=n)[:n]
    out = np.full(n, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def _segment_median(values: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """Median of `values` per key in `range(n)` (NaN where a key has none, or where NaN values reach its middle:
    they count, sorted last)."""
    out = np.full(n, np.nan)
    if len(values) == 0:
        return out
    counts = np.bincount(keys, minlength=n)[:n]
    # the keys' order by a stable radix sort when they fit in 16 bits: values keep their order within a key
    small = keys.astype(np.int16) if n <= np.iinfo(np.int16).max else keys
    starts = np.cumsum(counts) - counts
    has = np.flatnonzero(counts)
    c = counts[has]
    widest = int(c.max())
    if n * widest <= 8 * len(values) + 4096:
        # one row per key (NaN-padded), sorted along the row: the loops' keys are near-even (every point of a
        # target has that target's loop count), so the table stays small, and sorting rows of ~5 values
        # beats sorting everything by value
        by_key = np.argsort(small, kind="stable")
        sorted_keys = keys[by_key]
        table = np.full((n, widest), np.nan)
        table[sorted_keys, np.arange(len(values)) - starts[sorted_keys]] = values[by_key]
        table.sort(axis=1)
        out[has] = (table[has, (c - 1) // 2] + table[has, c // 2]) / 2
        return out
    # skewed keys: one sort by value, then a stable one by key (= np.lexsort((values, keys)), 4× faster)
    by_value = np.argsort(values, kind="stable")
    v = values[by_value[np.argsort(small[by_value], kind="stable")]]
    out[has] = (v[starts[has] + (c - 1) // 2] + v[starts[has] + c // 2]) / 2
    return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def _split(values: np.ndarray, count: np.ndarray) -> list[np.ndarray]:
    """`values` cut into consecutive pieces of `count[i]` elements (no piece when `count` is empty)."""
    return np.split(values, np.cumsum(count)[:-1]) if len(count) else []


def concat_ranges(start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated `arange(start[i], start[i] + count[i])` and, per element, its range's index i."""
    owner = np.repeat(np.arange(len(count)), count)
    first = np.cumsum(count) - count
    return start[owner] + (np.arange(int(count.sum())) - first[owner]), owner


@dataclass(frozen=True)
class ImageConsistency:
    """The loop check of one source image. Pair arrays follow `targets`; per-point arrays follow the
    candidate order of each edge. Entry arrays hold every (candidate, loop) offset, loop by loop."""

    image_id: Hashable
    targets: list[Hashable]
    target_edges: np.ndarray  # (T,) the bank's edge s → t of each target
    loops: np.ndarray  # (L, 2) the drawn (m, t), as indices into `targets`
    entry_loop: np.ndarray  # (N,) row of `loops`
    entry_target: np.ndarray  # (N,) index into `targets` (the loop's t)
    entry_point: np.ndarray  # (N,) candidate index within edge s → t
    offset: np.ndarray  # (N,) d
    closure: np.ndarray  # (N,) ‖P'_s − P_s‖ / size_s
    arrival: np.ndarray  # (N,) ‖Q_t − P_t‖ / size_t
    pair_loops: np.ndarray  # (T,) loops ending at each target (= loops of each of its points)
    point_offset: list[np.ndarray]  # per target (K_t,): median d over its loops (NaN without)
    point_consistent: list[np.ndarray]  # per target (K_t,): fraction of its loops with d ≤ threshold
    point_fb_offset: list[np.ndarray]  # per target (K_t,): ‖F_ts(P_t) − P_s‖ / size_s
    pair_offset_mean: np.ndarray  # (T,) over candidates × loops
    pair_offset_median: np.ndarray
    pair_consistent: np.ndarray
    pair_fb_consistent: np.ndarray  # (T,) fraction of candidates with fb offset ≤ threshold
    pair_match_score: np.ndarray  # (T,) mean candidate score
    image_offset_mean: float
    image_offset_median: float
    image_consistent: float
    image_fb_consistent: float
    image_match_score: float

    @property
    def loops_run(self) -> int:
        return len(self.loops)


def image_consistency(image_id: Hashable, others: Sequence[Hashable],
                      edges: EdgeBank | Mapping[tuple[Hashable, Hashable], Edge],
                      sizes: Mapping[Hashable, float], *, loops: int, threshold: float,
                      seed: int) -> ImageConsistency:
    """The loop check of source image `image_id` against the other images `others` of its group
    (every ordered pair among `image_id` and `others` must be an edge of `edges`). `loops` distinct
    (m, t) pairs are drawn with `image_rng(seed, image_id)` over positions in `others` (pass them in a
    fixed order, e.g. sorted); each tests the candidates of edge s → t.
    `sizes`: object size (pixels) of every image. Aggregates are NaN where nothing enters them."""
    bank = edges if isinstance(edges, EdgeBank) else EdgeBank.from_edges(edges)
    return images_consistency([image_id], [others], bank, sizes, loops=loops, threshold=threshold, seed=seed)[0]


def images_consistency(image_ids: Sequence[Hashable], others: Sequence[Sequence[Hashable]], bank: EdgeBank,
                       sizes: Mapping[Hashable, float], *, loops: int, threshold: float,
                       seed: int) -> list[ImageConsistency]:
    """`image_consistency` of several source images (`others[i]`: the other images of `image_ids[i]`'s group),
    computed in one pass over all their (candidate, loop) entries: numpy then works on long arrays instead of
    one image's few thousand entries at a time, which is what made the check slow and kept threads from
    running it in parallel. Every image still draws its own loops, and each figure is computed on the same
    values in the same order as for the image alone, so the results are the same."""
    targets = [list(o) for o in others]
    for image_id, ts in zip(image_ids, targets, strict=True):
        if image_id in ts:
            raise ValueError(f"image_consistency: {image_id} is among its own targets")
    n_t = np.array([len(ts) for ts in targets], np.int64)
    t_first = np.cumsum(n_t) - n_t  # each image's first target in the concatenated target arrays
    e_st = np.array([bank.edge(s, t) for s, ts in zip(image_ids, targets, strict=True) for t in ts], np.int64)
    e_ts = np.array([bank.edge(t, s) for s, ts in zip(image_ids, targets, strict=True) for t in ts], np.int64)
    size_s = np.array([float(sizes[s]) for s in image_ids], np.float64)
    size_t = np.array([float(sizes[t]) for ts in targets for t in ts], np.float64)
    target_image = np.repeat(np.arange(len(image_ids)), n_t)
    draws = [_draw_positions(n, loops, image_rng(seed, s)) for s, n in zip(image_ids, n_t.tolist(), strict=True)]
    n_loops = np.array([len(d) for d in draws], np.int64)
    loop_first = np.cumsum(n_loops) - n_loops
    pos = np.concatenate(draws) if draws else np.zeros((0, 2), np.int64)
    loop_image = np.repeat(np.arange(len(image_ids)), n_loops)
    lm, lt = pos[:, 0] + t_first[loop_image], pos[:, 1] + t_first[loop_image]  # as concatenated targets
    e_mt = np.array([bank.edge(ts[m], ts[t]) for ts, d in zip(targets, draws, strict=True) for m, t in d.tolist()],
                    np.int64)

    # every (candidate of edge s → t, loop (m, t)) of every image at once, image by image, loop by loop
    cand, entry_loop = concat_ranges(bank.kps_start[e_st[lt]], bank.kps_count[e_st[lt]])
    entry_target = lt[entry_loop]
    entry_point = cand - bank.kps_start[e_st[entry_target]]
    P_s, P_t = bank.src_kps[cand], bank.trg_kps[cand]
    X_m = bank.flows.lookup(e_st[lm[entry_loop]], P_s)
    Q_t = bank.flows.lookup(e_mt[entry_loop], X_m)
    P2_s = bank.flows.lookup(e_ts[entry_target], Q_t)
    terms = _loop_terms(P_s, P_t, Q_t, P2_s, size_s[target_image[entry_target]], size_t[entry_target])
    d = terms.offset
    ok = (d <= threshold).astype(np.float64)

    # per point: key = position among all candidates of the images' edges (targets order)
    count_t = bank.kps_count[e_st]
    first_t = np.cumsum(count_t) - count_t
    n_targets, n_points = len(e_st), int(count_t.sum())
    point_key = first_t[entry_target] + entry_point
    point_offset = _segment_median(d, point_key, n_points)
    point_consistent = _segment_mean(ok, point_key, n_points)

    # forward-backward and match score over every candidate of the images' edges (no loops needed)
    all_cand, all_target = concat_ranges(bank.kps_start[e_st], count_t)
    fb = _distance(bank.flows.lookup(e_ts[all_target], bank.trg_kps[all_cand]), bank.src_kps[all_cand],
                   size_s[target_image[all_target]])
    fb_ok = (fb <= threshold).astype(np.float64)
    scores = bank.scores[all_cand].astype(np.float64)
    pair = {"pair_loops": np.bincount(lt, minlength=n_targets)[:n_targets].astype(np.int64),
            "pair_offset_mean": _segment_mean(d, entry_target, n_targets),
            "pair_offset_median": _segment_median(d, entry_target, n_targets),
            "pair_consistent": _segment_mean(ok, entry_target, n_targets),
            "pair_fb_consistent": _segment_mean(fb_ok, all_target, n_targets),
            "pair_match_score": _segment_mean(scores, all_target, n_targets)}

    # each image's slices: its targets, its points, its entries (contiguous, as images were concatenated)
    entries = np.bincount(loop_image[entry_loop], minlength=len(image_ids))[:len(image_ids)]
    entry_first = np.cumsum(entries) - entries
    points = np.bincount(target_image, weights=count_t, minlength=len(image_ids))[:len(image_ids)].astype(np.int64)
    point_first = np.cumsum(points) - points
    out = []
    for i, image_id in enumerate(image_ids):
        t0, t1 = int(t_first[i]), int(t_first[i] + n_t[i])
        e0, e1 = int(entry_first[i]), int(entry_first[i] + entries[i])
        p0, p1 = int(point_first[i]), int(point_first[i] + points[i])
        counts = count_t[t0:t1]
        d_i, ok_i, fb_ok_i = d[e0:e1], ok[e0:e1], fb_ok[p0:p1]
        out.append(ImageConsistency(
            image_id=image_id, targets=targets[i], target_edges=e_st[t0:t1], loops=draws[i],
            entry_loop=entry_loop[e0:e1] - loop_first[i], entry_target=entry_target[e0:e1] - t0,
            entry_point=entry_point[e0:e1], offset=d_i, closure=terms.closure[e0:e1], arrival=terms.arrival[e0:e1],
            point_offset=_split(point_offset[p0:p1], counts), point_consistent=_split(point_consistent[p0:p1], counts),
            point_fb_offset=_split(fb[p0:p1], counts),
            **{name: values[t0:t1] for name, values in pair.items()},
            image_offset_mean=_mean(d_i), image_offset_median=_median(d_i), image_consistent=_mean(ok_i),
            image_fb_consistent=_mean(fb_ok_i), image_match_score=_mean(scores[p0:p1]),
        ))
    return out
