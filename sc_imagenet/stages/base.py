"""The stage contract and registry.

A stage turns (typed config, input manifests) into one output manifest. It knows nothing about
Prefect: `sc_imagenet.build.execute_stage` decides whether to run it (fingerprints, resume) and the
flow only wraps that call in a task.
"""

from __future__ import annotations

import os
import socket
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import pyarrow as pa
from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm

from sc_imagenet.config import BuildConfig
from sc_imagenet.io.integrity import in_build
from sc_imagenet.io.manifest import (
    StageRecord,
    category_shards,
    companion_path,
    read_shard,
    read_stage_record,
    shard_is_current,
    shard_path,
)
from sc_imagenet.registry import Registry
from sc_imagenet.stages.schema import PARTITION_COLUMN, select_columns
from sc_imagenet.synth.config import SYNTH_VERSION


@dataclass
class StageContext:
    """Everything a stage run may use. `inputs` maps upstream stage names to their manifest folders.

    `stage_dir` holds the manifest only (shards + `_stage.json`), so it always reads as one table;
    files that are not manifest rows (model checkpoints, exported datasets) go to `artifact_dir`
    (`<out>/artifacts/<stage>/`) and are named in the stage record's `extra`.
    """

    cfg: BuildConfig
    out_dir: Path
    data_root: Path
    stage_dir: Path
    fingerprint: str
    inputs: dict[str, Path]
    progress: bool = True
    log: Callable[[str], None] = print
    on_progress: Callable[[float], None] | None = None  # fraction done in [0, 1] (a UI progress bar)
    artifact_dir: Path | None = None

    def artifacts(self) -> Path:
        """The stage's artifact folder (created on first use)."""
        path = self.artifact_dir or self.out_dir / "artifacts" / self.stage_dir.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def split_shards(self, wnids: list[str], status_column: str = "status",
                     done: Callable[[str], bool] | None = None) -> ShardSplit:
        """Per-category resume: which shards an interrupted run already finished (with their row
        counts per status) and which categories still need work. `done(wnid)`: whether a category is
        finished (default: its shard carries this run's fingerprint)."""
        split = ShardSplit()
        for wnid in wnids:
            path = self.shard(wnid)
            split.shards.append(path)
            if done(wnid) if done is not None else self.shard_done(path):
                split.done[wnid] = count_statuses(path, status_column)[1]
            else:
                split.todo.append((wnid, path))
        if split.done:
            self.log(f"[{self.stage_dir.name}] resuming: {len(split.done)} of {len(wnids)} category "
                     "shards already finished")
        return split

    def report_progress(self, done: int, total: int) -> None:
        if self.on_progress is not None and total > 0:
            self.on_progress(done / total)

    def shard(self, wnid: str | None = None) -> Path:
        return shard_path(self.stage_dir, wnid)

    def shard_done(self, path: Path) -> bool:
        """True if `path` was already written by a run with this exact fingerprint (resume)."""
        return shard_is_current(path, self.fingerprint)


def data_identity(cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
    """What the fingerprints of the stages that read the images see of them: the data root, and for the
    synthetic dataset its generator's version and knobs. Other knobs make another dataset in the same folder
    (once the old one is deleted), so the path alone would leave the old manifests looking current."""
    identity: dict[str, Any] = {"data_root": str(data_root)}
    if cfg.data.source == "synthetic":
        identity["synthetic"] = {"generator_version": SYNTH_VERSION, **cfg.data.synthetic.model_dump(mode="json")}
    return identity


@dataclass
class ShardSplit:
    shards: list[Path] = field(default_factory=list)  # every shard of the output, in wnid order
    done: dict[str, dict[str, int]] = field(default_factory=dict)  # wnid → rows per status of finished shards
    todo: list[tuple[str, Path]] = field(default_factory=list)  # (wnid, shard path) still to write


@dataclass
class StageOutput:
    """What a stage run reports back. `shards` lists every shard that belongs to this run's output
    (freshly written or kept from an interrupted run); anything else in the folder is removed.
    `artifacts`: the files (or folders of files) outside the manifest that the stage owns and later stages or
    users read, e.g. the generator checkpoint and the release; they are checksummed with the shards."""

    rows: int
    rows_by_status: dict[str, int]
    shards: list[Path]
    shards_skipped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    summary: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)


class StageFigures(BaseModel):
    """The typed contract of a stage record's `extra`: each stage declares its figures as a subclass (keys that are
    not identifiers, such as `pck@0.1`, by alias), its `run` validates what it writes through it, and every other
    module reads the figures as attributes of that model. A renamed or dropped key then fails where the stage runs
    (or a reader is tested), not at the end of a build. The stage names its model (`Stage.figures_model`); the
    figures the build adds itself (`shards_skipped`, `shard_workers`) are declared here, and undeclared keys are kept
    (`extra="allow"`): figures nobody reads need not be listed."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    shards_skipped: int | None = None  # added by the build to every record, not by the stage
    shard_workers: int | None = None  # added by the build on the Dask path: worker processes that wrote the shards

    @classmethod
    def check(cls, extra: dict[str, Any]) -> dict[str, Any]:
        """`extra` itself, once it validates: the record's JSON stays exactly what the stage built (validation
        would turn 1.0 into 1 for an int field), while a missing or mistyped declared figure raises here."""
        cls.model_validate(extra)
        return extra

    @classmethod
    def of(cls, record: StageRecord | None) -> Self | None:
        """The record's figures; None without a record. Raises `ValueError` (pydantic's `ValidationError`) when
        the record lacks a declared figure or holds one of another type (a record of an incompatible version)."""
        return cls.model_validate(record.extra) if record is not None else None

    @classmethod
    def read(cls, stage_dir: Path) -> Self | None:
        return cls.of(read_stage_record(stage_dir))

    @classmethod
    def shown(cls, stage_dir: Path) -> Self | None:
        """For lines that only show figures (`status`, the demo's summary, the flow's report link): None also
        when the record's figures do not fit (a build made by an older version), so showing never fails."""
        try:
            return cls.read(stage_dir)
        except ValueError:
            return None

    def dump(self) -> dict[str, Any]:
        """As stored in `_stage.json`: by alias, without the declared figures the record did not hold."""
        return self.model_dump(by_alias=True, exclude_unset=True)

    @staticmethod
    def build_path(value: str | None, out_dir: Path) -> Path | None:
        """A file a figure names (stored relative to the build folder), found wherever the build now is."""
        return in_build(value, out_dir) if value else None


class Stage(ABC):
    """A stage: its name, its inputs, its manifest contract (`schema`, with every column documented in
    field metadata; see `stages/schema.py`), its record's figures (`figures_model`, the contract of `extra`)
    and `run`.

    partitioned: one shard per category under `wnid=<id>/` (the `wnid` column comes from the folder);
    otherwise one `part-00000.parquet`. status_column: the column `rows_by_status` counts.
    """

    name: ClassVar[str]
    schema_version: ClassVar[int]
    schema: ClassVar[pa.Schema]
    figures_model: ClassVar[type[StageFigures]]  # the model of its record's `extra`, which readers import
    partitioned: ClassVar[bool] = True
    status_column: ClassVar[str] = "status"
    inputs: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    tags: ClassVar[tuple[str, ...]] = ()  # e.g. ("gpu",): Prefect task tags, for concurrency limits / Dask resources
    # second tables at another grain (name → schema): one shard beside each of the stage's own shards, under
    # `_<name>/` (`io.manifest.companion_path`), written before it, so a finished shard implies its companions
    tables: ClassVar[dict[str, pa.Schema]] = {}

    @classmethod
    def columns(cls, *names: str) -> list[str]:
        """Column names of this stage's manifest, checked against its schema: a reader written as
        `SingleInstanceStage.columns("image_id", "box")` fails on import if the column goes away."""
        return select_columns(cls.schema, names, cls.name, cls.partitioned)

    @classmethod
    def table_columns(cls, table: str, *names: str) -> list[str]:
        """`columns` for the stage's second table `table`."""
        return select_columns(cls.tables[table], names, f"{cls.name}/_{table}", cls.partitioned)

    @classmethod
    def companions(cls, shard: Path, stage_dir: Path) -> list[Path]:
        """The second tables' shards that belong with `shard`."""
        return [companion_path(shard, stage_dir, t) for t in cls.tables]

    @abstractmethod
    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        """The settings (and input file hashes) whose change must rerun this stage. `data_root` is the data
        root as fingerprints see it: relative to the build folder when inside it (a moved build stays whole),
        so it only names the data and is never opened here."""

    @abstractmethod
    def run(self, ctx: StageContext) -> StageOutput:
        """Write the stage's shards under `ctx.stage_dir`, skipping those `ctx.shard_done` accepts."""

    def device(self, cfg: BuildConfig) -> str | None:
        """The configured torch device of a `gpu`-tagged stage (`auto`, `cpu`, `cuda:N`); None otherwise."""
        return None

    def planned_shards(self, inputs: dict[str, Path]) -> list[str] | None:
        """The categories this stage writes one shard each for, as its upstream manifests say; None when that
        cannot be known yet (not partitioned, or the upstream stage has no record). Default: the category
        shards of the first partitioned input."""
        if not self.partitioned:
            return None
        for name in self.inputs:
            if STAGES[name].partitioned:
                upstream = inputs[name]
                return category_shards(upstream) if read_stage_record(upstream) is not None else None
        return None


@dataclass
class ShardResult:
    """What one category shard reports to the stage's finalize step: rows per status, whether it was already
    current (no work done), and the figures of the work (counters, seconds) the stage record sums up."""

    wnid: str
    rows: int
    by_status: dict[str, int]
    skipped: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")  # where it ran


Shared = Callable[[], Any]  # returns the stage's per-process state (a loaded model), loading it on first call


class ShardedStage(Stage):
    """A category-sharded stage whose categories are independent: plan the shards (`shard_keys`), write one
    category (`shard_work`), and merge the shards' reports into the stage output (`finalize`).

    The sequential `run` and the Dask path (`sc_imagenet.build.execute_shard`, one Prefect task per
    category) call the very same `run_shard`, so both write the same bytes. State that is expensive to build
    and the same for every category (a detector, the generator) comes from `load_shared` through a
    `Shared` callable: loaded once per run sequentially, once per worker process on Dask.
    """

    unit: ClassVar[str] = "category"  # the progress bar's unit (`progress_total` counts them)

    def shard_keys(self, ctx: StageContext) -> list[str]:
        """Every category of this run's output, sorted."""
        wnids = self.planned_shards(ctx.inputs)
        if wnids is None:
            raise RuntimeError(f"stage {self.name!r}: the upstream manifest does not name the categories")
        return sorted(wnids)

    def load_shared(self, ctx: StageContext) -> Any:
        """Per-process state the categories share (a model); None when there is none."""
        return None

    def shared_key(self, ctx: StageContext) -> Hashable:
        """What `load_shared`'s result depends on: a worker process reuses its cached state while this is
        unchanged (same stage fingerprint and settings; devices and batch sizes are settings too)."""
        return (ctx.fingerprint, ctx.cfg.model_dump_json(), str(ctx.data_root), tuple(sorted(ctx.inputs.items())))

    def progress_total(self, ctx: StageContext, todo: list[str]) -> int:
        """Work units (`unit`) of the categories still to write, for the progress bar."""
        return len(todo)

    def shard_threads(self, ctx: StageContext, todo: int) -> int:
        """Threads the sequential run writes categories with (1: one after the other)."""
        return 1

    @abstractmethod
    def shard_work(self, ctx: StageContext, wnid: str, path: Path, shared: Shared,
                   advance: Callable[[int], None]) -> ShardResult:
        """Write category `wnid`'s shard at `path` (a `ShardWriter`: it appears whole or not at all), calling
        `advance(n)` as `n` work units finish."""

    @abstractmethod
    def finalize(self, ctx: StageContext, results: list[ShardResult], shared: Shared) -> StageOutput:
        """The stage output from every category's report (`results`, in `shard_keys` order)."""

    def shard_current(self, ctx: StageContext, wnid: str) -> bool:
        """Category `wnid` was finished with this fingerprint: its shard and its second tables' shards."""
        path = ctx.shard(wnid)
        return all(ctx.shard_done(p) for p in (path, *self.companions(path, ctx.stage_dir)))

    def run_shard(self, ctx: StageContext, wnid: str, shared: Shared,
                  advance: Callable[[int], None] = lambda n: None) -> ShardResult:
        """One category, idempotent: a shard already written with this fingerprint is only counted (no model
        loaded, nothing rewritten); otherwise it is written (again) from scratch, atomically."""
        path = ctx.shard(wnid)
        if self.shard_current(ctx, wnid):
            rows, by_status = count_statuses(path, self.status_column)
            return ShardResult(wnid, rows, by_status, skipped=True)
        return self.shard_work(ctx, wnid, path, shared, advance)

    def run(self, ctx: StageContext) -> StageOutput:
        """The sequential path: every category in this process (`shard_threads` at a time), one progress bar."""
        wnids = self.shard_keys(ctx)
        # logs how many an interrupted run finished
        split = ctx.split_shards(wnids, self.status_column, lambda w: self.shard_current(ctx, w))
        todo = [wnid for wnid, _ in split.todo]
        shared = run_scoped(lambda: self.load_shared(ctx))
        bar = tqdm(total=self.progress_total(ctx, todo), desc=self.name, unit=self.unit, disable=not ctx.progress)

        def advance(n: int) -> None:
            bar.update(n)
            ctx.report_progress(bar.n, bar.total)

        results = {wnid: ShardResult(wnid, sum(c.values()), c, skipped=True) for wnid, c in split.done.items()}
        try:
            with ThreadPoolExecutor(self.shard_threads(ctx, len(todo))) as pool:
                futures = [pool.submit(self.shard_work, ctx, wnid, ctx.shard(wnid), shared, advance) for wnid in todo]
                for fut in as_completed(futures):
                    result = fut.result()
                    results[result.wnid] = result
        finally:
            bar.close()
        return self.finalize(ctx, [results[w] for w in wnids], shared)


def resolve_workers(requested: int, jobs: int) -> int:
    """Threads for `jobs` categories: `requested`, or one per CPU core when 0; never more than the jobs."""
    return max(1, min(requested or os.cpu_count() or 1, jobs))


def run_scoped(load: Callable[[], Any]) -> Shared:
    """`load()` once, on first need, for one sequential run (dropped with the run: a model does not outlive
    its stage in a long build process)."""
    cell: list[Any] = []
    lock = threading.Lock()  # `shard_threads` > 1: one load, not one per thread

    def get() -> Any:
        with lock:
            if not cell:
                cell.append(load())
            return cell[0]
    return get


_PROCESS_STATE: dict[str, tuple[Hashable, Any]] = {}
_PROCESS_LOCK = threading.Lock()  # a Dask worker with several threads runs several categories at once


def process_cached(stage: str, key: Hashable, load: Callable[[], Any]) -> Any:
    """The stage's shared state in this (worker) process, loaded once per `key`: consecutive category tasks
    of a stage on one Dask worker reuse the model. One entry per stage, so a new fingerprint replaces the
    old model instead of piling up beside it."""
    with _PROCESS_LOCK:
        hit = _PROCESS_STATE.get(stage)
        if hit is not None and hit[0] == key:
            return hit[1]
        _PROCESS_STATE.pop(stage, None)  # free the old model before loading the new one
        value = load()
        _PROCESS_STATE[stage] = (key, value)
        return value


STAGES: Registry[Stage] = Registry("stage")


def register_stage(cls: type[Stage]) -> type[Stage]:
    STAGES.check_free(cls.name)
    if not isinstance(getattr(cls, "schema", None), pa.Schema):
        raise TypeError(f"stage {cls.name!r} has no manifest schema (a pyarrow.Schema from schema.manifest_schema)")
    if cls.partitioned and PARTITION_COLUMN in cls.schema.names:
        raise ValueError(f"stage {cls.name!r}: {PARTITION_COLUMN!r} comes from the shard folders of a "
                         "category-sharded stage; it must not be a stored column")
    if cls.status_column not in cls.schema.names and cls.status_column != "":
        raise ValueError(f"stage {cls.name!r}: status column {cls.status_column!r} is not in its schema")
    unknown = [i for i in cls.inputs if i not in STAGES]
    if unknown:
        raise ValueError(f"stage {cls.name!r} depends on unregistered stages {unknown}")
    STAGES.register(cls.name, cls())
    return cls


def pipeline_order() -> list[str]:
    """Registration order; `register_stage` guarantees inputs are registered first (topological)."""
    return list(STAGES)


def downstream_of(name: str) -> list[str]:
    """`name` and every stage that depends on it, transitively, in pipeline order."""
    hit = {name}
    for stage in pipeline_order():
        if any(i in hit for i in STAGES[stage].inputs):
            hit.add(stage)
    return [s for s in pipeline_order() if s in hit]


def count_statuses(path: Path, column: str = "status") -> tuple[int, dict[str, int]]:
    """Rows and rows per status of an existing shard (used when a finished shard is kept)."""
    table = read_shard(path, columns=[column])
    counts = Counter(table.column(column).to_pylist())
    return table.num_rows, dict(counts)


def merge_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(total)
