"""label → consistency → select → export on a tiny synthetic build: the selection's invariants, the
quality figures against ground truth, determinism, and the release read back the loaders' way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import kill_after_first_shard
from test_label import build_profile, build_project

from sc_imagenet.build import plan_build, run_build_locally, stage_states
from sc_imagenet.config import load_config
from sc_imagenet.dataset.scimagenet import read_release
from sc_imagenet.dataset.selection import top_count
from sc_imagenet.io.manifest import read_manifest, read_stage_record
from sc_imagenet.stages import select as select_stage
from sc_imagenet.stages.export import ExportFigures
from sc_imagenet.stages.label import LabelFigures
from sc_imagenet.stages.select import SelectFigures, select_pairs

DATASET = {"label": {"group_size": 5, "candidates": 12, "nms_cells": 0},
           "consistency": {"loops": 8, "threshold": 0.3},
           "select": {"fraction": 0.5, "keypoints": 2, "pairs_per_image": 2, "point_threshold": 0.5,
                      "val_fraction": 0.3}}
STAGES = ["label", "consistency", "select", "pairs", "export"]


def build_with_dataset_settings(tmp: Path, stages: list[str]) -> tuple[Path, Path]:
    """`build_project`'s profile with the `DATASET` settings merged in (so a command line can rebuild it with
    `--config` alone), built through `stages`; returns (profile, output folder)."""
    profile = build_profile(tmp)
    doc = yaml.safe_load(profile.read_text())
    for section, values in DATASET.items():
        doc[section] = {**doc.get(section, {}), **values}
    profile.write_text(yaml.safe_dump(doc))
    out = tmp / "out"
    run_build_locally(plan_build(load_config(str(profile)), "tiny", out, stages=stages), log=lambda m: None,
                      progress=False)
    return profile, out


@pytest.fixture(scope="module")
def dataset_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    project = build_project(tmp_path_factory.mktemp("dataset-build"))
    plan = plan_build(load_config(project["profile"], DATASET), "tiny", project["out"], stages=STAGES)
    run_build_locally(plan, log=lambda m: None, progress=False)
    return {**project, "plan": plan}


def test_every_stage_complete_and_quality_recorded(dataset_build: dict) -> None:
    plan = dataset_build["plan"]
    assert {s["stage"] for s in stage_states(plan.out_dir) if s["state"] == "complete"} == {
        *plan.stages, "categories", "index", "detect", "single_instance", "train"}  # `report`: tests/test_report.py
    figures = SelectFigures.read(plan.stage_dir("select"))
    q = figures.quality
    for key in ("candidates", "raw_topk", "filtered_candidates", "exported", "selected_image_pairs",
                "rejected_image_pairs"):
        assert 0 <= q[key].get("strict_pck@0.1", 0) <= 1
    assert set(q["comparison"]) == {"loop3", "loop2", "score", "random", "oracle"}
    assert q["comparison"]["oracle"]["spearman"] == pytest.approx(1.0)
    assert figures.images_selected_category_scope == figures.images_selected
    assert figures.images_selected_global_scope >= 0
    # pairs are counted both ways: every kept row, and distinct unordered image pairs ({a, b} once)
    kept = read_manifest(plan.stage_dir("select")).to_pandas().query("keep")
    unordered = {tuple(sorted(p)) for p in zip(kept.src_id, kept.trg_id, strict=True)}
    assert figures.pairs == len(kept) and figures.pairs_unordered == len(unordered)
    assert figures.pairs_unordered_per_selected_image == round(len(unordered) / figures.images_selected, 3)


def test_selection_invariants(dataset_build: dict) -> None:
    plan = dataset_build["plan"]
    s = plan.cfg.select
    edges = read_manifest(plan.stage_dir("label")).to_pandas()
    edges = edges[edges.status == "ok"]
    sel = read_manifest(plan.stage_dir("select")).to_pandas()
    assert len(sel) == len(edges)  # every edge gets a decision
    images = sel.drop_duplicates("src_id")
    for wnid, group in images.groupby("wnid"):
        assert group.src_selected.sum() == top_count(len(group), s.fraction), wnid
    kept = sel[sel.keep]
    assert len(kept) > 0 and (kept.src_selected & kept.trg_selected).all()
    assert kept.groupby("src_id").size().max() <= s.pairs_per_image
    assert all(len(k) == 2 * s.keypoints for k in kept.src_kps) and all(len(k) == 2 * s.keypoints for k in kept.trg_kps)
    assert set(sel.reason) <= {"kept", "src_not_selected", "trg_not_selected", "too_few_consistent_points",
                               "over_pairs_per_image"}
    # a kept pair's keypoints are the candidates of its edge that `candidates` names, in the generator's
    # confidence order; a dropped pair names none
    lab = edges.set_index(["src_id", "trg_id"])
    for r in kept.itertuples():
        idx = np.asarray(r.candidates)
        for side in ("src_kps", "trg_kps"):
            cand = np.asarray(lab.loc[(r.src_id, r.trg_id), side]).reshape(-1, 2)
            assert (cand[idx] == np.asarray(getattr(r, side)).reshape(-1, 2)).all()
        assert list(idx) == sorted(idx) and len(idx) == s.keypoints
    assert sel[~sel.keep].candidates.isna().all()
    # no image in both splits
    split_of = pd.concat([sel[["src_id", "split"]].rename(columns={"src_id": "id"}),
                          sel[["trg_id", "split"]].rename(columns={"trg_id": "id"})])
    assert split_of.groupby("id")["split"].nunique().max() == 1


def test_release_reads_back_like_the_loaders(dataset_build: dict) -> None:
    plan = dataset_build["plan"]
    record = read_stage_record(plan.stage_dir("export"))
    root = ExportFigures.of(record).release_path(plan.out_dir)
    assert root == plan.out_dir / "export" / "SC-ImageNet"
    kept = read_manifest(plan.stage_dir("pairs")).to_pandas()  # the release's pairs (tests/test_pairs.py)
    kept = kept[kept.keep].set_index(["src_id", "trg_id"])
    pairs = [p for split in ("trn", "val") for p in read_release(root, split)]
    assert len(pairs) == len(kept) == record.rows
    for p in pairs:
        row = kept.loc[(p.annotation["src_image_id"], p.annotation["trg_image_id"])]
        assert p.split == row.split and p.category == row.wnid
        np.testing.assert_allclose(p.src_kps, np.asarray(row.src_kps, np.float32).reshape(-1, 2))
        np.testing.assert_allclose(p.trg_kps, np.asarray(row.trg_kps, np.float32).reshape(-1, 2))
        assert p.src_imsize == (row.src_width, row.src_height)


def test_select_is_deterministic(dataset_build: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same rows again; and each category is decided against its own images alone (a table of the whole
    build's images per category made the stage quadratic in the build's size)."""
    plan = dataset_build["plan"]
    out = tmp_path / "again"
    shutil.copytree(plan.out_dir, out, ignore=shutil.ignore_patterns("select", "pairs", "export"))
    again = plan_build(load_config(dataset_build["profile"], DATASET), "tiny", out, stages=["select"])
    seen: list[tuple[set[str], set[str]]] = []

    def recording(edges: pd.DataFrame, images: pd.DataFrame, *args: object, **kwargs: object) -> list:
        seen.append((set(edges["wnid"]), set(images["wnid"])))
        return select_pairs(edges, images, *args, **kwargs)

    monkeypatch.setattr(select_stage, "select_pairs", recording)
    run_build_locally(again, log=lambda m: None, progress=False)
    assert len(seen) >= 2 and all(len(e) == 1 and i == e for e, i in seen), seen
    cols = ["src_id", "trg_id", "keep", "reason", "split", "src_kps", "trg_kps"]
    a = read_manifest(plan.stage_dir("select")).to_pandas()[cols]
    b = read_manifest(again.stage_dir("select")).to_pandas()[cols]
    assert json.dumps(a.to_dict("records"), default=str) == json.dumps(b.to_dict("records"), default=str)


@pytest.mark.slow
def test_build_killed_during_label_resumes_without_redoing_shards(tmp_path: Path) -> None:
    """SIGKILL while `label` writes its category shards, rerun: finished shards are kept, the stage
    completes, and the later stages run on."""
    import subprocess
    import sys

    import yaml

    from sc_imagenet.io.manifest import list_shards

    profile = tmp_path / "p.yaml"
    profile.write_text(Path(build_profile(tmp_path / "p")).read_text())
    doc = yaml.safe_load(profile.read_text())
    # more categories and a slower pair head than the module build: time to kill between shards
    doc["data"]["synthetic"]["n_object_categories"] = 6
    doc["data"]["root"] = str(tmp_path / "data6")
    doc["label"] = {**DATASET["label"], "batch_pairs": 1}
    profile.write_text(yaml.safe_dump({**doc, **{k: v for k, v in DATASET.items() if k != "label"}}))
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).parent / "sc-imagenet"), "build", "--config", str(profile), "--out", str(out),
           "--no-prefect"]
    first = subprocess.run([*cmd, "--stages", "categories,index,detect,single_instance,train"],
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    label_dir = out / "manifests" / "label"
    done = kill_after_first_shard([*cmd, "--stages", "label"], label_dir)
    assert read_stage_record(label_dir) is None and 1 <= len(done) < 6
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert LabelFigures.read(label_dir).shards_skipped == len(done)
    for path, mtime in done.items():
        assert path.stat().st_mtime_ns == mtime
    assert len(list_shards(label_dir)) == 6 and not list(label_dir.rglob(".*.tmp"))
    assert all(s["state"] == "complete" for s in stage_states(out))


@pytest.mark.slow
def test_same_seed_and_config_give_identical_manifest_content(dataset_build: dict, tmp_path: Path) -> None:
    """A second clean build (own output folder, same data, seed and config) records the same content
    hash for every stage: rows equal, whatever the timings (volatile columns are left out)."""
    first = dataset_build["plan"]
    plan = plan_build(load_config(dataset_build["profile"], DATASET), "tiny", tmp_path / "again")
    run_build_locally(plan, log=lambda m: None, progress=False)
    compared = 0
    for name in plan.stages:
        a, b = read_stage_record(first.stage_dir(name)), read_stage_record(plan.stage_dir(name))
        if a is None:  # the module build stops before `report`
            continue
        assert a.content_hash and a.content_hash == b.content_hash, name
        compared += 1
    assert compared >= 9
