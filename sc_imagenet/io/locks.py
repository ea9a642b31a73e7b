"""An exclusive lock on a build's output folder.

`fcntl.flock` is released by the kernel when the holder dies (even by SIGKILL), so a killed build
never leaves a stale lock behind; the file's contents only name the holder for the error message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from sc_imagenet.io.storage import storage_error

LOCK_NAME = ".build.lock"


class BuildLockedError(RuntimeError):
    """Another build holds the output folder."""


class BuildLock:
    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "an unknown process"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
        return f"pid {info.get('pid')} on host {info.get('host')} (since {since}: {info.get('cmd', '?')})"

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            err = storage_error(exc, f"cannot lock the output folder {self.path.parent}")
            if err is not None:
                raise err from exc
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BuildLockedError(
                f"output folder {self.path.parent} is in use by another build: {self.holder()}. "
                "Wait for it to finish or use another --out."
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                "cmd": " ".join(sys.argv)[:200]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
