"""Rehearsal of the ImageNet build at ImageNet's shape: every stage's cost and memory against the number of
single-instance images, the growth exponent, the training sampler's cost per step, and a projection of the
full build on 1 and 8 GPUs.

    .venv/bin/python benchmarks/scale.py --sizes 4000 40000 --json out.json
    .venv/bin/python benchmarks/scale.py --sizes 379458 --keep --work /scratch/scale     # 100 %: hours here
    .venv/bin/python benchmarks/scale.py --sizes 40000 379458 --work /scratch/scale --rerun export  # again, alone

Inputs with ImageNet's shape: categories whose sizes are spread like ILSVRC-2012 train (most 1,300 images, the
rest 732–1,300), 43.6 % of their images single-instance (the paper's 379,458 of ~870,000), as many categories as
`size` single-instance images fill at that size (559 each: 7 at 4,000, 72 at 40,000, 679 at 379,458;
`--categories N` fixes the count instead, shrinking each category). Every image is a real small JPEG (plus
PNG- and CMYK-files named `.JPEG` at ImageNet's rate, at least one each). Each stage runs in its own (forked)
process through `sc_imagenet.build.execute_stage` — the product's code, record, content hash and fingerprints —
so its peak RSS is its own.

Stand-ins, only where the real cost is a neural network (its cost is added back from GPU measurements in the
projection; `NETWORK` says which):
- detect: a registered detector backend (`scale-stand-in`) that reads a flat block of each image telling how
  many objects it shows (none, one or two) and returns boxes with 48-vertex instance outlines, as
  yolo11x-seg would; decoding, batching, prefetching and the shard writes are the stage's own.
- train: `train_generator` is replaced by the data path of one training run without the network: the real
  `EpochPlan` over all kept images, then `--train-steps` steps of sampling, decoding both images of every
  pair and building their foreground masks (the product's provider); it writes a placeholder checkpoint.
- label, pairs: the generator is replaced by an object with `PseudoLabelGenerator`'s interface on ImageNet's
  grid (32×32, iBOT ViT-B/16 at 512 px): a smooth dense flow per edge and `label.candidates` candidates with decreasing
  scores. Decoding, foreground masks, the pair graphs, the pixel foreground filter, the loops and the rows are
  the stages' own.
Everything else — graph, sampler, consistency loops, selection, split, export, report, status, resume checks,
fingerprints — is the product's code unchanged.

`--network real` (for a GPU; `benchmarks/device/scale_real.sh` runs it there) keeps only the detector stand-in:
`train` runs the product's loop for `--train-steps` steps and `label` and `pairs` the product's generator, with
random weights of `--backbone` at the profile's input size, on the configured device. The figures are then each
network stage's cost per step or edge, with the data loading and the CPU work around each batch, and its hours at
ImageNet's counts on one device; there is no projection.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sc_imagenet.io.manifest import StageRecord
from sc_imagenet.stages import pipeline_order
from sc_imagenet.stages.consistency import ConsistencyFigures
from sc_imagenet.stages.export import ExportFigures
from sc_imagenet.stages.label import LabelFigures
from sc_imagenet.stages.pairs import PairsFigures
from sc_imagenet.stages.select import SelectFigures
from sc_imagenet.stages.train import TrainFigures

IMAGENET_SINGLE = 379_458  # single-instance images in the paper's 679 categories (§3.5)
IMAGENET_CATEGORIES = 679
SINGLE_FRACTION = 0.436  # 379,458 of the ~870,000 images of the 679 kept categories
CMYK_RATE, PNG_RATE = 22 / 1_281_167, 1 / 1_281_167  # ILSVRC-2012 train's odd files
GRID = (32, 32)  # iBOT ViT-B/16 at 512 px
KINDS = {"none": 0, "one": 1, "two": 2}
PIPELINE = pipeline_order()
CHECKS = ["fingerprints", "status", "resume"]  # what every rerun and `sc-imagenet status` pay

# Network cost per unit on a GPU, from measurements recorded in benchmarks/results/ (earlier sessions; this
# session had no GPU): (seconds per unit, unit, source).
NETWORK = {
    "detect": (1 / 165.2, "image", "yolo11x-seg layout (random weights) at 640 px, fp16, batch 64, H100: "
               "165.2 img/s (benchmarks/results/detect-h100.txt)"),
    "train": (0.255, "step", "iBOT ViT-B/16 at 512 px, batch 4, one training step on H200: 0.255 s "
              "(benchmarks/results/train-step-h200.txt)"),
    "label_image": (0.041, "image", "iBOT ViT-B/16 at 512 px, bf16, features per image on H200 "
                    "(benchmarks/results/train-step-h200.txt)"),
    "label_edge": (0.037, "edge", "pair head volume + PMPS per pair, bf16, H200, one pair at a time "
                   "(benchmarks/results/train-step-h200.txt); batching edges would lower it"),
}


# ---------------------------------------------------------------------------------------------- the data

def default_categories(n_single: int) -> int:
    """ImageNet's categories at ImageNet's size per category: 379,458 / 679 ≈ 559 single-instance images each,
    as many categories as that makes (679 at 100 %). Per-category work — cliques of 20, 100 loops per image,
    cliques of 15 selected images — then has ImageNet's shape at every size, so the fitted exponent measures
    growth with the dataset and not a graph that is still filling up (679 categories of 6 images, at 4,000,
    make cliques of 6 and 20 loops per image)."""
    return max(1, min(IMAGENET_CATEGORIES, round(n_single * IMAGENET_CATEGORIES / IMAGENET_SINGLE)))


def category_sizes(n_single: int, categories: int, seed: int) -> list[int]:
    """Images per category: ILSVRC-2012 train's spread (about 80 % of classes at 1,300, the rest 732–1,300),
    scaled so that `SINGLE_FRACTION` of the total is `n_single`."""
    rng = np.random.default_rng(seed)
    raw = np.where(rng.random(categories) < 0.8, 1300, rng.integers(732, 1301, categories)).astype(float)
    total = n_single / SINGLE_FRACTION
    sizes = np.maximum(1, np.round(raw * total / raw.sum())).astype(int)
    return sizes.tolist()


def _jpeg(width: int, height: int, kind: str, template: int, mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """A small photo-like image; its top-left 16×16 block encodes (kind, template) for the stand-in detector."""
    rng = np.random.default_rng([width, height, KINDS[kind], template])
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height))], -1)
    pixels = np.clip(base + rng.integers(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    pixels[:16, :16] = (40 + 80 * KINDS[kind], 20 + 20 * template, 128)
    img = Image.fromarray(pixels)
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, quality=85)
    return buf.getvalue()


TEMPLATE_SIZES = [(160, 120), (128, 160), (176, 132), (144, 144), (192, 128), (120, 160)]


def make_dataset(root: Path, n_single: int, categories: int, seed: int) -> dict[str, Any]:
    """The ImageNet-shaped folder: `<root>/<wnid>/<wnid>_<i>.JPEG`. Files are written from a few encoded
    templates (the bytes repeat, every file is still decoded and checked by `index` on its own)."""
    templates = {(k, t, m): _jpeg(*TEMPLATE_SIZES[t], k, t, *(("RGB", "PNG") if m == "png" else
                                                            ("CMYK", "JPEG") if m == "cmyk" else ("RGB", "JPEG")))
                 for k in KINDS for t in range(len(TEMPLATE_SIZES)) for m in ("rgb", "png", "cmyk")}
    sizes = category_sizes(n_single, categories, seed)
    total = sum(sizes)
    n_png, n_cmyk = max(1, round(total * PNG_RATE)), max(1, round(total * CMYK_RATE))
    rng = np.random.default_rng(seed + 1)
    odd = set(rng.choice(total, n_png + n_cmyk, replace=False).tolist())
    png = set(sorted(odd)[:n_png])
    i = 0
    for c, size in enumerate(sizes):
        wnid = f"n{10_000_000 + c:08d}"
        folder = root / wnid
        folder.mkdir(parents=True, exist_ok=True)
        kinds = rng.random(size)
        for j in range(size):
            kind = "one" if kinds[j] < SINGLE_FRACTION else ("none" if kinds[j] < 0.7 else "two")
            mode = "rgb" if i not in odd else "png" if i in png else "cmyk"
            (folder / f"{wnid}_{j}.JPEG").write_bytes(templates[(kind, j % len(TEMPLATE_SIZES), mode)])
            i += 1
    return {"images": total, "categories": categories, "png": n_png, "cmyk": n_cmyk}


# ---------------------------------------------------------------------------------------------- stand-ins

def install_stand_ins(stats: dict[str, Any], train_steps: int, networks: bool = True) -> None:
    """Register the detector stand-in and, if `networks`, swap the training network and the label generator (see
    the module docstring). Only this benchmark's process is affected."""
    import torch

    from sc_imagenet.detect.backends import Detector, register_detector
    from sc_imagenet.detect.types import ImageDetections
    from sc_imagenet.matching.backbones import Features
    from sc_imagenet.matching.cascade import grid_masks
    from sc_imagenet.matching.predictor import PairLabel
    from sc_imagenet.stages.label import GeneratorStage, LoadedGenerator
    from sc_imagenet.train import loop
    from sc_imagenet.train.pairs import EpochPlan, epoch_batches

    @register_detector
    class StandInDetector(Detector):
        name = "scale-stand-in"

        def __init__(self, **_: Any) -> None:
            self.class_names, self.has_masks, self.device, self.half = ["object"], True, "cpu", False

        def detect(self, images: list[np.ndarray]) -> list[ImageDetections]:
            return [self._one(img) for img in images]

        @staticmethod
        def _one(img: np.ndarray) -> ImageDetections:
            h, w = img.shape[:2]
            kind = round((float(img[2:14, 2:14, 0].mean()) - 40) / 80)
            n = {0: 0, 1: 1}.get(kind, 2)
            boxes, polys = [], []
            for d in range(n):
                x1, y1 = w * (0.15 + 0.3 * d), h * 0.2
                box = [x1, y1, x1 + w * 0.5, y1 + h * 0.6]
                t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
                cx, cy, rx, ry = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, w * 0.24, h * 0.29
                boxes.append(box)
                polys.append(np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).astype(np.float32))
            conf = np.array([0.97, 0.95][:n], np.float32)
            return ImageDetections(np.array(boxes, np.float32).reshape(-1, 4), conf, np.zeros(n, np.int32), polys)

    if not networks:  # --network real: the product's training loop and generator run
        return

    def train_stand_in(cfg: Any, seed: int, data: Any, ckpt_dir: Path, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        plan = EpochPlan(data.images_by_wnid, seed, cfg.batch_size)
        stats["plan_build_s"] = time.perf_counter() - t0
        steps = min(train_steps, plan.steps_per_epoch)
        sample_s = data_s = 0.0
        for step in range(steps):
            t1 = time.perf_counter()
            _, batch = plan.batch(step)
            t2 = time.perf_counter()
            for src, trg, _ in batch:
                for image_id in (src, trg):
                    img = data.load_image(image_id)
                    if data.load_fg is not None:
                        data.load_fg(image_id, img.shape[:2])
            sample_s += t2 - t1
            data_s += time.perf_counter() - t2
        # before the fix every step rebuilt the whole epoch's plan: one such call, for the record
        t3 = time.perf_counter()
        epoch_batches(data.images_by_wnid, seed, 0, cfg.batch_size)
        stats.update(steps_timed=steps, steps_per_epoch=plan.steps_per_epoch,
                     ms_per_step=1000 * (sample_s + stats["plan_build_s"] * steps / plan.steps_per_epoch)
                     / max(steps, 1),
                     data_ms_per_step=1000 * data_s / max(steps, 1),
                     rebuild_per_step_ms=1000 * (time.perf_counter() - t3))
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = ckpt_dir / "stand-in.pt"
        torch.save({"stand_in": True}, path)
        return loop.TrainResult(path, steps, [{"step": steps, "epoch": 0, "L_I": 0.0, "L_R": 0.0, "L_P": 0.0,
                                               "total": 0.0, "lr": cfg.lr, "labels_per_pair": 0.0,
                                               "pairs_per_s": 0.0}])

    class StandInGenerator:
        """`PseudoLabelGenerator`'s interface, ImageNet's grid, no network: flows and candidates drawn from small
        precomputed pools, so that the stand-in costs little beside the stage's own work."""

        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            cells = GRID[0] * GRID[1]
            self.noise = rng.normal(0, 2.0, (61, cells, 2)).astype(np.float32)
            self.picks = np.stack([rng.permutation(cells) for _ in range(59)])
            self.scores = np.sort(rng.random(cells).astype(np.float32))[::-1].copy()
            self.base: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
            self.calls = 0
            self.device = torch.device("cpu")

        def encode(self, images: list[np.ndarray]) -> Features:
            return Features(torch.zeros(len(images), GRID[0] * GRID[1], 1), GRID, torch.zeros(len(images), 1))

        def grid_mask(self, mask: np.ndarray | None, grid: tuple[int, int]) -> torch.Tensor | None:
            return None if mask is None else grid_masks([mask], grid, self.device)[0]

        def _base(self, src_hw: tuple[int, int], trg_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
            """Source cell centres and their targets under the scaling between the two images."""
            key = (*src_hw, *trg_hw)
            if key not in self.base:
                (hs, ws), (ht, wt) = src_hw, trg_hw
                gy, gx = np.mgrid[0:GRID[0], 0:GRID[1]]
                src = np.stack([(gx + 0.5) * ws / GRID[1], (gy + 0.5) * hs / GRID[0]], -1).reshape(-1, 2)
                self.base[key] = (src.astype(np.float32), (src * [wt / ws, ht / hs]).astype(np.float32))
            return self.base[key]

        def label_pairs(self, src: Features, trg: Features, src_hw: list, trg_hw: list, k: int,
                        fg_s: Any = None, fg_t: Any = None) -> list[PairLabel]:
            out = []
            for i, (shw, thw) in enumerate(zip(src_hw, trg_hw, strict=True)):
                cells, target = self._base(tuple(shw), tuple(thw))
                self.calls += 1
                flow = target + self.noise[self.calls % len(self.noise)]
                pick = self.picks[self.calls % len(self.picks)]
                if fg_s is not None and fg_s[i] is not None:  # candidates on the object, as the generator's
                    pick = pick[fg_s[i].reshape(-1).cpu().numpy()[pick] > 0.5]
                pick = pick[:k]
                out.append(PairLabel(flow, cells[pick], flow[pick], self.scores[:len(pick)]))
            return out

    loop.train_generator = train_stand_in
    GeneratorStage.load_shared = lambda self, ctx: LoadedGenerator(StandInGenerator(), "cpu", False)


def build_config(data_root: Path, weights: Path, real: dict[str, Any] | None = None) -> Any:
    """The imagenet profile on the rehearsal's folder, with the stand-in detector. With stand-in networks,
    `train.backbone` is the weight-free one only so that planning needs no iBOT file; `real`: the `train` settings
    of the real generator instead (backbone, random weights, steps)."""
    from sc_imagenet.config import load_config

    train = real or {"backbone": "dense-sift", "backbone_checkpoint": None}
    return load_config("imagenet", {"categories": {"list": None}, "detect": {"backend": "scale-stand-in",
                                                                              "weights": str(weights)},
                                    "train": train}, data_root=data_root)


def real_network(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """`--network real`: the generator's settings, with random weights for a backbone that needs a checkpoint."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from generator import random_checkpoint  # the sibling benchmark

    # built in a spawned process: torch's thread pools, once used here, would hang the stages forked from here
    work.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        ckpt = pool.submit(random_checkpoint, args.backbone, work).result()
    train: dict[str, Any] = {"backbone": args.backbone, "backbone_checkpoint": str(ckpt) if ckpt else None,
                             "max_steps": args.train_steps}
    if args.input_size:
        train["input_size"] = args.input_size
    return train


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


def network_costs(sizes: list[int], stages: dict[str, dict[str, Any]], imagenet: dict[str, float]) -> dict[str, Any]:
    """`--network real`: the networks' stages per unit at the largest size, the CPU work around each batch and the
    data loading included, and each stage's hours on one device at ImageNet's counts (`imagenet`: steps, edges,
    new edges; a stage's images grow with its edges at a fixed clique size)."""
    last = sizes.index(max(sizes))
    out: dict[str, Any] = {}
    units = {"train": ("steps", "step"), "label": ("edges", "edge"), "pairs": ("edges_labelled", "new_edge")}
    for name, (key, unit) in units.items():
        info = stages[name]["info"][last] if name in stages else {}
        if info.get(key):
            per = stages[name]["seconds"][last] / info[key]
            out[name] = {f"s_per_{unit}": round(per, 7),
                         "imagenet_hours_1_device": round(per * imagenet[key] / 3600, 2)}
    return out


# ---------------------------------------------------------------------------------------------- one stage

STATS: dict[str, Any] = {}  # what the stand-ins measured (the train stand-in's sampler figures)


def measure(stage: str, out: Path) -> dict[str, Any]:
    """One stage (or check) in this process: seconds and peak RSS of the work alone."""
    from sc_imagenet.build import execute_stage, plan_build, stage_states
    from sc_imagenet.config import read_resolved_config

    stats: dict[str, Any] = {}
    cfg = read_resolved_config(out)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    quiet = lambda msg: None  # noqa: E731
    t0 = time.perf_counter()
    if stage == "fingerprints":
        plan_build(cfg, "scale", out)
    elif stage == "status":
        stats["states"] = {s["stage"]: s["state"] for s in stage_states(out, cfg)}
    elif stage == "resume":
        plan = plan_build(cfg, "scale", out)
        stats["all_skipped"] = all(execute_stage(plan, name, quiet, progress=False).skipped for name in PIPELINE)
    else:
        plan = plan_build(cfg, "scale", out, stages=[stage])
        result = execute_stage(plan, stage, quiet, progress=False)
        stats["rows"] = result.record.rows
        stats.update(recorded_counts(stage, result.record))
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mb": rss, "rss_before_mb": rss0, **stats, **STATS}


def rerun(stage: str, out: Path) -> dict[str, Any]:
    """`stage` alone again on a kept build: its manifest removed first (its artifacts stay, as on a rerun of the
    product: export swaps in a new release), then its `run`, content hash and inventory as `execute_stage` pays
    them, but neither its record nor the check of its inputs' fingerprints (a build kept from older code still
    reruns). Seconds and peak RSS of that work."""
    from sc_imagenet.build import output_files, plan_build, seal, stage_context
    from sc_imagenet.config import read_resolved_config
    from sc_imagenet.stages import STAGES

    plan = plan_build(read_resolved_config(out), "scale", out, stages=[stage])
    stage_dir = plan.stage_dir(stage)
    shutil.rmtree(stage_dir, ignore_errors=True)
    stage_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    output = STAGES[stage].run(stage_context(plan, stage, None, lambda msg: None, False))
    seal(plan, stage, output_files(STAGES[stage], output, stage_dir), output.artifacts)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": output.rows}


def recorded_counts(stage: str, record: StageRecord) -> dict[str, int | float]:
    """The sizes a stage's record states (edges, images, pairs), reported beside its timing: read as attributes of
    the stage's figures model, so a renamed figure fails here rather than dropping out of the results."""
    match stage:
        case "train":
            train = TrainFigures.of(record)
            return {"images": train.images, "steps": train.steps}
        case "label":
            label = LabelFigures.of(record)
            return {"edges": label.edges, "images": label.images, "images_encoded": label.images_encoded}
        case "consistency":
            consistency = ConsistencyFigures.of(record)
            return {"edges": consistency.edges, "images": consistency.images}
        case "select":
            select = SelectFigures.of(record)
            return {"images": select.images, "pairs": select.pairs, "images_selected": select.images_selected,
                    "pairs_unordered": select.pairs_unordered,
                    "pairs_per_selected_image": select.pairs_per_selected_image,
                    "pairs_unordered_per_selected_image": select.pairs_unordered_per_selected_image}
        case "pairs":
            pairs = PairsFigures.of(record)
            return {"pairs": pairs.pairs, "images_selected": pairs.images_selected,
                    "pairs_per_selected_image": pairs.pairs_per_selected_image, "edges_labelled": pairs.edges_labelled,
                    "edges_reused": pairs.edges_reused, "images_encoded": pairs.images_encoded}
        case "export":
            export = ExportFigures.of(record)
            return {"images": export.images, "pairs": export.pairs}
    return {}  # the other stages' records state no such sizes


def _child(stage: str, out: Path, queue: Any, again: bool) -> None:
    try:
        queue.put(("ok", rerun(stage, out) if again else measure(stage, out)))
    except BaseException:
        import traceback

        queue.put(("error", traceback.format_exc()))


def run_stage(stage: str, out: Path, again: bool = False) -> dict[str, Any]:
    """`measure` (`rerun` if `again`) in a forked process: the libraries are imported once, in the parent, yet
    every stage's peak RSS is its own process's."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(stage, out, queue, again))
    proc.start()
    status, value = queue.get()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"stage {stage} failed:\n{value}")
    return value


# ---------------------------------------------------------------------------------------------- projection

def exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) on log(size): 1 = linear."""
    ok = [(s, t) for s, t in zip(sizes, seconds, strict=True) if t > 0]
    if len(ok) < 2:
        return None
    x, y = np.log([s for s, _ in ok]), np.log([t for _, t in ok])
    return float(np.polyfit(x, y, 1)[0])


def projection_counts(epochs: int, group_size: int, pairs_group: int, fraction: float,
                      reuse: float = 0.379) -> dict[str, float]:
    """The full build's training steps, `label` edges and `pairs` new edges (`reuse`: the share of `pairs`' edges
    that `label` already holds, as measured at 40,000)."""
    n = IMAGENET_SINGLE
    selected = round(n * fraction)
    return {"steps": epochs * (n // 2) // 4, "edges": n * (group_size - 1),
            "edges_labelled": round(selected * max(pairs_group - 1, 0) * (1 - reuse))}


def projection(sizes: list[int], stages: dict[str, dict[str, Any]], sampler: dict[str, Any],
               epochs: int, group_size: int, pairs_group: int, fraction: float) -> dict[str, Any]:
    """Hours for the full ImageNet build, per stage, on 1 and 8 GPUs: the CPU-side cost measured here, scaled
    linearly from the largest size run, plus the network cost from `NETWORK` (GPU work divides by the GPUs;
    CPU-only stages are taken as running on one machine's cores, as measured)."""
    n = IMAGENET_SINGLE
    total_images = n / SINGLE_FRACTION
    selected = round(n * fraction)
    # the second graph: every ordered pair inside cliques of `pairs_group` selected images, less the edges the
    # first graph already holds (the share measured at the largest size run)
    largest = sizes.index(max(sizes))
    info = stages.get("pairs", {}).get("info", [{}])[largest] if "pairs" in stages else {}
    seen = info.get("edges_labelled", 0) + info.get("edges_reused", 0)
    reuse = info.get("edges_reused", 0) / seen if seen else 0.0
    counts = projection_counts(epochs, group_size, pairs_group, fraction, reuse)
    edges, pair_edges, steps = counts["edges"], counts["edges_labelled"], counts["steps"]
    per: dict[str, dict[str, float]] = {}
    for name, s in stages.items():
        if name in CHECKS or not s["seconds"]:
            continue
        cpu_h = s["seconds"][largest] * n / sizes[largest] / 3600
        if name == "train":  # the data path per step (decode + masks) scales with steps, not with the rehearsal
            cpu_h = (sampler["data_ms_per_step"][largest] + sampler["ms_per_step"][largest]) / 1000 * steps / 3600
        gpu_h = {"detect": total_images * NETWORK["detect"][0],
                 "train": steps * NETWORK["train"][0],
                 "label": n * NETWORK["label_image"][0] + edges * NETWORK["label_edge"][0],
                 "pairs": selected * NETWORK["label_image"][0] + pair_edges * NETWORK["label_edge"][0],
                 }.get(name, 0.0) / 3600
        gpu_stage = name in ("detect", "train", "label", "pairs")
        # CPU work around a GPU stage (decoding, masks, rows) runs beside the network on each GPU's machine
        one = cpu_h + gpu_h if gpu_stage else cpu_h
        eight = (cpu_h + gpu_h) / 8 if gpu_stage else cpu_h
        per[name] = {"cpu_hours": round(cpu_h, 3), "gpu_hours": round(gpu_h, 3), "hours_1gpu": round(one, 3),
                     "hours_8gpu": round(eight, 3)}
    return {
        "hours_1gpu": round(sum(p["hours_1gpu"] for p in per.values()), 2),
        "hours_8gpu": round(sum(p["hours_8gpu"] for p in per.values()), 2),
        "label_consistency_gpu_hours": round(sum(per[k]["hours_1gpu"] for k in ("label", "consistency", "pairs")
                                                 if k in per), 2),
        "per_stage": per,
        "measured_on": "CPU stages: this machine (" + f"{os.cpu_count()} cores" + "), scaled linearly from "
                       f"{max(sizes):,} single-instance images; network: estimated from GPU figures recorded "
                       "earlier (not measured in this run)",
        "assumptions": {"single_instance_images": n, "images_detected": round(total_images),
                        "edges": edges, "selected_images": selected, "pairs_group_size": pairs_group,
                        "pairs_new_edges": round(pair_edges), "pairs_edges_reused_share": round(reuse, 3),
                        "train_epochs": epochs, "train_pairs_per_epoch": n // 2,
                        "train_batch": 4, "train_steps": steps,
                        "network": {k: v[2] for k, v in NETWORK.items()},
                        "8 GPUs": "GPU stages split evenly over 8 GPUs (categories on Dask, training on torchrun); "
                                  "CPU-only stages on one machine as measured here"},
    }


# ---------------------------------------------------------------------------------------------- main

def table(sizes: list[int], stages: dict[str, dict[str, Any]]) -> str:
    head = f"{'stage':16}" + "".join(f"{f'{s:,} s':>14}{'RSS MB':>9}{'ms/img':>9}" for s in sizes) + f"{'exp':>7}"
    lines = [head]
    for name, s in stages.items():
        cells = "".join(f"{t:14.2f}{r:9.0f}{1000 * t / n:9.3f}" if t is not None else f"{'-':>14}{'-':>9}{'-':>9}"
                        for t, r, n in zip(s["seconds"], s["peak_rss_mb"], sizes, strict=True))
        e = "-" if s["exponent"] is None else f"{s['exponent']:.2f}"
        lines.append(f"{name:16}{cells}{e:>7}")
    return "\n".join(lines)


def add_result(stage: dict[str, Any], r: dict[str, Any], label: str, note: str = "") -> None:
    """One size's figures of a stage into its lists (seconds, peak RSS, the rest as `info`), and its line."""
    stage["seconds"].append(round(r["seconds"], 3))
    stage["peak_rss_mb"].append(round(r["peak_rss_mb"], 1))
    stage["info"].append({k: v for k, v in r.items() if k not in ("seconds", "peak_rss_mb")})
    print(f"{label} {r['seconds']:9.2f} s  peak RSS {r['peak_rss_mb']:7.0f} MB{note}", flush=True)


def rerun_kept(sizes: list[int], names: list[str], work: Path, json_path: Path | None) -> None:
    """`--rerun`: each of `names` again on every kept build, in its own forked process; a table and JSON as
    `main`'s, without the projection."""
    install_stand_ins(STATS, 1)
    unknown = [n for n in names if n not in PIPELINE]
    builds = [work / f"build-{size}" for size in sizes]
    missing = [str(b) for b in builds if not (b / "config.resolved.yaml").exists()]
    if unknown or missing:
        sys.exit(f"--rerun: unknown stages {unknown}" if unknown else f"--rerun: no kept build at {missing}")
    stages: dict[str, dict[str, Any]] = {n: {"seconds": [], "peak_rss_mb": [], "info": []} for n in names}
    for size, out in zip(sizes, builds, strict=True):
        for name in names:
            r = run_stage(name, out, again=True)
            add_result(stages[name], r, f"[scale] {size:,}: {name:16}", " (rerun)")
    for s in stages.values():
        s["exponent"] = exponent(sizes, s["seconds"])
    print(table(sizes, stages))
    if json_path:
        json_path.write_text(json.dumps({"sizes": sizes, "rerun": names, "stages": stages}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4000, 40000], help="single-instance images per run")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--work", type=Path, help="folder for the datasets and builds (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the datasets and builds")
    p.add_argument("--categories", type=int, help="categories at every size (default: ImageNet's size per "
                   "category, 559 single-instance images, up to 679 categories at 379,458)")
    p.add_argument("--train-steps", type=int, default=300, help="training steps whose data path is timed")
    p.add_argument("--stages", default=",".join(PIPELINE + CHECKS), help="comma-separated stages to time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--network", choices=["stand-in", "real"], default="stand-in",
                   help="real: the product's training loop (--train-steps steps) and generator run, with random "
                   "weights, on the configured device (a GPU where there is one); the detector stays a stand-in")
    p.add_argument("--backbone", default="ibot-vit-base-16", help="--network real: the generator's backbone")
    p.add_argument("--input-size", type=int, help="--network real: the generator's input size (default: the "
                   "imagenet profile's, 512)")
    p.add_argument("--rerun", metavar="STAGES", help="comma-separated stages to time again, alone, on the builds "
                   "an earlier run kept under --work (build-<size>): nothing else runs, no projection")
    args = p.parse_args()
    if args.rerun:
        if args.work is None:
            p.error("--rerun needs --work: the folder of a run made with --keep")
        rerun_kept(args.sizes, [s.strip() for s in args.rerun.split(",")], args.work, args.json)
        return
    import sc_imagenet.build  # noqa: F401  (imported once here; every stage's process is forked from this one)

    install_stand_ins(STATS, args.train_steps, networks=args.network == "stand-in")

    wanted = [s.strip() for s in args.stages.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="sc-scale-"))
    stages = {name: {"seconds": [], "peak_rss_mb": [], "info": []} for name in PIPELINE + CHECKS if name in wanted}
    sampler: dict[str, list[float]] = {"ms_per_step": [], "data_ms_per_step": [], "rebuild_per_step_ms": [],
                                       "plan_build_s": []}
    datasets = []
    real = real_network(args, work) if args.network == "real" else None
    try:
        for size in args.sizes:
            root, out = work / f"data-{size}", work / f"build-{size}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            if not (root / ".complete").exists():
                shutil.rmtree(root, ignore_errors=True)
                info = make_dataset(root, size, args.categories or default_categories(size), args.seed)
                (root / ".complete").write_text(json.dumps(info))
            info = json.loads((root / ".complete").read_text())
            datasets.append({**info, "seconds_to_write": round(time.perf_counter() - t0, 1)})
            print(f"[scale] {size:,} single-instance images: {info['images']:,} files in {info['categories']} "
                  f"categories ({info['png']} PNG, {info['cmyk']} CMYK named .JPEG)", flush=True)
            weights = work / "stand-in-detector.pt"
            weights.write_bytes(b"stand-in detector: no weights")
            from sc_imagenet.config import write_resolved_config

            out.mkdir(parents=True)
            write_resolved_config(build_config(root, weights, real), out, "scale")
            for name in stages:
                r = run_stage(name, out)
                add_result(stages[name], r, f"[scale] {size:,}: {name:16}")
                if name == "train" and real is None:
                    for k in sampler:
                        sampler[k].append(round(r[k], 4))
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for s in stages.values():
        s["exponent"] = exponent(args.sizes, s["seconds"])
    from sc_imagenet.config import BuildConfig

    defaults = BuildConfig()
    result = {"sizes": args.sizes, "categories": [d["categories"] for d in datasets], "datasets": datasets,
              "stages": stages,
              "train_sampler": sampler,
              # with real networks their time is in the stages' seconds: the costs per unit replace the projection
              "projection": projection(args.sizes, stages, sampler, defaults.train.epochs,
                                       defaults.label.group_size, defaults.pairs.group_size,
                                       defaults.select.fraction) if "train" in stages and real is None else None}
    if real is not None:
        counts = projection_counts(defaults.train.epochs, defaults.label.group_size, defaults.pairs.group_size,
                                   defaults.select.fraction)
        result["network"] = {"train": real, "device": device_name(),
                             "costs": network_costs(args.sizes, stages, counts), "imagenet_counts": counts}
    print(table(args.sizes, stages))
    if real is not None:
        print(f"network costs on {result['network']['device']} ({args.backbone}):", result["network"]["costs"])
    if sampler["ms_per_step"]:
        print("train sampler ms/step (plan built once per epoch, amortised):",
              sampler["ms_per_step"], "| rebuilding the plan every step (before):", sampler["rebuild_per_step_ms"])
    if result["projection"]:
        pr = result["projection"]
        print(f"projection, full ImageNet build ({IMAGENET_SINGLE:,} single-instance images): "
              f"{pr['hours_1gpu']} h on 1 GPU, {pr['hours_8gpu']} h on 8 GPUs; label + consistency "
              f"{pr['label_consistency_gpu_hours']} GPU-hours ({pr['measured_on']})")
        for name, v in pr["per_stage"].items():
            print(f"    {name:16} CPU {v['cpu_hours']:8.2f} h  GPU {v['gpu_hours']:8.2f} h  "
                  f"1 GPU {v['hours_1gpu']:8.2f} h  8 GPUs {v['hours_8gpu']:8.2f} h")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
