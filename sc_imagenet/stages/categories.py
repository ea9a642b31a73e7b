"""Stage `categories`: apply the curated keep-list (plus user overrides) to the folders on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from sc_imagenet.categories import (
    LIST_COLUMNS,
    OVERRIDE_COLUMNS,
    CategoryListError,
    apply_overrides,
    read_category_csv,
    resolve_categories,
)
from sc_imagenet.config import BuildConfig, ConfigError
from sc_imagenet.io.manifest import ShardWriter, file_sha256
from sc_imagenet.io.scan import list_files
from sc_imagenet.paths import CATEGORY_LISTS_DIR
from sc_imagenet.stages.base import Stage, StageContext, StageFigures, StageOutput, data_identity, register_stage
from sc_imagenet.stages.schema import column, manifest_schema

SCHEMA = manifest_schema(
    column("wnid", pa.string(), "category id = folder name (`n01440764`)"),
    column("name", pa.string(), "lemma from the list (the wnid if none)"),
    column("keep", pa.bool_(), "category is used by later stages"),
    column("reason", pa.string(), "empty if kept; else `scene`, `texture`, `crowded`, `no_salient_parts`, `other`, "
           "`unlisted` (folder not in the list, `categories.unlisted: drop`) or `override`"),
    column("note", pa.string(), "why it was removed (curated list or override file)"),
    column("source", pa.string(), "`curated`, `override` (set by the user override file), `unlisted`, or "
           "`folder` (`categories.list: null`)"),
    column("n_images", pa.int64(), "non-hidden files in `<root>/<wnid>/` (0 if the folder is missing)", "files"),
)


class CategoriesFigures(StageFigures):
    """`categories`' record: how many categories the list and the overrides keep, and how many images they hold."""

    kept: int  # categories kept (`keep` rows)
    removed: int  # categories dropped
    kept_with_images: int  # kept categories with at least one file under the data root
    images_in_kept: int  # files in the kept categories' folders (before `index` checks them)
    removed_by_reason: dict[str, int]  # dropped categories per `reason` (`scene`, `unlisted`, `override`, …)


def category_list_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".csv" or p.exists():
        if not p.exists():
            raise ConfigError(f"categories.list: file not found: {p}")
        return p
    candidate = CATEGORY_LISTS_DIR / f"{name_or_path}.csv"
    if not candidate.exists():
        known = sorted(q.stem for q in CATEGORY_LISTS_DIR.glob("*.csv"))
        raise ConfigError(f"categories.list: unknown list {name_or_path!r}; shipped lists: {known} (or a path)")
    return candidate


def scan_category_folders(root: Path) -> dict[str, int]:
    """wnid → number of non-hidden files, for every non-hidden folder directly under `root`
    (`_groundtruth` and other `_`/`.` folders are not categories)."""
    folders: dict[str, int] = {}
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith((".", "_")):
                folders[entry.name] = len(list_files(Path(entry.path)))
    return folders


@register_stage
class CategoriesStage(Stage):
    name = "categories"
    schema_version = 1
    schema = SCHEMA
    figures_model = CategoriesFigures
    partitioned = False
    status_column = ""  # rows_by_status counts decisions: `keep` and `drop:<reason>`
    description = "manual category filtering (curated keep-list + overrides)"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        c = cfg.categories
        return {
            **data_identity(cfg, data_root),
            "list_sha256": file_sha256(category_list_path(c.list)) if c.list else None,
            "overrides_sha256": file_sha256(Path(c.overrides)) if c.overrides else None,
            "unlisted": c.unlisted,
        }

    def run(self, ctx: StageContext) -> StageOutput:
        c = ctx.cfg.categories
        try:
            curated = read_category_csv(category_list_path(c.list), LIST_COLUMNS) if c.list else None
            if curated is not None and c.overrides:
                curated = apply_overrides(curated, read_category_csv(Path(c.overrides), OVERRIDE_COLUMNS))
        except CategoryListError as exc:
            raise ConfigError(f"categories: {exc}") from exc
        folders = scan_category_folders(ctx.data_root)
        table = resolve_categories(curated, folders, c.unlisted)
        path = ctx.shard()
        with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
            writer.write_many(table.to_dict("records"))
        kept = table[table["keep"]]
        missing = kept.loc[kept["n_images"] == 0, "wnid"].tolist()
        if missing:
            ctx.log(f"[categories] warning: {len(missing)} kept categories have no images under "
                    f"{ctx.data_root} (e.g. {missing[:3]})")
        by_reason = table.loc[~table["keep"], "reason"].value_counts().to_dict()
        status = {"keep": int(table["keep"].sum()), **{f"drop:{k}": int(v) for k, v in by_reason.items()}}
        extra = {"kept": int(table["keep"].sum()), "removed": int((~table["keep"]).sum()),
                 "kept_with_images": int((kept["n_images"] > 0).sum()),
                 "images_in_kept": int(kept["n_images"].sum()), "removed_by_reason": by_reason}
        summary = [{"decision": k, "categories": v} for k, v in status.items()]
        return StageOutput(rows=len(table), rows_by_status=status, shards=[path],
                           extra=CategoriesFigures.check(extra), summary=summary)
