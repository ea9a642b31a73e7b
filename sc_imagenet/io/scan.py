"""Listing a category folder: every entry that can be an image, bad ones included."""

from __future__ import annotations

import os
from pathlib import Path


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: not a folder, the probe reports it
        return False


def list_files(folder: Path) -> list[str]:
    """Sorted names of the non-hidden, non-directory entries (broken symlinks and loops included:
    they become rows with a reason)."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and not _is_dir(e))
