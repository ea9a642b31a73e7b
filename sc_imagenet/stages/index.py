"""Stage `index`: one row per file of every kept category, with its true format/size/mode or the
reason it cannot be used. Categories are scanned in a thread pool (or as Dask tasks), each task streaming
its category into its own shard, so nothing holds a whole category's rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sc_imagenet.config import BuildConfig
from sc_imagenet.io.images import pil_pixel_limit_lifted, probe_image
from sc_imagenet.io.manifest import ShardWriter, read_manifest, read_stage_record
from sc_imagenet.io.scan import list_files
from sc_imagenet.stages.base import (
    ShardedStage,
    ShardResult,
    Shared,
    StageContext,
    StageFigures,
    StageOutput,
    data_identity,
    merge_counts,
    register_stage,
    resolve_workers,
)
from sc_imagenet.stages.categories import CategoriesStage
from sc_imagenet.stages.schema import column, manifest_schema

SCHEMA = manifest_schema(
    column("image_id", pa.string(), "file stem (`n01440764_10026`)"),
    column("rel_path", pa.string(), "path relative to the data root, `/`-separated"),
    column("bytes", pa.int64(), "file size (null if it cannot be stat'ed)", "bytes"),
    column("format", pa.string(), "format PIL detected from the content (`JPEG`, `PNG`, …), not from the extension"),
    column("width", pa.int32(), "image width (null if the header could not be read)", "pixels"),
    column("height", pa.int32(), "image height (null if the header could not be read)", "pixels"),
    column("mode", pa.string(), "PIL mode: `RGB`, `L` (grayscale), `CMYK`, `P`, `RGBA`, …"),
    column("status", pa.string(), "`ok` or the reason the file is unusable (table below)"),
    column("error", pa.string(), "the error message (null when ok)"),
)
CATEGORY_COLUMNS = CategoriesStage.columns("wnid", "keep")


@dataclass(frozen=True)
class ScanTask:
    wnid: str
    folder: Path
    data_root: Path
    shard: Path
    fingerprint: str
    schema_version: int
    verify: str
    max_pixels: int
    row_group_size: int


@dataclass(frozen=True)
class ScanResult:
    wnid: str
    rows: int
    by_status: dict[str, int]


def scan_category(task: ScanTask) -> ScanResult:
    """Probe every file of one category folder and stream the rows into its shard (one shard's work)."""
    counts: Counter[str] = Counter()
    with pil_pixel_limit_lifted(), ShardWriter(task.shard, SCHEMA, task.fingerprint, task.schema_version,
                                               task.row_group_size) as writer:
        for name in list_files(task.folder):
            path = task.folder / name
            probe = probe_image(path, task.verify, task.max_pixels)
            counts[probe.status] += 1
            writer.write({
                "image_id": Path(name).stem,
                "rel_path": path.relative_to(task.data_root).as_posix(),
                "bytes": probe.bytes, "format": probe.format, "width": probe.width,
                "height": probe.height, "mode": probe.mode, "status": probe.status, "error": probe.error,
            })
    return ScanResult(task.wnid, sum(counts.values()), dict(counts))


class IndexFigures(StageFigures):
    """`index`'s record: how many categories were scanned, and why files are unusable."""

    categories: int  # category shards (kept categories)
    workers: int  # threads this run scanned categories with
    bad_by_reason: dict[str, int]  # unusable files per `status` (every status but `ok`)


@register_stage
class IndexStage(ShardedStage):
    name = "index"
    schema_version = 1
    schema = SCHEMA
    figures_model = IndexFigures
    inputs = ("categories",)
    description = "scan and verify every image of the kept categories"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        # workers and row-group size change how, not what: they stay out of the fingerprint.
        return {**data_identity(cfg, data_root), "verify": cfg.index.verify, "max_pixels": cfg.index.max_pixels}

    def planned_shards(self, inputs: dict[str, Path]) -> list[str] | None:
        """The kept categories of the `categories` manifest."""
        if read_stage_record(inputs["categories"]) is None:
            return None
        wnid_col, keep_col = CATEGORY_COLUMNS
        cats = read_manifest(inputs["categories"], columns=CATEGORY_COLUMNS, filter=pc.field(keep_col))
        return sorted(cats.column(wnid_col).to_pylist())

    def shard_threads(self, ctx: StageContext, todo: int) -> int:
        # Threads, not processes: PIL decodes and pyarrow writes with the GIL released, and threads
        # avoid spawn's re-import of the caller's __main__ (a script without a main guard would
        # re-run the whole build in every worker).
        return resolve_workers(ctx.cfg.index.workers, todo)

    def shard_work(self, ctx: StageContext, wnid: str, path: Path, shared: Shared,
                   advance: Callable[[int], None]) -> ShardResult:
        icfg = ctx.cfg.index
        result = scan_category(ScanTask(wnid, ctx.data_root / wnid, ctx.data_root, path, ctx.fingerprint,
                                        self.schema_version, icfg.verify, icfg.max_pixels, icfg.row_group_size))
        advance(1)
        return ShardResult(wnid, result.rows, result.by_status)

    def finalize(self, ctx: StageContext, results: list[ShardResult], shared: Shared) -> StageOutput:
        by_status = merge_counts([r.by_status for r in results])
        rows = sum(r.rows for r in results)
        bad = {k: v for k, v in by_status.items() if k != "ok"}
        summary = [{"wnid": r.wnid, "files": r.rows, "ok": r.by_status.get("ok", 0),
                    "bad": r.rows - r.by_status.get("ok", 0)} for r in sorted(results, key=lambda r: r.wnid)]
        todo = sum(not r.skipped for r in results)
        extra = {"categories": len(results), "workers": self.shard_threads(ctx, todo), "bad_by_reason": bad}
        return StageOutput(rows, by_status, [ctx.shard(r.wnid) for r in results], len(results) - todo,
                           IndexFigures.check(extra), summary)
