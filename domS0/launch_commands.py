"""The few TPM commands the finalizer sends, as bytes (Part 3 layouts).

The finalizer plays the boot loader: Startup, which banks are allocated, and
PCR_Extend with a password session. These go through ``Instance.execute`` as raw
bytes, so they work on every engine (no ESAPI start-up probing that an engine might
not answer) and every byte on the wire is visible here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from measure.eventlog import BANKS
from vtpm_manager.errors import FailedPrecondition

Execute = Callable[[bytes], bytes]

TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
TPM_CC_STARTUP = 0x0144           # Part 3, 9.3
TPM_CC_PCR_EXTEND = 0x0182        # Part 3, 22.2
TPM_CC_GET_CAPABILITY = 0x017A    # Part 3, 30.2
TPM_SU_CLEAR = 0x0000
TPM_CAP_PCRS = 0x00000005
TPM_RS_PW = 0x40000009
TPM_RC_SUCCESS = 0x000
TPM_RC_INITIALIZE = 0x100
_ALG_NAMES = {alg: name for name, (alg, _) in BANKS.items()}


def _command(tag: int, code: int, body: bytes) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def _rc(response: bytes, what: str) -> int:
    if len(response) < 10:
        raise FailedPrecondition(f"{what}: the vTPM sent a {len(response)}-byte response")
    return int(struct.unpack_from(">I", response, 6)[0])


def _require_success(response: bytes, what: str) -> None:
    rc = _rc(response, what)
    if rc != TPM_RC_SUCCESS:
        raise FailedPrecondition(f"{what} failed with TPM rc 0x{rc:03x}")


def startup_clear(execute: Execute) -> None:
    """TPM2_Startup(CLEAR); an already started TPM (TPM_RC_INITIALIZE) is fine."""
    response = execute(_command(TPM_ST_NO_SESSIONS, TPM_CC_STARTUP,
                                struct.pack(">H", TPM_SU_CLEAR)))
    if _rc(response, "TPM2_Startup") not in (TPM_RC_SUCCESS, TPM_RC_INITIALIZE):
        _require_success(response, "TPM2_Startup(CLEAR)")


def allocated_banks(execute: Execute) -> tuple[str, ...]:
    """The PCR banks with at least one PCR allocated (TPM2_GetCapability(TPM_CAP_PCRS)),
    by the names ``measure`` uses; banks we do not know are left out."""
    response = execute(_command(TPM_ST_NO_SESSIONS, TPM_CC_GET_CAPABILITY,
                                struct.pack(">III", TPM_CAP_PCRS, 0, 1)))
    _require_success(response, "TPM2_GetCapability(TPM_CAP_PCRS)")
    offset = 10 + 1 + 4   # header, moreData, capability
    (count,) = struct.unpack_from(">I", response, offset)
    offset += 4
    banks: list[str] = []
    for _ in range(count):
        alg, size = struct.unpack_from(">HB", response, offset)
        bitmap = response[offset + 3:offset + 3 + size]
        offset += 3 + size
        if alg in _ALG_NAMES and any(bitmap):
            banks.append(_ALG_NAMES[alg])
    return tuple(banks)


def pcr_extend(execute: Execute, pcr: int, digests: Mapping[str, bytes]) -> None:
    """TPM2_PCR_Extend (Part 3, 22.2) of ``pcr`` with one digest per bank, authorized by
    the PCR's empty password (TPM_RS_PW session, Part 1, 19.6.8)."""
    values = struct.pack(">I", len(digests)) + b"".join(
        struct.pack(">H", BANKS[bank][0]) + digest for bank, digest in digests.items())
    password_session = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)
    body = (struct.pack(">I", pcr) + struct.pack(">I", len(password_session))
            + password_session + values)
    _require_success(execute(_command(TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND, body)),
                     f"TPM2_PCR_Extend of PCR {pcr}")
