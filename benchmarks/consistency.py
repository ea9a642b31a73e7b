"""Cost of `label` + `consistency` against a naive loop check, on the same images of a finished build.

    .venv/bin/python benchmarks/consistency.py --build /tmp/demo-after   # → benchmarks/results/consistency-cpu.txt
    python benchmarks/consistency.py --build OUT --device cuda --out benchmarks/results/consistency-h100.txt

One clique of the first `--images` kept images (by id) of the build's first category, every ordered
pair an edge, as a `label` group is formed. Three phases, each in its own subprocess (so that each
peak RSS is its own; the stage phase runs before and after the naive one and its times are averaged):

- stage: `label`'s own group code (`LabelWork.group`: decode, foreground masks,
  `PseudoLabelGenerator.encode` once per image in batches of `label.batch_images`,
  `PseudoLabelGenerator.label_pairs` over every ordered pair in batches of `label.batch_pairs`, the
  pixel-level foreground filter, the rows as written), then `consistency`'s own code on those rows
  (`edge_bank`, `score_category` → `image_consistency` per image with `--loops` loops). Per image = total / g.
- naive: for the first `--naive-images` images, the same (m, t) loops (`draw_loops`, `image_rng`,
  as `image_consistency` draws them), each run from scratch: `PseudoLabelGenerator.match(I_s, I_t)` for the
  candidates, then `PseudoLabelGenerator.flow(I_s, I_m)`, `flow(I_m, I_t)`, `flow(I_t, I_s)` (each encodes both
  images and runs the pair head), composed with `loops.loop_offsets`.
- pairhead32: `PseudoLabelGenerator.label_pairs` at the ImageNet model's grid (32×32: dense-sift at 256 px,
  patch 8; random weights with the `TrainConfig` defaults the imagenet profile uses), per edge.

Pair forwards are counted where they happen (a wrapper around the model's `volume`: pairs through
the pair head), encoded images around the backbone's `encode`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

IMAGENET_SINGLE_INSTANCE = 379_458  # the paper's single-instance images
DEVICES = (1, 8)
RESULT = "RESULT "


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Counter:
    """Pairs through the pair head (`CascadeGenerator.volume`) and images through the backbone."""

    def __init__(self, gen: Any) -> None:
        self.pairs = self.pair_calls = self.images = 0
        volume, encode = gen.model.volume, gen.backbone.encode

        def counted_volume(level: str, src: Any, trg: Any, *a: Any, **kw: Any) -> Any:
            self.pairs += int(src.tokens.shape[0])
            self.pair_calls += 1
            return volume(level, src, trg, *a, **kw)

        def counted_encode(images: Any) -> Any:
            self.images += len(images)
            return encode(images)

        gen.model.volume = counted_volume  # instance attributes shadow the methods
        gen.backbone.encode = counted_encode

    def reset(self) -> None:
        self.pairs = self.pair_calls = self.images = 0


# ------------------------------------------------------------------ shared set-up (in each phase)


class Setup:
    """The build's config, the clique's kept rows, a `LabelWork` over a throw-away context, the foreground
    provider and the object sizes, exactly as `label` and `consistency` read them."""

    def __init__(self, args: argparse.Namespace) -> None:
        from sc_imagenet.build import resolve_data_root
        from sc_imagenet.config import read_resolved_config
        from sc_imagenet.io.manifest import category_shards
        from sc_imagenet.stages.base import StageContext, run_scoped
        from sc_imagenet.stages.consistency import KEPT_COLUMNS as BOX_COLUMNS
        from sc_imagenet.stages.consistency import object_sizes
        from sc_imagenet.stages.label import KEPT_COLUMNS, LabelStage, LabelWork
        from sc_imagenet.stages.single_instance import read_kept_images

        build = args.build.resolve()
        cfg = read_resolved_config(build)
        if cfg is None:
            raise SystemExit(f"{build}: no config.resolved.yaml (not a build folder)")
        self.cfg = cfg.model_copy(update={"label": cfg.label.model_copy(update={"device": args.device})})
        si = build / "manifests" / "single_instance"
        self.wnid = category_shards(si)[0]
        kept = sorted(read_kept_images(si, KEPT_COLUMNS, [self.wnid]).to_pylist(), key=lambda r: r["image_id"])
        self.members = kept[:args.images]
        if len(self.members) < 3:
            raise SystemExit(f"category {self.wnid}: {len(self.members)} kept images, a loop needs 3")
        self.ids = [r["image_id"] for r in self.members]
        self.sizes = object_sizes(read_kept_images(si, BOX_COLUMNS, [self.wnid]))
        self.tmp = tempfile.TemporaryDirectory()  # the context's stage and artifact folders: never written to
        tmp = Path(self.tmp.name)
        # out_dir is the build itself: stage records name their files relative to it (the train checkpoint);
        # the stage and artifact folders point into the throw-away folder, so nothing is written into the build
        ctx = StageContext(cfg=self.cfg, out_dir=build, data_root=resolve_data_root(self.cfg, build),
                           stage_dir=tmp / "label", artifact_dir=tmp / "artifacts", fingerprint="benchmark",
                           inputs={"single_instance": si, "train": build / "manifests" / "train"},
                           progress=False, log=lambda msg: print(msg, file=sys.stderr))
        # as `label`'s sequential run hands it to each category: the stage's own loader, loaded on first need;
        # no progress bar to advance
        self.work = LabelWork(ctx, run_scoped(lambda: LabelStage().load_shared(ctx)), lambda n: None)
        self.provider = self.work.provider(self.wnid)
        self.gen = self.work.generator()  # loaded (and timed by LabelWork) outside every measurement
        self.counter = Counter(self.gen)
        self.device = self.work.device or "cpu"

    def warm_up(self) -> None:
        """One flow of two clique images, so that no phase pays torch's first-call costs."""
        a, b = (self.work.load(r["rel_path"]) for r in self.members[:2])
        self.gen.flow(a, b)
        self.counter.reset()


class Meter:
    """Wall seconds, CPU seconds (all threads of the process: less sensitive to other work on the machine),
    pair forwards and encoded images per named step, summed over calls."""

    def __init__(self, device: str, counter: Counter) -> None:
        self.device, self.counter = device, counter
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.pairs: dict[str, int] = defaultdict(int)
        self.images: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        p0, e0 = self.counter.pairs, self.counter.images
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        sync(self.device)
        self.seconds[step] += time.perf_counter() - t0
        self.cpu[step] += time.process_time() - c0
        self.pairs[step] += self.counter.pairs - p0
        self.images[step] += self.counter.images - e0


def timed(device: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------ phases


def phase_stage(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow as pa

    from sc_imagenet.dataset.loops import image_consistency
    from sc_imagenet.stages.consistency import edge_bank, score_category
    from sc_imagenet.stages.label import SCHEMA

    s = Setup(args)
    rss_setup = rss_mib()
    s.warm_up()
    g, c = len(s.ids), s.cfg.consistency
    gen, meter = s.gen, Meter(s.device, s.counter)
    label_pairs = gen.label_pairs

    def metered_label_pairs(*a: Any, **kw: Any) -> Any:  # the pair head + read-outs alone, inside the stage
        with meter("label_pairs"):
            return label_pairs(*a, **kw)

    gen.label_pairs = metered_label_pairs
    rows: list[dict[str, Any]] = []
    with meter("label"):
        edges = s.work.group(0, s.members, s.provider, rows.append)
    rss_label = rss_mib()
    with meter("consistency"):
        bank = edge_bank(pa.Table.from_pylist(rows, schema=SCHEMA), s.wnid)  # the rows as the shard holds them
        score_category(bank, s.sizes, loops=args.loops, threshold=c.threshold, seed=s.cfg.seed)
    rss_cons = rss_mib()
    if meter.pairs["consistency"]:
        raise RuntimeError("consistency ran the pair head")
    check = {}
    for i in s.ids[:args.naive_images]:  # the naive phase's images, for the cross-check (not timed)
        r = image_consistency(i, sorted(set(s.ids) - {i}), bank, s.sizes, loops=args.loops,
                              threshold=c.threshold, seed=s.cfg.seed)
        check[i] = {"image_consistent": r.image_consistent, "image_offset_mean": r.image_offset_mean,
                    "loops": r.loops_run, "entries": len(r.offset)}
    return {"device": s.device, "wnid": s.wnid, "images": g, "edges": edges, "pair_forwards": meter.pairs["label"],
            "pair_head_calls": s.counter.pair_calls, "images_encoded": meter.images["label"],
            "stage_pair_forwards": s.work.pair_forwards,
            **{f"{k}_s": v for k, v in meter.seconds.items()}, **{f"{k}_cpu": v for k, v in meter.cpu.items()},
            "candidates_mean": float(bank.kps_count.mean()), "grid": [int(v) for v in bank.flows.grid[0]],
            "loops": args.loops, "batch_pairs": s.cfg.label.batch_pairs, "batch_images": s.cfg.label.batch_images,
            "rss_setup": rss_setup, "rss_label": rss_label, "rss_consistency": rss_cons, "check": check}


def phase_naive(args: argparse.Namespace) -> dict[str, Any]:
    from sc_imagenet.dataset.loops import Flow, draw_loops, image_rng, loop_offsets
    from sc_imagenet.foreground.geometry import MaskAtlas
    from sc_imagenet.matching.predictor import PairLabel
    from sc_imagenet.stages.label import keep_on_foreground

    s = Setup(args)
    rss_setup = rss_mib()
    s.warm_up()
    gen, lab, c = s.gen, s.cfg.label, s.cfg.consistency
    # decoded once and masks made once, untimed (in the naive path's favour; the stage times both)
    images = {r["image_id"]: s.work.load(r["rel_path"]) for r in s.members}
    grid, _ = gen.flow(*list(images.values())[:2])
    fg, full = {}, {}
    for i, img in images.items():
        pixels = None if s.provider is None else s.provider.mask_for(i, img.shape[:2], image=img)
        if pixels is not None and not bool((gen.grid_mask(pixels, grid) > 0).any()):
            pixels = None  # as `label`: an empty mask means no constraint
        fg[i] = pixels
        full[i] = pixels > 0.5 if pixels is not None and lab.pixel_foreground else None
    s.counter.reset()
    meter = Meter(s.device, s.counter)
    per_image = {}
    for src in s.ids[:args.naive_images]:
        others = sorted(set(s.ids) - {src})
        loops = draw_loops(others, args.loops, image_rng(s.cfg.seed, src))
        offsets = []
        for m, t in loops.tolist():
            I_s, I_m, I_t = images[src], images[m], images[t]
            with meter("match"):
                src_xy, trg_xy, score = gen.match(I_s, I_t, lab.candidates, fg[src], fg[t])
            with meter("flow"):
                (g_sm, f_sm), (g_mt, f_mt), (g_ts, f_ts) = gen.flow(I_s, I_m), gen.flow(I_m, I_t), gen.flow(I_t, I_s)
            with meter("compose"):
                label = keep_on_foreground([PairLabel(np.zeros((0, 2), np.float32), src_xy, trg_xy, score)], [(0, 1)],
                                           MaskAtlas([full[src], full[t]]))[0]
                offsets.append(loop_offsets(label.src_xy, label.trg_xy, Flow(f_sm, g_sm, I_s.shape[:2]),
                                            Flow(f_mt, g_mt, I_m.shape[:2]), Flow(f_ts, g_ts, I_t.shape[:2]),
                                            s.sizes[src], s.sizes[t]).offset)
        d = np.concatenate(offsets) if offsets else np.zeros(0)
        per_image[src] = {"image_consistent": float((d <= c.threshold).mean()) if len(d) else float("nan"),
                          "image_offset_mean": float(d.mean()) if len(d) else float("nan"),
                          "loops": len(loops), "entries": len(d)}
    return {"device": s.device, "images": args.naive_images, "loops": args.loops,
            **{f"{k}_s": v for k, v in meter.seconds.items()}, **{f"{k}_cpu": v for k, v in meter.cpu.items()},
            **{f"{k}_forwards": v for k, v in meter.pairs.items()},
            **{f"{k}_images_encoded": v for k, v in meter.images.items()},
            "rss_setup": rss_setup, "rss_naive": rss_mib(), "check": per_image}


def phase_pairhead32(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from sc_imagenet.config import LabelConfig, TrainConfig
    from sc_imagenet.devices import resolve_device
    from sc_imagenet.matching.builder import make_backbones
    from sc_imagenet.matching.cascade import CascadeGenerator
    from sc_imagenet.matching.predictor import PseudoLabelGenerator, take_features

    device = resolve_device(args.device)
    torch.manual_seed(0)
    # the imagenet profile sets no generator field: TrainConfig defaults (mvam, RHM, levels, ...), only the
    # backbone swapped for dense-sift at 256 px (patch 8 → the ViT-B/16-at-512 grid of 32×32)
    cfg = TrainConfig(backbone="dense-sift", input_size=256, device=device)
    lab = LabelConfig()
    backbone, _ = make_backbones(cfg, None, device)
    model = CascadeGenerator(backbone.out_dim, cfg).to(device)
    gen = PseudoLabelGenerator(backbone, model, nms_cells=lab.nms_cells,
                    amp=device.startswith("cuda") and lab.amp in ("auto", True))
    B = lab.batch_pairs
    rng = np.random.default_rng(0)
    hw = (375, 500)  # a typical ImageNet photo
    images = [rng.integers(0, 255, (*hw, 3), dtype=np.uint8) for _ in range(B + 1)]
    feats = gen.encode(images)
    mask = np.zeros(hw, np.float32)
    mask[hw[0] // 6: -hw[0] // 6, hw[1] // 6: -hw[1] // 6] = 1.0  # a centred object box
    fg = gen.grid_mask(mask, feats.grid)
    s_idx, t_idx = list(range(B)), list(range(1, B + 1))

    def batch() -> Any:
        return gen.label_pairs(take_features(feats, s_idx), take_features(feats, t_idx), [hw] * B, [hw] * B,
                               lab.candidates, [fg] * B, [fg] * B)

    batch()  # warm-up
    seconds = [timed(device, batch)[0] for _ in range(args.repeat)]
    return {"device": device, "grid": list(feats.grid), "batch_pairs": B, "candidates": lab.candidates,
            "nms_cells": lab.nms_cells, "seconds_per_batch": seconds,
            "seconds_per_edge": float(np.median(seconds)) / B, "params": sum(p.numel() for p in model.parameters()),
            "rss": rss_mib()}


PHASES = {"stage": phase_stage, "naive": phase_naive, "pairhead32": phase_pairhead32}


# ------------------------------------------------------------------ report


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h ({seconds / 86400:,.2f} days)"


def projection(per_edge: float, cons_per_image: float, edges_per_image: int) -> list[str]:
    n = IMAGENET_SINGLE_INSTANCE
    label, cons = n * edges_per_image * per_edge, n * cons_per_image
    out = [f"    label {n:,} × {edges_per_image} × {per_edge:.4f} s = {label:,.0f} s; consistency {n:,} × "
           f"{cons_per_image:.4f} s = {cons:,.0f} s"]
    out += [f"    {d} device{'s' if d > 1 else ' '} (linear): {hours((label + cons) / d)}" for d in DEVICES]
    return out


def mean_stage(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The stage phase's figures, times averaged over its runs (before and after the naive phase)."""
    out = dict(runs[0])
    for k in [k for k in out if k.endswith(("_s", "_cpu"))]:
        out[k] = sum(r[k] for r in runs) / len(runs)
    for k in ("rss_setup", "rss_label", "rss_consistency"):
        out[k] = max(r[k] for r in runs)
    return out


def report(args: argparse.Namespace, runs: list[dict[str, Any]], nv: dict[str, Any], ph: dict[str, Any]) -> str:
    from sc_imagenet.config import LabelConfig

    st = mean_stage(runs)
    g, loops, ni = st["images"], st["loops"], nv["images"]
    group = LabelConfig().group_size - 1  # the projection's edges per image: the default group, not the build's
    stage_fw = st["pair_forwards"] / g
    naive3_fw, naive4_fw = nv["flow_forwards"] / ni, (nv["flow_forwards"] + nv["match_forwards"]) / ni
    # per image: the stage's totals over its g images; the naive path's over its source images
    stage_s, stage_cpu = ((st[f"label{u}"] + st[f"consistency{u}"]) / g for u in ("_s", "_cpu"))
    naive3_s, naive3_cpu = ((nv[f"flow{u}"] + nv[f"compose{u}"]) / ni for u in ("_s", "_cpu"))
    naive4_s, naive4_cpu = naive3_s + nv["match_s"] / ni, naive3_cpu + nv["match_cpu"] / ni
    per_edge, cons_img = st["label_s"] / st["edges"], st["consistency_s"] / g
    demo_head = st["label_pairs_s"] / st["edges"]
    head32 = ph["seconds_per_edge"]
    dev = st["device"]
    source = "CPU" if dev == "cpu" else dev

    def row(name: str, a: float, b: float, fmt: str) -> str:
        return f"{name:<46}{a:>12{fmt}}{b:>12{fmt}}{b / a:>9.1f}x"

    lines = [
        f"build {args.build}, category {st['wnid']}: one clique of its first {g} kept images (by id), "
        f"{st['edges']} edges, grid {st['grid'][0]}x{st['grid'][1]}, {st['candidates_mean']:.1f} candidates per "
        f"edge after the pixel foreground filter, {loops} loops per image, device {dev}, "
        f"{os.cpu_count()} CPU cores",
        "",
        "what is counted: pair forwards = pairs through the pair head (CascadeGenerator.volume, counted where it "
        "runs), images encoded = images through the backbone; wall = perf_counter around each step, CPU = "
        "process_time (all threads)",
        f"stage (label + consistency of all {g} images, {len(runs)} runs: before and after the naive phase, times "
        f"averaged): {st['pair_forwards']} pair forwards in {st['pair_head_calls']} pair-head calls (batches of "
        f"{st['batch_pairs']}), {st['images_encoded']} images encoded; label "
        + " / ".join(f"{r['label_s']:.2f}" for r in runs) + " s (LabelWork.group: decoding, masks, encoding, "
        "label_pairs, the pixel foreground filter, the rows; label_pairs alone "
        + " / ".join(f"{r['label_pairs_s']:.2f}" for r in runs) + " s), consistency "
        + " / ".join(f"{r['consistency_s']:.3f}" for r in runs) + " s (rows → edge_bank → score_category → "
        "image_consistency per image)",
        f"naive (first {ni} images of the clique, the same {loops} loops each, images decoded and masks made "
        f"beforehand, untimed): per loop 3 x PseudoLabelGenerator.flow ({nv['flow_forwards']} pair forwards, "
        f"{nv['flow_images_encoded']} images encoded, {nv['flow_s']:.1f} s) + 1 x PseudoLabelGenerator.match for the "
        f"candidates of s → t ({nv['match_forwards']} forwards, {nv['match_images_encoded']} images encoded, "
        f"{nv['match_s']:.1f} s) + the pixel foreground filter and loops.loop_offsets ({nv['compose_s']:.2f} s)",
        "",
        f"{'per image':<46}{'stage':>12}{'naive':>12}{'ratio':>10}",
        row("pair forwards (naive: 3 flows / loop)", stage_fw, naive3_fw, ".1f"),
        row("pair forwards (naive: 3 flows + match / loop)", stage_fw, naive4_fw, ".1f"),
        row("images encoded (naive: 3 flows / loop)", st["images_encoded"] / g, nv["flow_images_encoded"] / ni,
            ".1f"),
        row("wall s (naive: 3 flows / loop + compose)", stage_s, naive3_s, ".3f"),
        row("wall s (naive: 3 flows + match / loop)", stage_s, naive4_s, ".3f"),
        row("CPU s (naive: 3 flows / loop + compose)", stage_cpu, naive3_cpu, ".3f"),
        row("CPU s (naive: 3 flows + match / loop)", stage_cpu, naive4_cpu, ".3f"),
        "",
        f"targets at {loops} loops, against the 3-flow naive loop: >= 15x fewer pair forwards: "
        f"{naive3_fw / stage_fw:.1f}x ({'met' if naive3_fw / stage_fw >= 15 else 'NOT met'}); >= 10x wall time: "
        f"{naive3_s / stage_s:.1f}x ({'met' if naive3_s / stage_s >= 10 else 'NOT met'})",
        f"stage costs: {per_edge:.4f} s per edge (label wall / edges, everything in LabelWork.group), "
        f"{demo_head:.4f} s per edge in label_pairs alone, {cons_img * 1000:.2f} ms consistency per image "
        f"({loops} loops)",
        f"naive costs: {nv['flow_s'] / nv['flow_forwards']:.4f} s per PseudoLabelGenerator.flow, "
        f"{nv['match_s'] / max(nv['match_forwards'], 1):.4f} s per PseudoLabelGenerator.match, "
        f"{naive4_s / loops:.3f} s per loop",
        f"peak RSS (ru_maxrss; each phase its own process, read after each step): stage {st['rss_setup']:.0f} MiB "
        f"after set-up (torch, generator, masks), {st['rss_label']:.0f} MiB after label, {st['rss_consistency']:.0f} "
        f"MiB after consistency; naive {nv['rss_setup']:.0f} MiB after set-up, {nv['rss_naive']:.0f} MiB after its "
        f"loops; pair head 32x32 (batch of {ph['batch_pairs']}) {ph['rss']:.0f} MiB",
        "1-min load average at each phase's start (other work on the machine skews wall times): "
        + ", ".join(f"stage {r['load']:.2f}" for r in runs) + f", naive {nv['load']:.2f}, pair head "
        f"{ph['load']:.2f}",
        "cross-check, same images and loops (the stage's flows are float16 as stored, the naive ones float32):",
    ]
    for i, a in st["check"].items():
        b = nv["check"].get(i)
        if b is not None:
            lines.append(f"    {i}: image_consistent stage {a['image_consistent']:.4f} naive "
                         f"{b['image_consistent']:.4f}, mean offset stage {a['image_offset_mean']:.4f} naive "
                         f"{b['image_offset_mean']:.4f}, (candidate, loop) entries {a['entries']} / {b['entries']}")
    lines += [
        "",
        f"projection, label + consistency of {IMAGENET_SINGLE_INSTANCE:,} single-instance images (the paper's count) "
        f"at the default group size {group + 1} ({group} edges per image), from {source} figures of the demo model "
        f"(dense-sift, {st['grid'][0]}x{st['grid'][1]} grid); the ImageNet model (ViT-B/16 at 512 px, 32x32 grid) "
        "costs more per pair: a GPU measurement is needed",
        *projection(per_edge, cons_img, group),
        f"pair head at the ImageNet grid on this {source} ({ph['grid'][0]}x{ph['grid'][1]}: dense-sift at 256 px, "
        f"patch 8, random weights, TrainConfig defaults as the imagenet profile uses them, {ph['params']:,} "
        f"parameters; label defaults: {ph['candidates']} candidates, nms {ph['nms_cells']}, batches of "
        f"{ph['batch_pairs']}): label_pairs {head32:.4f} s per edge ({head32 / demo_head:.1f}x the demo's "
        f"{demo_head:.4f}); batches " + ", ".join(f"{v:.2f}" for v in ph["seconds_per_batch"]) + " s",
        "projection from that per-edge figure (pair head, RHM/PMPS and flow read-out only: decoding and the "
        "ViT-B/16 backbone, once per image, not included; consistency per image as measured above, its cost "
        "does not grow with the grid):",
        *projection(head32, cons_img, group),
        f"the naive loop check (3 flows + match per loop) alone, for comparison: {IMAGENET_SINGLE_INSTANCE:,} x "
        f"{naive4_s:.2f} s = {hours(IMAGENET_SINGLE_INSTANCE * naive4_s)} on 1 device",
    ]
    return "\n".join(lines) + "\n"


def run_phase(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", name, "--build", str(args.build), "--images", str(args.images),
           "--loops", str(args.loops), "--naive-images", str(args.naive_images), "--device", args.device,
           "--repeat", str(args.repeat)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    print(f"[{name}] {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if not lines:
        raise RuntimeError(f"phase {name} printed no result")
    return json.loads(lines[-1][len(RESULT):])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, required=True, help="a finished build (through train, single_instance)")
    ap.add_argument("--images", type=int, default=20, help="clique size (label.group_size's default)")
    ap.add_argument("--loops", type=int, default=100, help="loops per image (consistency.loops's default)")
    ap.add_argument("--naive-images", type=int, default=3,
                    help="source images the naive loop check runs on (~4 x 0.05-0.15 s per loop on a 2-core CPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3, help="timed batches of the 32x32 pair head")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "consistency-cpu.txt")
    ap.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        load = os.getloadavg()[0]  # other work on the machine skews every wall time: reported with them
        print(RESULT + json.dumps({**PHASES[args.phase](args), "load": load}))
        return 0
    if not 1 <= args.naive_images <= args.images:
        ap.error("--naive-images must lie in [1, --images]")
    first = run_phase("stage", args)
    nv = run_phase("naive", args)
    runs = [first, run_phase("stage", args)]
    ph = run_phase("pairhead32", args)
    text = report(args, runs, nv, ph)
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
