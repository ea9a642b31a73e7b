"""Damage after a stage finished: `status` names it, the next build rebuilds only it, readers say what to do.

One finished tiny build (categories → export) is copied per case and damaged in one of three places: a
category shard of `label` (sharded), the one shard of `categories` (unsharded), and a file of the release
(`export`'s artifact); plus the generator checkpoint (`train`'s artifact)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from test_dataset_stages import build_with_dataset_settings

from sc_imagenet.build import DamagedInputError, plan_build, run_build_locally, stage_states
from sc_imagenet.cli import main
from sc_imagenet.config import load_config
from sc_imagenet.io.integrity import (
    INVENTORY,
    FileEntry,
    build_relative,
    check_file,
    file_xxh3,
    in_build,
    read_inventory,
    write_inventory,
)
from sc_imagenet.io.manifest import STAGE_RECORD, read_shard, read_stage_record
from sc_imagenet.stages import STAGES, pipeline_order
from sc_imagenet.stages.label import LabelFigures
from sc_imagenet.stages.train import TrainFigures

BUILT = [s for s in pipeline_order() if s != "report"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict:
    profile, out = build_with_dataset_settings(tmp_path_factory.mktemp("integrity"), BUILT)
    hashes = {name: read_stage_record(out / "manifests" / name).content_hash for name in BUILT}
    return {"profile": str(profile), "out": out, "hashes": hashes}


def copy_build(finished: dict, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished["out"], out, symlinks=True)
    return out


def rebuild(finished: dict, out: Path, verify: bool = False) -> tuple[dict[str, bool], list[str]]:
    """Rerun the whole build on `out`: which stages were skipped, and the log."""
    log: list[str] = []
    plan = plan_build(load_config(finished["profile"]), "tiny", out, stages=BUILT, verify=verify)
    results = run_build_locally(plan, log=log.append, progress=False)
    return {r.stage: r.skipped for r in results}, log


def states(out: Path, verify: bool = False) -> dict[str, dict]:
    return {s["stage"]: s for s in stage_states(out, verify=verify)}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip(path: Path) -> None:
    """One byte inverted where the values are: a Parquet shard's first data page, else mid-file."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".parquet":
        col = pq.read_metadata(path).row_group(0).column(0)
        at = col.data_page_offset + col.total_compressed_size // 2
    else:
        at = len(data) // 2
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def label_shard(out: Path) -> Path:
    return sorted((out / "manifests" / "label").glob("wnid=*/part-00000.parquet"))[0]


def categories_shard(out: Path) -> Path:
    return out / "manifests" / "categories" / "part-00000.parquet"


def consistency_image_shard(out: Path) -> Path:
    """A shard of `consistency`'s second table (one row per image), beside the stage's own."""
    return sorted((out / "manifests" / "consistency" / "_images").glob("wnid=*/part-00000.parquet"))[0]


def release_file(out: Path) -> Path:
    return sorted((out / "export" / "SC-ImageNet" / "PairAnnotation" / "trn").glob("*.json"))[0]


TARGETS = {"label": label_shard, "categories": categories_shard, "consistency": consistency_image_shard,
           "export": release_file}
DAMAGE = {"truncated": truncate, "flipped": flip, "deleted": Path.unlink}


@pytest.mark.parametrize("how", list(DAMAGE))
@pytest.mark.parametrize("stage", list(TARGETS))
def test_damaged_file_is_named_and_only_it_is_rebuilt(finished: dict, tmp_path: Path, stage: str, how: str) -> None:
    out = copy_build(finished, tmp_path)
    path = TARGETS[stage](out)
    DAMAGE[how](path)
    verify = how == "flipped"  # bytes changed in place keep size and footer: only checksums see them
    if verify:
        assert states(out)[stage]["state"] == "complete"
    seen = states(out, verify=verify)
    assert [s for s, v in seen.items() if v["damage"]] == [stage]
    assert seen[stage]["state"].startswith("damaged (1 ")
    (damage,) = seen[stage]["damage"]
    assert damage["path"] == build_relative(path, out)
    assert damage["problem"].split(":")[0].split(" ")[0] in {"truncated", "missing", "checksum", "Parquet"}

    skipped, log = rebuild(finished, out, verify=verify)
    assert [s for s, was in skipped.items() if not was] == [stage], log
    record = read_stage_record(out / "manifests" / stage)
    assert record.content_hash == finished["hashes"][stage]
    if stage == "label":  # every other category's shard was kept
        assert LabelFigures.of(record).shards_skipped == record.shards - 1
    assert any("repaired: its rows are unchanged" in line for line in log)
    assert all(s["state"] == "complete" and not s["damage"] for s in stage_states(out, verify=True)
               if s["stage"] in BUILT)
    assert path.is_file()


@pytest.mark.parametrize("stage", list(TARGETS))
def test_corrupt_stage_record_is_damage_and_rebuilt_from_the_whole_shards(finished: dict, tmp_path: Path,
                                                                        stage: str) -> None:
    out = copy_build(finished, tmp_path)
    (out / "manifests" / stage / STAGE_RECORD).write_text('{"stage": "lab')
    seen = states(out)
    assert seen[stage]["state"] == "damaged (1 file)"
    assert seen[stage]["damage"][0]["path"] == f"manifests/{stage}/{STAGE_RECORD}"
    skipped, log = rebuild(finished, out)
    assert [s for s, was in skipped.items() if not was] == [stage], log
    record = read_stage_record(out / "manifests" / stage)
    assert record.content_hash == finished["hashes"][stage]
    if stage == "label":
        assert LabelFigures.of(record).shards_skipped == record.shards  # no category relabelled


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_corrupt_generator_checkpoint_is_rebuilt_from_the_resume_point(finished: dict, tmp_path: Path,
                                                                      how: str) -> None:
    out = copy_build(finished, tmp_path)
    ckpt = TrainFigures.read(out / "manifests" / "train").checkpoint_path(out)
    original = file_xxh3(ckpt)
    DAMAGE[how](ckpt)
    seen = states(out, verify=how == "flipped")
    assert seen["train"]["damage"] == [{"path": "artifacts/train/generator.pt", "problem": seen["train"]["damage"][0]
                                        ["problem"]}]
    skipped, log = rebuild(finished, out, verify=how == "flipped")
    assert [s for s, was in skipped.items() if not was] == ["train"], log
    record = read_stage_record(out / "manifests" / "train")
    assert file_xxh3(ckpt) == original and record.content_hash == finished["hashes"]["train"]
    trained = TrainFigures.of(record)
    assert trained.resumed_from_step == trained.steps  # no step trained again


def test_damaged_inventory_is_damage(finished: dict, tmp_path: Path) -> None:
    out = copy_build(finished, tmp_path)
    inventory = out / "manifests" / "consistency" / INVENTORY
    inventory.write_text(inventory.read_text().replace("\t", "\t1", 1))
    (damage,) = states(out)["consistency"]["damage"]
    assert damage["path"] == f"manifests/consistency/{INVENTORY}"


def test_reader_of_a_damaged_input_names_it_and_the_repair(finished: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = copy_build(finished, tmp_path)
    shard = label_shard(out)
    truncate(shard)
    code = main(["build", "--config", finished["profile"], "--out", str(out), "--stages", "consistency",
                 "--force", "consistency", "--no-prefect"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1
    assert build_relative(shard, out) in err and "stage 'label'" in err
    assert f"sc-imagenet build --config {finished['profile']} --out {out} --stages label,consistency" in err


def test_reader_of_flipped_bytes_fails_on_the_page_checksum(finished: dict, tmp_path: Path) -> None:
    """Bytes changed in place pass the cheap check; the reader's page CRC stops it, and the error names the file."""
    out = copy_build(finished, tmp_path)
    shard = label_shard(out)
    flip(shard)
    with pytest.raises(OSError, match="CRC"):
        read_shard(shard)
    plan = plan_build(load_config(finished["profile"]), "tiny", out, stages=["consistency"], force="consistency")
    with pytest.raises(DamagedInputError, match=build_relative(shard, out).replace("=", ".")):
        run_build_locally(plan, log=lambda m: None, progress=False)


def test_status_exit_code_and_lines(finished: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = copy_build(finished, tmp_path)
    assert main(["status", "--out", str(out), "--verify"]) == 0
    categories_shard(out).unlink()
    capsys.readouterr()
    assert main(["status", "--out", str(out)]) == 3
    text = capsys.readouterr().out
    assert "damaged (1 shard)" in text and "categories: damaged: manifests/categories/part-00000.parquet (missing)" \
        in text


def test_moved_build_stays_complete(finished: dict, tmp_path: Path) -> None:
    """A build whose data root is inside it (the demo's `data/`) keeps its fingerprints when moved."""
    out = copy_build(finished, tmp_path)
    profile = Path(finished["profile"])
    doc = yaml.safe_load(profile.read_text())
    data = Path(doc["data"]["root"])
    del doc["data"]["root"]  # synthetic, no root: `<out>/data`, as the demo
    inside = tmp_path / "inside.yaml"
    inside.write_text(yaml.safe_dump(doc))
    shutil.copytree(data, out / "data")
    cfg = load_config(str(inside))
    run_build_locally(plan_build(cfg, "tiny", out, stages=["categories", "index"]), log=lambda m: None,
                      progress=False)
    moved = tmp_path / "elsewhere" / "build"
    shutil.move(out, moved)
    seen = {s["stage"]: s["state"] for s in stage_states(moved, cfg)}
    assert seen["categories"] == seen["index"] == "complete"


class TestInventory:
    def test_paths_relative_inside_absolute_outside(self, tmp_path: Path) -> None:
        assert build_relative(tmp_path / "out" / "a" / "b.parquet", tmp_path / "out") == "a/b.parquet"
        assert build_relative(tmp_path / "x.json", tmp_path / "out") == str(tmp_path / "x.json")
        assert in_build("a/b", tmp_path) == tmp_path / "a" / "b"
        assert in_build("/abs/b", tmp_path) == Path("/abs/b")

    def test_round_trip_and_checks(self, tmp_path: Path) -> None:
        f = tmp_path / "f.bin"
        f.write_bytes(b"0123456789")
        entry = FileEntry("f.bin", 10, file_xxh3(f))
        summary = write_inventory(tmp_path / INVENTORY, [entry])
        assert read_inventory(tmp_path / INVENTORY) == [entry] and summary.files == 1 and summary.bytes == 10
        assert check_file(tmp_path, entry, verify=True) is None
        f.write_bytes(b"0123456780")
        assert check_file(tmp_path, entry) is None  # same size: only the checksum sees it
        assert check_file(tmp_path, entry, verify=True).startswith("checksum differs")
        f.write_bytes(b"01234")
        assert check_file(tmp_path, entry) == "truncated: 5 of 10 bytes"
        f.write_bytes(b"0123456789AB")
        assert check_file(tmp_path, entry) == "12 bytes, 10 recorded"
        f.unlink()
        assert check_file(tmp_path, entry) == "missing"

    def test_parquet_footer_is_read(self, tmp_path: Path) -> None:
        f = tmp_path / "x.parquet"
        f.write_bytes(b"PAR1" + b"\0" * 20)
        assert check_file(tmp_path, FileEntry("x.parquet", 24, "")).startswith("Parquet footer unreadable")

    def test_tab_in_a_name_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="tab"):
            write_inventory(tmp_path / INVENTORY, [FileEntry("a\tb", 1, "x")])


def test_benchmark_smoke(finished: dict, tmp_path: Path) -> None:
    """benchmarks/integrity.py on the tiny build: every figure it promises, and the build left whole."""
    import importlib.util

    from sc_imagenet.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("integrity_bench", REPO_ROOT / "benchmarks" / "integrity.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = copy_build(finished, tmp_path)
    assert bench.main(["--out", str(out), "--repeat", "1", "--json", str(tmp_path / "i.json")]) == 0
    doc = json.loads((tmp_path / "i.json").read_text())
    assert doc["files"] > doc["shards"] > 0 and doc["bytes"] > 0
    for key in ("default_check", "verify_warm", "verify_cold"):
        assert doc[key]["s_per_1000_files"] >= 0 and doc[key]["s_per_gb"] >= 0
    assert set(doc["seconds"]) >= {"status_no_check", "status_as_before", "status_default", "status_verify"}
    assert doc["status_default_over_no_check"] > 0 and doc["status_default_over_before"] > 0


def test_changed_input_rows_make_downstream_stale_and_rerun(finished: dict, tmp_path: Path) -> None:
    """A repaired input whose rows came out different (here: its recorded hash edited) invalidates the stages
    that read it, and only them; equal rows after their rerun leave the rest alone."""
    out = copy_build(finished, tmp_path)
    record_path = out / "manifests" / "select" / STAGE_RECORD
    doc = json.loads(record_path.read_text())
    doc["content_hash"] = "0" * 16
    record_path.write_text(json.dumps(doc))
    seen = states(out)
    readers = [s for s in BUILT if "select" in STAGES[s].inputs]
    assert readers == ["pairs"]
    assert seen["pairs"]["state"] == "stale" and "select" in seen["pairs"]["reason"]
    assert all(seen[s]["state"] == "complete" for s in BUILT if s != "pairs")
    skipped, log = rebuild(finished, out)
    assert [s for s, was in skipped.items() if not was] == ["pairs"], log
    assert read_stage_record(out / "manifests" / "pairs").content_hash == finished["hashes"]["pairs"]
    assert all(s["state"] == "complete" for s in stage_states(out) if s["stage"] in BUILT)
