"""Part 3, clause 23 (Enhanced Authorization) commands as declarations: handles with
their authorization roles, parameter and response shapes, TPMA_CC attributes
(checked against libtpms' TPM_CAP_COMMANDS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from ..codec import UINT8, UINT16, UINT32, Int, Sized
from ..commands import Auth, Command, Empty, HandleSpec, _pcr, _persistent, _transient
from ..constants import CC, HT, MAX_ACTIVE_SESSIONS, RC, RH
from ..keys.signing import TPMT_SIGNATURE_IN
from ..objects.public import TPM2B_NAME
from ..structures import TPM2B_DIGEST, TPM2B_NONCE, TPMI_YES_NO, TPML_DIGEST, TPML_PCR_SELECTION
from .tickets import TPMT_TK_AUTH, TPMT_TK_VERIFIED


# ---- handle interface types (Part 2, clause 9) ------------------------------------------
def TPMI_SH_POLICY(h: int) -> bool:
    return h >> 24 == HT.POLICY_SESSION and h & 0xFFFFFF < MAX_ACTIVE_SESSIONS


def TPMI_DH_OBJECT(h: int) -> bool:
    return _transient(h) or _persistent(h)


def TPMI_DH_ENTITY(h: int) -> bool:
    """Part 2, 9.6: anything with an authorization, TPM_RH_NULL excluded."""
    return (h in (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.LOCKOUT)
            or _transient(h) or _persistent(h) or h >> 24 == HT.NV_INDEX or _pcr(h))


def TPMI_RH_NV_AUTH(h: int) -> bool:
    return h in (RH.OWNER, RH.PLATFORM) or h >> 24 == HT.NV_INDEX


def TPMI_RH_NV_INDEX(h: int) -> bool:
    return h >> 24 == HT.NV_INDEX


class TPM_EO:
    """Part 2, 6.8: arithmetic comparisons of TPM2_PolicyNV / PolicyCounterTimer."""

    EQ = 0x0000
    NEQ = 0x0001
    SIGNED_GT = 0x0002
    UNSIGNED_GT = 0x0003
    SIGNED_LT = 0x0004
    UNSIGNED_LT = 0x0005
    SIGNED_GE = 0x0006
    UNSIGNED_GE = 0x0007
    SIGNED_LE = 0x0008
    UNSIGNED_LE = 0x0009
    BITSET = 0x000A
    BITCLEAR = 0x000B


TPM_EO_ = Annotated[int, Int("H", range(TPM_EO.BITCLEAR + 1), RC.VALUE)]
# INT32 on the wire; kept as its UINT32 bit pattern (see ``int32``) so the codec's
# integers stay unsigned.
INT32 = UINT32


def int32(value: int) -> int:
    """The signed value of an INT32 parameter (Part 2, 5.2)."""
    return value - (1 << 32) if value & 0x80000000 else value
TPM2B_TIMEOUT = Annotated[bytes, Sized(8)]  # Part 2, 10.4.10: sizeof(UINT64)
TPM2B_OPERAND = TPM2B_DIGEST


# ---- parameters and responses (Part 3, clause 23) ----------------------------------------
@dataclass(frozen=True)
class PolicySigned_In:
    nonceTPM: TPM2B_NONCE
    cpHashA: TPM2B_DIGEST
    policyRef: TPM2B_NONCE
    expiration: INT32
    auth: TPMT_SIGNATURE_IN


@dataclass(frozen=True)
class PolicySecret_In:
    nonceTPM: TPM2B_NONCE
    cpHashA: TPM2B_DIGEST
    policyRef: TPM2B_NONCE
    expiration: INT32


@dataclass(frozen=True)
class PolicyAuth_Out:
    """TPM2_PolicySigned and TPM2_PolicySecret respond alike."""

    timeout: TPM2B_TIMEOUT
    policyTicket: TPMT_TK_AUTH


@dataclass(frozen=True)
class PolicyTicket_In:
    timeout: TPM2B_TIMEOUT
    cpHashA: TPM2B_DIGEST
    policyRef: TPM2B_NONCE
    authName: TPM2B_NAME
    ticket: TPMT_TK_AUTH


@dataclass(frozen=True)
class PolicyOR_In:
    pHashList: TPML_DIGEST


@dataclass(frozen=True)
class PolicyPCR_In:
    pcrDigest: TPM2B_DIGEST
    pcrs: TPML_PCR_SELECTION


@dataclass(frozen=True)
class PolicyLocality_In:
    locality: UINT8  # TPMA_LOCALITY


@dataclass(frozen=True)
class PolicyNV_In:
    operandB: TPM2B_OPERAND
    offset: UINT16
    operation: TPM_EO_


@dataclass(frozen=True)
class PolicyCommandCode_In:
    code: UINT32


@dataclass(frozen=True)
class PolicyCpHash_In:
    cpHashA: TPM2B_DIGEST


@dataclass(frozen=True)
class PolicyNameHash_In:
    nameHash: TPM2B_DIGEST


@dataclass(frozen=True)
class PolicyDuplicationSelect_In:
    objectName: TPM2B_NAME
    newParentName: TPM2B_NAME
    includeObject: TPMI_YES_NO


@dataclass(frozen=True)
class PolicyAuthorize_In:
    approvedPolicy: TPM2B_DIGEST
    policyRef: TPM2B_NONCE
    keySign: TPM2B_NAME
    checkTicket: TPMT_TK_VERIFIED


@dataclass(frozen=True)
class PolicyGetDigest_Out:
    policyDigest: TPM2B_DIGEST


@dataclass(frozen=True)
class PolicyNvWritten_In:
    writtenSet: TPMI_YES_NO


@dataclass(frozen=True)
class PolicyTemplate_In:
    templateHash: TPM2B_DIGEST


# ---- the table -------------------------------------------------------------------------
_SESSION = HandleSpec("policySession", TPMI_SH_POLICY)
_ONLY_SESSION = (_SESSION,)
_NV_AUTH = (HandleSpec("authHandle", TPMI_RH_NV_AUTH, Auth.USER),
            HandleSpec("nvIndex", TPMI_RH_NV_INDEX), _SESSION)

POLICY_COMMANDS: tuple[Command, ...] = (
    Command(CC.PolicySigned, (HandleSpec("authObject", TPMI_DH_OBJECT), _SESSION),
            PolicySigned_In, PolicyAuth_Out, decrypt=True, encrypt=True),
    Command(CC.PolicySecret, (HandleSpec("authHandle", TPMI_DH_ENTITY, Auth.USER), _SESSION),
            PolicySecret_In, PolicyAuth_Out, decrypt=True, encrypt=True),
    Command(CC.PolicyTicket, _ONLY_SESSION, PolicyTicket_In, Empty, decrypt=True),
    Command(CC.PolicyOR, _ONLY_SESSION, PolicyOR_In, Empty),
    Command(CC.PolicyPCR, _ONLY_SESSION, PolicyPCR_In, Empty, decrypt=True),
    Command(CC.PolicyLocality, _ONLY_SESSION, PolicyLocality_In, Empty),
    Command(CC.PolicyNV, _NV_AUTH, PolicyNV_In, Empty, decrypt=True),
    Command(CC.PolicyCounterTimer, _ONLY_SESSION, PolicyNV_In, Empty, decrypt=True),
    Command(CC.PolicyCommandCode, _ONLY_SESSION, PolicyCommandCode_In, Empty),
    Command(CC.PolicyPhysicalPresence, _ONLY_SESSION, Empty, Empty),
    Command(CC.PolicyCpHash, _ONLY_SESSION, PolicyCpHash_In, Empty, decrypt=True),
    Command(CC.PolicyNameHash, _ONLY_SESSION, PolicyNameHash_In, Empty, decrypt=True),
    Command(CC.PolicyDuplicationSelect, _ONLY_SESSION, PolicyDuplicationSelect_In, Empty,
            decrypt=True),
    Command(CC.PolicyAuthorize, _ONLY_SESSION, PolicyAuthorize_In, Empty, decrypt=True),
    Command(CC.PolicyAuthValue, _ONLY_SESSION, Empty, Empty),
    Command(CC.PolicyPassword, _ONLY_SESSION, Empty, Empty),
    Command(CC.PolicyGetDigest, _ONLY_SESSION, Empty, PolicyGetDigest_Out, encrypt=True),
    Command(CC.PolicyNvWritten, _ONLY_SESSION, PolicyNvWritten_In, Empty),
    Command(CC.PolicyTemplate, _ONLY_SESSION, PolicyTemplate_In, Empty, decrypt=True),
    Command(CC.PolicyAuthorizeNV, _NV_AUTH, Empty, Empty),
    Command(CC.PolicyRestart, (HandleSpec("sessionHandle", TPMI_SH_POLICY),), Empty, Empty),
)
