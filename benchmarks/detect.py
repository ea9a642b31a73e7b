"""Detection throughput: the `detect` stage's batched, prefetched path vs. calling the model one
image at a time on the same images, side by side in one run, plus peak memory.

    .venv/bin/python benchmarks/detect.py                          # demo weights, CPU, 240 synthetic images
    python benchmarks/detect.py --device cuda --batch 1 32 64      # on a GPU (fp16 by default there)
    python benchmarks/detect.py --random-arch yolo11x-seg.yaml --imgsz 640 --device cuda --batch 32 64

`--random-arch` builds an ultralytics architecture with random weights (no download) to time a
COCO-sized model; its detections are meaningless, only the speed is. Memory is sampled after each
quarter of the images so growth with the number of images would show.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import psutil

from sc_imagenet.detect.backends import create_detector
from sc_imagenet.detect.offline import import_ultralytics, load_yolo
from sc_imagenet.detect.prefetch import iter_decoded_batches
from sc_imagenet.io.weights import resolve_weights
from sc_imagenet.synth import SynthConfig, generate_dataset, load_groundtruth


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def one_at_a_time(weights: Path, root: Path, items: list[tuple[str, str]], imgsz: int, device: str,
                  half: bool) -> float:
    model = load_yolo(weights)
    kw = {"imgsz": imgsz, "conf": 0.05, "device": device, "verbose": False, "quantize": 16 if half else 32}
    model.predict(str(root / items[0][1]), **kw)  # warm-up
    t0 = time.perf_counter()
    for _, rel in items:
        model.predict(str(root / rel), **kw)
    return len(items) / (time.perf_counter() - t0)


def batched(weights: Path, root: Path, items: list[tuple[str, str]], imgsz: int, device: str, half: bool,
            batch: int, workers: int) -> tuple[float, list[float]]:
    det = create_detector("ultralytics", weights=weights, imgsz=imgsz, device=device, half=half)
    from sc_imagenet.io.images import load_rgb

    det.detect([load_rgb(root / items[0][1])] * min(batch, 4))  # warm-up
    marks, done, mem = {len(items) * k // 4 for k in (1, 2, 3, 4)}, 0, []
    t0 = time.perf_counter()
    for decoded in iter_decoded_batches(root, items, batch, workers, prefetch=2):
        det.detect([d.rgb for d in decoded if d.rgb is not None])
        before, done = done, done + len(decoded)
        if any(before < m <= done for m in marks):
            mem.append(rss_mib())
    return len(items) / (time.perf_counter() - t0), mem


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="demo-yolo-seg", help="registry name or .pt path")
    ap.add_argument("--random-arch", help="ultralytics model yaml (e.g. yolo11x-seg.yaml) with random weights")
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, nargs="+", default=[16])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--workers", type=int, default=4, help="decode threads")
    args = ap.parse_args()
    half = args.device.startswith("cuda") if args.half == "auto" else args.half == "on"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.random_arch:
            import_ultralytics()
            from ultralytics import YOLO

            weights = tmp / "random.pt"
            YOLO(args.random_arch).save(str(weights))
        else:
            weights, _ = resolve_weights("detectors", args.weights, "--weights")
        per_cat = max(2, args.images // 8 + 1)
        root = tmp / "synth"
        generate_dataset(root, SynthConfig(seed=21, images_per_category=per_cat, include_broken=False), progress=False)
        images = load_groundtruth(root).images
        items = list(zip(images.image_id, images.rel_path, strict=True))[: args.images]
        base_mem = rss_mib()
        single = one_at_a_time(weights, root, items, args.imgsz, args.device, half)
        print(f"{len(items)} synthetic images ({images.width.mean():.0f}x{images.height.mean():.0f} px mean), "
              f"imgsz {args.imgsz}, device {args.device}, fp16 {half}, weights {Path(weights).name}")
        print(f"{'one image at a time (model.predict per path)':<46} {single:8.1f} img/s   1.00x")
        for b in args.batch:
            rate, mem = batched(weights, root, items, args.imgsz, args.device, half, b, args.workers)
            quarters = " ".join(f"{m:.0f}" for m in mem)
            print(f"{f'stage path, batch {b}, {args.workers} decode threads':<46} {rate:8.1f} img/s "
                  f"{rate / single:5.2f}x   RSS MiB at 1/4..4/4 of images: {quarters}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB (baseline before models {base_mem:.0f} MiB)")
    if args.device.startswith("cuda"):
        import torch

        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
