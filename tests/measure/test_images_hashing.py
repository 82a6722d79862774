"""MultiHash: every bank equals hashlib over the same bytes, whatever the chunking."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from measure.hashing import CHUNK, MultiHash, digest_bytes, hash_file, hash_range, hash_stream


def test_file_over_several_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 12345)
    path = tmp_path / "blob"
    path.write_bytes(data)
    mh = hash_file(path)
    assert mh.size == len(data)
    assert mh.digests() == {b: hashlib.new(b, data).digest() for b in ("sha1", "sha256",
                                                                        "sha384", "sha512")}


class ReadOnly:
    """A stream with ``read`` and no ``readinto`` (e.g. a gRPC chunk adapter)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._inner.read(min(n, 1000))


def test_stream_without_readinto() -> None:
    data = os.urandom(200_000)
    mh = hash_stream(ReadOnly(data), ("sha256",))  # type: ignore[arg-type]
    assert mh.digests() == {"sha256": hashlib.sha256(data).digest()}


def test_range_feeds_every_target() -> None:
    data = os.urandom(CHUNK + 10)
    a, b = MultiHash(("sha256",)), MultiHash(("sha1", "sha384"))
    hash_range(io.BytesIO(data), 5, CHUNK, a, b)
    assert a.digests()["sha256"] == hashlib.sha256(data[5:5 + CHUNK]).digest()
    assert b.digests()["sha384"] == hashlib.sha384(data[5:5 + CHUNK]).digest()
    with pytest.raises(EOFError):
        hash_range(io.BytesIO(data), 100, CHUNK, a)


@pytest.mark.parametrize("banks", [(), ("md5",), ("sha256", "sha256")])
def test_bad_banks_are_refused(banks: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="PCR banks"):
        MultiHash(banks)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=100_000), max_size=5))
def test_any_chunking_gives_the_digest_of_the_concatenation(parts: list[bytes]) -> None:
    mh = MultiHash()
    for part in parts:
        mh.update(part)
    assert mh.digests() == digest_bytes(b"".join(parts))
