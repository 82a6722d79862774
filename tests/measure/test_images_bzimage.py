"""x86 bzImage setup header: a synthetic image parses, a corrupted one is refused."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from measure.errors import MalformedImage, MeasureError
from measure.images import measure_kernel
from measure.images.bzimage import parse_bzimage

VERSION = "6.1.0-vtpm (builder@example) #1 SMP"


def synthetic_bzimage(setup_sects: int = 2, payload: int = 4096, protocol: int = 0x020F,
                      version: str | None = VERSION, cmdline_size: int = 2047) -> bytes:
    """A minimal bzImage: boot sector + setup sectors + a protected-mode payload."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    struct.pack_into("<I", setup, 0x1F4, payload // 16)  # syssize
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    setup[0x211] = 0x01  # LOADED_HIGH
    struct.pack_into("<I", setup, 0x238, cmdline_size)
    if version is not None:
        at = 0x300
        struct.pack_into("<H", setup, 0x20E, at - 0x200)
        setup[at:at + len(version) + 1] = version.encode() + b"\0"
    return bytes(setup) + bytes(range(256)) * (payload // 256)


def test_synthetic_bzimage_parses() -> None:
    image = parse_bzimage(io.BytesIO(synthetic_bzimage()))
    assert image.protocol == (2, 15)
    assert image.setup_sects == 2 and image.setup_size == 1536
    assert image.kernel_version == VERSION
    assert image.cmdline_size == 2047
    kernel = measure_kernel(io.BytesIO(synthetic_bzimage()))
    assert kernel.formats == ("bzimage",)


def test_setup_sects_zero_means_four() -> None:
    data = bytearray(synthetic_bzimage(setup_sects=4))
    data[0x1F1] = 0
    assert parse_bzimage(io.BytesIO(bytes(data))).setup_sects == 4


def test_version_string_is_optional() -> None:
    assert parse_bzimage(io.BytesIO(synthetic_bzimage(version=None))).kernel_version is None


def _corrupt(offset: int, value: bytes) -> bytes:
    data = bytearray(synthetic_bzimage())
    data[offset:offset + len(value)] = value
    return bytes(data)


@pytest.mark.parametrize("data, message", [
    (_corrupt(0x202, b"HdrX"), "no 'HdrS' magic"),
    (_corrupt(0x1FE, b"\x00\x00"), "boot_flag"),
    (_corrupt(0x206, struct.pack("<H", 0x0105)), "predates 2.00"),
    (_corrupt(0x211, b"\x00"), "LOADED_HIGH"),
    (_corrupt(0x1F1, b"\x7f"), "setup_sects"),
    (_corrupt(0x1F4, struct.pack("<I", 0xFFFFFF)), "syssize"),
    (_corrupt(0x20E, struct.pack("<H", 0x7000)), "kernel_version pointer"),
    (synthetic_bzimage()[:0x300], "setup_sects"),
    (b"\0" * 100, "too short"),
])
def test_corrupted_header_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(MalformedImage, match=message) as info:
        parse_bzimage(io.BytesIO(data))
    assert str(info.value).startswith("malformed bzImage: ")


def test_no_known_format_is_refused() -> None:
    with pytest.raises(MalformedImage, match="neither an ELF"):
        measure_kernel(io.BytesIO(b"just some bytes" * 100))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_setup_header_raises_only_our_error(data: st.DataObject) -> None:
    image = bytearray(synthetic_bzimage())
    for _ in range(data.draw(st.integers(1, 6))):
        where = data.draw(st.integers(0x1F0, 0x27F))
        image[where] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(image)))
    try:
        measure_kernel(io.BytesIO(bytes(image[:cut])))
    except MeasureError:
        pass
