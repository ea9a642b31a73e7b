"""Stage `select`: the top `select.fraction` of images by consistency, final pairs between selected
images (at most `select.pairs_per_image` per source image), each with exactly `select.keypoints`
pseudo keypoint pairs chosen by per-point consistency, and a deterministic trn/val split by image."""

from __future__ import annotations

import shutil
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from sc_imagenet.config import BuildConfig
from sc_imagenet.dataset.selection import (
    IMAGE_SCORE_COLUMNS,
    choose_points,
    passing_counts,
    select_top,
    stable_uniform,
    val_groups,
)
from sc_imagenet.io.manifest import (
    ShardWriter,
    category_shards,
    companion_path,
    read_shard,
    shard_is_current,
    shard_path,
)
from sc_imagenet.stages.base import Stage, StageContext, StageFigures, StageOutput, merge_counts, register_stage
from sc_imagenet.stages.consistency import IMAGES, ConsistencyStage
from sc_imagenet.stages.label import LabelStage
from sc_imagenet.stages.schema import column, manifest_schema
from sc_imagenet.stages.single_instance import read_kept_images

PIXELS = "original-image pixels, (x, y), pixel centres at integers"
SCHEMA = manifest_schema(
    column("src_id", pa.string(), "source image id"),
    column("trg_id", pa.string(), "target image id"),
    column("group", pa.int32(), "clique of the pair graph"),
    column("split", pa.string(), "`trn` or `val`: whole groups go to one split (val: groups in a seeded order "
           "until they hold `select.val_fraction` of the kept pairs), so no image is in both"),
    column("src_score", pa.float32(), "the source image's ranking score (`select.rank_by`; higher is better)"),
    column("src_rank", pa.int32(), "the source image's rank within `select.scope` (0 = best)"),
    column("src_selected", pa.bool_(), "the source image is in the top `select.fraction`"),
    column("trg_selected", pa.bool_(), "the target image is in the top `select.fraction`"),
    column("keep", pa.bool_(), "the pair is in the dataset"),
    column("reason", pa.string(), "`kept`, `src_not_selected`, `trg_not_selected`, `too_few_consistent_points` "
           "(fewer than `select.keypoints` candidates pass `select.point_threshold`) or `over_pairs_per_image` "
           "(the source image already has `select.pairs_per_image` better pairs)"),
    column("pair_score", pa.float32(), "the pair's consistency (3-image loop: fraction of consistent candidate "
           "loops); pairs of one source image are taken best first", "[0, 1]"),
    column("n_consistent", pa.int32(), "candidates passing `select.point_threshold`"),
    column("src_kps", pa.list_(pa.float32()), "the final keypoints in the source image, most consistent first "
           "(null unless kept)", f"flattened `(select.keypoints, 2)`, source {PIXELS}"),
    column("trg_kps", pa.list_(pa.float32()), "their matches in the target image (null unless kept)",
           f"flattened `(select.keypoints, 2)`, target {PIXELS}"),
    column("point_offset", pa.list_(pa.float32()), "the final keypoints' median loop offsets (null unless kept)",
           "`(select.keypoints,)`, units of the source object's size"),
    column("candidates", pa.list_(pa.int32()), "the final keypoints' positions among the edge's candidates (label "
           "order: `label`'s `src_kps`, `trg_kps`, `scores` and `consistency`'s per-point columns; null unless "
           "kept)", "`(select.keypoints,)`, 0-based"),
    column("src_rel_path", pa.string(), "source image path relative to the data root"),
    column("trg_rel_path", pa.string(), "target image path relative to the data root"),
    column("src_box", pa.list_(pa.float32()), "source object's detected box", f"4 values `[x1, y1, x2, y2]`, {PIXELS}"),
    column("trg_box", pa.list_(pa.float32()), "target object's detected box", f"4 values `[x1, y1, x2, y2]`, {PIXELS}"),
    column("src_width", pa.int32(), "source image width", "pixels"),
    column("src_height", pa.int32(), "source image height", "pixels"),
    column("trg_width", pa.int32(), "target image width", "pixels"),
    column("trg_height", pa.int32(), "target image height", "pixels"),
)


class SelectFigures(StageFigures):
    """`select`'s record: the counts the report and `sc-imagenet status` quote, and on synthetic data the
    ground-truth `quality` of the selection (`dataset.quality.evaluate_dataset`)."""

    images: int
    images_selected: int
    images_selected_category_scope: int
    images_selected_global_scope: int
    pairs: int
    pairs_by_split: dict[str, int]
    pairs_per_selected_image: float
    pairs_unordered: int
    pairs_unordered_per_selected_image: float
    keypoints_per_pair: int
    rank_by: str
    point_threshold: float
    quality: dict[str, Any] | None = None


@register_stage
class SelectStage(Stage):
    name = "select"
    schema_version = 2
    schema = SCHEMA
    figures_model = SelectFigures
    status_column = "reason"
    inputs = ("consistency", "label", "single_instance")
    description = "top images by consistency, final pairs and their keypoints, trn/val split"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        return {"seed": cfg.seed, "data_root": str(data_root), **cfg.select.model_dump(mode="json")}

    def run(self, ctx: StageContext) -> StageOutput:
        s = ctx.cfg.select
        threshold = s.point_threshold
        images = ranked_images(ctx.inputs["consistency"], s.rank_by, s.scope, s.fraction, ctx.cfg.seed)
        other = scope_keys(images, "global" if s.scope == "category" else "category")
        other_selected, _ = select_top(images["score"].to_numpy(), other, list(images["src_id"]), s.fraction)
        images_of = category_images(images)
        wnids = category_shards(ctx.inputs["consistency"])
        # the split needs every group's kept pairs first (a val split of groups whose pairs were all dropped
        # would be empty): a first pass decides every category's pairs into a staging shard (split still
        # open) and counts them, finished shards included, so a resumed run splits exactly as an
        # uninterrupted one; the second pass only fills in the split
        staging = ctx.artifacts() / "staging"
        kept_in_group: Counter[tuple[str, int]] = Counter()
        split = ctx.split_shards(wnids, self.status_column)
        todo = dict(split.todo)
        for wnid in tqdm(wnids, desc="select (pairs)", unit="category", disable=not ctx.progress):
            if wnid not in todo:
                decided = read_shard(ctx.shard(wnid), columns=["group", "keep"])
            else:
                stage_path = shard_path(staging, wnid)
                if not shard_is_current(stage_path, ctx.fingerprint):  # else: an interrupted run's, reused
                    rows = select_pairs(category_edges(ctx.inputs, wnid), images_of(wnid), set(),
                                        s.rank_by, s.keypoints, s.pairs_per_image, threshold, ctx.cfg.seed,
                                        s.point_order)
                    with ShardWriter(stage_path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
                        writer.write_many(rows)
                decided = read_shard(stage_path, columns=["group", "keep"])
            for group, keep in zip(decided["group"].to_pylist(), decided["keep"].to_pylist(), strict=True):
                kept_in_group[(wnid, group)] += bool(keep)
        groups = images.groupby(["wnid", "group"]).size()
        val = val_groups([(w, int(g), kept_in_group[(w, int(g))]) for (w, g) in groups.index], s.val_fraction,
                         ctx.cfg.seed)

        counts = list(split.done.values())
        bar = tqdm(total=len(todo), desc="select (split)", unit="category", disable=not ctx.progress)
        for wnid, path in todo.items():
            table = read_shard(shard_path(staging, wnid))
            in_val = pa.array([(wnid, g) in val for g in table["group"].to_pylist()], pa.bool_())
            table = table.set_column(table.schema.get_field_index("split"), "split",
                                     pc.if_else(in_val, "val", "trn"))
            with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
                writer.write_table(table)
            counts.append(dict(Counter(table["reason"].to_pylist())))
            bar.update()
            ctx.report_progress(bar.n, len(todo))
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        by_reason = merge_counts(counts)
        extra = self.figures(ctx, images, other_selected, threshold, split.shards)
        summary = [{"reason": k, "pairs": v} for k, v in sorted(by_reason.items())]
        summary.append({"reason": "selected images", "pairs": extra["images_selected"]})
        return StageOutput(sum(by_reason.values()), by_reason, split.shards, len(split.done),
                           SelectFigures.check(extra), summary)

    @staticmethod
    def figures(ctx: StageContext, images: pd.DataFrame, other_selected: np.ndarray, threshold: float,
                shards: list[Path]) -> dict[str, Any]:
        s = ctx.cfg.select
        kept = kept_pair_counts(shards)
        n_sel = int(images["selected"].sum())
        extra: dict[str, Any] = {
            "images": len(images), "images_selected": n_sel,
            f"images_selected_{s.scope}_scope": n_sel,
            f"images_selected_{'global' if s.scope == 'category' else 'category'}_scope": int(other_selected.sum()),
            "pairs": kept.pairs, "pairs_by_split": kept.by_split,
            "pairs_per_selected_image": round(kept.pairs / max(n_sel, 1), 3) if kept.pairs else 0.0,
            # a → b and b → a are two pairs of the release (each direction has its own keypoints); the paper's
            # ratio of 7.0 is compared with these unordered counts (docs/dataset.md, "How pairs are counted")
            "pairs_unordered": kept.unordered,
            "pairs_unordered_per_selected_image": round(kept.unordered / max(n_sel, 1), 3) if kept.pairs else 0.0,
            "keypoints_per_pair": s.keypoints, "rank_by": s.rank_by, "point_threshold": threshold,
        }
        if ctx.cfg.data.source == "synthetic":
            from sc_imagenet.dataset.quality import TruthOracle, evaluate_dataset, quality_line

            # synthetic builds are demo-sized: the ground-truth check reads every pair at once
            cols = SelectStage.columns("src_id", "trg_id", "split", "keep", "src_kps", "trg_kps")
            rows = pd.concat([read_shard(p, columns=cols).to_pandas() for p in shards], ignore_index=True) \
                if shards else pd.DataFrame(columns=cols)
            edges = pd.concat([category_edges(ctx.inputs, w) for w in category_shards(ctx.inputs["consistency"])],
                              ignore_index=True)
            quality = evaluate_dataset(TruthOracle(ctx.data_root), edges, images, rows, s.fraction, s.keypoints,
                                       threshold, ctx.cfg.seed, s.point_order)
            extra["quality"] = quality
            ctx.log("[select] " + quality_line(quality))
        return extra


@dataclass
class KeptPairs:
    pairs: int = 0
    unordered: int = 0  # distinct image pairs {a, b}: a → b and b → a count once
    by_split: dict[str, int] = field(default_factory=dict)


def kept_pair_counts(shards: list[Path]) -> KeptPairs:
    """Kept pairs of the written shards, one shard at a time (memory: one category). Pairs never cross
    categories, so unordered pairs are counted inside each shard."""
    out = KeptPairs()
    split: Counter[str] = Counter()
    for path in shards:
        t = read_shard(path, columns=SelectStage.columns("src_id", "trg_id", "split", "keep"),
                          filters=pc.field("keep"))
        src, trg = t["src_id"].to_pylist(), t["trg_id"].to_pylist()
        out.pairs += len(src)
        out.unordered += len({(a, b) if a < b else (b, a) for a, b in zip(src, trg, strict=True)})
        split.update(t["split"].to_pylist())
    out.by_split = dict(split)
    return out


PAIR_COLUMNS = {"loop3": "pair_consistent", "loop2": "pair_fb_consistent", "score": "pair_match_score"}
POINT_COLUMNS = {"loop3": "point_offset", "loop2": "point_fb_offset"}
IMAGE_COLUMNS = ConsistencyStage.table_columns(IMAGES, "image_id", "group", *IMAGE_SCORE_COLUMNS.values(),
                                               "offset_mean")
EDGE_COLUMNS = ConsistencyStage.columns("src_id", "trg_id", "group", "status", *PAIR_COLUMNS.values(),
                                        *POINT_COLUMNS.values())
LABEL_COLUMNS = LabelStage.columns("src_id", "trg_id", "status", "src_kps", "trg_kps", "scores")
IMAGE_INFO = ["image_id", "rel_path", "box", "width", "height"]
EDGE_STATUSES = ("ok", "no_loops")


def image_table(consistency_dir: Path, rank_by: str, seed: int) -> pd.DataFrame:
    """One row per source image with an edge (`consistency`'s image table): wnid, src_id, group, its figures
    and its ranking `score`."""
    parts = []
    for wnid in category_shards(consistency_dir):
        t = read_shard(companion_path(shard_path(consistency_dir, wnid), consistency_dir, IMAGES),
                       columns=IMAGE_COLUMNS).to_pandas().rename(columns={"image_id": "src_id"})
        t.insert(0, "wnid", wnid)
        parts.append(t)
    images = (pd.concat(parts, ignore_index=True) if parts
              else pd.DataFrame(columns=["wnid", "src_id", *IMAGE_COLUMNS[1:]]))
    images = images.sort_values(["wnid", "src_id"]).reset_index(drop=True)
    if rank_by == "random":
        images["score"] = [stable_uniform(seed, "rank", i) for i in images["src_id"]]
    else:
        images["score"] = images[IMAGE_SCORE_COLUMNS[rank_by]].astype(np.float64)
    return images


def scope_keys(images: pd.DataFrame, scope: str) -> list[str]:
    """The group each image is ranked within: its category, or one group for the whole build."""
    return list(images["wnid"]) if scope == "category" else ["all"] * len(images)


def ranked_images(consistency_dir: Path, rank_by: str, scope: str, fraction: float, seed: int) -> pd.DataFrame:
    """`image_table` with each image's `rank` within its scope and whether it is `selected` (in the top
    `fraction` of it)."""
    images = image_table(consistency_dir, rank_by, seed)
    images["selected"], images["rank"] = select_top(images["score"].to_numpy(), scope_keys(images, scope),
                                                    list(images["src_id"]), fraction)
    return images


def category_images(images: pd.DataFrame) -> Callable[[str], pd.DataFrame]:
    """`select_pairs`' image table of each category: `images` (rows of `ranked_images`) split by `wnid` once, each
    part indexed by `src_id`; an empty table for a category without images. Pairs never leave their category,
    and a table of the whole build's images per category would make selection quadratic in the build's size."""
    parts = {w: part.set_index("src_id") for w, part in images.groupby("wnid", sort=False)}
    empty = images.iloc[:0].set_index("src_id")
    return lambda wnid: parts.get(wnid, empty)


def category_edges(inputs: dict[str, Path], wnid: str) -> pd.DataFrame:
    """One category's edges: consistency scores joined with the label candidates and both images' info."""
    cons = read_shard(shard_path(inputs["consistency"], wnid), columns=EDGE_COLUMNS).to_pandas()
    cons = cons[cons["status"].isin(EDGE_STATUSES)]
    lab = read_shard(shard_path(inputs["label"], wnid), columns=LABEL_COLUMNS).to_pandas()
    lab = lab[lab["status"] == "ok"].drop(columns="status")
    edges = cons.merge(lab, on=["src_id", "trg_id"], how="inner", validate="one_to_one")
    info = read_kept_images(inputs["single_instance"], IMAGE_INFO, [wnid]).to_pandas().set_index("image_id")
    for side in ("src", "trg"):
        part = info.loc[edges[f"{side}_id"]].reset_index(drop=True)
        for col in ("rel_path", "box", "width", "height"):
            edges[f"{side}_{col}"] = part[col].to_numpy()
    edges["wnid"] = wnid
    return edges.sort_values(["src_id", "trg_id"]).reset_index(drop=True)


def point_order_values(edge: Any, rank_by: str, seed: int) -> tuple[np.ndarray, float | None]:
    """Per-candidate values to sort by (lower is better) and whether a threshold applies."""
    k = len(edge.scores)
    if rank_by in POINT_COLUMNS:
        return np.asarray(getattr(edge, POINT_COLUMNS[rank_by]), np.float64), None
    if rank_by == "score":
        return np.arange(k, dtype=np.float64), float("inf")  # label order is by decreasing confidence
    rng = np.random.default_rng([seed, zlib.crc32(edge.src_id.encode()), zlib.crc32(edge.trg_id.encode())])
    return rng.permutation(k).astype(np.float64), float("inf")


def select_pairs(edges: pd.DataFrame, images: pd.DataFrame, val: set[tuple[str, int]], rank_by: str,
                 keypoints: int, pairs_per_image: int, threshold: float, seed: int,
                 point_order: str = "score") -> list[dict[str, Any]]:
    """One output row per edge of the category, with its decision and, if kept, its final keypoints.
    `images`: `ranked_images` rows indexed by `src_id`, the category's alone (other rows only cost time; a
    target without a row is not selected)."""
    # plain dicts and lists: a pandas scalar lookup or row iterator per edge was most of this stage's time
    selected = dict(zip(images.index, images["selected"].astype(bool).tolist(), strict=True))
    score = dict(zip(images.index, images["score"].astype(float).tolist(), strict=True))
    rank = dict(zip(images.index, images["rank"].astype(int).tolist(), strict=True))
    info = [f"{side}_{c}" for side in ("src", "trg") for c in ("rel_path", "box", "width", "height")]
    col = {c: edges[c].tolist() for c in ("src_id", "trg_id", "group", "wnid", *info)}
    src_sel = [selected[i] for i in col["src_id"]]
    trg_sel = [selected.get(i, False) for i in col["trg_id"]]
    # the count of consistent candidates is every edge's; the keypoints are chosen only where both images are
    # selected (the other edges are dropped whatever their points)
    if rank_by in POINT_COLUMNS:
        n_consistent = passing_counts(edges[POINT_COLUMNS[rank_by]].tolist(), threshold).tolist()
    else:  # the label order or a random one: every candidate passes
        n_consistent = [len(v) for v in edges["scores"].tolist()]
    if rank_by == "random":
        pair_scores = [stable_uniform(seed, "pair", a, b) for a, b in zip(col["src_id"], col["trg_id"], strict=True)]
    else:
        pair_scores = edges[PAIR_COLUMNS[rank_by]].astype(float).tolist()
    eligible = [i for i, (a, b, n) in enumerate(zip(src_sel, trg_sel, n_consistent, strict=True))
                if a and b and n >= keypoints]
    chosen: dict[int, tuple[np.ndarray, Any]] = {}
    for i, e in zip(eligible, edges.iloc[eligible].itertuples(index=False), strict=True):
        values, limit = point_order_values(e, rank_by, seed)
        pick, _ = choose_points(values, threshold if limit is None else limit, keypoints,
                                point_order if limit is None else "consistency")
        if pick is not None:
            chosen[i] = (pick, e)
    rows = []
    for i in range(len(edges)):
        pick, e = chosen.get(i, (None, None))
        reason = ("src_not_selected" if not src_sel[i] else "trg_not_selected" if not trg_sel[i]
                  else "too_few_consistent_points" if pick is None else "kept")
        row: dict[str, Any] = {
            "src_id": col["src_id"][i], "trg_id": col["trg_id"][i], "group": int(col["group"][i]),
            "split": "val" if (col["wnid"][i], int(col["group"][i])) in val else "trn",
            "src_score": score[col["src_id"][i]], "src_rank": rank[col["src_id"][i]],
            "src_selected": src_sel[i], "trg_selected": trg_sel[i], "keep": reason == "kept", "reason": reason,
            "pair_score": pair_scores[i], "n_consistent": n_consistent[i],
            "src_kps": None, "trg_kps": None, "point_offset": None, "candidates": None,
            **{c: col[c][i] for c in info},
        }
        if pick is not None:
            row.update(src_kps=np.asarray(e.src_kps, np.float32).reshape(-1, 2)[pick].reshape(-1).tolist(),
                       trg_kps=np.asarray(e.trg_kps, np.float32).reshape(-1, 2)[pick].reshape(-1).tolist(),
                       point_offset=(np.asarray(e.point_offset, np.float32)[pick].tolist() if rank_by == "loop3"
                                     else None),
                       candidates=pick.tolist())
        rows.append(row)
    # each source image keeps its best `pairs_per_image` eligible pairs
    by_src: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["keep"]:
            by_src.setdefault(r["src_id"], []).append(r)
    for pairs in by_src.values():
        pairs.sort(key=lambda r: (-(r["pair_score"] if np.isfinite(r["pair_score"]) else -np.inf), r["trg_id"]))
        for r in pairs[pairs_per_image:]:
            r.update(keep=False, reason="over_pairs_per_image")
    for r in rows:
        if not r["keep"]:
            r.update(src_kps=None, trg_kps=None, point_offset=None, candidates=None)
    return rows
