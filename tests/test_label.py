"""Stage `label` on a tiny synthetic build (categories → train in seconds): the pair graph's edges, flows
and candidates, one implementation with `PseudoLabelGenerator.flow`/`match`, per-category resume, and the rows of
images that get no edges."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from sc_imagenet.build import execute_stage, plan_build, run_build_locally
from sc_imagenet.config import BuildConfig, ConfigError, load_config
from sc_imagenet.dataset.graph import group_sizes, pair_groups
from sc_imagenet.foreground.geometry import MaskAtlas, points_on_mask
from sc_imagenet.io.images import load_rgb
from sc_imagenet.io.manifest import ShardWriter, read_manifest, shard_fingerprint, shard_path
from sc_imagenet.matching.builder import load_generator
from sc_imagenet.matching.cascade import grid_masks
from sc_imagenet.matching.geometry import pixels_to_index
from sc_imagenet.matching.predictor import PairLabel
from sc_imagenet.stages.label import LabelFigures, LabelStage, keep_on_foreground
from sc_imagenet.stages.single_instance import SingleInstanceStage, foreground_provider
from sc_imagenet.stages.train import TrainFigures

TINY_TRAIN = {"backbone": "dense-sift", "input_size": 64, "region_input_size": 32, "region_pairs": 3,
              "pixel_pairs": 4, "window": 3, "batch_size": 2, "max_steps": 2, "eval_pairs": 0, "device": "cpu",
              "mvam": {"dim": 16, "heads": 2, "agg_channels": 4}, "foreground": "box"}
# small batches, so that a group's images take several backbone batches and its edges several pair batches
LABEL = {"group_size": 4, "candidates": 8, "batch_images": 2, "batch_pairs": 5}


def build_profile(tmp: Path) -> Path:
    """The profile of `build_project` (written, nothing built)."""
    tmp.mkdir(parents=True, exist_ok=True)
    profile = tmp / "p.yaml"
    profile.write_text(yaml.safe_dump({
        "data": {"source": "synthetic", "root": str(tmp / "data"),
                 "synthetic": {"seed": 6, "images_per_category": 8, "n_object_categories": 3, "min_size": 96,
                               "max_size": 160, "include_non_object": False, "include_broken": False}},
        "categories": {"list": None}, "index": {"workers": 1},
        "detect": {"weights": "demo-yolo-seg", "imgsz": 320}, "single_instance": {"threshold": 0.5},
        "train": TINY_TRAIN, "label": LABEL}))
    return profile


def build_project(tmp: Path) -> dict:
    """A synthetic build through `train` (3 categories of 8 images; ~6 kept each)."""
    profile = build_profile(tmp)
    project = {"profile": str(profile), "out": tmp / "out", "data": tmp / "data"}
    plan = plan_build(load_config(str(profile)), "tiny", project["out"], stages=["categories", "index", "detect",
                                                                                   "single_instance", "train"])
    run_build_locally(plan, log=lambda m: None, progress=False)
    return project


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_project(tmp_path_factory.mktemp("label-build"))


def copy_out(project: dict, tmp_path: Path) -> dict:
    """The built project with its own output folder (the data root, in every fingerprint, is shared)."""
    out = tmp_path / "out"
    shutil.copytree(project["out"], out, ignore=shutil.ignore_patterns("label"))
    return {**project, "out": out}


def run_label(project: dict, overrides: dict | None = None, **kw):
    plan = plan_build(load_config(project["profile"], overrides), "tiny", project["out"], stages=["label"], **kw)
    return plan, execute_stage(plan, "label", log=lambda m: None, progress=False)


def kept_table(plan):
    return read_manifest(plan.stage_dir("single_instance")).to_pandas().query("keep")


def test_every_kept_image_gets_its_edges_flows_and_candidates(built: dict, tmp_path: Path) -> None:
    project = copy_out(built, tmp_path)
    plan, result = run_label(project)
    cfg = plan.cfg
    kept = kept_table(plan)
    df = read_manifest(plan.stage_dir("label")).to_pandas()
    assert set(df.status) == {"ok"} and df.error.isna().all()
    assert set(df.src_id) == set(kept.image_id) and set(df.trg_id) == set(kept.image_id)
    sizes = {w: group_sizes(n, cfg.label.group_size) for w, n in kept.groupby("wnid").size().items()}
    assert len(df) == sum(g * (g - 1) for s in sizes.values() for g in s)
    for wnid, cat in df.groupby("wnid"):
        groups = pair_groups(list(kept[kept.wnid == wnid].image_id), cfg.label.group_size, cfg.seed, wnid)
        assert len(groups) == cat.group.nunique() >= 2
        for gi, g in enumerate(groups):
            assert set(cat[cat.group == gi].src_id) == set(g)
            assert (cat[cat.group == gi].groupby("src_id").size() == len(g) - 1).all()
    ext = LabelFigures.of(result.record)
    assert ext.edges == ext.pair_forwards == len(df) and ext.images == ext.images_encoded == len(kept)
    assert ext.groups == df.groupby(["wnid", "group"]).ngroups and ext.categories == 3
    assert ext.device == "cpu" and ext.seconds_per_edge > 0 and ext.foreground == "box"
    assert result.record.rows_by_status == {"ok": len(df)} and len(result.summary) == 3

    provider = foreground_provider(plan.stage_dir("single_instance"), plan.data_root, "box")
    fg = {i: provider.mask_for(i, (h, w)) for i, h, w in zip(kept.image_id, kept.height, kept.width, strict=True)}
    for r in df.itertuples():
        assert (r.src_width, r.src_height) == tuple(kept.set_index("image_id").loc[r.src_id, ["width", "height"]])
        flow = np.asarray(r.flow, np.float32).reshape(-1, 2)
        assert len(flow) == r.grid_h * r.grid_w == 64 and np.isfinite(flow).all()
        assert (flow >= -0.5 - 0.1).all() and (flow[:, 0] <= r.trg_width - 0.5 + 0.1).all()
        assert (flow[:, 1] <= r.trg_height - 0.5 + 0.1).all()
        src_kps, trg_kps = np.reshape(r.src_kps, (-1, 2)), np.reshape(r.trg_kps, (-1, 2))
        assert 0 < len(r.scores) <= cfg.label.candidates and len(src_kps) == len(trg_kps) == len(r.scores)
        assert (np.diff(r.scores) <= 1e-6).all()
        # on the foreground: every candidate's cell is partly inside the (box) mask
        for kps, img, hw in ((src_kps, r.src_id, (r.src_height, r.src_width)),
                             (trg_kps, r.trg_id, (r.trg_height, r.trg_width))):
            cells = grid_masks([fg[img]], (r.grid_h, r.grid_w), "cpu")[0].flatten().numpy()
            assert (cells[pixels_to_index(kps, (r.grid_h, r.grid_w), hw)] > 0).all()


def test_label_rows_are_the_generators_flow_and_match(built: dict, tmp_path: Path) -> None:
    """One implementation: an edge's stored flow and candidates are `PseudoLabelGenerator.flow`/`match` on that pair."""
    project = copy_out(built, tmp_path)
    plan, _ = run_label(project)
    df = read_manifest(plan.stage_dir("label")).to_pandas()
    paths = dict(zip(*(kept_table(plan)[c] for c in ("image_id", "rel_path")), strict=True))
    gen = load_generator(TrainFigures.read(plan.stage_dir("train")).checkpoint_path(plan.out_dir))
    gen.nms_cells = plan.cfg.label.nms_cells
    provider = foreground_provider(plan.stage_dir("single_instance"), plan.data_root, "box")
    for r in df.iloc[[0, 7, len(df) - 1]].itertuples():
        src, trg = (load_rgb(plan.data_root / paths[i]) for i in (r.src_id, r.trg_id))
        grid, flow = gen.flow(src, trg)
        assert grid == (r.grid_h, r.grid_w)
        np.testing.assert_allclose(np.asarray(r.flow, np.float32).reshape(-1, 2), flow, rtol=1e-3, atol=0.02)
        ms, mt = provider.mask_for(r.src_id, src.shape[:2]), provider.mask_for(r.trg_id, trg.shape[:2])
        s_xy, t_xy, score = gen.match(src, trg, plan.cfg.label.candidates, ms, mt)
        # the stage also drops candidates whose own pixel is off the mask (label.pixel_foreground)
        s_xy, t_xy, score = keep_on_foreground([PairLabel(flow, s_xy, t_xy, score)], [(0, 1)],
                                               MaskAtlas([ms > 0.5, mt > 0.5]))[0][1:]
        assert points_on_mask(ms, s_xy).all() and points_on_mask(mt, t_xy).all()
        np.testing.assert_array_equal(np.reshape(r.src_kps, (-1, 2)), s_xy)
        np.testing.assert_array_equal(np.reshape(r.trg_kps, (-1, 2)), t_xy)
        np.testing.assert_allclose(r.scores, score, rtol=1e-5)


def test_resume_keeps_finished_category_shards(built: dict, tmp_path: Path) -> None:
    project = copy_out(built, tmp_path)
    plan, first = run_label(project)
    sdir = plan.stage_dir("label")
    shards = sorted(sdir.rglob("part-*.parquet"))
    assert len(shards) == 3
    _, again = run_label(project)
    assert again.skipped  # same fingerprint: nothing reruns
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    redo = shards[1]
    redo.unlink()
    (sdir / "_stage.json").unlink()  # a run killed after two categories
    _, resumed = run_label(project)
    figures = LabelFigures.of(resumed.record)
    assert not resumed.skipped and figures.shards_skipped == 2
    assert redo.exists() and shard_fingerprint(redo) == plan.fingerprints["label"]
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in shards if p != redo)
    assert resumed.record.rows == first.record.rows and figures.edges == LabelFigures.of(first.record).edges
    assert figures.pair_forwards == pq.read_metadata(redo).num_rows  # only the redone category
    # a setting that changes what is computed reruns every category
    _, changed = run_label(project, {"label": {**LABEL, "candidates": 4}})
    assert LabelFigures.of(changed.record).shards_skipped == 0
    assert max(len(s) for s in read_manifest(sdir, columns=["scores"]).column("scores").to_pylist()) <= 4


def _rewrite_keep(stage_dir: Path, wnid: str, keep: int) -> list[str]:
    """Keep only the first `keep` kept images of a category in its single_instance shard (fingerprint kept)."""
    path = shard_path(stage_dir, wnid)
    fp = shard_fingerprint(path)
    rows = pq.read_table(path).to_pylist()
    kept = sorted(r["image_id"] for r in rows if r["keep"])[:keep]
    for r in rows:
        r["keep"] = r["image_id"] in kept
    with ShardWriter(path, SingleInstanceStage.schema, fp, SingleInstanceStage.schema_version) as writer:
        writer.write_many(rows)
    return kept


def test_unreadable_images_and_small_categories(tmp_path: Path) -> None:
    """An image corrupted after single_instance gets an `unreadable` row and no edges; a category left with
    fewer than 3 readable kept images gets `too_few_images` rows; one with none gets an empty shard."""
    project = build_project(tmp_path / "p")
    plan = plan_build(load_config(project["profile"]), "tiny", project["out"], stages=["label"])
    si = plan.stage_dir("single_instance")
    kept = kept_table(plan)
    wnids = sorted(kept.wnid.unique())
    paths = dict(zip(kept.image_id, kept.rel_path, strict=True))
    three = _rewrite_keep(si, wnids[2], 3)  # 3 kept, one of them corrupted below: 2 readable
    _rewrite_keep(si, wnids[1], 0)  # nothing kept
    broken = [sorted(kept[kept.wnid == wnids[0]].image_id)[2], three[0]]
    for image_id in broken:
        (plan.data_root / paths[image_id]).write_bytes(b"not an image any more")
    _, result = run_label(project)
    df = read_manifest(plan.stage_dir("label")).to_pandas()
    assert (plan.stage_dir("label") / f"wnid={wnids[1]}" / "part-00000.parquet").exists()
    assert wnids[1] not in set(df.wnid)  # empty shard
    bad = df[df.status == "unreadable"]
    assert sorted(bad.src_id) == sorted(broken) and bad.trg_id.isna().all() and (bad.group == -1).all()
    assert bad.error.str.len().gt(0).all() and bad.flow.isna().all() and bad.src_width.notna().all()
    few = df[df.status == "too_few_images"]
    assert sorted(few.src_id) == sorted(three[1:]) and few.error.str.contains("2 readable").all()
    ok = df[df.status == "ok"]
    assert not set(broken) & (set(ok.src_id) | set(ok.trg_id)) and set(ok.wnid) == {wnids[0]}
    n0 = (kept.wnid == wnids[0]).sum() - 1
    assert len(ok) == sum(g * (g - 1) for g in group_sizes(n0, 4)) and ok.src_id.nunique() == n0
    assert result.record.rows_by_status == dict(Counter(df.status))
    by_wnid = {r["wnid"]: r for r in result.summary}
    assert by_wnid[wnids[1]] == {"wnid": wnids[1], "kept": 0, "images": 0, "groups": 0, "edges": 0,
                                 "unreadable": 0, "too_few_images": 0}
    assert by_wnid[wnids[2]]["unreadable"] == 1 and by_wnid[wnids[2]]["too_few_images"] == 2
    assert LabelFigures.of(result.record).categories_with_edges == 1


def test_foreground_source_none_and_unknown(built: dict, tmp_path: Path) -> None:
    project = copy_out(built, tmp_path)
    _, result = run_label(project, {"label": {**LABEL, "foreground": "none"}})
    figures = LabelFigures.of(result.record)
    assert figures.foreground == "none" and figures.edges > 0
    with pytest.raises(ConfigError, match=r"label\.foreground: unknown foreground source 'nope'"):
        run_label(project, {"label": {**LABEL, "foreground": "nope"}})


def test_unknown_foreground_names_the_setting_it_came_from() -> None:
    """`label.foreground` unset takes `train.foreground` in the config; an unknown name still points at the
    setting to fix."""
    stage, root = LabelStage(), Path("/data")
    with pytest.raises(ConfigError, match=r"^train\.foreground: unknown foreground source 'nope'"):
        stage.fingerprint_payload(BuildConfig(train={"foreground": "nope"}), root)
    with pytest.raises(ConfigError, match=r"^label\.foreground: unknown foreground source 'nope'"):
        stage.fingerprint_payload(BuildConfig(label={"foreground": "nope"}), root)
    assert stage.fingerprint_payload(BuildConfig(train={"foreground": "box"}), root)["foreground"] == "box"


def test_keep_on_foreground_filters_a_batch_like_each_pair_alone() -> None:
    """A batch of pairs, some of whose images have no mask, keeps each pair's candidates whose own source and
    target pixels are on their masks, in order; a pair with nothing off the mask is returned as it came."""
    rng = np.random.default_rng(6)
    masks = [rng.random((20, 30)) > 0.3, None, rng.random((25, 18)) > 0.6]
    pairs = [(0, 1), (1, 2), (2, 0), (1, 1)]
    labels = [PairLabel(np.zeros((0, 2), np.float32), rng.uniform(-2, 30, (n, 2)).astype(np.float32),
                        rng.uniform(-2, 30, (n, 2)).astype(np.float32), rng.random(n).astype(np.float32))
              for n in (12, 9, 0, 5)]
    got = keep_on_foreground(labels, pairs, MaskAtlas(masks))
    for (s, t), label, out in zip(pairs, labels, got, strict=True):
        keep = np.ones(len(label.score), bool)
        for m, xy in ((masks[s], label.src_xy), (masks[t], label.trg_xy)):
            if m is not None:
                keep &= points_on_mask(m, xy)
        np.testing.assert_array_equal(out.src_xy, label.src_xy[keep])
        np.testing.assert_array_equal(out.trg_xy, label.trg_xy[keep])
        np.testing.assert_array_equal(out.score, label.score[keep])
    assert got[3] is labels[3] and 0 < len(got[0].score) < 12
