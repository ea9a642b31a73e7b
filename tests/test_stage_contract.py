"""The stage contract: every stage's manifest schema documents its columns, readers name upstream
columns through the schema, and manifests/README.md is generated from the schemas."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sc_imagenet.io.manifest import ShardWriter
from sc_imagenet.stages import STAGES, Stage, pipeline_order, register_stage
from sc_imagenet.stages.docs import README, render, stage_block
from sc_imagenet.stages.schema import SchemaError, column, describe, manifest_schema, type_name
from sc_imagenet.stages.single_instance import SingleInstanceStage


@pytest.mark.parametrize("name", pipeline_order())
def test_every_column_is_documented(name: str) -> None:
    stage = STAGES[name]
    assert isinstance(stage.schema, pa.Schema) and len(stage.schema) > 0
    for field in stage.schema:
        description, _unit = describe(field)
        assert description.strip(), f"{name}.{field.name} has no description"
    if stage.partitioned:
        assert "wnid" not in stage.schema.names


@pytest.mark.parametrize("name", pipeline_order())
def test_inputs_are_upstream(name: str) -> None:
    order = pipeline_order()
    assert all(order.index(i) < order.index(name) for i in STAGES[name].inputs)


def test_readme_tables_are_generated_from_the_schemas() -> None:
    text = README.read_text()
    assert render(text) == text, "manifests/README.md is stale: run python -m sc_imagenet.stages.docs --write"
    for name in pipeline_order():
        assert stage_block(STAGES[name]) in text


def test_render_appends_a_block_for_an_undocumented_stage() -> None:
    out = render("# Manifests\n")
    for name in pipeline_order():
        assert f"## `{name}`" in out and stage_block(STAGES[name]) in out
    assert render(out) == out  # idempotent


def test_columns_are_checked_against_the_schema() -> None:
    assert SingleInstanceStage.columns("image_id", "box", "wnid") == ["image_id", "box", "wnid"]
    with pytest.raises(SchemaError, match=r"stage 'single_instance' writes no column\(s\) \['boxes'\]"):
        SingleInstanceStage.columns("image_id", "boxes")
    with pytest.raises(SchemaError, match="'wnid'"):
        STAGES["train"].columns("wnid")  # an unsharded stage has no partition column


def test_foreground_provider_reads_columns_single_instance_writes() -> None:
    from sc_imagenet.foreground.provider import ForegroundProvider

    SingleInstanceStage.columns(*ForegroundProvider.COLUMNS)


def test_shards_carry_column_descriptions(tmp_path: Path) -> None:
    schema = manifest_schema(column("box", pa.list_(pa.float32()), "a box", "[x1, y1, x2, y2], pixels"),
                             column("n", pa.int32(), "a count"))
    path = tmp_path / "part-00000.parquet"
    with ShardWriter(path, schema, "fp", 1) as writer:
        writer.write({"box": [0, 1, 2, 3], "n": 4})
    stored = pq.read_schema(path)
    assert describe(stored.field("box")) == ("a box", "[x1, y1, x2, y2], pixels")
    assert describe(stored.field("n")) == ("a count", None)
    assert pq.read_table(path).to_pylist() == [{"box": [0.0, 1.0, 2.0, 3.0], "n": 4}]


def test_schema_helpers_refuse_undocumented_or_duplicate_columns() -> None:
    with pytest.raises(ValueError, match="description is required"):
        column("x", pa.int32(), " ")
    with pytest.raises(ValueError, match="duplicate"):
        manifest_schema(column("x", pa.int32(), "a"), column("x", pa.int32(), "b"))
    with pytest.raises(ValueError, match="no description"):
        manifest_schema(pa.field("x", pa.int32()))
    assert type_name(pa.list_(pa.float32())) == "list<float32>"
    assert type_name(pa.list_(pa.float16(), 2)) == "fixed_size_list<float16, 2>"


def _stage_class(**attrs) -> type[Stage]:
    class Probe(Stage):
        name: ClassVar[str] = "contract_probe"
        schema_version: ClassVar[int] = 1
        inputs: ClassVar[tuple[str, ...]] = ()

        def fingerprint_payload(self, cfg, data_root):
            return {}

        def run(self, ctx):
            raise NotImplementedError

    for key, value in attrs.items():
        setattr(Probe, key, value)
    return Probe


def test_registration_checks_the_contract() -> None:
    with pytest.raises(TypeError, match="no manifest schema"):
        register_stage(_stage_class())
    with pytest.raises(ValueError, match="comes from the shard folders"):
        register_stage(_stage_class(schema=manifest_schema(column("wnid", pa.string(), "w"),
                                                           column("status", pa.string(), "s"))))
    with pytest.raises(ValueError, match="status column 'status' is not in its schema"):
        register_stage(_stage_class(schema=manifest_schema(column("x", pa.string(), "x"))))
    assert "contract_probe" not in STAGES
