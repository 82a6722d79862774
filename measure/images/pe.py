"""PE/COFF images (EFI applications, EFI-stub kernels): the Authenticode digest.

This is the digest UEFI firmware extends into PCR 4 (``EV_EFI_BOOT_SERVICES_APPLICATION``)
when it loads an image, and the one Secure Boot checks against ``db``. The rules are
"Calculating the PE Image Hash" in the Microsoft *Windows Authenticode Portable
Executable Signature Format* and the PE/COFF specification, as EDK2 implements them
(``SecurityPkg/Tcg/Tcg2Dxe/MeasureBootPeCoff.c``, ``HashPeImage``):

1. hash the headers from offset 0 up to ``OptionalHeader.CheckSum``, skip the 4-byte
   CheckSum, hash on up to the Certificate Table data-directory entry (index 4), skip
   its 8 bytes, hash the rest up to ``SizeOfHeaders``;
2. hash every section with ``SizeOfRawData > 0`` in ascending ``PointerToRawData``
   order, over ``SizeOfRawData`` bytes;
3. if the file is longer than what was hashed, hash the remainder minus the
   certificate table's size (the attribute certificates sit at the end of the file).

When ``NumberOfRvaAndSizes`` does not reach index 4 there is no certificate entry to
skip and nothing is subtracted in step 3 — again as EDK2 does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import MalformedImage
from ..hashing import DEFAULT_BANKS, MultiHash, hash_range
from .source import ImageSource, opened, read_at

KIND = "PE/COFF image"
PE32_MAGIC = 0x10B
PE32PLUS_MAGIC = 0x20B
CERTIFICATE_TABLE = 4  # data-directory index (PE/COFF spec, "Optional Header Data Directories")
_SECTION_HEADER = 40
_MAX_SECTIONS = 96  # the PE/COFF loader limit Windows and EDK2 apply; refuses absurd tables


@dataclass(frozen=True)
class Section:
    """One section header as the Authenticode hash sees it."""

    name: str
    virtual_size: int
    pointer_to_raw_data: int
    size_of_raw_data: int


@dataclass(frozen=True)
class PeImage:
    """Header facts and the Authenticode digest per bank."""

    machine: int
    pe32_plus: bool
    size_of_headers: int
    sections: tuple[Section, ...]
    certificate_table: tuple[int, int]  # (file offset, size); (0, 0) when unsigned
    authenticode: dict[str, bytes]
    file_size: int


def is_pe(head: bytes) -> bool:
    """Cheap sniff: an MZ header whose e_lfanew points at ``PE\\0\\0`` in ``head``."""
    if len(head) < 0x40 or head[:2] != b"MZ":
        return False
    (lfanew,) = struct.unpack_from("<I", head, 0x3C)
    return lfanew + 4 <= len(head) and head[lfanew:lfanew + 4] == b"PE\0\0"


def parse_pe(source: ImageSource, banks: tuple[str, ...] = DEFAULT_BANKS) -> PeImage:
    """Validate the headers and compute the Authenticode digest in one read of the body."""
    with opened(source) as (stream, size):
        return _parse(stream, size, banks)


def _parse(stream: BinaryIO, size: int, banks: tuple[str, ...]) -> PeImage:
    dos = read_at(stream, 0, 0x40, size, KIND, "DOS header")
    if dos[:2] != b"MZ":
        raise MalformedImage(KIND, "no 'MZ' DOS header")
    (lfanew,) = struct.unpack_from("<I", dos, 0x3C)
    coff = read_at(stream, lfanew, 24, size, KIND, "PE signature and COFF header")
    if coff[:4] != b"PE\0\0":
        raise MalformedImage(KIND, f"no 'PE\\0\\0' signature at e_lfanew {lfanew:#x}")
    machine, n_sections, _, _, _, opt_size, _ = struct.unpack_from("<HHIIIHH", coff, 4)
    if n_sections == 0 or n_sections > _MAX_SECTIONS:
        raise MalformedImage(KIND, f"NumberOfSections {n_sections} is outside 1..{_MAX_SECTIONS}")
    opt_off = lfanew + 24
    opt = read_at(stream, opt_off, opt_size, size, KIND, "optional header")
    if len(opt) < 2:
        raise MalformedImage(KIND, "optional header is missing")
    (magic,) = struct.unpack_from("<H", opt, 0)
    if magic not in (PE32_MAGIC, PE32PLUS_MAGIC):
        raise MalformedImage(KIND, f"optional header magic {magic:#x} is neither PE32 nor PE32+")
    plus = magic == PE32PLUS_MAGIC
    dirs_at = 112 if plus else 96  # NumberOfRvaAndSizes sits 4 bytes before the directories
    if opt_size < dirs_at:
        raise MalformedImage(KIND, f"SizeOfOptionalHeader {opt_size} is too small for "
                             f"{'PE32+' if plus else 'PE32'}")
    (size_of_headers,) = struct.unpack_from("<I", opt, 60)
    (n_dirs,) = struct.unpack_from("<I", opt, dirs_at - 4)
    if dirs_at + 8 * n_dirs > opt_size:
        raise MalformedImage(KIND, f"NumberOfRvaAndSizes {n_dirs} overruns the optional header")
    table_off = opt_off + opt_size
    table_end = table_off + n_sections * _SECTION_HEADER
    if not table_end <= size_of_headers <= size:
        raise MalformedImage(KIND, f"SizeOfHeaders {size_of_headers:#x} must cover the section "
                             f"table (ends {table_end:#x}) and fit the {size}-byte file")
    sections = _sections(read_at(stream, table_off, table_end - table_off, size, KIND,
                                 "section table"), n_sections, size)
    checksum_off = opt_off + 64
    cert: tuple[int, int] = (0, 0)
    if n_dirs > CERTIFICATE_TABLE:
        cert_dir_off = opt_off + dirs_at + 8 * CERTIFICATE_TABLE
        cert = struct.unpack_from("<II", opt, cert_dir_off - opt_off)
        if cert[1] and (cert[0] < size_of_headers or cert[0] + cert[1] > size):
            raise MalformedImage(KIND, f"certificate table {cert[0]:#x}+{cert[1]:#x} lies "
                                 f"outside the {size}-byte file")
        header_ranges = [(0, checksum_off), (checksum_off + 4, cert_dir_off),
                         (cert_dir_off + 8, size_of_headers)]
    else:
        header_ranges = [(0, checksum_off), (checksum_off + 4, size_of_headers)]

    mh = MultiHash(banks)
    for start, end in header_ranges:
        hash_range(stream, start, end - start, mh)
    hashed = size_of_headers
    for section in sorted(sections, key=lambda s: s.pointer_to_raw_data):
        if section.size_of_raw_data == 0:
            continue
        hash_range(stream, section.pointer_to_raw_data, section.size_of_raw_data, mh)
        hashed += section.size_of_raw_data
    if size > hashed:
        trailing = size - hashed - (cert[1] if n_dirs > CERTIFICATE_TABLE else 0)
        if trailing > 0:
            hash_range(stream, hashed, trailing, mh)
    return PeImage(machine=machine, pe32_plus=plus, size_of_headers=size_of_headers,
                   sections=tuple(sections), certificate_table=(cert[0], cert[1]),
                   authenticode=mh.digests(), file_size=size)


def _sections(table: bytes, count: int, size: int) -> list[Section]:
    sections = []
    for i in range(count):
        raw_name, vsize, _, raw_size, raw_ptr = struct.unpack_from("<8sIIII", table,
                                                                   i * _SECTION_HEADER)
        name = raw_name.rstrip(b"\0").decode("ascii", "replace")
        if raw_size and raw_ptr + raw_size > size:
            raise MalformedImage(KIND, f"section {name!r} ({raw_ptr:#x}+{raw_size:#x}) lies "
                                 f"beyond the end of the {size}-byte file")
        sections.append(Section(name, vsize, raw_ptr, raw_size))
    return sections
