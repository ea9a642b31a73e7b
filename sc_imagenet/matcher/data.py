"""Training pairs for the matcher: an SC-ImageNet release read as the CATs loader reads it, or the labelled
split of a benchmark read by the readers `sc-imagenet eval` uses, as batches of fixed-size tensors.

    pairs = load_pairs(TrainingSource("release", Path("<out>/export/SC-ImageNet"), "trn"))
    ds = PairDataset(pairs, size=256, augment=True)
    item = ds[(index, seed, epoch)]          # src, trg uint8 (3, 256, 256); src_kps, trg_kps (40, 2); mask ...

What CATs' loader does with a release (`data/dataset.py` + the SC-ImageNet fork's `data/imagenet.py`;
docs/dataset.md, "What the public loaders read") and what this reader does:

- the `trn` and `val` split lists (`Layout/large/<split>.txt`), each pair's JSON, images under
  `JPEGImages/<wnid>/`: `sc_imagenet.dataset.scimagenet.read_release`, the project's loader-exact reader
  (same path construction, string splitting, glob look-up and keys);
- images resized to 256 × 256, keypoints scaled with them, padded with −1 to 40 points and counted
  (`n_pts`); here a `mask` marks the real ones. Keypoints map with the pixel-centre convention
  (`functional.to_frame`); CATs multiplies by 256 / W, half a pixel apart;
- boxes, resized the same way, give the PCK length: max side of the box. CATs uses the source box; this
  reader uses the target's, as SPair-71k defines PCK and `sc-imagenet eval` scores it;
- the training augmentation (`augment.py`), on `trn` only.

Benchmarks (SPair-71k, PF-PASCAL, the synthetic data) come from `sc_imagenet.evaluate.benchmarks`: a pair's
keypoints that count (`valid`) are its training points, at most 40 (the first 40; none of the public
benchmarks has more), and its PCK length is the reader's (`threshold`, None = the target image's side).

Images are decoded when a batch needs them. One that is missing or cannot be decoded stops training with
a `MatcherDataError` naming the file and the pair (a checkpoint taken before it lets the run resume once
the file is fixed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sc_imagenet.boxes import object_size
from sc_imagenet.dataset.scimagenet import CATS_MAX_POINTS, read_release
from sc_imagenet.io.images import load_rgb
from sc_imagenet.matcher import augment, functional
from sc_imagenet.matcher.functional import frame_batch

RELEASE = "release"
BENCHMARK_SOURCES = ("spair", "pf-pascal", "synthetic")
SOURCES = (RELEASE, *BENCHMARK_SOURCES)
PAD = -1.0  # CATs pads keypoints with -1
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class MatcherDataError(ValueError):
    """Training data that cannot be read; the message names the file."""


@dataclass(frozen=True)
class TrainingPair:
    """One labelled pair. Keypoints `(N, 2)` float32 original pixels (pixel centres at integers), 1 ≤ N ≤ 40,
    all of them counted; boxes `[x1, y1, x2, y2]` or None; `threshold` the PCK length in target pixels (None:
    the target image's max side)."""

    pair_id: str
    category: str
    src_image: Path
    trg_image: Path
    src_kps: np.ndarray
    trg_kps: np.ndarray
    src_box: np.ndarray | None
    trg_box: np.ndarray | None
    threshold: float | None


@dataclass(frozen=True)
class TrainingSource:
    """Where pairs come from: `kind` is `release` or a benchmark name (`spair`, `pf-pascal`, `synthetic`),
    `root` its folder, `split` the split to read (`trn`; the synthetic data has one split, `all`, of
    `limit` pairs sampled with `seed`)."""

    kind: str
    root: Path
    split: str = "trn"
    limit: int | None = None
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "root": str(Path(self.root).resolve()), "split": self.split,
                "limit": self.limit, "seed": self.seed}

    def validation(self) -> TrainingSource | None:
        """The split settings are checked on: the release's and the benchmarks' `val`; none for synthetic data
        (generate a second dataset with another seed for that)."""
        if self.kind == "synthetic" or self.split == "val":
            return None
        return TrainingSource(self.kind, self.root, "val", None, self.seed)


def source_of(data: Path | str | TrainingSource) -> TrainingSource:
    """A path means a release's `trn` split."""
    return data if isinstance(data, TrainingSource) else TrainingSource(RELEASE, Path(data), "trn")


def load_pairs(source: TrainingSource) -> list[TrainingPair]:
    """The source's pairs in its own order (ReleaseError / BenchmarkError for a missing or malformed file)."""
    if source.kind == RELEASE:
        return release_pairs(Path(source.root), source.split, source.limit)
    if source.kind in BENCHMARK_SOURCES:
        return benchmark_pairs(source.kind, Path(source.root), source.split, source.limit, source.seed)
    raise MatcherDataError(f"unknown training source {source.kind!r}; known: {', '.join(SOURCES)}")


def release_pairs(root: Path, split: str = "trn", limit: int | None = None) -> list[TrainingPair]:
    if not Path(root).is_dir():
        raise MatcherDataError(f"release {root} does not exist (expected <out>/export/SC-ImageNet)")
    # open_images=False: every file's presence is checked now, its decoding when a batch needs it (a release
    # of ImageNet's size would otherwise be decoded once before the first step)
    out = []
    for p in read_release(root, split, open_images=False)[:limit]:
        out.append(TrainingPair(p.pair_id, p.category, p.src_image, p.trg_image, p.src_kps, p.trg_kps,
                                p.src_bndbox, p.trg_bndbox, float(object_size(p.trg_bndbox))))
    return out


def benchmark_pairs(name: str, root: Path, split: str, limit: int | None, seed: int) -> list[TrainingPair]:
    from sc_imagenet.evaluate.benchmarks import load_benchmark

    bench = load_benchmark(name, root, split, limit, seed)
    out = []
    for p in bench.pairs:
        valid = np.asarray(p.valid, bool)
        if not valid.any():
            continue  # nothing to learn from (e.g. a PF-PASCAL pair whose rows are all NaN in one image)
        keep = np.flatnonzero(valid)[:CATS_MAX_POINTS]
        out.append(TrainingPair(p.pair_id, p.category, Path(bench.root) / p.src_image, Path(bench.root) / p.trg_image,
                                np.asarray(p.src_kps, np.float32)[keep], np.asarray(p.trg_kps, np.float32)[keep],
                                None, None, p.threshold))
    return out


# ---------------------------------------------------------------------------------------------- tensors


def read_image(path: Path, pair: TrainingPair) -> np.ndarray:
    """RGB uint8, or a MatcherDataError naming the file and its pair."""
    try:
        return load_rgb(path)
    except FileNotFoundError:
        raise MatcherDataError(f"image {path} (pair {pair.pair_id}) is missing") from None
    except UNREADABLE as exc:
        raise MatcherDataError(f"image {path} (pair {pair.pair_id}) cannot be decoded: "
                               f"{type(exc).__name__}: {exc}") from None


def pad_points(points: np.ndarray, n: int) -> np.ndarray:
    out = np.full((n, 2), PAD, np.float32)
    out[: len(points)] = points
    return out


class PairDataset(torch.utils.data.Dataset):
    """Pairs as fixed-size tensors. An item is looked up by `(index, seed, epoch)` (or a bare index: no
    augmentation draw); with `augment`, the draws come from `numpy.random.default_rng([seed, epoch, index])`."""

    def __init__(self, pairs: Sequence[TrainingPair], size: int = 256, augment: bool = False,
                 max_points: int = CATS_MAX_POINTS) -> None:
        self.pairs = list(pairs)
        self.size = size
        self.augment = augment
        self.max_points = max_points
        for p in self.pairs:
            if not 1 <= len(p.src_kps) <= max_points or p.src_kps.shape != p.trg_kps.shape:
                raise MatcherDataError(f"pair {p.pair_id}: {len(p.src_kps)} source and {len(p.trg_kps)} target "
                                       f"keypoints; 1 to {max_points} pairs of points are needed")

    def __len__(self) -> int:
        return len(self.pairs)

    def _side(self, rgb: np.ndarray, kps: np.ndarray, box: np.ndarray | None,
              rng: np.random.Generator | None) -> tuple[torch.Tensor, np.ndarray, tuple[int, int], np.ndarray | None]:
        """One image: (frame tensor (3, S, S), points in the frame, the (H, W) the frame was made from, box in
        that region's pixels)."""
        if rng is not None:
            left, top, right, bottom = augment.random_crop(rng, rgb.shape[:2],
                                                           augment.keep_region(rgb.shape[:2], kps, box))
            rgb = rgb[top:bottom, left:right]
            kps = kps - np.array([left, top], np.float32)
            box = None if box is None else box - np.array([left, top, left, top], np.float32)
        frame = frame_batch([rgb], self.size)[0]
        if rng is not None:
            frame = torch.from_numpy(augment.photometric(frame.permute(1, 2, 0).numpy(), rng).copy()).permute(2, 0, 1)
        return frame.contiguous(), functional.to_frame(kps, rgb.shape[:2], self.size), rgb.shape[:2], box

    def threshold(self, pair: TrainingPair, hw: tuple[int, int], box: np.ndarray | None) -> float:
        """The PCK length in the target's frame: the box's max side after resizing; without a box, the
        reader's length scaled by the mean of the two axes' factors (the length's direction is unknown); no
        length at all: the frame's side (the target image's max side, resized)."""
        h, w = hw
        if box is not None:
            return float(max((box[2] - box[0]) * self.size / w, (box[3] - box[1]) * self.size / h))
        if pair.threshold is None:
            return float(self.size)
        return float(pair.threshold) * 0.5 * (self.size / w + self.size / h)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, torch.Tensor]:
        index, rng = key, None
        if isinstance(key, tuple):
            index, seed, epoch = key
            rng = np.random.default_rng([seed, epoch, index]) if self.augment else None
        pair = self.pairs[index]
        src, trg = read_image(pair.src_image, pair), read_image(pair.trg_image, pair)
        src_t, src_kps, _, _ = self._side(src, pair.src_kps.astype(np.float32), pair.src_box, rng)
        trg_t, trg_kps, trg_hw, trg_box = self._side(trg, pair.trg_kps.astype(np.float32), pair.trg_box, rng)
        n = len(pair.src_kps)
        mask = np.zeros(self.max_points, bool)
        mask[:n] = True
        return {"src": src_t, "trg": trg_t,
                "src_kps": torch.from_numpy(pad_points(src_kps, self.max_points)),
                "trg_kps": torch.from_numpy(pad_points(trg_kps, self.max_points)),
                "mask": torch.from_numpy(mask), "n_pts": torch.tensor(n),
                "threshold": torch.tensor(self.threshold(pair, trg_hw, trg_box), dtype=torch.float32)}


# ---------------------------------------------------------------------------------------------- order


def steps_per_epoch(n_pairs: int, batch_size: int) -> int:
    """Every pair once per epoch; the last batch may be smaller."""
    return math.ceil(n_pairs / batch_size)


def epoch_order(n_pairs: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_pairs)


class StepBatches(torch.utils.data.Sampler[list[tuple[int, int, int]]]):
    """The keys of the batches of steps `start .. stop − 1`. Step s is batch `s mod k` of epoch `s div k`
    (k = steps per epoch), and an epoch's order is a permutation seeded with `(seed, epoch)`: a run resumed at
    step s sees exactly the batches an uninterrupted run would."""

    def __init__(self, n_pairs: int, batch_size: int, seed: int, start: int, stop: int) -> None:
        self.n, self.batch_size, self.seed, self.start, self.stop = n_pairs, batch_size, seed, start, stop
        self.per_epoch = steps_per_epoch(n_pairs, batch_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        order, order_epoch = None, -1
        for step in range(self.start, self.stop):
            epoch, k = divmod(step, self.per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(self.n, self.seed, epoch), epoch
            chunk = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield [(int(i), self.seed, epoch) for i in chunk]
