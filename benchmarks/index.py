"""Index throughput: the `index` stage vs. a naive single-threaded full-decode loop, same folder.

    .venv/bin/python benchmarks/index.py                      # generates a temporary ImageNet-like tree
    .venv/bin/python benchmarks/index.py --root /data/train --categories 20

Prints files/s for each and the ratio. The stage runs exactly as in a build (categories → index,
process pool, streaming shards); the naive loop opens and fully decodes each file to RGB.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sc_imagenet.build import plan_build, run_build_locally
from sc_imagenet.config import load_config
from sc_imagenet.io.manifest import read_stage_record


def make_tree(root: Path, categories: int, files: int, size: tuple[int, int]) -> None:
    """ImageNet-like files: ~500x375 JPEGs of smooth noise (compresses like photos, ~100 KB)."""
    rng = np.random.default_rng(0)
    for c in range(categories):
        folder = root / f"n9{c:08d}"
        folder.mkdir(parents=True)
        for i in range(files):
            low = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
            img = Image.fromarray(low).resize(size, Image.BICUBIC)
            img.save(folder / f"{folder.name}_{i}.JPEG", quality=90)


def naive(root: Path, wnids: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    for wnid in wnids:
        for path in sorted((root / wnid).iterdir()):
            try:
                with Image.open(path) as img:
                    img.convert("RGB")
            except Exception:
                pass
            n += 1
    return n, time.perf_counter() - t0


def stage(root: Path, wnids: list[str], work: Path, verify: str, workers: int) -> tuple[int, float]:
    lst = work / "list.csv"
    with open(lst, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["wnid", "lemma", "keep", "reason", "note"])
        w.writerows([(x, x, 1, "", "") for x in wnids])
    overrides = {"data": {"source": "folder", "root": str(root)},
                 "categories": {"list": str(lst), "unlisted": "drop"},
                 "index": {"verify": verify, "workers": workers}}
    cfg = load_config("imagenet", overrides)
    out = work / f"out-{verify}-{workers}"
    run_build_locally(plan_build(cfg, "bench", out, stages="categories,index"), log=lambda m: None, progress=False)
    rec = read_stage_record(out / "manifests" / "index")
    return rec.rows, rec.wall_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="existing <root>/<wnid>/<files> folder")
    ap.add_argument("--categories", type=int, default=8)
    ap.add_argument("--files", type=int, default=1000, help="files per generated category")
    ap.add_argument("--workers", type=int, default=0, help="0 = one per core")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = args.root
        if root is None:
            root = work / "data"
            make_tree(root, args.categories, args.files, (500, 375))
        wnids = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
        wnids = wnids[: args.categories]
        n_naive, t_naive = naive(root, wnids)
        rows = [("naive loop, full decode, 1 thread", n_naive, t_naive)]
        for verify in ("draft", "full"):
            n, t = stage(root, wnids, work, verify, args.workers)
            rows.append((f"index stage, verify={verify}, workers={args.workers or os.cpu_count()}", n, t))
    base = n_naive / t_naive
    print(f"{len(wnids)} categories, {n_naive} files, {os.cpu_count()} CPU cores")
    for name, n, t in rows:
        print(f"{name:<48} {n / t:9.1f} files/s   ratio vs naive {n / t / base:5.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: parent {peak:.0f} MiB, largest worker {kids:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
