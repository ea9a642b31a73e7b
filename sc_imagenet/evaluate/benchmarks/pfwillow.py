"""PF-WILLOW (Ham et al., Proposal Flow, CVPR 2016): 900 pairs of 10 subsets, 10 keypoints each.

Two layouts are read, chosen by what the root holds:

- `csv` (when `<root>/test_pairs.csv` exists): the HPF/CATs distribution. One row per pair: image A,
  image B, then 20 source columns (x1..x10, y1..y10) and 20 target columns. Image names are written
  `PF-dataset/car(G)/Cars_006a.png`; they are looked up under the root as written, else without their
  first folder (HPF/CATs' rule: the root is the folder holding the subsets).
- `mat` (otherwise): the Proposal Flow release. Subset folders (`car(G)`, `winebottle(wC)`, …), each
  holding PNG images and one `<image>.mat` per image whose `pts_coord` is 2 × 10 (row 0 x, row 1 y).
  The pairs are all ordered pairs of distinct images of a subset (10 images → 90), subsets and images
  in sorted order.

Coordinates: `pts_coord` holds MATLAB pixel coordinates, 1-based (pixel (1, 1) is the top-left
pixel's centre). Ours are 0-based pixel centres, so x0 = x − 1 and y0 = y − 1. The CSV was made from
the same annotations and is converted the same way. PCK length: max side of the bounding box of the
TARGET keypoints (HPF's `bbox` threshold for PF-WILLOW); the shift changes neither it nor any
distance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sc_imagenet.evaluate.benchmarks.base import (
    IMAGE_SUFFIXES,
    Benchmark,
    BenchmarkError,
    BenchmarkPair,
    BenchmarkSpec,
    cut,
    keypoint_extent,
    numeric_row,
    read_csv,
    read_mat,
    register_benchmark,
    rel,
)

SUBSETS = ("car(G)", "car(M)", "car(S)", "duck(S)", "motorbike(G)", "motorbike(M)", "motorbike(S)",
           "winebottle(M)", "winebottle(wC)", "winebottle(woC)")  # the published subsets (others are read too)
CSV_NAME = "test_pairs.csv"
N_KPS = 10  # keypoints per image in the CSV layout
ONE_BASED = 1.0  # subtracted from every annotated coordinate
THRESHOLD_RULE = "α × max side of the target keypoints' bounding box"


def _pair(pair_id: str, category: str, src: str, trg: str, s_xy: np.ndarray, t_xy: np.ndarray) -> BenchmarkPair:
    n = max(len(s_xy), len(t_xy))
    m = min(len(s_xy), len(t_xy))  # a file with fewer points than its subset: the missing ones do not count
    pad = np.full((n, 2), np.nan, np.float32)
    src_kps, trg_kps = pad.copy(), pad.copy()
    src_kps[: len(s_xy)], trg_kps[: len(t_xy)] = s_xy, t_xy
    valid = np.arange(n) < m
    return BenchmarkPair(pair_id, category, src, trg, src_kps, trg_kps, valid, np.arange(n, dtype=np.int64),
                         keypoint_extent(trg_kps[valid]))


# ---------------------------------------------------------------------------------------------- mat


def read_pts_coord(path: Path) -> np.ndarray:
    """(N, 2) float32 0-based `(x, y)` from a PF-WILLOW annotation's 2 × N `pts_coord`."""
    pts = read_mat(path, ["pts_coord"])["pts_coord"]
    if pts.dtype.kind not in "biuf":
        raise BenchmarkError(f"{path}: pts_coord is not numeric (dtype {pts.dtype})")
    if pts.ndim != 2 or pts.shape[0] != 2 or pts.shape[1] < 1:
        raise BenchmarkError(f"{path}: pts_coord must be 2 × N (row 0 x, row 1 y), got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise BenchmarkError(f"{path}: pts_coord holds non-finite values")
    return (pts.T.astype(np.float64) - ONE_BASED).astype(np.float32)


def _subset_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_mat_layout(root: Path) -> list[BenchmarkPair]:
    """Every pair of the Proposal Flow layout (all annotations are read, so a bad one stops the run)."""
    subsets = sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("*.mat")))
    if not subsets:
        raise BenchmarkError(f"{root} holds neither {CSV_NAME} (HPF/CATs layout) nor subset folders with .mat "
                             f"annotations (Proposal Flow layout: {SUBSETS[0]}/<image>.png + <image>.mat, ...)")
    pairs: list[BenchmarkPair] = []
    for folder in subsets:
        images = _subset_images(folder)
        if len(images) < 2:
            raise BenchmarkError(f"subset {folder} holds {len(images)} image(s); pairs need at least 2")
        kps = [read_pts_coord(img.with_suffix(".mat")) for img in images]
        for i, src in enumerate(images):
            for j, trg in enumerate(images):
                if i != j:
                    pairs.append(_pair(f"{folder.name}/{src.stem}-{trg.stem}", folder.name, rel(src, root),
                                       rel(trg, root), kps[i], kps[j]))
    return pairs


# ---------------------------------------------------------------------------------------------- csv


def _resolve(root: Path, name: str) -> str:
    """The CSV's image name as a root-relative path: as written if that file exists, else without the
    first folder (`PF-dataset/car(G)/x.png` → `car(G)/x.png`, HPF/CATs' rule), which is also the
    answer when neither exists (the pair is then skipped as unreadable by the scorer)."""
    name = name.strip().replace("\\", "/")
    parts = [p for p in name.split("/") if p]
    if (root / name).is_file() or len(parts) < 2:
        return "/".join(parts)
    return "/".join(parts[1:])


def load_csv_layout(root: Path, limit: int | None) -> tuple[list[BenchmarkPair], int]:
    """The first `limit` pairs of test_pairs.csv (all if None) and the number of pairs it lists."""
    path = root / CSV_NAME
    frame = read_csv(path, 2 + 4 * N_KPS, "PF-WILLOW's test_pairs.csv (image A, image B, 20 + 20 keypoints)")
    pairs: list[BenchmarkPair] = []
    for row in cut(range(len(frame)), limit):
        where = f"{path} line {row + 2}"
        src_name, trg_name = (str(v) for v in frame.iloc[row, :2])
        values = numeric_row(frame.iloc[row, 2: 2 + 4 * N_KPS].tolist(), where) - ONE_BASED
        s_xy = values[: 2 * N_KPS].reshape(2, N_KPS).T.astype(np.float32)  # x1..x10, y1..y10
        t_xy = values[2 * N_KPS:].reshape(2, N_KPS).T.astype(np.float32)
        src, trg = _resolve(root, src_name), _resolve(root, trg_name)
        category = src.split("/")[-2] if "/" in src else ""
        pair_id = f"{category}/{Path(src).stem}-{Path(trg).stem}"  # as the mat layout names it
        pairs.append(_pair(pair_id, category, src, trg, s_xy, t_xy))
    return pairs, len(frame)


def load(root: Path, split: str, limit: int | None, seed: int) -> Benchmark:
    del seed
    variant = "csv" if (root / CSV_NAME).is_file() else "mat"
    if variant == "csv":
        pairs, total = load_csv_layout(root, limit)
    else:
        pairs = load_mat_layout(root)
        total = len(pairs)
    return Benchmark("pf-willow", root, split, variant, THRESHOLD_RULE, cut(pairs, limit), total)


register_benchmark(BenchmarkSpec("pf-willow", load, ("test",),
                                 "PF-WILLOW: Proposal Flow subset folders with .mat, or HPF/CATs test_pairs.csv"))
