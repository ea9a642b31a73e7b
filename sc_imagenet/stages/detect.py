"""Stage `detect`: every detection above a low floor for every readable image of the kept categories.

Storing all detections (not just the decision) lets the `single_instance` policy change without
rerunning the detector. Images are decoded in threads ahead of the model, batched, and streamed
into one shard per category; a killed run resumes at the first unfinished category.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sc_imagenet.config import BuildConfig, ConfigError
from sc_imagenet.detect.backends import Detector, create_detector
from sc_imagenet.detect.prefetch import iter_decoded_batches
from sc_imagenet.detect.types import ImageDetections
from sc_imagenet.io.manifest import ShardWriter, read_shard, shard_path
from sc_imagenet.io.weights import WeightsError, resolve_weights, weights_sha256
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
from sc_imagenet.stages.index import IndexStage
from sc_imagenet.stages.schema import column, manifest_schema

SCHEMA = manifest_schema(
    column("image_id", pa.string(), "file stem"),
    column("det_idx", pa.int32(), "rank of the detection within its image (0 = most confident); -1 on a "
           "decode_error row"),
    column("class_id", pa.int32(), "detector class index"),
    column("class_name", pa.string(), "detector class name (`_stage.json` `extra.class_names` lists them all)"),
    column("conf", pa.float32(), "detector confidence", "[0, 1]"),
    # a variable-size list: older readers choke on null fixed-size lists
    column("box", pa.list_(pa.float32()), "the detection's box", "4 values `[x1, y1, x2, y2]`, original-image pixels"),
    column("mask_poly", pa.list_(pa.float32()), "instance outline (ultralytics `masks.xy`); null for "
           "detection-only models", "flattened `(K, 2)` `x, y` vertices, original-image pixels"),
    column("status", pa.string(), "`detection`, or `decode_error`"),
    column("error", pa.string(), "decode error message (null otherwise)"),
)
IMAGE_ID, REL_PATH, INDEX_STATUS = IndexStage.columns("image_id", "rel_path", "status")

def readable_images(index_dir: Path, wnid: str) -> list[tuple[str, str]]:
    """(image_id, rel_path) of the category's images the index marked `ok`."""
    table = read_shard(shard_path(index_dir, wnid), columns=[IMAGE_ID, REL_PATH, INDEX_STATUS])
    table = table.filter(pc.equal(table[INDEX_STATUS], "ok"))
    return list(zip(table[IMAGE_ID].to_pylist(), table[REL_PATH].to_pylist(), strict=True))


def detection_rows(image_id: str, dets: ImageDetections, class_names: list[str]) -> list[dict[str, Any]]:
    if dets.error is not None:
        return [{"image_id": image_id, "det_idx": -1, "status": "decode_error", "error": dets.error}]
    rows = []
    for i in range(len(dets)):
        poly = dets.polygons[i].reshape(-1).tolist() if dets.polygons is not None else None
        rows.append({"image_id": image_id, "det_idx": i, "class_id": int(dets.cls[i]),
                     "class_name": class_names[int(dets.cls[i])], "conf": float(dets.conf[i]),
                     "box": dets.boxes[i].tolist(), "mask_poly": poly, "status": "detection", "error": None})
    return rows


class DetectFigures(StageFigures):
    """`detect`'s record: `single_instance` checks its configured classes against `class_names`."""

    images_detected: int
    images_per_s: float | None
    class_names: list[str]
    has_masks: bool
    device: str | None
    half: bool | None


@register_stage
class DetectStage(ShardedStage):
    name = "detect"
    schema_version = 2  # 2: box became list<float32> (was fixed_size_list[4])
    schema = SCHEMA
    figures_model = DetectFigures
    inputs = ("index",)
    description = "object detection (ultralytics), every detection above detect.conf_floor"
    tags = ("gpu",)
    unit = "img"

    def fingerprint_payload(self, cfg: BuildConfig, data_root: Path) -> dict[str, Any]:
        d = cfg.detect
        try:
            path, _ = resolve_weights("detectors", d.weights, "detect.weights")
        except WeightsError as exc:
            raise ConfigError(str(exc)) from None
        # batch size, device and decode threads change speed, not results: they stay out
        return {"data_root": str(data_root), "backend": d.backend, "weights_sha256": weights_sha256(path),
                "imgsz": d.imgsz, "half": d.half, "conf_floor": d.conf_floor, "iou": d.iou, "max_det": d.max_det}

    def make_detector(self, cfg: BuildConfig) -> Detector:
        d = cfg.detect
        path, _ = resolve_weights("detectors", d.weights, "detect.weights")
        return create_detector(d.backend, weights=path, imgsz=d.imgsz, device=d.device, half=d.half,
                               conf_floor=d.conf_floor, iou=d.iou, max_det=d.max_det)

    def device(self, cfg: BuildConfig) -> str | None:
        return cfg.detect.device

    def load_shared(self, ctx: StageContext) -> Detector:
        return self.make_detector(ctx.cfg)

    def progress_total(self, ctx: StageContext, todo: list[str]) -> int:
        return sum(len(readable_images(ctx.inputs["index"], wnid)) for wnid in todo)

    def shard_work(self, ctx: StageContext, wnid: str, path: Path, shared: Shared,
                   advance: Callable[[int], None]) -> ShardResult:
        d = ctx.cfg.detect
        items = readable_images(ctx.inputs["index"], wnid)
        detector: Detector = shared()
        t0, done = time.perf_counter(), 0
        by_status: dict[str, int] = {}
        with ShardWriter(path, SCHEMA, ctx.fingerprint, self.schema_version) as writer:
            for batch in iter_decoded_batches(ctx.data_root, items, d.batch, d.decode_workers,
                                              d.prefetch_batches, d.max_pixels):
                decoded = [b for b in batch if b.rgb is not None]
                results = dict(zip([b.image_id for b in decoded], detector.detect([b.rgb for b in decoded]),
                                   strict=True))
                for b in batch:
                    dets = results.get(b.image_id) or ImageDetections.failed(b.error or "not decoded")
                    rows = detection_rows(b.image_id, dets, detector.class_names)
                    writer.write_many(rows)
                    for r in rows:
                        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
                done += len(batch)
                advance(len(batch))
        info = {"images": done, "seconds": time.perf_counter() - t0, **detector_info(detector)}
        return ShardResult(wnid, sum(by_status.values()), by_status, info=info)

    def finalize(self, ctx: StageContext, results: list[ShardResult], shared: Shared) -> StageOutput:
        fresh = [r for r in results if not r.skipped]
        # the record lists the detector's class names: from a shard that ran, else (every shard kept from an
        # earlier run) from the detector itself, loaded here
        info = fresh[0].info if fresh else detector_info(shared())
        done = sum(r.info["images"] for r in fresh)
        seconds = sum(r.info["seconds"] for r in fresh)
        by_status = merge_counts([r.by_status for r in results])
        extra: dict[str, Any] = {
            "images_detected": done, "images_per_s": round(done / seconds, 2) if done else None,
            **{k: info[k] for k in ("class_names", "has_masks", "device", "half")},
        }
        summary = [{"status": k, "rows": v} for k, v in sorted(by_status.items())]
        return StageOutput(sum(by_status.values()), by_status, [ctx.shard(r.wnid) for r in results],
                           len(results) - len(fresh), DetectFigures.check(extra), summary)


def detector_info(detector: Detector) -> dict[str, Any]:
    """What the stage record says about the detector (plain values: it travels back from Dask workers)."""
    return {"class_names": list(detector.class_names), "has_masks": detector.has_masks,
            "device": getattr(detector, "device", None), "half": getattr(detector, "half", None)}
