"""Where the project's shipped resources live (profiles, curated category lists, weights).

The package is installed editable from the repository (`make demo`/`make test`), so resources are
resolved relative to the repository root. `SC_IMAGENET_RESOURCES` points elsewhere when the
resources are deployed separately (e.g. a worker image).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESOURCES = Path(os.environ.get("SC_IMAGENET_RESOURCES", REPO_ROOT))
PROFILES_DIR = RESOURCES / "profiles"
CATEGORY_LISTS_DIR = RESOURCES / "manifests" / "categories"
MODELS_DIR = RESOURCES / "models"


def default_builds_dir() -> Path:
    """Parent folder of build outputs when `--out` is not given: `$SC_IMAGENET_BUILDS` or `./builds`."""
    return Path(os.environ.get("SC_IMAGENET_BUILDS", "builds")).resolve()
