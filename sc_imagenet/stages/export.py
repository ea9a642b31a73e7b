"""Stage `export`: the selected pairs as an SC-ImageNet release that the public CATs and DHPF
SC-ImageNet loaders read unchanged (`<export.dir>/<export.name>/`: Layout/large/{trn,val}.txt,
PairAnnotation/{trn,val}/<pair_id>.json, JPEGImages/<wnid>/<wnid>_<n>.JPEG). Baseline RGB JPEGs
enter the release as `export.images` says; every other image file (PNG, CMYK, grayscale or progressive
under a .JPEG name) is re-encoded as a baseline RGB JPEG at `export.reencode_quality`. The manifest
lists every exported pair; the release itself is the stage's artifact, named in `_stage.json`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from sc_imagenet import __version__
from sc_imagenet.config import BuildConfig, ConfigError
from sc_imagenet.dataset.scimagenet import (
    CATS_MAX_POINTS,
    ExportPair,
    ReleaseError,
    float32_json,
    link_loader_names,
    write_release,
)
from sc_imagenet.io.integrity import build_relative
from sc_imagenet.io.manifest import ShardWriter, category_shards, read_shard, shard_path
from sc_imagenet.stages.base import Stage, StageContext, StageFigures, StageOutput, register_stage
from sc_imagenet.stages.pairs import PairsStage
from sc_imagenet.stages.schema import column, manifest_schema

SCHEMA = manifest_schema(
    column("pair_id", pa.string(), "the pair's id as listed in Layout/large/<split>.txt: "
           "`<index>-<src_n>-<trg_n>:<wnid>`"),
    column("split", pa.string(), "`trn` or `val`"),
    column("wnid", pa.string(), "category (the JPEGImages/ folder)"),
    column("src_id", pa.string(), "the build's source image id"),
    column("trg_id", pa.string(), "the build's target image id"),
    column("src_image", pa.string(), "source image in the release, relative to its root "
           "(`JPEGImages/<wnid>/<wnid>_<n>.JPEG`)"),
    column("trg_image", pa.string(), "target image in the release, relative to its root"),
    column("annotation", pa.string(), "the pair's JSON, relative to the release root "
           "(`PairAnnotation/<split>/<pair_id>.json`)"),
    column("status", pa.string(), "`exported`"),
)


class ExportFigures(StageFigures):
    """`export`'s record: where the release is, and what it holds."""

    release: str  # the release folder, relative to the build folder
    pairs: int
    pairs_by_split: dict[str, int]
    images: int
    categories: int
    keypoints_per_pair: int | dict[str, int]  # one count when every pair has the same number of keypoints
    images_by_method: dict[str, int]
    remapped_image_ids: int
    bytes_on_disk: int
    bytes_images: int
    aliases: list[str]

    def release_path(self, out_dir: Path) -> Path | None:
        return self.build_path(self.release, out_dir)


@register_stage
class ExportStage(Stage):
    name = "export"
    schema_version = 1
    schema = SCHEMA
    figures_model = ExportFigures
    partitioned = False
    inputs = ("pairs",)
    description = "the SC-ImageNet release (public CATs/DHPF loader layout)"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        e = cfg.export
        if cfg.select.keypoints > CATS_MAX_POINTS:
            raise ConfigError(f"select.keypoints = {cfg.select.keypoints}: the public CATs SC-ImageNet loader pads "
                              f"every pair to {CATS_MAX_POINTS} keypoints and fails on more; use at most "
                              f"{CATS_MAX_POINTS} (paper: 32) to export")
        return {"dir": str(e.dir) if e.dir is not None else None, "name": e.name, "images": e.images,
                "reencode_quality": e.reencode_quality}

    def run(self, ctx: StageContext) -> StageOutput:
        e = ctx.cfg.export
        root = export_dir(ctx) / e.name
        pairs_dir = ctx.inputs["pairs"]
        wnids = category_shards(pairs_dir)
        total = sum(kept_rows(shard_path(pairs_dir, w)).num_rows for w in wnids)
        bar = tqdm(total=total, desc="export", unit="pair", disable=not ctx.progress)

        def progress(done: int) -> None:
            bar.update(done - bar.n)
            ctx.report_progress(done, total)

        path = ctx.shard()
        info = {"fingerprint": ctx.fingerprint, "sc_imagenet_version": __version__, "images_mode": e.images}
        try:
            with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
                summary = write_release(root, release_pairs(pairs_dir, wnids, ctx.data_root), e.images, info=info,
                                        on_pair=lambda row: writer.write({**row, "status": "exported"}),
                                        on_progress=progress, reencode_quality=e.reencode_quality)
        finally:
            bar.close()
        aliases = link_loader_names(root, ctx.log)
        n = sum(summary.pairs_by_split.values())
        kps = summary.keypoints_per_pair
        extra: dict[str, Any] = {
            **{k: v for k, v in summary.as_dict().items() if k != "bytes_written"},
            "release": build_relative(root, ctx.out_dir),
            "keypoints_per_pair": next(iter(kps)) if len(kps) == 1 else {str(k): v for k, v in sorted(kps.items())},
            "bytes_on_disk": summary.bytes_written,
            "aliases": [build_relative(a, ctx.out_dir) for a in aliases],
        }
        methods = ", ".join(f"{k} {v}" for k, v in sorted(summary.images_by_method.items()))
        ctx.log(f"[export] {n} pairs ({', '.join(f'{k} {v}' for k, v in summary.pairs_by_split.items())}), "
                f"{summary.images} images ({methods}) of {summary.categories} categories → {root}")
        table = [{"split": k, "pairs": v} for k, v in summary.pairs_by_split.items()]
        table.append({"split": "total", "pairs": n})
        return StageOutput(n, {"exported": n}, [path], 0, ExportFigures.check(extra), table, [root])


PAIR_COLUMNS = PairsStage.columns(
    "src_id", "trg_id", "group", "split", "keep", "pair_score", "n_consistent", "src_kps", "trg_kps",
    "point_offset", "src_rel_path", "trg_rel_path", "src_box", "trg_box", "src_width", "src_height", "trg_width",
    "trg_height")


def export_dir(ctx: StageContext) -> Path:
    """`export.dir` (relative paths: from the working directory, like `data.root`), else `<out>/export`."""
    d = ctx.cfg.export.dir
    return Path(d).expanduser().resolve() if d is not None else ctx.out_dir / "export"


def kept_rows(shard: Path, columns: list[str] | None = None) -> pa.Table:
    keep = PairsStage.columns("keep")[0]
    table = read_shard(shard, columns=columns or [keep])
    return table.filter(pc.fill_null(table.column(keep), False))


def release_pairs(pairs_dir: Path, wnids: list[str], data_root: Path) -> Iterator[ExportPair]:
    """The kept pairs of the `pairs` manifest, one category after the other (one shard in memory)."""
    for wnid in wnids:
        for r in kept_rows(shard_path(pairs_dir, wnid), PAIR_COLUMNS).to_pylist():
            what = f"pairs row {wnid}/{r['src_id']} → {r['trg_id']}"
            for k in ("src_kps", "trg_kps", "src_box", "trg_box", "src_rel_path", "trg_rel_path"):
                if r[k] is None:
                    raise ReleaseError(f"{what}: kept but {k} is null")
            yield ExportPair(
                wnid=wnid, split=r["split"], src_id=r["src_id"], trg_id=r["trg_id"],
                src_source=data_root / r["src_rel_path"], trg_source=data_root / r["trg_rel_path"],
                src_rel_path=r["src_rel_path"], trg_rel_path=r["trg_rel_path"],
                src_size=(r["src_width"], r["src_height"]), trg_size=(r["trg_width"], r["trg_height"]),
                src_kps=np.asarray(r["src_kps"], np.float32), trg_kps=np.asarray(r["trg_kps"], np.float32),
                src_box=r["src_box"], trg_box=r["trg_box"],
                extra={"pair_score": float32_json(r["pair_score"]), "n_consistent": r["n_consistent"],
                       "group": r["group"], "point_offset": float32_json(r["point_offset"])},
            )
