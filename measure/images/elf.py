"""ELF kernels (``vmlinux``): loadable segments as code and data, plus the whole file.

The seed's domain builder loads an ELF kernel segment by segment, so the measurement
it can stand behind is of what it loads: every ``PT_LOAD`` segment's file bytes
(``p_offset`` .. ``p_offset + p_filesz``; the zero fill up to ``p_memsz`` is not in
the file and is not hashed). Executable segments (``PF_X``) are *code*, the rest
*data*; each class has one digest over its segments' bytes in program-header order,
so a change to writable data never disturbs the code digest a policy may pin.
The whole-file digest is what GRUB-style PCR 9 events carry.

Header checks follow the System V ABI (``e_ident``, class, data encoding, version,
``e_type`` executable or shared object, program headers inside the file).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import MalformedImage
from ..hashing import DEFAULT_BANKS, MultiHash, hash_range
from .source import ImageSource, opened, read_at

KIND = "ELF image"
PT_LOAD = 1
PF_X, PF_W, PF_R = 1, 2, 4
ET_EXEC, ET_DYN = 2, 3
_MAX_PHNUM = 0xFFFF - 1  # PN_XNUM (0xffff) means "count elsewhere": not for kernels


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD segment with its digests."""

    index: int  # position in the program-header table
    flags: int  # PF_R | PF_W | PF_X
    offset: int
    filesz: int
    memsz: int
    vaddr: int
    digests: dict[str, bytes]

    @property
    def executable(self) -> bool:
        return bool(self.flags & PF_X)


@dataclass(frozen=True)
class ElfImage:
    elf_class: int  # 32 or 64
    machine: int
    entry: int
    segments: tuple[Segment, ...]
    code: dict[str, bytes]
    data: dict[str, bytes]


def looks_like_elf(head: bytes) -> bool:
    return head[:4] == b"\x7fELF"


def parse_elf(source: ImageSource, banks: tuple[str, ...] = DEFAULT_BANKS) -> ElfImage:
    with opened(source) as (stream, size):
        return _parse(stream, size, banks)


def _parse(stream: BinaryIO, size: int, banks: tuple[str, ...]) -> ElfImage:
    ident = read_at(stream, 0, 16, size, KIND, "e_ident")
    if ident[:4] != b"\x7fELF":
        raise MalformedImage(KIND, "no ELF magic")
    if ident[4] not in (1, 2):
        raise MalformedImage(KIND, f"EI_CLASS {ident[4]} is neither ELFCLASS32 nor ELFCLASS64")
    if ident[5] not in (1, 2):
        raise MalformedImage(KIND, f"EI_DATA {ident[5]} is neither little- nor big-endian")
    if ident[6] != 1:
        raise MalformedImage(KIND, f"EI_VERSION {ident[6]} is not EV_CURRENT")
    is64 = ident[4] == 2
    end = "<" if ident[5] == 1 else ">"
    header = read_at(stream, 0, 64 if is64 else 52, size, KIND, "ELF header")
    if is64:
        e_type, machine, _, entry, phoff, _, _, _ehsize, phentsize, phnum = struct.unpack_from(
            end + "HHIQQQIHHH", header, 16)
        ph_format, ph_size = end + "IIQQQQQQ", 56
    else:
        e_type, machine, _, entry, phoff, _, _, _ehsize, phentsize, phnum = struct.unpack_from(
            end + "HHIIIIIHHH", header, 16)
        ph_format, ph_size = end + "IIIIIIII", 32
    if e_type not in (ET_EXEC, ET_DYN):
        raise MalformedImage(KIND, f"e_type {e_type} is not an executable (ET_EXEC/ET_DYN)")
    if phentsize != ph_size:
        raise MalformedImage(KIND, f"e_phentsize {phentsize} is not {ph_size}")
    if phnum == 0 or phnum > _MAX_PHNUM:
        raise MalformedImage(KIND, f"e_phnum {phnum}: no program headers to load")
    table = read_at(stream, phoff, phnum * ph_size, size, KIND, "program-header table")

    loads: list[tuple[int, int, int, int, int, int]] = []
    for i in range(phnum):
        fields = struct.unpack_from(ph_format, table, i * ph_size)
        if is64:
            p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = fields
        else:
            p_type, p_offset, p_vaddr, _, p_filesz, p_memsz, p_flags, _ = fields
        if p_type != PT_LOAD:
            continue
        if p_offset + p_filesz > size:
            raise MalformedImage(KIND, f"PT_LOAD #{i} ({p_offset:#x}+{p_filesz:#x}) lies "
                                 f"beyond the end of the {size}-byte file")
        if p_memsz < p_filesz:
            raise MalformedImage(KIND, f"PT_LOAD #{i} has p_memsz < p_filesz")
        loads.append((i, p_flags, p_offset, p_filesz, p_memsz, p_vaddr))
    if not loads:
        raise MalformedImage(KIND, "no PT_LOAD segment: nothing to load")

    code, data = MultiHash(banks), MultiHash(banks)
    segments = []
    for i, flags, offset, filesz, memsz, vaddr in loads:
        own = MultiHash(banks)
        hash_range(stream, offset, filesz, own, code if flags & PF_X else data)
        segments.append(Segment(i, flags, offset, filesz, memsz, vaddr, own.digests()))
    return ElfImage(elf_class=64 if is64 else 32, machine=machine, entry=entry,
                    segments=tuple(segments), code=code.digests(), data=data.digests())
