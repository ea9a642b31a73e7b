"""Human-readable summaries of a build (terminal, Prefect artifacts)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sc_imagenet.build import stage_states


def build_summary_rows(out_dir: Path, states: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    rows = []
    for s in states if states is not None else stage_states(out_dir):
        by_status = ", ".join(f"{k}={v}" for k, v in s["rows_by_status"].items())
        rows.append({"stage": s["stage"], "state": state_cell(s), "rows": s["rows"] if s["rows"] is not None else "",
                     "by status": by_status, "seconds": s["wall_s"] if s["wall_s"] is not None else "",
                     "path": s["path"]})
    return rows


def state_cell(state: dict[str, Any]) -> str:
    """`partial (3/6 shards)`: how far an interrupted or running stage got (`3 shards` when the total is not
    known yet); other states as they are."""
    if state["state"] != "partial" or state.get("shards_done") is None:
        return state["state"]
    total = state.get("shards_expected")
    return f"partial ({state['shards_done']}/{total} shards)" if total is not None else \
        f"partial ({state['shards_done']} shards)"


_PCK_LABELS = {"generator": "generator", "mnn": "MNN baseline", "nn": "NN, same transfer"}


def quality_lines(out_dir: Path, states: list[dict[str, Any]] | None = None) -> list[str]:
    """One line per finished stage that measured PCK on held-out synthetic pairs (`train` today), e.g.
    `train: PCK@0.05/0.1 generator 0.278/0.519 · MNN baseline 0.269/0.485 · … (100 held-out pairs)`."""
    from sc_imagenet.stages.export import ExportFigures
    from sc_imagenet.stages.report import ReportFigures
    from sc_imagenet.stages.select import SelectFigures
    from sc_imagenet.stages.train import TrainFigures

    lines = []
    for s in states if states is not None else stage_states(out_dir):
        if s["state"] != "complete":
            continue
        path = Path(s["path"])  # figures an older version wrote that do not fit are not shown (`shown`)
        if s["stage"] == "train" and (train := TrainFigures.shown(path)) is not None:
            pck = train.pck()
            parts = [f"{label} {pck[k][0]:.3f}/{pck[k][1]:.3f}" for k, label in _PCK_LABELS.items() if k in pck]
            if parts:
                n = int(train.eval_pairs or 0)
                lines.append(f"{s['stage']}: PCK@0.05/0.1 " + " · ".join(parts) + f" ({n} held-out synthetic pairs)")
        if s["stage"] == "select" and (select := SelectFigures.shown(path)) is not None:
            lines.append(f"select: {select.images_selected} of {select.images} images, {select.pairs} pairs "
                         f"({select.pairs_by_split}), {select.keypoints_per_pair} keypoints each")
            if select.quality is not None:
                from sc_imagenet.dataset.quality import quality_line

                lines.append("select: " + quality_line(select.quality))
        if s["stage"] == "export" and (export := ExportFigures.shown(path)) is not None:
            lines.append(f"export: SC-ImageNet release at {export.release_path(out_dir)}")
        if s["stage"] == "report" and (report := ReportFigures.shown(path)) is not None:
            lines.append(f"report: {report.page_path(out_dir)}")
    return lines


def print_status(out_dir: Path, verify: bool = False, check: bool = True) -> list[dict[str, Any]]:
    """The per-stage table, damage, PCK lines and where the resolved config is (`sc-imagenet status`, after a
    build, `make demo`); returns the states it printed (`stage_states`)."""
    from sc_imagenet.build import stage_states

    states = stage_states(out_dir, check=check, verify=verify)
    print(f"\nsc-imagenet build at {out_dir}")
    print(text_table(build_summary_rows(out_dir, states)))
    for state in states:
        if state["state"] == "unknown" or (state["state"] == "stale" and state["reason"]):
            print(f"{state['stage']}: {state['state']}: {state['reason']}")
        for d in state["damage"]:
            print(f"{state['stage']}: damaged: {d['path']} ({d['problem']})")
    if any(s["damage"] for s in states):
        print("the next build rebuilds only the damaged files (and what they change downstream)")
    for line in quality_lines(out_dir, states):
        print(line)
    print(f"resolved config: {out_dir / 'config.resolved.yaml'}")
    return states


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(empty)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned plain-text table for terminals."""
    if not rows:
        return "(empty)"
    cols = list(rows[0])
    cells = [[str(c) for c in cols]] + [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)
