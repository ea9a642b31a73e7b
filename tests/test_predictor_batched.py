"""`PseudoLabelGenerator`'s batched API (`encode`, `grid_mask`, `label_pairs`): one pair-head forward per pair gives
the dense flow and the candidates, exactly as `flow` and `match` read them; `match` and `flow` are
bit-identical to the code they replaced."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from sc_imagenet.matching.backbones import create_backbone
from sc_imagenet.matching.backbones.base import Features
from sc_imagenet.matching.cascade import CascadeGenerator, grid_masks
from sc_imagenet.matching.geometry import grid_to_pixels, index_to_pixels, pixels_to_index, soft_argmax_3x3
from sc_imagenet.matching.pmps import hough_confidence
from sc_imagenet.matching.predictor import PairLabel, PseudoLabelGenerator, cat_features, take_features
from sc_imagenet.matching.settings import CascadeSettings


@pytest.fixture(scope="module")
def gen() -> PseudoLabelGenerator:
    """A tiny generator with random (not freshly initialised: β ≠ 0, adapter ≠ identity) parameters."""
    torch.manual_seed(0)
    backbone = create_backbone("dense-sift", input_size=64)
    model = CascadeGenerator(backbone.out_dim, CascadeSettings(mvam={"dim": 16, "heads": 2, "agg_channels": 4}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for b in model.beta.values():
            b.fill_(0.7)
        model.pixel_log_scale.fill_(float(np.log(20.0)))
    return PseudoLabelGenerator(backbone, model, nms_cells=1.0)


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (90, 110, 3), dtype=np.uint8)
    out = []
    for i in range(n):  # shifted, cropped copies of one texture: something worth matching
        h, w = 70 + 5 * i, 80 + 7 * (i % 3)
        out.append(np.ascontiguousarray(base[i: i + h, 2 * i: 2 * i + w]))
    return out


def _masks(images: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for im in images:
        m = np.zeros(im.shape[:2], np.float32)
        H, W = m.shape
        m[H // 5: 4 * H // 5, W // 6: 5 * W // 6] = 1.0
        out.append(m)
    return out


# --- the code `match` and `flow` replaced, verbatim (the reference for bit-identity) -----------------

def _old_pair_features(gen: PseudoLabelGenerator, a: np.ndarray, b: np.ndarray) -> tuple[Features, Features]:
    f = gen.backbone.encode([a, b])
    f = Features(f.tokens.to(gen.device), f.grid, f.global_token.to(gen.device))
    return (Features(f.tokens[:1], f.grid, f.global_token[:1]), Features(f.tokens[1:], f.grid, f.global_token[1:]))


@torch.no_grad()
def _old_match(gen: PseudoLabelGenerator, src_rgb, trg_rgb, k=32, fg_s=None, fg_t=None):
    src, trg = _old_pair_features(gen, src_rgb, trg_rgb)
    v = gen.model.volume(gen.level, src, trg)
    gs = grid_masks(None if fg_s is None else [fg_s], src.grid, gen.device)
    gt = grid_masks(None if fg_t is None else [fg_t], trg.grid, gen.device)
    sel = gen.model.pmps(v, k, gs, gt, nms_radius=gen.nms_cells)
    ok = (sel["src_idx"][0] >= 0).cpu().numpy()
    src_xy = index_to_pixels(sel["src_idx"][0].cpu().numpy()[ok], src.grid, src_rgb.shape[:2])
    trg_xy = index_to_pixels(sel["trg_idx"][0].cpu().numpy()[ok], trg.grid, trg_rgb.shape[:2])
    return src_xy, trg_xy, sel["score"][0].float().cpu().numpy()[ok].astype(np.float32)


@torch.no_grad()
def _old_flow(gen: PseudoLabelGenerator, src_rgb, trg_rgb, hough=False, subcell=True):
    src, trg = _old_pair_features(gen, src_rgb, trg_rgb)
    v = gen.model.volume(gen.level, src, trg)
    if hough:
        v = hough_confidence(v, L=gen.model.settings.rhm_L, appearance=gen.model.pmps.appearance)
    v = v[0]
    h, w = src.grid
    rows = v.reshape(h * w, -1).float()
    best = rows.argmax(dim=1)
    if subcell:
        refined = soft_argmax_3x3(rows, best, trg.grid, gen.subcell_temperature)
        return src.grid, grid_to_pixels(refined, trg.grid, trg_rgb.shape[:2])
    return src.grid, index_to_pixels(best.cpu().numpy(), trg.grid, trg_rgb.shape[:2])


def _same(a: tuple, b: tuple) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y)), (x, y)


def test_match_and_flow_are_bit_identical_to_the_code_they_replaced(gen: PseudoLabelGenerator) -> None:
    a, b = _images(2)
    ma, mb = _masks([a, b])
    for k, fs, ft in [(16, None, None), (16, ma, mb), (40, ma, None), (5, None, mb)]:
        new = gen.match(a, b, k, fs, ft)
        _same(new, _old_match(gen, a, b, k, fs, ft))
        assert 0 < len(new[2]) <= k
    for hough in (False, True):
        for subcell in (False, True):
            _same(gen.flow(a, b, hough, subcell), _old_flow(gen, a, b, hough, subcell))


def _pairs_and_features(gen: PseudoLabelGenerator, images: list[np.ndarray], batch: int):
    parts = [gen.encode(images[i: i + batch]) for i in range(0, len(images), batch)]
    return cat_features(parts)


@pytest.mark.parametrize("masked", ["all", "none", "mixed"])
def test_label_pairs_equal_flow_and_match_per_pair(gen: PseudoLabelGenerator, masked: str) -> None:
    """Batched over several pairs, features from other backbone batches, grid masks computed once per
    image: each pair's read-outs are those of `flow` and `match` on that pair alone."""
    images = _images(4)
    masks = _masks(images)
    if masked == "none":
        masks = [None] * 4
    elif masked == "mixed":
        masks = [masks[0], None, masks[2], None]
    feats = _pairs_and_features(gen, images, batch=3)  # two backbone batches, concatenated
    fg = [gen.grid_mask(m, feats.grid) for m in masks]
    pairs = [(0, 1), (1, 0), (2, 3), (3, 1), (0, 2)]
    s, t = [p[0] for p in pairs], [p[1] for p in pairs]
    hw = [im.shape[:2] for im in images]
    out = gen.label_pairs(take_features(feats, s), take_features(feats, t), [hw[i] for i in s], [hw[i] for i in t],
                          k=12, fg_s=[fg[i] for i in s], fg_t=[fg[i] for i in t])
    assert len(out) == len(pairs) and all(isinstance(o, PairLabel) for o in out)
    for (i, j), o in zip(pairs, out, strict=True):
        grid, flow = gen.flow(images[i], images[j])
        assert o.flow.shape == (grid[0] * grid[1], 2) and o.flow.dtype == np.float32
        np.testing.assert_allclose(o.flow, flow, rtol=0, atol=1e-3)
        src_xy, trg_xy, score = gen.match(images[i], images[j], 12, masks[i], masks[j])
        assert o.src_xy.shape == src_xy.shape and o.score.dtype == np.float32
        np.testing.assert_array_equal(o.src_xy, src_xy)
        np.testing.assert_array_equal(o.trg_xy, trg_xy)
        np.testing.assert_allclose(o.score, score, rtol=1e-5, atol=1e-7)
        assert (np.diff(o.score) <= 1e-7).all()


def test_candidates_respect_the_foreground(gen: PseudoLabelGenerator) -> None:
    a, b = _images(2, seed=3)
    ma, mb = _masks([a, b])
    feats = gen.encode([a, b])
    fa, fb = gen.grid_mask(ma, feats.grid), gen.grid_mask(mb, feats.grid)
    assert fa.shape == feats.grid and gen.grid_mask(None, feats.grid) is None
    (o,) = gen.label_pairs(take_features(feats, [0]), take_features(feats, [1]), [a.shape[:2]], [b.shape[:2]], k=30,
                           fg_s=[fa], fg_t=[fb])
    assert 0 < len(o.score) <= 30
    # every candidate sits in a cell that is partly foreground (PMPS weighs matches by the cell fractions)
    for xy, g, hw in ((o.src_xy, fa, a.shape[:2]), (o.trg_xy, fb, b.shape[:2])):
        assert (g.flatten()[pixels_to_index(xy, feats.grid, hw)] > 0).all()
    (free,) = gen.label_pairs(take_features(feats, [0]), take_features(feats, [1]), [a.shape[:2]], [b.shape[:2]], k=30)
    assert (fa.flatten()[pixels_to_index(free.src_xy, feats.grid, a.shape[:2])] == 0).any()  # the constraint bites


def test_feature_helpers(gen: PseudoLabelGenerator) -> None:
    images = _images(3)
    whole = gen.encode(images)
    parts = cat_features([gen.encode(images[:1]), gen.encode(images[1:])])
    assert parts.grid == whole.grid and parts.tokens.shape == whole.tokens.shape
    torch.testing.assert_close(parts.tokens, whole.tokens)
    sub = take_features(whole, [2, 0, 2])
    assert torch.equal(sub.tokens[0], whole.tokens[2]) and torch.equal(sub.global_token[1], whole.global_token[0])
    with pytest.raises(ValueError, match="nothing"):
        cat_features([])
    with pytest.raises(ValueError, match="one entry per pair"):
        gen.label_pairs(take_features(whole, [0, 1]), take_features(whole, [1, 2]), [(1, 1)] * 2, [(1, 1)] * 2, k=3,
                        fg_s=[None])
    gen.amp = True
    try:  # amp applies on CUDA only: on CPU the autocast context is a no-op and results stay float32
        assert isinstance(gen.autocast(), contextlib.nullcontext)
        assert gen.label_pairs(take_features(whole, [0]), take_features(whole, [1]), [(70, 80)], [(75, 87)],
                               k=3)[0].flow.dtype == np.float32
    finally:
        gen.amp = False


def test_bf16_autocast_reads_out_float32(gen: PseudoLabelGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The amp path (bf16 autocast of the backbone and the pair head, CUDA only in production) exercised with
    CPU autocast: bf16 tokens flow through the helpers, the read-outs come back float32 and agree closely."""
    images = _images(3)
    hw = [im.shape[:2] for im in images]
    ref = gen.label_pairs(*(take_features(gen.encode(images), i) for i in ([0, 1], [1, 2])), hw[:2], hw[1:], k=10)
    monkeypatch.setattr(gen, "autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    feats = cat_features([gen.encode(images[:1]), gen.encode(images[1:])])
    with gen.autocast():
        assert gen.model.volume(gen.level, take_features(feats, [0]), take_features(feats, [1])).dtype == torch.bfloat16
    out = gen.label_pairs(take_features(feats, [0, 1]), take_features(feats, [1, 2]), hw[:2], hw[1:], k=10)
    for o, r in zip(out, ref, strict=True):
        assert o.flow.dtype == o.src_xy.dtype == o.score.dtype == np.float32 and np.isfinite(o.flow).all()
        assert o.flow.shape == r.flow.shape and 0 < len(o.score) <= 10
        cell = np.array([hw[1][1] / feats.grid[1], hw[1][0] / feats.grid[0]])
        assert np.median(np.abs(o.flow - r.flow).max(1) / cell.max()) < 0.5  # same cells, bf16 rounding aside
