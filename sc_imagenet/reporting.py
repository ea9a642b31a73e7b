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


_PCK_LABELS = (("", "generator"), ("mnn_", "MNN baseline"), ("nn_", "NN, same transfer"))


def quality_lines(out_dir: Path, states: list[dict[str, Any]] | None = None) -> list[str]:
    """One line per finished stage that measured PCK on held-out synthetic pairs (`train` today), e.g.
    `train: PCK@0.05/0.1 generator 0.278/0.519 · MNN baseline 0.269/0.485 · … (100 held-out pairs)`."""
    from sc_imagenet.io.manifest import read_stage_record

    lines = []
    for s in states if states is not None else stage_states(out_dir):
        record = read_stage_record(Path(s["path"])) if s["state"] == "complete" else None
        extra = record.extra if record is not None else {}
        parts = [f"{label} {extra[f'{p}pck@0.05']:.3f}/{extra[f'{p}pck@0.1']:.3f}" for p, label in _PCK_LABELS
                 if f"{p}pck@0.05" in extra and f"{p}pck@0.1" in extra]
        if parts:
            n = int(extra.get("eval_pairs", 0))
            lines.append(f"{s['stage']}: PCK@0.05/0.1 " + " · ".join(parts) + f" ({n} held-out synthetic pairs)")
        if s["stage"] == "select" and "images_selected" in extra:
            lines.append(f"select: {extra['images_selected']} of {extra['images']} images, {extra['pairs']} pairs "
                         f"({extra.get('pairs_by_split', {})}), {extra['keypoints_per_pair']} keypoints each")
            if "quality" in extra:
                from sc_imagenet.dataset.quality import quality_line

                lines.append("select: " + quality_line(extra["quality"]))
        if s["stage"] == "export" and "release" in extra:
            lines.append(f"export: SC-ImageNet release at {record.path('release', out_dir)}")
        if s["stage"] == "report" and "page" in extra:
            lines.append(f"report: {record.path('page', out_dir)}")
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
