"""The report's HTML: one static page, no script, no network; images are files beside it (`assets`),
links to manifests are relative, so the folder opens from disk in any browser.

Numbers a test (or a person) may want to check carry data attributes: `data-funnel="<key>"` with
`data-value` on every funnel count, `data-stage`/`data-state` on every stage row, `data-missing` on a
section that is not built yet.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import numpy as np

from sc_imagenet.report.draw import legend_stops
from sc_imagenet.report.model import FUNNEL, ReportData
from sc_imagenet.report.plots import QUALITY_ROWS

TIER_TITLES = {"most": "most consistent", "median": "median", "least": "least consistent"}
FUNNEL_GROUPS = (("categories", "categories_kept"),
                 ("images_indexed", "images_readable", "images_single_instance", "images_labelled",
                  "images_selected", "images_exported"),
                 ("pairs_labelled", "pairs_selected", "pairs_exported"),
                 ("keypoints",))

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1280px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
.sub{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #e1e1e1;padding:3px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.bar{width:260px}td.bar div{height:12px;background:#2c7bb6;border-radius:2px}
.missing{color:#8a4b00;background:#fff4e0;border:1px solid #f0d2a0;padding:6px 10px;border-radius:4px}
.stale{color:#8a4b00}.complete{color:#1a7f37}.partial,.absent{color:#a33}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
figure{display:inline-block;margin:0 0 8px;background:#fff;border:1px solid #e1e1e1;padding:6px;border-radius:4px}
figcaption{font-size:12px;color:#444;max-width:520px}
figure img{display:block}
.legend{display:inline-block;vertical-align:top;margin:0 8px}
.legend-bar{width:300px;height:12px;border:1px solid #999}
.legend-labels{display:flex;justify-content:space-between;width:302px;font-size:11px;color:#555}
.tier{margin:4px 0 10px}
.tier-title{font-weight:600;font-size:13px;margin:6px 0 4px}
pre{background:#fff;border:1px solid #e1e1e1;padding:8px;overflow:auto;max-height:480px;font-size:12px}
code{font-size:12px}
.kv td:first-child{color:#555}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def href(target: Path, dest: Path, is_dir: bool = False) -> str:
    """A relative, URL-quoted link from the page's folder to `target`."""
    rel = Path(os.path.relpath(target, dest)).as_posix()
    return quote(rel) + ("/" if is_dir and not rel.endswith("/") else "")


def fmt(n: int | None) -> str:
    return "not built yet" if n is None else f"{n:,}"


def _missing(data: ReportData, section: str, what: str) -> str:
    """Why a section shows nothing: the stages it needs that are not built, or what went wrong."""
    missing = data.missing_for(section)
    if not missing:
        return f'<p class="missing">{esc(what)}: {esc(data.notes.get(section, "nothing to show"))}.</p>'
    stages = ", ".join(f"<code>{esc(s)}</code> ({esc(data.state(s))})" for s in missing)
    return (f'<p class="missing" data-missing="{esc(section)}">{esc(what)}: not built yet — needs stage(s) '
            f"{stages}.</p>")


def _img(asset: Mapping[str, object] | None, alt: str) -> str:
    if asset is None:
        return ""
    return (f'<img src="{quote(str(asset["path"]))}" width="{asset["width"]}" height="{asset["height"]}" '
            f'alt="{esc(alt)}">')


def funnel_section(data: ReportData) -> str:
    labels = {k: (label, stage) for k, label, stage in FUNNEL}
    rows = []
    for group in FUNNEL_GROUPS:
        top = max([data.funnel.get(k) or 0 for k in group] + [1])
        prev: int | None = None
        for i, key in enumerate(group):
            label, stage = labels[key]
            value = data.funnel.get(key)
            width = 100.0 * (value or 0) / top
            share = (f"{100.0 * value / prev:.1f} %" if value is not None and prev else "")
            cls = "num" + ("" if value is not None else " missing")
            border = ' style="border-top:2px solid #bbb"' if i == 0 else ""
            rows.append(
                f"<tr{border}><th>{esc(label)}</th>"
                f'<td class="{cls}" data-funnel="{esc(key)}" data-value="{"" if value is None else value}">'
                f"{esc(fmt(value))}</td><td class=\"num\">{share}</td>"
                f'<td class="bar"><div style="width:{width:.1f}%"></div></td><td><code>{esc(stage)}</code></td></tr>')
            prev = value if i == 0 or value is not None else prev
    table = ("<table><tr><th>step</th><th>count</th><th>of the step above</th><th></th><th>stage</th></tr>"
             + "".join(rows) + "</table>")
    return f'<section id="funnel"><h2>Funnel</h2>{table}{per_category_table(data)}</section>'


def per_category_table(data: ReportData) -> str:
    df = data.per_category
    if df is None or df.empty:
        return ""
    cols = [c for c in ("images_indexed", "images_readable", "images_single_instance", "images_labelled",
                        "images_selected", "pairs_labelled", "pairs_selected", "pairs_exported") if c in df]
    head = "".join(f"<th>{esc(c.replace('_', ' '))}</th>" for c in cols)
    body = []
    for r in df.itertuples(index=False):
        cells = "".join(f'<td class="num">{"—" if _isna(getattr(r, c)) else f"{int(getattr(r, c)):,}"}</td>'
                        for c in cols)
        kept = "kept" if r.keep else f"removed: {r.reason}"
        body.append(f'<tr data-category="{esc(r.wnid)}"><td><code>{esc(r.wnid)}</code></td><td>{esc(r.name)}</td>'
                    f"<td>{esc(kept)}</td>{cells}</tr>")
    open_ = " open" if len(df) <= 12 else ""
    return (f"<details{open_}><summary>Per category ({len(df)} categories)</summary>"
            f"<table><tr><th>wnid</th><th>name</th><th>list</th>{head}</tr>{''.join(body)}</table></details>")


def _isna(v: object) -> bool:
    return v is None or (isinstance(v, float) and not np.isfinite(v))


def stages_section(data: ReportData, dest: Path) -> str:
    rows = []
    total = 0.0
    for s in data.stages:
        by_status = ", ".join(f"{esc(k)}&nbsp;{v:,}" for k, v in s.rows_by_status.items())
        links = []
        if s.manifest_dir.exists():
            links.append(f'<a href="{href(s.manifest_dir, dest, True)}">manifest</a>')
        if s.record is not None:
            links.append(f'<a href="{href(s.record, dest)}">_stage.json</a>')
        wall = "" if s.wall_s is None else f"{s.wall_s:,.1f}&nbsp;s"
        total += s.wall_s or 0.0
        state_cls = {"complete": "complete", "stale": "stale", "partial": "partial", "this page": ""}.get(s.state,
                                                                                                       "absent")
        rows_text = fmt(s.rows) if s.rows is not None else ""
        rows.append(f'<tr data-stage="{esc(s.name)}" data-state="{esc(s.state)}"><td><code>{esc(s.name)}</code></td>'
                    f'<td class="{state_cls}">{esc(s.state)}</td><td class="num">{esc(rows_text)}</td>'
                    f"<td>{by_status}</td><td class=\"num\">{wall}</td><td>{' · '.join(links)}</td>"
                    f"<td class=\"sub\">{esc(s.description)}</td></tr>")
    note = ""
    if any(s.state == "stale" for s in data.stages):
        note = ('<p class="missing">Some stages are <b>stale</b>: their manifests were built with other settings '
                "or inputs than the build's saved configuration; rebuild them to bring the page up to date.</p>")
    return (f'<section id="stages"><h2>Stages</h2>{note}<table><tr><th>stage</th><th>state</th><th>rows</th>'
            f"<th>rows per status</th><th>time</th><th>files</th><th>what it does</th></tr>{''.join(rows)}"
            f'<tr><th colspan="4">total</th><td class="num">{total:,.1f}&nbsp;s</td><td colspan="2"></td></tr>'
            "</table></section>")


def legend(threshold: float) -> str:
    stops = legend_stops(threshold)
    gradient = ", ".join(f"rgb{c} {100 * i / (len(stops) - 1):.0f}%" for i, (_, _, c) in enumerate(stops))
    labels = "".join(f"<span>{esc(label)}</span>" for _, label, _ in stops[::2])
    return (f'<p>Line colour = the point\'s 3-image loop offset (median over its loops, in units of the object\'s '
            f'size): <span class="legend"><span class="legend-bar" style="display:block;background:linear-gradient('
            f'to right, {gradient})"></span><span class="legend-labels">{labels}</span></span> grey = no loop.</p>')


def gallery_section(data: ReportData, assets: Mapping[str, Mapping[str, object]]) -> str:
    title = "<h2>Pseudo-labelled pairs</h2>"
    if data.missing_for("gallery") or data.galleries is None:
        return f'<section id="gallery">{title}{_missing(data, "gallery", "Pair gallery")}</section>'
    intro = ("<p>Per category, the pair-graph edges ranked by pair consistency (the fraction of the pair's "
             "candidate loops with an offset at or below the threshold): the most consistent, the median and the "
             "least consistent. Source left, target right. A kept pair shows its final keypoints (as exported); "
             "any other pair the generator's top candidates.</p>" + legend(data.threshold))
    parts = [f'<section id="gallery">{title}{intro}']
    if data.notes.get("gallery"):
        parts.append(f'<p class="missing">{esc(data.notes["gallery"])}</p>')
    for g_i, g in enumerate(data.galleries):
        parts.append(f'<h3 data-gallery="{esc(g.wnid)}"><code>{esc(g.wnid)}</code> {esc(g.name)} '
                     f'<span class="sub">({g.edges:,} pairs)</span></h3>')
        if not g.pairs:
            parts.append('<p class="missing">No pseudo-labelled pairs in this category.</p>')
            continue
        for tier in ("most", "median", "least"):
            figs = []
            for p_i, p in enumerate(g.pairs):
                if p.tier != tier:
                    continue
                asset = assets.get(pair_key(g_i, p_i))
                truth = "" if p.true_pck is None else f" · true strict PCK@0.1 {p.true_pck:.2f}"
                decision = "" if p.decision is None else f" · select: <b>{esc(p.decision)}</b>"
                figs.append(f"<figure>{_img(asset, f'{p.src_id} to {p.trg_id}')}<figcaption>"
                            f"<code>{esc(p.src_id)}</code> → <code>{esc(p.trg_id)}</code> · pair consistency "
                            f"{p.pair_score:.2f} · {esc(p.points)}{decision}{truth}</figcaption></figure>")
            if figs:
                parts.append(f'<div class="tier"><div class="tier-title">{TIER_TITLES[tier]}</div>'
                             f'<div class="gallery">{"".join(figs)}</div></div>')
    if data.no_pairs:
        items = "".join(f"<li><code>{esc(w)}</code>: {esc(why)}</li>" for w, why in data.no_pairs)
        parts.append(f'<p data-no-pairs="{len(data.no_pairs)}">Kept categories without pseudo-labelled pairs:</p>'
                     f"<ul>{items}</ul>")
    parts.append("</section>")
    return "".join(parts)


def pair_key(gallery: int, pair: int) -> str:
    return f"pair:{gallery}:{pair}"


def dropped_key(i: int) -> str:
    return f"dropped:{i}"


def dropped_section(data: ReportData, assets: Mapping[str, Mapping[str, object]]) -> str:
    title = "<h2>Dropped by the single-instance step</h2>"
    if data.missing_for("dropped") or data.dropped is None:
        return f'<section id="dropped">{title}{_missing(data, "dropped", "Dropped images")}</section>'
    thr = "" if data.single_instance_threshold is None else f"{data.single_instance_threshold:g}"
    counts = ", ".join(f"{esc(k)} {v:,}" for k, v in sorted(data.dropped_counts.items())) or "none"
    parts = [f'<section id="dropped">{title}<p>Images not kept, per reason: {counts}. Boxes: every stored detection; '
             f"<b style=\"color:#e41a1c\">thick red</b> above the threshold {esc(thr)}, "
             "<b style=\"color:#ff8c00\">thin orange</b> below it, labelled with the confidence.</p>"]
    figs, text_rows = [], []
    for i, d in enumerate(data.dropped):
        asset = assets.get(dropped_key(i))
        if asset is None:
            text_rows.append(f"<tr><td><code>{esc(d.wnid)}</code></td><td><code>{esc(d.image_id)}</code></td>"
                             f"<td>{esc(d.reason)}</td><td>{esc(d.note)}</td></tr>")
            continue
        n = len(d.detections)
        figs.append(f"<figure>{_img(asset, d.image_id)}<figcaption><b>{esc(d.reason)}</b> · "
                    f"<code>{esc(d.image_id)}</code> · {n} detection{'' if n == 1 else 's'}"
                    f"{' · ' + esc(d.note) if d.note else ''}</figcaption></figure>")
    parts.append(f'<div class="gallery">{"".join(figs)}</div>' if figs else "<p>No dropped image to show.</p>")
    if text_rows:
        parts.append("<h3>Not drawable</h3><table><tr><th>wnid</th><th>image</th><th>reason</th><th>error</th></tr>"
                     + "".join(text_rows) + "</table>")
    parts.append("</section>")
    return "".join(parts)


def _figure(data: ReportData, assets: Mapping[str, Mapping[str, object]], section: str, title: str, alt: str,
            caption: str, unavailable: str | None = None) -> str:
    """A plot with its caption; else why it is missing: the stages not built yet, or `unavailable` (HTML) when
    the stages are built but recorded nothing to plot (default: `_missing`'s note)."""
    if data.missing_for(section) or f"fig:{section}" not in assets:
        if data.missing_for(section) or unavailable is None:
            return _missing(data, section, title)
        return unavailable
    return f"<figure>{_img(assets[f'fig:{section}'], alt)}<figcaption>{caption}</figcaption></figure>"


def plots_section(data: ReportData, assets: Mapping[str, Mapping[str, object]]) -> str:
    parts = ['<section id="plots"><h2>Plots</h2><h3>Image consistency scores</h3>',
             _figure(data, assets, "scores", "Score distribution", "score histogram", esc(data.selection_note))]
    if data.synthetic:
        parts.append("<h3>Against the synthetic ground truth</h3>")
        parts.append(_figure(data, assets, "quality", "PCK of selected vs. rejected", "strict PCK",
                             quality_caption(data.quality or {}),
                             '<p class="missing">select recorded no quality figures.</p>'))
        parts.append(_figure(
            data, assets, "truth", "Consistency vs. true error", "consistency vs true error",
            "Left: each candidate's loop offset against its true error (both in object sizes); labels whose source "
            "point is off the object sit on the top edge. Right: each image's consistency score against the true "
            "strict PCK@0.1 of its candidates.",
            f'<p class="missing">{esc(data.notes.get("truth", "no ground truth"))}</p>'))
    parts.append("<h3>Training</h3>")
    parts.append(_figure(data, assets, "training", "Training curves", "training losses",
                         train_caption(data.train_extra),
                         '<p class="missing">The train manifest has no logged step.</p>'))
    parts.append("</section>")
    return "".join(parts)


def quality_caption(q: Mapping[str, object]) -> str:
    bits = []
    for key, label in QUALITY_ROWS:
        part = q.get(key)
        if isinstance(part, dict) and "strict_pck@0.1" in part:
            bits.append(f"{esc(label)} {part['strict_pck@0.1']:.3f}")
    sp = q.get("spearman")
    if isinstance(sp, int | float):
        bits.append(f"Spearman(image score, true accuracy) {sp:.2f}")
    return "Strict PCK@0.1: " + " · ".join(bits) if bits else ""


def train_caption(extra: Mapping[str, object]) -> str:
    parts = []
    for prefix, label in (("", "generator"), ("mnn_", "MNN baseline"), ("nn_", "NN, same read-out")):
        a, b = extra.get(f"{prefix}pck@0.05"), extra.get(f"{prefix}pck@0.1")
        if isinstance(a, int | float) and isinstance(b, int | float):
            parts.append(f"{label} {a:.3f}/{b:.3f}")
    if parts:
        n = extra.get("eval_pairs")
        n = f"{int(n)}" if isinstance(n, int | float) else "?"
        return f"Held-out PCK@0.05/0.1 ({n} synthetic pairs): " + " · ".join(parts)
    return f"{extra.get('steps', '?')} steps."


def outputs_section(data: ReportData, dest: Path) -> str:
    rows = [("build folder", data.out_dir, True), ("manifests", data.out_dir / "manifests", True)]
    if data.release is not None:
        rows.append(("SC-ImageNet release", data.release, True))
    if data.config_path is not None:
        rows.append(("resolved config", data.config_path, False))
    links = "".join(f'<tr><td>{esc(k)}</td><td><a href="{href(p, dest, d)}">{esc(p)}</a></td></tr>'
                    for k, p, d in rows)
    config = (f"<details><summary>Resolved config</summary><pre>{esc(data.config_text)}</pre></details>"
              if data.config_text else '<p class="missing">No config.resolved.yaml in the build folder.</p>')
    return f'<section id="outputs"><h2>Files and config</h2><table class="kv">{links}</table>{config}</section>'


def render_page(data: ReportData, dest: Path, assets: Mapping[str, Mapping[str, object]]) -> str:
    """The whole page; `assets` maps the keys of the drawings and plots to {path, width, height}."""
    stages = [s for s in data.stages if s.state != "this page"]
    built = sum(s.state in ("complete", "stale") for s in stages)
    head = (f"<h1>SC-ImageNet build report</h1><p class=\"sub\"><code>{esc(data.out_dir)}</code> · "
            f"{built} of {len(stages)} stages built"
            f"{' · synthetic data with ground truth' if data.synthetic else ''}</p>")
    if data.problems:
        head += ('<div class="missing"><b>Parts of the build could not be read:</b><ul>'
                 + "".join(f"<li>{esc(x)}</li>" for x in data.problems) + "</ul></div>")
    body = "".join([head, funnel_section(data), stages_section(data, dest), gallery_section(data, assets),
                    dropped_section(data, assets), plots_section(data, assets), outputs_section(data, dest)])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            '<link rel="icon" href="data:,">'
            f"<title>SC-ImageNet build report: {esc(data.out_dir.name)}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")
