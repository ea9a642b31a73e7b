"""The stage contract: every stage's manifest schema documents its columns, readers name upstream
columns through the schema, and manifests/README.md is generated from the schemas.

It also holds the checks behind docs/adding-a-stage.md: a stage is one module in sc_imagenet/stages/ and a
config section, and everything else either derives from the registry (`pipeline_order()`) or is a place
a check below names, with the stage and the file to edit, when a new stage is missing from it.
`test_the_checks_name_a_new_stage_left_out_of_every_place` proves each check with a throw-away stage.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from test_dataset_stages import DATASET
from test_label import build_profile

from sc_imagenet.build import plan_build, run_build_locally
from sc_imagenet.config import BuildConfig, load_config
from sc_imagenet.io.manifest import ShardWriter, read_stage_record
from sc_imagenet.paths import REPO_ROOT
from sc_imagenet.report_page.model import FUNNEL, SECTION_NEEDS
from sc_imagenet.stages import STAGE_MODULES, STAGES, Stage, pipeline_order, register_stage
from sc_imagenet.stages.base import ShardedStage, StageFigures
from sc_imagenet.stages.docs import BEGIN, END, README, render, stage_block
from sc_imagenet.stages.report import ReportStage
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
    stale = [name for name in pipeline_order() if stage_block(STAGES[name]) not in text]
    assert not stale, (f"manifests/README.md: the column table of stage(s) {stale} is missing or stale: run "
                       "`python -m sc_imagenet.stages.docs --write`")
    assert render(text) == text, "manifests/README.md is stale: run python -m sc_imagenet.stages.docs --write"


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


# ------------------------------------------------------------------------------------- adding a stage
# Each check returns one message per problem, naming the stage and the place to edit; the tests below
# run them on the registered stages, and the last test on a throw-away stage registered for the test.

STAGES_DIR = REPO_ROOT / "sc_imagenet" / "stages"
INIT = "sc_imagenet/stages/__init__.py"
DIAGRAM_DOCS = ("README.md", "docs/architecture.md")  # each draws the pipeline on one `a ─► b ─► …` line
SCALE_BENCHMARK = REPO_ROOT / "benchmarks" / "scale.py"


def _source(stage: Stage) -> str:
    module = type(stage).__module__
    return module.replace(".", "/") + ".py" if module.startswith("sc_imagenet.") else module


def module_problems(order: Iterable[str]) -> list[str]:
    """Every stage's class lives in a module of sc_imagenet/stages/ that STAGE_MODULES imports: that tuple is
    the pipeline order, and a module it does not import is registered only by accident, if at all."""
    found = []
    for name in order:
        module = type(STAGES[name]).__module__
        short = module.removeprefix("sc_imagenet.stages.")
        if short == module or short not in STAGE_MODULES:
            found.append(f"stage {name!r}: its module {module} is not in STAGE_MODULES ({INIT}); list it there, in "
                         "pipeline order (after its inputs, before 'report')")
    return found


def _is_register_stage(decorator: ast.expr) -> bool:
    return (isinstance(decorator, ast.Name) and decorator.id == "register_stage") or (
        isinstance(decorator, ast.Attribute) and decorator.attr == "register_stage")


def _class_stage_name(node: ast.ClassDef) -> str:
    for item in node.body:
        if (isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "name" for t in item.targets)
                and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str)):
            return item.value.value
    return node.name


def unlisted_stage_files(folder: Path, listed: Iterable[str]) -> list[str]:
    """Stage classes (`@register_stage`) in a file of `folder` that STAGE_MODULES does not import: such a
    stage is never registered, so no check on the registry can see it."""
    found = []
    listed = set(listed)
    for path in sorted(folder.glob("*.py")):
        if path.stem in listed:
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef) and any(_is_register_stage(d) for d in node.decorator_list):
                found.append(f"stage {_class_stage_name(node)!r} ({path.name}) is never registered: add "
                             f"{path.stem!r} to STAGE_MODULES ({INIT}), in pipeline order")
    return found


def config_problems(order: Iterable[str]) -> list[str]:
    """Every stage has a section of its own in BuildConfig (`cfg.<stage>`, `--set <stage>.<key>=…`)."""
    found = []
    for name in order:
        field = BuildConfig.model_fields.get(name)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            found.append(f"stage {name!r} has no config section: add `{name}: <Name>Config = "
                         "Field(default_factory=<Name>Config)` to BuildConfig in sc_imagenet/config.py (a StrictModel "
                         "without fields if the stage has no settings)")
    return found


def report_problems(order: list[str]) -> list[str]:
    """The report reads every stage and runs last: its inputs are every stage registered before it."""
    report = ReportStage.name
    return [f"stage {name!r} is not an input of {report!r} (it must run after every stage; its inputs are the "
            f"stages registered before it): list {name!r}'s module before {report!r} in STAGE_MODULES ({INIT})"
            for name in order if name != report and name not in STAGES[report].inputs]


def readme_problems(order: Iterable[str], text: str) -> list[str]:
    """manifests/README.md has a generated column table for every stage, and none for a stage that is gone."""
    order = list(order)
    found = [f"manifests/README.md has no generated block for stage {name!r}: run `python -m sc_imagenet.stages.docs "
             "--write`, then describe its rows, statuses and `extra` keys around the table"
             for name in order if BEGIN.format(name=name) not in text or END.format(name=name) not in text]
    documented = re.findall(r"<!-- BEGIN GENERATED (\S+):", text)
    found += [f"manifests/README.md documents stage {name!r}, which is not registered: remove its section"
              for name in documented if name not in order]
    return found


def attribute_problems(order: Iterable[str]) -> list[str]:
    """What the registry cannot check at import time: a description (the README's heading line, the report's
    stage table), and a device for a sharded `gpu` stage (else its Dask shard tasks never ask for a GPU)."""
    found = []
    for name in order:
        stage = STAGES[name]
        if not stage.description.strip():
            found.append(f"stage {name!r} has no `description`: set it on {type(stage).__name__} ({_source(stage)})")
        if isinstance(stage, ShardedStage) and "gpu" in stage.tags and type(stage).device is Stage.device:
            found.append(f"stage {name!r} is tagged 'gpu' but does not override `device(cfg)` "
                         f"({type(stage).__name__}, {_source(stage)}): return its configured device")
    return found


def declared_figures(stage: Stage) -> type[StageFigures] | None:
    return getattr(type(stage), "figures_model", None)


def figures_problems(order: Iterable[str]) -> list[str]:
    """Every stage declares the model of its record's `extra` (`figures_model`): its `run` validates what it writes
    through it and readers import it, so a renamed figure fails where it is written or read, not in a later stage."""
    found = []
    for name in order:
        stage = STAGES[name]
        model = declared_figures(stage)
        if not (isinstance(model, type) and issubclass(model, StageFigures)) or model is StageFigures:
            found.append(f"stage {name!r} declares no figures model: set `figures_model = <Name>Figures` (a "
                         f"StageFigures subclass declaring its record's `extra` keys) on {type(stage).__name__} "
                         f"({_source(stage)}) and return `<Name>Figures.check(extra)` from `run`")
    return found


def diagram_problems(order: list[str], text: str, where: str) -> list[str]:
    """Every `first ─► … ─► last` line of a document lists exactly the stages, in pipeline order."""
    found = []
    for line in text.splitlines():
        if not line.startswith(f"{order[0]} ─►"):
            continue
        shown = [part.strip() for part in line.split("─►")]
        found += [f"{where}: the pipeline diagram lacks stage {name!r}: add it in pipeline order"
                  for name in order if name not in shown]
        found += [f"{where}: the pipeline diagram names {name!r}, which is not a registered stage"
                  for name in shown if name not in order]
        if not found and shown != order:
            found.append(f"{where}: the pipeline diagram's order differs from pipeline_order(): {' ─► '.join(order)}")
    return found


def literal_list(path: Path, variable: str) -> list[str] | None:
    """The value of a module-level `variable = [<strings>]` in `path`; None if it is not such a literal."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets)
                and isinstance(node.value, ast.List | ast.Tuple)
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts)):
            return [e.value for e in node.value.elts]  # type: ignore[attr-defined]
    return None


def scale_pipeline_problems(order: list[str], pipeline: list[str] | None) -> list[str]:
    """benchmarks/scale.py times the whole pipeline; a hand-written PIPELINE there must name every stage."""
    if pipeline is None:  # derived (e.g. from pipeline_order()): nothing to keep in step
        return []
    return [f"benchmarks/scale.py: PIPELINE lacks stage {name!r}: add it in pipeline order (or derive PIPELINE "
            "from pipeline_order())" for name in order if name not in pipeline]


@contextmanager
def registered(cls: type[Stage]) -> Iterator[Stage]:
    """`cls` in the stage registry for the duration of the block (then removed, whatever happens)."""
    register_stage(cls)
    try:
        yield STAGES[cls.name]
    finally:
        STAGES.unregister(cls.name)


def _assert_none(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


def test_every_stage_module_is_in_the_pipeline_order() -> None:
    _assert_none(module_problems(pipeline_order()) + unlisted_stage_files(STAGES_DIR, STAGE_MODULES))
    assert pipeline_order()[-1] == ReportStage.name


def test_every_stage_has_a_config_section() -> None:
    _assert_none(config_problems(pipeline_order()))


def test_the_report_reads_every_stage() -> None:
    _assert_none(report_problems(pipeline_order()))


def test_manifests_readme_documents_every_stage() -> None:
    _assert_none(readme_problems(pipeline_order(), README.read_text()))


def test_every_stage_describes_itself() -> None:
    _assert_none(attribute_problems(pipeline_order()))


@pytest.fixture(scope="module")
def full_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic build through every stage; returns its output folder."""
    from sc_imagenet.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("contract-build")
    cfg = load_config(str(build_profile(tmp)), DATASET)
    generate_dataset(cfg.data.root, cfg.data.synthetic, progress=False)
    plan = plan_build(cfg, "tiny", tmp / "out")
    run_build_locally(plan, log=lambda m: None, progress=False)
    return plan.out_dir


@pytest.mark.parametrize("name", pipeline_order())
def test_every_stage_declares_the_figures_its_record_holds(full_build: Path, name: str) -> None:
    """The stage names its figures model, and the record a real build writes validates against it and reads back
    with the same keys (aliases such as `pck@0.1` included)."""
    _assert_none(figures_problems([name]))
    model = declared_figures(STAGES[name])
    record = read_stage_record(full_build / "manifests" / name)
    assert record is not None
    assert model.check(record.extra) is record.extra and model.of(record).dump() == record.extra


@pytest.mark.parametrize("doc", DIAGRAM_DOCS)
def test_pipeline_diagrams_show_every_stage(doc: str) -> None:
    _assert_none(diagram_problems(pipeline_order(), (REPO_ROOT / doc).read_text(), doc))


def test_the_scale_benchmark_times_every_stage() -> None:
    _assert_none(scale_pipeline_problems(pipeline_order(), literal_list(SCALE_BENCHMARK, "PIPELINE")))


def test_the_report_page_names_registered_stages() -> None:
    named = {s for needs in SECTION_NEEDS.values() for s in needs} | {stage for _, _, stage in FUNNEL}
    unknown = sorted(named - set(STAGES))
    assert not unknown, (f"sc_imagenet/report_page/model.py (SECTION_NEEDS, FUNNEL) names unregistered "
                         f"stage(s) {unknown}")


def test_the_checks_name_a_new_stage_left_out_of_every_place(tmp_path: Path) -> None:
    """A stage registered from outside sc_imagenet/stages/, with no config section, after the report, without
    a README block, a description, a device or a figures model, and absent from the diagrams and the benchmark:
    every check names it, and only it."""
    probe = _stage_class(name="new_stage", schema=manifest_schema(column("x", pa.string(), "x")), status_column="",
                         tags=("gpu",))
    probe = type("NewStage", (ShardedStage, probe), {"shard_work": None, "finalize": None})
    with registered(probe):
        order = pipeline_order()
        assert order[-1] == "new_stage"
        checks = {
            "module": module_problems(order),
            "config": config_problems(order),
            "report": report_problems(order),
            "readme": readme_problems(order, README.read_text()),
            "attributes": attribute_problems(order),
            "figures": figures_problems(order),
            "diagram": diagram_problems(order, " ─► ".join(order[:-1]), "doc.md"),
            "scale": scale_pipeline_problems(order, order[:-1]),
        }
    assert "new_stage" not in STAGES
    for place, problems in checks.items():
        assert problems and all("'new_stage'" in p for p in problems), (place, problems)
    assert len(checks["attributes"]) == 2  # no description; tagged gpu without a device
    assert "STAGE_MODULES" in checks["module"][0] and "sc_imagenet/config.py" in checks["config"][0]
    assert "before 'report'" in checks["report"][0] and "--write" in checks["readme"][0]

    # a stage file that STAGE_MODULES does not import is found in the folder
    (tmp_path / "new_stage.py").write_text('@register_stage\nclass NewStage(Stage):\n    name = "new_stage"\n')
    (tmp_path / "helper.py").write_text("class Helper:\n    pass\n")
    (problem,) = unlisted_stage_files(tmp_path, STAGE_MODULES)
    assert problem.startswith("stage 'new_stage' (new_stage.py) is never registered: add 'new_stage' to STAGE_MODULES")

    # the reverse direction: a block or diagram entry for a stage that is gone, a diagram out of order
    gone = f"{BEGIN.format(name='old_stage')}\nx\n{END.format(name='old_stage')}"
    assert readme_problems([], gone) == ["manifests/README.md documents stage 'old_stage', which is not registered: "
                                         "remove its section"]
    assert diagram_problems(["a", "b"], "a ─► old ─► b", "d") == [
        "d: the pipeline diagram names 'old', which is not a registered stage"]
    assert diagram_problems(["a", "b", "c"], "a ─► c ─► b", "d") == [
        "d: the pipeline diagram's order differs from pipeline_order(): a ─► b ─► c"]
    assert scale_pipeline_problems(["a"], None) == []
