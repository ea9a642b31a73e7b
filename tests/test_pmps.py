"""PMPS: regularized Hough matching, greedy one-to-one selection, pair NMS (known-answer tests)."""

from __future__ import annotations

import pytest
import torch

from sc_imagenet.matching.mvam import correlation_4d
from sc_imagenet.matching.pmps import (
    PMPS,
    appearance_scores,
    gaussian_kernel1d,
    greedy_one_to_one,
    hough_confidence,
    hough_histogram,
    hough_votes,
    nms_pairs,
    offset_counts,
    offset_index,
    smooth_histogram,
)

H = W = 12
SHIFT = (2, 3)  # (dy, dx): target cell (i + 2, j + 3) shows source cell (i, j)


def translated_volume(noise: float, seed: int = 0, C: int = 32) -> torch.Tensor:
    """`(1, 12, 12, 12, 12)` cosine volume of random features and their translated copy, plus noise."""
    g = torch.Generator().manual_seed(seed)
    dy, dx = SHIFT
    F_s = torch.randn(1, H, W, C, generator=g)
    F_t = torch.randn(1, H, W, C, generator=g)  # uncovered border: unrelated noise features
    F_t[:, dy:, dx:] = F_s[:, : H - dy, : W - dx]
    v = correlation_4d(F_s.reshape(1, -1, C), F_t.reshape(1, -1, C), (H, W), (H, W))
    return v + noise * torch.randn(v.shape, generator=g)


def fraction_true_argmax(conf: torch.Tensor) -> float:
    """Share of covered source cells whose best target is the true translated cell."""
    dy, dx = SHIFT
    best = conf.reshape(H, W, H * W).argmax(-1)[: H - dy, : W - dx]
    ii, jj = torch.meshgrid(torch.arange(H - dy), torch.arange(W - dx), indexing="ij")
    return (best == (ii + dy) * W + jj + dx).float().mean().item()


def peak_offset(hist: torch.Tensor) -> tuple[int, int]:
    Wx = hist.shape[-1]
    flat = int(hist.reshape(-1).argmax())
    return flat // Wx - (H - 1), flat % Wx - (W - 1)


# --------------------------------------------------------------------------- Hough matching


def test_offset_index_layout():
    idx = offset_index((3, 4), (5, 2))
    assert idx.shape == (3, 4, 5, 2)
    Wx = 4 + 2 - 1
    # source (2, 3) → target (0, 1): offset (-2, -2) → bin (-2 + 2, -2 + 3)
    assert idx[2, 3, 0, 1] == 0 * Wx + 1
    assert idx.min() == 0 and idx.max() == (3 + 5 - 1) * Wx - 1


def test_hough_votes_sum_and_single_match():
    v = torch.zeros(1, 3, 3, 4, 4)
    v[0, 1, 1, 3, 0] = 2.0  # offset (dy, dx) = (2, -1)
    hist = hough_votes(v)
    assert hist.shape == (1, 3 + 4 - 1, 3 + 4 - 1)
    assert hist[0, 2 + 2, -1 + 2] == 2.0 and hist.sum() == 2.0
    w = torch.rand(2, 4, 5, 3, 6)
    assert torch.allclose(hough_votes(w).sum(dim=(1, 2)), w.sum(dim=(1, 2, 3, 4)))


def test_offset_counts_match_votes_of_a_constant_volume():
    for grid_s, grid_t in [((3, 4), (5, 2)), ((6, 6), (6, 6)), ((1, 1), (2, 3))]:
        ones = torch.ones(1, *grid_s, *grid_t)
        assert torch.equal(offset_counts(grid_s, grid_t), hough_votes(ones)[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("L", [1, 3, 5, 7])
@pytest.mark.parametrize("appearance", ["relu", "softmax"])
def test_hough_histogram_peaks_at_true_translation(seed, L, appearance):
    v = translated_volume(noise=0.1, seed=seed)
    raw = hough_votes(appearance_scores(v, appearance))
    assert peak_offset(raw[0]) == SHIFT
    hist = hough_histogram(appearance_scores(v, appearance), L)
    assert hist.shape == (1, 2 * H - 1, 2 * W - 1)
    assert peak_offset(hist[0]) == SHIFT and hist.max() == 1 and hist.min() >= 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_debiasing_removes_the_pull_toward_zero_offset(seed):
    # with a positive background similarity, the pyramid of match counts per offset dominates a wide
    # smoothing kernel: the plain smoothed sum peaks next to the truth, the corrected histogram on it
    v = translated_volume(noise=0.2, seed=seed) * 0.8 + 0.2
    app = appearance_scores(v)
    plain = hough_histogram(app, L=7, debias=False)
    assert peak_offset(plain[0]) != SHIFT
    assert peak_offset(hough_histogram(app, L=7)[0]) == SHIFT
    assert fraction_true_argmax(hough_confidence(v, L=7)) > fraction_true_argmax(
        hough_confidence(v, L=7, debias=False)
    )


def test_constant_volume_has_no_hough_information():
    v = torch.full((2, 4, 4, 4, 4), 0.5)
    assert torch.equal(hough_histogram(v), torch.ones(2, 7, 7))
    assert torch.equal(hough_confidence(v), v)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hough_confidence_beats_raw_appearance_under_distractor_noise(seed):
    v = translated_volume(noise=0.3, seed=seed)
    raw = fraction_true_argmax(appearance_scores(v))
    rhm = fraction_true_argmax(hough_confidence(v, L=5))
    assert raw < 0.9  # the noise really does create distractors ...
    assert rhm > max(raw + 0.1, 0.9)  # ... and the translation consensus removes most of them
    assert fraction_true_argmax(translated_volume(noise=0.0, seed=seed)) == 1.0


def test_hough_confidence_is_appearance_times_normalised_vote():
    v = translated_volume(noise=0.05)
    conf = hough_confidence(v, L=5)
    app = appearance_scores(v)
    assert conf.shape == v.shape
    assert (conf <= app + 1e-6).all() and (conf >= 0).all()
    # the true matches sit on the histogram peak: their confidence equals their appearance
    dy, dx = SHIFT
    assert torch.allclose(conf[0, 0, 0, dy, dx], app[0, 0, 0, dy, dx])


def test_l1_and_use_hough_false_reduce_to_appearance():
    v = translated_volume(noise=0.3)
    app = appearance_scores(v)
    assert torch.equal(hough_confidence(v, L=1), app)
    assert torch.equal(hough_confidence(v, L=5, use_hough=False), app)
    a = PMPS(L=1)(v, 10)
    s, t, _ = greedy_one_to_one(app.reshape(1, H * W, H * W), 10, min_score=0.0)
    assert torch.equal(a["src_idx"], s) and torch.equal(a["trg_idx"], t)


def test_foreground_masks_remove_votes_and_matches():
    v = translated_volume(noise=0.05)
    fg_s = torch.zeros(1, H, W)
    fg_s[:, :6, :6] = 1
    fg_t = torch.ones(1, H, W)
    conf = hough_confidence(v, fg_s=fg_s, fg_t=fg_t)
    assert (conf[:, 6:] == 0).all() and (conf[:, :, 6:] == 0).all()
    out = PMPS()(v, 50, fg_s=fg_s, fg_t=fg_t)
    src = out["src_idx"][out["src_idx"] >= 0]
    assert len(src) == 36  # one per foreground source cell, nothing from the background
    assert ((src // W < 6) & (src % W < 6)).all()


def test_smooth_histogram():
    hist = torch.zeros(1, 9, 9)
    hist[0, 4, 4] = 1.0
    assert torch.equal(smooth_histogram(hist, 1), hist)
    sm = smooth_histogram(hist, 5)
    assert torch.isclose(sm.sum(), torch.tensor(1.0)) and sm[0, 4, 4] == sm.max()
    assert (sm[0, :2] == 0).all() and (sm[0, 2:7, 2:7] > 0).all()  # support is the L×L box
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        smooth_histogram(torch.zeros(9, 9), 3)


def test_gaussian_kernel():
    k = gaussian_kernel1d(5)
    assert k.shape == (5,) and torch.isclose(k.sum(), torch.tensor(1.0))
    assert torch.equal(k, k.flip(0)) and k.argmax() == 2
    assert torch.equal(gaussian_kernel1d(1), torch.ones(1))
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel1d(4)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel1d(3, sigma=0.0)


def test_hough_confidence_errors_and_empty():
    with pytest.raises(ValueError, match=r"\(B, h_s, w_s, h_t, w_t\)"):
        hough_confidence(torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="fg_s"):
        hough_confidence(torch.zeros(2, 3, 3, 3, 3), fg_s=torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="appearance"):
        hough_confidence(torch.zeros(1, 2, 2, 2, 2), appearance="exp")  # type: ignore[arg-type]
    for shape in [(0, 3, 3, 3, 3), (2, 0, 3, 3, 3), (2, 3, 3, 0, 0)]:
        assert hough_confidence(torch.zeros(shape)).shape == shape


# --------------------------------------------------------------------------- greedy one-to-one


def _naive_greedy(S: torch.Tensor, k: int, min_score: float) -> list[tuple[int, int]]:
    S = S.clone()
    out = []
    for _ in range(min(k, *S.shape)):
        if not S.max() > min_score:
            break
        s, t = divmod(int(S.argmax()), S.shape[1])
        out.append((s, t))
        S[s, :] = float("-inf")
        S[:, t] = float("-inf")
    return out


@pytest.mark.parametrize("seed", range(20))
def test_greedy_never_reuses_cells_and_sorts_scores(seed):
    g = torch.Generator().manual_seed(seed)
    B, Ns, Nt = 3, int(torch.randint(1, 30, (1,), generator=g)), int(torch.randint(1, 30, (1,), generator=g))
    scores = torch.randn(B, Ns, Nt, generator=g)
    k = int(torch.randint(0, 40, (1,), generator=g))
    src, trg, score = greedy_one_to_one(scores, k)
    assert src.shape == trg.shape == score.shape == (B, k)
    assert src.dtype == trg.dtype == torch.long
    for b in range(B):
        valid = src[b] >= 0
        n = min(k, Ns, Nt)
        assert int(valid.sum()) == n and valid[:n].all()  # valid pairs first, then padding
        assert len(set(src[b][valid].tolist())) == n and len(set(trg[b][valid].tolist())) == n
        assert (score[b][valid][1:] <= score[b][valid][:-1]).all()
        assert torch.equal(score[b][valid], scores[b, src[b][valid], trg[b][valid]])
        assert (trg[b][~valid] == -1).all() and (score[b][~valid] == 0).all()


@pytest.mark.parametrize("seed", range(10))
def test_greedy_matches_naive_reference_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-3, 4, (2, 7, 9), generator=g).float()
    src, trg, _ = greedy_one_to_one(scores, 8, min_score=-2.5)
    for b in range(2):
        got = [(int(s), int(t)) for s, t in zip(src[b], trg[b], strict=True) if s >= 0]
        assert got == _naive_greedy(scores[b], 8, -2.5)


def test_greedy_first_pick_is_global_max_and_min_score():
    scores = torch.tensor([[[0.1, 0.9, 0.3], [0.8, 0.95, 0.2]]])
    src, trg, score = greedy_one_to_one(scores, 3)
    assert src.tolist() == [[1, 0, -1]] and trg.tolist() == [[1, 2, -1]]
    assert torch.allclose(score, torch.tensor([[0.95, 0.3, 0.0]]))
    src, _, score = greedy_one_to_one(scores, 3, min_score=0.5)
    assert src.tolist() == [[1, -1, -1]] and score[0, 1:].tolist() == [0.0, 0.0]


def test_greedy_edge_cases():
    scores = torch.rand(2, 4, 5)
    src, trg, score = greedy_one_to_one(scores, 0)
    assert src.shape == trg.shape == score.shape == (2, 0)
    src, _, _ = greedy_one_to_one(scores, 10)  # k > min(N_s, N_t)
    assert (src[:, :4] >= 0).all() and (src[:, 4:] == -1).all()
    for shape in [(0, 4, 5), (2, 0, 5), (2, 4, 0)]:
        src, trg, score = greedy_one_to_one(torch.rand(shape), 3)
        assert src.shape == (shape[0], 3) and (src == -1).all() and (score == 0).all()
    nan = torch.full((1, 3, 3), float("nan"))
    nan[0, 2, 1] = 1.0
    src, trg, _ = greedy_one_to_one(nan, 3)
    assert src.tolist() == [[2, -1, -1]] and trg.tolist() == [[1, -1, -1]]
    with pytest.raises(ValueError, match=r"\(B, N_s, N_t\)"):
        greedy_one_to_one(torch.rand(4, 5), 2)
    with pytest.raises(ValueError, match="k"):
        greedy_one_to_one(torch.rand(1, 4, 5), -1)


def test_greedy_score_keeps_gradient():
    scores = torch.rand(1, 4, 4, requires_grad=True)
    _, _, score = greedy_one_to_one(scores, 2)
    score.sum().backward()
    assert scores.grad is not None and scores.grad.sum() == 2


# --------------------------------------------------------------------------- NMS


def test_nms_keeps_best_of_each_cluster():
    src = torch.tensor([[[0.0, 0.0], [0.5, 0.0], [10.0, 10.0], [10.0, 11.0], [20.0, 0.0]]])
    trg = src + 100
    score = torch.tensor([[0.5, 0.9, 0.7, 0.8, 0.1]])
    keep = nms_pairs(src, trg, score, radius=2.0)
    assert keep.tolist() == [[False, True, False, True, True]]


def test_nms_modes():
    src = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]])
    trg = torch.tensor([[[0.0, 0.0], [9.0, 9.0], [0.0, 1.0]]])
    score = torch.tensor([[3.0, 2.0, 1.0]])
    assert nms_pairs(src, trg, score, 1.5, mode="src").tolist() == [[True, False, True]]
    assert nms_pairs(src, trg, score, 1.5, mode="trg").tolist() == [[True, True, False]]
    assert nms_pairs(src, trg, score, 1.5, mode="either").tolist() == [[True, False, False]]
    assert nms_pairs(src, trg, score, 1.5, mode="both").tolist() == [[True, True, True]]


def test_nms_invalid_pairs_and_max_keep():
    src = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [9.0, 9.0]]])
    trg = src.clone()
    score = torch.tensor([[float("-inf"), 2.0, 1.0, 0.5]])
    valid = torch.tensor([[True, True, False, True]])
    assert nms_pairs(src, trg, score, 1.5, valid=valid).tolist() == [[False, True, False, True]]
    assert nms_pairs(src, trg, score, 1.5, valid=valid, max_keep=1).tolist() == [[False, True, False, False]]
    assert nms_pairs(src[:, :0], trg[:, :0], score[:, :0], 1.0).shape == (1, 0)
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        nms_pairs(src[0], trg[0], score[0], 1.0)
    with pytest.raises(ValueError, match="score"):
        nms_pairs(src, trg, score[:, :2], 1.0)


# --------------------------------------------------------------------------- module


def test_pmps_on_translated_pair_finds_true_matches():
    v = translated_volume(noise=0.05)
    out = PMPS(L=5)(v, 16)
    assert set(out) == {"src_idx", "trg_idx", "score"}
    assert all(x.shape == (1, 16) for x in out.values())
    src, trg = out["src_idx"][0], out["trg_idx"][0]
    dy, dx = SHIFT
    assert (src >= 0).all()
    assert torch.equal(trg // W - src // W, torch.full_like(src, dy))
    assert torch.equal(trg % W - src % W, torch.full_like(src, dx))


def test_pmps_with_nms_spreads_pairs():
    v = translated_volume(noise=0.05)
    out = PMPS()(v, 8, nms_radius=2.0)
    src = out["src_idx"][0]
    assert (src >= 0).all()
    xy = torch.stack([src % W, src // W], -1).float()
    d = torch.cdist(xy, xy) + torch.eye(8) * 100
    assert d.min() > 2.0
    assert (out["score"][0][1:] <= out["score"][0][:-1]).all()
    few = PMPS()(v, 500, nms_radius=2.0, candidates=20)  # more than can survive: padded
    assert few["src_idx"].shape == (1, 500) and (few["src_idx"][0, 20:] == -1).all()


def test_pmps_batch_and_empty():
    v = torch.randn(3, 4, 5, 6, 3)
    out = PMPS(L=3)(v, 5)
    assert all(x.shape == (3, 5) for x in out.values())
    empty = PMPS()(torch.zeros(0, 4, 4, 4, 4), 5, nms_radius=1.0)
    assert all(x.shape == (0, 5) for x in empty.values())
    with pytest.raises(ValueError, match="odd"):
        PMPS(L=4)


class _FullGreedyPass(PMPS):
    """The reference: greedy one-to-one over every cell, then NMS (what PMPS computed before the prefix search)."""

    def _greedy_then_nms(self, scores, k, n_all, min_score, nms_radius, ws, wt):
        from sc_imagenet.matching.pmps import _flat_to_xy, greedy_one_to_one, nms_pairs

        src, trg, score = greedy_one_to_one(scores, n_all, min_score)
        keep = nms_pairs(_flat_to_xy(src, ws), _flat_to_xy(trg, wt), score, nms_radius, self.nms_mode, src >= 0,
                         max_keep=k)
        return src, trg, score, keep


@pytest.mark.parametrize("k", [1, 4, 16, 64])
@pytest.mark.parametrize("radius", [0.5, 1.0, 2.5, 6.0])
def test_pmps_prefix_search_equals_the_full_greedy_pass(k: int, radius: float) -> None:
    """The greedy pass stops at a prefix that already holds k NMS survivors: same pairs, scores and order as
    running it over every cell — also with ties, sparse foreground and radii that leave fewer than k."""
    gen = torch.Generator().manual_seed(k * 100 + int(radius * 10))
    for trial in range(3):
        grid_s, grid_t = (9, 11), (10, 8)
        v = torch.rand(2, *grid_s, *grid_t, generator=gen)
        if trial == 1:
            v = (v * 4).round() / 4  # many ties
        fg_s = (torch.rand(2, *grid_s, generator=gen) > 0.6).float() if trial == 2 else None
        fg_t = (torch.rand(2, *grid_t, generator=gen) > 0.6).float() if trial == 2 else None
        for use_hough in (True, False):
            fast = PMPS(L=3, use_hough=use_hough, appearance="softmax")(v, k, fg_s, fg_t, nms_radius=radius)
            full = _FullGreedyPass(L=3, use_hough=use_hough, appearance="softmax")(v, k, fg_s, fg_t,
                                                                                 nms_radius=radius)
            for key in ("src_idx", "trg_idx", "score"):
                assert torch.equal(fast[key], full[key]), (key, trial, use_hough)
