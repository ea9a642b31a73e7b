"""The report's plots: matplotlib `Figure` objects on the Agg canvas (no pyplot, no display, no global
state), returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SELECTED = "#2c7bb6"
REJECTED = "#bdbdbd"
DPI = 100


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version string: byte-stable output
    return buf.getvalue()


def score_histogram(scores: pd.DataFrame, label: str, note: str = "") -> Figure:
    """Distribution of image scores; with a `selected` column, selected and rejected images stacked and
    the selection cut (the lowest selected score, per category: their median) marked."""
    fig, ax = _figure(6.4, 3.0)
    values = scores["score"].to_numpy(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        lo, hi = 0.0, 1.0
    elif finite.min() >= 0 and finite.max() <= 1:  # a fraction: from 0 to a little above the best image
        lo, hi = 0.0, min(1.0, max(0.05, float(finite.max()) * 1.05))
    else:
        lo, hi = float(finite.min()), float(finite.max()) + 1e-9
    bins = np.linspace(lo, hi, 41)
    if "selected" in scores:
        sel = scores["selected"].to_numpy(bool)
        ax.hist([values[sel & np.isfinite(values)], values[~sel & np.isfinite(values)]], bins=bins, stacked=True,
                color=[SELECTED, REJECTED], label=[f"selected ({sel.sum()})", f"rejected ({(~sel).sum()})"])
        cuts = scores[sel].groupby("wnid")["score"].min() if "wnid" in scores else pd.Series(dtype=float)
        if len(cuts):
            cut = float(np.median(cuts))
            what = "selection cut" if len(cuts) == 1 else f"median per-category cut ({len(cuts)} categories)"
            ax.axvline(cut, color="#d7191c", ls="--", lw=1.5, label=f"{what}: {cut:.3f}")
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.hist(finite, bins=bins, color=SELECTED)
    ax.set_xlabel(label)
    ax.set_ylabel("images")
    ax.set_title(f"{len(values)} images" + (f" · {note}" if note else ""), fontsize=10)
    return fig


QUALITY_ROWS = (
    ("candidates", "all candidates"),
    ("raw_topk", "raw top-k, every pair"),
    ("rejected_image_pairs", "raw top-k, rejected images' pairs"),
    ("selected_image_pairs", "raw top-k, selected images' pairs"),
    ("filtered_candidates", "consistent candidates, every pair"),
    ("exported", "exported keypoints"),
)


def pck_bars(quality: dict[str, Any]) -> Figure:
    """Strict PCK@0.05 and @0.1 (with the bootstrap 95 % interval) of each step of the dataset half."""
    rows = [(key, label) for key, label in QUALITY_ROWS if isinstance(quality.get(key), dict)
            and "strict_pck@0.1" in quality[key]]
    fig, ax = _figure(6.4, 0.45 * max(len(rows), 1) + 1.2)
    y = np.arange(len(rows))[::-1]
    for offset, alpha, colour in ((0.2, "0.05", "#abd9e9"), (-0.2, "0.1", SELECTED)):
        vals = [quality[k].get(f"strict_pck@{alpha}", np.nan) for k, _ in rows]
        err = None
        if alpha == "0.1":
            ci = [quality[k].get("strict_pck@0.1_ci95") or [np.nan, np.nan] for k, _ in rows]
            err = np.abs(np.array([[v - c[0], c[1] - v] for v, c in zip(vals, ci, strict=True)], np.float64).T)
        ax.barh(y + offset, vals, height=0.38, color=colour, xerr=err, capsize=2, label=f"strict PCK@{alpha}")
        ends = np.asarray(vals, np.float64) + (err[1] if err is not None else 0.0)
        for yy, v, end in zip(y + offset, vals, ends, strict=True):
            if np.isfinite(v):
                ax.text((end if np.isfinite(end) else v) + 0.012, yy, f"{v:.3f}", va="center", fontsize=7)
    ax.set_yticks(y, [f"{label} ({quality[k].get('pairs', 0)} pairs)" for k, label in rows], fontsize=8)
    ax.set_xlim(0, 1.08)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("strict PCK (off-object labels count as wrong)")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside upper center", ncols=2, frameon=False)
    return fig


def truth_scatter(truth: Any, threshold: float, max_points: int = 12000, seed: int = 0) -> Figure:
    """Left: every candidate's loop offset against its true error (log axes; labels off the object on
    the top edge). Right: every image's consistency score against its true accuracy."""
    fig, (a, b) = _figure(9.6, 3.6, ncols=2)
    off = np.asarray(truth.point_offset, np.float64)
    err = np.asarray(truth.point_error, np.float64)
    keep = np.isfinite(off)
    idx = np.flatnonzero(keep)
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    floor, ceil = 1e-3, 10.0
    x = np.clip(off[idx], floor, ceil)
    on = np.isfinite(err[idx])
    y = np.where(on, np.clip(err[idx], floor, ceil * 0.7), ceil)
    a.scatter(x[on], y[on], s=2, alpha=0.15, color=SELECTED, rasterized=True, label="on the object")
    a.scatter(x[~on], y[~on], s=2, alpha=0.3, color="#d7191c", rasterized=True, label="off the object")
    a.set_xscale("log")
    a.set_yscale("log")
    a.axvline(threshold, color="k", ls="--", lw=1)
    a.axhline(0.1, color="k", ls=":", lw=1)
    a.set_xlabel("loop offset (object sizes; dashed: consistency threshold)")
    a.set_ylabel("true error (object sizes; dotted: 0.1)")
    n_cons = (off[keep] <= threshold)
    good = np.isfinite(err) & (err <= 0.1)
    share = good[keep][n_cons].mean() if n_cons.any() else np.nan
    rest = good[keep][~n_cons].mean() if (~n_cons).any() else np.nan
    a.set_title(f"{keep.sum()} candidates: correct@0.1 {share:.2f} if consistent, {rest:.2f} if not", fontsize=9)
    a.legend(fontsize=7, loc="lower right", markerscale=4)

    score = np.asarray(truth.image_score, np.float64)
    acc = np.asarray(truth.image_accuracy, np.float64)
    if truth.image_selected is not None:
        sel = np.asarray(truth.image_selected, bool)
        b.scatter(score[~sel], acc[~sel], s=10, color=REJECTED, edgecolor="#636363", lw=0.3, label="rejected")
        b.scatter(score[sel], acc[sel], s=12, color=SELECTED, edgecolor="k", lw=0.3, label="selected")
        b.legend(fontsize=7, loc="lower right")
    else:
        b.scatter(score, acc, s=10, color=SELECTED)
    b.set_xlabel("image consistency score")
    b.set_ylabel("true strict PCK@0.1 of its candidates")
    b.set_title(f"{len(score)} images · Spearman {truth.spearman:.2f}", fontsize=9)
    return fig


CURVE_COLUMNS = ("labels_region_pck01", "labels_pixel_pck01", "val_pck005", "val_pck01",
                 "beta_image", "beta_region", "beta_pixel", "logit_scale")


def _has(log: pd.DataFrame, col: str) -> bool:
    return col in log and bool(log[col].notna().any())


def loss_curves(log: pd.DataFrame) -> Figure:
    """The generator's training per logged step (the `train` manifest): its losses; where recorded, the
    accuracy of the labels each level passes down and PCK on held-out pairs (synthetic data); each level's β."""
    accuracy = [c for c in ("labels_region_pck01", "labels_pixel_pck01", "val_pck005", "val_pck01") if _has(log, c)]
    betas = [c for c in ("beta_image", "beta_region", "beta_pixel") if _has(log, c)]
    panels = 1 + bool(accuracy) + bool(betas)
    fig, axes = _figure(6.4 if panels == 1 else 4.2 * panels, 3.0, ncols=panels)
    axes = [axes] if panels == 1 else list(axes)
    ax = axes.pop(0)
    few = len(log) < 20
    for col, colour in (("L_I", "#1b9e77"), ("L_R", "#d95f02"), ("L_P", "#7570b3"), ("total", "k")):
        if col in log and (log[col] != 0).any():
            ax.plot(log["step"], log[col], color=colour, lw=1.5 if col == "total" else 1.0,
                    marker="o" if few else None, ms=3, label=col)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title(f"{len(log)} logged step{'' if len(log) == 1 else 's'}", fontsize=10)
    if accuracy:
        ax = axes.pop(0)
        style = {"labels_region_pck01": ("#d95f02", "-", "labels image→region"),
                 "labels_pixel_pck01": ("#7570b3", "-", "labels region→pixel"),
                 "val_pck005": (SELECTED, "--", "held-out PCK@0.05"), "val_pck01": (SELECTED, "-", "held-out PCK@0.1")}
        for col in accuracy:
            colour, ls, label = style[col]
            rows = log[log[col].notna()]
            ax.plot(rows["step"], rows[col], color=colour, ls=ls, marker="o" if col.startswith("val") else None,
                    ms=3, lw=1.0, label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("strict PCK@0.1 / PCK")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title("labels passed down · held-out PCK", fontsize=10)
    if betas:
        ax = axes.pop(0)
        for col, colour in zip(betas, ("#1b9e77", "#d95f02", "#7570b3"), strict=False):
            ax.plot(log["step"], log[col], color=colour, lw=1.0, label=col.replace("_", " "))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("β (weight of MVAM in the volume)")
        ax.legend(fontsize=7)
        ax.set_title("volume mix", fontsize=10)
    return fig
