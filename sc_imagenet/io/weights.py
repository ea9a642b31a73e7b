"""Local weights: `models/registry.yaml` names → files, with sha256 checks. Never downloads."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from sc_imagenet.io.manifest import file_sha256
from sc_imagenet.paths import MODELS_DIR


class WeightsError(ValueError):
    pass


@lru_cache(maxsize=4)
def load_registry(path: Path = MODELS_DIR / "registry.yaml") -> dict[str, dict[str, dict[str, Any]]]:
    return yaml.safe_load(path.read_text()) if path.exists() else {}


@lru_cache(maxsize=32)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


def weights_sha256(path: Path) -> str:
    """sha256 of a weights file, cached per (path, mtime, size): planning hashes it on every build."""
    st = path.stat()
    return _sha256(path.resolve(), st.st_mtime_ns, st.st_size)


def resolve_weights(kind: str, name_or_path: str, field: str) -> tuple[Path, dict[str, Any]]:
    """A registry entry name (`demo-yolo-seg`) or a path → (existing local file, registry entry or {}).

    Raises WeightsError naming the config field when the file is missing or its sha256 differs.
    """
    entries = load_registry().get(kind, {})
    entry = entries.get(name_or_path)
    if entry is not None:
        path = Path(entry["file"])
        path = path if path.is_absolute() else MODELS_DIR / path
    else:
        path = Path(name_or_path).expanduser()
        if not path.suffix:
            known = ", ".join(sorted(entries)) or "none"
            raise WeightsError(f"{field}: {name_or_path!r} is neither a registry entry ({known}) nor a file path")
    if not path.is_file():
        hint = f" (download it yourself from {entry['url']})" if entry and entry.get("url") else ""
        raise WeightsError(f"{field}: weights file not found: {path}{hint}. Nothing is downloaded at run time.")
    expected = (entry or {}).get("sha256")
    if expected and weights_sha256(path) != expected:
        raise WeightsError(f"{field}: {path} has sha256 {weights_sha256(path)}, registry expects {expected}")
    return path.resolve(), entry or {}
