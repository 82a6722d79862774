"""Which TPM commands can change TPM state, seen from outside the TPM.

Persisting after every command would cost an fsync per GetRandom; persisting too
rarely loses acknowledged changes. A command is treated as read-only only when it
carries no authorization sessions (a session's nonces and the dictionary-attack
counter are state too) and its code is in the set below.
"""

from __future__ import annotations

import struct

TPM_ST_NO_SESSIONS = 0x8001

# Part 3 command codes that never alter TPM state when sent without sessions.
READ_ONLY_CODES = frozenset({
    0x169,  # TPM2_NV_ReadPublic
    0x173,  # TPM2_ReadPublic
    0x177,  # TPM2_VerifySignature
    0x17A,  # TPM2_GetCapability
    0x17B,  # TPM2_GetRandom
    0x17C,  # TPM2_GetTestResult
    0x17D,  # TPM2_Hash
    0x17E,  # TPM2_PCR_Read
    0x181,  # TPM2_ReadClock
    0x18A,  # TPM2_TestParms
})

_HEADER = struct.Struct(">HII")


def command_code(command: bytes) -> int | None:
    """The command code of a framed command, or None when there is no header."""
    if len(command) < _HEADER.size:
        return None
    return _HEADER.unpack_from(command)[2]


def may_change_state(command: bytes) -> bool:
    """True unless the command is known to leave every piece of state as it was."""
    if len(command) < _HEADER.size:
        return False
    tag, _, code = _HEADER.unpack_from(command)
    return not (tag == TPM_ST_NO_SESSIONS and code in READ_ONLY_CODES)
