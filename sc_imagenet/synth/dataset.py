"""generate_dataset: write the synthetic demo dataset and its ground truth under a root folder.

Layout: `<root>/<wnid>/<wnid>_<n>.JPEG` plus `<root>/_groundtruth/` (see docs/synth.md). Every random
choice of image n of category c comes from `default_rng([seed, c, n])` with c the category's index in
DEMO_CATEGORIES, so images do not depend on which other categories are generated or on process state.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sc_imagenet.synth.backgrounds import landscape, tiled_pattern
from sc_imagenet.synth.config import BROKEN_KINDS, DEMO_CATEGORIES, SYNTH_VERSION, Category, SynthConfig
from sc_imagenet.synth.meta import (
    GT_DIR,
    config_matches,
    is_complete,
    meta_path,
    read_meta,
    write_json_atomic,
)
from sc_imagenet.synth.render import finish, render_object_image
from sc_imagenet.synth.templates import get_template
from sc_imagenet.synth.writers import (
    IMAGES_SCHEMA,
    INSTANCES_SCHEMA,
    TEMPLATES_SCHEMA,
    instance_rows,
    save_image,
    template_row,
    write_table,
    write_template_png,
)

_MULTI_STREAM = 2**32 - 1  # rng stream id for choosing multi-instance images (image indices stay below)


def _plan(cfg: SynthConfig) -> list[tuple[int, Category, int, int, str]]:
    """(category index, category, image index, n_instances, broken) for every file, in write order."""
    cats = cfg.categories()
    objects = [c for c in cats if c.kind == "object"]
    broken_for: dict[str, list[str]] = {c.wnid: [] for c in objects}
    if cfg.include_broken:
        for i, kind in enumerate(BROKEN_KINDS):
            broken_for[objects[i % len(objects)].wnid].append(kind)
    plan = []
    n = cfg.images_per_category
    for cat in cats:
        cat_idx = DEMO_CATEGORIES.index(cat)
        multi: set[int] = set()
        if cat.kind == "object":
            n_multi = round(cfg.multi_instance_fraction * n)
            pick = np.random.default_rng([cfg.seed, cat_idx, _MULTI_STREAM]).choice(n, n_multi, replace=False)
            multi = {int(i) for i in pick}
        for i in range(n):
            plan.append((cat_idx, cat, i, 0 if cat.kind != "object" else (2 if i in multi else 1), ""))
        for j, kind in enumerate(broken_for.get(cat.wnid, [])):
            plan.append((cat_idx, cat, n + j, 1, kind))
    return plan


def _clean(root: Path) -> None:
    """Remove what an interrupted run of ours may have left; anything else under root is kept."""
    for cat in DEMO_CATEGORIES:
        shutil.rmtree(root / cat.wnid, ignore_errors=True)
    shutil.rmtree(root / GT_DIR, ignore_errors=True)


def generate_dataset(root: Path, cfg: SynthConfig, progress: bool = True) -> dict[str, Any]:
    """Generate the dataset under `root` and return a summary (also stored as meta.json's "counts").

    Idempotent: a complete dataset with the same config is left as is (summary["reused"] is True). A
    complete dataset with another config raises ValueError instead of mixing the two. An incomplete one
    (interrupted run: meta.json missing or "complete": false) is removed and regenerated.
    """
    root = Path(root)
    meta = read_meta(root)
    if is_complete(root):
        assert meta is not None
        if not config_matches(meta, cfg):
            raise ValueError(
                f"{root} already holds a complete synthetic dataset generated with a different config: "
                f"found generator v{meta.get('generator_version')} with {meta.get('config')}, "
                f"requested v{SYNTH_VERSION} with {cfg.model_dump(mode='json')}. "
                "Delete that folder or choose another output folder."
            )
        return {"root": str(root), "reused": True, **meta["counts"]}
    _clean(root)
    (root / GT_DIR).mkdir(parents=True, exist_ok=True)
    base_meta = {
        "generator": "sc_imagenet.synth",
        "generator_version": SYNTH_VERSION,
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
    }
    # marks the folder as ours while writing; "complete" flips to true only at the very end
    write_json_atomic(meta_path(root), {**base_meta, "complete": False})

    plan = _plan(cfg)
    digits = max(4, len(str(cfg.images_per_category + len(BROKEN_KINDS) - 1)))
    image_rows: list[dict[str, Any]] = []
    inst_rows: list[dict[str, Any]] = []
    per_cat: dict[str, dict[str, Any]] = {
        c.wnid: {"name": c.name, "kind": c.kind, "images": 0, "instances": 0, "multi_instance": 0}
        for c in cfg.categories()
    }
    broken_files: dict[str, str] = {}
    for cat in cfg.categories():
        (root / cat.wnid).mkdir(parents=True, exist_ok=True)
    for cat_idx, cat, idx, n_inst, broken in tqdm(
        plan, desc="synth images", unit="img", disable=not progress
    ):
        rng = np.random.default_rng([cfg.seed, cat_idx, idx])
        width = int(rng.integers(cfg.min_size, cfg.max_size + 1))
        height = int(rng.integers(cfg.min_size, cfg.max_size + 1))
        image_id = f"{cat.wnid}_{idx:0{digits}d}"
        rel_path = f"{cat.wnid}/{image_id}.JPEG"
        if cat.kind == "object":
            template = get_template(cat.wnid)
            img, warps, masks = render_object_image(rng, template, height, width, n_inst)
            inst_rows.extend(instance_rows(image_id, cat.wnid, template, warps, masks))
        else:
            painter = landscape if cat.kind == "scene" else tiled_pattern
            img = finish(rng, painter(rng, height, width))
        save_image(root / rel_path, img, broken)
        image_rows.append(
            {
                "image_id": image_id,
                "wnid": cat.wnid,
                "rel_path": rel_path,
                "width": width,
                "height": height,
                "n_instances": n_inst,
                "kind": cat.kind,
                "broken": broken,
            }
        )
        stats = per_cat[cat.wnid]
        stats["images"] += 1
        stats["instances"] += n_inst
        stats["multi_instance"] += int(n_inst > 1)
        if broken:
            broken_files[broken] = rel_path

    gt = root / GT_DIR
    templates = [get_template(c.wnid) for c in cfg.categories() if c.kind == "object"]
    (gt / "templates").mkdir(exist_ok=True)
    for template in templates:
        write_template_png(template, gt / "templates" / f"{template.spec.wnid}.png")
    write_table([template_row(t) for t in templates], TEMPLATES_SCHEMA, gt / "templates.parquet")
    write_table(image_rows, IMAGES_SCHEMA, gt / "images.parquet")
    write_table(inst_rows, INSTANCES_SCHEMA, gt / "instances.parquet")
    counts = {
        "images": len(image_rows),
        "instances": len(inst_rows),
        "categories": per_cat,
        "broken": broken_files,
    }
    write_json_atomic(meta_path(root), {**base_meta, "counts": counts, "complete": True})
    return {"root": str(root), "reused": False, **counts}
