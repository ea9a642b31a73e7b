"""Build planning and resume without Prefect: skip, rerun on change, force, shard-level resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import make_image_tree, write_bad_files, write_list

from sc_imagenet.build import (
    StageInputError,
    compute_fingerprints,
    execute_stage,
    plan_build,
    run_build_locally,
    stage_states,
)
from sc_imagenet.config import ConfigError, load_config
from sc_imagenet.io.manifest import read_manifest, read_stage_record
from sc_imagenet.stages import STAGES, downstream_of, pipeline_order
from sc_imagenet.stages.index import IndexFigures

# a generator small enough to train in seconds on CPU
TINY_TRAIN = {"backbone": "dense-sift", "input_size": 64, "region_input_size": 32, "region_pairs": 3,
              "pixel_pairs": 4, "window": 3, "batch_size": 2, "max_steps": 2, "eval_pairs": 0,
              "mvam": {"dim": 16, "heads": 2, "agg_channels": 4}, "foreground": "box"}


@pytest.fixture
def project(tmp_path: Path) -> dict:
    root = make_image_tree(tmp_path / "data", {"n1": 5, "n2": 4, "n3": 3, "n4": 2})
    write_bad_files(root / "n2")
    lst = write_list(tmp_path / "list.csv", [("n1", "one", 1, "", ""), ("n2", "two", 1, "", ""),
                                               ("n3", "three", 1, "", ""), ("n4", "lake", 0, "scene", "a place")])
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"data": {"source": "folder", "root": str(root)},
                                       "categories": {"list": str(lst)}, "index": {"workers": 1},
                                       "detect": {"weights": "demo-yolo-seg", "imgsz": 160, "batch": 8},
                                       "train": TINY_TRAIN}))
    return {"root": root, "profile": str(profile), "out": tmp_path / "out"}


# random-noise images have no objects, so nothing reaches `train`; tests/test_train.py covers it
PRE_TRAIN = ["categories", "index", "detect", "single_instance"]


def _build(project: dict, overrides: dict | None = None, **kw):
    kw.setdefault("stages", PRE_TRAIN)
    cfg = load_config(project["profile"], overrides)
    plan = plan_build(cfg, project["profile"], project["out"], **kw)
    return plan, run_build_locally(plan, log=lambda m: None, progress=False)


def test_first_build_writes_manifests_then_rerun_skips_everything(project: dict) -> None:
    plan, results = _build(project)
    assert [r.stage for r in results] == PRE_TRAIN and not any(r.skipped for r in results)
    cats = read_manifest(plan.stage_dir("categories")).to_pandas().set_index("wnid")
    assert cats.keep.sum() == 3 and cats.loc["n4", "reason"] == "scene" and cats.loc["n1", "n_images"] == 5
    index = read_manifest(plan.stage_dir("index")).to_pandas()
    assert len(index) == 5 + 4 + 11 + 3 and set(index.wnid) == {"n1", "n2", "n3"}
    rec = read_stage_record(plan.stage_dir("index"))
    assert rec.rows_by_status["ok"] == 5 + 4 + 4 + 3 and rec.rows_by_status["truncated"] == 1
    assert rec.inputs == {"categories": plan.fingerprints["categories"]}
    assert (plan.out_dir / "config.resolved.yaml").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in plan.out_dir.rglob("*.parquet")}

    _, again = _build(project)
    assert all(r.skipped for r in again)
    assert {p: p.stat().st_mtime_ns for p in plan.out_dir.rglob("*.parquet")} == mtimes
    assert [s["state"] for s in stage_states(plan.out_dir)] == [
        "complete" if name in PRE_TRAIN else "missing" for name in pipeline_order()]


def test_changed_setting_reruns_that_stage_and_downstream_only(project: dict) -> None:
    plan, _ = _build(project)
    _, results = _build(project, {"index": {"verify": "header"}})
    assert {r.stage: r.skipped for r in results} == {"categories": True, "index": False, "detect": False,
                                                     "single_instance": False}
    index = read_manifest(plan.stage_dir("index")).to_pandas()
    assert "truncated" not in set(index.status)  # header mode cannot see truncation
    # a setting that changes how but not what (workers) keeps everything
    _, results = _build(project, {"index": {"verify": "header", "workers": 2}})
    assert all(r.skipped for r in results)


def test_force_reruns_stage_and_downstream(project: dict) -> None:
    _build(project)
    assert downstream_of("categories") == pipeline_order()
    down = downstream_of("detect")
    assert down[:3] == ["detect", "single_instance", "train"] and {"export", "report"} <= set(down)
    assert not {"categories", "index"} & set(down)
    # downstream = the stage and every stage with an input downstream, in pipeline order
    assert all((name in down) == (name == "detect" or any(i in down for i in STAGES[name].inputs))
               for name in pipeline_order())
    _, results = _build(project, force="categories")
    assert not any(r.skipped for r in results)
    _, results = _build(project, force="index")
    assert [r.skipped for r in results] == [True, False, False, False]


def test_stage_needs_current_inputs(project: dict) -> None:
    cfg = load_config(project["profile"])
    plan = plan_build(cfg, project["profile"], project["out"], stages="index")
    with pytest.raises(StageInputError, match="needs stage 'categories'"):
        execute_stage(plan, "index", log=lambda m: None, progress=False)


def test_shard_level_resume_keeps_finished_shards(project: dict) -> None:
    plan, _ = _build(project)
    index_dir = plan.stage_dir("index")
    keep = index_dir / "wnid=n1" / "part-00000.parquet"
    redo = index_dir / "wnid=n3" / "part-00000.parquet"
    before = keep.stat().st_mtime_ns
    # simulate a crash after n1 finished and before n3 and the record were written
    (index_dir / "_stage.json").unlink()
    redo.unlink()
    (redo.parent / ".part-00000.parquet.999.tmp").write_bytes(b"torn")
    _, results = _build(project)
    assert IndexFigures.of(results[1].record).shards_skipped == 2
    assert [r.skipped for r in results] == [True, False, True, True]  # same fingerprint: downstream stays
    assert keep.stat().st_mtime_ns == before and redo.exists()
    assert not list(index_dir.rglob(".*.tmp"))
    assert results[1].record.rows == 23


def test_stale_state_when_upstream_rebuilt(project: dict) -> None:
    plan, _ = _build(project)
    _build(project, {"categories": {"unlisted": "keep"}}, stages="categories")
    assert [s["state"] for s in stage_states(plan.out_dir)] == ["complete", "stale", "stale", "stale"] + ["missing"] * 7


def test_bad_plans_fail_before_work(project: dict, tmp_path: Path) -> None:
    cfg = load_config(project["profile"])
    with pytest.raises(ConfigError, match="unknown stage"):
        plan_build(cfg, "p", tmp_path / "o", stages="index,labels")
    cfg = load_config(project["profile"], {"data": {"root": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match=r"data\.root"):
        plan_build(cfg, "p", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    cfg = load_config("imagenet")
    with pytest.raises(ConfigError, match=r"data\.root: required"):
        plan_build(cfg, "imagenet", tmp_path / "o")


def test_status_is_unknown_when_a_fingerprint_cannot_be_computed(project: dict, tmp_path: Path) -> None:
    """A record whose expected fingerprint cannot be computed where `status` runs (here: the category
    list it was built from is gone) is `unknown` with the reason, never `complete`."""
    plan, _ = _build(project, stages=["categories", "index"])
    cfg = load_config(project["profile"])
    Path(cfg.categories.list).unlink()
    states = {s["stage"]: s for s in stage_states(plan.out_dir)}
    assert states["categories"]["state"] == "unknown" and "file not found" in states["categories"]["reason"]
    assert states["index"]["state"] == "unknown" and "cannot be resolved" in states["index"]["reason"]
    assert states["detect"]["state"] == "missing" and states["detect"]["reason"] is None


def test_torn_temp_files_of_a_killed_run_are_removed_from_artifacts_too(project: dict) -> None:
    """A run killed while writing a checkpoint leaves `.<name>.<pid>.tmp` in the stage's artifacts; the
    next run of the stage removes it, like torn shard files in the manifest folder."""
    cfg = load_config(project["profile"])
    plan = plan_build(cfg, project["profile"], project["out"], stages=["categories"])
    torn = plan.artifact_dir("categories") / "checkpoints" / ".step-00000002.pt.4242.tmp"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"half a checkpoint")
    run_build_locally(plan, log=lambda m: None, progress=False)
    assert not torn.exists()


def test_synthetic_data_knobs_enter_the_fingerprints_of_the_stages_that_read_images(tmp_path: Path) -> None:
    # other knobs make another dataset in the same `<out>/data` (once the old one is deleted): the path alone
    # would keep the old manifests current
    def fps(source: str, images: int) -> dict[str, str | None]:
        cfg = load_config("demo", {"data": {"source": source, "root": str(tmp_path / "data"),
                                            "synthetic": {"images_per_category": images}}})
        return compute_fingerprints(cfg, tmp_path / "data", tmp_path / "out", required={"categories", "index"})

    small, large = fps("synthetic", 40), fps("synthetic", 41)
    assert small["categories"] != large["categories"] and small["index"] != large["index"]
    assert all(small[s] != large[s] for s in pipeline_order() if small[s] is not None)
    assert fps("folder", 40)["categories"] == fps("folder", 41)["categories"]  # a folder is what it holds
