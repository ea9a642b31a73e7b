"""Benchmark loaders (PF-WILLOW both layouts, PF-PASCAL, SPair-71k, synthetic), `sc-imagenet eval`, the
bootstrap PCK helper and the `nn-rhm` baselines.

Every fixture is written in the published layout from synthetic images with exact keypoints
(`sc_imagenet.synth`): PNG/JPEG images, MATLAB v5 `.mat` annotations (`scipy.io.savemat`), CSVs and
SPair JSON files, so the loaders are checked on the same bytes a download would give them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from sc_imagenet.cli import main as cli_main
from sc_imagenet.evaluate import METHODS, MethodContext, evaluate, sample_eval_pairs
from sc_imagenet.evaluate.benchmarks import (
    BENCHMARKS,
    PREDICTION_COLUMNS,
    BenchmarkError,
    load_benchmark,
    score_benchmark,
)
from sc_imagenet.evaluate.methods import hough_flow
from sc_imagenet.evaluate.pck import bootstrap_interval, paired_difference, pck_from_distances
from sc_imagenet.matching.backbones import create_backbone
from sc_imagenet.matching.geometry import index_to_pixels
from sc_imagenet.synth import SynthConfig, generate_dataset, load_groundtruth
from sc_imagenet.synth.groundtruth import GroundTruth

SMALL = SynthConfig(seed=5, images_per_category=4)
FAST = ["--input-size", "64", "--device", "cpu"]  # dense-sift on an 8×8 grid: milliseconds per pair

# (benchmark subset / class, synthetic category, image ids): single-instance, readable images
WILLOW = {"car(G)": ("n90000001", ["0000", "0001", "0003"]), "winebottle(wC)": ("n90000003", ["0001", "0002", "0003"])}
PASCAL = [("n90000002", 3, ["0000", "0001", "0002"]),  # class 3 = bird
          ("n90000004", 1, ["0001", "0002", "0003"])]  # class 1 = aeroplane
SPAIR = {"bird": ("n90000002", ["0000", "0001", "0002"]), "cat": ("n90000005", ["0001", "0002", "0003"])}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "synth"
    generate_dataset(root, SMALL, progress=False)
    return root


@pytest.fixture(scope="module")
def gt(synth: Path) -> GroundTruth:
    return load_groundtruth(synth)


def kps_of(gt: GroundTruth, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) float64 keypoints and (N,) visibility of the image's primary instance."""
    inst = gt.instances[(gt.instances["image_id"] == image_id) & (gt.instances["instance"] == 0)].iloc[0]
    return np.asarray(inst["keypoints"], np.float64).reshape(-1, 2), np.asarray(inst["keypoint_visible"], bool)


def image_of(synth: Path, gt: GroundTruth, image_id: str) -> Image.Image:
    return Image.open(synth / str(gt.image(image_id)["rel_path"])).convert("RGB")


def build_willow_mat(synth: Path, gt: GroundTruth, root: Path) -> Path:
    """Proposal Flow layout: `<subset>/<name>.png` + `<name>.mat` with 1-based `pts_coord` 2 × 10."""
    for subset, (wnid, ids) in WILLOW.items():
        (root / subset).mkdir(parents=True)
        for n in ids:
            image_of(synth, gt, f"{wnid}_{n}").save(root / subset / f"img_{n}.png")
            xy, _ = kps_of(gt, f"{wnid}_{n}")
            scipy.io.savemat(root / subset / f"img_{n}.mat", {"pts_coord": (xy[:10] + 1).T})
    return root


def build_willow_csv(synth: Path, gt: GroundTruth, root: Path) -> Path:
    """HPF/CATs layout: test_pairs.csv naming `PF-dataset/<subset>/<name>.png`, images under the root."""
    rows = []
    for subset, (wnid, ids) in WILLOW.items():
        (root / subset).mkdir(parents=True)
        for n in ids:
            image_of(synth, gt, f"{wnid}_{n}").save(root / subset / f"img_{n}.png")
        for a in ids:
            for b in ids:
                if a != b:
                    sa, sb = (kps_of(gt, f"{wnid}_{m}")[0][:10] + 1 for m in (a, b))
                    rows.append([f"PF-dataset/{subset}/img_{a}.png", f"PF-dataset/{subset}/img_{b}.png",
                                 *sa[:, 0], *sa[:, 1], *sb[:, 0], *sb[:, 1]])
    cols = ["imageA", "imageB"] + [f"{p}{c}{i}" for p in "AB" for c in "XY" for i in range(1, 11)]
    pd.DataFrame(rows, columns=cols).to_csv(root / "test_pairs.csv", index=False)
    return root


def build_pascal(synth: Path, gt: GroundTruth, root: Path) -> Path:
    """HPF layout: {split}_pairs.csv, JPEGImages/, Annotations/<class>/<image>.mat (`kps` N × 2, NaN
    rows for invisible keypoints, 1-based; `bbox` 1 × 4)."""
    classes = ["aeroplane", "bicycle", "bird"]
    (root / "JPEGImages").mkdir(parents=True)
    rows = []
    for wnid, cls, ids in PASCAL:
        (root / "Annotations" / classes[cls - 1]).mkdir(parents=True)
        for n in ids:
            name = f"2009_{wnid[-1]}{n}"
            image_of(synth, gt, f"{wnid}_{n}").save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            xy, vis = kps_of(gt, f"{wnid}_{n}")
            kps = xy + 1
            kps[~vis] = np.nan
            if n == ids[0]:
                kps[2] = np.nan  # not annotated in this image: keypoint 2 never counts in its pairs
            scipy.io.savemat(root / "Annotations" / classes[cls - 1] / f"{name}.mat",
                             {"kps": kps, "bbox": np.array([[1, 1, 50, 50]])})
        names = [f"JPEGImages/2009_{wnid[-1]}{n}.jpg" for n in ids]
        rows += [[names[0], names[1], cls], [names[1], names[2], cls], [names[2], names[0], cls]]
    pd.DataFrame(rows, columns=["source_image", "target_image", "class"]).to_csv(root / "test_pairs.csv", index=False)
    pd.DataFrame([[*r, 0] for r in rows], columns=["source_image", "target_image", "class", "flip"]).to_csv(
        root / "trn_pairs.csv", index=False)
    return root


def build_spair(synth: Path, gt: GroundTruth, root: Path) -> Path:
    """SPair-71k layout: Layout/large/test.txt, PairAnnotation/test/<id>.json, JPEGImages/<category>/."""
    (root / "Layout" / "large").mkdir(parents=True)
    (root / "PairAnnotation" / "test").mkdir(parents=True)
    lines, k = [], 0
    for cat, (wnid, ids) in SPAIR.items():
        (root / "JPEGImages" / cat).mkdir(parents=True)
        for n in ids:
            image_of(synth, gt, f"{wnid}_{n}").save(root / "JPEGImages" / cat / f"2010_{n}.jpg", quality=95)
        for a, b in [(ids[0], ids[1]), (ids[1], ids[2]), (ids[2], ids[0])]:
            k += 1
            pid = f"{k:06d}-2010_{a}-2010_{b}:{cat}"
            (sa, va), (sb, vb) = kps_of(gt, f"{wnid}_{a}"), kps_of(gt, f"{wnid}_{b}")
            both = np.flatnonzero(va & vb)
            box = gt.instances[(gt.instances["image_id"] == f"{wnid}_{b}") & (gt.instances["instance"] == 0)]
            trg_box = [int(v) for v in np.asarray(box.iloc[0]["bbox"])]
            data = {"pair_id": k, "src_imname": f"2010_{a}.jpg", "trg_imname": f"2010_{b}.jpg",
                    "src_imsize": [1, 1, 3], "trg_imsize": [1, 1, 3], "src_bndbox": [0, 0, 10, 10],
                    "trg_bndbox": trg_box, "category": cat, "src_kps": sa[both].round(1).tolist(),
                    "trg_kps": sb[both].round(1).tolist(), "kps_ids": [str(i) for i in both], "mirror": 0,
                    "viewpoint_variation": 0, "scale_variation": 0, "truncation": 0, "occlusion": 0}
            (root / "PairAnnotation" / "test" / f"{pid}.json").write_text(json.dumps(data))
            lines.append(pid)
    (root / "Layout" / "large" / "test.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def layouts(synth: Path, gt: GroundTruth, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {"willow-mat": build_willow_mat(synth, gt, base / "PF-dataset"),
            "willow-csv": build_willow_csv(synth, gt, base / "PF-WILLOW"),
            "pascal": build_pascal(synth, gt, base / "PF-PASCAL"),
            "spair": build_spair(synth, gt, base / "SPair-71k")}


def copy_layout(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------------------------- loaders


def test_registry_lists_the_four_benchmarks() -> None:
    assert {"pf-willow", "pf-pascal", "spair", "synthetic"} <= set(BENCHMARKS)
    assert {"nn-rhm", "nn-rhm-refine-disp", "nn-rhm-1to1"} <= set(METHODS)


def test_willow_mat_pairs_keypoints_threshold(layouts: dict[str, Path], gt: GroundTruth) -> None:
    bench = load_benchmark("pf-willow", layouts["willow-mat"])
    assert bench.variant == "mat" and bench.split == "test" and len(bench.pairs) == bench.pairs_total == 12
    # all ordered pairs of distinct images inside a subset, subsets and images sorted
    assert [p.pair_id for p in bench.pairs[:3]] == ["car(G)/img_0000-img_0001", "car(G)/img_0000-img_0003",
                                                   "car(G)/img_0001-img_0000"]
    assert all(p.src_image.split("/")[0] == p.category for p in bench.pairs)
    p = bench.pairs[0]
    assert (p.src_image, p.trg_image) == ("car(G)/img_0000.png", "car(G)/img_0001.png")
    src, trg = kps_of(gt, "n90000001_0000")[0][:10], kps_of(gt, "n90000001_0001")[0][:10]
    np.testing.assert_allclose(p.src_kps, src, atol=1e-4)  # 1-based pts_coord − 1 = the original 0-based points
    np.testing.assert_allclose(p.trg_kps, trg, atol=1e-4)
    assert p.valid.all() and p.kp_ids.tolist() == list(range(10))
    assert p.threshold == pytest.approx(float(np.max(trg.max(0) - trg.min(0))), abs=1e-3)  # target keypoints' box


def test_willow_mat_known_answer(tmp_path: Path) -> None:
    """pts_coord rows are x and y, 1-based: (1, 1) is pixel (0, 0); the threshold is the target keypoints' box."""
    for subset in ("duck(S)",):
        (tmp_path / subset).mkdir()
        for name, pts in (("a", [[1, 11, 5], [1, 21, 3]]), ("b", [[2, 42, 2], [3, 13, 23]])):
            Image.new("RGB", (50, 40)).save(tmp_path / subset / f"{name}.png")
            scipy.io.savemat(tmp_path / subset / f"{name}.mat", {"pts_coord": np.array(pts, float)})
    a_to_b, b_to_a = load_benchmark("pf-willow", tmp_path).pairs
    np.testing.assert_array_equal(a_to_b.src_kps, [[0, 0], [10, 20], [4, 2]])
    np.testing.assert_array_equal(a_to_b.trg_kps, [[1, 2], [41, 12], [1, 22]])
    assert a_to_b.threshold == 40.0 and b_to_a.threshold == 20.0  # max(41 − 1, 22 − 2), max(10 − 0, 20 − 0)


def test_willow_csv_matches_mat_layout(layouts: dict[str, Path]) -> None:
    csv, mat = load_benchmark("pf-willow", layouts["willow-csv"]), load_benchmark("pf-willow", layouts["willow-mat"])
    assert csv.variant == "csv" and len(csv.pairs) == 12
    assert csv.pairs[0].src_image == "car(G)/img_0000.png"  # `PF-dataset/` dropped, as HPF/CATs do
    by_id = {p.pair_id: p for p in mat.pairs}
    for p in csv.pairs:
        q = by_id[p.pair_id]
        assert (p.category, p.src_image, p.trg_image) == (q.category, q.src_image, q.trg_image)
        np.testing.assert_allclose(p.src_kps, q.src_kps, atol=1e-4)
        np.testing.assert_allclose(p.trg_kps, q.trg_kps, atol=1e-4)
        assert p.threshold == pytest.approx(q.threshold, abs=1e-3)
    assert len(load_benchmark("pf-willow", layouts["willow-csv"], limit=5).pairs) == 5


def test_pascal_pairs_nan_rows_and_classes(layouts: dict[str, Path], gt: GroundTruth) -> None:
    bench = load_benchmark("pf-pascal", layouts["pascal"])
    assert bench.split == "test" and len(bench.pairs) == 6
    p = bench.pairs[0]
    assert (p.category, p.src_image, p.trg_image) == ("bird", "JPEGImages/2009_20000.jpg", "JPEGImages/2009_20001.jpg")
    assert p.threshold is None  # max side of the target image, read when it is decoded
    xy, vis = kps_of(gt, "n90000002_0000")
    expected = vis & kps_of(gt, "n90000002_0001")[1]
    expected[2] = False  # the NaN row of the source annotation
    np.testing.assert_array_equal(p.valid, expected)
    np.testing.assert_allclose(p.src_kps[p.valid], xy[p.valid], atol=1e-4)  # 1-based kps − 1
    assert bench.pairs[3].category == "aeroplane"
    assert len(load_benchmark("pf-pascal", layouts["pascal"], split="trn").pairs) == 6


def test_spair_pairs_ids_and_box_threshold(layouts: dict[str, Path]) -> None:
    bench = load_benchmark("spair", layouts["spair"], limit=4)
    assert bench.pairs_total == 6 and len(bench.pairs) == 4
    p = bench.pairs[0]
    data = json.loads((layouts["spair"] / "PairAnnotation" / "test" / f"{p.pair_id}.json").read_text())
    assert p.pair_id == "000001-2010_0000-2010_0001:bird" and p.category == "bird"
    assert (p.src_image, p.trg_image) == ("JPEGImages/bird/2010_0000.jpg", "JPEGImages/bird/2010_0001.jpg")
    x1, y1, x2, y2 = data["trg_bndbox"]
    assert p.threshold == max(x2 - x1, y2 - y1)
    np.testing.assert_allclose(p.src_kps, data["src_kps"], atol=1e-5)  # as published, no shift
    assert p.kp_ids.tolist() == [int(i) for i in data["kps_ids"]] and p.valid.all()
    assert bench.pairs[3].category == "cat"


def test_synthetic_benchmark_equals_evaluate(synth: Path) -> None:
    bench = load_benchmark("synthetic", synth, limit=6)
    method = METHODS["nn"](MethodContext(backbone_kwargs={"input_size": 64}))
    res, _ = score_benchmark(method, bench, (0.05, 0.1), "nn", progress=False)
    ref = evaluate(method, sample_eval_pairs(synth, 6, seed=0), synth)
    for key in ("pck@0.05", "pck@0.1", "pck_per_pair@0.1"):
        assert res[key] == pytest.approx(ref[key])
    assert res["n_keypoints"] == ref["n_keypoints"] and res["pairs_scored"] == 6


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_layouts_are_clear_errors_naming_the_file(layouts: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="does not exist"):
        load_benchmark("pf-willow", tmp_path / "nowhere")
    with pytest.raises(BenchmarkError, match=r"neither test_pairs\.csv"):
        load_benchmark("pf-willow", tmp_path)
    with pytest.raises(BenchmarkError, match=r"val_pairs\.csv is missing"):
        load_benchmark("pf-pascal", layouts["pascal"], split="val")
    with pytest.raises(BenchmarkError, match="no split 'dev'"):
        load_benchmark("spair", layouts["spair"], split="dev")

    willow = copy_layout(layouts["willow-mat"], tmp_path / "w")
    (willow / "car(G)" / "img_0001.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(BenchmarkError, match=r"img_0001\.mat is not a readable \.mat"):
        load_benchmark("pf-willow", willow)
    scipy.io.savemat(willow / "car(G)" / "img_0001.mat", {"pts_coord": np.zeros((10, 3))})
    with pytest.raises(BenchmarkError, match=r"img_0001\.mat: pts_coord must be 2 × N"):
        load_benchmark("pf-willow", willow)
    scipy.io.savemat(willow / "car(G)" / "img_0001.mat", {"other": np.zeros((2, 10))})
    with pytest.raises(BenchmarkError, match="has no variable 'pts_coord'"):
        load_benchmark("pf-willow", willow)
    (willow / "car(G)" / "img_0001.mat").unlink()
    with pytest.raises(BenchmarkError, match=r"annotation .*img_0001\.mat is missing"):
        load_benchmark("pf-willow", willow)

    csv_root = copy_layout(layouts["willow-csv"], tmp_path / "c")
    frame = pd.read_csv(csv_root / "test_pairs.csv").astype(object)
    frame.iloc[3, 5] = "oops"
    frame.to_csv(csv_root / "test_pairs.csv", index=False)
    with pytest.raises(BenchmarkError, match=r"test_pairs\.csv line 5: non-numeric"):
        load_benchmark("pf-willow", csv_root)
    frame.iloc[:, :30].to_csv(csv_root / "test_pairs.csv", index=False)
    with pytest.raises(BenchmarkError, match="has 30 columns"):
        load_benchmark("pf-willow", csv_root)

    pascal = copy_layout(layouts["pascal"], tmp_path / "p")
    (pascal / "Annotations" / "bird" / "2009_20001.mat").unlink()
    with pytest.raises(BenchmarkError, match=r"bird/2009_20001\.mat is missing"):
        load_benchmark("pf-pascal", pascal)
    frame = pd.read_csv(pascal / "test_pairs.csv")
    frame.loc[0, "class"] = 21
    frame.to_csv(pascal / "test_pairs.csv", index=False)
    with pytest.raises(BenchmarkError, match=r"line 2: class must be a number 1\.\.20"):
        load_benchmark("pf-pascal", pascal)

    spair = copy_layout(layouts["spair"], tmp_path / "s")
    first = sorted((spair / "PairAnnotation" / "test").iterdir())[0]
    first.write_text("{ not json")
    with pytest.raises(BenchmarkError, match=f"{first.name} is not valid JSON"):
        load_benchmark("spair", spair)
    first.write_text(json.dumps({"src_kps": [[1, 2]], "trg_kps": [[1, 2]], "category": "bird"}))
    with pytest.raises(BenchmarkError, match="lacks trg_bndbox"):
        load_benchmark("spair", spair)
    first.unlink()
    with pytest.raises(BenchmarkError, match=f"{first.name} is missing"):
        load_benchmark("spair", spair)
    (spair / "Layout" / "large" / "test.txt").unlink()
    with pytest.raises(BenchmarkError, match=r"split file .*test\.txt is missing"):
        load_benchmark("spair", spair)


def test_cli_bad_input_exit_code_and_message(layouts: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--benchmark", "pf-willow", "--root", str(tmp_path / "missing")], "does not exist"),
        (["--benchmark", "pf-pascal", "--root", str(layouts["spair"])], "test_pairs.csv is missing"),
        (["--benchmark", "kitti", "--root", str(tmp_path)], "unknown benchmark 'kitti'"),
        (["--benchmark", "spair", "--root", str(layouts["spair"]), "--method", "sift-flow"],
         "unknown evaluation method"),
        (["--benchmark", "spair", "--root", str(layouts["spair"]), "--method", "generator"], "needs --generator"),
        (["--benchmark", "spair", "--root", str(layouts["spair"]), "--limit", "0"], "--limit must be at least 1"),
    ]
    for argv, message in cases:
        assert cli_main(["eval", *argv, *FAST]) == 2, argv
        assert message in capsys.readouterr().err


def test_unreadable_images_are_skipped_pairs_counted(layouts: dict[str, Path], tmp_path: Path) -> None:
    spair = copy_layout(layouts["spair"], tmp_path / "s")
    (spair / "JPEGImages" / "bird" / "2010_0001.jpg").unlink()  # in pairs 1 (target) and 2 (source)
    (spair / "JPEGImages" / "cat" / "2010_0002.jpg").write_bytes(b"\xff\xd8\xff truncated")  # pairs 4 and 5
    pred, summary = tmp_path / "p.parquet", tmp_path / "s.json"
    assert cli_main(["eval", "--benchmark", "spair", "--root", str(spair), "--predictions", str(pred),
                     "--json", str(summary), *FAST]) == 0
    res = json.loads(summary.read_text())["results"][0]
    assert (res["pairs"], res["pairs_scored"], res["pairs_skipped"]) == (6, 2, 4)
    assert {s["pair_id"][:6] for s in res["skipped"]} == {"000001", "000002", "000004", "000005"}
    rows = pd.read_parquet(pred)
    skipped = rows[rows["status"] == "skipped"]
    assert set(skipped["pair_id"].str[:6]) == {"000001", "000002", "000004", "000005"}
    assert skipped["pred_x"].isna().all() and res["n_keypoints"] == int((rows["status"] == "ok").sum())


# ---------------------------------------------------------------------------------------------- CLI end to end


@pytest.mark.parametrize("layout,benchmark", [("willow-mat", "pf-willow"), ("willow-csv", "pf-willow"),
                                              ("pascal", "pf-pascal"), ("spair", "spair"), ("synthetic", "synthetic")])
def test_cli_end_to_end(layout: str, benchmark: str, layouts: dict[str, Path], synth: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    root = synth if layout == "synthetic" else layouts[layout]
    pred = tmp_path / "out" / "pred.parquet"
    assert cli_main(["eval", "--benchmark", benchmark, "--root", str(root), "--method", "nn", "--limit", "3",
                     "--predictions", str(pred), *FAST]) == 0
    text = capsys.readouterr().out
    assert f"{benchmark} (" in text and "3 scored, 0 skipped" in text
    for a in ("PCK@0.05", "PCK@0.1", "PCK@0.15"):
        assert a in text
    assert "per keypoint" in text and "per pair" in text
    rows = pd.read_parquet(pred)
    assert list(rows.columns) == list(PREDICTION_COLUMNS)
    assert rows["pair_id"].nunique() == 3 and (rows["status"] == "ok").all() and (rows["method"] == "nn").all()
    for col in ("src_image", "trg_image"):
        assert all((root / name).is_file() for name in rows[col].unique())  # relative to the root
    assert rows[["pred_x", "pred_y", "gt_x", "gt_y", "threshold"]].notna().all().all()
    if benchmark == "pf-pascal":  # the target image's max side
        sizes = {n: max(Image.open(root / n).size) for n in rows["trg_image"].unique()}
        assert (rows["threshold"] == rows["trg_image"].map(sizes)).all()


def test_cli_two_methods_one_predictions_file(layouts: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    pred, summary = tmp_path / "p.parquet", tmp_path / "s.json"
    assert cli_main(["eval", "--benchmark", "pf-willow", "--root", str(layouts["willow-mat"]), "--method", "identity",
                     "nn-rhm", "--limit", "4", "--predictions", str(pred), "--json", str(summary), *FAST]) == 0
    rows = pd.read_parquet(pred)
    assert rows.groupby("method").size().to_dict() == {"identity": 40, "nn-rhm": 40}
    ident = rows[rows["method"] == "identity"]
    np.testing.assert_allclose(ident[["pred_x", "pred_y"]].to_numpy(), ident[["src_x", "src_y"]].to_numpy())
    results = json.loads(summary.read_text())["results"]
    assert [r["method"] for r in results] == ["identity", "nn-rhm"]
    for r in results:
        lo, hi = r["pck@0.1_ci95"]
        assert lo <= r["pck@0.1"] <= hi and r["backbone"] == "dense-sift"
    # the second method against the first, on the same pairs, with a paired interval
    [diff] = json.loads(summary.read_text())["differences"]
    assert diff["method"] == "nn-rhm" and diff["reference"] == "identity"
    d, lo, hi = diff["diff@0.1"]
    assert d == pytest.approx(results[1]["pck@0.1"] - results[0]["pck@0.1"]) and lo <= d <= hi
    assert "paired differences, per keypoint, vs identity" in capsys.readouterr().out
    assert cli_main(["eval", "--benchmark", "pf-willow", "--root", str(layouts["willow-mat"]), "--method", "identity",
                     "--reference", "mnn", "--limit", "1", *FAST]) == 2


def test_paired_difference_cancels_pair_difficulty() -> None:
    counts = np.array([10, 10, 10, 10, 10, 10])
    a = np.array([10, 0, 9, 1, 10, 0])  # pairs of very different difficulty ...
    b = a - 1  # ... and B one keypoint worse on every scored pair
    b[b < 0] = 0
    d, lo, hi = paired_difference(a, b, counts)
    assert d == pytest.approx(4 / 60) and lo <= d <= hi
    assert lo > 0  # consistent, so the paired interval excludes 0 where unpaired intervals would overlap
    assert bootstrap_interval(a, counts)[0] < bootstrap_interval(b, counts)[1]  # the unpaired intervals overlap
    assert np.isnan(paired_difference([0], [0], [0])[0])
    with pytest.raises(ValueError, match="differ"):
        paired_difference([1, 2], [1], [3, 3])


# ---------------------------------------------------------------------------------------------- PCK helper


def test_pck_from_distances_and_bootstrap() -> None:
    dists = [np.array([0.0, 5.0, 20.0]), np.array([1.0, np.nan]), np.array([])]
    res = pck_from_distances(dists, [100.0, 10.0, 50.0], alphas=(0.1,))
    assert res["pck@0.1"] == pytest.approx(3 / 5)  # 0, 5 of 100 (≤ 10); 1 of 10 (≤ 1); NaN is wrong
    assert res["pck_per_pair@0.1"] == pytest.approx((2 / 3 + 1 / 2) / 2)  # the empty pair is left out
    assert bootstrap_interval([3, 3], [3, 3]) == (1.0, 1.0)
    lo, hi = bootstrap_interval(np.r_[np.ones(50), np.zeros(50)], np.ones(100), seed=1)
    assert 0.38 < lo < 0.5 < hi < 0.62
    assert np.isnan(bootstrap_interval([], [])[0])


# ---------------------------------------------------------------------------------------------- nn-rhm


def test_rhm_flow_is_the_identity_on_an_identity_pair(synth: Path, gt: GroundTruth) -> None:
    img = np.asarray(image_of(synth, gt, "n90000003_0001"))
    grid, trg = hough_flow(create_backbone("dense-sift", input_size=64))(img, img)
    np.testing.assert_allclose(trg, index_to_pixels(np.arange(grid[0] * grid[1]), grid, img.shape[:2]))
    xy, _ = kps_of(gt, "n90000003_0001")
    pred = METHODS["nn-rhm-refine-disp"](MethodContext(backbone_kwargs={"input_size": 64}))(img, img, xy)
    cell = max(img.shape[:2]) / grid[0]  # ~37 px on the 8 × 8 grid
    assert np.abs(pred - xy).max() < cell / 4  # the right cell; the sub-cell soft-argmax moves a little


def test_rhm_not_worse_than_nn_on_synthetic_pairs(synth: Path) -> None:
    pairs = sample_eval_pairs(synth, 30, seed=0)
    ctx = MethodContext(backbone_kwargs={"input_size": 128})
    scores = {name: evaluate(METHODS[name](ctx), pairs, synth)["pck@0.1"] for name in ("nn", "nn-rhm", "nn-rhm-1to1")}
    assert scores["nn-rhm"] >= scores["nn"] - 0.05, scores
    assert scores["nn-rhm-1to1"] >= scores["nn"] - 0.08, scores


def test_cli_generator_checkpoint_sets_the_baselines_backbone(layouts: dict[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An (untrained) generator checkpoint in the train stage's format: `--method generator` runs through
    `load_generator`, and the baselines default to the generator's backbone and input size."""
    import torch

    from sc_imagenet.matching.backbones import create_backbone as make
    from sc_imagenet.matching.cascade import CascadeGenerator
    from sc_imagenet.matching.settings import GeneratorConfig

    cfg = GeneratorConfig(backbone="dense-sift", input_size=64, region_input_size=32)
    model = CascadeGenerator(make("dense-sift", input_size=64).out_dim, cfg)
    ckpt = tmp_path / "generator.pt"
    torch.save({"model": model.state_dict(), "settings": cfg.model_dump(mode="json")}, ckpt)
    summary = tmp_path / "s.json"
    assert cli_main(["eval", "--benchmark", "pf-willow", "--root", str(layouts["willow-mat"]), "--method", "nn",
                     "generator", "--generator", str(ckpt), "--limit", "2", "--device", "cpu",
                     "--json", str(summary)]) == 0
    results = json.loads(summary.read_text())["results"]
    assert [(r["method"], r["backbone"], r["input_size"], r["pairs_scored"]) for r in results] == [
        ("nn", "dense-sift", 64, 2), ("generator", "dense-sift", 64, 2)]
    ckpt.write_bytes(b"not a checkpoint")
    assert cli_main(["eval", "--benchmark", "pf-willow", "--root", str(layouts["willow-mat"]), "--method", "nn",
                     "--generator", str(ckpt), "--device", "cpu"]) == 2
    assert "cannot be read" in capsys.readouterr().err
