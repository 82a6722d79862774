"""Images a domain boots, each parsed and validated by its own module.

- :mod:`.elf` — ELF ``vmlinux``: PT_LOAD segments as code and data;
- :mod:`.bzimage` — the x86 boot-protocol setup header;
- :mod:`.pe` — PE/COFF, the Authenticode digest firmware puts in PCR 4;
- :mod:`.cmdline` — the command-line encodings GRUB and the EFI stub measure;
- :mod:`.config` — the launch configuration's canonical form.

:func:`measure_kernel` sniffs the format (a modern x86 ``vmlinuz`` is both a bzImage
and a PE/COFF EFI-stub image, and gets both views) and always hashes the whole file,
which is what a loader's PCR 9 file event carries. Every failure is a
:class:`~measure.errors.MalformedImage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from ..errors import MalformedImage
from ..hashing import DEFAULT_BANKS, hash_stream
from .bzimage import BzImage, looks_like_bzimage, parse_bzimage
from .config import LaunchConfig
from .elf import ElfImage, looks_like_elf, parse_elf
from .pe import PeImage, is_pe, parse_pe
from .source import ImageSource, opened

__all__ = ["BzImage", "ElfImage", "FileDigest", "KernelImage", "LaunchConfig", "PeImage",
           "measure_initrd", "measure_kernel"]

_SNIFF = 4096


@dataclass(frozen=True)
class FileDigest:
    """A file hashed as plain bytes."""

    size: int
    digests: dict[str, bytes]


@dataclass(frozen=True)
class KernelImage:
    """A kernel's whole-file digest plus every format view that applies."""

    formats: tuple[str, ...]  # ("elf",) or a subset of ("bzimage", "pe")
    file: FileDigest
    elf: ElfImage | None = None
    bzimage: BzImage | None = None
    pe: PeImage | None = None


def measure_kernel(source: ImageSource, banks: tuple[str, ...] = DEFAULT_BANKS) -> KernelImage:
    """Validate and hash a kernel; :class:`MalformedImage` if it is no kernel we know."""
    with opened(source) as (stream, size):
        head = stream.read(_SNIFF)
        stream.seek(0)
        if looks_like_elf(head):
            elf = parse_elf(stream, banks)
            return KernelImage(("elf",), _whole(stream, size, banks), elf=elf)
        pe = parse_pe(stream, banks) if is_pe(head) else None
        bz = parse_bzimage(stream) if looks_like_bzimage(head) else None
        if pe is None and bz is None:
            raise MalformedImage("kernel", "neither an ELF vmlinux, an x86 bzImage nor a "
                                 "PE/COFF EFI-stub image")
        formats = tuple(name for name, view in (("bzimage", bz), ("pe", pe)) if view)
        return KernelImage(formats, _whole(stream, size, banks), bzimage=bz, pe=pe)


def measure_initrd(source: ImageSource, banks: tuple[str, ...] = DEFAULT_BANKS) -> FileDigest:
    """An initrd is measured as the bytes the loader hands over, whatever its compression."""
    with opened(source) as (stream, size):
        return _whole(stream, size, banks)


def _whole(stream: BinaryIO, size: int, banks: tuple[str, ...]) -> FileDigest:
    stream.seek(0)
    mh = hash_stream(stream, banks)
    if mh.size != size:
        raise MalformedImage("image", f"read {mh.size} bytes of a {size}-byte file")
    return FileDigest(size, mh.digests())
