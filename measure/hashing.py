"""Stream hashing into several PCR banks at once, in constant memory.

Every image is read once, in 1 MiB chunks, and each chunk goes to one hash object
per bank, so a 1 GiB initrd costs one read and about 1 MiB of buffer however many
banks are declared. The default is every bank a TPM may allocate (SHA-1, SHA-256,
SHA-384, SHA-512): a bank that is allocated but never extended holds a value that
any domain reproduces, so a policy or quote over it would prove nothing.

hashlib's OpenSSL-backed ``update`` releases the GIL for buffers over 2 KiB, so the
banks are split into one *lane* per core (greedily by relative cost: SHA-384 and
SHA-512 are about twice SHA-256 with SHA-NI) and the lanes hashed in parallel, the
caller's thread taking one: on two cores the four banks cost about half their sum
(sha384+sha256 in one lane, sha512+sha1 in the other).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20
DEFAULT_BANKS: tuple[str, ...] = ("sha1", "sha256", "sha384", "sha512")

#: TPM_ALG_ID of every bank we hash (TCG Algorithm Registry, Table 3).
TPM_ALG_IDS: Mapping[str, int] = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C,
                                  "sha512": 0x000D}
DIGEST_SIZES: Mapping[str, int] = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

# Below this a chunk is hashed inline: a thread hand-off costs more than it saves.
_PARALLEL_MIN = 64 * 1024
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(1, min(3, (os.cpu_count() or 1))),
                                   thread_name_prefix="multihash")
    return _pool


def check_banks(banks: Iterable[str]) -> tuple[str, ...]:
    """The banks as a tuple, refusing unknown names and duplicates."""
    result = tuple(banks)
    unknown = [b for b in result if b not in TPM_ALG_IDS]
    if unknown or not result or len(set(result)) != len(result):
        raise ValueError(f"PCR banks must be distinct names from {sorted(TPM_ALG_IDS)}, "
                         f"got {list(result)}")
    return result


# Relative cost per byte with SHA extensions (openssl speed on x86-64); only used to
# balance lanes, so a wrong guess costs speed, never correctness.
_COST = {"sha1": 1.0, "sha256": 1.1, "sha384": 2.0, "sha512": 2.0}


class MultiHash:
    """One hash per bank, fed the same bytes (the ``hashlib`` shape, many digests)."""

    def __init__(self, banks: Iterable[str] = DEFAULT_BANKS) -> None:
        self.banks = check_banks(banks)
        self._hashes = [hashlib.new(b) for b in self.banks]
        self.size = 0
        lanes: list[list[Any]] = [[] for _ in range(min(len(self._hashes),
                                                        os.cpu_count() or 1))]
        for _bank, h in sorted(zip(self.banks, self._hashes, strict=True),
                              key=lambda pair: -_COST[pair[0]]):
            min(lanes, key=lambda lane: sum(_COST[x.name] for x in lane)).append(h)
        self._lanes = [lane for lane in lanes if lane]

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.size += len(data)
        if len(self._lanes) < 2 or len(data) < _PARALLEL_MIN:
            for h in self._hashes:
                h.update(data)
            return
        # The caller keeps ``data`` unchanged until every lane is done (we wait).
        mine, *others = self._lanes
        futures = [_executor().submit(_feed, lane, data) for lane in others]
        _feed(mine, data)
        for future in futures:
            future.result()

    def digests(self) -> dict[str, bytes]:
        """Digest per bank; the object stays usable (hashlib copies its state)."""
        return {b: h.digest() for b, h in zip(self.banks, self._hashes, strict=True)}

    def hexdigests(self) -> dict[str, str]:
        return {b: d.hex() for b, d in self.digests().items()}


def _feed(lane: list[Any], data: bytes | bytearray | memoryview) -> None:
    for h in lane:
        h.update(data)


def digest_bytes(data: bytes, banks: Iterable[str] = DEFAULT_BANKS) -> dict[str, bytes]:
    """Digest per bank of a small byte string (event strings, configs)."""
    mh = MultiHash(banks)
    mh.update(data)
    return mh.digests()


def hash_stream(stream: BinaryIO, banks: Iterable[str] = DEFAULT_BANKS,
                into: MultiHash | None = None) -> MultiHash:
    """Hash ``stream`` from its current position to its end, one 1 MiB buffer reused."""
    mh = into if into is not None else MultiHash(banks)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        n = _read_into(stream, view)
        if not n:
            return mh
        mh.update(view[:n])


def hash_range(stream: BinaryIO, start: int, length: int, *targets: MultiHash) -> None:
    """Feed ``length`` bytes at ``start`` to every target; short files are the caller's
    check (images validate offsets against the file size before calling this)."""
    stream.seek(start)
    remaining = length
    buffer = bytearray(min(CHUNK, max(length, 1)))
    view = memoryview(buffer)
    while remaining > 0:
        n = _read_into(stream, view[:min(remaining, len(buffer))])
        if not n:
            raise EOFError(f"file ended {remaining} bytes before offset {start + length}")
        for mh in targets:
            mh.update(view[:n])
        remaining -= n


def hash_file(path: str | os.PathLike[str], banks: Iterable[str] = DEFAULT_BANKS) -> MultiHash:
    """Hash a whole file (the initrd, a plain kernel)."""
    with Path(path).open("rb", buffering=0) as stream:
        return hash_stream(stream, banks)


def _read_into(stream: BinaryIO, view: memoryview) -> int:
    """``readinto`` when the stream has it (files do: no copy), else ``read``."""
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        return int(readinto(view) or 0)
    data = stream.read(len(view))
    view[:len(data)] = data
    return len(data)
