"""Stage `single_instance`: the paper's policy (exactly one object with confidence > 0.9) applied
to the stored detections, one row per indexed image. Cheap: a policy change reruns only this."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sc_imagenet.config import BuildConfig, ConfigError
from sc_imagenet.detect.policy import decide
from sc_imagenet.io.manifest import ShardWriter, read_stage_record, shard_path
from sc_imagenet.stages.base import Stage, StageContext, StageOutput, merge_counts, register_stage
from sc_imagenet.stages.detect import category_shards

SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("rel_path", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("keep", pa.bool_()),
    ("reason", pa.string()),
    ("n_above", pa.int32()),
    ("n_detections", pa.int32()),
    ("conf", pa.float32()),
    ("class_name", pa.string()),
    ("box", pa.list_(pa.float32())),  # 4 values; a variable-size list, as older readers choke on null fixed-size lists
    ("mask_poly", pa.list_(pa.float32())),
])


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


@register_stage
class SingleInstanceStage(Stage):
    name = "single_instance"
    schema_version = 2  # 2: box became list<float32> (was fixed_size_list[4])
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
            names = set((read_stage_record(detect_dir).extra or {}).get("class_names", []))
            unknown = sorted(classes - names)
            if unknown:
                raise ConfigError(f"single_instance.classes: {unknown} are not classes of the detector "
                                  f"(it knows {sorted(names)})")
        split = ctx.split_shards(category_shards(ctx.inputs["index"]), status_column="reason")
        counts = list(split.done.values())
        for wnid, path in split.todo:
            index_rows = pq.read_table(shard_path(ctx.inputs["index"], wnid),
                                       columns=["image_id", "rel_path", "width", "height", "status"]).to_pylist()
            det_rows = pq.read_table(shard_path(detect_dir, wnid)).to_pylist()
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
        return StageOutput(total, by_status, split.shards, len(split.done), extra, summary)
