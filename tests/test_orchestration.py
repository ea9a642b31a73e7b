"""The work-pool path's pieces, fast: prefect.yaml in sync with the served deployments, the throwaway
PostgreSQL helper (tests/postgres_server.py), the fail-once wrapper (tests/hooks/fail_once). tests/test_e2e_postgres.py
runs them together."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from postgres_server import LocalPostgres, find_bindir

from sc_imagenet.flows.build_sc_imagenet import build_sc_imagenet, deployments
from sc_imagenet.orchestration.local import WORK_POOL, flow_run_id
from sc_imagenet.paths import REPO_ROOT


def _entrypoint(entrypoint: str, base: Path) -> tuple[Path, str]:
    path, _, func = entrypoint.rpartition(":")
    return (base / path).resolve(), func  # an absolute path stays as it is


def test_prefect_yaml_matches_served_deployments() -> None:
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    from_yaml = {d["name"]: d for d in spec["deployments"]}
    served = {d.name: d for d in deployments()}
    assert set(from_yaml) == set(served) == {"demo", "imagenet"}
    for name, deployment in served.items():
        entry = from_yaml[name]
        assert _entrypoint(entry["entrypoint"], REPO_ROOT) == _entrypoint(deployment.entrypoint, Path.cwd()) == \
            (REPO_ROOT / "sc_imagenet" / "flows" / "build_sc_imagenet.py", "build_sc_imagenet"), name
        assert entry["parameters"] == deployment.parameters, name
        assert entry["tags"] == deployment.tags, name
        assert entry["description"] == deployment.description, name
        assert entry["work_pool"] == {"name": WORK_POOL}, name
        assert set(entry["parameters"]) <= set(build_sc_imagenet.parameters.properties), name
    # the worker runs this checkout: a working-directory pull step, nothing cloned or downloaded
    assert [next(iter(step)) for step in spec["pull"]] == ["prefect.deployments.steps.set_working_directory"]
    assert all(next(iter(step)) == "prefect.deployments.steps.run_shell_script" for step in spec["build"])
    assert not spec.get("push")


def test_flow_run_id_from_deployment_run_output() -> None:
    out = ("Creating flow run for deployment 'build-sc-imagenet/demo'...\n"
           "└── UUID: 70626e09-e6db-42dd-b6d4-14294df9ddd5\n└── Parameters: {}\n")
    assert flow_run_id(out) == "70626e09-e6db-42dd-b6d4-14294df9ddd5"
    with pytest.raises(ValueError):
        flow_run_id("no run here")


FAIL_ONCE = Path(__file__).parent / "hooks" / "fail_once"


def test_fail_once_wrapper(tmp_path: Path) -> None:
    sys.path.insert(0, str(FAIL_ONCE))
    try:
        from sitecustomize import InjectedFailure, failing_once
    finally:
        sys.path.remove(str(FAIL_ONCE))
    ran: list[str] = []
    plan = SimpleNamespace(out_dir=tmp_path, fingerprints={"label": "a", "select": "b", "export": "c"}, forced=set(),
                           stage_dir=lambda name: tmp_path / "manifests" / name)
    run = failing_once(lambda plan, name: ran.append(name), ["label", "select"])
    run(plan, "export")  # not listed
    with pytest.raises(InjectedFailure, match="select"):
        run(plan, "select")
    assert (tmp_path / ".fail-once-select").exists()
    run(plan, "select")  # once only: the marker is there
    with pytest.raises(InjectedFailure):
        run(plan, "label")
    assert ran == ["export", "select"]


def test_fail_once_wrapper_is_installed_from_the_path(tmp_path: Path) -> None:
    """What a worker's flow-run process gets from the two job variables: the product's `execute_stage`, wrapped."""
    env = {**os.environ, "PYTHONPATH": str(FAIL_ONCE), "SC_IMAGENET_TEST_FAIL_ONCE": "select"}
    code = "import sc_imagenet.build as b; print(hasattr(b.execute_stage, '__wrapped__'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True"]
    env.pop("SC_IMAGENET_TEST_FAIL_ONCE")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def test_local_postgres_runs_unprivileged_and_cleans_up() -> None:
    find_bindir()  # PostgresUnavailable names what is missing (`make install` installs PostgreSQL)
    import asyncpg

    with LocalPostgres() as pg:
        folder = pg.folder
        assert pg.url.startswith("postgresql+asyncpg://prefect@127.0.0.1:") and pg.url.endswith("/prefect")
        if os.geteuid() == 0:  # PostgreSQL refuses root: the server runs as an unprivileged account
            assert pg.account is not None and pg.account.pw_uid != 0
            assert (pg.data_dir / "PG_VERSION").stat().st_uid == pg.account.pw_uid

        async def query() -> tuple[str, str]:
            conn = await asyncpg.connect(pg.url.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                return await conn.fetchval("SELECT current_database()"), await conn.fetchval("SHOW server_version")
            finally:
                await conn.close()

        database, version = asyncio.run(query())
        assert database == "prefect" and int(version.split(".")[0]) >= 12
    assert not folder.exists()  # stopped and deleted
