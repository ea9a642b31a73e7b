"""What checking a finished build costs: `status` without file checks, with the default check (sizes and
Parquet footers) and with `--verify` (every checksum), measured side by side on one build.

    python benchmarks/integrity.py [--out BUILD] [--work DIR] [--repeat 5] [--json FILE]

Without `--out`, the synthetic demo is built into `<work>/demo` first (about 3 minutes here) unless it is
already there. Figures are per GB of recorded files and per 1,000 files, warm (files in the page cache, as
right after a build) and, for `--verify`, cold too: every file is dropped from the page cache first with
`posix_fadvise(DONTNEED)`, so it is read from the disk again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sc_imagenet.build import stage_dir, stage_states
from sc_imagenet.build_summary import print_status
from sc_imagenet.io.integrity import INVENTORY, in_build, read_inventory
from sc_imagenet.stages import pipeline_order


def recorded_files(out: Path) -> list[Path]:
    files = []
    for name in pipeline_order():
        inventory = stage_dir(out, name) / INVENTORY
        if inventory.exists():
            files += [in_build(e.path, out) for e in read_inventory(inventory)]
    return files


def drop_from_cache(files: list[Path]) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn: Callable[[], Any], repeat: int, before: Callable[[], None] | None = None) -> float:
    """Median seconds of `repeat` calls (`before` runs untimed ahead of each)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def quiet_status(out: Path, check: bool = True, verify: bool = False) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        print_status(out, check=check, verify=verify)


def status_as_before(out: Path) -> None:
    """`status` as it was before files were checked: `print_status` then read the stage states three times
    (table, unknown-state lines, PCK lines), none of them checking a file."""
    quiet_status(out, check=False)
    stage_states(out, check=False)
    stage_states(out, check=False)


def measure(out: Path, repeat: int) -> dict[str, Any]:
    files = recorded_files(out)
    n_bytes = sum(f.stat().st_size for f in files)
    shards = sum(f.suffix == ".parquet" for f in files)
    states = stage_states(out, verify=True)
    damaged = [s["stage"] for s in states if s["damage"]]
    if damaged:
        raise SystemExit(f"{out}: damaged stages {damaged}; measure on a whole build")
    seconds = {
        "stage_states_no_check": timed(lambda: stage_states(out, check=False), repeat),
        "stage_states_check": timed(lambda: stage_states(out), repeat),
        "stage_states_verify_warm": timed(lambda: stage_states(out, verify=True), repeat),
        "stage_states_verify_cold": timed(lambda: stage_states(out, verify=True), repeat,
                                          before=lambda: drop_from_cache(files)),
        "status_no_check": timed(lambda: quiet_status(out, check=False), repeat),
        "status_as_before": timed(lambda: status_as_before(out), repeat),
        "status_default": timed(lambda: quiet_status(out), repeat),
        "status_verify": timed(lambda: quiet_status(out, verify=True), repeat),
    }
    gb, kfiles = n_bytes / 1e9, len(files) / 1000
    check = seconds["stage_states_check"] - seconds["stage_states_no_check"]
    return {
        "build": str(out), "files": len(files), "shards": shards, "bytes": n_bytes, "repeat": repeat,
        "seconds": {k: round(v, 5) for k, v in seconds.items()},
        "default_check": {"s_per_1000_files": round(check / kfiles, 4), "s_per_gb": round(check / gb, 4)},
        "verify_warm": {"s_per_1000_files": round(seconds["stage_states_verify_warm"] / kfiles, 4),
                        "s_per_gb": round(seconds["stage_states_verify_warm"] / gb, 4)},
        "verify_cold": {"s_per_1000_files": round(seconds["stage_states_verify_cold"] / kfiles, 4),
                        "s_per_gb": round(seconds["stage_states_verify_cold"] / gb, 4)},
        "status_default_over_no_check": round(seconds["status_default"] / seconds["status_no_check"], 3),
        "status_default_over_before": round(seconds["status_default"] / seconds["status_as_before"], 3),
    }


def ensure_demo(work: Path) -> Path:
    out = work / "demo"
    if all(s["state"] == "complete" for s in stage_states(out)) if out.exists() else False:
        return out
    print(f"building the demo into {out} (about 3 minutes)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "sc_imagenet.cli", "demo", "--no-prefect", "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="a finished build (default: the demo, built under --work)")
    parser.add_argument("--work", type=Path, help="where to build the demo (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out.resolve() if args.out else ensure_demo((args.work or Path(tmp)).resolve())
        doc = measure(out, args.repeat)
    s = doc["seconds"]
    print(f"build {doc['build']}: {doc['files']} recorded files ({doc['shards']} Parquet shards), "
          f"{doc['bytes'] / 1e6:.1f} MB; median of {doc['repeat']}")
    print(f"{'what':<40}{'seconds':>10}")
    for key, value in s.items():
        print(f"{key:<40}{value:>10.4f}")
    for key in ("default_check", "verify_warm", "verify_cold"):
        per = doc[key]
        print(f"{key:<16} {per['s_per_1000_files']:>8.4f} s per 1,000 files  {per['s_per_gb']:>8.3f} s per GB")
    print(f"status with the default check / the same without it: {doc['status_default_over_no_check']:.2f}x; "
          f"/ status as it was before the check: {doc['status_default_over_before']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
