"""Write the report folder: drawings and plots under `img/`, then `index.html` last (every file
through `io.atomic`); files of an earlier report that this one no longer uses are removed."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sc_imagenet.io.atomic import atomic_write_bytes
from sc_imagenet.io.images import load_rgb
from sc_imagenet.report_page import plots
from sc_imagenet.report_page.draw import draw_detections, draw_pair, placeholder
from sc_imagenet.report_page.model import ReportData
from sc_imagenet.report_page.page import dropped_key, pair_key, render_page

PAGE = "index.html"
ASSETS = "img"


@dataclass
class ReportFile:
    """One file the report wrote (a row of the `report` manifest)."""

    path: str  # relative to the report folder, `/`-separated
    kind: str  # page | figure | pair | dropped
    section: str
    caption: str
    bytes: int
    width: int | None = None
    height: int | None = None

    def as_row(self) -> dict[str, object]:
        return asdict(self)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class _Writer:
    def __init__(self, dest: Path, jpeg_quality: int) -> None:
        self.dest = dest
        self.jpeg_quality = jpeg_quality
        self.files: list[ReportFile] = []
        self.assets: dict[str, dict[str, object]] = {}

    def image(self, key: str, name: str, img: Image.Image, kind: str, section: str, caption: str) -> None:
        buf = io.BytesIO()
        if name.endswith(".png"):
            img.save(buf, format="PNG", optimize=True)
        else:
            img.save(buf, format="JPEG", quality=self.jpeg_quality, optimize=True)
        self._add(key, f"{ASSETS}/{name}", buf.getvalue(), kind, section, caption, img.width, img.height)

    def figure(self, key: str, name: str, fig: plots.Figure, section: str, caption: str) -> None:
        data = plots.png_bytes(fig)
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        self._add(key, f"{ASSETS}/{name}", data, "figure", section, caption, w, h)

    def _add(self, key: str, rel: str, data: bytes, kind: str, section: str, caption: str, w: int, h: int) -> None:
        atomic_write_bytes(self.dest / rel, data)
        self.files.append(ReportFile(rel, kind, section, caption, len(data), w, h))
        self.assets[key] = {"path": rel, "width": w, "height": h}


def write_report(data: ReportData, dest: Path, image_height: int = 200, jpeg_quality: int = 85,
                 load_image: Callable[[Path], np.ndarray] = load_rgb,
                 log: Callable[[str], None] = print) -> list[ReportFile]:
    """Draw, plot and write the page into `dest`; returns every file written (the page last)."""
    dest = Path(dest)
    (dest / ASSETS).mkdir(parents=True, exist_ok=True)
    w = _Writer(dest, jpeg_quality)

    def load(path: Path) -> np.ndarray | None:
        try:
            return load_image(path)
        except Exception as exc:  # a file that changed or vanished since the build: say so on the page
            log(f"[report] cannot read {path}: {type(exc).__name__}: {exc}")
            return None

    for g_i, g in enumerate(data.galleries or []):
        for p_i, p in enumerate(g.pairs):
            src, trg = load(p.src_path), load(p.trg_path)
            if src is None or trg is None:
                img = placeholder(f"cannot read\n{p.src_path.name if src is None else p.trg_path.name}",
                                  2 * image_height, image_height)
            else:
                img = draw_pair(src, trg, p.src_kps, p.trg_kps, p.offsets, data.threshold, image_height)
            w.image(pair_key(g_i, p_i), f"pair-{_safe(g.wnid)}-{p.tier}-{p_i:02d}.jpg", img, "pair", "gallery",
                    f"{g.wnid} {p.tier}: {p.src_id} → {p.trg_id}, pair consistency {p.pair_score:.3f}, "
                    f"{len(p.offsets)} points ({p.points})")
    for i, d in enumerate(data.dropped or []):
        if d.path is None:
            continue
        arr = load(d.path)
        img = (placeholder(f"cannot read\n{d.path.name}", image_height, image_height) if arr is None
               else draw_detections(arr, d.detections, image_height))
        w.image(dropped_key(i), f"dropped-{_safe(d.reason)}-{i:02d}.jpg", img, "dropped", "dropped",
                f"{d.wnid}/{d.image_id}: {d.reason}, {len(d.detections)} detections")

    if data.image_scores is not None and not data.missing_for("scores"):
        w.figure("fig:scores", "scores.png", plots.score_histogram(data.image_scores, data.score_label),
                 "plots", "distribution of image consistency scores with the selection cut")
    if data.synthetic and data.quality and not data.missing_for("quality"):
        w.figure("fig:quality", "quality.png", plots.pck_bars(data.quality), "plots",
                 "strict PCK of every step of the dataset half (synthetic ground truth)")
    if data.synthetic and data.truth is not None:
        w.figure("fig:truth", "truth.png", plots.truth_scatter(data.truth, data.threshold), "plots",
                 "loop offset vs true error per candidate; image score vs true accuracy per image")
    if data.train_log is not None and len(data.train_log) and not data.missing_for("training"):
        w.figure("fig:training", "training.png", plots.loss_curves(data.train_log), "plots",
                 "the generator's training losses")

    page = render_page(data, dest, w.assets).encode()
    atomic_write_bytes(dest / PAGE, page)
    w.files.append(ReportFile(PAGE, "page", "page", "the build report (open in a browser)", len(page)))
    keep = {dest / f.path for f in w.files}
    for old in (dest / ASSETS).iterdir():
        if old.is_file() and old not in keep:
            old.unlink()
    return w.files
