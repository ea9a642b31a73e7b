"""End to end on a real Prefect backend: PostgreSQL as Prefect's database (a throwaway server started from
the machine's binaries), the deployments of prefect.yaml registered with `prefect deploy --all` on the
`sc-imagenet` process work pool, a `prefect worker start --pool sc-imagenet` running them. The demo
deployment completes through the pool; then a run whose `select` stage fails once (tests/hooks/fail_once,
put on the run's PYTHONPATH with per-run job variables) is retried with
`prefect flow-run retry <id>` and completes without redoing the stages that had finished before the failure.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from postgres_server import LocalPostgres, find_bindir
from test_build import TINY_TRAIN

from sc_imagenet.io.manifest import read_stage_record
from sc_imagenet.orchestration.local import WORK_POOL, LocalPrefect, flow_run_id, free_port
from sc_imagenet.paths import REPO_ROOT
from sc_imagenet.stages import downstream_of, pipeline_order

pytestmark = pytest.mark.slow
FAIL_ONCE = Path(__file__).parent / "hooks" / "fail_once"  # a sitecustomize that makes listed stages fail once
BIN = Path(sys.executable).parent

# the same overrides as tests/test_e2e.py: every stage of the demo runs in seconds
OVERRIDES = {"train": {**TINY_TRAIN, "eval_pairs": 6}, "consistency": {"loops": 20},
             "select": {"keypoints": 4, "point_threshold": 0.5}}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory):
    find_bindir()  # PostgresUnavailable names what is missing (`make install` installs PostgreSQL)
    home = tmp_path_factory.mktemp("prefect-pg-home")
    with LocalPostgres() as pg, LocalPrefect(home, port=free_port(), ui=False, database_url=pg.url) as prefect:
        assert prefect.server_started
        prefect.create_work_pool(WORK_POOL)
        prefect.deploy_all(REPO_ROOT)
        prefect.start_worker(WORK_POOL, cwd=home)
        yield pg, prefect


@pytest.fixture(scope="module")
def demo_run(backend, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo deployment, run once through the work pool."""
    _, prefect = backend
    out = tmp_path_factory.mktemp("builds") / "demo"
    res = prefect.run_deployment("demo", params={"out": json.dumps(str(out)), "overrides": json.dumps(OVERRIDES)},
                                 capture=True, timeout=600)
    return {"out": out, "result": res}


def _status(out: Path) -> dict[str, dict]:
    res = subprocess.run([BIN / "sc-imagenet", "status", "--out", str(out), "--json"], capture_output=True,
                         text=True, check=True)
    return {row["stage"]: row for row in json.loads(res.stdout)}


def _pg_rows(url: str, query: str, *args: object) -> list:
    import asyncpg

    async def fetch() -> list:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_demo_deployment_through_work_pool_on_postgres(backend, demo_run: dict) -> None:
    pg, prefect = backend
    res, out = demo_run["result"], demo_run["out"]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Completed" in res.stdout
    run_id = flow_run_id(res.stdout)

    # the deployment is prefect.yaml's: on the process work pool, run from this checkout
    deployment = prefect.deployment("demo")
    assert deployment["work_pool_name"] == WORK_POOL and deployment["parameters"] == {"config": "demo"}
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}]
    run = prefect.flow_run(run_id)
    assert run["state_type"] == "COMPLETED" and run["work_pool_name"] == WORK_POOL
    # ... and Prefect's database is the PostgreSQL server
    rows = _pg_rows(pg.url, "SELECT f.state_type, w.name AS pool FROM flow_run f "
                            "JOIN work_queue q ON q.id = f.work_queue_id JOIN work_pool w ON w.id = q.work_pool_id "
                            "WHERE f.id = $1::uuid", run_id)
    assert rows == [{"state_type": "COMPLETED", "pool": WORK_POOL}]

    status = _status(out)
    for stage in pipeline_order():
        assert status[stage]["state"] == "complete" and status[stage]["rows"] > 0, stage
    assert (out / "data" / "_groundtruth" / "meta.json").exists()


def test_failed_run_retried_resumes(backend, demo_run: dict) -> None:
    _, prefect = backend
    out = demo_run["out"]
    assert demo_run["result"].returncode == 0
    before = _mtimes(out / "manifests")
    consistency_before = read_stage_record(out / "manifests" / "consistency")

    # a changed setting reruns `consistency` and downstream; `select` fails once, after `consistency` finished
    overrides = {**OVERRIDES, "consistency": {"loops": 10}}
    params = {"out": json.dumps(str(out)), "overrides": json.dumps(overrides)}
    failed = prefect.run_deployment("demo", params=params, capture=True, timeout=600,
                                    job_variables={"env": {"PYTHONPATH": str(FAIL_ONCE),
                                                                    "SC_IMAGENET_TEST_FAIL_ONCE": "select"}})
    assert failed.returncode != 0, failed.stdout[-3000:]
    run_id = flow_run_id(failed.stdout)
    run = prefect.flow_run(run_id)
    assert run["state_type"] == "FAILED", run["state"]
    assert (out / ".fail-once-select").exists()
    upstream = [name for name in pipeline_order() if name not in downstream_of("consistency")]
    after_failure = _mtimes(out / "manifests")
    for stage in upstream:  # skipped: not one file rewritten
        assert {p: t for p, t in after_failure.items() if p.is_relative_to(out / "manifests" / stage)} == \
            {p: t for p, t in before.items() if p.is_relative_to(out / "manifests" / stage)}, stage
    consistency = read_stage_record(out / "manifests" / "consistency")  # finished, with the new setting
    assert consistency is not None and consistency.fingerprint != consistency_before.fingerprint
    select = read_stage_record(out / "manifests" / "select")  # it failed before running: its record is stale
    assert select is None or select.input_content["consistency"] != consistency.content_hash
    status = _status(out)
    assert status["consistency"]["state"] == "complete" and status["select"]["state"] != "complete"

    run = prefect.retry_flow_run(run_id, timeout=600)
    assert run["state_type"] == "COMPLETED", (run["state"], (prefect.log_dir / f"worker-{WORK_POOL}.log")
                                              .read_text(errors="replace")[-3000:])
    assert run["run_count"] >= 2 and run["parameters"]["overrides"] == overrides

    final = _mtimes(out / "manifests")
    done_before_failure = [*upstream, "consistency"]
    for stage in done_before_failure:  # the stages that had finished before the failure were skipped
        stage_dir = out / "manifests" / stage
        assert {p: t for p, t in final.items() if p.is_relative_to(stage_dir)} == \
            {p: t for p, t in after_failure.items() if p.is_relative_to(stage_dir)}, stage
    status = _status(out)
    for stage in pipeline_order():
        assert status[stage]["state"] == "complete", stage
    for stage in downstream_of("select"):  # rerun on retry, after the failure
        record = read_stage_record(out / "manifests" / stage)
        assert record.finished_at > consistency.finished_at, stage
