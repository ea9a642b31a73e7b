"""Stage `index`: one row per file of every kept category, with its true format/size/mode or the
reason it cannot be used. Categories are scanned in parallel processes, one shard each."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from tqdm.auto import tqdm

from sc_imagenet.config import BuildConfig
from sc_imagenet.io.manifest import read_manifest
from sc_imagenet.io.scan import ScanResult, ScanTask, pil_pixel_limit_lifted, scan_category
from sc_imagenet.stages.base import (
    Stage,
    StageContext,
    StageOutput,
    merge_counts,
    register_stage,
)


def resolve_workers(requested: int, jobs: int) -> int:
    return max(1, min(requested or os.cpu_count() or 1, jobs))


@register_stage
class IndexStage(Stage):
    name = "index"
    schema_version = 1
    inputs = ("categories",)
    description = "scan and verify every image of the kept categories"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        # workers and row-group size change how, not what: they stay out of the fingerprint.
        return {"data_root": str(data_root), "verify": cfg.index.verify, "max_pixels": cfg.index.max_pixels}

    def run(self, ctx: StageContext) -> StageOutput:
        cats = read_manifest(ctx.inputs["categories"], columns=["wnid", "keep"],
                             filter=pc.field("keep"))
        wnids = sorted(cats.column("wnid").to_pylist())
        icfg = ctx.cfg.index
        split = ctx.split_shards(wnids)
        results = [ScanResult(wnid, sum(c.values()), c) for wnid, c in split.done.items()]
        todo = [ScanTask(wnid, ctx.data_root / wnid, ctx.data_root, path, ctx.fingerprint, self.schema_version,
                         icfg.verify, icfg.max_pixels, icfg.row_group_size) for wnid, path in split.todo]
        workers = resolve_workers(icfg.workers, len(todo))
        bar = tqdm(total=len(todo), desc="index", unit="category", disable=not ctx.progress)
        # Threads, not processes: PIL decodes and pyarrow writes with the GIL released, and threads
        # avoid spawn's re-import of the caller's __main__ (a script without a main guard would
        # re-run the whole build in every worker).
        with pil_pixel_limit_lifted(), ThreadPoolExecutor(workers) as pool:
            for fut in as_completed([pool.submit(scan_category, t) for t in todo]):
                results.append(fut.result())
                bar.update()
                ctx.report_progress(bar.n, len(todo))
        bar.close()
        by_status = merge_counts([r.by_status for r in results])
        rows = sum(r.rows for r in results)
        bad = {k: v for k, v in by_status.items() if k != "ok"}
        summary = [{"wnid": r.wnid, "files": r.rows, "ok": r.by_status.get("ok", 0),
                    "bad": r.rows - r.by_status.get("ok", 0)} for r in sorted(results, key=lambda r: r.wnid)]
        extra = {"categories": len(wnids), "workers": workers, "bad_by_reason": bad}
        return StageOutput(rows, by_status, split.shards, len(split.done), extra, summary)
