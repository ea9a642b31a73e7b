"""Where the project's shipped resources live (profiles, curated category lists, weights).

Three places, first match wins:
- `$SC_IMAGENET_RESOURCES`, when the resources are deployed separately (e.g. a worker image);
- the repository the package is imported from (a checkout, installed editable: `make demo`, `make test`);
- what a wheel installed (`pip install .`): `<prefix>/share/sc-imagenet/{profiles,models,manifests/categories}`
  (`[tool.setuptools.data-files]` in pyproject.toml), found through the distribution's own file list, so a
  `--user` or other install scheme is found too.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "sc-imagenet"
_MARKER = "share/sc-imagenet/profiles/demo.yaml"


def in_checkout() -> bool:
    """True when the package runs from the repository (its profiles beside it), not from an installed wheel."""
    return (REPO_ROOT / "profiles").is_dir() and (REPO_ROOT / "pyproject.toml").is_file()


def installed_resources() -> Path | None:
    """`<prefix>/share/sc-imagenet` of an installed wheel; None when the distribution has no such files."""
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.as_posix().endswith(_MARKER):
            return Path(f.locate()).resolve().parents[1]
    return None


def resources_dir() -> Path:
    env = os.environ.get("SC_IMAGENET_RESOURCES")
    if env:
        return Path(env)
    if in_checkout():
        return REPO_ROOT
    return installed_resources() or REPO_ROOT


RESOURCES = resources_dir()
PROFILES_DIR = RESOURCES / "profiles"
CATEGORY_LISTS_DIR = RESOURCES / "manifests" / "categories"
MODELS_DIR = RESOURCES / "models"


def default_builds_dir() -> Path:
    """Parent folder of build outputs when `--out` is not given: `$SC_IMAGENET_BUILDS` or `./builds`."""
    return Path(os.environ.get("SC_IMAGENET_BUILDS", "builds")).resolve()
