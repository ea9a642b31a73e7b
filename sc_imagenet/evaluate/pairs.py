"""Evaluation pairs with ground-truth keypoints, drawn from a synthetic dataset (docs/evaluate.md).

Coordinates are original-image pixels (x, y), pixel centres at integers (docs/synth.md), float32.
Boxes are the stored `[x1, y1, x2, y2]` of an instance's *visible* mask with exclusive x2/y2, so
`x2 - x1` and `y2 - y1` are the box's width and height in pixels.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sc_imagenet.synth.config import READABLE_BROKEN
from sc_imagenet.synth.groundtruth import GroundTruth, load_groundtruth
from sc_imagenet.synth.meta import GT_DIR, meta_path

_PERMUTE_MAX = 4_000_000  # ordered-pair spaces up to this size are shuffled whole; larger ones are sampled


@dataclass(frozen=True)
class EvalPair:
    """One source → target pair of the same category, with the primary instances' named keypoints.

    src_kps, trg_kps: (N, 2) float32 (x, y) of the category's N named keypoints on the primary
    instance (0) of each image, in template order. valid: (N,) bool, the keypoint is visible in both.
    trg_bbox: (4,) float32 `[x1, y1, x2, y2]`, the target primary instance's visible-mask box (x2, y2
    exclusive); it sets the PCK threshold. src_hw, trg_hw: (height, width) of the images.
    """

    src_id: str
    trg_id: str
    wnid: str
    src_path: str  # relative to the dataset root, POSIX
    trg_path: str
    src_kps: np.ndarray
    trg_kps: np.ndarray
    valid: np.ndarray
    trg_bbox: np.ndarray
    src_hw: tuple[int, int]
    trg_hw: tuple[int, int]
    keypoint_names: tuple[str, ...] = ()

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())


def require_synthetic(root: Path | str) -> GroundTruth:
    """The dataset's ground truth; a clear FileNotFoundError if `root` is not a complete synthetic dataset."""
    root = Path(root)
    if not (root / GT_DIR).is_dir():
        raise FileNotFoundError(
            f"{root} has no {GT_DIR}/ folder: correspondence evaluation needs a synthetic dataset with ground "
            f"truth (generate one with `sc-imagenet synth --out DIR`); it never generates data itself"
        )
    if not meta_path(root).is_file():
        raise FileNotFoundError(f"{meta_path(root)} is missing: {root} is not a complete synthetic dataset")
    return load_groundtruth(root)


def _primary_rows(gt: GroundTruth) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """image_id → (keypoints (N, 2) float32, visible (N,) bool, bbox (4,) float32) of instance 0."""
    inst = gt.instances[gt.instances["instance"] == 0]
    out = {}
    for iid, kps, vis, box in zip(inst["image_id"], inst["keypoints"], inst["keypoint_visible"], inst["bbox"],
                                  strict=True):
        xy = np.asarray(kps, np.float32).reshape(-1, 2)
        out[iid] = (xy, np.asarray(vis, bool), np.asarray(box, np.float32))
    return out


def candidate_images(gt: GroundTruth, single_instance_only: bool = True,
                     exclude: Collection[str] = ()) -> dict[str, list[str]]:
    """wnid → sorted image ids usable for evaluation: object images with a readable file
    (`broken` in READABLE_BROKEN), exactly one instance if `single_instance_only` (else ≥ 1), not in `exclude`."""
    img = gt.images
    sel = (img["kind"] == "object") & img["broken"].isin(sorted(READABLE_BROKEN))
    sel &= (img["n_instances"] == 1) if single_instance_only else (img["n_instances"] >= 1)
    excluded = set(exclude)
    out: dict[str, list[str]] = {}
    for wnid, iid in zip(img.loc[sel, "wnid"], img.loc[sel, "image_id"], strict=True):
        if iid not in excluded:
            out.setdefault(str(wnid), []).append(str(iid))
    return {w: sorted(ids) for w, ids in sorted(out.items()) if len(ids) >= 2}


def _random_order(size: int, rng: np.random.Generator) -> Iterator[int]:
    """Every integer in [0, size) once, in random order (a full shuffle when small, lazy draws otherwise)."""
    if size <= _PERMUTE_MAX:
        yield from (int(k) for k in rng.permutation(size))
        return
    seen: set[int] = set()
    while len(seen) < size:
        k = int(rng.integers(size))
        if k not in seen:
            seen.add(k)
            yield k


def sample_eval_pairs(root: Path | str, n_pairs: int, seed: int = 0, single_instance_only: bool = True,
                      min_keypoints: int = 1, exclude: Collection[str] = ()) -> list[EvalPair]:
    """Draw up to `n_pairs` distinct same-category pairs, deterministically for `seed`.

    Pairs are drawn uniformly from all ordered (src, trg) pairs, src != trg, of the candidate images
    (`candidate_images`), keeping those with at least `min_keypoints` keypoints visible in both; an
    unordered pair is never used twice (so (a, b) and (b, a) never both appear). `exclude` holds image ids
    to keep out (e.g. the images a model was trained on). Returns fewer pairs only if the dataset has fewer.
    """
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    gt = require_synthetic(root)
    if n_pairs == 0:
        return []
    groups = candidate_images(gt, single_instance_only, exclude)
    primary = _primary_rows(gt)
    wnids = list(groups)
    sizes = np.array([len(groups[w]) * (len(groups[w]) - 1) for w in wnids], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    pairs: list[EvalPair] = []
    used: set[tuple[str, str]] = set()
    rng = np.random.default_rng([seed, 0x5EED])
    for k in _random_order(int(offsets[-1]), rng):
        c = int(np.searchsorted(offsets, k, side="right") - 1)
        ids, r = groups[wnids[c]], k - int(offsets[c])
        i, j = divmod(r, len(ids) - 1)
        j += j >= i  # skip the diagonal: j ranges over the other images
        src, trg = ids[i], ids[j]
        key = (min(src, trg), max(src, trg))
        if key in used:
            continue
        s_xy, s_vis, _ = primary[src]
        t_xy, t_vis, t_box = primary[trg]
        valid = s_vis & t_vis
        if int(valid.sum()) < min_keypoints:
            continue
        used.add(key)
        pairs.append(_make_pair(gt, src, trg, wnids[c], s_xy, t_xy, valid, t_box))
        if len(pairs) == n_pairs:
            break
    return pairs


def _make_pair(gt: GroundTruth, src: str, trg: str, wnid: str, s_xy: np.ndarray, t_xy: np.ndarray,
               valid: np.ndarray, t_box: np.ndarray) -> EvalPair:
    s_row, t_row = gt.image(src), gt.image(trg)
    return EvalPair(
        src_id=src, trg_id=trg, wnid=wnid, src_path=str(s_row["rel_path"]), trg_path=str(t_row["rel_path"]),
        src_kps=s_xy, trg_kps=t_xy, valid=valid, trg_bbox=t_box,
        src_hw=(int(s_row["height"]), int(s_row["width"])), trg_hw=(int(t_row["height"]), int(t_row["width"])),
        keypoint_names=gt.keypoint_names(wnid),
    )


def sample_object_points(root: Path | str, image_id: str, n_points: int, seed: int = 0) -> np.ndarray:
    """(M, 2) float32 pixel centres (x, y) of up to `n_points` distinct random pixels on the visible mask
    of the image's primary instance (M < n_points only for a smaller mask), deterministic for the seed
    and image. Used for dense PCK (`sc_imagenet.evaluate.pck.dense_pck`)."""
    gt = require_synthetic(root)
    rows, cols = np.nonzero(gt.visible_mask(image_id, 0))
    rng = np.random.default_rng([seed, zlib.crc32(image_id.encode())])
    pick = np.sort(rng.choice(len(rows), size=min(n_points, len(rows)), replace=False))
    return np.stack([cols[pick], rows[pick]], axis=1).astype(np.float32)
