"""PF-PASCAL (Ham et al., Proposal Flow, TPAMI 2018) as distributed with HPF/CATs: 20 VOC classes.

    <root>/{trn,val,test}_pairs.csv      columns by position: source image, target image, class (1..20),
                                          then (trn only) a flip flag
    <root>/JPEGImages/<image>.jpg        the CSV's names are looked up by their base name here
    <root>/Annotations/<class>/<image>.mat   `kps` N × 2 (x, y) per image, a NaN row for a keypoint the
                                          image does not show; `bbox` 1 × 4 (unused: see the threshold)

Keypoint i of the source corresponds to row i of the target (same class, same N); a keypoint counts
when both rows are finite (HPF/CATs drop the others, and so rows without a partner). `kp_idx` is the
row number. Coordinates are MATLAB's 1-based pixels and become 0-based pixel centres (x − 1, y − 1),
as for PF-WILLOW. PCK length: max side (height or width) of the TARGET image, the HPF `img`
threshold PF-PASCAL results are reported with; it is read from the decoded image. The trn flip flag
(HPF's training-time augmentation) is ignored: evaluation uses the images as they are.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from sc_imagenet.evaluate.benchmarks.base import (
    Benchmark,
    BenchmarkError,
    BenchmarkPair,
    BenchmarkSpec,
    cut,
    keypoint_array,
    read_csv,
    read_mat,
    register_benchmark,
    require_dir,
)

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
IMAGE_DIR = "JPEGImages"
ANNOTATION_DIR = "Annotations"
ONE_BASED = 1.0
THRESHOLD_RULE = "α × max side of the target image"


def read_kps(path: Path) -> np.ndarray:
    """(N, 2) float64 0-based `(x, y)` of a PF-PASCAL annotation's `kps` (NaN rows kept)."""
    kps = read_mat(path, ["kps"])["kps"]
    if kps.dtype.kind not in "biuf":
        raise BenchmarkError(f"{path}: kps is not numeric (dtype {kps.dtype})")
    return keypoint_array(kps.reshape(-1, 2) if kps.size == 0 else kps, str(path), allow_nan=True) - ONE_BASED


def _class_of(value: object, where: str) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not 1 <= number <= len(CLASSES):
        raise BenchmarkError(f"{where}: class must be a number 1..{len(CLASSES)}, got {value!r}")
    return CLASSES[int(number) - 1]


def load(root: Path, split: str, limit: int | None, seed: int) -> Benchmark:
    del seed
    csv = root / f"{split}_pairs.csv"
    frame = read_csv(csv, 3, f"PF-PASCAL's {split}_pairs.csv (source image, target image, class)")
    require_dir(root / IMAGE_DIR, "PF-PASCAL image folder")
    require_dir(root / ANNOTATION_DIR, "PF-PASCAL annotation folder")
    cache: dict[Path, np.ndarray] = {}
    pairs: list[BenchmarkPair] = []
    for row in cut(range(len(frame)), limit):
        where = f"{csv} line {row + 2}"
        names = [PurePosixPath(str(v).strip().replace("\\", "/")).name for v in frame.iloc[row, :2]]
        cls = _class_of(frame.iloc[row, 2], where)
        kps = []
        for name in names:
            ann = root / ANNOTATION_DIR / cls / (PurePosixPath(name).stem + ".mat")
            if ann not in cache:
                cache[ann] = read_kps(ann)
            kps.append(cache[ann])
        # rows pair up by index; should two files of a class differ in length, the rows beyond the shorter
        # one have no partner and do not count (HPF's zip() drops them the same way)
        n = max(len(k) for k in kps)
        s_xy, t_xy = (np.vstack([k, np.full((n - len(k), 2), np.nan)]) for k in kps)
        valid = np.isfinite(s_xy).all(1) & np.isfinite(t_xy).all(1)
        pair_id = f"{PurePosixPath(names[0]).stem}-{PurePosixPath(names[1]).stem}"
        pairs.append(BenchmarkPair(pair_id, cls, f"{IMAGE_DIR}/{names[0]}", f"{IMAGE_DIR}/{names[1]}",
                                   s_xy.astype(np.float32), t_xy.astype(np.float32), valid,
                                   np.arange(len(s_xy), dtype=np.int64), None))
    return Benchmark("pf-pascal", root, split, "hpf", THRESHOLD_RULE, pairs, len(frame))


register_benchmark(BenchmarkSpec("pf-pascal", load, ("test", "val", "trn"),
                                 "PF-PASCAL as HPF/CATs ship it: {trn,val,test}_pairs.csv, JPEGImages/, Annotations/"))
