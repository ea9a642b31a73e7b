"""Tests of the synthetic demo dataset: warps, RLE, determinism, layout, ground-truth consistency."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydantic
import pytest
from PIL import Image

from sc_imagenet.paths import CATEGORY_LISTS_DIR
from sc_imagenet.synth import (
    DEMO_CATEGORIES,
    SynthConfig,
    decode_rle,
    encode_rle,
    generate_dataset,
    is_complete,
    keypoints_for,
    load_groundtruth,
    true_correspondence,
)
from sc_imagenet.synth.template_defs import TEMPLATE_SPECS
from sc_imagenet.synth.templates import get_template
from sc_imagenet.synth.warp import MAX_LIPSCHITZ, Warp, sample_deformation, sample_shape, translation_range

SMALL = SynthConfig(seed=3, images_per_category=6, min_size=96, max_size=128)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "data"
    summary = generate_dataset(root, SMALL, progress=False)
    return root, summary


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.JPEG"))}


def _single_instance_ids(root: Path, wnid: str) -> list[str]:
    img = load_groundtruth(root).images
    sel = (img.wnid == wnid) & (img.n_instances == 1) & (img.broken == "")
    return img.loc[sel, "image_id"].tolist()


def _random_warps(n: int, seed: int = 0) -> list[Warp]:
    rng = np.random.default_rng(seed)
    warps = []
    for i in range(n):
        tmpl = get_template(sorted(TEMPLATE_SPECS)[i % len(TEMPLATE_SPECS)])
        w, h = (int(v) for v in rng.integers(96, 400, 2))
        shape = sample_shape(rng, tmpl.boundary_uv, tmpl.mask_extent(), w, h, rng.uniform(0.3, 0.75))
        lo, hi = translation_range(shape, w, h)
        warps.append(shape.with_translation(rng.uniform(lo, hi)))
    return warps


# --- warp -------------------------------------------------------------------------------------------


def test_warp_forward_inverse_roundtrip() -> None:
    rng = np.random.default_rng(1)
    for warp in _random_warps(30):
        u = rng.uniform(-1, 1, (500, 2))
        x = warp.forward(u)
        # inverse∘forward, measured in image pixels
        assert np.abs((warp.inverse(x) - u) @ warp.A.T).max() < 1e-3
        # forward∘inverse on arbitrary image points
        pts = rng.uniform(-20, 400, (500, 2))
        assert np.abs(warp.forward(warp.inverse(pts)) - pts).max() < 1e-3
        # the float32 path used for rendering agrees to well below a pixel
        ux, uy = warp.inverse_xy(
            x[:, 0].astype(np.float32), x[:, 1].astype(np.float32), dtype=np.float32, tol=1e-5, max_iter=60
        )
        assert np.abs(warp.forward(np.stack([ux, uy], 1)) - x).max() < 0.05


def test_lipschitz_bound_respected() -> None:
    rng = np.random.default_rng(2)
    for _ in range(500):
        amp, freq, phase = sample_deformation(rng)
        warp = Warp.from_params(np.eye(2), np.zeros(2), amp, freq, phase)
        assert warp.lipschitz_bound <= MAX_LIPSCHITZ
        # numerical check of the bound: finite differences never stretch more than the bound says
        u = rng.uniform(-1.5, 1.5, (200, 2))
        du = rng.normal(size=(200, 2)) * 1e-4
        stretch = np.linalg.norm(warp.displacement(u + du) - warp.displacement(u), axis=1)
        ratio = stretch / np.linalg.norm(du, axis=1)
        assert ratio.max() <= warp.lipschitz_bound + 1e-6


def test_stored_warps_respect_bound(dataset: tuple[Path, dict]) -> None:
    gt = load_groundtruth(dataset[0])
    for row in gt.instances.itertuples():
        assert gt.warp(row.image_id, row.instance).lipschitz_bound <= MAX_LIPSCHITZ
        assert np.linalg.det(gt.warp(row.image_id, row.instance).A) > 0  # no mirror flips


# --- RLE --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (13, 17), (64, 48)])
def test_rle_roundtrip(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    for density in (0.0, 0.05, 0.5, 0.95, 1.0):
        mask = rng.random(shape) < density
        rle = encode_rle(mask)
        assert rle.dtype == np.int32 and int(rle.sum()) == mask.size
        assert np.array_equal(decode_rle(rle, *shape), mask)


def test_rle_edge_cases() -> None:
    assert encode_rle(np.zeros((3, 4), bool)).tolist() == [12]
    assert encode_rle(np.ones((3, 4), bool)).tolist() == [0, 12]
    assert encode_rle(np.array([[0, 1, 1, 0, 0, 1]], bool)).tolist() == [1, 2, 2, 1]
    assert not decode_rle([12], 3, 4).any() and decode_rle([0, 12], 3, 4).all()
    with pytest.raises(ValueError):
        decode_rle([5, 5], 3, 4)


# --- config, categories, templates ------------------------------------------------------------------


def test_config_validation() -> None:
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(min_size=300, max_size=200)
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(colour="red")  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(n_object_categories=len(TEMPLATE_SPECS) + 1)
    assert [c.kind for c in SynthConfig().categories()].count("object") == 6


def test_demo_category_list_matches() -> None:
    with open(CATEGORY_LISTS_DIR / "demo.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["wnid", "lemma", "keep", "reason", "note"]
        rows = list(reader)
    assert [r["wnid"] for r in rows] == [c.wnid for c in DEMO_CATEGORIES]
    assert [r["lemma"] for r in rows] == [c.name for c in DEMO_CATEGORIES]
    for row, cat in zip(rows, DEMO_CATEGORIES, strict=True):
        if cat.kind == "object":
            assert (row["keep"], row["reason"]) == ("1", "")
        else:
            assert (row["keep"], row["reason"]) == ("0", cat.kind) and row["note"]


def test_templates_match_object_categories() -> None:
    objects = [c for c in DEMO_CATEGORIES if c.kind == "object"]
    assert [c.wnid for c in objects] == list(TEMPLATE_SPECS)
    assert [c.name for c in objects] == [s.name for s in TEMPLATE_SPECS.values()]
    assert [c.kind for c in DEMO_CATEGORIES[len(objects) :]] == ["scene", "texture"]
    assert len(objects) >= 6


@pytest.mark.parametrize("wnid", sorted(TEMPLATE_SPECS))
def test_template_keypoints_inside_parts(wnid: str) -> None:
    tmpl = get_template(wnid)
    assert 8 <= len(tmpl.keypoint_names) <= 15 and len(set(tmpl.keypoint_names)) == len(tmpl.keypoint_names)
    # a margin of 4 raster pixels (~0.016 template units) keeps keypoints visible after warping
    inner = cv2.erode((tmpl.labels > 0).astype(np.uint8), np.ones((9, 9), np.uint8))
    cols = np.floor((tmpl.keypoints_uv + 1) * tmpl.size / 2).astype(int)
    assert inner[cols[:, 1], cols[:, 0]].all()
    assert tmpl.labels.max() == len(tmpl.part_names)


# --- generation, layout, broken files ---------------------------------------------------------------


def test_layout_and_counts(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    gt = load_groundtruth(root)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == sorted([c.wnid for c in DEMO_CATEGORIES] + ["_groundtruth"])
    assert summary["images"] == len(gt.images) == 8 * 6 + 5
    for cat in DEMO_CATEGORIES:
        files = sorted(p.name for p in (root / cat.wnid).iterdir())
        rows = gt.images[gt.images.wnid == cat.wnid]
        assert files == sorted(f"{iid}.JPEG" for iid in rows.image_id)
        assert all(f.startswith(f"{cat.wnid}_") for f in files)
        assert (rows.kind == cat.kind).all()
        assert len(rows[rows.broken == ""]) == SMALL.images_per_category
        assert summary["categories"][cat.wnid]["images"] == len(rows)
        if cat.kind != "object":
            assert (rows.n_instances == 0).all()
        else:
            assert rows.n_instances.isin([1, 2]).all()
    assert gt.images.width.between(SMALL.min_size, SMALL.max_size).all()
    assert gt.images.height.between(SMALL.min_size, SMALL.max_size).all()
    assert (gt.images.rel_path == gt.images.wnid + "/" + gt.images.image_id + ".JPEG").all()
    counts = gt.instances.groupby("image_id").size()
    n_inst = gt.images.set_index("image_id").n_instances
    assert counts.reindex(n_inst.index, fill_value=0).equals(n_inst.astype(counts.dtype))


def test_multi_instance_fraction(tmp_path: Path) -> None:
    cfg = SynthConfig(
        images_per_category=50,
        min_size=64,
        max_size=80,
        multi_instance_fraction=0.3,
        n_object_categories=2,
        include_non_object=False,
        include_broken=False,
    )
    generate_dataset(tmp_path, cfg, progress=False)
    img = load_groundtruth(tmp_path).images
    for _, rows in img.groupby("wnid"):
        assert (rows.n_instances == 2).sum() == 15


def test_broken_files(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    gt = load_groundtruth(root)
    broken = gt.images[gt.images.broken != ""].set_index("broken")
    assert sorted(broken.index) == sorted(["truncated", "zero_byte", "cmyk", "png_named_jpeg", "grayscale"])
    assert set(summary["broken"]) == set(broken.index)
    path = {kind: root / rel for kind, rel in broken.rel_path.items()}
    assert path["zero_byte"].stat().st_size == 0
    with pytest.raises(OSError), Image.open(path["truncated"]) as im:
        im.load()
    expected = {"cmyk": ("JPEG", "CMYK"), "png_named_jpeg": ("PNG", "RGB"), "grayscale": ("JPEG", "L")}
    for kind, (fmt, mode) in expected.items():
        with Image.open(path[kind]) as im:
            im.load()
            assert (im.format, im.mode) == (fmt, mode)
            assert im.size == (broken.width[kind], broken.height[kind])
    # every broken file still has ground truth
    assert (broken.n_instances == 1).all()
    assert set(broken.image_id) <= set(gt.instances.image_id)


def test_deterministic(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    again = tmp_path / "again"
    generate_dataset(again, SMALL, progress=False)
    assert _files(again) == _files(root)
    for name in ("images", "instances", "templates"):
        a = pd.read_parquet(root / "_groundtruth" / f"{name}.parquet")
        b = pd.read_parquet(again / "_groundtruth" / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, b)
    meta_a = json.loads((root / "_groundtruth" / "meta.json").read_text())
    assert meta_a == json.loads((again / "_groundtruth" / "meta.json").read_text())
    other = tmp_path / "other"
    generate_dataset(other, SMALL.model_copy(update={"seed": 4}), progress=False)
    a, b = _files(root), _files(other)
    assert sum(a[k] != b.get(k) for k in a) > 0.9 * len(a)


def test_complete_marker_and_config_mismatch(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    meta = json.loads((root / "_groundtruth" / "meta.json").read_text())
    assert list(meta)[-1] == "complete" and meta["complete"] is True
    assert is_complete(root) and is_complete(root, SMALL)
    other = SMALL.model_copy(update={"seed": 99})
    assert not is_complete(root, other)
    with pytest.raises(ValueError, match="different config"):
        generate_dataset(root, other, progress=False)
    assert generate_dataset(root, SMALL, progress=False)["reused"] is True
    assert not is_complete(tmp_path / "missing")
    # an interrupted run (marker says incomplete) is cleaned up and regenerated
    cfg = SynthConfig(
        images_per_category=2,
        min_size=64,
        max_size=64,
        n_object_categories=1,
        include_non_object=False,
        include_broken=False,
    )
    part = tmp_path / "partial"
    (part / "_groundtruth").mkdir(parents=True)
    (part / "_groundtruth" / "meta.json").write_text(json.dumps({"complete": False}))
    (part / "n90000001").mkdir()
    (part / "n90000001" / "stale.JPEG").write_bytes(b"x")
    assert not is_complete(part)
    generate_dataset(part, cfg, progress=False)
    assert is_complete(part, cfg)
    assert not (part / "n90000001" / "stale.JPEG").exists()


# --- ground-truth consistency -----------------------------------------------------------------------


def test_masks_match_bbox_and_area(dataset: tuple[Path, dict]) -> None:
    gt = load_groundtruth(dataset[0])
    assert load_groundtruth(dataset[0]) is gt  # cached per root
    for iid, rows in gt.instances.groupby("image_id"):
        img = gt.image(iid)
        h, w = int(img["height"]), int(img["width"])
        union = np.zeros((h, w), int)
        for row in rows.itertuples():
            mask = decode_rle(row.mask_rle, h, w)
            union += mask
            ys, xs = np.nonzero(mask)
            assert row.area == mask.sum() > 0
            assert list(row.bbox) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert union.max() <= 1  # visible masks are disjoint
        assert rows.sort_values("instance").area.is_monotonic_decreasing  # instance 0 = largest
        assert sorted(rows.depth) == list(range(len(rows)))


def test_object_visible_in_image(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    gt = load_groundtruth(root)
    for row in gt.images[(gt.images.kind == "object") & (gt.images.broken == "")].itertuples():
        img = np.asarray(Image.open(root / row.rel_path).convert("RGB"), np.float32)
        mask = decode_rle(gt.instance_rows(row.image_id).mask_rle.iat[0], row.height, row.width)
        # compare the object's core with a ring of background just outside it
        core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ring = (cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0) & ~mask
        ring &= gt.owner_map(row.image_id) < 0
        mean_diff = np.abs(img[core].mean(0) - img[ring].mean(0)).sum()
        std_diff = np.abs(img[core].std(0) - img[ring].std(0)).sum()
        assert mean_diff + std_diff > 10, row.image_id


def test_correspondence_roundtrip_and_identity(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    rng = np.random.default_rng(5)
    checked = 0
    for cat in DEMO_CATEGORIES[:6]:
        a, b = _single_instance_ids(root, cat.wnid)[:2]
        gt = load_groundtruth(root)
        ys, xs = np.nonzero(gt.owner_map(a) == 0)
        pts = np.stack([xs, ys], 1) + rng.uniform(-0.45, 0.45, (len(xs), 2))
        ab, ok_ab = true_correspondence(root, a, b, pts)
        assert ab.dtype == np.float32 and ok_ab.dtype == bool and ab.shape == pts.shape
        assert ok_ab.mean() > 0.2  # same category, similar shapes: a good share maps onto the other object
        ba, ok_ba = true_correspondence(root, b, a, ab[ok_ab])
        assert ok_ba.all()
        assert np.abs(ba - pts[ok_ab]).max() < 0.05
        aa, ok_aa = true_correspondence(root, a, a, pts)
        assert np.abs(aa[ok_aa] - pts[ok_aa]).max() < 1e-3
        assert ok_aa.mean() > 0.95  # only sub-pixel offsets that leave the template can be invalid
        checked += 1
    assert checked == 6


def test_background_and_cross_category_invalid(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    gt = load_groundtruth(root)
    a = _single_instance_ids(root, "n90000001")[0]
    b = _single_instance_ids(root, "n90000001")[1]
    ys, xs = np.nonzero(gt.owner_map(a) < 0)
    out, ok = true_correspondence(root, a, b, np.stack([xs, ys], 1))
    assert not ok.any() and (out == -1).all()
    ys, xs = np.nonzero(gt.owner_map(a) == 0)
    fg = np.stack([xs, ys], 1).astype(np.float32)
    for other in (_single_instance_ids(root, "n90000002")[0], "n90000007_0000", "n90000008_0001"):
        out, ok = true_correspondence(root, a, other, fg)
        assert not ok.any() and np.isfinite(out).all()
    # off-image and non-finite inputs are invalid but never NaN in the output
    odd = np.array([[-5.0, 3.0], [1e6, 1e6], [np.nan, 2.0], [np.inf, 1.0]])
    out, ok = true_correspondence(root, a, b, odd)
    assert not ok.any() and np.isfinite(out).all()
    out, ok = true_correspondence(root, a, b, np.zeros((0, 2)))
    assert out.shape == (0, 2) and ok.shape == (0,)


def test_keypoints_transfer(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    pairs = 0
    for cat in DEMO_CATEGORIES[:6]:
        ids = _single_instance_ids(root, cat.wnid)
        for a, b in itertools.pairwise(ids):
            ka, kb = keypoints_for(root, a), keypoints_for(root, b)
            assert ka.names == kb.names and len(ka.names) == ka.xy.shape[1]
            both = ka.visible[0] & kb.visible[0]
            out, ok = true_correspondence(root, a, b, ka.xy[0][both])
            assert ok.all()
            assert np.abs(out - kb.xy[0][both]).max() < 0.5
            pairs += 1
    assert pairs >= 6
    kp = keypoints_for(root, "n90000007_0000")
    assert kp.xy.shape[0] == 0 and kp.visible.shape[0] == 0


def test_multi_instance_targets_primary(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    gt = load_groundtruth(root)
    multi = gt.images[(gt.images.n_instances == 2) & (gt.images.broken == "")]
    assert len(multi)
    for row in multi.itertuples():
        src = _single_instance_ids(root, row.wnid)[0]
        ys, xs = np.nonzero(gt.owner_map(src) == 0)
        out, ok = true_correspondence(root, src, row.image_id, np.stack([xs, ys], 1))
        px = np.floor(out[ok] + 0.5).astype(int)
        assert (gt.owner_map(row.image_id)[px[:, 1], px[:, 0]] == 0).all()
        # a point on the secondary instance maps to the primary instance of the same image
        ys, xs = np.nonzero(gt.owner_map(row.image_id) == 1)
        out, ok = true_correspondence(root, row.image_id, row.image_id, np.stack([xs, ys], 1))
        px = np.floor(out[ok] + 0.5).astype(int)
        assert (gt.owner_map(row.image_id)[px[:, 1], px[:, 0]] == 0).all()
