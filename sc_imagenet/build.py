"""Planning and executing a build: fingerprints, skip/resume decisions, status.

A stage's fingerprint = hash(stage name, schema version, its config payload, the fingerprints of
its inputs). Fingerprints are computed up front from the config alone, so a changed setting changes
that stage's fingerprint and, through the chain, every downstream one — never an upstream one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from sc_imagenet.config import BuildConfig, ConfigError
from sc_imagenet.io.integrity import (
    INVENTORY,
    Damage,
    InventorySummary,
    build_relative,
    check_inventory,
    in_build,
    inventory_entries,
    write_inventory,
)
from sc_imagenet.io.manifest import (
    STAGE_RECORD,
    StageRecord,
    Timer,
    content_hash,
    fingerprint,
    list_shards,
    load_stage_record,
    read_stage_record,
    runtime_versions,
    shard_is_current,
    table_dir,
    write_stage_record,
)
from sc_imagenet.io.storage import StorageError, storage_error
from sc_imagenet.stages import STAGES, StageContext, downstream_of, pipeline_order
from sc_imagenet.stages.base import (
    ShardedStage,
    ShardResult,
    Stage,
    StageOutput,
    process_cached,
    run_scoped,
)
from sc_imagenet.stages.schema import volatile_columns


class StageInputError(RuntimeError):
    """A stage was asked to run before its inputs are complete for the current config."""


class DamagedInputError(StorageError):
    """A file a stage reads is not as its upstream stage wrote it (truncated, deleted, bytes changed)."""


@dataclass
class BuildPlan:
    profile: str
    cfg: BuildConfig
    out_dir: Path
    data_root: Path
    stages: list[str]
    fingerprints: dict[str, str | None]
    forced: set[str] = field(default_factory=set)
    verify: bool = False  # before skipping a finished stage, recompute its files' checksums (not only sizes)

    def stage_dir(self, name: str) -> Path:
        return stage_dir(self.out_dir, name)

    def artifact_dir(self, name: str) -> Path:
        return artifact_dir(self.out_dir, name)


@dataclass
class StageResult:
    stage: str
    skipped: bool
    record: StageRecord
    summary: list[dict[str, Any]] = field(default_factory=list)


def stage_dir(out_dir: Path, name: str) -> Path:
    """The stage's manifest folder: shards and `_stage.json`, nothing else."""
    return out_dir / "manifests" / name


def artifact_dir(out_dir: Path, name: str) -> Path:
    """Files a stage makes that are not manifest rows (model checkpoints, exports), named in its record."""
    return out_dir / "artifacts" / name


def resolve_data_root(cfg: BuildConfig, out_dir: Path) -> Path:
    if cfg.data.root is not None:
        return Path(cfg.data.root).expanduser().resolve()
    if cfg.data.source == "synthetic":
        return (out_dir / "data").resolve()
    raise ConfigError("data.root: required when data.source is 'folder' (pass --data-root DIR)")


def upstream_of(names: list[str]) -> set[str]:
    """`names` and every stage they depend on, transitively."""
    need = set(names)
    for stage in reversed(pipeline_order()):
        if stage in need:
            need.update(STAGES[stage].inputs)
    return need


def compute_fingerprints(cfg: BuildConfig, data_root: Path, out_dir: Path, required: set[str] | None = None,
                         reasons: dict[str, str] | None = None) -> dict[str, str | None]:
    """Fingerprint of every stage. A stage whose settings cannot be resolved (e.g. detector weights
    that are not on this machine) raises ConfigError if it is `required` (default: all) and gets
    None otherwise, and so does everything downstream of it; `reasons` (if given) collects why.

    A data root inside the build folder (the demo's `data/`) enters as a path relative to it, so a moved or
    copied build keeps its fingerprints."""
    data_root = Path(build_relative(data_root, out_dir))
    fps: dict[str, str | None] = {}
    for name in pipeline_order():
        stage = STAGES[name]
        inputs = {i: fps[i] for i in stage.inputs}
        try:
            if any(v is None for v in inputs.values()):
                raise ConfigError(f"an input of stage {name!r} cannot be resolved")
            payload = stage.fingerprint_payload(cfg, data_root)
        except ConfigError as exc:
            if required is None or name in required:
                raise
            fps[name] = None
            if reasons is not None:
                reasons[name] = str(exc)
            continue
        fps[name] = fingerprint({"stage": name, "schema_version": stage.schema_version, "config": payload,
                                 "inputs": inputs})
    return fps


def parse_stage_list(stages: str | list[str] | None) -> list[str]:
    if stages is None or stages == "" or stages == []:
        return pipeline_order()
    names = [s.strip() for s in stages.split(",")] if isinstance(stages, str) else list(stages)
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; stages are: {', '.join(pipeline_order())}")
    return [s for s in pipeline_order() if s in names]


def plan_build(
    cfg: BuildConfig,
    profile: str,
    out_dir: str | Path,
    stages: str | list[str] | None = None,
    force: str | list[str] | None = None,
    verify: bool = False,
) -> BuildPlan:
    """Validate everything a build needs before any work starts; raises `ConfigError`."""
    out = Path(out_dir).expanduser().resolve()
    data_root = resolve_data_root(cfg, out)
    if cfg.data.source == "folder" and not data_root.is_dir():
        raise ConfigError(f"data.root: {data_root} is not a directory")
    selected = parse_stage_list(stages)
    forced: set[str] = set()
    for name in parse_stage_list(force) if force else []:
        forced.update(downstream_of(name))
    fps = compute_fingerprints(cfg, data_root, out, required=upstream_of(selected))
    return BuildPlan(profile, cfg, out, data_root, selected, fps, forced, verify)


def _check_inputs(plan: BuildPlan, name: str) -> dict[str, Path]:
    inputs = {}
    for upstream in STAGES[name].inputs:
        record = read_stage_record(plan.stage_dir(upstream))
        if record is None or record.fingerprint != plan.fingerprints[upstream]:
            raise StageInputError(
                f"stage {name!r} needs stage {upstream!r} complete for this configuration; "
                f"run it first (e.g. --stages {upstream},{name})"
            )
        damage = stage_damage(plan.out_dir, upstream)
        if damage:
            raise damaged_input(plan, name, upstream, damage)
        inputs[upstream] = plan.stage_dir(upstream)
    return inputs


def stage_damage(out_dir: Path, name: str, verify: bool = False) -> list[Damage]:
    """What is damaged among the files of finished stage `name` (`io.integrity`): its `_stage.json`, its file
    inventory, or the shards and artifacts the inventory lists. Empty for a stage with no record (missing or
    partial is not damage) or a record from before inventories were kept."""
    sdir = stage_dir(out_dir, name)
    record, problem = load_stage_record(sdir)
    if problem is not None:
        return [Damage(build_relative(sdir / STAGE_RECORD, out_dir), problem)]
    if record is None or record.inventory is None:
        return []
    return check_inventory(out_dir, sdir / INVENTORY, InventorySummary(**record.inventory), verify)


def repair_command(plan: BuildPlan, stages: list[str] | None = None) -> str:
    only = f" --stages {','.join(stages)}" if stages else ""
    return f"sc-imagenet build --config {plan.profile} --out {plan.out_dir}{only}"


def damaged_input(plan: BuildPlan, name: str, upstream: str, damage: list[Damage]) -> DamagedInputError:
    more = f" and {len(damage) - 1} more file(s)" if len(damage) > 1 else ""
    return DamagedInputError(
        f"[{name}] cannot read its input: {damage[0]}{more}, written by stage {upstream!r}. Repair with "
        f"`{repair_command(plan, [upstream, name])}`: only the damaged files of {upstream!r} are rebuilt")


def changed_inputs(out_dir: Path, record: StageRecord) -> list[str]:
    """Inputs whose rows changed since this stage ran (a repaired upstream shard that came out different)."""
    changed = []
    for upstream, seen in record.input_content.items():
        now = read_stage_record(stage_dir(out_dir, upstream))
        if seen is not None and now is not None and now.content_hash != seen:
            changed.append(upstream)
    return changed


def _remove_damaged(plan: BuildPlan, name: str, damage: list[Damage]) -> None:
    """Delete the damaged files and the stage's record, so the rerun rebuilds exactly them: a category-sharded
    stage keeps every whole shard (resume), other stages run again."""
    for d in damage:
        in_build(d.path, plan.out_dir).unlink(missing_ok=True)
    sdir = plan.stage_dir(name)
    (sdir / STAGE_RECORD).unlink(missing_ok=True)
    (sdir / INVENTORY).unlink(missing_ok=True)


def _clean_leftovers(sdir: Path, keep: list[Path], artifacts: Path, tables: Iterable[str] = ()) -> None:
    """Remove shards (of the stage's own table and of its second `tables`) from older configs or categories no
    longer built, and torn temp files (`io.atomic`'s `.<name>.<pid>.tmp`) a killed run left in the manifest or
    in the stage's artifacts (checkpoints)."""
    keep_set = {p.resolve() for p in keep}
    for folder in (sdir, *(table_dir(sdir, t) for t in tables)):
        for path in list_shards(folder):
            if path.resolve() not in keep_set:
                path.unlink()
    for folder in (sdir, artifacts):
        for tmp in folder.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    for d in sorted((p for p in sdir.rglob("*") if p.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def execute_stage(
    plan: BuildPlan,
    name: str,
    log: Callable[[str], None] = print,
    progress: bool = True,
    on_progress: Callable[[float], None] | None = None,
    map_shards: MapShards | None = None,
) -> StageResult:
    """Run one stage unless it is complete for this fingerprint; resume at shard level otherwise.

    With `map_shards` (the flow's Dask path), a `ShardedStage`'s categories are handed to it as separate
    tasks (`execute_shard` each) and only the finalize step (merge, clean, content hash, `_stage.json`)
    runs here, after every category has finished; other stages run here as always."""
    stage = STAGES[name]
    sdir = plan.stage_dir(name)
    fp = plan.fingerprints[name]
    inputs = _check_inputs(plan, name)
    record, _ = load_stage_record(sdir)
    damage = stage_damage(plan.out_dir, name, plan.verify) if name not in plan.forced else []
    changed = changed_inputs(plan.out_dir, record) if record is not None and record.fingerprint == fp else []
    if name in plan.forced or changed:
        if changed:
            log(f"[{name}] the rows of {', '.join(changed)} changed since it ran: rerunning")
        shutil.rmtree(sdir, ignore_errors=True)
        shutil.rmtree(plan.artifact_dir(name), ignore_errors=True)
    elif damage:
        log(f"[{name}] damaged, rebuilding only that: " + "; ".join(map(str, damage)))
        _remove_damaged(plan, name, damage)
    elif record is not None and record.fingerprint == fp:
        log(f"[{name}] complete (fingerprint {fp}), skipping: {record.rows} rows")
        return StageResult(name, True, record, [{"stage": name, "state": "skipped", "rows": record.rows}])
    elif record is not None:
        log(f"[{name}] settings or inputs changed ({record.fingerprint} -> {fp}): rerunning")
        (sdir / STAGE_RECORD).unlink()
    sdir.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    ctx = stage_context(plan, name, inputs, log, progress, on_progress)
    with _storage_errors(plan, name), _damaged_inputs(plan, name):
        if map_shards is not None and isinstance(stage, ShardedStage):
            out = _run_mapped(stage, ctx, map_shards)
        else:
            out = stage.run(ctx)
    shards = output_files(stage, out, sdir)
    _clean_leftovers(sdir, shards, plan.artifact_dir(name), stage.tables)
    content, inventory = seal(plan, name, shards, out.artifacts)
    if damage and record is not None:
        same = record.content_hash == content
        log(f"[{name}] repaired: its rows are " + ("unchanged; downstream stages are kept" if same
                                                  else "different; the stages downstream of it will rerun"))
    record = StageRecord(
        stage=name, fingerprint=fp, schema_version=stage.schema_version, rows=out.rows,
        rows_by_status=dict(sorted(out.rows_by_status.items())), shards=len(out.shards),
        wall_s=round(timer.elapsed, 3), started_at=timer.started_at, finished_at=timer.started_at + timer.elapsed,
        inputs={i: plan.fingerprints[i] for i in stage.inputs}, versions=runtime_versions(),
        extra={**out.extra, "shards_skipped": out.shards_skipped}, content_hash=content,
        inventory=asdict(inventory),
        input_content={i: getattr(read_stage_record(plan.stage_dir(i)), "content_hash", None) for i in stage.inputs},
    )
    write_stage_record(sdir, record)
    log(f"[{name}] done in {record.wall_s:.1f}s: {record.rows} rows {record.rows_by_status}"
        + (f", {out.shards_skipped} finished shards kept from an earlier run" if out.shards_skipped else ""))
    return StageResult(name, False, record, out.summary)


MapShards = Callable[[str, list[str], Callable[[int, int], None]], list[ShardResult]]
"""(stage name, categories to write, progress(done, total)) → their `ShardResult`s in the same order, each
from `execute_shard`."""


def output_files(stage: Stage, out: StageOutput, stage_dir: Path) -> list[Path]:
    """A run's shards and their second tables' shards."""
    return [*out.shards, *(c for shard in out.shards for c in stage.companions(shard, stage_dir))]


def seal(plan: BuildPlan, name: str, shards: list[Path], artifacts: list[Path]) -> tuple[str, InventorySummary]:
    """The content hash of a stage's fresh shards (its volatile columns left out) and its inventory, written."""
    stage, sdir = STAGES[name], plan.stage_dir(name)
    volatile = [c for schema in (stage.schema, *stage.tables.values()) for c in volatile_columns(schema)]
    content = content_hash(sdir, shards, volatile)
    return content, write_inventory(sdir / INVENTORY, inventory_entries(plan.out_dir, [*shards, *artifacts]))


def stage_context(plan: BuildPlan, name: str, inputs: dict[str, Path] | None = None,
                  log: Callable[[str], None] = print, progress: bool = False,
                  on_progress: Callable[[float], None] | None = None) -> StageContext:
    inputs = inputs if inputs is not None else {i: plan.stage_dir(i) for i in STAGES[name].inputs}
    return StageContext(plan.cfg, plan.out_dir, plan.data_root, plan.stage_dir(name), plan.fingerprints[name],
                        inputs, progress, log, on_progress, plan.artifact_dir(name))


@contextmanager
def _storage_errors(plan: BuildPlan, name: str) -> Iterator[None]:
    """A full disk or a read-only output folder becomes a `StorageError` that says where."""
    try:
        yield
    except OSError as exc:
        err = storage_error(exc, f"[{name}] cannot write under {plan.out_dir}")
        if err is not None:
            raise err from exc
        raise


@contextmanager
def _damaged_inputs(plan: BuildPlan, name: str) -> Iterator[None]:
    """A read error while the stage runs (a page checksum that fails, a shard that no longer decodes) is looked
    up in the inputs' checksums: if an input file is damaged, the error names it and the repair."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, StorageError):
            raise
        for upstream in STAGES[name].inputs:
            damage = stage_damage(plan.out_dir, upstream, verify=True)
            if damage:
                raise damaged_input(plan, name, upstream, damage) from exc
        raise


def _run_mapped(stage: ShardedStage, ctx: StageContext, map_shards: MapShards) -> StageOutput:
    """Plan the categories here, write them through `map_shards`, finalize here. Categories an interrupted
    run finished are handed out too: their tasks only count them (`ShardedStage.run_shard`)."""
    wnids = stage.shard_keys(ctx)
    results = map_shards(stage.name, wnids, ctx.report_progress)
    if [r.wnid for r in results] != wnids:
        raise RuntimeError(f"[{stage.name}] map_shards returned {[r.wnid for r in results]}, expected {wnids}")
    skipped = sum(r.skipped for r in results)
    workers = sorted({r.worker for r in results if not r.skipped})
    ctx.log(f"[{stage.name}] {len(wnids) - skipped} category shards written on {len(workers)} worker "
            f"process(es), {skipped} already finished")
    out = stage.finalize(ctx, results, run_scoped(lambda: stage.load_shared(ctx)))
    out.extra["shard_workers"] = len(workers)  # worker processes that wrote this run's shards
    return out


def execute_shard(plan: BuildPlan, name: str, wnid: str, log: Callable[[str], None] = print) -> ShardResult:
    """One category of a `ShardedStage` (a Dask task's body): written unless already current for this
    fingerprint, atomically, with the stage's shared state (a model) cached in this process across tasks.
    The flow has checked the inputs and prepared the stage folder (`execute_stage`); `_stage.json` is the
    flow's to write once every category is done."""
    stage = STAGES[name]
    if not isinstance(stage, ShardedStage):
        raise ValueError(f"stage {name!r} is not category-sharded; it runs as one task")
    ctx = stage_context(plan, name, log=log)

    def shared() -> Any:
        return process_cached(name, stage.shared_key(ctx), lambda: stage.load_shared(ctx))

    with _storage_errors(plan, name):
        return stage.run_shard(ctx, wnid, shared)


def stage_states(out_dir: Path, cfg: BuildConfig | None = None, check: bool = True,
                 verify: bool = False) -> list[dict[str, Any]]:
    """Per stage: complete / damaged / stale / unknown / partial / missing, with rows, rows per status, path,
    fingerprint.

    `damaged` = a finished stage whose files are not as written (`check`: sizes and Parquet footers; `verify`:
    checksums too); `damage` lists them, and the next build rebuilds only those.
    `stale` = a record exists but no longer matches the config saved with the build (or the code's
    schema version), e.g. an upstream stage was rebuilt with other settings after this one finished, or an
    input's rows changed since it ran (`reason`).
    `unknown` = a record exists but the expected fingerprint cannot be computed where `status` runs
    (e.g. detector weights missing on this machine); `reason` says why.
    """
    from sc_imagenet.config import read_resolved_config

    out = Path(out_dir).resolve()
    cfg = cfg or read_resolved_config(out)
    expected: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    if cfg is not None:
        try:
            expected = compute_fingerprints(cfg, resolve_data_root(cfg, out), out, required=set(), reasons=reasons)
        except ConfigError as exc:
            expected, reasons = {}, dict.fromkeys(pipeline_order(), str(exc))
    rows = []
    for name in pipeline_order():
        sdir = stage_dir(out, name)
        record = read_stage_record(sdir)
        shards = list_shards(sdir)
        reason = None
        damage = stage_damage(out, name, verify) if check or verify else []
        changed = changed_inputs(out, record) if record is not None else []
        if damage:
            noun = "shard" if all(d.path.endswith(".parquet") for d in damage) else "file"
            state = f"damaged ({len(damage)} {noun}{'s' if len(damage) > 1 else ''})"
        elif record is not None and expected.get(name) is None:
            state = "unknown"
            reason = reasons.get(name) or ("an upstream stage's fingerprint cannot be computed" if cfg is not None
                                           else "no config.resolved.yaml in the build folder")
        elif record is not None:
            state = "complete" if record.fingerprint == expected[name] and not changed else "stale"
            if changed and record.fingerprint == expected[name]:
                reason = f"the rows of {', '.join(changed)} changed since it ran"
        else:
            state = "partial" if shards else "missing"
        done, expected_shards = (_shard_progress(out, name, shards, expected.get(name)) if state == "partial"
                                 else (None, None))
        rows.append({
            "stage": name,
            "state": state,
            "rows": record.rows if record else None,
            "rows_by_status": record.rows_by_status if record else {},
            "shards": record.shards if record else len(shards),
            "path": str(sdir),
            "fingerprint": record.fingerprint if record else None,
            "expected_fingerprint": expected.get(name),
            "wall_s": record.wall_s if record else None,
            "reason": reason,
            "shards_done": done,  # partial only: finished shards (of this fingerprint, when it is known)
            "shards_expected": expected_shards,  # partial only: categories the upstream manifest names, or None
            "damage": [{"path": d.path, "problem": d.problem} for d in damage],
        })
    return rows


def _shard_progress(out: Path, name: str, shards: list[Path], fp: str | None) -> tuple[int, int | None]:
    """(finished shards, shards the stage will have) of a partial stage: a shard counts when it carries the
    expected fingerprint (any shard when that is unknown); the total comes from the upstream manifest."""
    done = sum(shard_is_current(p, fp) for p in shards) if fp is not None else len(shards)
    stage = STAGES[name]
    try:
        planned = stage.planned_shards({i: stage_dir(out, i) for i in stage.inputs})
    except (OSError, ValueError):  # an unreadable upstream manifest: the total is just unknown
        planned = None
    return done, len(planned) if planned is not None else None


def ensure_data(plan: BuildPlan, log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Generate the synthetic dataset when the build uses it and it is missing; else check the root."""
    data = plan.cfg.data
    if data.source == "synthetic":
        from sc_imagenet.synth import generate_dataset, is_complete

        if is_complete(plan.data_root, data.synthetic):
            log(f"[data] synthetic dataset present at {plan.data_root}")
            return {"data_root": str(plan.data_root), "generated": False}
        log(f"[data] generating the synthetic dataset (seed {data.synthetic.seed}) into {plan.data_root}")
        summary = generate_dataset(plan.data_root, data.synthetic, progress=progress)
        return {"data_root": str(plan.data_root), "generated": True, **summary}
    if not plan.data_root.is_dir():
        raise ConfigError(f"data.root: {plan.data_root} is not a directory")
    return {"data_root": str(plan.data_root), "generated": False}


def run_build_locally(
    plan: BuildPlan, log: Callable[[str], None] = print, progress: bool = True
) -> list[StageResult]:
    """The build without Prefect (tests, debugging): same lock, data step and stage execution."""
    from sc_imagenet.config import write_resolved_config
    from sc_imagenet.io.locks import BuildLock

    with BuildLock(plan.out_dir):
        ensure_data(plan, log, progress)
        write_resolved_config(plan.cfg, plan.out_dir, plan.profile)
        return [execute_stage(plan, name, log, progress) for name in plan.stages]
