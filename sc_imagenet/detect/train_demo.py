"""Train the demo detector: a tiny YOLO segmentation model, from scratch, on synthetic scenes.

No COCO weights exist offline, so the demo profile uses weights the project trains itself:

    .venv/bin/python -m sc_imagenet.detect.train_demo --seed 0 --out models/demo-yolo-seg.pt

Deterministic for a seed on a given device type (CPU here; a GPU gives different but equally good
weights). The synthetic training images use seeds the evaluation never sees (`TRAIN_SEED_OFFSET`).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from pathlib import Path

import yaml

from sc_imagenet.detect.offline import import_ultralytics
from sc_imagenet.detect.yolo_dataset import export_yolo_seg, object_class_names
from sc_imagenet.synth import SynthConfig, generate_dataset

TRAIN_SEED_OFFSET = 1000  # synthetic seeds 1000+ train the detector; evaluation uses seeds < 1000
# A YOLO11-seg layout narrowed to 1/8 width: ~0.7 M parameters, ~1.5 MB of fp16 weights.
TINY_SCALE = [0.50, 0.125, 512]


def tiny_model_yaml(work: Path, n_classes: int) -> Path:
    """Write the model definition: ultralytics' own yolo11-seg layout with our width/depth scale."""
    import_ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load("yolo11n-seg.yaml")
    cfg.update({"nc": n_classes, "scales": {"t": TINY_SCALE}, "scale": "t"})
    cfg.pop("yaml_file", None)
    path = work / "yolo11t-seg.yaml"  # the 't' in the name selects the scale
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_demo_detector(work: Path, out: Path, seed: int = 0, images_per_category: int = 240, epochs: int = 60,
                        imgsz: int = 320, batch: int = 32, device: str = "cpu", workers: int = 2) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    data_root = work / "synth"
    synth_cfg = SynthConfig(seed=TRAIN_SEED_OFFSET + seed, images_per_category=images_per_category,
                            multi_instance_fraction=0.35, include_broken=False)
    generate_dataset(data_root, synth_cfg, progress=True)
    data_yaml = export_yolo_seg(data_root, work / "yolo", seed=seed)
    model_yaml = tiny_model_yaml(work, len(object_class_names()))
    from ultralytics import YOLO

    model = YOLO(str(model_yaml), task="segment")
    t0 = time.time()
    model.train(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, device=device, workers=workers,
                seed=seed, deterministic=True, pretrained=False, amp=False, plots=False, project=str(work),
                name="run", exist_ok=True, verbose=False, fliplr=0.0, mosaic=1.0, close_mosaic=10,
                patience=max(epochs, 100), cos_lr=True)
    best = work / "run" / "weights" / "best.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(best, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"trained in {time.time() - t0:.0f}s -> {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {digest})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("models/demo-yolo-seg.pt"))
    ap.add_argument("--work", type=Path, default=Path("builds/train-demo-detector"))
    ap.add_argument("--images-per-category", type=int, default=240)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    train_demo_detector(args.work, args.out, args.seed, args.images_per_category, args.epochs, args.imgsz,
                        args.batch, args.device, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
