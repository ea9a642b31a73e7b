"""Single-instance precision/recall of a detector on synthetic images with known instance counts.

    .venv/bin/python -m sc_imagenet.detect.evaluate            # demo weights, demo profile's threshold, seed 7

Generates a fresh synthetic dataset (seed < 1000: never seen by the demo detector's training), runs
the detector exactly as the `detect` stage does on every readable object image and compares the
policy's keep decision with "the ground truth has exactly one instance". Prints precision/recall
at each requested threshold (default: the demo profile's and the paper's 0.9).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sc_imagenet.config import load_config
from sc_imagenet.detect.backends import create_detector
from sc_imagenet.detect.policy import decide
from sc_imagenet.detect.prefetch import iter_decoded_batches
from sc_imagenet.io.weights import resolve_weights
from sc_imagenet.synth import UNREADABLE_BROKEN, SynthConfig, generate_dataset, load_groundtruth


def precision_recall(keep: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(keep & truth))
    fp = int(np.sum(keep & ~truth))
    fn = int(np.sum(~keep & truth))
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "fn": fn,
            "images": int(keep.size), "true_single": int(truth.sum())}


def evaluate_single_instance(weights: Path, root: Path, thresholds: list[float], imgsz: int = 320,
                             device: str = "cpu", batch: int = 16) -> list[dict[str, Any]]:
    gt = load_groundtruth(root)
    imgs = gt.images[(gt.images.kind == "object") & ~gt.images.broken.isin(sorted(UNREADABLE_BROKEN))]
    detector = create_detector("ultralytics", weights=weights, imgsz=imgsz, device=device)
    items = list(zip(imgs.image_id, imgs.rel_path, strict=True))
    per_image = []  # (conf, box area fraction) per image, in order
    for batch_imgs in iter_decoded_batches(root, items, batch):
        for d, dets in zip(batch_imgs, detector.detect([b.rgb for b in batch_imgs]), strict=True):
            h, w = d.rgb.shape[:2]
            b = dets.boxes
            per_image.append((dets.conf, (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / float(h * w)))
    truth = imgs.n_instances.to_numpy() == 1
    out = []
    for t in thresholds:
        decisions = [decide(conf, area, threshold=t) for conf, area in per_image]
        reasons: dict[str, int] = {}
        for dec in decisions:
            reasons[dec.reason] = reasons.get(dec.reason, 0) + 1
        keep = np.array([dec.keep for dec in decisions])
        out.append({"threshold": t, **precision_recall(keep, truth), "reasons": reasons})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="demo-yolo-seg", help="registry name or .pt path")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--images-per-category", type=int, default=60)
    ap.add_argument("--threshold", type=float, nargs="+",
                    default=[load_config("demo").single_instance.threshold, 0.9])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.seed >= 1000:
        ap.error("seeds >= 1000 are the demo detector's training seeds")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        generate_dataset(root, SynthConfig(seed=args.seed, images_per_category=args.images_per_category),
                         progress=False)
        weights, _ = resolve_weights("detectors", args.weights, "--weights")
        results = evaluate_single_instance(weights, root, args.threshold, args.imgsz, args.device)
    print(json.dumps(results, indent=2))
    for r in results:
        print(f"threshold {r['threshold']:.2f}: precision {r['precision']:.3f}  recall {r['recall']:.3f}  "
              f"({r['images']} object images, {r['true_single']} truly single-instance)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
