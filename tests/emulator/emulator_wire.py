"""Tiny raw-byte TPM command builders for the emulator tests (client side, independent
of the emulator's own codec so the tests do not check the code against itself)."""

from __future__ import annotations

import struct
from typing import Any

NO_SESSIONS = 0x8001
SESSIONS = 0x8002
RS_PW = 0x40000009
RH_NULL = 0x40000007
RH_OWNER = 0x40000001
SHA1, SHA256, SHA384, SHA512 = 0x0004, 0x000B, 0x000C, 0x000D
SIZES = {SHA1: 20, SHA256: 32, SHA384: 48, SHA512: 64}
NAMES = {SHA1: "sha1", SHA256: "sha256", SHA384: "sha384", SHA512: "sha512"}


def command(cc: int, body: bytes = b"", tag: int = NO_SESSIONS) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), cc) + body


def pw_auth(password: bytes = b"", attrs: int = 1) -> bytes:
    one = struct.pack(">IHBH", RS_PW, 0, attrs, len(password)) + password
    return struct.pack(">I", len(one)) + one


def with_pw(cc: int, handles: bytes, params: bytes, password: bytes = b"") -> bytes:
    return command(cc, handles + pw_auth(password) + params, SESSIONS)


def rc(response: bytes) -> int:
    return int.from_bytes(response[6:10], "big")


def startup(tpm: Any, su: int = 0, locality: int = 0) -> bytes:
    r = tpm.execute(command(0x144, struct.pack(">H", su)), locality)
    assert rc(r) == 0, hex(rc(r))
    return r


def shutdown(tpm: Any, su: int = 0) -> bytes:
    r = tpm.execute(command(0x145, struct.pack(">H", su)))
    assert rc(r) == 0, hex(rc(r))
    return r


def pcr_extend(pcr: int, digests: dict[int, bytes]) -> bytes:
    body = struct.pack(">I", len(digests))
    for alg, d in digests.items():
        body += struct.pack(">H", alg) + d
    return with_pw(0x182, struct.pack(">I", pcr), body)


def pcr_event(pcr: int, data: bytes) -> bytes:
    return with_pw(0x13C, struct.pack(">I", pcr), struct.pack(">H", len(data)) + data)


def pcr_reset(pcr: int) -> bytes:
    return with_pw(0x13D, struct.pack(">I", pcr), b"")


def pcr_read(alg: int, pcrs: list[int]) -> bytes:
    bits = bytearray(3)
    for p in pcrs:
        bits[p // 8] |= 1 << (p % 8)
    return command(0x17E, struct.pack(">IHB", 1, alg, 3) + bytes(bits))


def parse_pcr_read(response: bytes) -> tuple[int, list[bytes]]:
    """(pcrUpdateCounter, digests) from a PCR_Read response."""
    assert rc(response) == 0, hex(rc(response))
    counter, nsel = struct.unpack_from(">II", response, 10)
    o = 18
    for _ in range(nsel):
        o += 2
        o += 1 + response[o]
    (n,) = struct.unpack_from(">I", response, o)
    o += 4
    out = []
    for _ in range(n):
        (size,) = struct.unpack_from(">H", response, o)
        out.append(response[o + 2 : o + 2 + size])
        o += 2 + size
    return counter, out


def read_one(tpm: Any, alg: int, pcr: int) -> bytes:
    return parse_pcr_read(tpm.execute(pcr_read(alg, [pcr])))[1][0]


def get_capability(cap: int, prop: int, count: int) -> bytes:
    return command(0x17A, struct.pack(">III", cap, prop, count))
