"""What every benchmark loader returns, the registry they join, and the readers they share.

A loader turns a benchmark folder the user downloaded (nothing is fetched) into a `Benchmark`: its
pairs, each with both images' paths relative to the root, the keypoints in ORIGINAL pixels with pixel
centres at integers (0-based, the project's convention, docs/evaluate.md "Coordinates"), which of
them count, and the pair's PCK length (α × that length is the distance within which a prediction is
correct). Everything that can be checked without decoding an image is checked while loading, so a
missing or malformed file stops the run before any method runs, with a `BenchmarkError` naming it.
Images are only opened by the scorer: an unreadable one makes a skipped pair, not an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sc_imagenet.boxes import object_size
from sc_imagenet.registry import Registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # case-insensitive


class BenchmarkError(ValueError):
    """A benchmark root or file that cannot be read as its layout requires; the message names it."""


@dataclass(frozen=True)
class BenchmarkPair:
    """One source → target pair.

    src_image, trg_image: POSIX paths relative to the benchmark root. src_kps, trg_kps: (N, 2) float32
    `(x, y)` original pixels, 0-based pixel centres. valid: (N,) bool, the keypoints that are scored
    (annotated in both images). kp_ids: (N,) int64, the benchmark's own number of each keypoint (its row
    in the annotation, SPair's `kps_ids`). threshold: the PCK length in target pixels, or None for the
    max side of the target image (known once it is decoded).
    """

    pair_id: str
    category: str
    src_image: str
    trg_image: str
    src_kps: np.ndarray
    trg_kps: np.ndarray
    valid: np.ndarray
    kp_ids: np.ndarray
    threshold: float | None

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())


@dataclass(frozen=True)
class Benchmark:
    """A loaded benchmark: `pairs` in the benchmark's own order (already cut to `--limit`)."""

    name: str
    root: Path
    split: str
    variant: str  # which of the benchmark's layouts was read (e.g. PF-WILLOW "mat" or "csv")
    threshold_rule: str  # in words, for the printed summary
    pairs: list[BenchmarkPair]
    pairs_total: int  # pairs in the split before `limit`


# load(root, split, limit, seed) -> Benchmark
Loader = Callable[[Path, str, "int | None", int], Benchmark]


@dataclass(frozen=True)
class BenchmarkSpec:
    """A registered benchmark: its loader, the splits it has (the first is the default) and a line of help."""

    name: str
    load: Loader
    splits: tuple[str, ...]
    description: str

    @property
    def default_split(self) -> str:
        return self.splits[0]


BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add a benchmark under `spec.name`; ValueError if the name is taken."""
    return BENCHMARKS.register(spec.name, spec)


def load_benchmark(name: str, root: Path | str, split: str | None = None, limit: int | None = None,
                   seed: int = 0) -> Benchmark:
    """The named benchmark read from `root` (split: the benchmark's default if None; limit: its first
    `limit` pairs). BenchmarkError for a bad root, split or file; UnknownNameError for an unknown name."""
    spec = BENCHMARKS[name]
    split = spec.default_split if split is None else split
    if split not in spec.splits:
        raise BenchmarkError(f"{name} has no split {split!r}; its splits: {', '.join(spec.splits)}")
    if limit is not None and limit < 1:
        raise BenchmarkError(f"--limit must be at least 1, got {limit}")
    return spec.load(require_dir(Path(root), f"{name} root"), split, limit, seed)


# ---------------------------------------------------------------------------------------------- checks


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise BenchmarkError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise BenchmarkError(f"{what} {path} is not a folder")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise BenchmarkError(f"{what} {path} is missing" if not path.exists() else f"{what} {path} is not a file")
    return path


def rel(path: Path, root: Path) -> str:
    """`path` relative to `root`, POSIX."""
    return path.relative_to(root).as_posix()


def cut(items: Sequence[Any], limit: int | None) -> list[Any]:
    return list(items if limit is None else items[:limit])


def keypoint_array(values: Any, where: str, columns: int = 2, allow_nan: bool = False) -> np.ndarray:
    """A numeric (N, columns) float64 array, or a BenchmarkError naming `where`."""
    try:
        arr = np.asarray(values, np.float64)
    except (TypeError, ValueError) as exc:
        raise BenchmarkError(f"{where}: keypoints are not numbers ({exc})") from None
    if arr.size == 0:
        return np.zeros((0, columns), np.float64)
    if arr.ndim != 2 or arr.shape[1] != columns:
        raise BenchmarkError(f"{where}: expected keypoints of shape (N, {columns}), got {arr.shape}")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        raise BenchmarkError(f"{where}: keypoints hold {'infinite' if allow_nan else 'non-finite'} values")
    return arr


def bbox_length(box: Any, where: str) -> float:
    """The object size (`sc_imagenet.boxes.object_size`) of an `[x1, y1, x2, y2]` box read from a
    benchmark's file, or a BenchmarkError naming `where` when it is not 4 numbers or has no extent."""
    try:
        xyxy = np.asarray(box, np.float64).reshape(4)
    except (TypeError, ValueError) as exc:
        raise BenchmarkError(f"{where}: a box needs 4 numbers [x1, y1, x2, y2], got {box!r} ({exc})") from None
    length = float(object_size(xyxy))
    if not math.isfinite(length) or length <= 0:
        raise BenchmarkError(f"{where}: box {[float(v) for v in xyxy]} has no extent")
    return length


def keypoint_extent(kps: np.ndarray) -> float:
    """max side of the bounding box of (N, 2) points (0 for fewer than two distinct points)."""
    if len(kps) == 0:
        return 0.0
    return float(np.max(kps.max(axis=0) - kps.min(axis=0)))


# ---------------------------------------------------------------------------------------------- readers


_MAT73 = b"MATLAB 7.3"


def read_mat(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The named variables of a MATLAB v4/v5/v7 `.mat` file (`scipy.io.loadmat`, what the public loaders
    use). A missing file, a v7.3 (HDF5) file, an unreadable one or a missing variable is a BenchmarkError
    naming the file."""
    require_file(path, "annotation")
    import scipy.io

    with path.open("rb") as fh:
        head = fh.read(128)
    if head.startswith(_MAT73):
        raise BenchmarkError(f"{path} is a MATLAB v7.3 (HDF5) file; the published annotations are v5, which "
                             "scipy.io.loadmat reads — re-save it with `save(..., '-v7')`")
    try:
        data = scipy.io.loadmat(str(path), variable_names=list(keys))
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, MatReadError... on a bad file
        raise BenchmarkError(f"{path} is not a readable .mat file: {type(exc).__name__}: {exc}") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise BenchmarkError(f"{path} has no variable {', '.join(map(repr, missing))}")
    return {k: np.asarray(data[k]) for k in keys}


def read_json(path: Path) -> dict[str, Any]:
    require_file(path, "annotation")
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchmarkError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_csv(path: Path, min_columns: int, what: str):  # -> pandas.DataFrame
    """A CSV with a header line and at least `min_columns` columns (read by position, as the public
    loaders do), or a BenchmarkError naming it."""
    import pandas as pd

    require_file(path, what)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise BenchmarkError(f"{path} is not a readable CSV: {exc}") from None
    if frame.shape[1] < min_columns:
        raise BenchmarkError(f"{path} has {frame.shape[1]} columns, {what} needs at least {min_columns}")
    if frame.empty:
        raise BenchmarkError(f"{path} lists no pairs")
    return frame


def numeric_row(values: Sequence[Any], where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise BenchmarkError(f"{where}: non-numeric keypoint value in {list(values)!r}") from None
    if not np.isfinite(arr).all():
        raise BenchmarkError(f"{where}: missing or non-finite keypoint value")
    return arr
