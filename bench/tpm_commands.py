"""The raw TPM 2.0 commands the benchmarks send, built by hand (Part 3).

Built here rather than through a TSS so the in-process and gRPC rows measure the path
and not a marshalling library; the ESAPI rows use tpm2-pytss on purpose instead.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

TPM_ST_NO_SESSIONS: Final = 0x8001
TPM_ST_SESSIONS: Final = 0x8002
TPM_CC_STARTUP: Final = 0x144
TPM_CC_GET_RANDOM: Final = 0x17B
TPM_CC_PCR_EXTEND: Final = 0x182
TPM_RS_PW: Final = 0x40000009
TPM_ALG_SHA256: Final = 0x000B
TPM_SU_CLEAR: Final = 0x0000
TPM_RC_SUCCESS: Final = 0x000
TPM_RC_INITIALIZE: Final = 0x100  # Startup already ran
BENCH_PCR: Final = 16
#: What every PCR_Extend in the benchmarks extends with.
EXTEND_DIGEST: Final = hashlib.sha256(b"vtpm-stack bench").digest()

_HEADER = struct.Struct(">HII")


class TpmCommandFailed(Exception):
    """A benchmark command got a non-success response code: the figures would lie."""


def _command(tag: int, code: int, body: bytes) -> bytes:
    return _HEADER.pack(tag, _HEADER.size + len(body), code) + body


def startup_clear() -> bytes:
    """TPM2_Startup(TPM_SU_CLEAR) (Part 3, 9.3)."""
    return _command(TPM_ST_NO_SESSIONS, TPM_CC_STARTUP, struct.pack(">H", TPM_SU_CLEAR))


def get_random(count: int = 32) -> bytes:
    """TPM2_GetRandom(bytesRequested) (Part 3, 16.1), no sessions."""
    return _command(TPM_ST_NO_SESSIONS, TPM_CC_GET_RANDOM, struct.pack(">H", count))


def pcr_extend(pcr: int = BENCH_PCR, digest: bytes = EXTEND_DIGEST) -> bytes:
    """TPM2_PCR_Extend(pcr, {SHA-256: digest}) with an empty password session
    (Part 3, 22.2; the password session is Part 1, 19.8.4)."""
    session = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)  # handle, nonce, attributes, hmac
    body = struct.pack(">I", pcr) + struct.pack(">I", len(session)) + session
    body += struct.pack(">IH", 1, TPM_ALG_SHA256) + digest
    return _command(TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND, body)


def response_code(response: bytes) -> int:
    """The response code of ``response`` (TPM_RC_SIZE-like -1 if it has no header)."""
    if len(response) < _HEADER.size:
        return -1
    return int(_HEADER.unpack_from(response)[2])


def check_success(response: bytes, what: str) -> bytes:
    """Return ``response``, or raise :class:`TpmCommandFailed` naming its code."""
    rc = response_code(response)
    if rc != TPM_RC_SUCCESS:
        raise TpmCommandFailed(f"{what} answered TPM rc 0x{rc:x}")
    return response


#: The two commands every benchmark measures, by the name they are reported under.
COMMANDS: Final = {
    "GetRandom(32)": get_random(32),
    "PCR_Extend(16,sha256,pw)": pcr_extend(),
}
