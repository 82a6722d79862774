"""Part 3 commands as declarations: handles (and which need authorization), parameter
and response shapes, and the TPMA_CC attributes a TPM reports for them.

This module holds shapes only; the behaviour is in ``handlers.py``. Attribute values
follow Part 3's command tables (and the reference's CommandAttributeData.h); tpm2-abrmd
reads ``cHandles``/``rHandle`` from TPM_CAP_COMMANDS to find handles in commands it
forwards, so they must be exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

from .codec import UINT16, UINT32, Int, Reader
from .constants import (
    CC,
    HT,
    IMPLEMENTATION_PCR,
    MAX_ACTIVE_SESSIONS,
    RC,
    RH,
    TPMA_CC_CHANDLES_SHIFT,
    TPMA_CC_EXTENSIVE,
    TPMA_CC_FLUSHED,
    TPMA_CC_NV,
    TPMA_CC_RHANDLE,
)
from .errors import TpmError
from .structures import (
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_EVENT,
    TPM2B_MAX_BUFFER,
    TPM2B_NONCE,
    TPM2B_SENSITIVE_DATA,
    TPM_CAP_,
    TPM_SE,
    TPM_SU,
    TPMI_ALG_HASH,
    TPMI_RH_HIERARCHY_NULL,
    TPMI_YES_NO,
    TPML_ALG,
    TPML_DIGEST,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_CAPABILITY_DATA,
    TPMS_CONTEXT,
    TPMS_TIME_INFO,
    TPMT_SYM_DEF,
    TPMT_TK_HASHCHECK,
)

# ---- handle interface types (Part 2, clause 9): value checks for the handle area ----
MAX_LOADED_OBJECTS = 3  # transient handle range the reference accepts


def _pcr(h: int) -> bool:
    return 0 <= h < IMPLEMENTATION_PCR


def _session(h: int) -> bool:
    return h >> 24 in (HT.HMAC_SESSION, HT.POLICY_SESSION) and h & 0xFFFFFF < MAX_ACTIVE_SESSIONS


def _transient(h: int) -> bool:
    return h >> 24 == HT.TRANSIENT and h & 0xFFFFFF < MAX_LOADED_OBJECTS


def _persistent(h: int) -> bool:
    return h >> 24 == HT.PERSISTENT


def TPMI_DH_PCR(h: int) -> bool:
    return _pcr(h)


def TPMI_DH_PCR_NULL(h: int) -> bool:
    return _pcr(h) or h == RH.NULL


def TPMI_DH_CONTEXT(h: int) -> bool:
    return _session(h) or _transient(h)


def TPMI_DH_OBJECT_NULL(h: int) -> bool:
    return _transient(h) or _persistent(h) or h == RH.NULL


def TPMI_DH_ENTITY_NULL(h: int) -> bool:
    return (
        h in (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.LOCKOUT, RH.NULL)
        or _transient(h) or _persistent(h) or h >> 24 == HT.NV_INDEX or _pcr(h)
    )


class _ContextHandle(Int):
    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        v = r.unpack(self.st)
        if not TPMI_DH_CONTEXT(v):
            raise TpmError(RC.VALUE, "not a context handle")
        return v


class Auth(Enum):
    """Authorization role of a handle (Part 3, "Auth Index" / "Auth Role")."""

    USER = "USER"
    ADMIN = "ADMIN"
    DUP = "DUP"


@dataclass(frozen=True)
class HandleSpec:
    name: str
    accepts: Callable[[int], bool]  # TPMI_ check; a refused value is TPM_RC_VALUE + Hn
    auth: Auth | None = None


@dataclass(frozen=True)
class Command:
    """One Part 3 command: its shape and its TPMA_CC attributes."""

    cc: CC
    handles: tuple[HandleSpec, ...]
    params: type
    response: type
    response_handle: bool = False  # the response's first field is a handle
    nv: bool = False
    extensive: bool = False
    flushed: bool = False
    sessions_allowed: bool = True  # False: TPM_ST_SESSIONS is TPM_RC_AUTH_CONTEXT
    decrypt: bool = False  # first parameter is a TPM2B that a session may encrypt
    encrypt: bool = False  # first response parameter is a TPM2B

    @property
    def auth_handles(self) -> int:
        return sum(1 for h in self.handles if h.auth is not None)

    @property
    def tpma_cc(self) -> int:
        """TPMA_CC (Part 2, 9.2): commandIndex, nv, extensive, flushed, cHandles, rHandle."""
        return (
            (self.cc & 0xFFFF)
            | (TPMA_CC_NV if self.nv else 0)
            | (TPMA_CC_EXTENSIVE if self.extensive else 0)
            | (TPMA_CC_FLUSHED if self.flushed else 0)
            | (len(self.handles) << TPMA_CC_CHANDLES_SHIFT)
            | (TPMA_CC_RHANDLE if self.response_handle else 0)
        )


# ---- parameter and response structures (Part 3, one pair per command) ----------------
@dataclass(frozen=True)
class Empty:
    pass


@dataclass(frozen=True)
class Startup_In:
    startupType: TPM_SU


@dataclass(frozen=True)
class Shutdown_In:
    shutdownType: TPM_SU


@dataclass(frozen=True)
class SelfTest_In:
    fullTest: TPMI_YES_NO


@dataclass(frozen=True)
class IncrementalSelfTest_In:
    toTest: TPML_ALG


@dataclass(frozen=True)
class IncrementalSelfTest_Out:
    toDoList: TPML_ALG


@dataclass(frozen=True)
class GetTestResult_Out:
    outData: TPM2B_MAX_BUFFER
    testResult: UINT32


@dataclass(frozen=True)
class GetRandom_In:
    bytesRequested: UINT16


@dataclass(frozen=True)
class GetRandom_Out:
    randomBytes: TPM2B_DIGEST


@dataclass(frozen=True)
class StirRandom_In:
    inData: TPM2B_SENSITIVE_DATA


@dataclass(frozen=True)
class GetCapability_In:
    capability: TPM_CAP_
    property: UINT32
    propertyCount: UINT32


@dataclass(frozen=True)
class GetCapability_Out:
    moreData: TPMI_YES_NO
    capabilityData: TPMS_CAPABILITY_DATA


@dataclass(frozen=True)
class PCR_Read_In:
    pcrSelectionIn: TPML_PCR_SELECTION


@dataclass(frozen=True)
class PCR_Read_Out:
    pcrUpdateCounter: UINT32
    pcrSelectionOut: TPML_PCR_SELECTION
    pcrValues: TPML_DIGEST


@dataclass(frozen=True)
class PCR_Extend_In:
    digests: TPML_DIGEST_VALUES


@dataclass(frozen=True)
class PCR_Event_In:
    eventData: TPM2B_EVENT


@dataclass(frozen=True)
class PCR_Event_Out:
    digests: TPML_DIGEST_VALUES


@dataclass(frozen=True)
class ReadClock_Out:
    currentTime: TPMS_TIME_INFO


@dataclass(frozen=True)
class Hash_In:
    data: TPM2B_MAX_BUFFER
    hashAlg: TPMI_ALG_HASH
    hierarchy: TPMI_RH_HIERARCHY_NULL


@dataclass(frozen=True)
class Hash_Out:
    outHash: TPM2B_DIGEST
    validation: TPMT_TK_HASHCHECK


@dataclass(frozen=True)
class StartAuthSession_In:
    nonceCaller: TPM2B_NONCE
    encryptedSalt: TPM2B_ENCRYPTED_SECRET
    sessionType: TPM_SE
    symmetric: TPMT_SYM_DEF
    authHash: TPMI_ALG_HASH


@dataclass(frozen=True)
class StartAuthSession_Out:
    sessionHandle: UINT32
    nonceTPM: TPM2B_NONCE


# FlushContext's handle is a *parameter*; its TPMI_DH_CONTEXT range is checked here.
TPMI_DH_CONTEXT_PARAM = Annotated[int, _ContextHandle("I")]


@dataclass(frozen=True)
class FlushContext_In:
    flushHandle: TPMI_DH_CONTEXT_PARAM


@dataclass(frozen=True)
class ContextSave_Out:
    context: TPMS_CONTEXT


@dataclass(frozen=True)
class ContextLoad_In:
    context: TPMS_CONTEXT


@dataclass(frozen=True)
class ContextLoad_Out:
    loadedHandle: UINT32


# ---- the command table ----------------------------------------------------------------
_PCR_AUTH = (HandleSpec("pcrHandle", TPMI_DH_PCR_NULL, Auth.USER),)

COMMANDS: dict[int, Command] = {
    c.cc: c
    for c in (
        Command(CC.Startup, (), Startup_In, Empty, nv=True, sessions_allowed=False),
        Command(CC.Shutdown, (), Shutdown_In, Empty, nv=True),
        Command(CC.SelfTest, (), SelfTest_In, Empty, nv=True),
        Command(CC.IncrementalSelfTest, (), IncrementalSelfTest_In, IncrementalSelfTest_Out,
                nv=True),
        Command(CC.GetTestResult, (), Empty, GetTestResult_Out, encrypt=True),
        Command(CC.GetRandom, (), GetRandom_In, GetRandom_Out, encrypt=True),
        Command(CC.StirRandom, (), StirRandom_In, Empty, nv=True, decrypt=True),
        Command(CC.GetCapability, (), GetCapability_In, GetCapability_Out),
        Command(CC.PCR_Read, (), PCR_Read_In, PCR_Read_Out),
        Command(CC.PCR_Extend, _PCR_AUTH, PCR_Extend_In, Empty, nv=True),
        Command(CC.PCR_Event, _PCR_AUTH, PCR_Event_In, PCR_Event_Out, nv=True, decrypt=True),
        Command(CC.PCR_Reset, (HandleSpec("pcrHandle", TPMI_DH_PCR, Auth.USER),), Empty,
                Empty, nv=True),
        # Part 3 (1.59+) allows an audit session on ReadClock; libtpms agrees.
        Command(CC.ReadClock, (), Empty, ReadClock_Out),
        Command(CC.Hash, (), Hash_In, Hash_Out, decrypt=True, encrypt=True),
        Command(CC.StartAuthSession,
                (HandleSpec("tpmKey", TPMI_DH_OBJECT_NULL),
                 HandleSpec("bind", TPMI_DH_ENTITY_NULL)),
                StartAuthSession_In, StartAuthSession_Out, response_handle=True,
                decrypt=True, encrypt=True),
        Command(CC.FlushContext, (), FlushContext_In, Empty, sessions_allowed=False),
        Command(CC.ContextSave, (HandleSpec("saveHandle", TPMI_DH_CONTEXT),), Empty,
                ContextSave_Out, sessions_allowed=False),
        Command(CC.ContextLoad, (), ContextLoad_In, ContextLoad_Out, response_handle=True,
                sessions_allowed=False),
    )
}

# Object commands (Part 3, clauses 12, 24, 28) are declared in their own package.
from .objects.commands import OBJECT_COMMANDS  # noqa: E402

COMMANDS.update({c.cc: c for c in OBJECT_COMMANDS})

# NV storage (Part 3, clause 31) is declared in nv/commands.py.
from .nv.commands import NV_COMMANDS  # noqa: E402

COMMANDS.update({c.cc: c for c in NV_COMMANDS})

# Enhanced authorization (Part 3, clause 23) is declared in policy/commands.py.
from .policy.commands import POLICY_COMMANDS  # noqa: E402

COMMANDS.update({c.cc: c for c in POLICY_COMMANDS})

# Attestation and command audit (Part 3, clauses 18, 21, 31.16) are in attest/commands.py.
from .attest.commands import ATTEST_COMMANDS  # noqa: E402

COMMANDS.update({c.cc: c for c in ATTEST_COMMANDS})

# Hierarchy, DA, Clock and PCR administration (Part 3, 22.5-22.7, 24, 25, 29.2-29.3).
from .admin.commands import ADMIN_COMMANDS  # noqa: E402

COMMANDS.update({c.cc: c for c in ADMIN_COMMANDS})

# Key and crypto commands (Part 3, clauses 12.5-12.6, 14, 15, 17, 20) are in keys/commands.py.
from .keys.commands import KEY_COMMANDS  # noqa: E402

COMMANDS.update({c.cc: c for c in KEY_COMMANDS})
