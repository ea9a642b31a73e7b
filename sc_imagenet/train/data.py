"""Training data from the `single_instance` manifest: kept images by category, image and mask loaders."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.compute as pc

from sc_imagenet.io.images import load_rgb
from sc_imagenet.io.manifest import read_manifest
from sc_imagenet.train.loop import TrainData


def train_data_from_manifest(single_instance_dir: Path, data_root: Path, foreground: str) -> TrainData:
    from sc_imagenet.foreground import ForegroundProvider

    kept = read_manifest(single_instance_dir, columns=["image_id", "rel_path", "wnid"], filter=pc.field("keep"))
    by_wnid: dict[str, list[str]] = defaultdict(list)
    paths: dict[str, str] = {}
    for image_id, rel, wnid in zip(*(kept.column(c).to_pylist() for c in ("image_id", "rel_path", "wnid")),
                                   strict=True):
        by_wnid[wnid].append(image_id)
        paths[image_id] = rel
    provider = None if foreground == "none" else ForegroundProvider(single_instance_dir, data_root, foreground)
    return TrainData(
        dict(by_wnid), lambda i: load_rgb(data_root / paths[i]),
        None if provider is None else (lambda i, hw: provider.mask_for(i, hw)),
    )
