"""PE/COFF Authenticode: our digest equals pesign's and osslsigncode's on real binaries."""

from __future__ import annotations

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
from measure.images.pe import parse_pe
from tests.conftest import TOOLS, require_tool

TOOLS.setdefault("pesign", "pesign")
TOOLS.setdefault("sbsign", "sbsigntool")
TOOLS.setdefault("osslsigncode", "osslsigncode")
TOOLS.setdefault("openssl", "openssl")

EFI_DIR = Path("/usr/lib/systemd/boot/efi")
REAL_PE = ("systemd-bootx64.efi", "linuxx64.efi.stub")


def real_pe(name: str) -> Path:
    path = EFI_DIR / name
    if not path.exists():
        pytest.fail(f"{path} is missing: apt-get install systemd-boot-efi")
    return path


def pesign_hash(path: Path, bank: str) -> str:
    out = subprocess.run([require_tool("pesign"), "-h", "-d", bank, "-i", str(path)],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"hash:\s*([0-9a-f]+)", out)
    assert match, out
    return match.group(1)


@pytest.mark.parametrize("name", REAL_PE)
@pytest.mark.parametrize("bank", ["sha1", "sha256"])
def test_unsigned_debian_efi_binary_matches_pesign(name: str, bank: str) -> None:
    path = real_pe(name)
    assert parse_pe(path).authenticode[bank].hex() == pesign_hash(path, bank)


@pytest.fixture(scope="module")
def signed_efi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """systemd-boot signed by sbsign: a certificate table at the end, which must be skipped."""
    root = tmp_path_factory.mktemp("sign")
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(root / "k.pem"), "-out", str(root / "c.pem"),
                    "-subj", "/CN=vtpm-stack test", "-days", "1"],
                   check=True, capture_output=True)
    signed = root / "signed.efi"
    subprocess.run([require_tool("sbsign"), "--key", str(root / "k.pem"), "--cert",
                    str(root / "c.pem"), "--output", str(signed),
                    str(real_pe("systemd-bootx64.efi"))], check=True, capture_output=True)
    return signed


def test_signed_binary_skips_certificate_table_like_pesign(signed_efi: Path) -> None:
    image = parse_pe(signed_efi)
    assert image.certificate_table[1] > 0
    assert image.authenticode["sha256"].hex() == pesign_hash(signed_efi, "sha256")


def test_signed_binary_digest_is_the_one_in_its_signature(signed_efi: Path) -> None:
    """osslsigncode reads the digest sbsign signed and recomputes its own: both are ours."""
    out = subprocess.run([require_tool("osslsigncode"), "verify", "-in", str(signed_efi)],
                         capture_output=True, text=True, check=False).stdout
    current = re.search(r"Current message digest\s*:\s*([0-9A-F]+)", out)
    calculated = re.search(r"Calculated message digest\s*:\s*([0-9A-F]+)", out)
    assert current and calculated, out
    ours = parse_pe(signed_efi).authenticode["sha256"].hex().upper()
    assert ours == current.group(1) == calculated.group(1)


def test_certificate_bytes_are_not_hashed_section_bytes_are(signed_efi: Path) -> None:
    """The signature can be replaced without changing the digest; code cannot."""
    data = signed_efi.read_bytes()
    image = parse_pe(signed_efi)
    offset = image.certificate_table[0]
    changed = bytearray(data)
    changed[offset + 100] ^= 0xFF  # inside the certificate table: not hashed
    assert parse_pe(io.BytesIO(bytes(changed))).authenticode == image.authenticode
    changed = bytearray(data)
    changed[image.sections[0].pointer_to_raw_data] ^= 0xFF  # inside a section: hashed
    assert parse_pe(io.BytesIO(bytes(changed))).authenticode != image.authenticode


def test_efi_stub_is_recognised_as_a_kernel() -> None:
    kernel = measure_kernel(real_pe("linuxx64.efi.stub"))
    assert "pe" in kernel.formats and kernel.pe is not None


def _header_offsets(data: bytes) -> dict[str, int]:
    (lfanew,) = struct.unpack_from("<I", data, 0x3C)
    return {"lfanew": lfanew, "nsections": lfanew + 6, "opt": lfanew + 24}


@pytest.mark.parametrize("corrupt", ["mz", "pe", "magic", "nsections", "truncated", "section"])
def test_corrupted_headers_are_refused(corrupt: str) -> None:
    data = bytearray(real_pe("systemd-bootx64.efi").read_bytes())
    at = _header_offsets(bytes(data))
    if corrupt == "mz":
        data[0:2] = b"ZM"
    elif corrupt == "pe":
        data[at["lfanew"]] = 0
    elif corrupt == "magic":
        data[at["opt"]:at["opt"] + 2] = b"\x99\x99"
    elif corrupt == "nsections":
        data[at["nsections"]:at["nsections"] + 2] = struct.pack("<H", 0)
    elif corrupt == "truncated":
        data = data[:len(data) // 2]
    elif corrupt == "section":
        table = at["opt"] + struct.unpack_from("<H", data, at["lfanew"] + 20)[0]
        struct.pack_into("<I", data, table + 20, 0x7FFFFFF0)  # PointerToRawData
    with pytest.raises(MalformedImage) as info:
        parse_pe(io.BytesIO(bytes(data)))
    assert "PE/COFF" in str(info.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_headers_raise_only_our_error(data: st.DataObject) -> None:
    image = bytearray(real_pe("systemd-bootx64.efi").read_bytes()[:1024] + bytes(4096))
    for _ in range(data.draw(st.integers(1, 8))):
        where = data.draw(st.integers(0, 1023))
        image[where] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(image)))
    try:
        parse_pe(io.BytesIO(bytes(image[:cut])))
    except MeasureError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_as_kernel_raise_only_our_error(blob: bytes) -> None:
    try:
        measure_kernel(io.BytesIO(b"MZ" + blob))
    except MeasureError:
        pass
