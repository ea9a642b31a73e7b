"""Prefect flow `build-sc-imagenet` and its deployments `demo` and `imagenet`.

Tasks only wire: every decision (skip, resume, fingerprints) lives in `sc_imagenet.build`, every
algorithm in `sc_imagenet.stages` and below. Prefect's own result caching is off (`NO_CACHE`):
the manifests' fingerprints are the cache.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, serve, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from sc_imagenet.build import BuildPlan, MapShards, ensure_data, execute_stage, plan_build, stage_states
from sc_imagenet.build_summary import build_summary_rows, markdown_table, quality_lines
from sc_imagenet.config import load_config, write_resolved_config
from sc_imagenet.io.locks import BuildLock
from sc_imagenet.orchestration.scale_out import DEFAULT_DASK_WORKERS, RunnerOptions, shard_mapper
from sc_imagenet.paths import default_builds_dir
from sc_imagenet.stages import STAGES
from sc_imagenet.stages.report import ReportFigures

FLOW_NAME = "build-sc-imagenet"


def _show_progress() -> bool:
    return sys.stderr.isatty()


@task(name="data", cache_policy=NO_CACHE)
def data_task(plan: BuildPlan) -> dict[str, Any]:
    return ensure_data(plan, get_run_logger().info, _show_progress())


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes."""
    return "-".join(parts).lower().replace("_", "-")


class _ProgressArtifact:
    """A Prefect UI progress bar for one stage, updated at most every `step` percent."""

    def __init__(self, name: str, step: int = 5) -> None:
        self.artifact_id = create_progress_artifact(0.0, key=artifact_key(name, "progress"),
                                                    description=f"`{name}` progress")
        self.step = step
        self.last = 0

    def __call__(self, fraction: float) -> None:
        percent = int(fraction * 100)
        if percent >= self.last + self.step or (percent == 100 and self.last < 100):
            self.last = percent
            update_progress_artifact(self.artifact_id, float(percent))


@task(name="stage", task_run_name="{name}", cache_policy=NO_CACHE)
def stage_task(plan: BuildPlan, name: str, map_shards: MapShards | None = None) -> dict[str, Any]:
    """One stage. With `map_shards` (runner `dask`) its categories run as `shard` tasks on the cluster and
    this task writes `_stage.json` after all of them finished."""
    result = execute_stage(plan, name, get_run_logger().info, _show_progress(), _ProgressArtifact(name), map_shards)
    if result.summary:
        create_table_artifact(
            key=artifact_key(name, "summary"),
            table=result.summary,
            description=f"`{name}`: {'skipped (complete)' if result.skipped else 'ran'} — "
            f"{result.record.rows} rows, {result.record.rows_by_status}",
        )
    return {"stage": name, "skipped": result.skipped, "rows": result.record.rows,
            "rows_by_status": result.record.rows_by_status, "wall_s": result.record.wall_s}


def default_out(config: str) -> Path:
    return default_builds_dir() / Path(config).stem


@flow(name=FLOW_NAME, log_prints=True)
def build_sc_imagenet(
    config: str = "demo",
    data_root: str | None = None,
    out: str | None = None,
    stages: list[str] | None = None,
    force: str | None = None,
    overrides: dict[str, Any] | None = None,
    runner: str = "sequential",
    dask_address: str | None = None,
    dask_workers: int = DEFAULT_DASK_WORKERS,
    verify: bool = False,
) -> list[dict[str, Any]]:
    """Build SC-ImageNet.

    Args:
        config: profile name in profiles/ (`demo`, `imagenet`) or a YAML path.
        data_root: `<root>/<category>/<image>` folder (overrides data.root; the demo makes its own).
        out: output folder (default `$SC_IMAGENET_BUILDS/<profile>` or `./builds/<profile>`).
        stages: subset of stages to run (default: all, in pipeline order).
        force: rerun this stage and everything downstream even if complete.
        overrides: nested config overrides, e.g. {"index": {"workers": 8}}.
        runner: `sequential` (default) or `dask`: the categories of every category-sharded stage
            (`ShardedStage`) as Prefect tasks on a Dask cluster (prefect-dask's DaskTaskRunner).
        dask_address: scheduler of an existing Dask cluster, `tcp://host:8786` (runner `dask`); without it
            a LocalCluster runs for the flow run.
        dask_workers: worker processes of that LocalCluster.
        verify: before skipping a finished stage, recompute its files' checksums (default: sizes and Parquet
            footers only). Damaged files are rebuilt either way.
    """
    options = RunnerOptions(runner, dask_address, dask_workers).checked()
    cfg = load_config(config, overrides, data_root)
    plan = plan_build(cfg, config, out or default_out(config), stages, force, verify)
    logger = get_run_logger()
    logger.info(f"output folder {plan.out_dir}; data {plan.data_root}; stages {plan.stages}")
    with BuildLock(plan.out_dir):
        data_task(plan)
        write_resolved_config(plan.cfg, plan.out_dir, plan.profile)
        with shard_mapper(options, plan, logger.info) as map_shards:
            results = [stage_task.with_options(tags=list(STAGES[name].tags))(plan, name, map_shards)
                       for name in plan.stages]
    states = stage_states(plan.out_dir)
    rows = build_summary_rows(plan.out_dir, states)
    summary = "\n\n".join([markdown_table(rows), *quality_lines(plan.out_dir, states)])
    create_markdown_artifact(key="build-summary", markdown=summary, description=f"sc-imagenet build at {plan.out_dir}")
    page = publish_report_link(plan)
    logger.info("build finished:\n" + summary + (f"\n\nreport: {page}" if page else ""))
    return results


def publish_report_link(plan: BuildPlan) -> str | None:
    """A markdown artifact linking the `report` stage's page (a file:// link: the page opens from disk)."""
    if "report" not in plan.stages:
        return None
    figures = ReportFigures.shown(plan.stage_dir("report"))
    page = figures.page_path(plan.out_dir) if figures is not None else None
    if page is None:
        return None
    uri = page.as_uri()
    create_markdown_artifact(
        key="build-report",
        markdown=f"## SC-ImageNet build report\n\n[{page}]({uri})\n\nOpen it in a browser on a machine that sees "
        f"the build folder (`sc-imagenet report --out {plan.out_dir}` regenerates it).",
        description=f"build report of {plan.out_dir}",
    )
    return page


def deployments() -> list:
    """The two shipped deployments; `sc-imagenet serve` serves them."""
    return [
        build_sc_imagenet.to_deployment(
            name="demo", parameters={"config": "demo"}, tags=["sc-imagenet", "demo"],
            description="The synthetic demo dataset, generated on first use, built end to end.",
        ),
        build_sc_imagenet.to_deployment(
            name="imagenet", parameters={"config": "imagenet"}, tags=["sc-imagenet", "gpu"],
            description="ImageNet ILSVRC-2012 train; pass data_root=<.../train>.",
        ),
    ]


def serve_deployments() -> None:
    serve(*deployments())


if __name__ == "__main__":
    serve_deployments()
