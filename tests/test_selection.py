"""Selection and quality functions of the dataset half (sc_imagenet/dataset/selection.py, quality.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sc_imagenet.dataset.quality import LabelTruth, TruthOracle, spearman, summarize
from sc_imagenet.dataset.selection import (
    choose_points,
    passing_counts,
    rank_within,
    select_top,
    top_count,
    val_groups,
)
from sc_imagenet.evaluate.pairs import sample_eval_pairs, sample_object_points
from sc_imagenet.synth import SynthConfig, generate_dataset, true_correspondence


class TestSelectTop:
    def test_top_count_rounds_half_up_and_keeps_one(self) -> None:
        assert [top_count(n, 0.3) for n in (0, 1, 3, 5, 10, 11)] == [0, 1, 1, 2, 3, 3]
        assert top_count(4, 1.0) == 4

    def test_per_scope_nan_last_ties_by_id(self) -> None:
        scores = np.array([0.5, np.nan, 0.9, 0.5, 0.1, 0.7])
        scopes = ["a", "a", "a", "a", "b", "b"]
        ids = ["a3", "a1", "a2", "a0", "b0", "b1"]
        ranks = rank_within(scores, scopes, ids)
        assert ranks.tolist() == [2, 3, 0, 1, 1, 0]
        keep, _ = select_top(scores, scopes, ids, 0.5)
        assert keep.tolist() == [False, False, True, True, False, True]

    def test_order_of_input_does_not_matter(self) -> None:
        rng = np.random.default_rng(0)
        scores = rng.random(50)
        ids = [f"i{k:02d}" for k in range(50)]
        scopes = ["c"] * 50
        keep, _ = select_top(scores, scopes, ids, 0.3)
        perm = rng.permutation(50)
        keep2, _ = select_top(scores[perm], scopes, [ids[p] for p in perm], 0.3)
        assert {ids[p] for p, k in zip(perm, keep2, strict=True) if k} == {i for i, k in zip(ids, keep, strict=True)
                                                                            if k}
        assert keep.sum() == 15


class TestValGroups:
    def test_fraction_and_determinism(self) -> None:
        groups = [(f"n{c}", g, 20) for c in range(5) for g in range(4)]
        val = val_groups(groups, 0.1, seed=3)
        assert len(val) == 2 and val == val_groups(groups, 0.1, seed=3)
        assert val != val_groups(groups, 0.1, seed=4) or len(groups) < 3
        assert val_groups(groups, 0.0, 3) == set() and val_groups([], 0.5, 3) == set()

    def test_never_more_than_the_nearest_fraction(self) -> None:
        groups = [("n1", 0, 16), ("n1", 1, 16)]
        assert val_groups(groups, 0.1, 0) == set()  # one group would be 50 %: further from 10 % than none


class TestChoosePoints:
    def test_lowest_offsets_under_threshold(self) -> None:
        off = np.array([0.3, 0.01, np.nan, 0.05, 0.02, 0.09])
        pick, n_ok = choose_points(off, 0.1, 3)
        assert pick.tolist() == [1, 4, 3] and n_ok == 4
        assert choose_points(off, 0.1, 5) == (None, 4)
        assert choose_points(np.zeros(0), 0.1, 1) == (None, 0)


class TestQuality:
    def test_spearman_known_answers(self) -> None:
        assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
        assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
        assert np.isnan(spearman([1, 2], [1, 2]))

    def test_summarize_strict_and_on_object(self) -> None:
        a = LabelTruth(np.array([True, True, False, True]), np.array([0.01, 0.2, np.inf, 0.07]))
        b = LabelTruth(np.array([True, True]), np.array([0.0, 0.04]))
        out = summarize([a, b])
        assert out["points"] == 6 and out["pairs"] == 2
        assert out["strict_pck@0.1"] == pytest.approx(4 / 6, abs=1e-4)
        assert out["strict_pck@0.05"] == pytest.approx(3 / 6, abs=1e-4)
        assert out["on_object"] == pytest.approx(5 / 6, abs=1e-4)
        assert out["on_object_pck@0.1"] == pytest.approx(4 / 5, abs=1e-4)
        assert out["strict_pck_per_pair@0.1"] == pytest.approx((2 / 4 + 1) / 2, abs=1e-4)
        lo, hi = out["strict_pck@0.1_ci95"]
        assert 0 <= lo <= out["strict_pck@0.1"] <= hi <= 1
        assert summarize([])["points"] == 0

    def test_oracle_scores_true_matches_and_background(self, tmp_path: Path) -> None:
        root = tmp_path / "synth"
        generate_dataset(root, SynthConfig(seed=2, images_per_category=4, include_broken=False), progress=False)
        pair = sample_eval_pairs(root, 1, seed=0)[0]
        pts = sample_object_points(root, pair.src_id, 20, seed=0)
        true, valid = true_correspondence(root, pair.src_id, pair.trg_id, pts)
        oracle = TruthOracle(root)
        exact = oracle.truth(pair.src_id, pair.trg_id, pts[valid], true[valid])
        assert exact.on_object.all() and np.allclose(exact.error, 0, atol=1e-5)
        corner = oracle.truth(pair.src_id, pair.trg_id, np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]))
        assert not corner.on_object[0] and np.isinf(corner.error[0])  # the background: never correct
        shifted = oracle.truth(pair.src_id, pair.trg_id, pts[valid], true[valid] + [oracle.object_size(pair.trg_id)
                                                                                     * 0.2, 0])
        assert np.allclose(shifted.error, 0.2, atol=1e-4)


def test_frame_helpers_do_not_depend_on_pandas_index() -> None:
    frame = pd.DataFrame({"x": [3.0, 1.0, 2.0]}, index=[7, 8, 9])
    assert spearman(frame["x"], [3, 1, 2]) == pytest.approx(1.0)


def test_passing_counts_are_choose_points_counts_for_many_edges() -> None:
    rng = np.random.default_rng(7)
    lists = [rng.random(n).round(2) for n in (5, 0, 64, 1)] + [None, [np.nan, 0.05, np.inf, 0.1]]
    lists[2][::9] = np.nan
    got = passing_counts(lists, 0.1)
    assert got.tolist() == [choose_points(np.asarray(v if v is not None else [], float), 0.1, 1)[1] for v in lists]
    assert got[-1] == 2 and got[4] == 0 and got.dtype == np.int64
    assert passing_counts([None, []], 0.1).tolist() == [0, 0] and passing_counts([], 0.1).shape == (0,)
