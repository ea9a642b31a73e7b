"""Human-readable summaries of a build (terminal, Prefect artifacts)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sc_imagenet.build import stage_states


def build_summary_rows(out_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for s in stage_states(out_dir):
        by_status = ", ".join(f"{k}={v}" for k, v in s["rows_by_status"].items())
        rows.append({"stage": s["stage"], "state": s["state"], "rows": s["rows"] if s["rows"] is not None else "",
                     "by status": by_status, "seconds": s["wall_s"] if s["wall_s"] is not None else "",
                     "path": s["path"]})
    return rows


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
