"""What a policy session remembers besides its policyDigest (the reference's SESSION
fields set by TPM2_Policy* commands and checked at authorization, Part 1, 19.7).

Kept in loaded-session snapshots and saved session contexts as an opaque, versioned
octet string (``encode``/``decode``), so the session table does not need to know its
fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Annotated

from ..codec import UINT8, UINT32, UINT64, Int, Sized, marshal, unmarshal
from ..constants import RC
from ..crypto import MAX_DIGEST_SIZE
from ..errors import TpmError

MAX_ENCODED = 1024
VERSION = 2  # version 1 was the empty stub, encoded as the single octet 0x01


class U1(IntEnum):
    """What the session's one cpHash-sized slot holds (the reference's ``u1`` union:
    cpHash, nameHash or templateHash share storage, so only one may be set)."""

    NONE = 0
    CP_HASH = 1  # TPM2_PolicyCpHash, or cpHashA of PolicySigned/PolicySecret/PolicyTicket
    NAME_HASH = 2  # TPM2_PolicyNameHash and TPM2_PolicyDuplicationSelect
    TEMPLATE = 3  # TPM2_PolicyTemplate


class _Flags(IntFlag):
    AUTH_VALUE_NEEDED = 1 << 0
    PASSWORD_NEEDED = 1 << 1
    PP_REQUIRED = 1 << 2
    PCR_COUNTER_SET = 1 << 3
    CHECK_NV_WRITTEN = 1 << 4
    NV_WRITTEN_STATE = 1 << 5


@dataclass
class PolicyContext:
    """Per-session policy state; starts empty and is reset by PolicyRestart and by
    every use of the session for an authorization (Part 1, 19.7.x)."""

    command_code: int = 0  # TPM2_PolicyCommandCode / PolicyDuplicationSelect; 0 = any
    u1: bytes = b""  # cpHash, nameHash or templateHash, as ``u1_kind`` says
    u1_kind: U1 = U1.NONE
    locality: int = 0  # TPMA_LOCALITY from TPM2_PolicyLocality; 0 = any
    auth_value_needed: bool = False  # TPM2_PolicyAuthValue: HMAC keyed with authValue
    password_needed: bool = False  # TPM2_PolicyPassword: hmac field is the authValue
    pp_required: bool = False  # TPM2_PolicyPhysicalPresence
    pcr_counter: int | None = None  # pcrUpdateCounter seen by TPM2_PolicyPCR
    nv_written: bool | None = None  # TPM2_PolicyNvWritten's required WRITTEN state
    timeout_ms: int = 0  # earliest expiry (TPM Time) from PolicySigned/Secret/Ticket
    start_ms: int = 0  # TPM Time when the session (or its latest use) started

    def restarted(self, now_ms: int) -> PolicyContext:
        """A fresh context for the same session, timing from ``now_ms``."""
        return PolicyContext(start_ms=now_ms)

    def encode(self) -> bytes:
        flags = (
            (_Flags.AUTH_VALUE_NEEDED if self.auth_value_needed else 0)
            | (_Flags.PASSWORD_NEEDED if self.password_needed else 0)
            | (_Flags.PP_REQUIRED if self.pp_required else 0)
            | (_Flags.PCR_COUNTER_SET if self.pcr_counter is not None else 0)
            | (_Flags.CHECK_NV_WRITTEN if self.nv_written is not None else 0)
            | (_Flags.NV_WRITTEN_STATE if self.nv_written else 0)
        )
        return marshal(_Record(VERSION, int(flags), self.command_code, self.locality,
                               self.pcr_counter or 0, self.timeout_ms, self.start_ms,
                               int(self.u1_kind), self.u1))

    @classmethod
    def decode(cls, blob: bytes) -> PolicyContext:
        if blob in (b"", b"\x01"):  # written before policy state existed
            return cls()
        try:
            rec = unmarshal(_Record, blob)
        except TpmError:
            raise TpmError(RC.INTEGRITY, "policy session state is malformed") from None
        flags = _Flags(rec.flags)
        if bool(rec.u1) != (rec.u1Kind != U1.NONE):
            raise TpmError(RC.INTEGRITY, "policy session state is malformed")
        return cls(
            command_code=rec.commandCode, u1=rec.u1, u1_kind=U1(rec.u1Kind),
            locality=rec.commandLocality,
            auth_value_needed=_Flags.AUTH_VALUE_NEEDED in flags,
            password_needed=_Flags.PASSWORD_NEEDED in flags,
            pp_required=_Flags.PP_REQUIRED in flags,
            pcr_counter=rec.pcrCounter if _Flags.PCR_COUNTER_SET in flags else None,
            nv_written=(_Flags.NV_WRITTEN_STATE in flags
                        if _Flags.CHECK_NV_WRITTEN in flags else None),
            timeout_ms=rec.timeout, start_ms=rec.startTime,
        )


@dataclass(frozen=True)
class _Record:
    """The encoded form (version 2)."""

    version: Annotated[int, Int("B", (VERSION,), RC.INTEGRITY)]
    flags: Annotated[int, Int("B", range(1 << len(_Flags)), RC.INTEGRITY)]
    commandCode: UINT32
    commandLocality: UINT8
    pcrCounter: UINT32
    timeout: UINT64
    startTime: UINT64
    u1Kind: Annotated[int, Int("B", tuple(U1), RC.INTEGRITY)]
    u1: Annotated[bytes, Sized(MAX_DIGEST_SIZE)]
