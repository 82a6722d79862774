"""Where image bytes come from: a path or an already open, seekable binary file.

Parsers read headers with bounded ``read_at`` calls and hash bodies through
:func:`measure.hashing.hash_range`, so no image is ever held in memory whole.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import MalformedImage

ImageSource = str | os.PathLike[str] | BinaryIO


@contextlib.contextmanager
def opened(source: ImageSource) -> Iterator[tuple[BinaryIO, int]]:
    """The stream and its size; a path is opened here and closed on exit."""
    if isinstance(source, str | os.PathLike):
        with Path(source).open("rb", buffering=0) as stream:
            yield stream, os.fstat(stream.fileno()).st_size
        return
    start = source.seek(0, os.SEEK_END)
    source.seek(0)
    yield source, start


def read_at(stream: BinaryIO, offset: int, length: int, size: int, kind: str,
            what: str) -> bytes:
    """Exactly ``length`` bytes at ``offset``, or :class:`MalformedImage` naming ``what``."""
    if offset < 0 or length < 0 or offset + length > size:
        raise MalformedImage(kind, f"{what} at offset {offset:#x} (+{length}) lies beyond "
                             f"the end of the {size}-byte file")
    stream.seek(offset)
    data = stream.read(length)
    if len(data) != length:
        raise MalformedImage(kind, f"{what}: file ended early")
    return data
