"""Atomic file writes: the one temp-file-then-rename implementation every writer uses.

    with atomic_path(path) as tmp:      # write anything to `tmp` (Parquet writer, torch.save, …)
        torch.save(payload, tmp)
    atomic_write_bytes(path, data)
    atomic_write_text(path, text)

Readers see the old file or the new one, never half a file. The temp file is `.<name>.<pid>.tmp` in
the same folder as `path` (same filesystem, so the rename is atomic): the dot prefix makes Parquet
readers and `list_shards` ignore it, and `build._clean_leftovers` removes `.*.tmp`; the pid means an
orphaned worker of a killed build can never clobber a rerun's file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(path: Path) -> Path:
    """The temp file `atomic_path(path)` writes through: `.<name>.<pid>.tmp` beside `path`."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.tmp"


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; a no-op where directories cannot be opened or synced."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield the temp path to write `path` through (its folder is created).

    On a clean exit the temp file is fsynced, renamed over `path` and the folder fsynced; on an
    exception (in the block or while committing) the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        fsync_file(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (see `atomic_path`)."""
    atomic_write_bytes(path, text.encode(encoding))
