"""The SC-ImageNet release: the folder layout the public CATs and DHPF SC-ImageNet loaders read
(`21210240056/SC-ImageNet`, `CATs/data/imagenet.py` + `CATs/data/dataset.py`, `DHPF/data/imagenet.py`
+ `DHPF/data/dataset.py`), a writer for it and a reader that parses it the way those loaders do.

    <datapath>/SC-ImageNet/            CATs' folder name; DHPF looks for SC-IMAGENET (case-sensitive)
        Layout/large/trn.txt           one pair id per line, every line ends with "\\n"
        Layout/large/val.txt
        PairAnnotation/trn/<pair_id>.json
        PairAnnotation/val/<pair_id>.json
        JPEGImages/<wnid>/<wnid>_<n>.JPEG
        image_ids.csv                  ours: the build's image id → release file (the loaders ignore it)
        release.json                   ours: counts and provenance (the loaders ignore it)

A pair id is `<index>-<src_n>-<trg_n>:<wnid>`; the loaders take the source image name as
`split('-')[2].split(':')[1] + '_' + split('-')[1] + '.JPEG'`, the target's from
`split('-')[2].split(':')[0]`, and find the annotation with `glob('<ann_path>/<pair_id>.json')[0]`.
So `<n>` and `<wnid>` may contain neither `-` nor `:`, and nothing in a pair id may be a glob
metacharacter. docs/dataset.md ("The SC-ImageNet layout") has the full account.

Image ids: `<wnid>_<n>` (n = ASCII digits, the ImageNet form) keeps its n; any other id of the
category (a `-` or `:` inside, `IMG 1`, another category's prefix) gets the next numbers after the
category's largest native n, in sorted-id order. The mapping is deterministic for a given set of
exported images and is recorded in `image_ids.csv` and in every pair's JSON (`src_image_id`, ...).

Image files: a baseline RGB JPEG is placed as it is (hard link, symlink or copy); any other file
(a PNG or CMYK/grayscale/progressive JPEG under its `.JPEG` name, as ImageNet holds a few) is
re-encoded as a baseline RGB JPEG of the same size, so every JPEG reader gets 3 channels from it.
"""

from __future__ import annotations

import csv
import errno
import glob
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sc_imagenet.boxes import object_size
from sc_imagenet.io.atomic import fsync_dir, temp_path

LAYOUT_DIR = "Layout/large"
IMAGE_DIR = "JPEGImages"
ANNOTATION_DIR = "PairAnnotation"
IMAGE_EXT = ".JPEG"
SPLITS = ("trn", "val")  # the split names CATs/DHPF train.py load
LOADER_DIR_NAMES = ("SC-ImageNet", "SC-IMAGENET")  # CATs/data/dataset.py, DHPF/data/dataset.py
CATS_MAX_POINTS = 40  # CATs pads every pair to 40 points (DHPF: 400 for imagenet); more crash its get_points
IMAGE_MODES = ("hardlink", "symlink", "copy")
REENCODED = "reencoded"  # the images_by_method key of files written anew as baseline RGB JPEG
REENCODE_QUALITY = 95  # default of export.reencode_quality
# PIL formats that are a JPEG stream from the first byte: MPO is a camera's multi-picture JPEG, whose
# first (main) picture is what libjpeg, torchvision and PIL decode
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
ID_CSV = "image_ids.csv"
RELEASE_JSON = "release.json"
# scale_variation: ratio of the two objects' sizes (max side of the detected box), binned 0/1/2
SCALE_VARIATION_BINS = (1.5, 2.0)
NOT_ANNOTATED = 0  # viewpoint_variation, truncation, occlusion: no such annotation in a pseudo-labelled pair
REQUIRED_KEYS = ("src_kps", "trg_kps", "src_bndbox", "trg_bndbox", "category",
                 "viewpoint_variation", "scale_variation", "truncation", "occlusion")
VARIATION_KEYS = ("viewpoint_variation", "scale_variation", "truncation", "occlusion")

_WNID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*")
_DIGITS = re.compile(r"[0-9]+")


class ReleaseError(ValueError):
    """The release cannot be written as asked, or a written release does not read back as the loaders would."""


# ----------------------------------------------------------------------------------------------
# ids, boxes, variation fields
# ----------------------------------------------------------------------------------------------


def check_wnid(wnid: str) -> str:
    """A category name the loaders can carry through a pair id: ASCII letters, digits, `_` and `.`
    (not first). `-` and `:` break their string splitting, glob metacharacters their annotation
    look-up, anything non-ASCII their locale-dependent `open()`."""
    if not isinstance(wnid, str) or not _WNID.fullmatch(wnid):
        raise ReleaseError(f"category {wnid!r} cannot be exported: the SC-ImageNet loaders parse the category "
                           "out of `<index>-<src_n>-<trg_n>:<wnid>` and use it as a JPEGImages/ folder name, so it "
                           "may hold only ASCII letters, digits, '_' and '.' (not first)")
    return wnid


def native_number(wnid: str, image_id: str) -> str | None:
    """`n` if `image_id` is `<wnid>_<n>` with n a run of ASCII digits (kept as written, leading zeros
    included), else None."""
    prefix = wnid + "_"
    if image_id.startswith(prefix) and _DIGITS.fullmatch(image_id[len(prefix):]):
        return image_id[len(prefix):]
    return None


def image_numbers(wnid: str, image_ids: Iterable[str]) -> dict[str, str]:
    """The release number `n` (file `<wnid>_<n>.JPEG`) of every image id of one category.

    Native ids (`<wnid>_<digits>`) keep their digits. Every other id, in sorted order, gets the next
    number after the largest native one (max + 1, max + 2, …; 0, 1, … if none is native), so no two
    ids share a file and the result depends only on the set of ids."""
    ids = sorted(set(image_ids))
    out: dict[str, str] = {}
    foreign: list[str] = []
    top = -1
    for image_id in ids:
        n = native_number(wnid, image_id)
        if n is None:
            foreign.append(image_id)
        else:
            out[image_id] = n
            top = max(top, int(n))
    for k, image_id in enumerate(foreign, start=top + 1):
        out[image_id] = str(k)
    return out


def image_name(wnid: str, n: str) -> str:
    return f"{wnid}_{n}{IMAGE_EXT}"


def pair_id(index: int, src_n: str, trg_n: str, wnid: str) -> str:
    """`<index>-<src_n>-<trg_n>:<wnid>`, index zero-padded to 6 digits (wider when it must be)."""
    return f"{index:06d}-{src_n}-{trg_n}:{wnid}"


def integer_box(box: Sequence[float], width: int, height: int) -> list[int]:
    """An `[x1, y1, x2, y2]` float box (pixel centres at integers) as integer pixel indices: rounded
    outwards (floor / ceil), clipped to `[0, W-1] × [0, H-1]`, at least one pixel wide and high
    (CATs' random crop draws `randint(x2, W)` and needs x1 < x2 ≤ W-1 to keep a non-empty crop)."""
    if box is None or len(box) != 4:
        raise ReleaseError(f"a box needs 4 values [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
        raise ReleaseError(f"invalid box {list(box)!r}")
    if width < 2 or height < 2:
        raise ReleaseError(f"image of {width}x{height} pixels is too small for a box")
    if x1 > width - 0.5 or y1 > height - 0.5 or x2 < -0.5 or y2 < -0.5:
        raise ReleaseError(f"box {list(box)!r} lies outside the {width}x{height} image")

    def axis(lo: float, hi: float, size: int) -> tuple[int, int]:
        a = min(max(math.floor(lo), 0), size - 1)
        b = min(max(math.ceil(hi), 0), size - 1)
        if b <= a:
            a, b = (a, a + 1) if a + 1 <= size - 1 else (b - 1, b)
        return a, b

    ix1, ix2 = axis(x1, x2, width)
    iy1, iy2 = axis(y1, y2, height)
    return [ix1, iy1, ix2, iy2]


def scale_ratio(src_box: Sequence[float], trg_box: Sequence[float]) -> float:
    """Larger over smaller object size (`sc_imagenet.boxes.object_size`) of the pair (≥ 1)."""
    a, b = float(object_size(src_box)), float(object_size(trg_box))
    lo, hi = min(a, b), max(a, b)
    return math.inf if lo <= 0 else hi / lo


def scale_variation(ratio: float) -> int:
    """SPair-style level of a size ratio: 0 below 1.5, 1 below 2, else 2 (`SCALE_VARIATION_BINS`)."""
    return int(sum(ratio >= t for t in SCALE_VARIATION_BINS))


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportPair:
    """One final pair as the writer needs it. Keypoints `(N, 2)` `(x, y)` original-image pixels, pixel
    centres at integers; boxes `[x1, y1, x2, y2]` the same; sizes `(width, height)`; `source_*` the
    image files to put in the release; `extra`: JSON-able values added to the pair's annotation."""

    wnid: str
    split: str
    src_id: str
    trg_id: str
    src_source: Path
    trg_source: Path
    src_rel_path: str
    trg_rel_path: str
    src_size: tuple[int, int]
    trg_size: tuple[int, int]
    src_kps: np.ndarray
    trg_kps: np.ndarray
    src_box: Sequence[float]
    trg_box: Sequence[float]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ReleaseSummary:
    root: Path
    pairs_by_split: dict[str, int]
    images: int
    categories: int
    keypoints_per_pair: dict[int, int]  # N → pairs with N keypoints
    images_by_method: dict[str, int]  # hardlink / copy / symlink / reencoded
    remapped_ids: int  # image ids that were not `<wnid>_<digits>`
    bytes_written: int  # annotation files + copied and re-encoded images (links take no image bytes)
    bytes_images: int  # size of the images the release holds or points to

    def as_dict(self) -> dict[str, Any]:
        return {"release": str(self.root), "pairs": sum(self.pairs_by_split.values()),
                "pairs_by_split": dict(self.pairs_by_split), "images": self.images, "categories": self.categories,
                "keypoints_per_pair": {str(k): v for k, v in sorted(self.keypoints_per_pair.items())},
                "images_by_method": dict(self.images_by_method), "remapped_image_ids": self.remapped_ids,
                "bytes_written": self.bytes_written, "bytes_images": self.bytes_images}


def _json_value(v: Any) -> Any:
    """Plain JSON: numpy scalars/arrays to Python, NaN/inf to null (strict JSON has neither)."""
    if isinstance(v, np.ndarray):
        return [_json_value(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def float32_json(value: Any) -> Any:
    """float32 value(s) as JSON numbers: the shortest decimal that reads back as the same float32
    (`12.3`, not `12.300000190734863`); None and NaN/inf become null."""
    if value is None:
        return None
    arr = np.asarray(value, np.float32)
    out = [float(s) if math.isfinite(float(s)) else None for s in arr.ravel().astype(str)]
    return out[0] if arr.ndim == 0 else np.asarray(out, object).reshape(arr.shape).tolist()


def _points(kps: Any, what: str) -> list[list[float]]:
    """`(N, 2)` float32 points as JSON numbers: the shortest decimal that reads back as the same
    float32, so `np.float32(json value)` equals the manifest's value exactly."""
    arr = np.asarray(kps, np.float32)
    if arr.ndim == 1 and arr.size % 2 == 0:
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ReleaseError(f"{what}: keypoints must be a non-empty (N, 2) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ReleaseError(f"{what}: keypoints must be finite")
    return float32_json(arr)


@dataclass(frozen=True)
class ImageHeader:
    """What PIL's header parse tells about a file (it decodes no pixels)."""

    size: tuple[int, int]  # (width, height)
    format: str | None  # PIL's, from the content: "JPEG", "PNG", ...
    mode: str  # "RGB", "L", "CMYK", ...
    progressive: bool

    @property
    def baseline_rgb_jpeg(self) -> bool:
        """True if the file may be placed as it is: a sequential (non-progressive) JPEG with 3
        components. Anything else breaks some reader of the release: `torchvision.io.decode_jpeg`
        refuses a PNG ("Not a JPEG file"), gives 4 channels for CMYK/YCCK and 1 for grayscale;
        GPU decoders' hardware paths (nvJPEG's) take sequential JPEG only. Not checked (rare, and PIL's
        header keeps no trace of them): arithmetic coding, lossless and hierarchical JPEG."""
        return self.format in JPEG_FORMATS and self.mode == "RGB" and not self.progressive


def read_header(path: Path) -> ImageHeader:
    from PIL import Image

    with Image.open(path) as im:
        progressive = bool(im.info.get("progressive") or im.info.get("progression"))
        return ImageHeader(im.size, im.format, im.mode, progressive)


def reencode_jpeg(src: Path, dst: Path, quality: int) -> int:
    """Write `src` (any PIL-readable image) to `dst` as a baseline RGB JPEG of the same size at
    `quality`; returns its size in bytes. Written to a temp name and renamed, so `dst` never holds
    half a file (no fsync: the release tree is synced once before it is swapped in)."""
    from PIL import Image

    try:
        with Image.open(src) as im:
            size = im.size
            # `convert("RGB")` is what the loaders' `Image.open(path).convert('RGB')` did with the
            # original, so PIL-based readers see the same pixels as before (up to JPEG loss): CMYK
            # from an Adobe (Photoshop) JPEG is read inverted by PIL and converted without an ICC
            # profile, alpha is dropped, grayscale is copied to R, G and B.
            rgb = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ReleaseError(f"{src} cannot be decoded for re-encoding ({type(exc).__name__}: {exc})") from None
    if rgb.size != size:  # keypoints and boxes are in the original's pixels
        raise ReleaseError(f"{src}: re-encoding changed the size {size} to {rgb.size}")
    tmp = temp_path(dst)
    # Pixels stay as stored: no EXIF transpose (the loaders ignore EXIF orientation, and the
    # keypoints are in stored pixels), and neither EXIF nor an ICC profile is written, so a viewer
    # shows the same orientation the keypoints refer to. 4:2:0 chroma is libjpeg's default and what
    # ImageNet's own JPEGs use; progressive=False keeps it a baseline (sequential) JPEG.
    rgb.save(tmp, format="JPEG", quality=quality, subsampling="4:2:0", progressive=False, optimize=False)
    os.replace(tmp, dst)
    return dst.stat().st_size


class _Images:
    """Puts source files into JPEGImages/: a baseline RGB JPEG by hard link (falling back to a copy
    where the file system refuses: another device, no link support), symlink (absolute target) or
    copy; any other file re-encoded as one (`reencode_jpeg`), whatever the mode, since a link or copy
    would hand readers the same PNG or CMYK bytes."""

    FALLBACK: ClassVar[frozenset[int]] = frozenset(
        {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES})

    def __init__(self, mode: str, quality: int = REENCODE_QUALITY) -> None:
        if mode not in IMAGE_MODES:
            raise ReleaseError(f"images: {mode!r} is not one of {IMAGE_MODES}")
        if not 1 <= quality <= 100:
            raise ReleaseError(f"re-encoding quality {quality} is not in 1..100")
        self.mode = mode
        self.quality = quality
        self.links_work = True
        self.counts: Counter[str] = Counter({REENCODED: 0})  # always reported, 0 included
        self.bytes_copied = 0  # copied and re-encoded image bytes the release holds itself

    def place(self, src: Path, dst: Path, reencode: bool = False) -> int:
        """Put `src` at `dst`; returns the size of the image the release now holds or points to."""
        if reencode:
            size = reencode_jpeg(src, dst, self.quality)
            self.counts[REENCODED] += 1
            self.bytes_copied += size
            return size
        if self.mode == "symlink":
            os.symlink(os.path.abspath(src), dst)
            self.counts["symlink"] += 1
            return src.stat().st_size
        if self.mode == "hardlink" and self.links_work:
            try:
                os.link(src, dst)
                self.counts["hardlink"] += 1
                return src.stat().st_size
            except OSError as exc:
                if exc.errno not in self.FALLBACK:
                    raise
                self.links_work = False  # the same file systems for every image: stop trying
        shutil.copyfile(src, dst)  # inside the release's temp tree: synced once before the swap
        self.counts["copy"] += 1
        size = dst.stat().st_size
        self.bytes_copied += size
        return size


def _text_bytes(path: Path, text: str) -> int:
    """A file of the release's temp tree. No per-file fsync: the tree becomes visible only by the rename
    in `_swap`, after one `os.sync()` (at 800 k pairs, a sync per file would cost minutes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    path.write_bytes(data)
    return len(data)


def _clean_stale(parent: Path, name: str) -> None:
    """Remove temp/old folders of earlier, killed exports of `name` (their process is gone)."""
    for p in parent.glob(f".{name}.*-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(p, ignore_errors=True)


def _is_release(path: Path) -> bool:
    return (path / RELEASE_JSON).is_file() or (path / LAYOUT_DIR).is_dir() or not any(path.iterdir())


def write_release(
    root: Path,
    pairs: Iterable[ExportPair],
    images: str = "hardlink",
    *,
    info: Mapping[str, Any] | None = None,
    on_pair: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    check_sizes: bool = True,
    reencode_quality: int = REENCODE_QUALITY,
) -> ReleaseSummary:
    """Write the release to `root` (e.g. `<dir>/SC-ImageNet`), replacing any earlier one.

    `pairs` must come grouped by category (each category's pairs together); one category is held in
    memory at a time. The release is built in `<parent>/.<name>.tmp-<pid>` and renamed into place at
    the end, so a failure leaves the earlier release as it was and a rerun never leaves stale files.
    Every pair's source and target file must exist, open with PIL and (`check_sizes`) have the size
    the pair says; otherwise nothing is replaced and `ReleaseError` names the images. Baseline RGB
    JPEGs are placed by `images` (hardlink / symlink / copy), every other file is re-encoded as one at
    `reencode_quality` (`ImageHeader.baseline_rgb_jpeg`). `on_pair` gets one manifest row
    per written pair (`pair_id, split, wnid, src_id, trg_id, src_image, trg_image, annotation`);
    `on_progress` the number of pairs written so far.
    """
    root = Path(os.path.abspath(root))
    parent = root.parent
    parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(parent, root.name)
    if root.exists() and (not root.is_dir() or root.is_symlink() or not _is_release(root)):
        raise ReleaseError(f"{root} exists and is not an SC-ImageNet release written by this project "
                           f"(no {RELEASE_JSON} or {LAYOUT_DIR}/); refusing to replace it")
    tmp = parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    placer = _Images(images, reencode_quality)
    from sc_imagenet.io.images import pil_pixel_limit_lifted

    try:
        # `index` already held every image to its own `max_pixels`; PIL's bomb limit would only
        # turn a larger one that index accepted into an error here
        with pil_pixel_limit_lifted():
            summary = _write_tree(tmp, pairs, placer, info or {}, on_pair, on_progress, check_sizes)
        _swap(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.root = root
    return summary


def _swap(tmp: Path, root: Path) -> None:
    os.sync()  # every file of the temp tree on disk before the tree becomes the release
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    if root.exists():
        os.replace(root, old)
    os.replace(tmp, root)
    fsync_dir(root.parent)
    shutil.rmtree(old, ignore_errors=True)


def _write_tree(
    tmp: Path,
    pairs: Iterable[ExportPair],
    placer: _Images,
    info: Mapping[str, Any],
    on_pair: Callable[[dict[str, Any]], None] | None,
    on_progress: Callable[[int], None] | None,
    check_sizes: bool,
) -> ReleaseSummary:
    (tmp / LAYOUT_DIR).mkdir(parents=True)
    (tmp / IMAGE_DIR).mkdir()
    for split in SPLITS:
        (tmp / ANNOTATION_DIR / split).mkdir(parents=True)
    counts: Counter[str] = Counter()
    kp_counts: Counter[int] = Counter()
    written = bytes_images = remapped = images = 0
    seen: set[str] = set()
    index = 0
    with ExitStack() as files:
        # the split lists and the image table are streamed to disk: nothing here grows with the release
        # but the set of category names (the loaders drop the text after the last "\n": every line ends with one,
        # no pairs = an empty file)
        lists = {s: files.enter_context(open(tmp / LAYOUT_DIR / f"{s}.txt", "w", encoding="utf-8", newline="\n"))
                 for s in SPLITS}
        id_file = files.enter_context(open(tmp / ID_CSV, "w", encoding="utf-8", newline=""))
        ids = csv.writer(id_file, lineterminator="\n")
        ids.writerow(["wnid", "image_id", "file", "rel_path", "reencoded"])
        for wnid, group in groupby(pairs, key=lambda p: p.wnid):
            if wnid in seen:
                raise ReleaseError(f"pairs of category {wnid!r} are not together: write_release needs them grouped")
            seen.add(wnid)
            check_wnid(wnid)
            cat = sorted(group, key=lambda p: (SPLITS.index(p.split) if p.split in SPLITS else len(SPLITS),
                                               p.src_id, p.trg_id))
            sources, headers = _category_images(wnid, cat, check_sizes)
            numbers = image_numbers(wnid, sources)
            remapped += sum(native_number(wnid, i) is None for i in numbers)
            folder = tmp / IMAGE_DIR / wnid
            folder.mkdir()
            for image_id in sorted(sources):
                src, rel, _ = sources[image_id]
                name = image_name(wnid, numbers[image_id])
                reencode = not headers[image_id].baseline_rgb_jpeg
                bytes_images += placer.place(src, folder / name, reencode)
                ids.writerow((wnid, image_id, f"{IMAGE_DIR}/{wnid}/{name}", rel, int(reencode)))
                images += 1
            for p in cat:
                pid = pair_id(index, numbers[p.src_id], numbers[p.trg_id], wnid)
                doc = _annotation(p, pid, image_name(wnid, numbers[p.src_id]), image_name(wnid, numbers[p.trg_id]))
                ann = f"{ANNOTATION_DIR}/{p.split}/{pid}.json"
                written += _text_bytes(tmp / ann, json.dumps(doc, separators=(",", ":")) + "\n")
                lists[p.split].write(f"{pid}\n")
                counts[p.split] += 1
                kp_counts[len(doc["src_kps"])] += 1
                index += 1
                if on_pair is not None:
                    on_pair({"pair_id": pid, "split": p.split, "wnid": wnid, "src_id": p.src_id, "trg_id": p.trg_id,
                             "src_image": f"{IMAGE_DIR}/{wnid}/{doc['src_imname']}",
                             "trg_image": f"{IMAGE_DIR}/{wnid}/{doc['trg_imname']}", "annotation": ann})
                if on_progress is not None:
                    on_progress(index)
    written += sum((tmp / LAYOUT_DIR / f"{s}.txt").stat().st_size for s in SPLITS) + (tmp / ID_CSV).stat().st_size
    summary = ReleaseSummary(tmp, {s: counts[s] for s in SPLITS}, images, len(seen), dict(kp_counts),
                             dict(placer.counts), remapped, 0, bytes_images)
    doc = {"format": "SC-ImageNet (CATs/DHPF loader layout)", "splits": list(SPLITS),
           **{k: v for k, v in summary.as_dict().items() if k not in ("release", "bytes_written", "bytes_images",
                                                                        "images_by_method")},
           # no per-method counts (hardlink vs copy depends on the file system, not on the release);
           # which files were re-encoded does: their bytes differ from the source's
           "images_reencoded": placer.counts[REENCODED], "reencode_quality": placer.quality,
           "scale_variation_bins": list(SCALE_VARIATION_BINS), **_json_value(dict(info))}
    written += _text_bytes(tmp / RELEASE_JSON, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    summary.bytes_written = written + placer.bytes_copied
    return summary


def _category_images(
    wnid: str, cat: list[ExportPair], check_sizes: bool
) -> tuple[dict[str, tuple[Path, str, tuple]], dict[str, ImageHeader]]:
    """image id → (source file, rel path, (width, height)) of one category's pairs, checked: one file
    and one size per id, one split per image, every file present, readable by PIL and (`check_sizes`)
    of that size; and image id → its header (the one open per image that decides re-encoding)."""
    sources: dict[str, tuple[Path, str, tuple]] = {}
    headers: dict[str, ImageHeader] = {}
    split_of: dict[str, str] = {}
    problems: list[str] = []
    for p in cat:
        if p.split not in SPLITS:
            raise ReleaseError(f"pair {p.src_id} → {p.trg_id} ({wnid}): split {p.split!r} is not one of {SPLITS}")
        for image_id, src, rel, size in ((p.src_id, p.src_source, p.src_rel_path, p.src_size),
                                         (p.trg_id, p.trg_source, p.trg_rel_path, p.trg_size)):
            size = (int(size[0]), int(size[1]))
            known = sources.setdefault(image_id, (Path(src), rel, size))
            if known[1] != rel or known[2] != size:
                raise ReleaseError(f"image {wnid}/{image_id} appears with two files or sizes: "
                                   f"{known[1]} {known[2]} and {rel} {size}")
            if split_of.setdefault(image_id, p.split) != p.split:
                raise ReleaseError(f"image {wnid}/{image_id} ({rel}) is in pairs of both splits")
    for image_id, (src, _rel, size) in sorted(sources.items()):
        if not src.is_file():
            problems.append(f"{wnid}/{image_id}: {src} is missing")
            continue
        try:
            header = headers[image_id] = read_header(src)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            problems.append(f"{wnid}/{image_id}: {src} cannot be read ({exc})")
            continue
        if check_sizes and header.size != size:
            actual = header.size
            problems.append(f"{wnid}/{image_id}: {src} is {actual[0]}x{actual[1]}, the manifest says "
                            f"{size[0]}x{size[1]}")
    if problems:
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ReleaseError("images changed since `select` ran; rerun the build from `index` "
                           "(`--force index`) or restore them:\n  " + "\n  ".join(problems[:20]) + more)
    return sources, headers


def _annotation(p: ExportPair, pid: str, src_name: str, trg_name: str) -> dict[str, Any]:
    what = f"pair {p.wnid}/{p.src_id} → {p.trg_id}"
    src_kps, trg_kps = _points(p.src_kps, what + " source"), _points(p.trg_kps, what + " target")
    if len(src_kps) != len(trg_kps):
        raise ReleaseError(f"{what}: {len(src_kps)} source but {len(trg_kps)} target keypoints")
    if len(src_kps) > CATS_MAX_POINTS:
        raise ReleaseError(f"{what}: {len(src_kps)} keypoints; the CATs loader pads pairs to {CATS_MAX_POINTS} "
                           "points and fails on more")
    (sw, sh), (tw, th) = p.src_size, p.trg_size
    ratio = scale_ratio(p.src_box, p.trg_box)
    doc: dict[str, Any] = {
        # read by the CATs / DHPF loaders
        "src_kps": src_kps, "trg_kps": trg_kps,
        "src_bndbox": integer_box(p.src_box, sw, sh), "trg_bndbox": integer_box(p.trg_box, tw, th),
        "category": p.wnid,
        "viewpoint_variation": NOT_ANNOTATED, "scale_variation": scale_variation(ratio),
        "truncation": NOT_ANNOTATED, "occlusion": NOT_ANNOTATED,
        # ours (the loaders ignore them)
        "pair_id": pid, "split": p.split,
        "src_imname": src_name, "trg_imname": trg_name,
        "src_imsize": [int(sw), int(sh)], "trg_imsize": [int(tw), int(th)],
        "src_image_id": p.src_id, "trg_image_id": p.trg_id,
        "src_rel_path": p.src_rel_path, "trg_rel_path": p.trg_rel_path,
        "src_box": float32_json(p.src_box), "trg_box": float32_json(p.trg_box),
        "scale_ratio": round(ratio, 4) if math.isfinite(ratio) else None,
    }
    for k, v in p.extra.items():
        if k in doc:
            raise ReleaseError(f"{what}: extra key {k!r} would overwrite a release key")
        doc[k] = _json_value(v)
    return doc


def link_loader_names(root: Path, log: Callable[[str], None] = print) -> list[Path]:
    """CATs opens `<datapath>/SC-ImageNet`, DHPF `<datapath>/SC-IMAGENET`. When the release's folder
    is one of these names, make the other a relative symlink to it (kept if it already resolves to
    the release, e.g. on a case-insensitive file system; a real folder of that name is left alone,
    with a warning). Returns the names that now lead to the release."""
    root = Path(os.path.abspath(root))
    out: list[Path] = []
    for name in LOADER_DIR_NAMES:
        if name == root.name or name.casefold() != root.name.casefold():
            continue
        alias = root.parent / name
        if alias.is_symlink():
            if os.readlink(alias) != root.name:
                tmp = root.parent / f".{name}.link-{os.getpid()}"
                tmp.unlink(missing_ok=True)
                os.symlink(root.name, tmp)
                os.replace(tmp, alias)
            out.append(alias)
        elif alias.exists():
            if os.path.samefile(alias, root):
                out.append(alias)
            else:
                log(f"[export] {alias} exists and is not the release; the DHPF/CATs loader that opens it will "
                    f"not see {root}")
        else:
            os.symlink(root.name, alias)
            out.append(alias)
    return out


# ----------------------------------------------------------------------------------------------
# reading, exactly as the loaders do
# ----------------------------------------------------------------------------------------------


@dataclass
class ReleasePair:
    """One pair as CATs/DHPF's `ImageNetDataset.__init__` sees it (before resizing)."""

    pair_id: str
    split: str
    category: str
    category_id: int  # index in sorted(os.listdir(JPEGImages))
    src_imname: str
    trg_imname: str
    src_image: Path
    trg_image: Path
    src_kps: np.ndarray  # (N, 2) float32, x y
    trg_kps: np.ndarray
    src_bndbox: np.ndarray  # (4,) float32 (the loaders' .float())
    trg_bndbox: np.ndarray
    annotation: dict[str, Any]
    src_imsize: tuple[int, int] | None = None  # PIL (width, height) when images were opened
    trg_imsize: tuple[int, int] | None = None


def split_lines(text: str) -> list[str]:
    """The loaders' split-file parsing: `read().split('\\n')` without its last element."""
    lines = text.split("\n")
    return lines[: len(lines) - 1]


def loader_image_names(line: str) -> tuple[str, str, str]:
    """(source image name, target image name, wnid) the way the loaders cut a split-file line."""
    dash = line.split("-")
    wnid = dash[2].split(":")[1]
    return wnid + "_" + dash[1] + IMAGE_EXT, wnid + "_" + dash[2].split(":")[0] + IMAGE_EXT, wnid


def read_release(root: Path, split: str, open_images: bool = True) -> list[ReleasePair]:
    """Read split `split` of the release at `root` (`<datapath>/SC-ImageNet`) with the loaders' path
    construction, string splitting, glob look-up and JSON keys, and fail (`ReleaseError`) on
    anything that would break them or disagree with the pair id: a missing image or JSON, a split
    file without its final newline, an empty or malformed line, keypoints that are not (N, 2) with
    1 ≤ N ≤ 40 or whose counts differ, a box that is not 4 integers inside the image, a category that
    is not a JPEGImages/ folder. `open_images`: also open every image with PIL (its size is returned)."""
    root = Path(root)
    spt_path = os.path.join(os.path.abspath(root), LAYOUT_DIR, split + ".txt")
    img_path = os.path.join(os.path.abspath(root), IMAGE_DIR)
    ann_path = os.path.join(os.path.abspath(root), ANNOTATION_DIR, split)
    if not os.path.isfile(spt_path):
        raise ReleaseError(f"split file {spt_path} is missing")
    with open(spt_path, encoding="ascii") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):
        raise ReleaseError(f"{spt_path} does not end with a newline: the loaders would drop its last pair")
    data = split_lines(text)
    if len(set(data)) != len(data):
        raise ReleaseError(f"{spt_path} lists a pair twice")
    cls = sorted(os.listdir(img_path))
    out: list[ReleasePair] = []
    for line in data:
        where = f"{spt_path}: pair {line!r}"
        if not line or len(line.split("-")) != 3 or line.count(":") != 1:
            raise ReleaseError(f"{where}: not of the form <index>-<src_n>-<trg_n>:<wnid>")
        src_name, trg_name, wnid = loader_image_names(line)
        found = glob.glob(f"{ann_path}/{line}.json")  # the loaders' '%s/%s.json' % (ann_path, line)
        expected = os.path.join(ann_path, line + ".json")
        if not found:
            raise ReleaseError(f"{where}: annotation {expected} is missing (or the path holds glob characters)")
        if found[0] != expected:
            raise ReleaseError(f"{where}: glob found {found[0]}, not {expected}")
        with open(found[0]) as fh:
            doc = json.load(fh)
        missing = [k for k in REQUIRED_KEYS if k not in doc]
        if missing:
            raise ReleaseError(f"{where}: annotation lacks {missing}")
        src_kps, trg_kps = (_read_points(doc[k], f"{where}: {k}") for k in ("src_kps", "trg_kps"))
        if src_kps.shape != trg_kps.shape:
            raise ReleaseError(f"{where}: {len(src_kps)} source but {len(trg_kps)} target keypoints")
        category = doc["category"]
        if category not in cls:
            raise ReleaseError(f"{where}: category {category!r} is not a folder of {img_path}")
        if category != wnid:
            raise ReleaseError(f"{where}: the JSON's category {category!r} is not the pair id's {wnid!r}")
        for k in VARIATION_KEYS:
            if type(doc[k]) is not int:
                raise ReleaseError(f"{where}: {k} must be an integer, got {doc[k]!r}")
        cid = cls.index(category)
        src_image = Path(img_path) / cls[cid] / src_name
        trg_image = Path(img_path) / cls[cid] / trg_name
        pair = ReleasePair(line, split, category, cid, src_name, trg_name, src_image, trg_image, src_kps, trg_kps,
                           _read_box(doc["src_bndbox"], f"{where}: src_bndbox"),
                           _read_box(doc["trg_bndbox"], f"{where}: trg_bndbox"), doc)
        for side, image in (("src", src_image), ("trg", trg_image)):
            if not image.is_file():
                raise ReleaseError(f"{where}: image {image} is missing")
            if open_images:
                size = _loader_size(image, where)
                setattr(pair, f"{side}_imsize", size)
                box = getattr(pair, f"{side}_bndbox")
                if not (0 <= box[0] < box[2] <= size[0] - 1 and 0 <= box[1] < box[3] <= size[1] - 1):
                    raise ReleaseError(f"{where}: {side}_bndbox {box.tolist()} is not inside the "
                                       f"{size[0]}x{size[1]} image")
                if f"{side}_imsize" in doc and list(doc[f"{side}_imsize"]) != list(size):
                    raise ReleaseError(f"{where}: {side}_imsize {doc[f'{side}_imsize']} but the image is {size}")
        out.append(pair)
    return out


def _read_points(value: Any, where: str) -> np.ndarray:
    arr = np.asarray(value, np.float32)  # torch.tensor(value).t().float(): (2, N) in the loaders
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ReleaseError(f"{where}: keypoints must be N×2 lists [[x, y], ...], got shape {arr.shape}")
    if not 1 <= arr.shape[0] <= CATS_MAX_POINTS:
        raise ReleaseError(f"{where}: {arr.shape[0]} keypoints; the CATs loader takes 1 to {CATS_MAX_POINTS}")
    return arr


def _read_box(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != 4 or any(type(v) is not int for v in value):
        raise ReleaseError(f"{where}: must be 4 integers [x1, y1, x2, y2], got {value!r}")
    return np.asarray(value, np.float32)


def _loader_size(path: Path, where: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:  # the loaders: Image.open(path).convert('RGB')
            im.convert("RGB")
            return im.size
    except OSError as exc:
        raise ReleaseError(f"{where}: image {path} does not open with PIL ({exc})") from None


def iter_release(root: Path, open_images: bool = True) -> Iterator[ReleasePair]:
    """Every pair of every split."""
    for split in SPLITS:
        yield from read_release(root, split, open_images)
