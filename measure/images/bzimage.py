"""x86 bzImage kernels: the real-mode setup header (Linux boot protocol).

Offsets and rules from ``Documentation/arch/x86/boot.rst`` ("The real-mode kernel
header"). We validate what a boot loader relies on before it copies anything — a
file that fails here would be refused by GRUB or QEMU's loader too, and measuring
it would bless garbage:

- ``boot_flag`` 0xAA55 at 0x1FE and ``header`` "HdrS" at 0x202;
- boot protocol ``version`` at 0x206 at least 2.00 (bzImage needs ``LOADED_HIGH``,
  introduced with 2.00), and ``loadflags`` bit 0 set;
- ``setup_sects`` at 0x1F1 (0 means 4): the setup code, ``(setup_sects + 1) * 512``
  bytes, plus the protected-mode kernel (``syssize`` * 16 bytes) fit in the file.

The version string (``kernel_version`` at 0x20E, an offset from 0x200 into the setup
code) is reported when present; it is informational and never trusted.
A modern bzImage is also a PE/COFF EFI-stub image; that view is :mod:`.pe`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import MalformedImage
from .source import ImageSource, opened, read_at

KIND = "bzImage"
HDRS_OFFSET = 0x202
LOADED_HIGH = 0x01
_SETUP_READ = 0x280  # the header ends before 0x268 in protocol 2.15; read a little more


@dataclass(frozen=True)
class BzImage:
    """The facts of the setup header a verifier or operator may want to see."""

    protocol: tuple[int, int]
    setup_sects: int
    setup_size: int
    syssize_bytes: int
    loadflags: int
    cmdline_size: int | None  # protocol >= 2.06; the kernel's COMMAND_LINE_SIZE - 1
    kernel_version: str | None


def looks_like_bzimage(head: bytes) -> bool:
    return len(head) >= HDRS_OFFSET + 4 and head[HDRS_OFFSET:HDRS_OFFSET + 4] == b"HdrS"


def parse_bzimage(source: ImageSource) -> BzImage:
    with opened(source) as (stream, size):
        return _parse(stream, size)


def _parse(stream: BinaryIO, size: int) -> BzImage:
    head = read_at(stream, 0, min(_SETUP_READ, size), size, KIND, "setup header")
    if len(head) < 0x264:
        raise MalformedImage(KIND, f"file of {size} bytes is too short for a setup header")
    if head[HDRS_OFFSET:HDRS_OFFSET + 4] != b"HdrS":
        raise MalformedImage(KIND, "no 'HdrS' magic at 0x202")
    (boot_flag,) = struct.unpack_from("<H", head, 0x1FE)
    if boot_flag != 0xAA55:
        raise MalformedImage(KIND, f"boot_flag is {boot_flag:#06x}, not 0xaa55")
    (version,) = struct.unpack_from("<H", head, 0x206)
    major, minor = version >> 8, version & 0xFF
    if version < 0x0200:
        raise MalformedImage(KIND, f"boot protocol {major}.{minor:02d} predates 2.00 "
                             "(no bzImage support)")
    loadflags = head[0x211]
    if not loadflags & LOADED_HIGH:
        raise MalformedImage(KIND, "loadflags lacks LOADED_HIGH: a zImage, not a bzImage")
    setup_sects = head[0x1F1] or 4
    setup_size = (setup_sects + 1) * 512
    (syssize,) = struct.unpack_from("<I", head, 0x1F4)
    if setup_size >= size:
        raise MalformedImage(KIND, f"setup_sects {setup_sects} ({setup_size} bytes) leaves no "
                             f"protected-mode kernel in a {size}-byte file")
    if syssize == 0 or syssize * 16 > size - setup_size:
        raise MalformedImage(KIND, f"syssize {syssize} paragraphs ({syssize * 16} bytes) does "
                             f"not fit the {size - setup_size} bytes after the setup code")
    cmdline_size = struct.unpack_from("<I", head, 0x238)[0] if version >= 0x0206 else None
    return BzImage(protocol=(major, minor), setup_sects=setup_sects, setup_size=setup_size,
                   syssize_bytes=syssize * 16, loadflags=loadflags,
                   cmdline_size=cmdline_size,
                   kernel_version=_version_string(stream, head, setup_size, size))


def _version_string(stream: BinaryIO, head: bytes, setup_size: int, size: int) -> str | None:
    (pointer,) = struct.unpack_from("<H", head, 0x20E)
    if pointer == 0:
        return None
    offset = pointer + 0x200
    if offset >= setup_size:
        raise MalformedImage(KIND, f"kernel_version pointer {pointer:#x} points outside the "
                             "setup code")
    raw = read_at(stream, offset, min(256, setup_size - offset), size, KIND, "version string")
    text = raw.split(b"\0", 1)[0]
    if not text or any(b < 0x20 or b > 0x7E for b in text):
        return None  # present but not printable: report nothing rather than garbage
    return text.decode("ascii")
