"""Reading the stored ground truth and answering correspondence queries from it (never re-rendering).

Pixel convention: pixel centres at integer coordinates; pixel (row i, col j) is the point (x=j, y=i)
and a point (x, y) falls in pixel (floor(y + 0.5), floor(x + 0.5)). Template coordinates u ∈ [-1, 1]²
as in warp.py / templates.py.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from PIL import Image

from sc_imagenet.synth.meta import GT_DIR, meta_path, read_meta
from sc_imagenet.synth.rle import decode_rle
from sc_imagenet.synth.templates import sample_labels
from sc_imagenet.synth.warp import Warp

_MASK_CACHE = 256  # owner maps kept per loaded dataset (a 320x320 map is 100 kB)


@dataclass(frozen=True)
class Keypoints:
    """Keypoints of one image: names (N,) of its category's template, xy (I, N, 2) float32 image
    coordinates per instance (instance order), visible (I, N) bool."""

    names: tuple[str, ...]
    xy: np.ndarray
    visible: np.ndarray


@dataclass
class GroundTruth:
    """The loaded tables of one dataset root plus small caches. Tables are pandas DataFrames with the
    columns of images.parquet / instances.parquet / templates.parquet (docs/synth.md)."""

    root: Path
    meta: dict[str, Any]
    images: pd.DataFrame
    instances: pd.DataFrame
    templates: pd.DataFrame
    _image_pos: dict[str, int] = field(default_factory=dict, repr=False)
    _inst_pos: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _owner: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict, repr=False)
    _labels: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._image_pos = {iid: i for i, iid in enumerate(self.images["image_id"])}
        inst_col = self.instances["instance"].to_numpy()
        for pos, iid in enumerate(self.instances["image_id"]):
            self._inst_pos.setdefault(iid, []).append(pos)
        for positions in self._inst_pos.values():
            positions.sort(key=lambda p: int(inst_col[p]))

    def image(self, image_id: str) -> dict[str, Any]:
        """The images.parquet row of `image_id` as a dict; KeyError if unknown."""
        if image_id not in self._image_pos:
            raise KeyError(f"unknown image_id {image_id!r} in {self.root}")
        return self.images.iloc[self._image_pos[image_id]].to_dict()

    def instance_rows(self, image_id: str) -> pd.DataFrame:
        """instances.parquet rows of one image, ordered by instance (0 = primary); empty for non-objects."""
        return self.instances.iloc[self._inst_pos.get(image_id, [])]

    def warp(self, image_id: str, instance: int) -> Warp:
        row = self.instances.iloc[self._inst_pos[image_id][instance]]
        aff = np.asarray(row["affine"], np.float32)
        return Warp.from_params(aff[:4], aff[4:], row["deform_amp"], row["deform_freq"], row["deform_phase"])

    def owner_map(self, image_id: str) -> np.ndarray:
        """(H, W) int8: index of the instance visible at each pixel, -1 for background (cached)."""
        if image_id in self._owner:
            self._owner.move_to_end(image_id)
            return self._owner[image_id]
        img = self.image(image_id)
        h, w = int(img["height"]), int(img["width"])
        owner = np.full((h, w), -1, np.int8)
        for _, row in self.instance_rows(image_id).iterrows():
            owner[decode_rle(row["mask_rle"], h, w)] = int(row["instance"])
        self._owner[image_id] = owner
        if len(self._owner) > _MASK_CACHE:
            self._owner.popitem(last=False)
        return owner

    def visible_mask(self, image_id: str, instance: int) -> np.ndarray:
        """(H, W) bool visible mask of one instance."""
        return self.owner_map(image_id) == instance

    def template_labels(self, wnid: str) -> np.ndarray:
        """(S, S) uint8 part-label map of a category's template, read from templates/<wnid>.png."""
        if wnid not in self._labels:
            self._labels[wnid] = np.asarray(Image.open(self.root / GT_DIR / "templates" / f"{wnid}.png"))
        return self._labels[wnid]

    def keypoint_names(self, wnid: str) -> tuple[str, ...]:
        row = self.templates.loc[self.templates["wnid"] == wnid]
        return tuple(row["keypoint_names"].iat[0]) if len(row) else ()


def load_groundtruth(root: Path | str) -> GroundTruth:
    """Load (and cache per root and meta.json version) the ground truth of a complete dataset.

    Raises FileNotFoundError if `root` holds no complete dataset.
    """
    root = Path(root).resolve()
    meta = read_meta(root)
    if meta is None or meta.get("complete") is not True:
        raise FileNotFoundError(
            f"{root} holds no complete synthetic dataset ({meta_path(root)} missing or "
            f"incomplete); run generate_dataset first"
        )
    stat = meta_path(root).stat()
    return _load_cached(str(root), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load_cached(root: str, mtime_ns: int, size: int) -> GroundTruth:
    # mtime/size are part of the key so a regenerated dataset under the same path is reloaded
    del mtime_ns, size
    gt = Path(root) / GT_DIR
    return GroundTruth(
        root=Path(root),
        meta=read_meta(root) or {},
        images=pd.read_parquet(gt / "images.parquet"),
        instances=pd.read_parquet(gt / "instances.parquet"),
        templates=pd.read_parquet(gt / "templates.parquet"),
    )


def _pixel_of(points: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (N,2) → (col (N,), row (N,), inside (N,) bool); col/row are 0 where not inside."""
    finite = np.all(np.isfinite(points), axis=1)
    safe = np.where(finite[:, None], points, -1.0)
    px = np.floor(safe + 0.5).astype(np.int64)
    inside = finite & (px[:, 0] >= 0) & (px[:, 0] < width) & (px[:, 1] >= 0) & (px[:, 1] < height)
    return np.where(inside, px[:, 0], 0), np.where(inside, px[:, 1], 0), inside


def true_correspondence(
    root: Path | str, src_id: str, trg_id: str, points_xy: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Map source-image points to their true locations in the target image.

    points_xy: (N, 2) source pixel coordinates (x, y), pixel centres at integers. Returns (xy (N, 2)
    float32 target coordinates, not rounded; valid (N,) bool). A row is valid iff both images are in the
    same category, the source point's pixel is visible on some source instance (the topmost there), its
    template coordinate lies on the template's object mask, and the mapped point's pixel lies in the
    target image on the visible mask of the target's primary instance (instance 0). Invalid rows are -1.
    """
    gt = load_groundtruth(root)
    pts = np.asarray(points_xy, np.float64).reshape(-1, 2)
    out = np.full(pts.shape, -1.0, np.float32)
    valid = np.zeros(len(pts), bool)
    src, trg = gt.image(src_id), gt.image(trg_id)
    if len(pts) == 0 or src["wnid"] != trg["wnid"] or src["n_instances"] == 0 or trg["n_instances"] == 0:
        return out, valid
    cols, rows, inside = _pixel_of(pts, int(src["height"]), int(src["width"]))
    owner = np.where(inside, gt.owner_map(src_id)[rows, cols], -1)
    labels = gt.template_labels(src["wnid"])
    trg_warp = gt.warp(trg_id, 0)
    trg_owner = gt.owner_map(trg_id)
    for inst in np.unique(owner[owner >= 0]):
        sel = np.flatnonzero(owner == inst)
        u = gt.warp(src_id, int(inst)).inverse(pts[sel])
        on_template = sample_labels(labels, u[:, 0], u[:, 1]) > 0
        mapped = trg_warp.forward(u)
        tc, tr, t_inside = _pixel_of(mapped, int(trg["height"]), int(trg["width"]))
        ok = on_template & t_inside & (trg_owner[tr, tc] == 0)
        out[sel[ok]] = mapped[ok].astype(np.float32)
        valid[sel[ok]] = True
    return out, valid


def keypoints_for(root: Path | str, image_id: str) -> Keypoints:
    """The stored keypoints of every instance of an image (I = 0 and N = 0 for non-object images)."""
    gt = load_groundtruth(root)
    img = gt.image(image_id)
    names = gt.keypoint_names(img["wnid"])
    rows = gt.instance_rows(image_id)
    n = len(names)
    xy = np.zeros((len(rows), n, 2), np.float32)
    vis = np.zeros((len(rows), n), bool)
    for i, (_, row) in enumerate(rows.iterrows()):
        xy[i] = np.asarray(row["keypoints"], np.float32).reshape(n, 2)
        vis[i] = np.asarray(row["keypoint_visible"], bool)
    return Keypoints(names, xy, vis)
