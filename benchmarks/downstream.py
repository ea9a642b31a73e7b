"""The downstream study (issue 20, docs/matcher.md "The downstream study"): what a build's release teaches the
reference matcher (`sc_imagenet.matcher`), against baselines, a small labelled set and release variants that
differ only in how pairs and keypoints were selected. Everything is scored on a held-out synthetic test set.

    python benchmarks/downstream.py --json benchmarks/results/downstream-cpu.json
    python benchmarks/downstream.py --build /tmp/b --profile demo --steps 40 --epochs 2 --test-pairs 50   # smaller

The build (`--build`, default builds/bench, profile `--profile`, default `bench`) is made once with the project's
build API through `export` and reused: a complete build is only checked, an interrupted one resumes. Everything
the study makes goes under `--work` (default `<build>/downstream`) and is reused by a rerun: the target data, the
variant releases, every training run (`sc-imagenet pretrain`'s resumable runs, one folder per run and learning
rate, a snapshot `at-<step>.pt` at every validation point) and every score. A rerun with other size settings
trains in another `runs/<tag>/` folder.

Data. Three synthetic datasets with ground truth, generated like the build's data (same categories, sizes and
instance mix) with other seeds (the build's data seed + 600 / 700 / 800), so none of their images is in the
build or in its `eval-data` (+ 500):
- `trn`: `--finetune-pairs` labelled pairs (their true keypoints), the only training data of c and d;
- `val`: `--val-pairs` pairs on which every setting is chosen: for every trained arm the number of steps
  (`--val-points` snapshots of each run) and the learning rate (`--pretrain-lrs`, `--finetune-lrs`), by PCK@0.1
  in the matcher's 256 × 256 frame (`matcher.pretrain.validate`);
- `test`: `--test-pairs` pairs, on which nothing is chosen. Every arm is scored there as `sc-imagenet eval`
  scores it (original pixels, PCK length the target object's box) and the differences are paired bootstrap
  intervals over the same test pairs (`evaluate.pck.paired_difference`, 1,000 resamplings).

Arms (JSON `arms.<arm>`):
- a. `readout`: `nn-refine-disp` on the generator's backbone; `generator`: the build's trained generator. No
  training. Extra: `untrained`, the student matcher at its initial weights (its own random-feature read-out).
- b. `pretrained`: the matcher pre-trained on the build's release (`trn` split, all of it), scored zero-shot.
- c. `finetuned`: the matcher trained from scratch on the `trn` part only.
- d. `pretrained_finetuned`: b's chosen snapshot, then trained like c (the paper's protocol).
- e. release variants, all at the same number of pairs and keypoints per pair, each pre-trained **exactly like
  b** (same steps, learning rates and choice on val; pre-training only, scored zero-shot, no fine-tuning):
  `loop3` (the default selection), `loop2` (forward-backward check), `score` (match confidence), `random`
  (random images and random candidates), `none` (no selection: the top-k candidates, in confidence order, of
  every edge) and `oracle` (the `loop3` pairs with true keypoints).

How the variants are made, without running the generator again: `select`'s own functions
(`stages.select.ranked_images`, `stages.select.select_pairs`) re-run on the
build's `label` candidates and `consistency` scores with `select.rank_by` set to each ranking, on the edges of
the groups `select` put in `trn` (so no variant holds a val image of the build). With the defaults, `loop3`
reproduces `select`'s kept `trn` pairs. Each variant is then cut to the size of the smallest one by a seeded
random draw of pairs (every variant has `select.keypoints` keypoints per pair), and written as a release with
the export writer (`dataset.scimagenet.write_release`: `trn` only, images hard-linked), which the matcher reads
like any release. `oracle` keeps `loop3`'s pairs and source points and puts each point's true target (the
synthetic ground truth) in place of the pseudo-label; a source point without a true match (off the object, or
occluded in the target) is replaced by the pair's next candidate that has one. When `loop3` after the cut is
the build's release `trn` split itself (the bench and demo profiles pass `select`'s pairs through `pairs`, and
`loop3` is usually the smallest variant), `loop3` is not trained again: it is `pretrained`.

Agreement (JSON `agreement.<variant>`, `release` = the build's full `trn` split): on up to `--agreement-pairs`
pairs of each release, the share of its labels that the untrained student already matches (its read-out within
0.1 of the target object's size, i.e. `validate` of the initial matcher against the labels), the spread of the
source keypoints (per pair: the root mean of the x and y variances over the source object's size; mean over
pairs) and the labels' strict accuracy against the synthetic truth (`label_pck@0.1`).

JSON: `arms.<arm>.pck@0.05`, `pck@0.1` (per keypoint), `pck_per_pair@α`, their `_ci95`; `differences.<a>-<b>` =
[estimate, low, high] at PCK@0.1 (`differences@0.05`: at 0.05); `oracle_share` = (PCK_loop3 − PCK_random) /
(PCK_oracle − PCK_random) at PCK@0.1 (null when the denominator is 0); `chosen.<arm>` (steps, lr, the val curve);
`variants`, `agreement`, `data`, `settings`; `wall_s` per part (training: the runs' own step times and
validation, so a resumed rerun still reports the full cost). The JSON is rewritten after every arm
(`"complete": false` until the end).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sc_imagenet.boxes import object_size
from sc_imagenet.build import BuildPlan, plan_build, run_build_locally, stage_states, upstream_of
from sc_imagenet.config import BuildConfig, load_config
from sc_imagenet.dataset.quality import TruthOracle
from sc_imagenet.dataset.scimagenet import RELEASE_JSON, ExportPair, float32_json, read_release, write_release
from sc_imagenet.dataset.selection import stable_uniform
from sc_imagenet.devices import resolve_device
from sc_imagenet.evaluate import METHODS, MethodContext
from sc_imagenet.evaluate.benchmarks import load_benchmark
from sc_imagenet.evaluate.benchmarks.base import Benchmark
from sc_imagenet.evaluate.benchmarks.command import generator_backbone
from sc_imagenet.evaluate.benchmarks.score import per_pair_hits, score_benchmark
from sc_imagenet.evaluate.methods import Method
from sc_imagenet.evaluate.pck import paired_difference
from sc_imagenet.io.manifest import category_shards, read_shard, read_stage_record, shard_path
from sc_imagenet.matcher.checkpoint import build_matcher, load_matcher, read_matcher
from sc_imagenet.matcher.data import PairDataset, TrainingPair, TrainingSource, load_pairs, release_pairs
from sc_imagenet.matcher.predictor import Matcher
from sc_imagenet.matcher.pretrain import pretrain, validate
from sc_imagenet.matcher.settings import MatcherConfig, PretrainSettings
from sc_imagenet.stages.export import ExportFigures
from sc_imagenet.stages.select import category_edges, category_images, ranked_images, select_pairs
from sc_imagenet.stages.train import TrainFigures, backbone_checkpoint
from sc_imagenet.synth import generate_dataset, is_complete
from sc_imagenet.synth.groundtruth import true_correspondence

ALPHAS = (0.05, 0.1)
HEADLINE = 0.1  # differences, the oracle share and every choice on val are at PCK@0.1
SELECTIONS = ("loop3", "loop2", "score", "random")  # `select.rank_by` values
VARIANTS = (*SELECTIONS, "none", "oracle")
ARMS = ("readout", "generator", "untrained", "pretrained", "finetuned", "pretrained_finetuned", *VARIANTS)
DIFFERENCES = (("pretrained", "readout"), ("pretrained", "generator"), ("pretrained", "untrained"),
               ("generator", "readout"), ("pretrained_finetuned", "finetuned"),
               ("pretrained_finetuned", "pretrained"), ("loop3", "random"), ("loop3", "none"), ("loop3", "loop2"),
               ("loop3", "score"), ("oracle", "loop3"), ("oracle", "random"))
PART_SEED_OFFSETS = {"trn": 600, "val": 700, "test": 800}  # the build's eval-data is + 500
STUDY_STAGES = sorted(upstream_of(["export"]))  # the report is not needed (`sc-imagenet build` adds it)


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, help="write every figure here (rewritten after each arm)")
    p.add_argument("--build", type=Path, default=Path("builds/bench"), help="the build folder (made when missing)")
    p.add_argument("--profile", default="bench", help="profile name or file the build is made with")
    p.add_argument("--work", type=Path, help="where the study's files go (default <build>/downstream)")
    p.add_argument("--steps", type=int, default=1500, help="pre-training steps of every release arm")
    p.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs (c, d) on the trn part")
    p.add_argument("--val-points", type=int, default=3, help="snapshots of every run scored on val (evenly spaced)")
    p.add_argument("--pretrain-lrs", type=float, nargs="+", default=[3e-4], help="chosen on val (b, e)")
    p.add_argument("--finetune-lrs", type=float, nargs="+", default=[1e-4, 3e-4], help="chosen on val (c, d)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=256, help="the matcher's input side (CATs: 256)")
    p.add_argument("--grid", type=int, default=16, help="the matcher's cost-volume side")
    p.add_argument("--finetune-pairs", type=int, default=100, help="labelled target pairs of c and d")
    p.add_argument("--val-pairs", type=int, default=200)
    p.add_argument("--test-pairs", type=int, default=500)
    p.add_argument("--agreement-pairs", type=int, default=200, help="pairs of each release for the agreement")
    p.add_argument("--seed", type=int, default=0, help="pair sampling, the variants' cut, training")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes per training run")
    args = p.parse_args(argv)
    for name in ("steps", "epochs", "val_points", "finetune_pairs", "val_pairs", "test_pairs", "agreement_pairs",
                 "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    args.work = args.work or args.build / "downstream"
    return args


# ---------------------------------------------------------------------------------------------- the build


def ensure_build(profile: str, out: Path) -> tuple[BuildPlan, dict[str, Any]]:
    """The build through `export`, made or resumed with the project's build API; skipped stages cost a check."""
    plan = plan_build(load_config(profile), Path(profile).stem, out, stages=STUDY_STAGES)
    states = {s["stage"]: s["state"] for s in stage_states(plan.out_dir, plan.cfg)} if out.exists() else {}
    reused = all(states.get(s) == "complete" for s in plan.stages)
    log(f"[downstream] build {plan.out_dir}: " + ("complete, reused" if reused else "building (resumes by itself)"))
    started = time.perf_counter()
    run_build_locally(plan, log=log, progress=sys.stderr.isatty())
    recorded = sum(read_stage_record(plan.stage_dir(s)).wall_s for s in plan.stages)
    return plan, {"reused": reused, "this_run_s": round(time.perf_counter() - started, 1),
                  "stages_recorded_s": round(recorded, 1)}


# ---------------------------------------------------------------------------------------------- target data


def part_images(pairs: int, categories: int) -> int:
    """Images per category of a part: about one per pair, so most pairs share no image (independent pairs for
    the bootstrap); sample_eval_pairs keeps only single-instance images, ~80 % of them."""
    return max(8, math.ceil(pairs / categories))


def target_parts(cfg: BuildConfig, work: Path, pairs: dict[str, int]) -> dict[str, dict[str, Any]]:
    """trn / val / test: synthetic datasets like the build's data with other seeds (made once, kept)."""
    base = cfg.data.synthetic
    out = {}
    for part, n_pairs in pairs.items():
        synth = base.model_copy(update={"seed": base.seed + PART_SEED_OFFSETS[part], "include_broken": False,
                                        "include_non_object": False,
                                        "images_per_category": part_images(n_pairs, base.n_object_categories)})
        root = work / "data" / part
        if not is_complete(root, synth):
            shutil.rmtree(root, ignore_errors=True)
            generate_dataset(root, synth, progress=False)
        out[part] = {"root": root, "seed": synth.seed, "images_per_category": synth.images_per_category}
    return out


# ---------------------------------------------------------------------------------------------- variants


@dataclass
class VariantSet:
    """Each variant's kept rows (`select_pairs` rows plus `wnid`), and every edge's candidate source points
    (label order) for the rows `oracle` may need."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    candidates: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    before_cut: dict[str, int] = field(default_factory=dict)


def trn_groups(select_dir: Path, wnids: Iterable[str]) -> set[tuple[str, int]]:
    """(wnid, group) of the groups `select` put in `trn`: the variants' edges come from these only."""
    out = set()
    for wnid in wnids:
        t = read_shard(shard_path(select_dir, wnid), columns=["group", "split"])
        out.update((wnid, int(g)) for g, s in zip(t["group"].to_pylist(), t["split"].to_pylist(), strict=True)
                   if s == "trn")
    return out


def selection_variants(plan: BuildPlan) -> VariantSet:
    """Every variant's kept trn rows, category by category (one category's edges in memory)."""
    cfg, s = plan.cfg, plan.cfg.select
    inputs = {n: plan.stage_dir(n) for n in ("consistency", "label", "single_instance")}
    images = {r: ranked_images(inputs["consistency"], r, s.scope, s.fraction, cfg.seed) for r in SELECTIONS}
    everyone = category_images(images["score"].assign(selected=True))  # `none`: no image is left out
    images_of = {r: category_images(table) for r, table in images.items()}
    wnids = category_shards(inputs["consistency"])
    groups = trn_groups(plan.stage_dir("select"), wnids)
    out = VariantSet({v: [] for v in (*SELECTIONS, "none")})
    for wnid in wnids:
        edges = category_edges(inputs, wnid)
        edges = edges[[(wnid, int(g)) in groups for g in edges["group"]]]
        runs = {r: (images_of[r](wnid), r, s.pairs_per_image) for r in SELECTIONS}
        # `none`: the top-k in label (confidence) order of every edge with k candidates, all pairs of an image
        runs["none"] = (everyone(wnid), "score", len(edges) + 1)
        for name, (table, rank_by, per_image) in runs.items():
            rows = select_pairs(edges, table, set(), rank_by, s.keypoints, per_image, s.point_threshold, cfg.seed,
                                s.point_order)
            out.rows[name] += [{**r, "wnid": wnid} for r in rows if r["keep"]]
        kept = {(r["src_id"], r["trg_id"]) for r in out.rows["loop3"] if r["wnid"] == wnid}
        for e in edges.itertuples(index=False):
            if (e.src_id, e.trg_id) in kept:
                out.candidates[(e.src_id, e.trg_id)] = np.asarray(e.src_kps, np.float32).reshape(-1, 2)
    return out


def cut(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """`n` of `rows` by a seeded draw that depends only on the pair (the same pair is kept or dropped in every
    variant that has it), back in (category, source, target) order."""
    order = sorted(rows, key=lambda r: stable_uniform(seed, "downstream-cut", r["wnid"], r["src_id"], r["trg_id"]))
    return sorted(order[:n], key=lambda r: (r["wnid"], r["src_id"], r["trg_id"]))


def oracle_rows(loop3: list[dict[str, Any]], candidates: dict[tuple[str, str], np.ndarray], data_root: Path,
                keypoints: int) -> list[dict[str, Any]]:
    """`loop3`'s pairs with true targets: its chosen source points first, then the edge's other candidates
    (label order), keeping the first `keypoints` that have a true match in the target."""
    out = []
    for r in loop3:
        src = candidates[(r["src_id"], r["trg_id"])]
        chosen = list(r["candidates"])
        order = chosen + [i for i in range(len(src)) if i not in set(chosen)]
        true, valid = true_correspondence(data_root, r["src_id"], r["trg_id"], src[order])
        keep = np.flatnonzero(valid)[:keypoints]
        if len(keep):
            out.append({**r, "src_kps": src[order][keep].reshape(-1).tolist(),
                        "trg_kps": true[keep].reshape(-1).tolist()})
    return out


def export_pairs(rows: list[dict[str, Any]], data_root: Path, variant: str) -> Iterable[ExportPair]:
    for r in rows:
        yield ExportPair(
            wnid=r["wnid"], split="trn", src_id=r["src_id"], trg_id=r["trg_id"],
            src_source=data_root / r["src_rel_path"], trg_source=data_root / r["trg_rel_path"],
            src_rel_path=r["src_rel_path"], trg_rel_path=r["trg_rel_path"],
            src_size=(int(r["src_width"]), int(r["src_height"])), trg_size=(int(r["trg_width"]), int(r["trg_height"])),
            src_kps=np.asarray(r["src_kps"], np.float32), trg_kps=np.asarray(r["trg_kps"], np.float32),
            src_box=list(r["src_box"]), trg_box=list(r["trg_box"]),
            extra={"variant": variant, "pair_score": float32_json(r["pair_score"])})


def written_key(root: Path) -> str | None:
    try:
        return json.loads((root / RELEASE_JSON).read_text()).get("downstream_key")
    except (OSError, ValueError):
        return None


def write_variant(root: Path, variant: str, rows: list[dict[str, Any]], data_root: Path, key: str) -> None:
    """The variant as a release (trn only); kept when one with the same key is there already."""
    if written_key(root) == key:
        return
    write_release(root, export_pairs(rows, data_root, variant), "hardlink", info={"downstream_key": key})


def release_labels(root: Path) -> dict[tuple[str, str], np.ndarray]:
    """The build release's trn pairs: (source id, target id) → source and target keypoints side by side."""
    return {(p.annotation["src_image_id"], p.annotation["trg_image_id"]): np.hstack([p.src_kps, p.trg_kps])
            for p in read_release(root, "trn", open_images=False)}


def same_pairs(rows: list[dict[str, Any]], labels: dict[tuple[str, str], np.ndarray]) -> bool:
    if len(rows) != len(labels):
        return False
    for r in rows:
        mine = np.hstack([np.asarray(r["src_kps"], np.float32).reshape(-1, 2),
                          np.asarray(r["trg_kps"], np.float32).reshape(-1, 2)])
        theirs = labels.get((r["src_id"], r["trg_id"]))
        if theirs is None or not np.array_equal(mine, theirs):
            return False
    return True


def make_variants(plan: BuildPlan, release: Path, work: Path, seed: int) -> dict[str, dict[str, Any]]:
    """Every variant's release path and counts, cut to the smallest variant's size."""
    found = selection_variants(plan)
    sizes = {v: len(r) for v, r in found.rows.items()}
    n = min(sizes.values())
    if n == 0:
        empty = ", ".join(v for v, k in sizes.items() if k == 0)
        raise SystemExit(f"error: no trn pair in variant(s) {empty} of {plan.out_dir}: the build is too small")
    rows = {v: cut(r, n, seed) for v, r in found.rows.items()}
    rows["oracle"] = oracle_rows(rows["loop3"], found.candidates, plan.data_root, plan.cfg.select.keypoints)
    sizes["oracle"] = len(rows["oracle"])
    labels = release_labels(release)
    loop3_is_release = same_pairs(rows["loop3"], labels)
    out = {}
    for v in VARIANTS:
        if v == "loop3" and loop3_is_release:
            path = release
        else:
            path = work / "releases" / v / "SC-ImageNet"
            key = f"{v}:{plan.fingerprints['select']}:{n}:{seed}"
            write_variant(path, v, rows[v], plan.data_root, key)
        out[v] = {"release": str(path), "pairs_before_cut": sizes[v], "pairs": len(rows[v]),
                  "keypoints": int(sum(len(r["src_kps"]) // 2 for r in rows[v])),
                  "images": len({i for r in rows[v] for i in (r["src_id"], r["trg_id"])}),
                  "is_build_release": path == release}
    # the check that the re-run selection is `select`'s: true whenever `pairs` passes select's pairs through
    out["loop3"]["reproduces_release_trn"] = same_pairs(found.rows["loop3"], labels)
    return out


# ---------------------------------------------------------------------------------------------- agreement


def spread(pair: TrainingPair) -> float:
    """Root mean of the x and y variances of the source keypoints, over the source object's size."""
    size = float(object_size(pair.src_box)) if pair.src_box is not None else float("nan")
    return float(np.sqrt(np.var(pair.src_kps, axis=0).mean()) / size) if size > 0 else float("nan")


def label_accuracy(oracle: TruthOracle, root: Path, index: Sequence[int]) -> float:
    """Strict PCK@0.1 of the labels of the release's trn pairs `index` against the synthetic truth."""
    pairs = read_release(root, "trn", open_images=False)
    hits = total = 0
    for i in index:
        p = pairs[i]
        t = oracle.truth(p.annotation["src_image_id"], p.annotation["trg_image_id"], p.src_kps, p.trg_kps)
        hits += int((t.error <= HEADLINE).sum())
        total += len(t.error)
    return hits / max(total, 1)


def agreement(root: Path, net: torch.nn.Module, oracle: TruthOracle, n: int, batch: int, device: str,
              seed: int) -> dict[str, Any]:
    """How much of a release the untrained student already knows (see the module docstring)."""
    pairs = release_pairs(root, "trn")
    index = sorted(np.random.default_rng([seed, 20]).choice(len(pairs), min(n, len(pairs)), replace=False).tolist())
    sample = [pairs[i] for i in index]
    matched = validate(net, PairDataset(sample, net.cfg.input_size), batch, device)
    return {"pairs": len(sample), f"matched@{HEADLINE:g}": matched[f"val_pck@{HEADLINE}"],
            "spread": float(np.nanmean([spread(p) for p in sample])),
            f"label_pck@{HEADLINE:g}": label_accuracy(oracle, root, index)}


# ---------------------------------------------------------------------------------------------- training


@dataclass
class Choice:
    """The snapshot chosen on val: its file, steps and learning rate; the curve over (lr, steps)."""

    checkpoint: Path
    steps: int
    lr: float
    curve: list[dict[str, float]]
    train_s: float
    val_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "steps": self.steps, "lr": self.lr, "curve": self.curve}


def budgets(total: int, points: int) -> list[int]:
    """`points` step counts evenly spaced up to `total` (distinct, at least 1)."""
    return sorted({max(1, round(total * (i + 1) / points)) for i in range(points)})


def run_settings(args: argparse.Namespace, lr: float) -> PretrainSettings:
    # val_pairs 0: the release's own val split is not scored (the target val part chooses); epochs only bounds
    # the run, max_steps sets each budget
    return PretrainSettings(epochs=100_000, batch_size=args.batch_size, lr=lr, seed=args.seed, val_pairs=0,
                            workers=args.workers)


def progress_printer(name: str) -> Callable[[int, int, dict[str, Any]], None]:
    def on_step(step: int, total: int, row: dict[str, Any]) -> None:
        if step == total or step % max(1, total // 10) == 0:
            log(f"[downstream] {name}: step {step}/{total}, loss {row['loss']:.3f}")
    return on_step


def train_run(name: str, data: Path | TrainingSource, out: Path, init: Path | None, cfg: MatcherConfig,
              settings: PretrainSettings, steps: list[int], val_set: PairDataset, device: str) -> list[dict[str, Any]]:
    """One run (one learning rate) trained through `steps`, a snapshot and its val score at each: the curve."""
    curve_path = out / "val.json"
    curve = json.loads(curve_path.read_text()) if curve_path.exists() else {}
    for b in steps:
        snap = out / f"at-{b}.pt"
        if not snap.exists():
            res = pretrain(data, out, init, config=None if init is not None else cfg,
                           settings=settings.model_copy(update={"max_steps": b}), device=device, log=log,
                           on_step=progress_printer(name))
            if res.steps != b:
                raise SystemExit(f"error: {out / 'matcher.pt'} is at step {res.steps}, past the snapshot at {b}; "
                                 "delete the folder or pass another --work")
            shutil.copyfile(out / "matcher.pt", snap)
        if str(b) not in curve:
            started = time.perf_counter()
            scores = validate(load_matcher(snap, device), val_set, settings.batch_size, device)
            curve[str(b)] = {**scores, "seconds": time.perf_counter() - started}
            curve_path.write_text(json.dumps(curve, indent=2))
    rows = read_matcher(out / "matcher.pt")["rows"]
    return [{"lr": settings.lr, "steps": b, **{k: v for k, v in curve[str(b)].items()},
             "train_s": float(sum(r["seconds"] for r in rows if r["step"] <= b))} for b in steps]


def train_and_choose(name: str, data: Path | TrainingSource, out: Path, init: Path | None, lrs: Sequence[float],
                     total_steps: int, args: argparse.Namespace, cfg: MatcherConfig, val_set: PairDataset,
                     device: str) -> Choice:
    """One run per learning rate, snapshots at `--val-points` budgets; the best (lr, steps) on val PCK@0.1."""
    curve = []
    for lr in lrs:
        run = out / f"lr-{lr:g}"
        curve += train_run(f"{name} lr {lr:g}", data, run, init, cfg, run_settings(args, lr),
                           budgets(total_steps, args.val_points), val_set, device)
    best = max(curve, key=lambda c: (c[f"val_pck@{HEADLINE}"], c["val_pck@0.05"], -c["steps"], -c["lr"]))
    train_s = sum(max(c["train_s"] for c in curve if c["lr"] == lr) for lr in lrs)
    val_s = sum(c["seconds"] for c in curve)
    return Choice(out / f"lr-{best['lr']:g}" / f"at-{best['steps']}.pt", best["steps"], best["lr"],
                  [{k: round(v, 4) if isinstance(v, float) else v for k, v in c.items()} for c in curve],
                  train_s, val_s)


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    summary: dict[str, Any]
    pair_ids: list[str]
    hits: dict[float, np.ndarray]
    counts: np.ndarray
    seconds: float


def file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def score_arm(arm: str, make: Callable[[], Method], key: str, bench: Benchmark, cache: Path, seed: int) -> Scored:
    """The arm scored on the test pairs as `sc-imagenet eval` scores it; kept in `cache` under `key`."""
    path = cache / f"{arm}.json"
    if path.exists():
        doc = json.loads(path.read_text())
        if doc["key"] == key:
            return Scored(doc["summary"], doc["pair_ids"], {a: np.asarray(doc["hits"][str(a)]) for a in ALPHAS},
                          np.asarray(doc["counts"]), doc["seconds"])
    started = time.perf_counter()
    summary, cols = score_benchmark(make(), bench, ALPHAS, arm, seed=seed)
    seconds = time.perf_counter() - started
    ids, hits, counts = per_pair_hits(cols, ALPHAS)
    keep = [k for k in summary if k.startswith("pck") or k in ("pairs_scored", "n_keypoints", "seconds_per_pair")]
    summary = {k: summary[k] for k in keep}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "summary": summary, "pair_ids": ids, "counts": counts.tolist(),
                                "hits": {str(a): h.tolist() for a, h in hits.items()}, "seconds": seconds}))
    return Scored(summary, ids, hits, counts, seconds)


def difference(a: Scored, b: Scored, alpha: float, seed: int) -> list[float]:
    if a.pair_ids != b.pair_ids:
        raise ValueError("arms scored on different test pairs")
    return [round(x, 4) for x in paired_difference(a.hits[alpha], b.hits[alpha], a.counts, 1000, seed)]


def oracle_share(arms: dict[str, dict[str, Any]]) -> float | None:
    key = f"pck@{HEADLINE:g}"
    gap = arms["oracle"][key] - arms["random"][key]
    return None if gap == 0 else round((arms["loop3"][key] - arms["random"][key]) / gap, 4)


# ---------------------------------------------------------------------------------------------- report


def fmt_pck(arm: dict[str, Any], key: str) -> str:
    lo, hi = arm[f"{key}_ci95"]
    return f"{arm[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def table(doc: dict[str, Any]) -> str:
    lines = [f"test: {doc['data']['test']['pairs']} pairs, {doc['data']['test']['keypoints']} keypoints; "
             "[95 % bootstrap interval over pairs]",
             f"{'arm':<22}{'PCK@0.05':<24}{'PCK@0.1':<24}{'per pair @0.1':<15}chosen on val"]
    for name, arm in doc["arms"].items():
        chosen = doc["chosen"].get(name)
        how = f"{chosen['steps']} steps, lr {chosen['lr']:g}" if chosen else ""
        lines.append(f"{name:<22}{fmt_pck(arm, 'pck@0.05'):<24}{fmt_pck(arm, 'pck@0.1'):<24}"
                     f"{arm['pck_per_pair@0.1']:<15.3f}{how}")
    lines.append("paired differences at PCK@0.1 [95 % paired bootstrap over test pairs]")
    for name, (d, lo, hi) in doc["differences"].items():
        lines.append(f"  {name:<40}{d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    share = doc.get("oracle_share")
    lines.append(f"oracle share (loop3 − random) / (oracle − random): {'n/a' if share is None else f'{share:.3f}'}")
    lines.append(f"{'release':<10}{'pairs':>7}{'(before cut)':>14}{'keypoints':>11}{'images':>8}"
                 f"{'label PCK@0.1':>15}{'matched by untrained':>22}{'spread':>8}")
    for name, agree in doc["agreement"].items():
        v = doc["variants"].get(name, doc["release"])
        lines.append(f"{name:<10}{v['pairs']:>7}{v.get('pairs_before_cut', v['pairs']):>14}{v['keypoints']:>11}"
                     f"{v['images']:>8}{agree['label_pck@0.1']:>15.3f}{agree['matched@0.1']:>22.3f}"
                     f"{agree['spread']:>8.3f}")
    wall = doc["wall_s"]
    lines.append("wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in wall.items() if isinstance(v, float | int)))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the study


class Study:
    """The study's state: what is computed so far, written to `--json` after every arm."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = resolve_device(args.device)
        self.cfg = MatcherConfig(input_size=args.image_size, grid=args.grid)
        self.doc: dict[str, Any] = {"complete": False, "settings": {k: str(v) if isinstance(v, Path) else v
                                                                     for k, v in vars(args).items()},
                                    "device": self.device, "arms": {}, "chosen": {}, "differences": {},
                                    "differences@0.05": {}, "wall_s": {"train": {}, "val": {}, "test": {}}}
        self.scored: dict[str, Scored] = {}
        self.runs = self.cache = Path()

    def folders(self, plan: BuildPlan) -> None:
        """Runs and scores live under a tag of everything that changes them: the build's release (its `export`
        fingerprint: a rebuilt build trains afresh), the matcher's size and the data sizes."""
        a = self.args
        tag = (f"{plan.fingerprints['export'][:8]}-s{a.image_size}-g{a.grid}-b{a.batch_size}-seed{a.seed}"
               f"-ft{a.finetune_pairs}-val{a.val_pairs}")
        self.runs = a.work / "runs" / tag
        self.cache = self.runs / f"test-{a.test_pairs}"

    def write(self) -> None:
        if self.args.json is not None:
            self.args.json.parent.mkdir(parents=True, exist_ok=True)
            self.args.json.write_text(json.dumps(self.doc, indent=2) + "\n")

    def timed(self, part: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = fn()
        self.doc["wall_s"][part] = round(time.perf_counter() - started, 1)
        return value

    def score(self, arm: str, make: Callable[[], Method], key: str, bench: Benchmark) -> None:
        s = score_arm(arm, make, key, bench, self.cache, self.args.seed)
        self.scored[arm] = s
        self.doc["arms"][arm] = s.summary
        self.doc["wall_s"]["test"][arm] = round(s.seconds, 1)
        log(f"[downstream] {arm}: PCK@0.05 {s.summary['pck@0.05']:.3f}, PCK@0.1 {s.summary['pck@0.1']:.3f}")
        self.write()

    def score_matcher(self, arm: str, choice: Choice, bench: Benchmark, extra: dict[str, Any] | None = None) -> None:
        self.doc["chosen"][arm] = {**choice.as_dict(), **(extra or {})}
        self.doc["wall_s"]["train"][arm] = round(choice.train_s, 1)
        self.doc["wall_s"]["val"][arm] = round(choice.val_s, 1)
        self.score(arm, lambda: Matcher(load_matcher(choice.checkpoint, self.device)), file_key(choice.checkpoint),
                   bench)

    def reuse(self, arm: str, same: str) -> None:
        """`arm` trained on exactly `same`'s release: its run and scores, no cost of its own."""
        self.scored[arm] = self.scored[same]
        self.doc["arms"][arm] = self.doc["arms"][same]
        self.doc["chosen"][arm] = {**self.doc["chosen"][same], "same_run_as": same}
        for part in ("train", "val", "test"):
            self.doc["wall_s"][part][arm] = 0.0
        log(f"[downstream] {arm}: the same release as {same}, so the same run and scores")
        self.write()

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        plan, release, generator = self.build()
        test, trn, val_set = self.target_data(plan)
        variants = self.timed("variants", lambda: make_variants(plan, release, self.args.work, self.args.seed))
        self.doc["variants"] = variants
        untrained = self.measure_agreement(plan, release, variants)
        self.without_training(plan, generator, untrained, test)
        pretrained = self.pretraining(release, variants, val_set, test)
        self.finetuning(trn, pretrained, val_set, test)
        self.finish(started)
        return self.doc

    def build(self) -> tuple[BuildPlan, Path, Path]:
        """(plan, release, generator checkpoint) of the study's build, made or reused."""
        plan, build = self.timed("build", lambda: ensure_build(self.args.profile, self.args.build))
        self.folders(plan)
        release = ExportFigures.read(plan.stage_dir("export")).release_path(plan.out_dir)
        generator = TrainFigures.read(plan.stage_dir("train")).checkpoint_path(plan.out_dir)
        if release is None or generator is None:
            raise SystemExit(f"error: {plan.out_dir} records no release or no generator")
        self.doc.update(build={"folder": str(plan.out_dir), "profile": self.args.profile, **build},
                        release_path=str(release), generator=str(generator))
        return plan, release, generator

    def target_data(self, plan: BuildPlan) -> tuple[Benchmark, TrainingSource, PairDataset]:
        """(test benchmark, trn source, val set) of the synthetic target parts."""
        a = self.args
        parts = self.timed("target_data", lambda: target_parts(
            plan.cfg, a.work, {"trn": a.finetune_pairs, "val": a.val_pairs, "test": a.test_pairs}))
        test = load_benchmark("synthetic", parts["test"]["root"], "all", a.test_pairs, a.seed)
        trn = TrainingSource("synthetic", parts["trn"]["root"], "all", a.finetune_pairs, a.seed)
        val = load_pairs(TrainingSource("synthetic", parts["val"]["root"], "all", a.val_pairs, a.seed))
        counts = {"trn": len(load_pairs(trn)), "val": len(val), "test": len(test.pairs)}
        self.doc["data"] = {part: {**{k: str(v) if isinstance(v, Path) else v for k, v in info.items()},
                                   "pairs": counts[part]} for part, info in parts.items()}
        self.doc["data"]["test"]["keypoints"] = int(sum(np.asarray(p.valid).sum() for p in test.pairs))
        return test, trn, PairDataset(val, a.image_size)

    def measure_agreement(self, plan: BuildPlan, release: Path, variants: dict[str, dict[str, Any]]) -> torch.nn.Module:
        """The agreement figures of the release and every variant; returns the untrained student they use."""
        a = self.args
        labels = release_labels(release)
        self.doc["release"] = {"pairs": len(labels), "keypoints": int(sum(len(v) for v in labels.values())),
                               "images": len({i for k in labels for i in k})}
        torch.manual_seed(a.seed)  # the student's initial weights, drawn as `pretrain` draws them
        untrained = build_matcher(self.cfg).to(self.device)
        oracle = TruthOracle(plan.data_root)
        releases = [("release", release), *((v, Path(variants[v]["release"])) for v in VARIANTS)]
        self.doc["agreement"] = self.timed("agreement", lambda: {
            name: agreement(path, untrained, oracle, a.agreement_pairs, a.batch_size, self.device, a.seed)
            for name, path in releases})
        self.write()
        return untrained

    def without_training(self, plan: BuildPlan, generator: Path, untrained: torch.nn.Module, test: Benchmark) -> None:
        """a: the read-out and the generator on the generator's backbone; the untrained student."""
        backbone, size = generator_backbone(generator)
        ctx = MethodContext(backbone, self.device, {"input_size": size},
                            {"generator": generator, "backbone_checkpoint": backbone_checkpoint(plan.cfg)})
        self.score("readout", lambda: METHODS["nn-refine-disp"](ctx), f"nn-refine-disp:{backbone}:{size}", test)
        self.score("generator", lambda: METHODS["generator"](ctx), f"generator:{file_key(generator)}", test)
        self.score("untrained", lambda: Matcher(untrained), f"untrained:{self.args.seed}:{self.cfg.model_dump_json()}",
                   test)

    def pretraining(self, release: Path, variants: dict[str, dict[str, Any]], val_set: PairDataset,
                    test: Benchmark) -> Choice:
        """b and e: pre-training only, scored zero-shot. An arm whose release was already trained on (loop3 when it
        is the build's release) is that arm, not a second run. Returns b's choice (d starts from it)."""
        a = self.args
        trained: dict[str, Choice] = {}
        for arm, path in [("pretrained", release), *((v, Path(variants[v]["release"])) for v in VARIANTS)]:
            same = next((t for t in trained if self.doc["chosen"][t]["release"] == str(path)), None)
            if same is not None:
                trained[arm] = trained[same]
                self.reuse(arm, same)
                continue
            trained[arm] = train_and_choose(arm, path, self.runs / arm, None, a.pretrain_lrs, a.steps, a, self.cfg,
                                            val_set, self.device)
            self.score_matcher(arm, trained[arm], test, {"release": str(path)})
        return trained["pretrained"]

    def finetuning(self, trn: TrainingSource, pretrained: Choice, val_set: PairDataset, test: Benchmark) -> None:
        """c and d: the small labelled target set, from scratch and from b's chosen snapshot."""
        a = self.args
        total = a.epochs * math.ceil(self.doc["data"]["trn"]["pairs"] / a.batch_size)
        from_b = self.runs / "pretrained_finetuned" / f"from-lr-{pretrained.lr:g}-at-{pretrained.steps}"
        for arm, init, out in (("finetuned", None, self.runs / "finetuned"),
                               ("pretrained_finetuned", pretrained.checkpoint, from_b)):
            choice = train_and_choose(arm, trn, out, init, a.finetune_lrs, total, a, self.cfg, val_set, self.device)
            self.score_matcher(arm, choice, test)

    def finish(self, started: float) -> None:
        """The paired differences, the oracle share, the totals; the JSON marked complete."""
        for a, b in DIFFERENCES:
            self.doc["differences"][f"{a}-{b}"] = difference(self.scored[a], self.scored[b], HEADLINE, self.args.seed)
            self.doc["differences@0.05"][f"{a}-{b}"] = difference(self.scored[a], self.scored[b], 0.05,
                                                                  self.args.seed)
        self.doc["oracle_share"] = oracle_share(self.doc["arms"])
        self.doc["arms"] = {a: self.doc["arms"][a] for a in ARMS}
        wall = self.doc["wall_s"]
        for part in ("train", "val", "test"):
            wall[f"{part}_total"] = round(sum(wall[part].values()), 1)
        wall["this_run"] = round(time.perf_counter() - started, 1)
        self.doc["complete"] = True
        self.write()


def main(argv: Sequence[str] | None = None) -> None:
    doc = Study(parse_args(argv)).run()
    print(table(doc))


if __name__ == "__main__":
    main()
