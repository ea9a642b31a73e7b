"""Stage `pairs`: the release's pairs, made among the selected images (paper §3.5: 794,612 pairs of 113,516
images, 7.0 per image).

`label`'s graph is made for the loop check over every single-instance image (cliques of 20); once `select`
has kept the top 30 %, only about 6 of a clique's 19 partners of an image are selected, about 2.9 unordered
pairs per selected image. Here each category's selected images are grouped again into cliques of
`pairs.group_size` (15 → 7.0 unordered pairs per image). Edges the first graph already holds are reused as
stored; only the new ones go through the generator (`label`'s own group code and settings). The loop check
runs inside the new cliques (`consistency`'s code and settings), and every unordered pair keeps one
direction — the one with the higher pair consistency among those with `select.keypoints` consistent
keypoints. With `pairs.group_size: 0` the stage passes `select`'s kept pairs through unchanged.

The split is per new clique (a seeded draw with probability `select.val_fraction`), so no image of the
release is in both splits.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sc_imagenet.config import BuildConfig
from sc_imagenet.dataset.graph import regroup
from sc_imagenet.dataset.selection import choose_points, one_direction, stable_uniform
from sc_imagenet.io.manifest import ShardWriter, category_shards, read_shard, shard_path
from sc_imagenet.stages.base import (
    ShardResult,
    Shared,
    StageContext,
    StageFigures,
    StageOutput,
    merge_counts,
    register_stage,
)
from sc_imagenet.stages.consistency import edge_bank, object_sizes, score_category
from sc_imagenet.stages.label import SCHEMA as LABEL_SCHEMA
from sc_imagenet.stages.label import GeneratorStage, LabelStage, LabelWork, generator_settings
from sc_imagenet.stages.schema import column, manifest_schema
from sc_imagenet.stages.select import SCHEMA as SELECT_SCHEMA
from sc_imagenet.stages.select import SelectStage
from sc_imagenet.stages.single_instance import read_kept_images

# the columns `export` reads have the same names, types and meaning as in `select`
SHARED_COLUMNS = ("src_id", "trg_id", "split", "keep", "reason", "pair_score", "n_consistent", "src_kps",
                  "trg_kps", "point_offset", "src_rel_path", "trg_rel_path", "src_box", "trg_box", "src_width",
                  "src_height", "trg_width", "trg_height")
OWN_COLUMNS = {
    "group": column("group", pa.int32(), "clique of the second graph (of selected images; `select`'s group when "
                    "pairs.group_size is 0)"),
    "reused": column("reused", pa.bool_(), "both directions of the pair were labelled by `label` (no new "
                     "pair-head run)"),
    "reverse_score": column("reverse_score", pa.float32(), "pair consistency of the other direction (null when "
                            "passed through)", "[0, 1]"),
    "split": column("split", pa.string(), "`trn` or `val`: whole cliques, each drawn for val with probability "
                    "`select.val_fraction` (seeded), so no image is in both (`select`'s split when passed through)"),
    "reason": column("reason", pa.string(), "`kept`, or `too_few_consistent_points` (neither direction has "
                     "`select.keypoints` candidates within `select.point_threshold`)"),
    "pair_score": column("pair_score", pa.float32(), "consistency of the kept direction (3-image loop: fraction "
                         "of consistent candidate loops); the better direction is kept", "[0, 1]"),
}
ORDER = ("src_id", "trg_id", "group", "split", "keep", "reason", "reused", "pair_score", "reverse_score",
         *SHARED_COLUMNS[6:])
SCHEMA = manifest_schema(*[OWN_COLUMNS[n] if n in OWN_COLUMNS else SELECT_SCHEMA.field(n) for n in ORDER])
assert set(SCHEMA.names) == {*SHARED_COLUMNS, *OWN_COLUMNS}
SELECT_COLUMNS = SelectStage.columns("src_id", "group", "src_selected")
LABEL_COLUMNS = LabelStage.columns("src_id", "trg_id", "group", "status", "src_width", "src_height", "trg_width",
                                   "trg_height", "grid_h", "grid_w", "flow", "src_kps", "trg_kps", "scores")
IMAGE_INFO = ["image_id", "rel_path", "box", "width", "height"]


class PairsFigures(StageFigures):
    """`pairs`' record: the release's pairs (one direction per unordered pair) and the labelling work of this run
    (categories kept from an interrupted run are not counted again)."""

    group_size: int  # `pairs.group_size` (0: `select`'s kept pairs passed through)
    pairs: int  # kept pairs (= unordered pairs: one direction each)
    pairs_by_split: dict[str, int]  # kept pairs per split (`trn`, `val`)
    images_selected: int  # images `select` selected (the second graph's nodes)
    pairs_per_selected_image: float  # the paper's 794,612 / 113,516 = 7.0
    pairs_reused: int  # kept pairs both of whose directions `label` had labelled
    edges_reused: int  # ordered edges of the new cliques taken from `label`'s manifest
    edges_labelled: int  # ordered edges the generator labelled here (new to the second graph)
    images_encoded: int  # backbone encodings for those edges
    # the categories' wall time (loop check included, model loading left out) per labelled edge; None: none labelled
    seconds_per_edge: float | None


@register_stage
class PairsStage(GeneratorStage):
    name = "pairs"
    schema_version = 1
    schema = SCHEMA
    figures_model = PairsFigures
    status_column = "reason"
    inputs = ("select", "label", "single_instance", "train")
    description = "the release's pairs: selected images grouped again, new edges labelled, one direction each"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        s, c = cfg.select, cfg.consistency
        return {"group_size": cfg.pairs.group_size, "seed": cfg.seed, "data_root": str(data_root),
                # what this stage applies itself: label's generator settings on new edges, the loop check,
                # the keypoint choice and the split
                "label": generator_settings(cfg),
                "consistency": {"loops": c.loops, "threshold": c.threshold},
                "select": {"keypoints": s.keypoints, "point_threshold": s.point_threshold,
                           "point_order": s.point_order, "val_fraction": s.val_fraction}}

    def shard_keys(self, ctx: StageContext) -> list[str]:
        return category_shards(ctx.inputs["select"])

    def shard_work(self, ctx: StageContext, wnid: str, path: Path, shared: Shared,
                   advance: Callable[[int], None]) -> ShardResult:
        t0 = time.perf_counter()
        work = LabelWork(ctx, shared, lambda n: None)
        rows, info = (passed_through(ctx, wnid) if ctx.cfg.pairs.group_size == 0
                      else category_pairs(ctx, wnid, work))
        with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
            writer.write_many(rows)
        counts = dict(Counter(r["reason"] for r in rows))
        info.update(pair_forwards=work.pair_forwards, images_encoded=work.images_encoded,
                    seconds=time.perf_counter() - t0, load_seconds=work.load_seconds)
        advance(1)
        return ShardResult(wnid, len(rows), counts, info=info)

    def finalize(self, ctx: StageContext, results: list[ShardResult], shared: Shared) -> StageOutput:
        by_reason = merge_counts([r.by_status for r in results])
        totals: Counter[str] = Counter()
        split: Counter[str] = Counter()
        for r in results:
            kept = read_shard(ctx.shard(r.wnid), columns=["split", "keep", "reused"], filters=pc.field("keep"))
            totals["pairs"] += kept.num_rows
            totals["pairs_reused"] += int(pc.sum(kept["reused"]).as_py() or 0)
            split.update(kept["split"].to_pylist())
            sel = read_shard(shard_path(ctx.inputs["select"], r.wnid), columns=SELECT_COLUMNS,
                                filters=pc.field("src_selected"))
            totals["selected"] += len(set(sel["src_id"].to_pylist()))
        fresh = [r.info for r in results if not r.skipped]
        forwards = sum(i["pair_forwards"] for i in fresh)
        work_s = sum(i["seconds"] - i["load_seconds"] for i in fresh)
        extra: dict[str, Any] = {
            "group_size": ctx.cfg.pairs.group_size, "pairs": totals["pairs"], "pairs_by_split": dict(split),
            "images_selected": totals["selected"],
            # unordered pairs (one direction each) per selected image: the paper's 794,612 / 113,516 = 7.0
            "pairs_per_selected_image": round(totals["pairs"] / totals["selected"], 3) if totals["selected"] else 0.0,
            "pairs_reused": totals["pairs_reused"],
            # this run's work (categories kept from an interrupted run are not counted again)
            "edges_reused": sum(i.get("edges_reused", 0) for i in fresh), "edges_labelled": forwards,
            "images_encoded": sum(i["images_encoded"] for i in fresh),
            "seconds_per_edge": round(work_s / forwards, 5) if forwards else None,
        }
        summary = [{"reason": k, "pairs": v} for k, v in sorted(by_reason.items())]
        return StageOutput(sum(by_reason.values()), by_reason, [ctx.shard(r.wnid) for r in results],
                           len(results) - len(fresh), PairsFigures.check(extra), summary)


def passed_through(ctx: StageContext, wnid: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`pairs.group_size: 0`: `select`'s kept pairs as they are."""
    cols = SelectStage.columns("group", *SHARED_COLUMNS)
    table = read_shard(shard_path(ctx.inputs["select"], wnid), columns=cols, filters=pc.field("keep"))
    rows = [{**r, "reused": True, "reverse_score": None} for r in table.to_pylist()]
    return rows, {}


def category_pairs(ctx: StageContext, wnid: str, work: LabelWork) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One category: regroup its selected images, label the edges the first graph lacks, run the loops inside
    the new cliques and keep one direction of every unordered pair."""
    cfg = ctx.cfg
    sel = read_shard(shard_path(ctx.inputs["select"], wnid), columns=SELECT_COLUMNS).to_pandas()
    sel = sel[sel["src_selected"].astype(bool)].drop_duplicates("src_id")
    cliques = regroup(list(zip(sel["src_id"], sel["group"].astype(int), strict=True)), cfg.pairs.group_size)
    info: dict[str, Any] = {"cliques": len(cliques), "edges_reused": 0}
    if not cliques:
        return [], info
    clique_of = {i: g for g, members in enumerate(cliques) for i in members}
    wanted = {(s, t) for members in cliques for s in members for t in members if s != t}
    stored = read_shard(shard_path(ctx.inputs["label"], wnid), columns=LABEL_COLUMNS,
                           filters=pc.field("status") == "ok")
    have = [(s, t) in wanted for s, t in zip(stored["src_id"].to_pylist(), stored["trg_id"].to_pylist(),
                                              strict=True)]
    reused = stored.filter(pa.array(have, pa.bool_()))
    known = set(zip(reused["src_id"].to_pylist(), reused["trg_id"].to_pylist(), strict=True))
    info["edges_reused"] = len(known)
    kept = read_kept_images(ctx.inputs["single_instance"], IMAGE_INFO, [wnid])
    by_id = {r["image_id"]: r for r in kept.to_pylist()}
    fresh: list[dict[str, Any]] = []
    provider = work.provider(wnid)
    for g, members in enumerate(cliques):
        todo = {(s, t) for s in members for t in members if s != t and (s, t) not in known}
        if todo:
            work.group(g, [by_id[i] for i in members], provider, fresh.append, only=todo)
    new = pa.Table.from_pylist(fresh, schema=LABEL_SCHEMA).select(LABEL_COLUMNS) if fresh else None
    edges = pa.concat_tables([reused.select(LABEL_COLUMNS), new]) if new is not None else reused.select(LABEL_COLUMNS)
    where = f"pairs, category {wnid}"
    bank = edge_bank(edges, where)
    sizes = object_sizes(kept)
    c = cfg.consistency
    scores = score_category(bank, sizes, loops=c.loops, threshold=c.threshold, seed=cfg.seed, where=where)
    rows = list(pair_rows(wnid, cliques, clique_of, bank, scores, known, by_id, ctx.cfg))
    return rows, info


def pair_rows(wnid: str, cliques: list[list[str]], clique_of: dict[str, int], bank: Any, scores: Any,
              known: set[tuple[str, str]], by_id: dict[str, dict[str, Any]], cfg: BuildConfig) -> Iterator[dict]:
    """One row per unordered pair of every clique: its kept direction and keypoints, or why none was kept."""
    s = cfg.select
    threshold = s.point_threshold
    val = {g for g in range(len(cliques)) if stable_uniform(cfg.seed, "val", wnid, f"pairs:{g}") < s.val_fraction}
    for g, members in enumerate(cliques):
        ordered = sorted(members)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1:]:
                dirs = [(a, b), (b, a)]
                spans = [slice(int(bank.kps_start[e]), int(bank.kps_start[e] + bank.kps_count[e]))
                         for e in (bank.edge(*d) for d in dirs)]
                pair_score = [float(scores.edge["pair_consistent"][bank.edge(*d)]) for d in dirs]
                offsets = [scores.point["point_offset"][span] for span in spans]
                picks, n_ok = zip(*(choose_points(off, threshold, s.keypoints, s.point_order) for off in offsets),
                                  strict=True)
                choice = one_direction(pair_score, picks)
                d = 0 if choice is None else choice
                (src, trg), pick, span = dirs[d], picks[d], spans[d]
                src_kps, trg_kps = bank.src_kps[span], bank.trg_kps[span]
                row: dict[str, Any] = {
                    "group": clique_of[a], "reused": all(x in known for x in dirs),
                    "reverse_score": pair_score[1 - d], "src_id": src, "trg_id": trg,
                    "split": "val" if g in val else "trn", "keep": pick is not None,
                    "reason": "kept" if pick is not None else "too_few_consistent_points",
                    "pair_score": pair_score[d], "n_consistent": n_ok[d],
                    "src_kps": src_kps[pick].reshape(-1).tolist() if pick is not None else None,
                    "trg_kps": trg_kps[pick].reshape(-1).tolist() if pick is not None else None,
                    "point_offset": offsets[d][pick].tolist() if pick is not None else None,
                }
                for side, image_id in (("src", src), ("trg", trg)):
                    info = by_id[image_id]
                    row.update({f"{side}_rel_path": info["rel_path"], f"{side}_box": info["box"],
                                f"{side}_width": info["width"], f"{side}_height": info["height"]})
                yield row
