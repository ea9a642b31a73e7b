"""Training data: kept images grouped by category, with image and mask loaders."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sc_imagenet.io.images import load_rgb
from sc_imagenet.train.loop import TrainData


def build_train_data(image_ids: Sequence[str], rel_paths: Sequence[str], wnids: Sequence[str], data_root: Path,
                     load_fg: Callable[[str, tuple[int, int]], np.ndarray] | None) -> TrainData:
    """Images grouped by category (in the given order); images load from `data_root / rel_path`.
    load_fg: (image id, (H, W)) → float32 foreground mask, or None for no foreground constraint."""
    by_wnid: dict[str, list[str]] = defaultdict(list)
    paths: dict[str, str] = {}
    for image_id, rel, wnid in zip(image_ids, rel_paths, wnids, strict=True):
        by_wnid[wnid].append(image_id)
        paths[image_id] = rel
    return TrainData(dict(by_wnid), lambda i: load_rgb(data_root / paths[i]), load_fg)
