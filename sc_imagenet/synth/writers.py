"""Writing image files (including the deliberately broken ones) and the ground-truth tables.

Ground-truth schemas are documented column by column in docs/synth.md.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from sc_imagenet.synth.config import BROKEN_KINDS
from sc_imagenet.synth.rle import encode_rle
from sc_imagenet.synth.templates import Template
from sc_imagenet.synth.warp import Warp

JPEG_QUALITY = 90

IMAGES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("wnid", pa.string()),
        ("rel_path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("n_instances", pa.int32()),
        ("kind", pa.string()),
        ("broken", pa.string()),
    ]
)
INSTANCES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("instance", pa.int32()),
        ("wnid", pa.string()),
        ("affine", pa.list_(pa.float32())),
        ("deform_amp", pa.list_(pa.float32())),
        ("deform_freq", pa.list_(pa.float32())),
        ("deform_phase", pa.list_(pa.float32())),
        ("depth", pa.int32()),
        ("bbox", pa.list_(pa.float32())),
        ("area", pa.int64()),
        ("mask_rle", pa.list_(pa.int32())),
        ("keypoints", pa.list_(pa.float32())),
        ("keypoint_visible", pa.list_(pa.bool_())),
    ]
)
TEMPLATES_SCHEMA = pa.schema(
    [
        ("wnid", pa.string()),
        ("name", pa.string()),
        ("part_names", pa.list_(pa.string())),
        ("part_roles", pa.list_(pa.string())),
        ("keypoint_names", pa.list_(pa.string())),
        ("keypoint_uv", pa.list_(pa.float32())),
        ("raster_size", pa.int32()),
    ]
)


def save_image(path: Path, img: np.ndarray, broken: str = "") -> None:
    """Write an RGB uint8 image (H, W, 3) as `path` (always named .JPEG), optionally broken on purpose."""
    pil = Image.fromarray(img, "RGB")
    if broken == "zero_byte":
        path.write_bytes(b"")
    elif broken == "truncated":
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=JPEG_QUALITY)
        data = buf.getvalue()
        path.write_bytes(data[: len(data) // 2])  # cut mid-scan: the header parses, decoding fails
    elif broken == "cmyk":
        pil.convert("CMYK").save(path, "JPEG", quality=JPEG_QUALITY)
    elif broken == "png_named_jpeg":
        pil.save(path, "PNG")
    elif broken == "grayscale":
        pil.convert("L").save(path, "JPEG", quality=JPEG_QUALITY)
    elif broken == "":
        pil.save(path, "JPEG", quality=JPEG_QUALITY)
    else:
        raise ValueError(f"unknown broken kind {broken!r}; expected one of {BROKEN_KINDS}")


def resolve_visibility(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Unoccluded masks in draw order → visible masks (later instances cover earlier ones)."""
    if not masks:
        return []
    covered = np.zeros_like(masks[0])
    visible: list[np.ndarray] = []
    for mask in reversed(masks):
        visible.append(mask & ~covered)
        covered |= mask
    return visible[::-1]


def bbox_of(mask: np.ndarray) -> list[float]:
    """[x1, y1, x2, y2] of a mask: first column/row and last column/row + 1 (x2, y2 exclusive);
    [0, 0, 0, 0] for an empty mask."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def instance_rows(
    image_id: str, wnid: str, template: Template, warps: list[Warp], masks: list[np.ndarray]
) -> list[dict[str, Any]]:
    """GT rows for one image's instances. warps/masks are in draw order (depth = list position); rows are
    numbered by visible area, largest first (instance 0 = primary), ties broken by depth."""
    visible = resolve_visibility(masks)
    areas = [int(v.sum()) for v in visible]
    order = sorted(range(len(warps)), key=lambda d: (-areas[d], d))
    rows = []
    for inst, depth in enumerate(order):
        warp, vis = warps[depth], visible[depth]
        h, w = vis.shape
        kp = warp.forward(template.keypoints_uv)
        px = np.floor(kp + 0.5).astype(np.int64)  # pixel whose centre is nearest (centres at integers)
        inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        kp_vis = np.zeros(len(kp), bool)
        kp_vis[inside] = vis[px[inside, 1], px[inside, 0]]
        rows.append(
            {
                "image_id": image_id,
                "instance": inst,
                "wnid": wnid,
                "affine": warp.affine6().tolist(),
                "deform_amp": warp.amp.astype(np.float32).ravel().tolist(),
                "deform_freq": warp.freq.astype(np.float32).ravel().tolist(),
                "deform_phase": warp.phase.astype(np.float32).tolist(),
                "depth": depth,
                "bbox": bbox_of(vis),
                "area": areas[depth],
                "mask_rle": encode_rle(vis).tolist(),
                "keypoints": kp.astype(np.float32).ravel().tolist(),
                "keypoint_visible": kp_vis.tolist(),
            }
        )
    return rows


def template_row(template: Template) -> dict[str, Any]:
    spec = template.spec
    return {
        "wnid": spec.wnid,
        "name": spec.name,
        "part_names": template.part_names,
        "part_roles": [p.role for p in spec.parts],
        "keypoint_names": template.keypoint_names,
        "keypoint_uv": template.keypoints_uv.astype(np.float32).ravel().tolist(),
        "raster_size": template.size,
    }


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="zstd")


def write_template_png(template: Template, path: Path) -> None:
    Image.fromarray(template.labels, "L").save(path, "PNG")
