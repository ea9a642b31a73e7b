"""Scale-out on Dask: runner options checked before work, a category shard task that is idempotent, a
partial stage's shard count in `status`, and (slow) a build through Prefect + a real Dask LocalCluster
whose manifests equal the sequential build's, shard by shard."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_build import project  # noqa: F401 (fixture)
from test_dataset_stages import DATASET
from test_label import build_profile

from sc_imagenet.build import execute_shard, execute_stage, plan_build, run_build_locally, stage_states
from sc_imagenet.build_summary import build_summary_rows
from sc_imagenet.cli import main
from sc_imagenet.config import ConfigError, load_config
from sc_imagenet.io.manifest import content_hash, list_shards, read_stage_record, shard_path
from sc_imagenet.orchestration.scale_out import RunnerOptions
from sc_imagenet.stages import STAGES, base, pipeline_order
from sc_imagenet.stages.base import ShardedStage, StageFigures
from sc_imagenet.stages.index import IndexFigures
from sc_imagenet.stages.schema import volatile_columns

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("options", "names"), [
    (RunnerOptions("spark"), "--runner"),
    (RunnerOptions("sequential", "tcp://scheduler:8786"), "--dask-address"),
    (RunnerOptions("dask", "scheduler:8786"), "--dask-address"),
    (RunnerOptions("dask", "tcp://scheduler:99999"), "--dask-address"),
    (RunnerOptions("dask", dask_workers=0), "--dask-workers"),
])
def test_bad_runner_options_name_the_option(options: RunnerOptions, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        options.checked()


def test_runner_options_accept_an_address_and_a_local_cluster() -> None:
    assert RunnerOptions("dask", "tcp://dask-scheduler:8786").checked().dask_address == "tcp://dask-scheduler:8786"
    assert RunnerOptions("dask", "tls://[::1]:8786").checked().runner == "dask"
    assert RunnerOptions("dask", dask_workers=4).checked().dask_workers == 4


@pytest.mark.parametrize("args", [["--runner", "spark"], ["--runner", "dask", "--no-prefect"],
                                  ["--runner", "dask", "--dask-workers", "0"],
                                  ["--dask-address", "tcp://h:8786"]])
def test_cli_rejects_bad_runner_options_before_work(args: list[str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["build", "--config", "demo", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("--runner" in err or "--dask" in err), err
    assert not out.exists()  # nothing started: no lock, no data, no manifest


def _plan(project: dict, stages: list[str]):  # noqa: F811 (fixture name)
    return plan_build(load_config(project["profile"]), project["profile"], project["out"], stages=stages)


def test_shard_task_is_idempotent(project: dict) -> None:  # noqa: F811
    """Run twice (a Prefect retry, a Dask worker lost after writing): the second only counts; rerun after
    the file is lost (a crash before the rename): the same bytes again. A current shard loads no model."""
    plan = _plan(project, ["categories", "index", "detect"])
    for name in ("categories", "index"):
        execute_stage(plan, name, log=lambda m: None, progress=False)
    first = execute_shard(plan, "detect", "n2", log=lambda m: None)
    path = shard_path(plan.stage_dir("detect"), "n2")
    data, mtime = path.read_bytes(), path.stat().st_mtime_ns
    assert not first.skipped and first.rows == sum(first.by_status.values()) > 0
    base._PROCESS_STATE.clear()  # a fresh worker process
    again = execute_shard(plan, "detect", "n2", log=lambda m: None)
    assert again.skipped and (again.rows, again.by_status) == (first.rows, first.by_status)
    assert path.stat().st_mtime_ns == mtime and "detect" not in base._PROCESS_STATE  # no work, no detector
    path.unlink()
    rerun = execute_shard(plan, "detect", "n2", log=lambda m: None)
    assert not rerun.skipped and path.read_bytes() == data
    assert not list(plan.stage_dir("detect").rglob(".*.tmp"))
    with pytest.raises(ValueError, match="not category-sharded"):
        execute_shard(plan, "single_instance", "n2")


def test_partial_stage_shows_shards_done_of_expected(project: dict, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    plan = _plan(project, ["categories", "index"])
    execute_stage(plan, "categories", log=lambda m: None, progress=False)
    assert read_stage_record(plan.stage_dir("index")) is None
    execute_shard(plan, "index", "n3")  # one category task finished, the flow not yet at finalize
    state = {s["stage"]: s for s in stage_states(plan.out_dir)}["index"]
    assert (state["state"], state["shards_done"], state["shards_expected"]) == ("partial", 1, 3)
    row = {r["stage"]: r for r in build_summary_rows(plan.out_dir)}["index"]
    assert row["state"] == "partial (1/3 shards)"
    assert main(["status", "--out", str(plan.out_dir)]) == 0
    assert "partial (1/3 shards)" in capsys.readouterr().out
    # the finalize step: the finished category is kept, the others written, `_stage.json` last
    result = execute_stage(plan, "index", log=lambda m: None, progress=False)
    assert IndexFigures.of(result.record).shards_skipped == 1 and result.record.shards == 3
    assert {s["stage"]: s for s in stage_states(plan.out_dir)}["index"]["shards_done"] is None


def test_partial_stage_without_known_upstream_counts_what_is_done(project: dict) -> None:  # noqa: F811
    plan = _plan(project, ["categories", "index"])
    run_build_locally(plan, log=lambda m: None, progress=False)
    (plan.stage_dir("categories") / "_stage.json").unlink()  # the upstream no longer says which categories
    (plan.stage_dir("index") / "_stage.json").unlink()
    state = {s["stage"]: s for s in stage_states(plan.out_dir)}["index"]
    assert (state["state"], state["shards_done"], state["shards_expected"]) == ("partial", 3, None)
    assert {r["stage"]: r for r in build_summary_rows(plan.out_dir)}["index"]["state"] == "partial (3 shards)"


SHARDED = [name for name in STAGES if isinstance(STAGES[name], ShardedStage)]


def test_the_heavy_stages_are_sharded_and_train_is_not() -> None:
    assert {"index", "detect", "label", "consistency", "pairs"} <= set(SHARDED) and "train" not in SHARDED


@pytest.mark.slow
def test_dask_build_equals_sequential_build(tmp_path: Path) -> None:
    """The tiny synthetic build through `export` twice: sequentially (no Prefect) and through the Prefect flow
    with `--runner dask` on a LocalCluster of 2 worker processes. Every stage records the same content hash
    and every shard holds the same rows; the sharded stages really ran on both workers."""
    from sc_imagenet.orchestration.local import LocalPrefect, free_port

    profile = build_profile(tmp_path / "p")
    doc = yaml.safe_load(profile.read_text())
    profile.write_text(yaml.safe_dump({**doc, **DATASET, "label": {**doc["label"], **DATASET["label"]}}))
    stages = [name for name in pipeline_order() if name != "report"]
    # both builds in fresh processes, as users run them (the test process's own state, e.g. a torch thread count
    # another test left behind, would otherwise leak into the sequential one)
    seq = plan_build(load_config(str(profile)), "tiny", tmp_path / "sequential", stages=stages)
    res = subprocess.run([BIN / "sc-imagenet", "build", "--config", str(profile), "--out", str(seq.out_dir),
                          "--stages", ",".join(stages), "--no-prefect"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    out = tmp_path / "dask"
    with LocalPrefect(tmp_path / "prefect-home", port=free_port(), ui=False) as prefect:
        res = subprocess.run([BIN / "sc-imagenet", "build", "--config", str(profile), "--out", str(out),
                              "--stages", ",".join(stages), "--runner", "dask", "--dask-workers", "2"],
                             env=prefect.env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in stages:
        a, b = read_stage_record(seq.stage_dir(name)), read_stage_record(out / "manifests" / name)
        assert b is not None and a.content_hash == b.content_hash, name
        sa, sb = list_shards(seq.stage_dir(name)), list_shards(out / "manifests" / name)
        assert [p.relative_to(seq.stage_dir(name)) for p in sa] == [p.relative_to(out / "manifests" / name)
                                                                    for p in sb], name
        drop = volatile_columns(STAGES[name].schema)
        for pa_, pb in zip(sa, sb, strict=True):
            assert content_hash(pa_.parent, [pa_], drop) == content_hash(pb.parent, [pb], drop), pb
        if name in SHARDED:
            # three categories over two single-threaded worker processes (index's are too quick to be sure)
            # the build's own figures, which every stage's model holds
            assert StageFigures.of(b).shard_workers == 2 or name == "index", name
            assert StageFigures.of(a).shard_workers is None


@pytest.mark.parametrize("gpus", [True, False])
def test_gpu_stages_are_annotated_only_where_workers_advertise_a_gpu(project: dict, gpus: bool) -> None:  # noqa: F811
    """detect and label ask for `GPU=1` unless their device is `cpu`, and only on a cluster with a worker that
    advertises the resource (a real cluster: a LocalCluster without it would never place them)."""
    from distributed import LocalCluster

    from sc_imagenet.orchestration.scale_out import DaskShards, stage_wants_gpu

    plan = _plan(project, ["categories"])
    assert stage_wants_gpu("detect", plan) == (plan.cfg.detect.device != "cpu")
    assert not stage_wants_gpu("index", plan) and not stage_wants_gpu("consistency", plan)
    cpu_plan = plan_build(load_config(project["profile"], {"detect": {"device": "cpu"}, "label": {"device": "cpu"}}),
                          project["profile"], project["out"], stages=["categories"])
    assert not stage_wants_gpu("detect", cpu_plan) and not stage_wants_gpu("label", cpu_plan)
    kwargs = {"resources": {"GPU": 1}} if gpus else {}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", dashboard_address=None,
                      **kwargs) as cluster:
        shards = DaskShards(RunnerOptions("dask", cluster.scheduler_address).checked(), plan, lambda m: None)
        try:
            assert shards.cluster_has_gpus() == gpus
        finally:
            shards.close()
