"""`make demo`: the synthetic demo built through the real deployment path.

Starts a local Prefect server if none answers (SQLite under `.prefect/`), serves the deployments,
runs `prefect deployment run build-sc-imagenet/demo --watch`, prints where the outputs are, and
stops what it started.
"""

from __future__ import annotations

import time
from pathlib import Path

from sc_imagenet.orchestration.local import LocalPrefect
from sc_imagenet.paths import REPO_ROOT, default_builds_dir


def run_demo_deployment(out: str | None = None, prefect_home: Path | None = None,
                        params: dict[str, object] | None = None) -> int:
    """`params`: further flow parameters of the run (e.g. `{"runner": "dask"}`)."""
    home = prefect_home or REPO_ROOT / ".prefect"
    builds = default_builds_dir()
    out_dir = Path(out).resolve() if out else builds / "demo"
    t0 = time.monotonic()
    with LocalPrefect(home, log_dir=home / "logs") as prefect:
        print(f"Prefect API: {prefect.api_url} ({'started here' if prefect.server_started else 'already running'}"
              f"; UI at {prefect.api_url.removesuffix('/api')})", flush=True)
        prefect.serve(cwd=REPO_ROOT, env=prefect.env(SC_IMAGENET_BUILDS=str(builds)))
        print("serving deployments build-sc-imagenet/demo and build-sc-imagenet/imagenet", flush=True)
        result = prefect.run_deployment("demo", params={"out": str(out_dir), **(params or {})})
    wall = time.monotonic() - t0
    if result.returncode != 0:
        print(f"\nthe demo deployment run failed (exit {result.returncode}); logs: {home / 'logs'}")
        return result.returncode
    from sc_imagenet.build_summary import print_status

    print_status(out_dir)
    print(f"\nsynthetic data + ground truth: {out_dir / 'data'}")
    print(f"manifests: {out_dir / 'manifests'}   (pandas.read_parquet('{out_dir / 'manifests' / 'select'}'))")
    from sc_imagenet.stages.export import ExportFigures
    from sc_imagenet.stages.report import ReportFigures

    export = ExportFigures.shown(out_dir / "manifests" / "export")
    if export is not None:
        print(f"SC-ImageNet release: {export.release_path(out_dir)}")
    report = ReportFigures.shown(out_dir / "manifests" / "report")
    page = report.page_path(out_dir) if report is not None else None
    if report is not None and page is not None:
        print(f"build report: {page} ({report.bytes / 1e6:.2f} MB; open {page.as_uri()})")
    print(f"check it: .venv/bin/sc-imagenet status --out {out_dir} --json")
    print(f"make demo wall time: {wall:.0f}s")
    return 0
