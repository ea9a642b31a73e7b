"""Stage `consistency`: the closed-loop check I_s → I_m → I_t → I_s (paper §3.4) over `label`'s
stored flows; no edge is recomputed. Scores per candidate point, per pair and per image.

One category at a time: its label shard is read once, every flow and candidate decoded into flat
float32 arrays (`dataset.loops.EdgeBank`), and each source image's loops are array lookups
(`dataset.loops.image_consistency`). Two tables per category:
- the stage's own, one row per label row, in the label shard's order: edges get their pair and point
  scores (NaN where nothing enters them: an edge no drawn loop ends at is `no_loops`, its loop scores
  NaN, its forward-backward and match scores still set), non-edge rows pass their status through with
  null scores;
- `_images/` (`IMAGE_SCHEMA`), one row per source image with at least one edge: its loops and its
  scores, the figures `select` ranks images by.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sc_imagenet.boxes import object_size
from sc_imagenet.config import BuildConfig
from sc_imagenet.dataset.loops import EdgeBank, FlowBank, ImageConsistency, concat_ranges, images_consistency
from sc_imagenet.io.manifest import ShardWriter, category_shards, companion_path, read_shard, shard_path
from sc_imagenet.stages.base import (
    ShardedStage,
    ShardResult,
    Shared,
    StageContext,
    StageFigures,
    StageOutput,
    merge_counts,
    register_stage,
    resolve_workers,
)
from sc_imagenet.stages.label import LabelStage
from sc_imagenet.stages.schema import column, manifest_schema
from sc_imagenet.stages.single_instance import read_kept_images

SIZES = "units of the object's size (max side of its detected box), see docs/dataset.md"
SCHEMA = manifest_schema(
    column("src_id", pa.string(), "source image id"),
    column("trg_id", pa.string(), "target image id (null on a row that is not an edge)"),
    column("group", pa.int32(), "clique of the pair graph (-1 on a non-edge row)"),
    column("status", pa.string(), "`ok`, `no_loops` (no drawn loop of the source image ends at this target), or "
           "the label row's status (`unreadable`, `too_few_images`)"),
    column("loops", pa.int32(), "loops drawn for the source image that close through this edge's target"),
    column("point_offset", pa.list_(pa.float32()), "per candidate (label order): median over its loops of the "
           "3-image loop offset (NaN without loops)", f"`(K,)`, {SIZES}"),
    column("point_consistent", pa.list_(pa.float32()), "per candidate: fraction of its loops with offset ≤ "
           "consistency.threshold", "`(K,)`, [0, 1]"),
    column("point_fb_offset", pa.list_(pa.float32()), "per candidate: 2-image forward-backward offset "
           "(I_s → I_t → I_s through the label's target)", f"`(K,)`, {SIZES}"),
    column("pair_offset_mean", pa.float32(), "mean 3-image loop offset over candidates × loops", SIZES),
    column("pair_offset_median", pa.float32(), "median 3-image loop offset over candidates × loops", SIZES),
    column("pair_consistent", pa.float32(), "fraction of candidate loops with offset ≤ threshold", "[0, 1]"),
    column("pair_fb_consistent", pa.float32(), "fraction of candidates with forward-backward offset ≤ threshold",
           "[0, 1]"),
    column("pair_match_score", pa.float32(), "mean candidate confidence of the edge"),
)
IMAGE_SCHEMA = manifest_schema(
    column("image_id", pa.string(), "source image id (an image with at least one edge)"),
    column("group", pa.int32(), "its clique of the pair graph"),
    column("edges", pa.int32(), "its edges (targets in its clique)"),
    column("loops", pa.int32(), "loops actually run for the image (≤ consistency.loops)"),
    column("offset_mean", pa.float32(), "mean loop offset over all its loops and points", SIZES),
    column("offset_median", pa.float32(), "median loop offset over all its loops and points", SIZES),
    column("consistent", pa.float32(), "fraction of its loop offsets ≤ consistency.threshold (its score)",
           "[0, 1]"),
    column("fb_consistent", pa.float32(), "fraction of its candidates with forward-backward offset ≤ threshold",
           "[0, 1]"),
    column("match_score", pa.float32(), "mean candidate confidence over its edges"),
)
IMAGES = "images"  # the second table's name: `<stage dir>/_images/wnid=<id>/part-00000.parquet`


class ConsistencyFigures(StageFigures):
    """`consistency`'s record: the report states offsets against the `threshold` that was used."""

    images: int
    edges: int
    loops_run: int
    mean_loops_per_image: float | None
    min_loops_per_image: int | None
    images_with_fewer_loops: int
    loops_requested: int
    threshold: float
    ms_per_image: float | None


@register_stage
class ConsistencyStage(ShardedStage):
    name = "consistency"
    schema_version = 2
    schema = SCHEMA
    figures_model = ConsistencyFigures
    tables: ClassVar[dict[str, pa.Schema]] = {IMAGES: IMAGE_SCHEMA}
    inputs = ("label", "single_instance")
    description = "closed-loop consistency I_s → I_m → I_t → I_s over the stored flows"
    unit = "img"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        c = cfg.consistency
        return {"seed": cfg.seed, "loops": c.loops, "threshold": c.threshold}

    def shard_keys(self, ctx: StageContext) -> list[str]:
        return category_shards(ctx.inputs["label"])

    def shard_threads(self, ctx: StageContext, todo: int) -> int:
        # categories are independent and each image draws from its own seeded generator: the result does not
        # depend on the order categories finish in
        return resolve_workers(ctx.cfg.consistency.workers, todo)

    def progress_total(self, ctx: StageContext, todo: list[str]) -> int:
        label_dir = ctx.inputs["label"]
        return sum(len(source_images(read_shard(shard_path(label_dir, wnid), columns=BASE_COLUMNS)))
                   for wnid in todo)

    def shard_work(self, ctx: StageContext, wnid: str, path: Path, shared: Shared,
                   advance: Callable[[int], None]) -> ShardResult:
        """One category in memory: its label shard, its kept boxes, its loops (nothing global: each source
        image draws its loops with its own seeded generator inside its own clique)."""
        c = ctx.cfg.consistency
        t0 = time.perf_counter()
        where = f"category {wnid}"
        label = shard_path(ctx.inputs["label"], wnid)
        base = read_shard(label, columns=BASE_COLUMNS)
        bank = edge_bank(read_shard(label, columns=LABEL_COLUMNS, filters=pc.field(STATUS) == EDGE), where)
        sizes = object_sizes(read_kept_images(ctx.inputs["single_instance"], KEPT_COLUMNS, wnids=[wnid]))
        scores = score_category(bank, sizes, loops=c.loops, threshold=c.threshold, seed=ctx.cfg.seed,
                                on_image=lambda: advance(1), where=where)
        # the image table first: the stage's own shard, written last, marks the category finished
        with ShardWriter(companion_path(path, ctx.stage_dir, IMAGES), IMAGE_SCHEMA, ctx.fingerprint,
                         self.schema_version) as writer:
            writer.write_table(image_rows(base, scores))
        with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
            writer.write_many(output_rows(base, bank, scores, where))
        counts = status_counts(base, scores)
        info = {"images": len(scores.images), "seconds": time.perf_counter() - t0}
        return ShardResult(wnid, sum(counts.values()), counts, info=info)

    def finalize(self, ctx: StageContext, results: list[ShardResult], shared: Shared) -> StageOutput:
        c = ctx.cfg.consistency
        per_category = [category_summary(r.wnid, read_shard(ctx.shard(r.wnid), columns=[STATUS]),
                                         read_shard(companion_path(ctx.shard(r.wnid), ctx.stage_dir, IMAGES),
                                                    columns=SUMMARY_COLUMNS), c.loops)
                        for r in results]
        fresh = [r.info for r in results if not r.skipped]
        done, seconds = sum(i["images"] for i in fresh), sum(i["seconds"] for i in fresh)
        by_status = merge_counts([r.by_status for r in results])
        images = sum(r["images"] for r in per_category)
        loops_run = sum(r["loops_run"] for r in per_category)
        mins = [r["min_loops"] for r in per_category if r["images"]]
        extra: dict[str, Any] = {
            "images": images, "edges": sum(r["edges"] for r in per_category), "loops_run": loops_run,
            "mean_loops_per_image": round(loops_run / images, 3) if images else None,
            "min_loops_per_image": min(mins) if mins else None,
            "images_with_fewer_loops": sum(r["images_with_fewer_loops"] for r in per_category),
            "loops_requested": c.loops, "threshold": c.threshold,
            # this run's, reading included; summed over categories (over workers, on Dask)
            "ms_per_image": round(1000 * seconds / done, 3) if done else None,
        }
        return StageOutput(sum(by_status.values()), by_status, [ctx.shard(r.wnid) for r in results],
                           len(results) - len(fresh), ConsistencyFigures.check(extra), per_category)


LABEL_COLUMNS = LabelStage.columns("src_id", "trg_id", "group", "status", "src_width", "src_height", "grid_h",
                                   "grid_w", "flow", "src_kps", "trg_kps", "scores")
SRC_ID, TRG_ID, GROUP, STATUS = LABEL_COLUMNS[:4]
BASE_COLUMNS = [SRC_ID, TRG_ID, GROUP, STATUS]
KEPT_COLUMNS = ["image_id", "box"]  # read_kept_images checks them against single_instance's schema
SUMMARY_COLUMNS = ConsistencyStage.table_columns(IMAGES, "loops", "consistent")
EDGE = "ok"  # the label status of an edge row
POINT_COLUMNS = ("point_offset", "point_consistent", "point_fb_offset")
FLOAT_COLUMNS = ("pair_offset_mean", "pair_offset_median", "pair_consistent", "pair_fb_consistent",
                 "pair_match_score")
assert {*POINT_COLUMNS, "loops", *FLOAT_COLUMNS} == set(SCHEMA.names) - set(BASE_COLUMNS)
# image table column → `dataset.loops.ImageConsistency` field
IMAGE_FIGURES = {"offset_mean": "image_offset_mean", "offset_median": "image_offset_median",
                 "consistent": "image_consistent", "fb_consistent": "image_fb_consistent",
                 "match_score": "image_match_score"}
assert {"image_id", "group", "edges", "loops", *IMAGE_FIGURES} == set(IMAGE_SCHEMA.names)


def source_images(base: pa.Table) -> list[str]:
    """Sorted ids of the images with at least one edge in a label table."""
    edges = base.filter(pc.equal(base[STATUS], EDGE))
    return sorted(set(edges[SRC_ID].to_pylist()))


# Loop offsets are divided by the object size: a detected box thinner than a pixel must not blow them up.
MIN_OBJECT_SIZE = 1.0  # pixels


def object_sizes(kept: pa.Table) -> dict[str, float]:
    """Object size (`sc_imagenet.boxes.object_size` of the detected box, at least `MIN_OBJECT_SIZE`) of
    every kept image."""
    boxes = np.asarray(kept.column("box").to_pylist(), np.float64).reshape(-1, 4)
    sizes = np.maximum(object_size(boxes), MIN_OBJECT_SIZE)
    return dict(zip(kept.column("image_id").to_pylist(), sizes.tolist(), strict=True))


def _flat(table: pa.Table, name: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (all values concatenated, length of each row's list; 0 for a null row)."""
    col = table.column(name).combine_chunks()
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(dtype)
    return values, lengths


def edge_bank(edges: pa.Table, where: str = "") -> EdgeBank:
    """The edge rows of a label table as one `EdgeBank`: flows and candidates decoded once, to
    float32, keyed by (src_id, trg_id)."""
    flow, flow_len = _flat(edges, "flow", np.float32)
    src, src_len = _flat(edges, "src_kps", np.float32)
    trg, trg_len = _flat(edges, "trg_kps", np.float32)
    scores, score_len = _flat(edges, "scores", np.float32)
    grid = np.stack([edges.column(n).to_numpy(zero_copy_only=False) for n in ("grid_h", "grid_w")], 1)
    hw = np.stack([edges.column(n).to_numpy(zero_copy_only=False) for n in ("src_height", "src_width")], 1)
    grid, hw = grid.reshape(-1, 2).astype(np.int64), hw.reshape(-1, 2).astype(np.float64)
    bad = (flow_len != 2 * grid[:, 0] * grid[:, 1]) | (src_len != trg_len) | (src_len != 2 * score_len)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"label manifest ({where}): edge {edges[SRC_ID][i]} → {edges[TRG_ID][i]} has a flow of "
                         f"{flow_len[i]} values on a {grid[i, 0]}×{grid[i, 1]} grid, or candidate lists of "
                         f"different lengths ({src_len[i]}, {trg_len[i]}, {score_len[i]} scores)")
    keys = list(zip(edges[SRC_ID].to_pylist(), edges[TRG_ID].to_pylist(), strict=True))
    index = {k: i for i, k in enumerate(keys)}
    if len(index) != len(keys):
        raise ValueError(f"label manifest ({where}): an edge appears twice")
    cells = flow_len // 2
    return EdgeBank(FlowBank(flow.reshape(-1, 2), np.cumsum(cells) - cells, grid, hw), src.reshape(-1, 2),
                    trg.reshape(-1, 2), scores, np.cumsum(score_len) - score_len, score_len, index)


@dataclass
class CategoryScores:
    """The loop check of every edge of a category, in `EdgeBank` order: per-edge columns `(E,)`
    (`loops`, `FLOAT_COLUMNS`) and per-candidate columns `(P,)` in the bank's candidate layout
    (`POINT_COLUMNS`); and per source image (sorted ids), its edges, loops run and `IMAGE_FIGURES`."""

    edge: dict[str, np.ndarray]
    point: dict[str, np.ndarray]
    images: list[str] = field(default_factory=list)
    image: dict[str, list[float]] = field(default_factory=dict)


def score_category(bank: EdgeBank, sizes: dict[str, float], *, loops: int, threshold: float, seed: int,
                   on_image: Callable[[], None] | None = None, where: str = "") -> CategoryScores:
    """Every source image's loops (its group = the targets of its edges, a clique in which every
    ordered pair is an edge); images in id order, each drawing with its own seeded generator."""
    n_edges, n_points = len(bank.flows), len(bank.scores)
    edge = {"loops": np.zeros(n_edges, np.int64), **{c: np.full(n_edges, np.nan) for c in FLOAT_COLUMNS}}
    image: dict[str, list[float]] = {c: [] for c in ("edges", "loops", *IMAGE_FIGURES)}
    point = {c: np.full(n_points, np.nan, np.float32) for c in POINT_COLUMNS}
    targets: dict[str, list[str]] = defaultdict(list)
    for src, trg in bank.index:
        targets[src].append(trg)
    missing = sorted({i for k in bank.index for i in k} - set(sizes))
    if missing:
        raise ValueError(f"consistency ({where}): images {missing[:5]} have edges in the label manifest but no kept "
                         "box in the single_instance manifest")
    sources = sorted(targets)
    for first in range(0, len(sources), IMAGES_PER_PASS):
        batch = sources[first:first + IMAGES_PER_PASS]
        for res in images_consistency(batch, [sorted(targets[src]) for src in batch], bank, sizes, loops=loops,
                                      threshold=threshold, seed=seed):
            _store_image(res, bank, edge, point, image)
            if on_image is not None:
                on_image()
    return CategoryScores(edge, point, sources, image)


# Source images whose loops are checked in one vectorised pass (~6,400 entries each: 100 loops × 64 candidates).
# One image at a time, numpy's calls on short arrays hold the GIL most of the time and two threads ran no faster
# than one; 32 images (arrays of ~200,000) let 2 threads scale 1.5–1.8× on 2 cores (a 4,000-run category:
# 3.5–3.8 s for two categories against 5.6 s), a little slower on one thread (its gathers leave the cache).
IMAGES_PER_PASS = 32


def _store_image(res: ImageConsistency, bank: EdgeBank, edge: dict[str, np.ndarray], point: dict[str, np.ndarray],
                 image: dict[str, list[float]]) -> None:
    """One source image's loop check into the category's per-edge, per-candidate and per-image columns."""
    e = res.target_edges
    edge["loops"][e] = res.pair_loops
    for c in FLOAT_COLUMNS:
        edge[c][e] = getattr(res, c)
    image["edges"].append(len(e))
    image["loops"].append(res.loops_run)
    for c, name in IMAGE_FIGURES.items():
        image[c].append(getattr(res, name))
    where_points, _ = concat_ranges(bank.kps_start[e], bank.kps_count[e])
    for c in POINT_COLUMNS:
        point[c][where_points] = np.concatenate(getattr(res, c)) if len(e) else []


def image_rows(base: pa.Table, scores: CategoryScores) -> pa.Table:
    """The category's image table (`IMAGE_SCHEMA`): one row per source image, its clique from its edge rows."""
    edges = base.filter(pc.equal(base[STATUS], EDGE))
    group = dict(zip(edges[SRC_ID].to_pylist(), edges[GROUP].to_pylist(), strict=True))
    columns = {"image_id": scores.images, "group": [group[i] for i in scores.images], **scores.image}
    return pa.table(columns, schema=IMAGE_SCHEMA)


def output_rows(base: pa.Table, bank: EdgeBank, scores: CategoryScores, where: str = "") -> Iterator[dict[str, Any]]:
    """One output row per label row, in the label's order (generated: a shard's rows never all sit in
    memory as Python objects). Edge rows: `ok`, or `no_loops` when no drawn loop ends at the target
    (its loop scores NaN); non-edge rows keep their status with null scores."""
    for row in base.to_pylist():
        if row[STATUS] != EDGE:
            yield {**row, GROUP: row[GROUP] if row[GROUP] is not None else -1}
            continue
        e = bank.index.get((row[SRC_ID], row[TRG_ID]))
        if e is None:
            raise ValueError(f"label manifest ({where}): edge row {row[SRC_ID]} → {row[TRG_ID]} was not read")
        a, n = int(bank.kps_start[e]), int(bank.kps_count[e])
        loops = int(scores.edge["loops"][e])
        out = {**row, STATUS: "ok" if loops else "no_loops", "loops": loops}
        out.update({c: float(scores.edge[c][e]) for c in FLOAT_COLUMNS})
        out.update({c: scores.point[c][a:a + n].tolist() for c in POINT_COLUMNS})
        yield out


def status_counts(base: pa.Table, scores: CategoryScores) -> dict[str, int]:
    counts = Counter(s for s in base[STATUS].to_pylist() if s != EDGE)
    with_loops = int((scores.edge["loops"] > 0).sum())
    counts.update({"ok": with_loops, "no_loops": len(scores.edge["loops"]) - with_loops})
    return {k: v for k, v in counts.items() if v}


def category_summary(wnid: str, edges: pa.Table, images: pa.Table, loops: int) -> dict[str, Any]:
    """Summary row of one written category (fresh or kept from an interrupted run): its statuses from the
    stage's own shard, its images from the image table."""
    status = edges[STATUS].to_pylist()
    n_loops = images["loops"].to_pylist()
    scores = [s for s in images["consistent"].to_pylist() if s is not None and np.isfinite(s)]
    return {"wnid": wnid, "images": len(n_loops), "edges": sum(s in ("ok", "no_loops") for s in status),
            "no_loops_edges": sum(s == "no_loops" for s in status), "loops_run": sum(n_loops),
            "min_loops": min(n_loops) if n_loops else 0,
            "images_with_fewer_loops": sum(n < loops for n in n_loops),
            "image_consistent_mean": round(float(np.mean(scores)), 4) if scores else None}
