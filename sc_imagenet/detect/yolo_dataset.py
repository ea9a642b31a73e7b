"""Export the synthetic dataset's ground truth as an ultralytics YOLO segmentation dataset.

Layout written under `out/`: `images/{train,val}/<image_id>.<ext>` (symlinks to the originals),
`labels/{train,val}/<image_id>.txt` with one line per visible instance
(`class x1 y1 x2 y2 …`, polygon vertices normalised to [0, 1]) and `data.yaml`. Scene and texture
images get empty label files: background-only negatives. Truncated and zero-byte files are left out.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from sc_imagenet.synth import DEMO_CATEGORIES, UNREADABLE_BROKEN, load_groundtruth


def object_class_names() -> list[str]:
    """Detector class index → category name: the synthetic object categories in wnid order."""
    return [c.name for c in DEMO_CATEGORIES if c.kind == "object"]


def mask_polygon(mask: np.ndarray, min_area: float = 4.0) -> np.ndarray | None:
    """Largest outer contour of a bool mask `(H, W)` as `(K, 2)` float32 pixel xy, or None."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    best = max(contours, key=cv2.contourArea)
    if cv2.contourArea(best) < min_area or len(best) < 3:
        return None
    return best.reshape(-1, 2).astype(np.float32)


def export_yolo_seg(root: Path, out: Path, val_fraction: float = 0.15, seed: int = 0) -> Path:
    """Write the dataset and return the path of its `data.yaml`."""
    gt = load_groundtruth(root)
    names = object_class_names()
    class_of = {c.wnid: names.index(c.name) for c in DEMO_CATEGORIES if c.kind == "object"}
    rng = np.random.default_rng(seed)
    for row in gt.images.itertuples(index=False):
        if row.broken in UNREADABLE_BROKEN:
            continue
        split = "val" if rng.random() < val_fraction else "train"
        src = (Path(root) / row.rel_path).resolve()
        img_dir, lbl_dir = out / "images" / split, out / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        link = img_dir / f"{row.image_id}.jpg"
        if not link.exists():
            link.symlink_to(src)
        lines = []
        for inst in range(int(row.n_instances)):
            poly = mask_polygon(gt.visible_mask(row.image_id, inst))
            if poly is None:
                continue
            norm = (poly + 0.5) / np.array([row.width, row.height], dtype=np.float32)
            coords = " ".join(f"{v:.5f}" for v in np.clip(norm, 0, 1).reshape(-1))
            lines.append(f"{class_of[row.wnid]} {coords}")
        (lbl_dir / f"{row.image_id}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    data = {"path": str(out.resolve()), "train": "images/train", "val": "images/val",
            "names": dict(enumerate(names))}
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
