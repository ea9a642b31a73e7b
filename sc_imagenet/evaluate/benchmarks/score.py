"""Score a keypoint-transfer method (`sc_imagenet.evaluate.methods`) on a loaded benchmark.

    bench = load_benchmark("pf-willow", "/data/PF-WILLOW")
    result, rows = score_benchmark(METHODS["nn"](MethodContext()), bench)
    result["pck@0.1"], result["pck@0.1_ci95"], result["pairs_skipped"]

Each pair's two images are decoded (`load_rgb`); one that cannot be (missing, truncated, not an
image) makes the pair *skipped*: counted, listed with its reason, left out of every PCK, never a
crash. The method is called once per pair with the source keypoints that count (`valid`), and a
keypoint is correct iff ‖pred − true‖₂ ≤ α × the pair's PCK length (`pck.pck_from_distances`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sc_imagenet.evaluate.benchmarks.base import Benchmark
from sc_imagenet.evaluate.methods import Method
from sc_imagenet.evaluate.pck import hits_from_distances, paired_difference, pck_from_distances
from sc_imagenet.io.images import load_rgb

DEFAULT_ALPHAS = (0.05, 0.1, 0.15)
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

# --predictions columns, one row per scored keypoint of every listed pair (skipped pairs included)
PREDICTION_COLUMNS = {
    "benchmark": "benchmark name (pf-willow, pf-pascal, spair, synthetic)",
    "split": "the split scored",
    "method": "evaluation method name",
    "pair_id": "the pair's id (SPair: its Layout line; PF-WILLOW: `<subset>/<src>-<trg>`; PF-PASCAL: `<src>-<trg>`)",
    "category": "the pair's class / subset",
    "src_image": "source image, relative to the benchmark root",
    "trg_image": "target image, relative to the benchmark root",
    "kp_idx": "the keypoint's number in the benchmark (annotation row, SPair kps_ids), 0-based",
    "src_x": "source keypoint x, original pixels, 0-based pixel centres", "src_y": "source keypoint y",
    "pred_x": "predicted target x (NaN for a skipped pair)", "pred_y": "predicted target y",
    "gt_x": "annotated target x, 0-based", "gt_y": "annotated target y",
    "threshold": "the pair's PCK length in target pixels (correct iff distance ≤ α × threshold)",
    "distance": "‖pred − gt‖₂ in target pixels (NaN if not finite or skipped)",
    "status": "`ok`, or `skipped` (an image could not be decoded; the pair counts in no PCK)",
}


def _columns() -> dict[str, list[Any]]:
    return {c: [] for c in PREDICTION_COLUMNS}


def score_benchmark(method: Method, bench: Benchmark, alphas: Sequence[float] = DEFAULT_ALPHAS,
                    method_name: str = "", progress: bool | None = None, n_boot: int = 1000,
                    seed: int = 0) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(summary, prediction columns). The summary holds `pck@α`, `pck_per_pair@α` and their `_ci95`
    bootstrap intervals (resampling pairs, `seed`), `pairs` (listed), `pairs_scored`, `pairs_skipped`,
    `skipped` ([{pair_id, image, reason}]), `n_keypoints`, `seconds_per_pair` (the method's own time,
    decoding excluded). `progress`: a tqdm bar over pairs (None: only on a terminal)."""
    from tqdm import tqdm

    root = Path(bench.root)
    cols = _columns()
    distances: list[np.ndarray] = []
    thresholds: list[float] = []
    skipped: list[dict[str, str]] = []
    seconds = 0.0
    bar = tqdm(bench.pairs, desc=f"{bench.name} {method_name}".strip(), unit="pair", file=sys.stderr,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    for pair in bar:
        valid = np.asarray(pair.valid, bool)
        src_pts, gt = pair.src_kps[valid].astype(np.float32), pair.trg_kps[valid].astype(np.float64)
        images = []
        for name in (pair.src_image, pair.trg_image):
            try:
                images.append(load_rgb(root / name))
            except UNREADABLE as exc:
                skipped.append({"pair_id": pair.pair_id, "image": name, "reason": f"{type(exc).__name__}: {exc}"})
                break
        if len(images) < 2:
            pred = np.full((len(src_pts), 2), np.nan)
            threshold = np.nan if pair.threshold is None else float(pair.threshold)
            dist = np.full(len(src_pts), np.nan)
            status = "skipped"
        else:
            src_rgb, trg_rgb = images
            threshold = float(max(trg_rgb.shape[:2])) if pair.threshold is None else float(pair.threshold)
            pred = np.zeros((0, 2))
            if len(src_pts):
                start = time.perf_counter()
                pred = np.asarray(method(src_rgb, trg_rgb, src_pts), np.float64).reshape(-1, 2)
                seconds += time.perf_counter() - start
                if len(pred) != len(src_pts):
                    raise ValueError(f"method {method_name!r} returned {len(pred)} points for {len(src_pts)} queries")
            dist = np.linalg.norm(pred - gt, axis=1) if len(src_pts) else np.zeros(0)
            distances.append(dist)
            thresholds.append(threshold)
            status = "ok"
        n = len(src_pts)
        for key, value in (("benchmark", bench.name), ("split", bench.split), ("method", method_name),
                           ("pair_id", pair.pair_id), ("category", pair.category), ("src_image", pair.src_image),
                           ("trg_image", pair.trg_image), ("threshold", threshold), ("status", status)):
            cols[key].extend([value] * n)
        cols["kp_idx"].extend(np.asarray(pair.kp_ids)[valid].tolist())
        cols["src_x"].extend(src_pts[:, 0].tolist())
        cols["src_y"].extend(src_pts[:, 1].tolist())
        cols["pred_x"].extend(pred[:, 0].tolist())
        cols["pred_y"].extend(pred[:, 1].tolist())
        cols["gt_x"].extend(gt[:, 0].tolist())
        cols["gt_y"].extend(gt[:, 1].tolist())
        cols["distance"].extend(np.where(np.isfinite(dist), dist, np.nan).tolist())
    out: dict[str, Any] = {"benchmark": bench.name, "split": bench.split, "variant": bench.variant,
                           "root": str(root), "method": method_name, "threshold_rule": bench.threshold_rule,
                           "pairs_total": bench.pairs_total, "pairs": len(bench.pairs),
                           "pairs_scored": len(distances), "pairs_skipped": len(skipped),
                           "n_keypoints": int(sum(len(d) for d in distances))}
    out.update(pck_from_distances(distances, thresholds, alphas, n_boot, seed))
    out["seconds_per_pair"] = seconds / max(len(distances), 1)
    out["skipped"] = skipped
    return out, cols


def write_predictions(path: Path | str, columns: dict[str, list[Any]]) -> None:
    """The prediction columns as one Parquet file (written atomically; the folder is created)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sc_imagenet.io.atomic import atomic_path

    types = {"kp_idx": pa.int64()}
    floats = ("src_x", "src_y", "pred_x", "pred_y", "gt_x", "gt_y", "threshold", "distance")
    types.update({c: pa.float64() for c in floats})
    table = pa.table({c: pa.array(columns[c], type=types.get(c, pa.string())) for c in PREDICTION_COLUMNS})
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)


def merge_columns(parts: Sequence[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    out = _columns()
    for part in parts:
        for c in out:
            out[c].extend(part[c])
    return out


def per_pair_hits(cols: dict[str, list[Any]], alphas: Sequence[float]) -> tuple[list[str], dict[float, np.ndarray],
                                                                            np.ndarray]:
    """(pair ids in order, correct keypoints per pair for each α, keypoints per pair) from prediction columns;
    a skipped pair's keypoints (NaN distance) count as wrong."""
    pair_ids = list(dict.fromkeys(cols["pair_id"]))
    where = {p: i for i, p in enumerate(pair_ids)}
    idx = np.array([where[p] for p in cols["pair_id"]], np.int64)
    dist = np.asarray(cols["distance"], np.float64)
    thr = np.asarray(cols["threshold"], np.float64)
    order = np.argsort(idx, kind="stable")
    starts = np.searchsorted(idx[order], np.arange(len(pair_ids)))
    _, first = np.unique(idx, return_index=True)  # a pair's first row holds its threshold
    hits, counts = hits_from_distances(np.split(dist[order], starts[1:]), thr[first], alphas)
    return pair_ids, {a: np.asarray(h, np.float64) for a, h in hits.items()}, np.asarray(counts, np.float64)


def paired_differences(results: Sequence[dict[str, Any]], columns: Sequence[dict[str, list[Any]]],
                       reference: int = 0, alphas: Sequence[float] = DEFAULT_ALPHAS, n_boot: int = 1000,
                       seed: int = 0) -> list[dict[str, Any]]:
    """Every method's per-keypoint PCK minus the reference method's, on the same pairs, with a paired bootstrap
    95 % interval: [{"method", "reference", "diff@α": [difference, lo, hi], ...}]."""
    ref_ids, ref_hits, counts = per_pair_hits(columns[reference], alphas)
    out = []
    for i, (res, cols) in enumerate(zip(results, columns, strict=True)):
        if i == reference:
            continue
        ids, hits, _ = per_pair_hits(cols, alphas)
        if ids != ref_ids:
            raise ValueError(f"methods {res['method']!r} and {results[reference]['method']!r} scored different pairs")
        row: dict[str, Any] = {"method": res["method"], "reference": results[reference]["method"]}
        for a in alphas:
            row[f"diff@{a:g}"] = list(paired_difference(hits[a], ref_hits[a], counts, n_boot, seed))
        out.append(row)
    return out


def format_differences(diffs: Sequence[dict[str, Any]], alphas: Sequence[float] = DEFAULT_ALPHAS) -> str:
    if not diffs:
        return ""
    lines = [f"paired differences, per keypoint, vs {diffs[0]['reference']} [95 % paired bootstrap over pairs]"]
    width = max(6, *(len(d["method"]) for d in diffs))
    for d in diffs:
        cells = "".join(f"  PCK@{a:g} {d[f'diff@{a:g}'][0]:+.3f} [{d[f'diff@{a:g}'][1]:+.3f}, "
                        f"{d[f'diff@{a:g}'][2]:+.3f}]" for a in alphas)
        lines.append(f"{d['method']:<{width}}{cells}")
    return "\n".join(lines)


def format_results(results: Sequence[dict[str, Any]], alphas: Sequence[float] = DEFAULT_ALPHAS) -> str:
    """The printed report: a header per benchmark run, then per method one line per keypoint and one
    per pair, each PCK with its bootstrap 95 % interval."""
    if not results:
        return ""
    r0 = results[0]
    lines = [
        f"{r0['benchmark']} ({r0['variant']}, split {r0['split']}) at {r0['root']}: {r0['pairs']} pairs"
        + (f" of {r0['pairs_total']}" if r0["pairs_total"] != r0["pairs"] else "")
        + f", {r0['pairs_scored']} scored, {r0['pairs_skipped']} skipped (unreadable image)",
        f"PCK length: {r0['threshold_rule']}; [95 % interval, bootstrap over pairs]",
    ]
    width = max(6, *(len(r["method"]) for r in results))
    head = "".join(f"  {'PCK@' + format(a, 'g'):<22}" for a in alphas)
    lines.append(f"{'method':<{width}}  {'average':<12}  {'pairs':>6}  {'keypoints':>9}{head}  s/pair")
    for r in results:
        for label, key in (("per keypoint", "pck@{a:g}"), ("per pair", "pck_per_pair@{a:g}")):
            cells = ""
            for a in alphas:
                k = key.format(a=a)
                lo, hi = r[f"{k}_ci95"]
                cells += f"  {r[k]:.3f} [{lo:.3f}, {hi:.3f}]".ljust(24)
            lines.append(f"{r['method']:<{width}}  {label:<12}  {r['pairs_scored']:>6}  {r['n_keypoints']:>9}"
                         f"{cells}  {r['seconds_per_pair']:.3f}")
    for r in results[:1]:
        for s in r["skipped"][:10]:
            lines.append(f"skipped {s['pair_id']}: {s['image']}: {s['reason']}")
        if len(r["skipped"]) > 10:
            lines.append(f"... and {len(r['skipped']) - 10} more skipped pairs (all in --json)")
    return "\n".join(lines)
