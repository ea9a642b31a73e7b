"""The stage contract and registry.

A stage turns (typed config, input manifests) into one output manifest. It knows nothing about
Prefect: `sc_imagenet.build.execute_stage` decides whether to run it (fingerprints, resume) and the
flow only wraps that call in a task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from sc_imagenet.config import BuildConfig
from sc_imagenet.io.manifest import shard_is_current, shard_path
from sc_imagenet.registry import Registry
from sc_imagenet.stages.schema import PARTITION_COLUMN, select_columns


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

    def split_shards(self, wnids: list[str], status_column: str = "status") -> ShardSplit:
        """Per-category resume: which shards an interrupted run already finished (with their row
        counts per status) and which categories still need work."""
        split = ShardSplit()
        for wnid in wnids:
            path = self.shard(wnid)
            split.shards.append(path)
            if self.shard_done(path):
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


@dataclass
class ShardSplit:
    shards: list[Path] = field(default_factory=list)  # every shard of the output, in wnid order
    done: dict[str, dict[str, int]] = field(default_factory=dict)  # wnid → rows per status of finished shards
    todo: list[tuple[str, Path]] = field(default_factory=list)  # (wnid, shard path) still to write


@dataclass
class StageOutput:
    """What a stage run reports back. `shards` lists every shard that belongs to this run's output
    (freshly written or kept from an interrupted run); anything else in the folder is removed."""

    rows: int
    rows_by_status: dict[str, int]
    shards: list[Path]
    shards_skipped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    summary: list[dict[str, Any]] = field(default_factory=list)


class Stage(ABC):
    """A stage: its name, its inputs, its manifest contract (`schema`, with every column documented in
    field metadata; see `stages/schema.py`) and `run`.

    partitioned: one shard per category under `wnid=<id>/` (the `wnid` column comes from the folder);
    otherwise one `part-00000.parquet`. status_column: the column `rows_by_status` counts.
    """

    name: ClassVar[str]
    schema_version: ClassVar[int]
    schema: ClassVar[pa.Schema]
    partitioned: ClassVar[bool] = True
    status_column: ClassVar[str] = "status"
    inputs: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    tags: ClassVar[tuple[str, ...]] = ()  # e.g. ("gpu",): Prefect task tags, for concurrency limits / Dask resources

    @classmethod
    def columns(cls, *names: str) -> list[str]:
        """Column names of this stage's manifest, checked against its schema: a reader written as
        `SingleInstanceStage.columns("image_id", "box")` fails on import if the column goes away."""
        return select_columns(cls.schema, names, cls.name, cls.partitioned)

    @abstractmethod
    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        """The settings (and input file hashes) whose change must rerun this stage."""

    @abstractmethod
    def run(self, ctx: StageContext) -> StageOutput:
        """Write the stage's shards under `ctx.stage_dir`, skipping those `ctx.shard_done` accepts."""


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
    table = pq.read_table(path, columns=[column])
    counts = Counter(table.column(column).to_pylist())
    return table.num_rows, dict(counts)


def merge_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(total)
