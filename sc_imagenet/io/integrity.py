"""The files a finished stage owns, with their size and checksum, and the checks that say they are whole.

When a stage finishes, `execute_stage` lists every file it owns (its shards and its artifacts: the
generator checkpoint, the release) in `<stage dir>/_files.tsv`, one line per file:

    <xxh3-128 hex>\t<bytes>\t<path relative to the build folder>

and records that inventory's own size and checksum in `_stage.json`, which is written last. Two checks
read it back:

- the default (`status`, and every build before it skips a finished stage): each file exists, has its
  recorded size and, for a Parquet shard, a readable footer. One `stat` and one small read per file.
- `verify`: also recomputes every checksum (reads every byte), which finds bytes flipped in place.

Paths inside the build folder are stored relative to it, so a moved or copied build checks the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from sc_imagenet.io.parallel import ordered_map

INVENTORY = "_files.tsv"
_CHUNK = 1 << 20


def file_xxh3(path: Path) -> str:
    """xxh3-128 of a file's bytes (hex): several GB/s, so checking is bound by the disk, not the hash."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def build_relative(path: Path | str, out_dir: Path) -> str:
    """`path` as stored in a record: relative to the build folder (posix) when inside it, else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(Path(os.path.abspath(out_dir))).as_posix()
    except ValueError:
        return str(path)


def in_build(value: str | Path, out_dir: Path) -> Path:
    """A path from a record back on disk: relative ones are under the build folder (wherever it is now)."""
    path = Path(value)
    return path if path.is_absolute() else Path(out_dir) / path


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the build folder (posix); absolute for a file outside it
    size: int
    xxh3: str


@dataclass(frozen=True)
class Damage:
    """One file of a finished stage that is not as it was written."""

    path: str  # as in the inventory (relative to the build folder)
    problem: str  # "missing", "truncated: 300000 of 812345 bytes", "checksum differs", ...

    def __str__(self) -> str:
        return f"{self.path} ({self.problem})"


@dataclass(frozen=True)
class InventorySummary:
    """What `_stage.json` keeps of the inventory, to know the inventory itself is whole."""

    files: int
    bytes: int
    size: int  # of `_files.tsv` itself
    xxh3: str  # of `_files.tsv` itself


def walk_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file of `paths` (files, or folders walked recursively), in sorted order. Symlinks are not
    followed (the release's loader aliases point back into the release) and dot-files are temp files."""
    for path in sorted(Path(p) for p in paths):
        if path.is_symlink():
            continue
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    f = Path(root) / name
                    if not name.startswith(".") and not f.is_symlink():
                        yield f
        elif path.is_file():
            yield path


def inventory_entries(out_dir: Path, paths: Iterable[Path], workers: int = 4) -> Iterator[FileEntry]:
    """Size and checksum of every file under `paths`, in `walk_files` order, hashed `workers` at a time (reading
    is I/O-bound). Lazy: a release of a million files is never held as a list."""

    def entry(f: Path) -> FileEntry:
        return FileEntry(build_relative(f, out_dir), f.stat().st_size, file_xxh3(f))

    return ordered_map(entry, walk_files(paths), workers)


def write_inventory(path: Path, entries: Iterable[FileEntry]) -> InventorySummary:
    """Stream `entries` into `path` (atomically), one line each; the summary (count, bytes, the file's own size
    and checksum) is computed on the way, so memory does not grow with the number of files."""
    from sc_imagenet.io.atomic import atomic_path

    files = total = size = 0
    digest = xxhash.xxh3_128()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for e in entries:
            if "\t" in e.path or "\n" in e.path:
                raise ValueError(f"cannot record a file name with a tab or newline: {e.path!r}")
            line = f"{e.xxh3}\t{e.size}\t{e.path}\n".encode()
            fh.write(line)
            digest.update(line)
            files, total, size = files + 1, total + e.size, size + len(line)
    return InventorySummary(files, total, size, digest.hexdigest())


class InventoryError(ValueError):
    """`_files.tsv` cannot be parsed."""


def read_inventory(path: Path) -> list[FileEntry]:
    return list(iter_inventory(path))


def iter_inventory(path: Path) -> Iterator[FileEntry]:
    """The entries of `_files.tsv`, read line by line (InventoryError at the first malformed line)."""
    with open(path, encoding="utf-8", newline="\n") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or not parts[1].isdigit():
                raise InventoryError(f"{path}: line {n} is not `<xxh3>\\t<bytes>\\t<path>`")
            yield FileEntry(parts[2], int(parts[1]), parts[0])


def check_file(out_dir: Path, entry: FileEntry, verify: bool = False) -> str | None:
    """What is wrong with one recorded file (None: nothing): missing, wrong size, an unreadable Parquet footer,
    or (`verify`) a checksum that differs."""
    path = os.path.join(out_dir, entry.path)  # plain strings: a status over a million release files adds up
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if size < entry.size:
        return f"truncated: {size} of {entry.size} bytes"
    if size != entry.size:
        return f"{size} bytes, {entry.size} recorded"
    if path.endswith(".parquet"):
        try:
            pq.read_metadata(path)
        except (OSError, pa.ArrowException) as exc:
            return f"Parquet footer unreadable ({str(exc).splitlines()[0][:120]})"
    if verify:
        try:
            if file_xxh3(Path(path)) != entry.xxh3:
                return "checksum differs (bytes changed in place)"
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
    return None


def check_files(out_dir: Path, entries: Iterable[FileEntry], verify: bool = False, workers: int = 4) -> list[Damage]:
    """Every damaged file of `entries`, in their order (consumed lazily). Checksums are computed `workers` files at
    a time (reading is I/O); the default check runs in this thread: a `stat` costs microseconds, less than
    handing it out."""
    if verify:
        checked = ordered_map(lambda entry: (entry, check_file(out_dir, entry, verify)), entries, workers)
    else:
        checked = ((entry, check_file(out_dir, entry)) for entry in entries)
    return [Damage(entry.path, problem) for entry, problem in checked if problem is not None]


def check_inventory(out_dir: Path, path: Path, summary: InventorySummary, verify: bool = False) -> list[Damage]:
    """Damage of the stage's files: the inventory itself first (always checksummed: it is what is trusted),
    then every file it lists (read as it is checked: a malformed line counts as damage of the inventory)."""
    entry = FileEntry(build_relative(path, out_dir), summary.size, summary.xxh3)
    problem = check_file(out_dir, entry, verify=True)
    if problem is None:
        try:
            return check_files(out_dir, iter_inventory(path), verify)
        except (OSError, UnicodeDecodeError, InventoryError) as exc:
            problem = f"unreadable ({exc})"
    return [Damage(entry.path, problem)]
