"""The `consistency` stage on hand-written `label` and `single_instance` shards whose flows are exact
synthetic warps: every image is a known similarity transform of one canonical frame, so the flow
s → t and the true match of every candidate are known; one image's outgoing flows and candidates
are wrong."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from sc_imagenet.config import BuildConfig, ConsistencyConfig
from sc_imagenet.io.manifest import ShardWriter, companion_path, shard_path
from sc_imagenet.matching.geometry import cell_centers
from sc_imagenet.stages.base import StageContext
from sc_imagenet.stages.consistency import IMAGES, ConsistencyFigures, ConsistencyStage
from sc_imagenet.stages.label import SCHEMA as LABEL_SCHEMA
from sc_imagenet.stages.label import LabelStage
from sc_imagenet.stages.single_instance import SCHEMA as SI_SCHEMA
from sc_imagenet.stages.single_instance import SingleInstanceStage

K = 10
WRONG = "n001_w"


class Frame:
    """Image pixels p = s·R(θ)·c + b of canonical coordinates c."""

    def __init__(self, rng: np.random.Generator, index: int) -> None:
        self.width, self.height = int(rng.integers(80, 121)), int(rng.integers(80, 121))
        self.grid = (8, 8) if index % 2 == 0 else (6, 10)
        scale, theta = rng.uniform(25, 35), rng.uniform(-0.3, 0.3)
        self.A = scale * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        self.b = np.array([self.width / 2, self.height / 2]) + rng.uniform(-3, 3, 2)

    def to_pixels(self, c: np.ndarray) -> np.ndarray:
        return c @ self.A.T + self.b

    def to_canonical(self, p: np.ndarray) -> np.ndarray:
        return (p - self.b) @ np.linalg.inv(self.A).T

    def box(self) -> list[float]:
        corners = self.to_pixels(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64))
        return [*corners.min(0).tolist(), *corners.max(0).tolist()]


def edge_row(src: str, trg: str, group: int, frames: dict[str, Frame], rng: np.random.Generator) -> dict[str, Any]:
    fs, ft = frames[src], frames[trg]
    centres = cell_centers(fs.grid, (fs.height, fs.width)).astype(np.float64)
    canon = rng.uniform(-0.5, 0.5, size=(K, 2))  # inside every image's cell-centre hull: lookups are exact
    P_s, P_t = fs.to_pixels(canon), ft.to_pixels(canon)
    flow = ft.to_pixels(fs.to_canonical(centres))
    if src == WRONG:  # its flows and its labels point anywhere
        flow = rng.uniform([0, 0], [ft.width, ft.height], size=flow.shape)
        P_t = rng.uniform([0, 0], [ft.width, ft.height], size=P_t.shape)
    return {"src_id": src, "trg_id": trg, "group": group, "status": "ok", "error": None,
            "src_width": fs.width, "src_height": fs.height, "trg_width": ft.width, "trg_height": ft.height,
            "grid_h": fs.grid[0], "grid_w": fs.grid[1], "flow": flow.reshape(-1).tolist(),
            "src_kps": P_s.reshape(-1).tolist(), "trg_kps": P_t.reshape(-1).tolist(),
            "scores": np.linspace(1, 0.5, K).tolist()}


def write_category(root: Path, wnid: str, groups: list[list[str]], extra_rows: list[dict[str, Any]],
                   frames: dict[str, Frame], seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = [edge_row(s, t, g, frames, rng) for g, ids in enumerate(groups) for s in ids for t in ids if s != t]
    rows += extra_rows
    rng.shuffle(rows)  # the output must follow the label shard's row order, whatever it is
    with ShardWriter(shard_path(root / "label", wnid), LABEL_SCHEMA, "fp-label", LabelStage.schema_version) as w:
        w.write_many(rows)
    ids = sorted({r["src_id"] for r in rows})
    kept = [{"image_id": i, "rel_path": f"{wnid}/{i}.JPEG", "width": frames[i].width, "height": frames[i].height,
             "keep": True, "reason": "kept", "n_above": 1, "n_detections": 1, "conf": 0.95, "class_name": "thing",
             "box": frames[i].box()} for i in ids]
    kept.append({"image_id": f"{wnid}_dropped", "rel_path": "x", "width": 10, "height": 10, "keep": False,
                 "reason": "no_detection", "n_above": 0, "n_detections": 0})
    with ShardWriter(shard_path(root / "single_instance", wnid), SI_SCHEMA, "fp-si",
                     SingleInstanceStage.schema_version) as w:
        w.write_many(kept)


def non_edge(src: str, status: str) -> dict[str, Any]:
    return {"src_id": src, "trg_id": None, "group": -1, "status": status, "error": f"{status} (test)"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("build") / "manifests"
    rng = np.random.default_rng(0)
    n1 = [[WRONG, *(f"n001_{i}" for i in range(5))], [f"n001_{i}" for i in range(5, 10)]]
    n2 = ["n002_a", "n002_b"]
    n3 = [[f"n003_{i}" for i in range(4)]]
    every = [i for g in n1 + n3 for i in g] + n2 + ["n001_bad"]
    frames = {i: Frame(rng, k) for k, i in enumerate(every)}
    write_category(root, "n001", n1, [non_edge("n001_bad", "unreadable")], frames, 1)
    write_category(root, "n002", [], [non_edge(i, "too_few_images") for i in n2], frames, 2)
    write_category(root, "n003", n3, [], frames, 3)
    return root


def context(inputs: Path, out: Path, loops: int = 15, seed: int = 0, fingerprint: str = "fp-test") -> StageContext:
    cfg = BuildConfig(seed=seed, consistency=ConsistencyConfig(loops=loops, threshold=0.05))
    return StageContext(cfg=cfg, out_dir=out, data_root=out / "data", stage_dir=out / "manifests" / "consistency",
                        fingerprint=fingerprint, inputs={"label": inputs / "label",
                                                         "single_instance": inputs / "single_instance"},
                        progress=False, log=lambda _msg: None)


def read(out: Path, wnid: str) -> list[dict[str, Any]]:
    return pq.read_table(shard_path(out / "manifests" / "consistency", wnid)).to_pylist()


def image_shard(out: Path, wnid: str) -> Path:
    stage_dir = out / "manifests" / "consistency"
    return companion_path(shard_path(stage_dir, wnid), stage_dir, IMAGES)


def read_images(out: Path, wnid: str) -> dict[str, dict[str, Any]]:
    """The category's image table, by image id."""
    return {r["image_id"]: r for r in pq.read_table(image_shard(out, wnid)).to_pylist()}


def canon(x: Any) -> Any:
    """NaN-aware equality: NaN → a marker."""
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    if isinstance(x, list):
        return [canon(v) for v in x]
    if isinstance(x, dict):
        return {k: canon(v) for k, v in x.items()}
    return x


@pytest.fixture(scope="module")
def first_run(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("run1")
    return out, ConsistencyStage().run(context(inputs, out))


def test_one_row_per_label_row_in_order_and_non_edges_pass_through(inputs: Path, first_run: tuple[Path, Any]) -> None:
    out, result = first_run
    for wnid in ("n001", "n002", "n003"):
        label = pq.read_table(shard_path(inputs / "label", wnid), columns=["src_id", "trg_id", "status"]).to_pylist()
        rows = read(out, wnid)
        assert [(r["src_id"], r["trg_id"]) for r in rows] == [(r["src_id"], r["trg_id"]) for r in label]
        for lab, row in zip(label, rows, strict=True):
            if lab["status"] != "ok":
                assert row["status"] == lab["status"] and row["group"] == -1
                assert all(row[c] is None for c in ("loops", "point_offset", "pair_consistent", "pair_match_score"))
            else:
                assert row["status"] in ("ok", "no_loops")
                assert len(row["point_offset"]) == K and len(row["point_fb_offset"]) == K
        # the image table: one row per source image with an edge, in id order, with its clique and edge count
        edges = [r for r in rows if r["status"] in ("ok", "no_loops")]
        images = read_images(out, wnid)
        assert list(images) == sorted({r["src_id"] for r in edges})
        for image, r in images.items():
            mine = [e for e in edges if e["src_id"] == image]
            assert r["edges"] == len(mine) and {e["group"] for e in mine} == {r["group"]}
    assert {r["status"] for r in read(out, "n002")} == {"too_few_images"}
    assert result.rows_by_status.get("unreadable") == 1 and result.rows_by_status.get("too_few_images") == 2
    assert result.rows == sum(result.rows_by_status.values()) == 30 + 20 + 1 + 2 + 12


def test_loop_counts_are_min_of_requested_and_available(first_run: tuple[Path, Any]) -> None:
    out, result = first_run
    per_image: dict[str, int] = {}
    for wnid in ("n001", "n003"):
        per_image.update({i: r["loops"] for i, r in read_images(out, wnid).items()})
    for image, n in per_image.items():
        g = 4 if image.startswith("n003") else (6 if image == WRONG or int(image.split("_")[1]) < 5 else 5)
        assert n == min(15, (g - 1) * (g - 2)), image
    # an edge's loops are those of its image that end at its target; they add up to the image's loops
    for wnid in ("n001", "n003"):
        sums: dict[str, int] = {}
        for r in read(out, wnid):
            if r["status"] in ("ok", "no_loops"):
                sums[r["src_id"]] = sums.get(r["src_id"], 0) + r["loops"]
                assert (r["status"] == "no_loops") == (r["loops"] == 0)
        assert all(sums[i] == per_image[i] for i in sums)
    extra = ConsistencyFigures(**result.extra)
    assert extra.images == 15 and extra.edges == 30 + 20 + 12
    assert extra.loops_run == sum(per_image.values()) == 6 * 15 + 5 * 12 + 4 * 6
    assert extra.min_loops_per_image == 6 and extra.images_with_fewer_loops == 9
    assert extra.mean_loops_per_image == pytest.approx(174 / 15, abs=1e-3)
    assert [r["wnid"] for r in result.summary] == ["n001", "n002", "n003"]
    assert result.summary[1]["images"] == 0


def test_the_wrong_image_scores_worst_and_correct_candidates_near_zero(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path
    ConsistencyStage().run(context(inputs, out, loops=100))  # every loop: an edge s → t has g − 2 of them
    rows = [r for r in read(out, "n001") if r["status"] in ("ok", "no_loops")]
    images = read_images(out, "n001")
    image_score = {i: r["consistent"] for i, r in images.items()}
    image_offset = {i: r["offset_mean"] for i, r in images.items()}
    assert min(image_score, key=image_score.get) == WRONG
    assert max(image_offset, key=image_offset.get) == WRONG
    assert image_score[WRONG] < 0.1
    # group 1 holds no wrong image: every loop closes
    for i, r in images.items():
        if int(i.split("_")[1] if i != WRONG else -1) >= 5:
            assert r["consistent"] == 1.0 and r["offset_mean"] < 0.01
            assert r["fb_consistent"] == 1.0
    # correct candidates of group 0: median offsets ~0 (1 of the 4 loops of an edge goes through the wrong
    # image as I_m; the median outvotes it)
    for r in rows:
        if WRONG not in (r["src_id"], r["trg_id"]) and r["status"] == "ok":
            assert max(r["point_offset"]) < 0.01 and r["pair_offset_median"] < 0.01
            assert min(r["point_fb_offset"]) >= 0 and max(r["point_fb_offset"]) < 0.01
        if r["src_id"] == WRONG and r["status"] == "ok":
            assert min(r["point_offset"]) > 0.05 and r["pair_consistent"] < 0.2
    n3 = [r for r in read(out, "n003") if r["status"] == "ok"]
    assert all(r["consistent"] == 1.0 for r in read_images(out, "n003").values())
    assert all(r["pair_match_score"] == pytest.approx(0.75) for r in n3)


def test_deterministic_and_resumes_per_category(inputs: Path, first_run: tuple[Path, Any],
                                                tmp_path: Path) -> None:
    out1, _ = first_run
    out2 = tmp_path / "run2"
    ConsistencyStage().run(context(inputs, out2))
    for wnid in ("n001", "n002", "n003"):
        assert canon(read(out2, wnid)) == canon(read(out1, wnid))
        assert canon(read_images(out2, wnid)) == canon(read_images(out1, wnid))
    # an interrupted run: n003 never finished → only it is computed again
    done = shard_path(out2 / "manifests" / "consistency", "n001")
    mtime = done.stat().st_mtime_ns
    shard_path(out2 / "manifests" / "consistency", "n003").unlink()
    resumed = ConsistencyStage().run(context(inputs, out2))
    assert resumed.shards_skipped == 2 and done.stat().st_mtime_ns == mtime
    assert canon(read(out2, "n003")) == canon(read(out1, "n003"))
    assert resumed.rows_by_status == first_run[1].rows_by_status
    assert ConsistencyFigures(**resumed.extra).loops_run == ConsistencyFigures(**first_run[1].extra).loops_run
    # a category whose image table is gone is not finished, though its own shard is
    image_shard(out2, "n001").unlink()
    resumed = ConsistencyStage().run(context(inputs, out2))
    assert resumed.shards_skipped == 2 and done.stat().st_mtime_ns != mtime
    assert canon(read_images(out2, "n001")) == canon(read_images(out1, "n001"))
    # another fingerprint recomputes everything
    again = ConsistencyStage().run(context(inputs, out2, fingerprint="fp-other"))
    assert again.shards_skipped == 0
    # another seed draws other loops
    out3 = tmp_path / "run3"
    ConsistencyStage().run(context(inputs, out3, seed=1))
    assert canon(read(out3, "n001")) != canon(read(out1, "n001"))


def test_edges_no_loop_ends_at_are_no_loops(inputs: Path, tmp_path: Path) -> None:
    ConsistencyStage().run(context(inputs, tmp_path, loops=1))
    rows = [r for r in read(tmp_path, "n003") if r["status"] in ("ok", "no_loops")]
    assert sum(r["status"] == "ok" for r in rows) == 4  # one loop per image: one of its 3 edges
    assert {r["loops"] for r in read_images(tmp_path, "n003").values()} == {1}
    for r in rows:
        if r["status"] == "no_loops":
            assert r["loops"] == 0 and all(math.isnan(v) for v in r["point_offset"])
            assert math.isnan(r["pair_consistent"]) and math.isnan(r["pair_offset_mean"])
            assert r["pair_fb_consistent"] == 1.0 and r["pair_match_score"] == pytest.approx(0.75)


def test_an_image_without_a_box_is_an_error(inputs: Path, tmp_path: Path) -> None:
    broken = tmp_path / "inputs"
    for stage in ("label", "single_instance"):
        (broken / stage / "wnid=n003").mkdir(parents=True)
    shutil.copyfile(shard_path(inputs / "label", "n003"), shard_path(broken / "label", "n003"))
    table = pq.read_table(shard_path(inputs / "single_instance", "n003"))
    pq.write_table(table.slice(1), shard_path(broken / "single_instance", "n003"))  # drops n003_0's box
    with pytest.raises(ValueError, match=r"\['n003_0'\] have edges .* no kept box"):
        ConsistencyStage().run(context(broken, tmp_path / "out"))
