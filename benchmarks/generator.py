"""Generator cost: seconds per image (backbone features, computed once per image) and per pair
(pixel-level MVAM volume + PMPS selection of 32 matches; the dense sub-cell flow), parameters, peak memory.

    .venv/bin/python benchmarks/generator.py                                   # dense-sift at 160 and 512, CPU
    python benchmarks/generator.py --backbone ibot-vit-base-16 --sizes 512 --device cuda --bf16

ViT backbones get random weights saved to a temporary checkpoint (only the speed matters here).
"""

from __future__ import annotations

import argparse
import inspect
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sc_imagenet.config import TrainConfig
from sc_imagenet.matching.backbones import BACKBONES, Features
from sc_imagenet.matching.builder import make_backbones
from sc_imagenet.matching.cascade import CascadeGenerator
from sc_imagenet.matching.predictor import PseudoLabelGenerator

TIMM_ARCH = {"ibot-vit-base-16": "vit_base_patch16_224", "dino-vit-base-16": "vit_base_patch16_224",
             "dino-vit-small-16": "vit_small_patch16_224"}


def random_checkpoint(name: str, tmp: Path) -> Path | None:
    if "checkpoint" not in inspect.signature(BACKBONES[name]).parameters:
        return None
    import timm

    path = tmp / f"{name}.pth"
    torch.save(timm.create_model(TIMM_ARCH[name], pretrained=False, num_classes=0).state_dict(), path)
    return path


def timed(fn, repeat: int, device: str) -> float:
    fn()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def measure(args: argparse.Namespace, size: int, ckpt: Path | None, images: list[np.ndarray]) -> None:
    cfg = TrainConfig(backbone=args.backbone, input_size=size, device=args.device)
    backbone, _ = make_backbones(cfg, ckpt, args.device)
    model = CascadeGenerator(backbone.out_dim, cfg).to(args.device)
    gen = PseudoLabelGenerator(backbone, model)
    params = sum(p.numel() for p in model.parameters())
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=args.bf16):
        per_image = timed(lambda: gen.encode(images[:1]), args.repeat, args.device)
        f = gen.encode(images)
        src = Features(f.tokens[:1], f.grid, f.global_token[:1])
        trg = Features(f.tokens[1:], f.grid, f.global_token[1:])

        def pair() -> None:
            with torch.no_grad():
                model.pmps(model.volume(gen.level, src, trg).float(), 32)

        per_pair = timed(pair, args.repeat, args.device)
        per_flow = timed(lambda: gen.flow(images[0], images[1]), args.repeat, args.device)
    gpu = f", peak GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if args.device.startswith("cuda") else ""
    print(f"{args.backbone} @ {size}px (grid {f.grid[0]}x{f.grid[1]}), {args.device}{' bf16' if args.bf16 else ''}: "
          f"features {per_image:.3f} s/image, volume+PMPS {per_pair:.3f} s/pair, "
          f"dense flow incl. both images' features {per_flow:.3f} s/pair, "
          f"{params:,} trainable parameters (3 levels){gpu}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="dense-sift")
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 512])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (300, 400, 3), dtype=np.uint8) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = random_checkpoint(args.backbone, Path(tmp))
        for size in args.sizes:
            measure(args, size, ckpt, images)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
