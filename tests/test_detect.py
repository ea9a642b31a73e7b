"""Detection: the single-instance policy, the ultralytics backend with the shipped demo weights,
batches that survive bad files, and shard-level resume of the `detect` stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import jpeg_bytes

from sc_imagenet.build import plan_build, run_build_locally
from sc_imagenet.config import ConfigError, load_config
from sc_imagenet.detect.backends import create_detector
from sc_imagenet.detect.offline import WeightsNotFoundError, load_yolo
from sc_imagenet.detect.policy import decide
from sc_imagenet.detect.prefetch import iter_decoded_batches
from sc_imagenet.io.manifest import read_manifest, read_stage_record
from sc_imagenet.io.weights import WeightsError, resolve_weights
from sc_imagenet.stages.detect import DetectFigures, DetectStage
from sc_imagenet.stages.single_instance import decide_category
from sc_imagenet.synth import SynthConfig, generate_dataset, load_groundtruth

DEMO_WEIGHTS, _ = resolve_weights("detectors", "demo-yolo-seg", "detect.weights")


# --- policy -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("conf", "area", "expected"),
    [
        ([], [], ("no_detection", 0, False)),
        ([0.9], [0.3], ("below_threshold", 0, False)),  # a tie at the threshold is not "above"
        ([0.9000001], [0.3], ("kept", 1, True)),
        ([0.95, 0.93], [0.3, 0.2], ("multiple_confident", 2, False)),
        ([0.97, 0.4, 0.3, 0.2, 0.1], [0.3, 0.1, 0.1, 0.1, 0.1], ("kept", 1, True)),  # one confident + weak
        ([0.97], [0.001], ("too_small", 1, False)),
    ],
)
def test_policy_cases(conf: list[float], area: list[float], expected: tuple) -> None:
    d = decide(np.array(conf), np.array(area), threshold=0.9, min_box_area_frac=0.01)
    assert (d.reason, d.n_above, d.keep) == expected
    if conf:
        assert d.best == int(np.argmax(conf))


def test_policy_class_filter_ignores_other_classes() -> None:
    conf, area = np.array([0.99, 0.95]), np.array([0.3, 0.3])
    assert decide(conf, area, np.array([True, False])).reason == "kept"
    assert decide(conf, area, np.array([False, False])).reason == "no_detection"


def test_decide_category_passes_unreadable_through() -> None:
    index = [{"image_id": "a", "rel_path": "w/a", "width": 100, "height": 100, "status": "ok"},
             {"image_id": "b", "rel_path": "w/b", "width": 100, "height": 100, "status": "truncated"},
             {"image_id": "c", "rel_path": "w/c", "width": 100, "height": 100, "status": "ok"}]
    dets = [{"image_id": "a", "status": "detection", "conf": 0.95, "class_name": "x", "box": [0, 0, 50, 50],
             "mask_poly": [0, 0, 50, 0, 50, 50]},
            {"image_id": "c", "status": "decode_error", "conf": None, "class_name": None, "box": None,
             "mask_poly": None}]
    rows = {r["image_id"]: r for r in decide_category(index, dets, 0.9, None, 0.0)}
    assert rows["a"]["keep"] and rows["a"]["box"] == [0, 0, 50, 50] and rows["a"]["conf"] == 0.95
    assert (rows["b"]["reason"], rows["c"]["reason"]) == ("unreadable", "unreadable")


# --- weights and offline ----------------------------------------------------------------------------------

def test_bare_weight_names_are_refused_not_downloaded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="never downloaded"):
        load_yolo("yolo11n.pt")
    assert not (tmp_path / "yolo11n.pt").exists()


def test_weights_resolution_errors(monkeypatch) -> None:
    with pytest.raises(WeightsError, match=r"detect\.weights: .*not found.*download it yourself"):
        resolve_weights("detectors", "yolo11x-seg", "detect.weights")
    with pytest.raises(WeightsError, match="neither a registry entry"):
        resolve_weights("detectors", "nonsense", "detect.weights")
    from sc_imagenet.io import weights

    fake = {"detectors": {"demo-yolo-seg": {"file": str(DEMO_WEIGHTS), "sha256": "0" * 64}}}
    monkeypatch.setattr(weights, "load_registry", lambda: fake)
    with pytest.raises(WeightsError, match="registry expects"):
        resolve_weights("detectors", "demo-yolo-seg", "detect.weights")


def test_detect_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"detect\.device"):
        load_config("demo", {"detect": {"device": "gpu0"}})
    with pytest.raises(ConfigError, match=r"single_instance\.threshold"):
        load_config("demo", {"single_instance": {"threshold": 1.5}})


# --- real inference on synthetic images -------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth-detect")
    generate_dataset(root, SynthConfig(seed=11, images_per_category=5, include_broken=False), progress=False)
    return root


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_demo_detector_finds_the_synthetic_objects(synth: Path) -> None:
    gt = load_groundtruth(synth)
    singles = gt.images[(gt.images.kind == "object") & (gt.images.n_instances == 1)]
    det = create_detector("ultralytics", weights=DEMO_WEIGHTS, imgsz=320, device="cpu")
    assert det.has_masks and det.class_names == ["beetle", "fish", "bird", "mushroom", "teapot", "guitar"]
    from sc_imagenet.io.images import load_rgb

    images = [load_rgb(synth / p) for p in singles.rel_path]
    import torch

    threads = torch.get_num_threads()
    results = det.detect(images)
    assert torch.get_num_threads() == threads  # ultralytics drops it to 1; later stages would run slower
    names = {c.wnid: c.name for c in __import__("sc_imagenet.synth", fromlist=["x"]).DEMO_CATEGORIES}
    ious, right_class = [], []
    for row, img, dets in zip(singles.itertuples(), images, results, strict=True):
        assert len(dets) >= 1 and np.all(np.diff(dets.conf) <= 0)  # sorted by confidence
        h, w = img.shape[:2]
        assert np.all(dets.polygons[0][:, 0] <= w) and np.all(dets.polygons[0][:, 1] <= h)
        gt_box = np.array(gt.instance_rows(row.image_id).iloc[0].bbox, np.float32)
        ious.append(_iou(dets.boxes[0], gt_box))
        right_class.append(det.class_names[dets.cls[0]] == names[row.wnid])
    assert np.mean(ious) > 0.85 and np.mean(right_class) > 0.9


def test_detections_do_not_depend_on_what_ran_before(synth: Path) -> None:
    """A batch gives bit-identical detections as the first batch of a detector and after another batch
    (a resumed build starts at another category than an uninterrupted one)."""
    from sc_imagenet.io.images import load_rgb

    paths = sorted((synth / "n90000002").glob("*.JPEG"))[:6]
    images = [load_rgb(p) for p in paths]
    first = create_detector("ultralytics", weights=DEMO_WEIGHTS, imgsz=320, device="cpu").detect(images[3:])
    det = create_detector("ultralytics", weights=DEMO_WEIGHTS, imgsz=320, device="cpu")
    det.detect(images[:3])
    later = det.detect(images[3:])
    for a, b in zip(first, later, strict=True):
        assert np.array_equal(a.conf, b.conf) and np.array_equal(a.boxes, b.boxes)


def test_bad_file_mid_batch_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    items = []
    for i in range(5):
        data = jpeg_bytes(64, 48, seed=i)
        (tmp_path / "w" / f"{i}.JPEG").write_bytes(data[: len(data) // 3] if i == 2 else data)
        items.append((str(i), f"w/{i}.JPEG"))
    batches = list(iter_decoded_batches(tmp_path, items, batch_size=5, workers=2))
    assert len(batches) == 1 and [d.image_id for d in batches[0]] == ["0", "1", "2", "3", "4"]
    assert [d.error is None for d in batches[0]] == [True, True, False, True, True]
    assert "truncated" in batches[0][2].error


# --- the stage: decode failures as rows, resume at shard level ---------------------------------------------

@pytest.fixture
def demo_project(tmp_path: Path, synth: Path) -> dict:
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({
        "data": {"source": "folder", "root": str(synth)}, "categories": {"list": "demo"},
        "index": {"workers": 1}, "detect": {"weights": "demo-yolo-seg", "imgsz": 320, "batch": 4},
        "single_instance": {"threshold": 0.5},
    }))
    return {"profile": str(profile), "out": tmp_path / "out"}


def _build(project: dict, **kw):
    kw.setdefault("stages", "categories,index,detect,single_instance")
    plan = plan_build(load_config(project["profile"]), "p", project["out"], **kw)
    return plan, run_build_locally(plan, log=lambda m: None, progress=False)


def test_stage_survives_a_file_broken_after_indexing(demo_project: dict, synth: Path, tmp_path: Path) -> None:
    plan, _ = _build(demo_project, stages="categories,index")
    victim = synth / "n90000001" / "n90000001_0002.JPEG"
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[: len(original) // 3])  # the index said ok; now it is truncated
        _build(demo_project)
    finally:
        victim.write_bytes(original)
    det = read_manifest(plan.stage_dir("detect")).to_pandas()
    bad = det[det.image_id == "n90000001_0002"]
    assert list(bad.status) == ["decode_error"] and "truncated" in bad.error.iloc[0]
    others = det[(det.wnid == "n90000001") & (det.image_id != "n90000001_0002")]
    assert others.image_id.nunique() == 4  # the rest of its batch was detected
    single = read_manifest(plan.stage_dir("single_instance")).to_pandas().set_index("image_id")
    assert single.loc["n90000001_0002", "reason"] == "unreadable"
    assert single.keep.sum() >= 20


def test_interrupted_detect_resumes_at_the_unfinished_shard(demo_project: dict, monkeypatch) -> None:
    real = DetectStage.make_detector

    class Crash(RuntimeError):
        pass

    def crashing(self, cfg):
        detector = real(self, cfg)
        calls = {"n": 0}
        detect = detector.detect

        def flaky(images):
            calls["n"] += 1
            if calls["n"] > 4:  # batch 4 of 5 images per category: dies in the third category
                raise Crash("killed")
            return detect(images)

        detector.detect = flaky
        return detector

    monkeypatch.setattr(DetectStage, "make_detector", crashing)
    with pytest.raises(Crash):
        _build(demo_project)
    plan = plan_build(load_config(demo_project["profile"]), "p", demo_project["out"], stages="detect")
    finished = {p: p.stat().st_mtime_ns for p in plan.stage_dir("detect").rglob("part-*.parquet")}
    assert len(finished) == 2 and read_stage_record(plan.stage_dir("detect")) is None
    monkeypatch.setattr(DetectStage, "make_detector", real)
    _, results = _build(demo_project)
    record = {r.stage: r.record for r in results}["detect"]
    assert DetectFigures.of(record).shards_skipped == 2 and record.shards == 6
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_gpu_half_precision_matches_cpu(synth: Path) -> None:
    from sc_imagenet.io.images import load_rgb

    gt = load_groundtruth(synth)
    images = [load_rgb(synth / p) for p in gt.images.rel_path[:16]]
    cpu = create_detector("ultralytics", weights=DEMO_WEIGHTS, imgsz=320, device="cpu").detect(images)
    gpu_det = create_detector("ultralytics", weights=DEMO_WEIGHTS, imgsz=320, device="auto")
    assert gpu_det.device == "cuda:0" and gpu_det.half
    gpu = gpu_det.detect(images)
    for a, b in zip(cpu, gpu, strict=True):
        if len(a) and a.conf[0] > 0.5:
            assert len(b) and _iou(a.boxes[0], b.boxes[0]) > 0.9 and abs(a.conf[0] - b.conf[0]) < 0.05


def test_single_instance_precision_recall_on_unseen_seed(tmp_path: Path) -> None:
    """The issue's bar: precision ≥ 0.95, recall ≥ 0.9 at the demo profile's threshold (seed < 1000
    was never used to train the demo detector)."""
    from sc_imagenet.detect.evaluate import evaluate_single_instance

    generate_dataset(tmp_path, SynthConfig(seed=8, images_per_category=20), progress=False)
    threshold = load_config("demo").single_instance.threshold
    [result] = evaluate_single_instance(DEMO_WEIGHTS, tmp_path, [threshold])
    assert result["images"] >= 100 and result["true_single"] >= 70
    assert result["precision"] >= 0.95 and result["recall"] >= 0.9, result
