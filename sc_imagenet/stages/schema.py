"""Manifest schemas: every column with its type, meaning and unit, in one place per stage.

A stage's `schema` is a `pyarrow.Schema` built with `manifest_schema(column(...), ...)`: each field
carries its description (and, where it has one, its unit or coordinate convention) in the field's
metadata, so the documentation travels inside every Parquet shard and `manifests/README.md` is
generated from it (`python -m sc_imagenet.stages.docs --write`).

Readers name the upstream columns they need through `Stage.columns(...)`, which checks them against
the upstream schema when the reading module is imported: renaming or dropping a column fails loudly
instead of drifting.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

DESCRIPTION_KEY = b"description"
UNIT_KEY = b"unit"
VOLATILE_KEY = b"volatile"  # the value differs between identical runs (a timing): not part of the content hash
# the value watches the run (a learning curve) and no downstream stage reads it: not part of the content hash either,
# so recording more of it never makes the stages downstream stale
DIAGNOSTIC_KEY = b"diagnostic"
PARTITION_COLUMN = "wnid"  # category-sharded stages: from the `wnid=<id>/` folder names, not stored in files
PARTITION_DESCRIPTION = "category id = folder name (from the `wnid=<id>/` shard folder, added by readers)"


class SchemaError(KeyError):
    """A reader asked for a column the upstream stage does not write."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def column(name: str, type_: pa.DataType, description: str, unit: str | None = None,
           volatile: bool = False, diagnostic: bool = False) -> pa.Field:
    """One documented manifest column. `unit`: unit or coordinate convention, e.g. "original-image pixels".
    `volatile`: its value differs between identical runs (a throughput, a duration); `diagnostic`: it watches
    the run and no downstream stage reads it (a learning curve). The stage's content hash leaves both out."""
    if not description.strip():
        raise ValueError(f"column {name!r}: a description is required")
    meta = {DESCRIPTION_KEY: description.encode()}
    if unit:
        meta[UNIT_KEY] = unit.encode()
    if volatile:
        meta[VOLATILE_KEY] = b"1"
    if diagnostic:
        meta[DIAGNOSTIC_KEY] = b"1"
    return pa.field(name, type_, metadata=meta)


def volatile_columns(schema: pa.Schema) -> list[str]:
    """Columns marked `volatile` or `diagnostic`: what the content hash leaves out."""
    return [f.name for f in schema if any((f.metadata or {}).get(k) == b"1" for k in (VOLATILE_KEY, DIAGNOSTIC_KEY))]


def manifest_schema(*fields: pa.Field) -> pa.Schema:
    names = [f.name for f in fields]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate manifest columns {dupes}")
    for f in fields:
        if DESCRIPTION_KEY not in (f.metadata or {}):
            raise ValueError(f"column {f.name!r} has no description; build it with schema.column()")
    return pa.schema(list(fields))


def describe(field: pa.Field) -> tuple[str, str | None]:
    """(description, unit or None) of a documented column."""
    meta = field.metadata or {}
    unit = meta.get(UNIT_KEY)
    return meta.get(DESCRIPTION_KEY, b"").decode(), unit.decode() if unit else None


def select_columns(schema: pa.Schema, names: Iterable[str], owner: str, partitioned: bool) -> list[str]:
    """`names`, checked to be columns of `owner`'s manifest (the partition column `wnid` included
    where the stage is sharded by category); raises `SchemaError` naming the missing ones."""
    wanted = list(names)
    known = set(schema.names) | ({PARTITION_COLUMN} if partitioned else set())
    missing = [n for n in wanted if n not in known]
    if missing:
        raise SchemaError(f"stage {owner!r} writes no column(s) {missing}; its columns are {sorted(known)}")
    return wanted


def type_name(type_: pa.DataType) -> str:
    """Readable Arrow type: `list<float32>` rather than pyarrow's `list<item: float>`."""
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return f"list<{type_name(type_.value_type)}>"
    if pa.types.is_fixed_size_list(type_):
        return f"fixed_size_list<{type_name(type_.value_type)}, {type_.list_size}>"
    names = {pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64", pa.bool_(): "bool",
             pa.string(): "string", pa.large_string(): "string", pa.binary(): "binary"}
    return names.get(type_, str(type_))
