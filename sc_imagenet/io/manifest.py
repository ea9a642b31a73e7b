"""Parquet manifests: atomic streaming shard writes, fingerprints, the `_stage.json` completion record.

Layout of one stage (`<out>/manifests/<stage>/`):

    wnid=<wnid>/part-00000.parquet   one shard per category (hive style; the `wnid` column comes
                                     from the folder name, pandas/pyarrow/DuckDB add it on read)
    part-00000.parquet               stages that are not sharded by category
    _<table>/wnid=<wnid>/part-00000.parquet
                                     a stage's second table at another grain (`consistency`'s one row per
                                     image), one shard beside each main shard; the leading underscore keeps
                                     it out of `pandas.read_parquet(<stage dir>)`, which pyarrow skips
    _stage.json                      written LAST: the stage is complete iff it exists and its
                                     fingerprint matches the one the current config implies

Every shard carries `sc_imagenet.fingerprint` and `sc_imagenet.schema_version` in its Parquet
key-value metadata, so a rerun can keep shards that were finished before a crash. Temporary files
start with a dot, which Parquet readers ignore.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sc_imagenet import __version__
from sc_imagenet.io.atomic import atomic_path, atomic_write_bytes, temp_path  # atomic_write_bytes: also re-exported

FINGERPRINT_KEY = b"sc_imagenet.fingerprint"
SCHEMA_VERSION_KEY = b"sc_imagenet.schema_version"
STAGE_RECORD = "_stage.json"
SHARD_NAME = "part-00000.parquet"


def fingerprint(payload: Any) -> str:
    """Stable 16-hex-digit hash of a JSON-serialisable payload (dict keys sorted)."""
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def shard_path(stage_dir: Path, wnid: str | None = None) -> Path:
    return stage_dir / f"wnid={wnid}" / SHARD_NAME if wnid is not None else stage_dir / SHARD_NAME


def table_dir(stage_dir: Path, table: str) -> Path:
    """The folder of a stage's second table `table` (`<stage dir>/_<table>`), laid out like the stage's own."""
    return stage_dir / f"_{table}"


def companion_path(shard: Path, stage_dir: Path, table: str) -> Path:
    """The shard of table `table` that belongs with the stage's `shard` (same category)."""
    return table_dir(stage_dir, table) / Path(shard).relative_to(stage_dir)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth Parquet's dictionary encoding: all but floating-point ones (and lists of them). A float
    column — a dense flow, keypoints — has nearly no repeated values, so the dictionary is built and thrown
    away: five times the write time of a `label` row for a larger file."""
    def floating(dtype: pa.DataType) -> bool:
        while pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
            dtype = dtype.value_type
        return pa.types.is_floating(dtype)

    return [f.name for f in schema if not floating(f.type)]


class ShardWriter:
    """Streams rows into one Parquet shard; the shard appears only when the writer closes cleanly.

    Rows are buffered `row_group_size` at a time, so memory stays bounded however many rows a shard gets. Each
    full buffer is encoded and written by one background thread while the caller goes on producing rows
    (pyarrow encodes without the GIL: a `label` category's flows cost about a second of encoding, which then
    overlaps the labelling); at most one row group waits for it. On an exception inside the `with` block, or in
    the background write, the temp file is removed, nothing appears and the error propagates.
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        fingerprint: str,
        schema_version: int,
        row_group_size: int = 4096,
    ) -> None:
        self.path = path
        # `.<name>.<pid>.tmp` (io.atomic): invisible to readers, never clobbered by an orphaned worker
        self.tmp = temp_path(path)
        meta = {FINGERPRINT_KEY: fingerprint.encode(), SCHEMA_VERSION_KEY: str(schema_version).encode()}
        self.schema = schema.with_metadata({**(schema.metadata or {}), **meta})
        self.row_group_size = row_group_size
        self.rows = 0
        self._buffer: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._stack: ExitStack | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def __enter__(self) -> ShardWriter:
        with ExitStack() as stack:
            self.tmp = stack.enter_context(atomic_path(self.path))
            self._writer = stack.enter_context(
                closing(pq.ParquetWriter(self.tmp, self.schema, compression="zstd",
                                         use_dictionary=dictionary_columns(self.schema),
                                         write_page_checksum=True)))
            # closed before the writer (an ExitStack unwinds last in, first out): no write runs past close
            self._pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="shard-writer"))
            self._stack = stack.pop_all()  # closed in __exit__: writer first, then commit or remove the temp
        return self

    def write(self, row: Mapping[str, Any]) -> None:
        self._buffer.append(dict(row))
        if len(self._buffer) >= self.row_group_size:
            self._flush()

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def write_table(self, table: pa.Table) -> None:
        """Rows already in a table with this shard's columns (in `row_group_size` row groups)."""
        self._flush()
        if table.num_rows:
            self._submit(table.select(self.schema.names).cast(self.schema))

    def _flush(self) -> None:
        if self._buffer:
            self._submit(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self._buffer = []

    def _submit(self, table: pa.Table) -> None:
        """`table` to the background write, once the previous one is done (its error raised here)."""
        if self._writer is None or self._pool is None:
            raise RuntimeError("ShardWriter: write inside its `with` block")
        self._wait()
        self._pending = self._pool.submit(self._writer.write_table, table, row_group_size=self.row_group_size)
        self.rows += table.num_rows

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        if exc_type is not None:
            stack.__exit__(exc_type, exc, tb)  # waits for the write, closes the writer, removes the temp file
            return
        with stack:  # the last rows written, then the writer closed, then fsync + rename + fsync the folder
            self._flush()
            self._wait()


def shard_fingerprint(path: Path) -> str | None:
    """Fingerprint stored in a shard's metadata; None if missing or unreadable (a torn write)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    value = meta.get(FINGERPRINT_KEY)
    return value.decode() if value else None


def shard_is_current(path: Path, expected_fingerprint: str) -> bool:
    return path.exists() and shard_fingerprint(path) == expected_fingerprint


def list_shards(stage_dir: Path) -> list[Path]:
    """The stage's own shards: files and folders starting with `.` (temporary) or `_` (records, second
    tables) are not part of its table, as Parquet readers treat them."""
    if not stage_dir.exists():
        return []
    return sorted(p for p in stage_dir.rglob("*.parquet")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(stage_dir).parts))


def _defined(column: pa.ChunkedArray) -> pa.Array:
    """The column with its null slots zeroed: what a buffer holds under a null depends on the Parquet
    encoding it was read from (a float column with nulls read back differently once dictionary encoding
    was turned off), and must not change the content hash. Nulls stay nulls: validity is hashed too."""
    array = column.combine_chunks()
    if array.null_count == 0 or not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        return array
    if array.offset:
        array = pa.concat_arrays([array])  # a copy starting at offset 0, so its buffers line up
    filled = pc.fill_null(array, pa.scalar(0, array.type))
    return pa.Array.from_buffers(array.type, len(array), [array.buffers()[0], filled.buffers()[1]],
                                 null_count=array.null_count)


def content_hash(stage_dir: Path, shards: Iterable[Path], exclude: Iterable[str] = ()) -> str:
    """16 hex digits over the rows of `shards` (with their paths relative to `stage_dir`), ignoring
    Parquet metadata, row-group layout and the `exclude` columns: equal for two builds whose manifests
    hold the same values, whatever the fingerprints, timings or writer versions."""
    drop = set(exclude)
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in shards):
        table = read_shard(path)
        table = table.drop_columns([c for c in table.column_names if c in drop]).combine_chunks()
        table = table.cast(pa.schema([pa.field(f.name, f.type, f.nullable) for f in table.schema]))
        table = pa.table({name: _defined(table[name]) for name in table.column_names}) if table.num_columns else table
        # the IPC stream is hashed as it is written, never held: a whole-release shard (export's) costs its table
        sink = _HashingSink()
        with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
            writer.write_table(table)
        del table
        h.update(path.relative_to(stage_dir).as_posix().encode() + b"\0")
        h.update(sink.digest.digest())
    return h.hexdigest()[:16]


class _HashingSink:
    """A write-only file object that sha256-hashes what is written to it."""

    closed = False

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.position = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.position

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def category_shards(stage_dir: Path) -> list[str]:
    """wnids that have a shard in a category-sharded stage."""
    return sorted(p.parent.name.removeprefix("wnid=") for p in list_shards(stage_dir) if p.parent != stage_dir)


@dataclass
class StageRecord:
    """Contents of `_stage.json`: the completion record of one stage."""

    stage: str
    fingerprint: str
    schema_version: int
    rows: int
    rows_by_status: dict[str, int]
    shards: int
    wall_s: float
    started_at: float
    finished_at: float
    inputs: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    content_hash: str | None = None  # over the rows only (`content_hash`): equal for builds with equal manifests
    # `_files.tsv` (`io.integrity`): how many files, their bytes, and the inventory's own size and xxh3
    inventory: dict[str, Any] | None = None
    input_content: dict[str, str | None] = field(default_factory=dict)  # each input's content_hash when this ran

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)


def runtime_versions() -> dict[str, str]:
    return {"sc_imagenet": __version__, "python": platform.python_version(), "pyarrow": pa.__version__}


def write_stage_record(stage_dir: Path, record: StageRecord) -> None:
    atomic_write_bytes(stage_dir / STAGE_RECORD, record.to_json().encode())


def read_stage_record(stage_dir: Path) -> StageRecord | None:
    """The stage's record; None when there is none or it cannot be read (then the stage reruns, keeping the
    shards it finds whole)."""
    return load_stage_record(stage_dir)[0]


def load_stage_record(stage_dir: Path) -> tuple[StageRecord | None, str | None]:
    """(record, None), (None, None) when there is no `_stage.json`, or (None, what is wrong with it)."""
    path = stage_dir / STAGE_RECORD
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({exc})"
    try:
        return StageRecord(**json.loads(text)), None
    except ValueError as exc:  # torn or edited JSON (UnicodeDecodeError is a ValueError too)
        return None, f"not valid JSON ({str(exc)[:80]})"
    except TypeError as exc:  # other fields: from an incompatible version, or edited
        return None, f"not a stage record ({str(exc)[:80]})"


PARQUET_FORMAT = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))
"""How manifests are read: every data page's CRC (written by `ShardWriter`) is checked, so a byte flipped on
disk raises `OSError` instead of reading back as a different value."""


def read_shard(path: Path | str, columns: list[str] | None = None, filters: Any = None) -> pa.Table:
    """One shard's rows, its pages' checksums verified (see `PARQUET_FORMAT`)."""
    return pq.read_table(path, columns=columns, filters=filters, page_checksum_verification=True)


def open_manifest(stage_dir: Path, wnids: Iterable[str] | None = None) -> ds.Dataset:
    """The stage's shards as one pyarrow dataset (`wnid` from the hive folder names, as a string). With
    `wnids`, only those categories' shards are opened, by path: a per-category reader then costs the same
    whatever the number of categories (listing every shard for each of ImageNet's 679 categories was
    quadratic); a category without a shard contributes no rows."""
    if wnids is None:
        shards = list_shards(stage_dir)
    else:
        shards = [p for p in (shard_path(stage_dir, w) for w in sorted(set(wnids))) if p.exists()]
        if not shards:  # no rows: the schema comes from any shard of the stage
            return open_manifest(stage_dir).filter(ds.field("wnid").isin(pa.array([], pa.string())))
    if not shards:
        raise FileNotFoundError(f"no manifest shards under {stage_dir}")
    partitioning = ds.partitioning(pa.schema([("wnid", pa.string())]), flavor="hive")
    return ds.dataset([str(p) for p in shards], format=PARQUET_FORMAT, partitioning=partitioning,
                      partition_base_dir=str(stage_dir))


def read_manifest(stage_dir: Path, columns: list[str] | None = None, filter: Any = None,
                  wnids: Iterable[str] | None = None) -> pa.Table:
    """A stage's rows (only `wnids`' shards if given) as one table."""
    return open_manifest(stage_dir, wnids).to_table(columns=columns, filter=filter)


class Timer:
    def __init__(self) -> None:
        self.started_at = time.time()
        self._t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0
