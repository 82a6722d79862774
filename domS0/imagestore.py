"""The finalizer's content-addressed image store: ``images/sha256/<hex>``.

What DomS0 measured must be what QEMU boots. A builder's path could be rewritten
between measurement and launch, so the bytes are copied here while they stream in
(temporary file, hashed as written, fsynced, renamed to their digest) and the launch
description names the stored file. A file's name is its SHA-256, so an existing file
is never rewritten (identical bytes dedupe) and a changed file is a new name.
Files are 0600 in a 0700 folder: only DomS0 (and a QEMU it hands them to) reads them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from vtpm_manager.durable import fsync_dir

IMAGES_DIR = "images"
#: A generous bound on one image (kernels and initrds are megabytes to a few hundred).
MAX_IMAGE_BYTES = 4 << 30


class ImageTooLarge(ValueError):
    """A streamed image passed :data:`MAX_IMAGE_BYTES`."""


@dataclass(frozen=True)
class StoredImage:
    """An image in the store: where it lives and what it is."""

    path: Path
    sha256: str
    size: int


class ImageWriter:
    """One image arriving in chunks; :meth:`commit` files it under its digest."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self._tmp = store.tmp_dir / f"incoming-{secrets.token_hex(8)}"
        self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                       0o600)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise ValueError("image writer is closed")
        self.size += len(data)
        if self.size > MAX_IMAGE_BYTES:
            raise ImageTooLarge(f"image exceeds {MAX_IMAGE_BYTES >> 20} MiB")
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def commit(self) -> StoredImage:
        """fsync, rename to ``sha256/<hex>`` (or drop it if that exists), fsync the folder."""
        if self._fd is None:
            raise ValueError("image writer is closed")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        digest = self._hash.hexdigest()
        target = self._store.sha256_dir / digest
        if target.exists():
            self._tmp.unlink(missing_ok=True)
        else:
            os.replace(self._tmp, target)
            fsync_dir(self._store.sha256_dir)
        return StoredImage(target, digest, self.size)

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()   # no-op after commit


class ImageStore:
    """``STATE_DIR/images``: ``sha256/`` for images, ``tmp/`` for ones arriving."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / IMAGES_DIR
        self.sha256_dir = self.root / "sha256"
        self.tmp_dir = self.root / "tmp"
        for folder in (self.root, self.sha256_dir, self.tmp_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Leftovers of a build interrupted by a crash are never named by anyone.
        for stale in self.tmp_dir.iterdir():
            stale.unlink(missing_ok=True)

    def writer(self) -> ImageWriter:
        return ImageWriter(self)

    def get(self, sha256: str) -> StoredImage | None:
        path = self.sha256_dir / sha256
        if len(sha256) != 64 or not path.is_file():
            return None
        return StoredImage(path, sha256, path.stat().st_size)
