"""Keypoint-transfer methods: the baselines and adapters every later stage is compared with.

A *method* is `transfer(src_rgb, trg_rgb, src_points) -> pred_points`: RGB uint8 (H, W, 3) images,
float32 (N, 2) (x, y) points in ORIGINAL source pixels in, float32 (N, 2) (x, y) in ORIGINAL target
pixels out (pixel centres at integers). Grid ↔ pixel geometry is `sc_imagenet.matching.geometry`.

Where a method moves a point by a match's displacement it does so in normalised image coordinates
((x + ½)/W, (y + ½)/H), the frame the backbone sees after resizing both images to S×S; for grid-cell
matches this equals adding the match's offset in grid cells.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from sc_imagenet.matching.backbones.base import Backbone
from sc_imagenet.matching.geometry import (
    grid_to_pixels,
    index_to_pixels,
    pixels_to_grid,
    pixels_to_index,
    soft_argmax_3x3,
)
from sc_imagenet.matching.pmps import Appearance, greedy_one_to_one, hough_confidence

Method = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# match(src_rgb, trg_rgb, k) -> (src_xy (K, 2), trg_xy (K, 2), score (K,)), both in original pixels
MatchFn = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
# flow(src_rgb, trg_rgb) -> ((h, w) source grid, (h*w, 2) target pixels of every source cell, row-major)
FlowFn = Callable[[np.ndarray, np.ndarray], tuple[tuple[int, int], np.ndarray]]


def _hw(rgb: np.ndarray) -> tuple[int, int]:
    return int(rgb.shape[0]), int(rgb.shape[1])


def _points(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float32).reshape(-1, 2)


def pair_similarity(backbone: Backbone, src_rgb: np.ndarray,
                    trg_rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cosine similarity (h*w, h*w) float32 between all source and target tokens (rows: source cells),
    on the backbone's device, and the grid (h, w). Both images are encoded in one batch."""
    feats = backbone.encode([src_rgb, trg_rgb])
    tok = F.normalize(feats.tokens.float(), dim=-1)
    return tok[0] @ tok[1].T, feats.grid


def nearest_neighbour_transfer(backbone: Backbone, refine: bool = False, temperature: float = 0.05) -> Method:
    """Each source point → its cell's token → the most cosine-similar target token → that cell's centre
    (or, with `refine`, the soft-argmax over its 3×3 neighbourhood, `soft_argmax_3x3`)."""
    return from_flow(nearest_neighbour_flow(backbone, refine, temperature), mode="cell")


def nearest_neighbour_flow(backbone: Backbone, refine: bool = False, temperature: float = 0.05) -> FlowFn:
    """The backbone's dense flow: every source cell → the centre of its most cosine-similar target cell
    (with `refine`, the soft-argmax over that cell's 3×3 neighbourhood). With `from_flow(...,
    mode="displacement")` and `refine` this is the untrained counterpart of `PseudoLabelGenerator.flow`."""

    def flow(src_rgb: np.ndarray, trg_rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
        sim, grid = pair_similarity(backbone, src_rgb, trg_rgb)
        best = sim.argmax(1)
        if refine:
            return grid, grid_to_pixels(soft_argmax_3x3(sim, best, grid, temperature), grid, _hw(trg_rgb))
        return grid, index_to_pixels(best, grid, _hw(trg_rgb))

    return flow


def mutual_nn(sim: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of a (Ns, Nt) similarity matrix: (src_idx (K,), trg_idx (K,)) int64 with
    trg_idx[k] = argmax sim[src_idx[k]] and src_idx[k] = argmax sim[:, trg_idx[k]]; sorted by src_idx."""
    fwd = sim.argmax(1)
    bwd = sim.argmax(0)
    src = torch.arange(sim.shape[0], device=sim.device)
    mutual = bwd[fwd] == src
    return src[mutual].cpu().numpy(), fwd[mutual].cpu().numpy()


def _nearest(query: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """(N,) index of the nearest row of refs (K, 2) for each query (N, 2) (Euclidean; first on ties)."""
    d = torch.cdist(torch.as_tensor(query, dtype=torch.float64), torch.as_tensor(refs, dtype=torch.float64))
    return d.argmin(1).numpy()


def _normalise(xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return (np.asarray(xy, np.float64) + 0.5) / np.array([hw[1], hw[0]], np.float64)


def _denormalise(uv: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return (uv * np.array([hw[1], hw[0]], np.float64) - 0.5).astype(np.float32)


def transfer_by_matches(points: np.ndarray, src_xy: np.ndarray, trg_xy: np.ndarray, src_hw: tuple[int, int],
                        trg_hw: tuple[int, int], nearest_in: np.ndarray | None = None,
                        points_in: np.ndarray | None = None) -> np.ndarray:
    """Move each point (N, 2) by the displacement of its nearest match (src_xy → trg_xy, (K, 2) pixels),
    in normalised coordinates. "Nearest" is in source pixels unless `nearest_in`/`points_in` give the
    matches' and points' coordinates in another frame (e.g. grid cells). With K = 0 every point keeps its
    normalised position (the identity prediction). Returns (N, 2) float32 target pixels."""
    pts = _points(points)
    src_n, pts_n = _normalise(src_xy, src_hw).reshape(-1, 2), _normalise(pts, src_hw)
    if len(src_n) == 0 or len(pts) == 0:
        return _denormalise(pts_n, trg_hw)
    near = _nearest(pts if points_in is None else points_in,
                    np.asarray(src_xy if nearest_in is None else nearest_in).reshape(-1, 2))
    trg_n = _normalise(trg_xy, trg_hw).reshape(-1, 2)
    return _denormalise(pts_n + trg_n[near] - src_n[near], trg_hw)


def mutual_nn_transfer(backbone: Backbone) -> Method:
    """MNN matches + nearest-match transfer: all mutual nearest neighbours between the two token sets are
    the (sparse) matches; each source point moves by the offset of the match whose source cell is nearest
    to it in grid distance (PCK needs a prediction for every keypoint, MNN gives only some cells one)."""

    def transfer(src_rgb: np.ndarray, trg_rgb: np.ndarray, src_points: np.ndarray) -> np.ndarray:
        pts = _points(src_points)
        sim, grid = pair_similarity(backbone, src_rgb, trg_rgb)
        s_idx, t_idx = mutual_nn(sim)
        s_hw, t_hw = _hw(src_rgb), _hw(trg_rgb)
        s_xy, t_xy = index_to_pixels(s_idx, grid, s_hw), index_to_pixels(t_idx, grid, t_hw)
        return transfer_by_matches(pts, s_xy, t_xy, s_hw, t_hw, nearest_in=pixels_to_grid(s_xy, grid, s_hw),
                                   points_in=pixels_to_grid(pts, grid, s_hw))

    return transfer


def hough_scores(sim: torch.Tensor, grid: tuple[int, int], L: int = 5, appearance: Appearance = "softmax",
                 temperature: float = 0.05) -> torch.Tensor:
    """PMPS's regularized Hough matching (`pmps.hough_confidence`) of a raw `(h*w, h*w)` similarity matrix
    of two images on the same grid: `(h*w, h*w)` confidence = appearance × smoothed translation votes."""
    h, w = grid
    return hough_confidence(sim.reshape(1, h, w, h, w), L=L, appearance=appearance,
                            temperature=temperature).reshape(h * w, h * w)


def hough_flow(backbone: Backbone, L: int = 5, appearance: Appearance = "softmax", temperature: float = 0.05,
               refine: bool = False, refine_temperature: float = 0.05) -> FlowFn:
    """The backbone's dense flow under RHM, untrained: every source cell → the target cell of highest
    Hough confidence (`hough_scores`) instead of highest similarity; with `refine`, the soft-argmax of
    the raw similarity over that cell's 3×3 neighbourhood (as `nearest_neighbour_flow`)."""

    def flow(src_rgb: np.ndarray, trg_rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
        sim, grid = pair_similarity(backbone, src_rgb, trg_rgb)
        best = hough_scores(sim, grid, L, appearance, temperature).argmax(1)
        if refine:
            return grid, grid_to_pixels(soft_argmax_3x3(sim, best, grid, refine_temperature), grid, _hw(trg_rgb))
        return grid, index_to_pixels(best, grid, _hw(trg_rgb))

    return flow


def hough_one_to_one_transfer(backbone: Backbone, L: int = 5, appearance: Appearance = "softmax",
                              temperature: float = 0.05, keep: float = 0.5) -> Method:
    """RHM + PMPS's greedy one-to-one step, untrained: the `keep` fraction of source cells with the most
    confident one-to-one matches (`greedy_one_to_one` on `hough_scores`) are the sparse matches; each
    point moves by the offset of the match whose source cell is nearest in grid distance (as `mnn`)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")

    def transfer(src_rgb: np.ndarray, trg_rgb: np.ndarray, src_points: np.ndarray) -> np.ndarray:
        pts = _points(src_points)
        sim, grid = pair_similarity(backbone, src_rgb, trg_rgb)
        conf = hough_scores(sim, grid, L, appearance, temperature)
        k = max(1, round(keep * conf.shape[0]))
        s_idx, t_idx, _ = greedy_one_to_one(conf[None], k, min_score=0.0)
        ok = s_idx[0] >= 0
        s_idx, t_idx = s_idx[0][ok].cpu().numpy(), t_idx[0][ok].cpu().numpy()
        s_hw, t_hw = _hw(src_rgb), _hw(trg_rgb)
        s_xy, t_xy = index_to_pixels(s_idx, grid, s_hw), index_to_pixels(t_idx, grid, t_hw)
        return transfer_by_matches(pts, s_xy, t_xy, s_hw, t_hw, nearest_in=pixels_to_grid(s_xy, grid, s_hw),
                                   points_in=pixels_to_grid(pts, grid, s_hw))

    return transfer


def from_matcher(match_fn: MatchFn, k: int = 256) -> Method:
    """Adapter for a sparse matcher `match(src_rgb, trg_rgb, k) -> (src_xy, trg_xy, score)`: each source
    point moves by the offset of the returned match nearest to it in source pixels."""

    def transfer(src_rgb: np.ndarray, trg_rgb: np.ndarray, src_points: np.ndarray) -> np.ndarray:
        s_xy, t_xy, _ = match_fn(src_rgb, trg_rgb, k)
        return transfer_by_matches(_points(src_points), np.asarray(s_xy).reshape(-1, 2),
                                   np.asarray(t_xy).reshape(-1, 2), _hw(src_rgb), _hw(trg_rgb))

    return transfer


def _bilinear(field: np.ndarray, gxy: np.ndarray) -> np.ndarray:
    """Sample field (h, w, 2) at continuous grid coordinates (N, 2) (col, row), clamped to the grid."""
    h, w = field.shape[:2]
    x = np.clip(gxy[:, 0].astype(np.float64), 0, w - 1)
    y = np.clip(gxy[:, 1].astype(np.float64), 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


FlowMode = Literal["cell", "bilinear", "displacement"]


def from_flow(flow_fn: FlowFn, mode: FlowMode = "cell") -> Method:
    """Adapter for a dense API `flow(src_rgb, trg_rgb) -> ((h, w), trg_xy_per_cell (h*w, 2))`.

    mode `cell`: each source point takes the target position of its source cell (its cell's centre maps
    there, so the point's offset inside the cell is lost); `bilinear`: the bilinear interpolation of the
    four surrounding cells' target positions at the point's continuous grid coordinate; `displacement`:
    the point moves by its cell's displacement (target position − cell centre, in normalised image
    coordinates), keeping its sub-cell offset — the same rule MNN's nearest-match transfer applies.
    """
    if mode not in ("cell", "bilinear", "displacement"):
        raise ValueError(f"flow mode must be 'cell', 'bilinear' or 'displacement', got {mode!r}")

    def transfer(src_rgb: np.ndarray, trg_rgb: np.ndarray, src_points: np.ndarray) -> np.ndarray:
        pts = _points(src_points)
        grid, trg_xy = flow_fn(src_rgb, trg_rgb)
        field = np.asarray(trg_xy, np.float32).reshape(grid[0], grid[1], 2)
        if mode == "bilinear":
            return _bilinear(field, pixels_to_grid(pts, grid, _hw(src_rgb)))
        cells = pixels_to_index(pts, grid, _hw(src_rgb))
        if mode == "cell":
            return field.reshape(-1, 2)[cells]
        s_hw, t_hw = _hw(src_rgb), _hw(trg_rgb)
        moved = _normalise(field.reshape(-1, 2)[cells], t_hw) - _normalise(index_to_pixels(cells, grid, s_hw), s_hw)
        return _denormalise(_normalise(pts, s_hw) + moved, t_hw)

    return transfer


def identity_transfer(src_rgb: np.ndarray, trg_rgb: np.ndarray, src_points: np.ndarray) -> np.ndarray:
    """The trivial lower bound: every point keeps its pixel coordinates."""
    del src_rgb, trg_rgb
    return _points(src_points).copy()
