"""The one place where ultralytics is configured: offline, no telemetry, local weights only.

ultralytics reads `YOLO_CONFIG_DIR` when it is first imported and may try the network for fonts,
AMP-check weights, hub sync and bare weight names. Everything in this project that touches
ultralytics goes through `import_ultralytics()` / `load_yolo()`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sc-imagenet" / "ultralytics"


class WeightsNotFoundError(FileNotFoundError):
    pass


def import_ultralytics(config_dir: Path | None = None) -> Any:
    """Set the offline environment, import ultralytics, switch hub sync off; returns the module."""
    os.environ["YOLO_OFFLINE"] = "1"
    if "YOLO_CONFIG_DIR" not in os.environ:
        cfg_dir = Path(config_dir or DEFAULT_CONFIG_DIR)
        cfg_dir.mkdir(parents=True, exist_ok=True)
        os.environ["YOLO_CONFIG_DIR"] = str(cfg_dir)
    # ultralytics' import sets OMP_NUM_THREADS=1 in os.environ when it is unset: every process started
    # afterwards (a Dask LocalCluster worker, torchrun, a subprocess build) would then run torch on one thread
    # and compute other last bits than this process. Keep the environment as it was.
    omp = os.environ.get("OMP_NUM_THREADS")
    import ultralytics
    from ultralytics import settings

    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)

    if settings.get("sync", False):
        settings.update({"sync": False})
    return ultralytics


def load_yolo(weights: str | os.PathLike) -> Any:
    """A YOLO model from a LOCAL `.pt` file. A bare name like `yolo11n.pt` would make ultralytics
    download it, so anything that is not an existing file is an error."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"detector weights not found: {path}. Weights are never downloaded at run time; put the file "
            "there (see models/registry.yaml) or point detect.weights at a local .pt file."
        )
    import_ultralytics()
    from ultralytics import YOLO

    return YOLO(str(path.resolve()))
