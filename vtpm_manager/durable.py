"""Durable file replacement: a reader sees the old bytes or the new, never a mix.

Write to a temporary file in the same folder, fsync it, rename it over the target,
then fsync the folder so the rename itself survives a power cut (POSIX gives no
durability for a rename until the directory entry is flushed).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (creations, renames, unlinks) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` durably; on error the old file is intact."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def durable_unlink(path: Path) -> None:
    """Remove ``path`` and make the removal durable."""
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
