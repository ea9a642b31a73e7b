"""Single-instance precision/recall of a detector on synthetic images with known instance counts.

    .venv/bin/python -m sc_imagenet.detect.evaluate --weights models/demo-yolo-seg.pt --seed 7

Generates a fresh synthetic dataset (seed < 1000: never seen by the demo detector's training), runs
the detector on every readable object image and compares the policy's keep decision with
"the ground truth has exactly one instance".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sc_imagenet.detect.offline import load_yolo
from sc_imagenet.detect.policy import decide
from sc_imagenet.synth import SynthConfig, generate_dataset, load_groundtruth

UNREADABLE = {"truncated", "zero_byte"}


def precision_recall(keep: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(keep & truth))
    fp = int(np.sum(keep & ~truth))
    fn = int(np.sum(~keep & truth))
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "fn": fn,
            "images": int(keep.size), "true_single": int(truth.sum())}


def evaluate_single_instance(weights: Path, root: Path, threshold: float = 0.9, imgsz: int = 320,
                             device: str = "cpu", batch: int = 32) -> dict[str, Any]:
    gt = load_groundtruth(root)
    imgs = gt.images[(gt.images.kind == "object") & ~gt.images.broken.isin(list(UNREADABLE))]
    model = load_yolo(weights)
    keep, truth, reasons = [], [], {}
    paths = [str(root / p) for p in imgs.rel_path]
    for start in range(0, len(paths), batch):
        results = model.predict(paths[start:start + batch], imgsz=imgsz, conf=0.05, device=device, verbose=False)
        for r in results:
            h, w = r.orig_shape
            xyxy = r.boxes.xyxy.cpu().numpy()
            area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]) / float(h * w)
            d = decide(r.boxes.conf.cpu().numpy(), area, threshold=threshold)
            keep.append(d.keep)
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
    truth = (imgs.n_instances.to_numpy() == 1)
    return {**precision_recall(np.array(keep), truth), "threshold": threshold, "reasons": reasons}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=Path("models/demo-yolo-seg.pt"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--images-per-category", type=int, default=60)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.seed >= 1000:
        ap.error("seeds >= 1000 are the demo detector's training seeds")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        generate_dataset(root, SynthConfig(seed=args.seed, images_per_category=args.images_per_category),
                         progress=False)
        result = evaluate_single_instance(args.weights, root, args.threshold, args.imgsz, args.device)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
