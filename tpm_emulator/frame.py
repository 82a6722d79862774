"""Command framing checks, shared by the built-in engine and the manager's libtpms path.

Deliberately dependency-free (only ``struct``): the vTPM manager calls ``check_frame``
before handing bytes to swtpm, which would otherwise wait forever for a header that
never completes. The order of checks follows ``ExecuteCommand()`` of the TCG reference
implementation: tag, then size field, then the size rules (TPM 2.0 Part 3, 5.2 / 6.x).
"""

from __future__ import annotations

import struct

_TPM_ST_RSP_COMMAND = 0x00C4
_TPM_ST_NO_SESSIONS = 0x8001
_TPM_ST_SESSIONS = 0x8002
_TPM_RC_BAD_TAG = 0x01E
_TPM_RC_INSUFFICIENT = 0x09A
_TPM_RC_COMMAND_SIZE = 0x142
HEADER_SIZE = 10
MAX_COMMAND_SIZE = 4096


def error_response(rc: int) -> bytes:
    """A bare 10-byte error response. A TPM answers TPM_RC_BAD_TAG with the TPM 1.2
    tag TPM_ST_RSP_COMMAND so that a 1.2 driver can still parse it (Part 3, 5.2)."""
    tag = _TPM_ST_RSP_COMMAND if rc == _TPM_RC_BAD_TAG else _TPM_ST_NO_SESSIONS
    return struct.pack(">HII", tag, HEADER_SIZE, rc)


def frame_error(command: bytes) -> int | None:
    """The response code for a badly framed command, or None when the frame is sound."""
    n = len(command)
    if n < 2:
        return _TPM_RC_INSUFFICIENT
    tag = (command[0] << 8) | command[1]
    if tag not in (_TPM_ST_NO_SESSIONS, _TPM_ST_SESSIONS):
        return _TPM_RC_BAD_TAG
    if n < 6:
        return _TPM_RC_INSUFFICIENT
    (size,) = struct.unpack_from(">I", command, 2)
    if size != n or size > MAX_COMMAND_SIZE:
        return _TPM_RC_COMMAND_SIZE
    if n < HEADER_SIZE:
        return _TPM_RC_INSUFFICIENT
    return None


def check_frame(command: bytes) -> bytes | None:
    """Return the error RESPONSE a TPM gives for a badly framed command, else None."""
    rc = frame_error(command)
    return None if rc is None else error_response(rc)
