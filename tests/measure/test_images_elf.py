"""ELF: per-segment digests of a gcc-built binary equal what readelf's offsets give."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from measure.errors import MalformedImage, MeasureError
from measure.images import measure_kernel
from measure.images.elf import PF_X, parse_elf
from tests.conftest import TOOLS, require_tool

TOOLS.setdefault("gcc", "gcc")
TOOLS.setdefault("readelf", "binutils")

PROGRAM = """
int counter = 42;                 /* .data: a writable PT_LOAD */
const char banner[] = "vtpm";      /* .rodata */
int main(void) { return counter + banner[0]; }
"""


@pytest.fixture(scope="module")
def small_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("elf")
    (root / "p.c").write_text(PROGRAM)
    out = root / "p"
    subprocess.run([require_tool("gcc"), "-O1", "-o", str(out), str(root / "p.c")],
                   check=True, capture_output=True)
    return out


def readelf_loads(path: Path) -> list[tuple[int, int, bool]]:
    """(offset, filesz, executable) of each LOAD line of ``readelf -lW``, in table order."""
    out = subprocess.run([require_tool("readelf"), "-lW", str(path)], capture_output=True,
                         text=True, check=True).stdout
    loads = []
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "LOAD":
            offset, filesz = int(fields[1], 16), int(fields[4], 16)
            flags = " ".join(fields[6:-1])
            loads.append((offset, filesz, "E" in flags))
    assert loads, out
    return loads


def test_segments_match_readelf(small_elf: Path) -> None:
    data = small_elf.read_bytes()
    expected = readelf_loads(small_elf)
    image = parse_elf(small_elf)
    assert [(s.offset, s.filesz, s.executable) for s in image.segments] == expected
    for segment in image.segments:
        raw = data[segment.offset:segment.offset + segment.filesz]
        for bank in ("sha1", "sha256", "sha384"):
            assert segment.digests[bank] == hashlib.new(bank, raw).digest()


def test_code_and_data_are_hashed_apart(small_elf: Path) -> None:
    data = small_elf.read_bytes()
    loads = readelf_loads(small_elf)
    code = b"".join(data[o:o + n] for o, n, x in loads if x)
    rest = b"".join(data[o:o + n] for o, n, x in loads if not x)
    image = parse_elf(small_elf)
    assert image.code["sha256"] == hashlib.sha256(code).digest()
    assert image.data["sha256"] == hashlib.sha256(rest).digest()
    assert any(s.flags & PF_X for s in image.segments)
    assert any(not s.flags & PF_X for s in image.segments)


def test_changing_data_leaves_the_code_digest_alone(small_elf: Path) -> None:
    data = bytearray(small_elf.read_bytes())
    before = parse_elf(io.BytesIO(bytes(data)))
    data_segment = next(s for s in before.segments if not s.executable and s.filesz)
    data[data_segment.offset + data_segment.filesz - 1] ^= 0xFF
    after = parse_elf(io.BytesIO(bytes(data)))
    assert after.code == before.code and after.data != before.data


def test_whole_file_digest_is_reported(small_elf: Path) -> None:
    kernel = measure_kernel(small_elf)
    assert kernel.formats == ("elf",)
    assert kernel.file.digests["sha384"] == hashlib.sha384(small_elf.read_bytes()).digest()
    assert kernel.file.size == small_elf.stat().st_size


def test_real_elf_stub_from_debian() -> None:
    path = Path("/usr/lib/systemd/boot/efi/linuxx64.elf.stub")
    if not path.exists():
        pytest.fail(f"{path} is missing: apt-get install systemd-boot-efi")
    assert [(s.offset, s.filesz, s.executable) for s in parse_elf(path).segments] \
        == readelf_loads(path)


@pytest.mark.parametrize("corrupt, message", [
    ("magic", "no ELF magic"), ("class", "EI_CLASS"), ("type", "e_type"),
    ("phentsize", "e_phentsize"), ("segment", "beyond the end"), ("truncated", "beyond"),
])
def test_corrupted_headers_are_refused(small_elf: Path, corrupt: str, message: str) -> None:
    data = bytearray(small_elf.read_bytes())
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    if corrupt == "magic":
        data[1] = ord("X")
    elif corrupt == "class":
        data[4] = 7
    elif corrupt == "type":
        struct.pack_into("<H", data, 16, 1)  # ET_REL
    elif corrupt == "phentsize":
        struct.pack_into("<H", data, 0x36, 12)
    elif corrupt == "segment":
        first_load = next(i for i in range(struct.unpack_from("<H", data, 0x38)[0])
                          if struct.unpack_from("<I", data, phoff + 56 * i)[0] == 1)
        struct.pack_into("<Q", data, phoff + 56 * first_load + 32, 1 << 40)  # p_filesz
    elif corrupt == "truncated":
        data = data[:40]
    with pytest.raises(MalformedImage, match=re.escape(message)):
        parse_elf(io.BytesIO(bytes(data)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(st.data())
def test_mutated_elf_raises_only_our_error(data: st.DataObject) -> None:
    path = Path("/usr/lib/systemd/boot/efi/linuxx64.elf.stub")
    image = bytearray(path.read_bytes()[:4096])
    for _ in range(data.draw(st.integers(1, 8))):
        where = data.draw(st.integers(0, 511))
        image[where] = data.draw(st.integers(0, 255))
    try:
        measure_kernel(io.BytesIO(bytes(image)))
    except MeasureError:
        pass
