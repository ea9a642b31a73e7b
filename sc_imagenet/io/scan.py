"""Scan one category folder into one index shard. Runs in a worker thread and writes its own shard,
streaming, so nothing holds a whole category's rows."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image

from sc_imagenet.io.images import probe_image
from sc_imagenet.io.manifest import ShardWriter

INDEX_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("rel_path", pa.string()),
    ("bytes", pa.int64()),
    ("format", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mode", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
])


@dataclass(frozen=True)
class ScanTask:
    wnid: str
    folder: Path
    data_root: Path
    shard: Path
    fingerprint: str
    schema_version: int
    verify: str
    max_pixels: int
    row_group_size: int


@dataclass(frozen=True)
class ScanResult:
    wnid: str
    rows: int
    by_status: dict[str, int]


@contextmanager
def pil_pixel_limit_lifted() -> Iterator[None]:
    """Our own `max_pixels` check replaces PIL's global bomb limit while a scan runs (so too-large
    images still report their dimensions); PIL's limit is restored afterwards."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: not a folder, the probe reports it
        return False


def list_files(folder: Path) -> list[str]:
    """Sorted names of the non-hidden, non-directory entries (broken symlinks and loops included:
    they become rows with a reason)."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and not _is_dir(e))


def scan_category(task: ScanTask) -> ScanResult:
    counts: Counter[str] = Counter()
    with ShardWriter(task.shard, INDEX_SCHEMA, task.fingerprint, task.schema_version,
                     task.row_group_size) as writer:
        for name in list_files(task.folder):
            path = task.folder / name
            probe = probe_image(path, task.verify, task.max_pixels)
            counts[probe.status] += 1
            writer.write({
                "image_id": Path(name).stem,
                "rel_path": path.relative_to(task.data_root).as_posix(),
                "bytes": probe.bytes, "format": probe.format, "width": probe.width,
                "height": probe.height, "mode": probe.mode, "status": probe.status, "error": probe.error,
            })
    return ScanResult(task.wnid, sum(counts.values()), dict(counts))
