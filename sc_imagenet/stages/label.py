"""Stage `label`: the trained generator on every edge of a per-category pair graph (paper §3.4).

Each category's kept images are split, seeded, into cliques of about `label.group_size` images, and
every ordered pair inside a clique is an edge. Per edge the stage stores the generator's dense
pixel-level flow (float16, one target point per source cell) and its top `label.candidates`
one-to-one, foreground-constrained pseudo-labels in original pixels. Backbone features are computed
once per image, pair heads run in batches, one shard per category.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from sc_imagenet.config import BuildConfig, ConfigError
from sc_imagenet.dataset.graph import group_edges, group_sizes, pair_groups
from sc_imagenet.io.images import load_rgb, probe_image
from sc_imagenet.io.manifest import ShardWriter, category_shards, read_shard
from sc_imagenet.stages.base import (
    ShardedStage,
    ShardResult,
    Shared,
    StageContext,
    StageFigures,
    StageOutput,
    merge_counts,
    register_stage,
)
from sc_imagenet.stages.schema import column, manifest_schema
from sc_imagenet.stages.single_instance import foreground_provider, read_kept_images

if TYPE_CHECKING:
    from sc_imagenet.foreground.geometry import MaskAtlas
    from sc_imagenet.foreground.provider import ForegroundProvider
    from sc_imagenet.matching.predictor import PairLabel, PseudoLabelGenerator

PIXELS = "original-image pixels, (x, y), pixel centres at integers"
SCHEMA = manifest_schema(
    column("src_id", pa.string(), "source image id"),
    column("trg_id", pa.string(), "target image id (null on a row that is not an edge)"),
    column("group", pa.int32(), "clique of the category's pair graph the edge belongs to (-1 on a non-edge row)"),
    column("status", pa.string(), "`ok` (an edge), `unreadable` (the image cannot be decoded any more; it gets "
           "no edges) or `too_few_images` (fewer than 3 readable kept images in the category: no loop closes)"),
    column("error", pa.string(), "why the row is not an edge (null on edges)"),
    column("src_width", pa.int32(), "source image width", "pixels"),
    column("src_height", pa.int32(), "source image height", "pixels"),
    column("trg_width", pa.int32(), "target image width", "pixels"),
    column("trg_height", pa.int32(), "target image height", "pixels"),
    column("grid_h", pa.int32(), "rows of the source feature grid the flow is defined on", "cells"),
    column("grid_w", pa.int32(), "columns of the source feature grid the flow is defined on", "cells"),
    column("flow", pa.list_(pa.float16()), "dense flow: for every source cell (row-major), the target point of "
           "its best match (sub-cell)", f"flattened `(grid_h·grid_w, 2)`, target {PIXELS}; float16"),
    column("src_kps", pa.list_(pa.float32()), "pseudo-label candidates' source points, best first",
           f"flattened `(K, 2)`, source {PIXELS}"),
    column("trg_kps", pa.list_(pa.float32()), "pseudo-label candidates' target points (same order)",
           f"flattened `(K, 2)`, target {PIXELS}"),
    column("scores", pa.list_(pa.float32()), "candidates' PMPS confidence (decreasing)", "`(K,)`"),
)


class GeneratorStage(ShardedStage):
    """A category-sharded stage that runs the trained generator (`label`, `pairs`): on `label.device`, the model
    loaded once per run or worker process."""

    tags = ("gpu",)

    def device(self, cfg: BuildConfig) -> str | None:
        return cfg.label.device

    def load_shared(self, ctx: StageContext) -> LoadedGenerator:
        return load_label_generator(ctx)


def generator_settings(cfg: BuildConfig) -> dict[str, Any]:
    """The `label` settings that change what the generator's labels are (batch sizes, device and amp change
    speed, and bf16 rounding on GPU, not the method)."""
    lab = cfg.label
    return {"candidates": lab.candidates, "nms_cells": lab.nms_cells, "pixel_foreground": lab.pixel_foreground,
            "foreground": lab.foreground}


class LabelFigures(StageFigures):
    """`label`'s record: the pair graph's size and the labelling work (counters of this run: categories kept from
    an interrupted run are not counted again)."""

    images: int  # kept images that got edges
    groups: int  # cliques, summed over the categories
    edges: int  # ordered pairs labelled (`ok` rows)
    unreadable: int  # kept images that no longer decode (no edges)
    too_few_images: int  # kept images of categories with fewer than 3 readable ones (no edges)
    categories: int
    categories_with_edges: int
    pair_forwards: int  # edges through the pair head in this run
    images_encoded: int  # backbone encodings in this run (once per image per clique)
    seconds_per_edge: float | None  # labelling wall time per pair forward (model loading left out); None: none ran
    device: str | None  # where the generator ran; None when no category ran it
    amp: bool | None  # bf16 autocast; None when no category ran the generator
    foreground: str  # the foreground source that constrained the matches (`label.foreground`)
    empty_foreground_masks: int  # masks that covered no feature cell (matched unconstrained instead)


@register_stage
class LabelStage(GeneratorStage):
    name = "label"
    schema_version = 1
    schema = SCHEMA
    figures_model = LabelFigures
    inputs = ("single_instance", "train")
    description = "pseudo-labels and dense flows on every edge of a per-category pair graph"
    unit = "edge"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        lab = cfg.label
        from sc_imagenet.foreground import foreground_names

        if lab.foreground not in foreground_names():
            # an unset label.foreground took train.foreground's value when the config was loaded
            field_name = "train.foreground" if lab.foreground == cfg.train.foreground else "label.foreground"
            raise ConfigError(f"{field_name}: unknown foreground source {lab.foreground!r}; known: "
                              f"{foreground_names()}")
        return {"seed": cfg.seed, "data_root": str(data_root), "group_size": lab.group_size,
                **generator_settings(cfg)}

    def shard_keys(self, ctx: StageContext) -> list[str]:
        return category_shards(ctx.inputs["single_instance"])

    def progress_total(self, ctx: StageContext, todo: list[str]) -> int:
        # edges if every kept image still decodes (unreadable images: the bar ends a little short)
        return sum(planned_edges(ctx.inputs["single_instance"], todo, ctx.cfg.label.group_size).values())

    def shard_work(self, ctx: StageContext, wnid: str, path: Path, shared: Shared,
                   advance: Callable[[int], None]) -> ShardResult:
        t0 = time.perf_counter()
        work = LabelWork(ctx, shared, advance)
        counts = work.category(wnid, path)
        info = {"pair_forwards": work.pair_forwards, "images_encoded": work.images_encoded,
                "empty_masks": work.empty_masks, "seconds": time.perf_counter() - t0,
                "load_seconds": work.load_seconds, "device": work.device, "amp": work.amp}
        return ShardResult(wnid, sum(counts.values()), counts, info=info)

    def finalize(self, ctx: StageContext, results: list[ShardResult], shared: Shared) -> StageOutput:
        summary = [category_summary(r.wnid, ctx.shard(r.wnid)) for r in results]
        by_status = merge_counts([r.by_status for r in results])
        fresh = [r.info for r in results if not r.skipped]

        def total(key: str) -> float:
            return sum(i[key] for i in fresh)

        loaded = [i for i in fresh if i["device"] is not None]  # categories that ran the generator
        totals = {k: sum(r[k] for r in summary) for k in ("images", "groups", "edges", "unreadable",
                                                          "too_few_images")}
        pair_forwards = int(total("pair_forwards"))
        extra: dict[str, Any] = {
            **totals, "categories": len(summary),
            "categories_with_edges": sum(1 for r in summary if r["edges"]),
            "pair_forwards": pair_forwards, "images_encoded": int(total("images_encoded")),
            # labelling wall time (decoding, masks, encoding, pair head, PMPS, writing; not loading the model),
            # summed over the categories (over workers, on Dask)
            "seconds_per_edge": (round((total("seconds") - total("load_seconds")) / pair_forwards, 5)
                                 if pair_forwards else None),
            "device": loaded[0]["device"] if loaded else None, "amp": loaded[0]["amp"] if loaded else None,
            "foreground": ctx.cfg.label.foreground, "empty_foreground_masks": int(total("empty_masks")),
        }
        rows = sum(by_status.values())
        return StageOutput(rows, by_status, [ctx.shard(r.wnid) for r in results], len(results) - len(fresh),
                           LabelFigures.check(extra), summary)


KEPT_COLUMNS = ["image_id", "rel_path", "width", "height"]
SUMMARY_COLUMNS = ["src_id", "status", "group"]


def planned_edges(single_instance_dir: Path, wnids: list[str], group_size: int) -> dict[str, int]:
    """Edges per category if every kept image still decodes (the progress bar's total)."""
    if not wnids:
        return {}
    kept = Counter(read_kept_images(single_instance_dir, ["wnid"], wnids).column("wnid").to_pylist())
    return {w: sum(g * (g - 1) for g in group_sizes(kept.get(w, 0), group_size)) for w in wnids}


def category_summary(wnid: str, path: Path) -> dict[str, Any]:
    """One summary row of a finished shard: kept images, how many got edges, groups, edges, non-edges."""
    table = read_shard(path, columns=SUMMARY_COLUMNS).to_pydict()
    ok = [i for i, st in enumerate(table["status"]) if st == "ok"]
    status = Counter(table["status"])
    return {"wnid": wnid, "kept": len(set(table["src_id"])), "images": len({table["src_id"][i] for i in ok}),
            "groups": len({table["group"][i] for i in ok}), "edges": len(ok),
            "unreadable": status.get("unreadable", 0), "too_few_images": status.get("too_few_images", 0)}


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass
class LoadedGenerator:
    """The trained generator on its device: `label`'s per-process shared state."""

    gen: PseudoLabelGenerator
    device: str
    amp: bool


def load_label_generator(ctx: StageContext) -> LoadedGenerator:
    from sc_imagenet.devices import resolve_device, use_amp
    from sc_imagenet.matching.builder import load_generator  # torch loads only when labelling runs
    from sc_imagenet.stages.train import TrainFigures, backbone_checkpoint

    lab = ctx.cfg.label
    trained = TrainFigures.read(ctx.inputs["train"])
    ckpt = trained.checkpoint_path(ctx.out_dir) if trained is not None else None
    if ckpt is None or not ckpt.is_file():
        raise ConfigError(f"label: the train stage's generator checkpoint {ckpt} is missing; rerun train")
    device = resolve_device(lab.device)
    amp = use_amp(lab.amp, device)
    gen = load_generator(ckpt, device, backbone_checkpoint(ctx.cfg))
    gen.nms_cells, gen.amp = lab.nms_cells, amp
    ctx.log(f"[label] generator {ckpt} on {device}" + (" (bf16 autocast)" if amp else ""))
    return LoadedGenerator(gen, device, amp)


@dataclass
class LabelWork:
    """One category's labelling: the generator (from `shared`, on first need), one group's features at a
    time, rows streamed into the category's shard."""

    ctx: StageContext
    shared: Shared
    advance: Callable[[int], None]
    pair_forwards: int = 0
    images_encoded: int = 0
    empty_masks: int = 0
    load_seconds: float = 0.0
    device: str | None = None
    amp: bool | None = None

    def generator(self) -> PseudoLabelGenerator:
        t0 = time.perf_counter()
        loaded: LoadedGenerator = self.shared()  # loads once per run or worker process; cached after
        self.load_seconds += time.perf_counter() - t0
        self.device, self.amp = loaded.device, loaded.amp
        return loaded.gen

    def provider(self, wnid: str) -> ForegroundProvider | None:
        source = self.ctx.cfg.label.foreground
        if source == "none":
            return None
        return foreground_provider(self.ctx.inputs["single_instance"], self.ctx.data_root, source, wnids=[wnid])

    def load(self, rel_path: str) -> np.ndarray:
        return load_rgb(self.ctx.data_root / rel_path, max_pixels=self.ctx.cfg.index.max_pixels)

    def category(self, wnid: str, path: Path) -> dict[str, int]:
        """Label one category into its shard; returns its rows per status."""
        lab = self.ctx.cfg.label
        kept = sorted(read_kept_images(self.ctx.inputs["single_instance"], KEPT_COLUMNS, [wnid]).to_pylist(),
                      key=lambda r: r["image_id"])
        counts: Counter[str] = Counter()
        with ShardWriter(path, SCHEMA, self.ctx.fingerprint, LabelStage.schema_version) as writer:
            def emit(row: dict[str, Any]) -> None:
                writer.write(row)
                counts[row["status"]] += 1

            # check every kept image up front (a JPEG's whole entropy stream decoded at 1/8 scale, other formats
            # in full; no pixels kept): an image that no longer decodes gets its row and joins no group
            readable = []
            for r in kept:
                probe = probe_image(self.ctx.data_root / r["rel_path"], "draft", self.ctx.cfg.index.max_pixels)
                if probe.status != "ok":
                    emit(non_edge(r, "unreadable", f"{probe.status}: {probe.error}"[:300]))
                else:
                    readable.append(r)
            if 0 < len(readable) < 3:
                for r in readable:
                    emit(non_edge(r, "too_few_images", f"{len(readable)} readable kept image(s) in the category; "
                                                       "a loop needs 3"))
            groups = pair_groups([r["image_id"] for r in readable], lab.group_size, self.ctx.cfg.seed, wnid)
            if groups:
                by_id = {r["image_id"]: r for r in readable}
                provider = self.provider(wnid)
                for gi, group in enumerate(groups):
                    self.group(gi, [by_id[i] for i in group], provider, emit)
        return dict(counts)

    def group(self, gi: int, members: list[dict[str, Any]], provider: ForegroundProvider | None,
              emit: Callable[[dict[str, Any]], None], only: set[tuple[str, str]] | None = None) -> int:
        """Encode a group's images once, then every ordered pair (or the pairs in `only`) through the pair head
        in batches."""
        from sc_imagenet.foreground.geometry import MaskAtlas  # cv2 loads only when labelling runs
        from sc_imagenet.matching.predictor import cat_features, take_features

        if only is not None:  # encode just the images the wanted edges touch
            touched = {i for edge in only for i in edge}
            members = [r for r in members if r["image_id"] in touched]
        if len(members) < 2:
            return 0

        lab = self.ctx.cfg.label
        gen = self.generator()
        parts, hw, fg, full = [], [], [], []
        for chunk in _batches(members, lab.batch_images):
            images = [self.load(r["rel_path"]) for r in chunk]
            feats = gen.encode(images)
            parts.append(feats)
            for r, img in zip(chunk, images, strict=True):
                hw.append(img.shape[:2])
                pixels = None if provider is None else provider.mask_for(r["image_id"], img.shape[:2], image=img)
                mask = None if pixels is None else gen.grid_mask(pixels, feats.grid)
                if mask is not None and not bool((mask > 0).any()):
                    self.empty_masks += 1  # an empty mask constrains every match away: no constraint instead
                    mask = pixels = None
                fg.append(mask)
                full.append(pixels > 0.5 if pixels is not None and lab.pixel_foreground else None)
        feats = cat_features(parts)
        del parts
        on_object = MaskAtlas(full) if any(m is not None for m in full) else None
        del full
        self.images_encoded += len(members)
        ids = [r["image_id"] for r in members]
        pos = {i: n for n, i in enumerate(ids)}
        edges = [(pos[s], pos[t]) for s, t, _ in group_edges([ids]) if only is None or (s, t) in only]
        grid_h, grid_w = feats.grid
        for batch in _batches(edges, lab.batch_pairs):
            s, t = [e[0] for e in batch], [e[1] for e in batch]
            out = gen.label_pairs(take_features(feats, s), take_features(feats, t), [hw[i] for i in s],
                                  [hw[i] for i in t], lab.candidates, [fg[i] for i in s], [fg[i] for i in t])
            if on_object is not None:
                out = keep_on_foreground(out, batch, on_object)
            for (si, ti), o in zip(batch, out, strict=True):
                emit({"src_id": ids[si], "trg_id": ids[ti], "group": gi, "status": "ok", "error": None,
                      "src_width": hw[si][1], "src_height": hw[si][0], "trg_width": hw[ti][1],
                      "trg_height": hw[ti][0], "grid_h": grid_h, "grid_w": grid_w,
                      "flow": o.flow.reshape(-1).astype(np.float16), "src_kps": o.src_xy.reshape(-1),
                      "trg_kps": o.trg_xy.reshape(-1), "scores": o.score})
            self.pair_forwards += len(batch)
            self.advance(len(batch))
        return len(edges)


def keep_on_foreground(labels: Sequence[PairLabel], pairs: Sequence[tuple[int, int]],
                       masks: MaskAtlas) -> list[PairLabel]:
    """The candidates whose source and target points both lie on their images' foreground (pixel level), for a
    batch of pairs at once: `pairs[i]` = (source, target) of `labels[i]` as images of `masks`."""
    counts = np.array([len(label.score) for label in labels], np.int64)
    if not counts.sum():
        return list(labels)
    ends = np.cumsum(counts)[:-1]
    src = np.repeat([s for s, _ in pairs], counts)
    trg = np.repeat([t for _, t in pairs], counts)
    keep = (masks.contains(src, np.concatenate([np.reshape(label.src_xy, (-1, 2)) for label in labels]))
            & masks.contains(trg, np.concatenate([np.reshape(label.trg_xy, (-1, 2)) for label in labels])))
    return [label if k.all() else label._replace(src_xy=label.src_xy[k], trg_xy=label.trg_xy[k], score=label.score[k])
            for label, k in zip(labels, np.split(keep, ends), strict=True)]


def non_edge(kept_row: dict[str, Any], status: str, error: str) -> dict[str, Any]:
    """The row of a kept image that gets no edges (`unreadable`, `too_few_images`)."""
    return {"src_id": kept_row["image_id"], "trg_id": None, "group": -1, "status": status, "error": error,
            "src_width": kept_row["width"], "src_height": kept_row["height"]}
