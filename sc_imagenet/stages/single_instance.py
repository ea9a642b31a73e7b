"""Stage `single_instance`: the paper's policy (exactly one object with confidence > 0.9) applied
to the stored detections, one row per indexed image. Cheap: a policy change reruns only this."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sc_imagenet.config import BuildConfig, ConfigError
from sc_imagenet.detect.policy import decide
from sc_imagenet.io.manifest import (
    ShardWriter,
    category_shards,
    read_manifest,
    read_shard,
    shard_path,
)
from sc_imagenet.stages.base import Stage, StageContext, StageFigures, StageOutput, merge_counts, register_stage
from sc_imagenet.stages.detect import DetectFigures, DetectStage
from sc_imagenet.stages.index import IndexStage
from sc_imagenet.stages.schema import column, manifest_schema

SCHEMA = manifest_schema(
    column("image_id", pa.string(), "file stem"),
    column("rel_path", pa.string(), "path relative to the data root"),
    column("width", pa.int32(), "original image width (from the index)", "pixels"),
    column("height", pa.int32(), "original image height (from the index)", "pixels"),
    column("keep", pa.bool_(), "the image is single-instance"),
    column("reason", pa.string(), "`kept`, `no_detection`, `below_threshold`, `multiple_confident`, `too_small` "
           "(the confident box covers less than `min_box_area_frac` of the image) or `unreadable` (index status "
           "not ok, or decode error in `detect`)"),
    column("n_above", pa.int32(), "detections above the threshold"),
    column("n_detections", pa.int32(), "detections stored for the image (≥ conf_floor, allowed classes or not)"),
    column("conf", pa.float32(), "the kept detection's confidence (null unless kept)", "[0, 1]"),
    column("class_name", pa.string(), "the kept detection's class (null unless kept)"),
    # a variable-size list: older readers choke on null fixed-size lists
    column("box", pa.list_(pa.float32()), "the kept box (null unless kept)",
           "4 values `[x1, y1, x2, y2]`, original-image pixels"),
    column("mask_poly", pa.list_(pa.float32()), "the kept instance's outline (null unless kept or no masks)",
           "flattened `(K, 2)` `x, y` vertices, original-image pixels"),
)
if TYPE_CHECKING:
    from sc_imagenet.foreground.provider import ForegroundProvider

INDEX_COLUMNS = IndexStage.columns("image_id", "rel_path", "width", "height", "status")
DETECT_COLUMNS = DetectStage.columns("image_id", "status", "conf", "box", "class_name", "mask_poly")

def decide_category(index_rows: list[dict[str, Any]], det_rows: list[dict[str, Any]], threshold: float,
                    classes: set[str] | None, min_box_area_frac: float) -> list[dict[str, Any]]:
    """One output row per index row; `reason` is the policy's (`kept`, `multiple_confident`, …)."""
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in det_rows:
        by_image[r["image_id"]].append(r)
    out = []
    for img in index_rows:
        base = {"image_id": img["image_id"], "rel_path": img["rel_path"], "width": img["width"],
                "height": img["height"], "keep": False, "n_above": 0, "n_detections": 0}
        dets = by_image.get(img["image_id"], [])
        if img["status"] != "ok" or any(d["status"] != "detection" for d in dets):
            out.append({**base, "reason": "unreadable"})
            continue
        area = float(img["width"]) * float(img["height"])
        conf = np.array([d["conf"] for d in dets], np.float64)
        box = np.array([d["box"] for d in dets], np.float64).reshape(-1, 4)
        frac = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]) / area
        ok = None if classes is None else np.array([d["class_name"] in classes for d in dets], bool)
        decision = decide(conf, frac, ok, threshold, min_box_area_frac)
        row = {**base, "keep": decision.keep, "reason": decision.reason, "n_above": decision.n_above,
               "n_detections": len(dets)}
        if decision.keep:
            best = dets[decision.best]
            row.update({"conf": best["conf"], "class_name": best["class_name"], "box": best["box"],
                        "mask_poly": best["mask_poly"]})
        out.append(row)
    return out


class SingleInstanceFigures(StageFigures):
    """`single_instance`'s record: the report marks detections above the `threshold` that was used."""

    kept: int
    kept_fraction: float
    threshold: float


@register_stage
class SingleInstanceStage(Stage):
    name = "single_instance"
    schema_version = 2  # 2: box became list<float32> (was fixed_size_list[4])
    schema = SCHEMA
    figures_model = SingleInstanceFigures
    status_column = "reason"
    inputs = ("index", "detect")
    description = "keep images with exactly one confident object"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        s = cfg.single_instance
        return {"threshold": s.threshold, "classes": sorted(s.classes) if s.classes is not None else None,
                "min_box_area_frac": s.min_box_area_frac}

    def run(self, ctx: StageContext) -> StageOutput:
        s = ctx.cfg.single_instance
        classes = set(s.classes) if s.classes is not None else None
        detect_dir = ctx.inputs["detect"]
        if classes is not None:
            detected = DetectFigures.read(detect_dir)
            names = set(detected.class_names) if detected is not None else set()
            unknown = sorted(classes - names)
            if unknown:
                raise ConfigError(f"single_instance.classes: {unknown} are not classes of the detector "
                                  f"(it knows {sorted(names)})")
        split = ctx.split_shards(category_shards(ctx.inputs["index"]), self.status_column)
        counts = list(split.done.values())
        for wnid, path in split.todo:
            index_rows = read_shard(shard_path(ctx.inputs["index"], wnid), columns=INDEX_COLUMNS).to_pylist()
            det_rows = read_shard(shard_path(detect_dir, wnid), columns=DETECT_COLUMNS).to_pylist()
            rows = decide_category(index_rows, det_rows, s.threshold, classes, s.min_box_area_frac)
            with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
                writer.write_many(rows)
            counts.append(dict(Counter(r["reason"] for r in rows)))
        by_status = merge_counts(counts)
        total = sum(by_status.values())
        n_kept = by_status.get("kept", 0)
        extra = {"kept": n_kept, "kept_fraction": round(n_kept / total, 4) if total else 0.0,
                 "threshold": s.threshold}
        summary = [{"reason": k, "images": v} for k, v in sorted(by_status.items())]
        return StageOutput(total, by_status, split.shards, len(split.done), SingleInstanceFigures.check(extra), summary)


def read_kept_images(stage_dir: Path, columns: list[str], wnids: list[str] | None = None) -> pa.Table:
    """The kept rows of a `single_instance` manifest (only `wnids`' shards if given), with `columns`
    (checked against this stage's schema; `wnid` allowed)."""
    (keep,) = SingleInstanceStage.columns("keep")
    flt = pc.field(keep) == True  # noqa: E712 (an Arrow expression, not a Python comparison)
    return read_manifest(Path(stage_dir), columns=SingleInstanceStage.columns(*columns), filter=flt, wnids=wnids)


def foreground_provider(stage_dir: Path, data_root: Path, source: str, wnids: list[str] | None = None,
                        **kwargs: Any) -> ForegroundProvider:
    """Foreground masks of the kept images of a `single_instance` manifest (`ForegroundProvider` over
    its kept rows; `wnids` bounds memory to the categories a caller works on)."""
    from sc_imagenet.foreground.provider import ForegroundProvider  # cv2 loads only when masks are needed

    table = read_kept_images(stage_dir, list(ForegroundProvider.COLUMNS), wnids)
    return ForegroundProvider(table, data_root, source, origin=f"the single_instance manifest {stage_dir}", **kwargs)
