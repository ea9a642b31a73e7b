"""The `pairs` stage: the selected images grouped again, only new edges labelled, loops inside the new
cliques, one direction per unordered pair; and its pure parts (`regroup`, `one_direction`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_dataset_stages import DATASET, STAGES
from test_label import build_project

from sc_imagenet.build import plan_build, run_build_locally
from sc_imagenet.config import BuildConfig, ConfigError, load_config
from sc_imagenet.dataset.graph import group_sizes, regroup
from sc_imagenet.dataset.selection import one_direction
from sc_imagenet.io.manifest import read_manifest, read_stage_record
from sc_imagenet.stages.pairs import PairsFigures


class TestRegroup:
    def test_first_cliques_stay_together_and_sizes_are_near_equal(self) -> None:
        members = [(f"i{k:02d}", k % 3) for k in range(20)]  # 20 images from three first-graph cliques
        cliques = regroup(members, 7)
        assert [len(c) for c in cliques] == group_sizes(20, 7) == [7, 7, 6]
        assert sorted(i for c in cliques for i in c) == sorted(i for i, _ in members)
        first = dict(members)
        # ordered by first clique: each new clique spans at most two first cliques
        assert all(len({first[i] for i in c}) <= 2 for c in cliques)
        assert regroup(list(reversed(members)), 7) == cliques  # independent of input order

    def test_too_few_images_make_no_clique_and_duplicates_fail(self) -> None:
        assert regroup([("a", 0), ("b", 0)], 15) == []
        with pytest.raises(ValueError, match="unique"):
            regroup([("a", 0), ("a", 1), ("b", 0)], 3)


class TestOneDirection:
    def test_better_score_among_directions_with_enough_points(self) -> None:
        pts = np.arange(2)
        assert one_direction([0.4, 0.7], [pts, pts]) == 1
        assert one_direction([0.9, 0.7], [pts, pts]) == 0
        assert one_direction([0.9, 0.7], [None, pts]) == 1  # the better one lacks keypoints
        assert one_direction([0.5, 0.5], [pts, pts]) == 0  # a tie keeps a → b
        assert one_direction([float("nan"), 0.1], [pts, pts]) == 1
        assert one_direction([0.5, 0.5], [None, None]) is None


def test_group_size_below_a_loop_is_a_config_error() -> None:
    for bad in (1, 2):
        with pytest.raises(ValueError, match="at least 3 images"):
            BuildConfig.model_validate({"pairs": {"group_size": bad}})
    assert BuildConfig().pairs.group_size == 15
    with pytest.raises(ConfigError, match=r"pairs\.group_size"):
        load_config("demo", {"pairs": {"group_size": -1}})


PAIRS = {**DATASET, "pairs": {"group_size": 3}}


@pytest.fixture(scope="module")
def pairs_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny synthetic build with new cliques of 3 selected images (3 categories, ~4 selected each)."""
    project = build_project(tmp_path_factory.mktemp("pairs-build"))
    overrides = {**PAIRS, "select": {**DATASET["select"], "fraction": 0.7}}
    plan = plan_build(load_config(project["profile"], overrides), "tiny", project["out"], stages=STAGES)
    run_build_locally(plan, log=lambda m: None, progress=False)
    return {**project, "plan": plan, "overrides": overrides}


def test_every_unordered_pair_of_a_new_clique_once(pairs_build: dict) -> None:
    plan = pairs_build["plan"]
    pairs = read_manifest(plan.stage_dir("pairs")).to_pandas()
    select = read_manifest(plan.stage_dir("select")).to_pandas()
    label = read_manifest(plan.stage_dir("label")).to_pandas().query("status == 'ok'")
    figures = PairsFigures.read(plan.stage_dir("pairs"))
    ordered_in_cliques = reused = 0
    for wnid, sel in select[select.src_selected].drop_duplicates("src_id").groupby("wnid"):
        cliques = regroup(list(zip(sel.src_id, sel.group.astype(int), strict=True)), 3)
        got = pairs[pairs.wnid == wnid]
        want = {frozenset((a, b)) for c in cliques for a in c for b in c if a < b}
        assert {frozenset(p) for p in zip(got.src_id, got.trg_id, strict=True)} == want
        assert len(got) == len(want)
        first = set(zip(label[label.wnid == wnid].src_id, label[label.wnid == wnid].trg_id, strict=True))
        for c in cliques:
            for a in c:
                for b in c:
                    if a != b:
                        ordered_in_cliques += 1
                        reused += (a, b) in first
    assert figures.edges_reused == reused
    assert figures.edges_labelled == ordered_in_cliques - reused > 0  # only the new edges ran
    kept = pairs[pairs.keep]
    assert len(kept) == figures.pairs > 0
    n_selected = select[select.src_selected].src_id.nunique()
    assert figures.images_selected == n_selected
    assert figures.pairs_per_selected_image == round(len(kept) / n_selected, 3)
    k = pairs_build["overrides"]["select"]["keypoints"]
    assert all(len(v) == 2 * k for v in kept.src_kps) and all(len(v) == 2 * k for v in kept.trg_kps)
    assert set(pairs.reason) <= {"kept", "too_few_consistent_points"}
    split_of = {}
    for r in kept.itertuples():
        for image in (r.src_id, r.trg_id):
            assert split_of.setdefault(image, r.split) == r.split  # no image in both splits


def test_reused_pairs_keep_labels_from_the_first_graph(pairs_build: dict) -> None:
    plan = pairs_build["plan"]
    pairs = read_manifest(plan.stage_dir("pairs")).to_pandas()
    label = read_manifest(plan.stage_dir("label")).to_pandas().query("status == 'ok'").set_index(["src_id", "trg_id"])
    reused = pairs[pairs.keep & pairs.reused]
    for r in reused.itertuples():
        cand = np.asarray(label.loc[(r.src_id, r.trg_id)].src_kps, np.float32).reshape(-1, 2)
        for p in np.asarray(r.src_kps, np.float32).reshape(-1, 2):
            assert (np.abs(cand - p).max(axis=1) == 0).any()  # a keypoint is one of label's candidates


def test_release_holds_the_pairs_and_rerun_is_identical(pairs_build: dict, tmp_path: Path) -> None:
    plan = pairs_build["plan"]
    assert read_stage_record(plan.stage_dir("export")).rows == PairsFigures.read(plan.stage_dir("pairs")).pairs
    out = tmp_path / "again"
    shutil.copytree(plan.out_dir, out, ignore=shutil.ignore_patterns("pairs", "export"))
    again = plan_build(load_config(pairs_build["profile"], pairs_build["overrides"]), "tiny", out, stages=["pairs"])
    run_build_locally(again, log=lambda m: None, progress=False)
    assert read_stage_record(again.stage_dir("pairs")).content_hash == read_stage_record(
        plan.stage_dir("pairs")).content_hash


def test_off_passes_select_pairs_through(pairs_build: dict, tmp_path: Path) -> None:
    plan = pairs_build["plan"]
    out = tmp_path / "off"
    shutil.copytree(plan.out_dir, out, ignore=shutil.ignore_patterns("pairs", "export"))
    overrides = {**pairs_build["overrides"], "pairs": {"group_size": 0}}
    off = plan_build(load_config(pairs_build["profile"], overrides), "tiny", out, stages=["pairs"])
    run_build_locally(off, log=lambda m: None, progress=False)
    got = read_manifest(off.stage_dir("pairs")).to_pandas()
    want = read_manifest(plan.stage_dir("select")).to_pandas().query("keep")
    cols = ["wnid", "src_id", "trg_id", "group", "split", "pair_score", "n_consistent"]
    assert got[cols].reset_index(drop=True).equals(want[cols].reset_index(drop=True))
    assert [list(v) for v in got.src_kps] == [list(v) for v in want.src_kps]
    assert PairsFigures.read(off.stage_dir("pairs")).edges_labelled == 0
