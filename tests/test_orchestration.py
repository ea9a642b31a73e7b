"""The work-pool path's pieces, fast: prefect.yaml in sync with the served deployments, the throwaway
PostgreSQL helper, the `SC_IMAGENET_FAIL_ONCE` test hook. tests/test_e2e_postgres.py runs them together."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from flows.build_sc_imagenet import build_sc_imagenet, deployments
from sc_imagenet.build import FAIL_ONCE_ENV, InjectedFailure, _fail_once
from sc_imagenet.orchestration.local import WORK_POOL, flow_run_id
from sc_imagenet.orchestration.postgres import LocalPostgres, find_bindir
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
            (REPO_ROOT / "flows" / "build_sc_imagenet.py", "build_sc_imagenet"), name
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


def test_fail_once_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = SimpleNamespace(out_dir=tmp_path)
    monkeypatch.delenv(FAIL_ONCE_ENV, raising=False)
    _fail_once(plan, "select")  # unset: nothing happens
    monkeypatch.setenv(FAIL_ONCE_ENV, "label,select")
    _fail_once(plan, "export")  # not listed
    with pytest.raises(InjectedFailure, match="select"):
        _fail_once(plan, "select")
    assert (tmp_path / ".fail-once-select").exists()
    _fail_once(plan, "select")  # once only: the marker is there
    with pytest.raises(InjectedFailure):
        _fail_once(plan, "label")


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
