"""Raw TPM 2.0 command bytes for tests (built by hand, independent of our emulator)."""

from __future__ import annotations

import struct

ST_NO_SESSIONS = 0x8001
ST_SESSIONS = 0x8002
TPM_RS_PW = 0x40000009
ALG_SHA256 = 0x000B


def command(cc: int, body: bytes = b"", tag: int = ST_NO_SESSIONS) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), cc) + body


def rc_of(response: bytes) -> int:
    assert len(response) >= 10, f"not a TPM response: {response.hex()}"
    tag, size, rc = struct.unpack_from(">HII", response)
    assert tag in (ST_NO_SESSIONS, ST_SESSIONS), f"bad response tag {tag:#x}"
    assert size == len(response), f"response size field {size} != {len(response)} bytes"
    return int(rc)


def startup_clear() -> bytes:
    return command(0x144, struct.pack(">H", 0))


def get_random(n: int) -> bytes:
    return command(0x17B, struct.pack(">H", n))


def pcr_extend_sha256(pcr: int, digest: bytes) -> bytes:
    """TPM2_PCR_Extend with an empty password session."""
    auth = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)
    digests = struct.pack(">IH", 1, ALG_SHA256) + digest
    body = struct.pack(">II", pcr, len(auth)) + auth + digests
    return command(0x182, body, tag=ST_SESSIONS)


def pcr_read_sha256(pcr: int) -> bytes:
    select = bytearray(3)
    select[pcr // 8] |= 1 << (pcr % 8)
    return command(0x17E, struct.pack(">IHB", 1, ALG_SHA256, 3) + bytes(select))


def pcr_value_from_read(response: bytes) -> bytes:
    """The one sha256 digest in a TPM2_PCR_Read response."""
    assert rc_of(response) == 0
    # header(10) updateCounter(4) TPML_PCR_SELECTION(4+2+1+3) TPML_DIGEST count(4) size(2)
    offset = 10 + 4 + 10 + 4
    (size,) = struct.unpack_from(">H", response, offset)
    return response[offset + 2: offset + 2 + size]
