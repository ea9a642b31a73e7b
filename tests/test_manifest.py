"""Manifest writing: atomicity, metadata, records, reading back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sc_imagenet.io.locks import BuildLock, BuildLockedError
from sc_imagenet.io.manifest import (
    FINGERPRINT_KEY,
    SCHEMA_VERSION_KEY,
    ShardWriter,
    StageRecord,
    content_hash,
    dictionary_columns,
    fingerprint,
    list_shards,
    read_manifest,
    read_stage_record,
    shard_fingerprint,
    shard_is_current,
    shard_path,
    write_stage_record,
)

SCHEMA = pa.schema([("image_id", pa.string()), ("value", pa.int64())])


def test_fingerprint_is_stable_and_order_independent() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert len(fingerprint({})) == 16


def test_shard_writer_streams_row_groups_and_tags_metadata(tmp_path: Path) -> None:
    path = shard_path(tmp_path, "n1")
    with ShardWriter(path, SCHEMA, "abc", 3, row_group_size=16) as w:
        w.write_many({"image_id": f"i{i}", "value": i} for i in range(100))
    meta = pq.read_metadata(path)
    assert meta.num_rows == 100 and meta.num_row_groups == 7
    kv = pq.read_schema(path).metadata
    assert kv[FINGERPRINT_KEY] == b"abc" and kv[SCHEMA_VERSION_KEY] == b"3"
    assert shard_is_current(path, "abc") and not shard_is_current(path, "other")
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    path = shard_path(tmp_path, "n1")
    with pytest.raises(RuntimeError), ShardWriter(path, SCHEMA, "abc", 1, row_group_size=4) as w:
        for i in range(10):
            w.write({"image_id": "x", "value": i})
        raise RuntimeError("killed mid-shard")
    assert not path.exists()
    assert list(path.parent.iterdir()) == []



def test_a_failed_background_write_raises_and_leaves_nothing(tmp_path: Path) -> None:
    """Row groups are encoded in a background thread: its error reaches the caller (at the next row group or at
    the close), and the shard does not appear."""
    path = shard_path(tmp_path, "n1")

    class DiskFull(OSError):
        pass

    def refuse(*_: object, **__: object) -> None:
        raise DiskFull("no space left on device")

    with pytest.raises(DiskFull), ShardWriter(path, SCHEMA, "abc", 1, row_group_size=4) as w:
        w._writer.write_table = refuse  # type: ignore[union-attr,method-assign]
        w.write_many({"image_id": f"i{i}", "value": i} for i in range(10))
    assert not path.exists() and list(path.parent.iterdir()) == []
    with pytest.raises(DiskFull), ShardWriter(path, SCHEMA, "abc", 1, row_group_size=4) as w:
        w._writer.write_table = refuse  # type: ignore[union-attr,method-assign]
        w.write({"image_id": "i0", "value": 0})  # one row: written at the close
    assert not path.exists() and list(path.parent.iterdir()) == []

def test_temp_file_is_invisible_to_readers(tmp_path: Path) -> None:
    done = shard_path(tmp_path, "n1")
    with ShardWriter(done, SCHEMA, "abc", 1) as w:
        w.write({"image_id": "a", "value": 1})
    pending = ShardWriter(shard_path(tmp_path, "n2"), SCHEMA, "abc", 1, row_group_size=1)
    with pending:
        pending.write({"image_id": "b", "value": 2})
        pending.write({"image_id": "c", "value": 3})
        assert pending.tmp.exists() and pending.tmp.name.startswith(".")
        assert list_shards(tmp_path) == [done]
        table = read_manifest(tmp_path)
        assert table.num_rows == 1
    assert read_manifest(tmp_path).num_rows == 3


def test_torn_shard_is_not_current(tmp_path: Path) -> None:
    path = shard_path(tmp_path, "n1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 not really")
    assert shard_fingerprint(path) is None and not shard_is_current(path, "abc")


def test_read_manifest_adds_wnid_from_folder(tmp_path: Path) -> None:
    for wnid in ("n1", "n2"):
        with ShardWriter(shard_path(tmp_path, wnid), SCHEMA, "f", 1) as w:
            w.write({"image_id": f"{wnid}_0", "value": 0})
    df = read_manifest(tmp_path).to_pandas()
    assert sorted(df.wnid) == ["n1", "n2"] and pd.api.types.is_string_dtype(df.wnid)

    assert sorted(pd.read_parquet(tmp_path).wnid.astype(str)) == ["n1", "n2"]  # plain pandas works too


def test_stage_record_roundtrip_and_garbage(tmp_path: Path) -> None:
    rec = StageRecord("index", "fp", 1, 10, {"ok": 9, "empty": 1}, 2, 1.5, 0.0, 1.5, {"categories": "x"})
    write_stage_record(tmp_path, rec)
    assert read_stage_record(tmp_path) == rec
    (tmp_path / "_stage.json").write_text("{not json")
    assert read_stage_record(tmp_path) is None


def test_lock_is_exclusive_and_names_holder(tmp_path: Path) -> None:
    with BuildLock(tmp_path), pytest.raises(BuildLockedError, match=r"pid \d+ on host"):
        BuildLock(tmp_path).acquire()
    with BuildLock(tmp_path):  # released on exit
        pass


def test_reading_some_categories_opens_only_their_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n, wnid in enumerate(["n1", "n2", "n3"]):
        with ShardWriter(shard_path(tmp_path, wnid), SCHEMA, "fp", 1) as w:
            w.write_many({"image_id": f"{wnid}_{i}", "value": i} for i in range(n + 2))
    everything = read_manifest(tmp_path).to_pandas()
    import sc_imagenet.io.manifest as manifest

    def no_listing(_: Path) -> list[Path]:
        raise AssertionError("a per-category read listed every shard of the stage")

    monkeypatch.setattr(manifest, "list_shards", no_listing)
    some = read_manifest(tmp_path, wnids=["n3", "n1"]).to_pandas()
    pd.testing.assert_frame_equal(some.reset_index(drop=True),
                                  everything[everything.wnid.isin(["n1", "n3"])].reset_index(drop=True))
    monkeypatch.undo()
    empty = read_manifest(tmp_path, columns=["image_id", "wnid"], wnids=["n9"])
    assert empty.num_rows == 0 and empty.schema.names == ["image_id", "wnid"]


def test_float_columns_are_not_dictionary_encoded(tmp_path: Path) -> None:
    schema = pa.schema([("image_id", pa.string()), ("flow", pa.list_(pa.float16())), ("n", pa.int32())])
    assert dictionary_columns(schema) == ["image_id", "n"]
    path = shard_path(tmp_path, "n1")
    with ShardWriter(path, schema, "fp", 1) as w:
        w.write_many({"image_id": "a", "flow": [float(i) / 7 for i in range(64)], "n": 1} for _ in range(10))
    meta = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert not any("DICTIONARY" in e for e in encodings["flow.list.element"])
    assert any("DICTIONARY" in e for e in encodings["image_id"])
    assert read_manifest(tmp_path).to_pandas().flow[0].tolist() == pytest.approx([i / 7 for i in range(64)], abs=1e-2)


def test_content_hash_ignores_what_lies_under_nulls(tmp_path: Path) -> None:
    """The same values written with and without dictionary encoding read back with different bytes under
    their null floats; they hash alike. A null and a zero do not."""
    table = pa.table({"image_id": [f"i{k}" for k in range(64)],
                      "conf": pa.array([None if k % 3 else k / 7 for k in range(64)], pa.float32())})
    hashes = []
    for name, kw, t in (("dict", {"use_dictionary": True}, table), ("plain", {"use_dictionary": False}, table),
                        ("zeros", {}, table.set_column(1, "conf", pc.fill_null(table["conf"], 0.0)))):
        path = shard_path(tmp_path / name, "n1")
        path.parent.mkdir(parents=True)
        pq.write_table(t, path, **kw)
        hashes.append(content_hash(tmp_path / name, [path]))
    assert hashes[0] == hashes[1] != hashes[2]
