"""Scale-out on Dask: the category shards of `index`, `detect`, `label` and `consistency` as Prefect tasks
run by `prefect_dask.DaskTaskRunner` (docs/architecture.md, "Scale-out on Dask").

`--runner dask` (flow parameter `runner`) starts a `distributed.LocalCluster` for the flow run, or connects
to a running scheduler given by `--dask-address tcp://host:8786`. The flow still runs one task per stage;
inside a sharded stage's task every category becomes a `shard` task (`build.execute_shard`) on the cluster,
and the stage task writes `_stage.json` after all of them finished (`build.execute_stage`). Shard tasks of a
GPU stage carry the Dask resource annotation `GPU=1` when the cluster has workers that advertise a GPU
(`dask worker --resources GPU=1`); a cluster without such workers would never place annotated tasks, so
there (and always with the stage's device set to `cpu`) they go unannotated to any worker.

This module is imported by Dask workers to run `shard_task` (the flow file itself is loaded by path under a
name workers cannot import), so it stays light: dask and prefect_dask are imported when a cluster is used.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sc_imagenet.build import BuildPlan, MapShards, execute_shard
from sc_imagenet.config import ConfigError
from sc_imagenet.stages import STAGES
from sc_imagenet.stages.base import ShardResult

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

RUNNERS = ("sequential", "dask")
DEFAULT_DASK_WORKERS = 2
# a scheduler address: tcp:// or tls://, a host name or address (IPv6 in brackets), a port
ADDRESS = re.compile(r"(tcp|tls)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")
SHARD_RETRIES = 2  # a shard task is idempotent (`ShardedStage.run_shard`): retrying it is always safe


@dataclass(frozen=True)
class RunnerOptions:
    """How a build runs its category shards: `sequential` (in the stage's task, the default) or `dask`
    (a LocalCluster of `dask_workers` worker processes, or the scheduler at `dask_address`)."""

    runner: str = "sequential"
    dask_address: str | None = None
    dask_workers: int = DEFAULT_DASK_WORKERS

    def checked(self) -> RunnerOptions:
        """Itself if the options make sense; else a `ConfigError` naming the option (before any work)."""
        if self.runner not in RUNNERS:
            raise ConfigError(f"runner (--runner): {self.runner!r} is not one of {', '.join(RUNNERS)}")
        if self.dask_address is not None:
            if self.runner != "dask":
                raise ConfigError("dask_address (--dask-address): only used with runner 'dask' (--runner dask)")
            m = ADDRESS.fullmatch(self.dask_address)
            if m is None or not 0 < int(m.group(3)) < 65536:
                raise ConfigError(f"dask_address (--dask-address): {self.dask_address!r} is not a scheduler "
                                  "address like tcp://host:8786")
        if isinstance(self.dask_workers, bool) or not isinstance(self.dask_workers, int) or self.dask_workers < 1:
            raise ConfigError(f"dask_workers (--dask-workers): {self.dask_workers!r} is not a positive integer")
        return self


@task(name="shard", task_run_name="{name}:{wnid}", cache_policy=NO_CACHE, retries=SHARD_RETRIES,
      retry_delay_seconds=2)
def shard_task(plan: BuildPlan, name: str, wnid: str, torch_threads: int) -> ShardResult:
    """One category of a sharded stage on a Dask worker; idempotent (a current shard is only counted). It
    computes with the flow process's torch thread count (`devices.torch_threads`: the same sums as the
    sequential path)."""
    from sc_imagenet.devices import torch_threads as threads

    with threads(torch_threads):
        return execute_shard(plan, name, wnid, get_run_logger().info)


def stage_wants_gpu(name: str, plan: BuildPlan) -> bool:
    """A `gpu`-tagged stage whose configured device is not the CPU (`auto` or `cuda…`)."""
    stage = STAGES[name]
    device = stage.device(plan.cfg)
    return "gpu" in stage.tags and device is not None and device != "cpu"


def local_cluster_kwargs(workers: int) -> dict[str, Any]:
    """One single-threaded worker process per core asked for (torch, PIL and pyarrow use their own threads
    inside a task); every worker advertises `GPU=1` when this machine has CUDA, so annotated tasks place."""
    import torch

    kwargs: dict[str, Any] = {"n_workers": workers, "threads_per_worker": 1, "processes": True,
                              "dashboard_address": None}  # no bokeh here; the Prefect UI shows the tasks
    if torch.cuda.is_available():
        kwargs["resources"] = {"GPU": 1}
    return kwargs


class DaskShards:
    """`build.MapShards` on Dask: every category of a stage becomes a `shard_task` on the cluster. The
    cluster (or the connection to `dask_address`) is opened on the first sharded stage that has work, so a
    rerun that skips everything starts no cluster; `close` ends it."""

    def __init__(self, options: RunnerOptions, plan: BuildPlan, log: Callable[[str], None]) -> None:
        import torch

        self.options, self.plan, self.log = options, plan, log
        self.torch_threads = torch.get_num_threads()  # this (the flow's) process's: the sequential path's
        self._runner: DaskTaskRunner | None = None

    def runner(self) -> DaskTaskRunner:
        if self._runner is None:
            from prefect_dask import DaskTaskRunner

            if self.options.dask_address:
                runner = DaskTaskRunner(address=self.options.dask_address)
            else:
                runner = DaskTaskRunner(cluster_class="distributed.LocalCluster",
                                        cluster_kwargs=local_cluster_kwargs(self.options.dask_workers))
            self._runner = runner.__enter__()
        return self._runner

    def cluster_has_gpus(self) -> bool:
        workers = self.runner().client.scheduler_info(n_workers=-1)["workers"].values()
        return any((w.get("resources") or {}).get("GPU", 0) >= 1 for w in workers)

    def __call__(self, name: str, wnids: list[str], progress: Callable[[int, int], None]) -> list[ShardResult]:
        import dask

        runner = self.runner()
        gpu = stage_wants_gpu(name, self.plan)
        annotate = gpu and self.cluster_has_gpus()
        if gpu and not annotate:
            self.log(f"[{name}] no Dask worker advertises a GPU (dask worker --resources GPU=1): the shards go "
                     "to any worker, unannotated")
        self.log(f"[{name}] {len(wnids)} category shard tasks on Dask ({runner.client.scheduler.address})"
                 + (", each annotated GPU=1" if annotate else ""))
        with dask.annotate(resources={"GPU": 1}) if annotate else nullcontext():
            futures = [runner.submit(shard_task, {"plan": self.plan, "name": name, "wnid": w,
                                                  "torch_threads": self.torch_threads}) for w in wnids]
        results: list[ShardResult] = []
        errors: list[BaseException] = []
        for n, future in enumerate(futures, 1):  # wait for every task, even after a failure: no write outlives us
            try:
                results.append(future.result())
            except Exception as exc:
                errors.append(exc)
            progress(n, len(futures))
        if errors:
            raise errors[0]
        return results

    def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.__exit__(None, None, None)


_OPEN: dict[str, DaskShards] = {}  # handle key → the flow run's open DaskShards


@dataclass(frozen=True)
class ShardsHandle:
    """A picklable stand-in for the flow run's `DaskShards`, passed to the stage tasks. A shard task is
    submitted from inside its stage's task, and prefect-dask ships that task's context, parameters
    included, to the worker: a parameter holding the Dask client itself could not be pickled."""

    key: str

    def __call__(self, name: str, wnids: list[str], progress: Callable[[int, int], None]) -> list[ShardResult]:
        return _OPEN[self.key](name, wnids, progress)


@contextmanager
def shard_mapper(options: RunnerOptions, plan: BuildPlan, log: Callable[[str], None]) -> Iterator[MapShards | None]:
    """None for the sequential runner (stages loop over their categories themselves), else a handle on a
    `DaskShards` that is closed when the block ends."""
    if options.runner != "dask":
        yield None
        return
    key = uuid.uuid4().hex
    _OPEN[key] = shards = DaskShards(options, plan, log)
    try:
        yield ShardsHandle(key)
    finally:
        del _OPEN[key]
        shards.close()
