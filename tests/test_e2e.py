"""End to end through the real deployment path: a Prefect server (SQLite, temporary PREFECT_HOME,
free port), `sc-imagenet serve`, `prefect deployment run build-sc-imagenet/demo --watch`; then a
rerun that skips everything, and a build killed mid-`index` that resumes without redoing shards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import jpeg_bytes, kill_after_first_shard, write_list
from test_build import TINY_TRAIN

from sc_imagenet.build import stage_states
from sc_imagenet.dataset.scimagenet import read_release
from sc_imagenet.io.manifest import list_shards, read_manifest, read_stage_record
from sc_imagenet.orchestration.local import LocalPrefect, free_port
from sc_imagenet.paths import REPO_ROOT
from sc_imagenet.stages import pipeline_order
from sc_imagenet.stages.export import ExportFigures
from sc_imagenet.stages.index import IndexFigures
from sc_imagenet.stages.report import ReportFigures
from sc_imagenet.stages.train import TrainFigures

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("prefect-home")
    with LocalPrefect(home, port=free_port(), ui=False) as server:
        assert server.server_started
        yield server


def _status(out: Path, env: dict[str, str]) -> dict[str, dict]:
    res = subprocess.run([BIN / "sc-imagenet", "status", "--out", str(out), "--json"], env=env,
                         capture_output=True, text=True, check=True)
    return {row["stage"]: row for row in json.loads(res.stdout)}


def test_demo_deployment_then_rerun_skips(prefect: LocalPrefect, tmp_path: Path) -> None:
    builds = tmp_path / "builds"
    env = prefect.env(SC_IMAGENET_BUILDS=str(builds))
    prefect.serve(cwd=REPO_ROOT, env=env)
    out = builds / "demo"  # the deployment's default output folder

    # the real demo deployment, with a generator small enough for the test suite's time budget
    # (its 8×8 grid has few candidates per pair: a few keypoints per pair, a lenient point threshold)
    params = {"overrides": json.dumps({"train": {**TINY_TRAIN, "eval_pairs": 6}, "consistency": {"loops": 20},
                                       "select": {"keypoints": 4, "point_threshold": 0.5}})}
    first = prefect.run_deployment("demo", params=params, capture=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Completed" in first.stdout
    status = _status(out, env)
    for stage in pipeline_order():
        assert status[stage]["state"] == "complete" and status[stage]["rows"] > 0, stage
        assert Path(status[stage]["path"]).is_dir()
    export = read_stage_record(out / "manifests" / "export")
    release = ExportFigures.of(export).release_path(out)
    assert release == out / "export" / "SC-ImageNet" and (release / "Layout" / "large" / "trn.txt").is_file()
    assert len(read_release(release, "trn")) + len(read_release(release, "val")) == export.rows
    cats = read_manifest(out / "manifests" / "categories").to_pandas()
    assert cats.keep.sum() >= 6 and set(cats[~cats.keep].reason) == {"scene", "texture"}
    index = read_manifest(out / "manifests" / "index").to_pandas()
    assert set(index.wnid) == set(cats[cats.keep].wnid)
    assert {"truncated", "empty"} <= set(index.status)
    assert {"CMYK", "L"} <= set(index["mode"]) and "PNG" in set(index["format"])
    assert (out / "data" / "_groundtruth" / "meta.json").exists()
    train = TrainFigures.read(out / "manifests" / "train")
    assert train.checkpoint_path(out).is_file() and 0 <= train.pck_01 <= 1
    assert set(train.pck()) == {"generator", "mnn", "nn"}  # the aliases name what train wrote
    # beside, not in, the manifest
    assert train.checkpoint_path(out).parent == out / "artifacts" / "train"
    for stage in status:  # every manifest folder reads as one table (artifacts live elsewhere)
        assert len(pd.read_parquet(out / "manifests" / stage)) == status[stage]["rows"]
    text = subprocess.run([BIN / "sc-imagenet", "status", "--out", str(out)], env=env, capture_output=True,
                          text=True, check=True).stdout
    assert "train: PCK@0.05/0.1 generator" in text and "MNN baseline" in text
    assert "select: strict PCK@0.1" in text and "export: SC-ImageNet release at" in text
    page = ReportFigures.read(out / "manifests" / "report").page_path(out)
    assert page == out / "artifacts" / "report" / "index.html" and page.is_file() and f"report: {page}" in text
    single = read_manifest(out / "manifests" / "single_instance").to_pandas()
    assert len(single) == len(index) and 0.6 < single.keep.mean() < 0.95
    assert single[single.keep].mask_poly.map(len).min() >= 6  # kept images carry their instance mask
    assert (out / "config.resolved.yaml").exists()
    before = {p: p.stat().st_mtime_ns for p in (out / "manifests").rglob("*") if p.is_file()}

    second = prefect.run_deployment("demo", params=params, capture=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:]
    after = {p: p.stat().st_mtime_ns for p in (out / "manifests").rglob("*") if p.is_file()}
    assert after == before  # every stage skipped: not one manifest file rewritten

    moved = tmp_path / "moved" / "demo"  # a moved demo build (its data inside it) stays complete and whole
    shutil.copytree(out, moved, symlinks=True)
    assert {s["state"] for s in stage_states(moved, verify=True)} == {"complete"}


def _slow_tree(root: Path, categories: int, files: int) -> list[str]:
    blob = jpeg_bytes(384, 384, seed=1)
    wnids = [f"n7{c:07d}" for c in range(categories)]
    for wnid in wnids:
        (root / wnid).mkdir(parents=True)
        for i in range(files):
            (root / wnid / f"{wnid}_{i}.JPEG").write_bytes(blob)
    return wnids


def test_killed_index_resumes_without_redoing_shards(prefect: LocalPrefect, tmp_path: Path) -> None:
    wnids = _slow_tree(tmp_path / "data", categories=10, files=250)
    lst = write_list(tmp_path / "list.csv", [(w, w, 1, "", "") for w in wnids])
    profile = tmp_path / "kill.yaml"
    profile.write_text(yaml.safe_dump({
        "data": {"source": "folder", "root": str(tmp_path / "data")},
        "categories": {"list": str(lst)},
        "index": {"workers": 1, "verify": "full"},
    }))
    out = tmp_path / "out"
    cmd = [str(BIN / "sc-imagenet"), "build", "--config", str(profile), "--out", str(out),
           "--stages", "categories,index"]
    env = prefect.env()
    index_dir = out / "manifests" / "index"
    done_before = kill_after_first_shard(cmd, index_dir, env)
    assert 1 <= len(done_before) < len(wnids)
    assert read_stage_record(index_dir) is None  # not complete
    assert read_stage_record(out / "manifests" / "categories") is not None

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = read_stage_record(index_dir)
    assert record is not None and record.rows == 10 * 250
    assert IndexFigures.of(record).shards_skipped == len(done_before)
    for path, mtime in done_before.items():
        assert path.stat().st_mtime_ns == mtime  # finished shards were not redone
    assert len(list_shards(index_dir)) == len(wnids)
    assert not list(index_dir.rglob(".*.tmp"))
