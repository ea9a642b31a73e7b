"""When the output folder cannot take more data: one error type with a message that says why."""

from __future__ import annotations

import errno

STORAGE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
                  errno.EDQUOT: "the disk quota is exceeded", errno.EACCES: "permission denied"}


class StorageError(OSError):
    """The output folder cannot take more data (full, read-only, over quota, not writable): the build
    stops with what is finished kept, and resumes once the folder can be written again."""


def storage_error(exc: OSError, what: str) -> StorageError | None:
    """A `StorageError` explaining `exc` while doing `what`, or None if `exc` is not a storage problem."""
    if exc.errno not in STORAGE_ERRORS:
        return None
    return StorageError(exc.errno, f"{what}: {STORAGE_ERRORS[exc.errno]} ({exc.strerror}: {exc.filename or ''}). "
                        "Shards finished before this are kept; free space or make the folder writable, then "
                        "rerun the build to resume.")
