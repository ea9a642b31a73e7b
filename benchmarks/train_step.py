"""Cost of one training step of the cascaded generator (image → region → pixel level, losses, backward,
SGD) at a given backbone and input size: seconds per step after warm-up, peak GPU memory, pseudo-labels
that reach the pixel level. Random images (only the cost is measured); ViT backbones get random weights.

    .venv/bin/python benchmarks/train_step.py --backbone dense-sift --input-size 160 --region-input-size 64 --device cpu
    python benchmarks/train_step.py --backbone ibot-vit-base-16 --input-size 512 --device cuda   # the paper's setting

Features are cached per image (`train.cache_features`), so the first epoch pays the backbone once per image;
`--images` images per category × 4 categories, `--steps` timed steps after `--warmup` steps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from generator import random_checkpoint  # the sibling benchmark: random ViT weights

from sc_imagenet.config import TrainConfig
from sc_imagenet.train.loop import TrainData, train_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="ibot-vit-base-16")
    ap.add_argument("--input-size", type=int, default=512)
    ap.add_argument("--region-input-size", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--images", type=int, default=16, help="images per category (4 categories)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, help="also append the result line here")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = {f"c{c}_{i}": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
              for c in range(4) for i in range(args.images)}
    by_wnid = {f"c{c}": [f"c{c}_{i}" for i in range(args.images)] for c in range(4)}
    data = TrainData(by_wnid, lambda i: images[i], None)
    total = args.warmup + args.steps
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = random_checkpoint(args.backbone, Path(tmp))
        cfg = TrainConfig(backbone=args.backbone, input_size=args.input_size, region_input_size=args.region_input_size,
                          batch_size=args.batch_size, max_steps=total, epochs=100, foreground="none",
                          device=args.device, checkpoint_every=10_000, log_every=1)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()

        def on_step(step: int, _total: int) -> None:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        t0 = time.perf_counter()
        result = train_generator(cfg, 0, data, Path(tmp) / "ckpt", ckpt, log=lambda m: None, on_step=on_step,
                                 device=args.device)
    timed = np.diff(stamps[args.warmup - 1:]) if args.warmup else np.diff([t0, *stamps])
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else float("nan")
    labels = np.mean([r["labels_per_pair"] for r in result.rows[args.warmup:]])
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    line = (f"{args.backbone} {args.input_size}px (region {args.region_input_size}px), batch {args.batch_size}, "
            f"{name}: {np.median(timed):.3f} s/step median over {len(timed)} steps (first steps encode each image "
            f"once: {stamps[0] - t0:.2f} s for step 1), {args.batch_size / np.median(timed):.1f} pairs/s, "
            f"{labels:.1f} pseudo-labels/pair at the pixel level, peak GPU memory {peak:.0f} MiB")
    print(line)
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
