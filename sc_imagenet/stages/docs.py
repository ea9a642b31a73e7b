"""The column tables of `manifests/README.md`, generated from the stages' schemas.

    python -m sc_imagenet.stages.docs --write    rewrite the generated blocks in place
    python -m sc_imagenet.stages.docs --check    exit 1 (with a diff) if the README is out of date

Each stage's block sits between two marker comments; the prose around it (what a row is, the
meaning of statuses, `extra` keys) stays hand-written. A registered stage without a block gets one
appended by `--write`, so a new stage starts documented.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

import pyarrow as pa

from sc_imagenet.paths import REPO_ROOT
from sc_imagenet.stages import STAGES, Stage, pipeline_order
from sc_imagenet.stages.schema import PARTITION_COLUMN, PARTITION_DESCRIPTION, describe, type_name

README = REPO_ROOT / "manifests" / "README.md"
BEGIN = ("<!-- BEGIN GENERATED {name}: edit the schema in sc_imagenet/stages/, "
         "then `python -m sc_imagenet.stages.docs --write` -->")
END = "<!-- END GENERATED {name} -->"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def stage_block(stage: Stage) -> str:
    """Markdown for one stage: layout line and one table row per column, in schema order."""
    layout = ("one shard per category, `wnid=<wnid>/part-00000.parquet`" if stage.partitioned
              else "one file, `part-00000.parquet`")
    head = f"Layout: {layout} · schema version {stage.schema_version}"
    if stage.status_column:
        head += f" · `rows_by_status` counts `{stage.status_column}`"
    lines = [head, "", *_column_table(stage.schema, stage.partitioned)]
    for table, schema in stage.tables.items():
        where = "`_{t}/wnid=<wnid>/part-00000.parquet`" if stage.partitioned else "`_{t}/part-00000.parquet`"
        lines += ["", f"Second table `{table}`: {where.format(t=table)}, one shard beside each of the stage's "
                  f"(`pandas.read_parquet(\"<stage dir>/_{table}\")`)", "", *_column_table(schema, stage.partitioned)]
    return "\n".join(lines)


def _column_table(schema: pa.Schema, partitioned: bool) -> list[str]:
    lines = ["| column | type | unit / convention | meaning |", "|---|---|---|---|"]
    if partitioned:
        lines.append(f"| {PARTITION_COLUMN} | string (partition) |  | {_cell(PARTITION_DESCRIPTION)} |")
    for field in schema:
        meaning, unit = describe(field)
        lines.append(f"| {field.name} | {type_name(field.type)} | {_cell(unit)} | {_cell(meaning)} |")
    return lines


def _block_pattern(name: str) -> re.Pattern[str]:
    begin = re.escape(BEGIN.format(name=name))
    end = re.escape(END.format(name=name))
    return re.compile(f"{begin}\n.*?\n{end}", re.DOTALL)


def render(text: str) -> str:
    """`text` with every stage's generated block replaced by the current one (missing ones appended)."""
    for name in pipeline_order():
        block = f"{BEGIN.format(name=name)}\n{stage_block(STAGES[name])}\n{END.format(name=name)}"
        pattern = _block_pattern(name)
        if pattern.search(text):
            text = pattern.sub(lambda _m, block=block: block, text)
        else:
            text = text.rstrip("\n") + f"\n\n## `{name}`\n\n{STAGES[name].description}\n\n{block}\n"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    wanted = render(current)
    if args.write:
        if wanted != current:
            args.readme.write_text(wanted)
        print(f"{args.readme}: {'updated' if wanted != current else 'up to date'}")
        return 0
    if wanted != current:
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True),
                                                   str(args.readme), "generated"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
