"""Part 3 attestation and audit commands as declarations (clauses 18, 21 and 31.16),
merged into ``COMMANDS``. signHandle is a TPMI_DH_OBJECT+: TPM_RH_NULL asks for an
unsigned attestation. TPMA_CC attributes are checked against libtpms'
TPM_CAP_COMMANDS in the differential tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from ..codec import UINT16, Int, ListOf, Sized
from ..commands import (
    TPMI_DH_OBJECT_NULL,
    Auth,
    Command,
    Empty,
    HandleSpec,
    _persistent,
    _transient,
)
from ..constants import CC, HT, MAX_ACTIVE_SESSIONS, RC, RH, TPM_ALG
from ..crypto import HASHES
from ..keys.signing import TPMT_SIG_SCHEME, TPMT_SIGNATURE
from ..nv.commands import TPMI_RH_NV_AUTH, TPMI_RH_NV_INDEX, TPMI_RH_PROVISION
from ..structures import TPM2B_DIGEST, TPM2B_MAX_BUFFER, TPML_PCR_SELECTION
from .structures import TPM2B_ATTEST, TPMT_TK_CREATION_IN


# ---- handle interface types (Part 2, clause 9) ---------------------------------------
def TPMI_DH_OBJECT(h: int) -> bool:
    return _transient(h) or _persistent(h)


def TPMI_RH_ENDORSEMENT(h: int) -> bool:
    return h == RH.ENDORSEMENT


def TPMI_SH_HMAC(h: int) -> bool:
    return h >> 24 == HT.HMAC_SESSION and h & 0xFFFFFF < MAX_ACTIVE_SESSIONS


# TPML_CC as a parameter (Part 2, 10.9.4): at most MAX_CAP_CC codes, as libtpms sizes it.
MAX_CAP_CC = 254
TPML_CC_IN = Annotated[tuple[int, ...], ListOf(Annotated[int, Int("I")], MAX_CAP_CC)]
# TPM2B_DATA holds a TPMT_HA (Part 2, 10.4.3); libtpms sizes it for SHA-512 (66 octets)
# even where SHA-512 is not implemented, so a nonce of up to 66 octets is accepted.
TPM2B_DATA = Annotated[bytes, Sized(2 + 64)]
TPMI_ALG_HASH_NULL = Annotated[int, Int("H", (*HASHES, TPM_ALG.NULL), RC.HASH)]


# ---- parameters and responses ----------------------------------------------------------
@dataclass(frozen=True)
class Attest_In:
    """Certify, GetTime, GetSessionAuditDigest, GetCommandAuditDigest."""

    qualifyingData: TPM2B_DATA
    inScheme: TPMT_SIG_SCHEME


@dataclass(frozen=True)
class Attest_Out:
    attest: TPM2B_ATTEST
    signature: TPMT_SIGNATURE


@dataclass(frozen=True)
class Quote_In:
    qualifyingData: TPM2B_DATA
    inScheme: TPMT_SIG_SCHEME
    PCRselect: TPML_PCR_SELECTION


@dataclass(frozen=True)
class CertifyCreation_In:
    qualifyingData: TPM2B_DATA
    creationHash: TPM2B_DIGEST
    inScheme: TPMT_SIG_SCHEME
    creationTicket: TPMT_TK_CREATION_IN


@dataclass(frozen=True)
class NV_Certify_In:
    qualifyingData: TPM2B_DATA
    inScheme: TPMT_SIG_SCHEME
    size: UINT16
    offset: UINT16


@dataclass(frozen=True)
class SetCommandCodeAuditStatus_In:
    auditAlg: TPMI_ALG_HASH_NULL
    setList: TPML_CC_IN
    clearList: TPML_CC_IN


@dataclass(frozen=True)
class CertifyX509_In:
    """Part 3, 18.8.2. ``reserved`` (qualifyingData before 1.59) must be empty."""

    reserved: TPM2B_DATA
    inScheme: TPMT_SIG_SCHEME
    partialCertificate: TPM2B_MAX_BUFFER


@dataclass(frozen=True)
class CertifyX509_Out:
    """Part 3, 18.8.2: the DER the TPM added, the digest it signed, the signature."""

    addedToCertificate: TPM2B_MAX_BUFFER
    tbsDigest: TPM2B_DIGEST
    signature: TPMT_SIGNATURE


_SIGN = HandleSpec("signHandle", TPMI_DH_OBJECT_NULL, Auth.USER)
_PRIVACY = HandleSpec("privacyAdminHandle", TPMI_RH_ENDORSEMENT, Auth.USER)

ATTEST_COMMANDS: tuple[Command, ...] = (
    Command(CC.Certify, (HandleSpec("objectHandle", TPMI_DH_OBJECT, Auth.ADMIN), _SIGN),
            Attest_In, Attest_Out, decrypt=True, encrypt=True),
    Command(CC.CertifyCreation, (_SIGN, HandleSpec("objectHandle", TPMI_DH_OBJECT)),
            CertifyCreation_In, Attest_Out, decrypt=True, encrypt=True),
    Command(CC.Quote, (_SIGN,), Quote_In, Attest_Out, decrypt=True, encrypt=True),
    Command(CC.GetSessionAuditDigest,
            (_PRIVACY, _SIGN, HandleSpec("sessionHandle", TPMI_SH_HMAC)),
            Attest_In, Attest_Out, decrypt=True, encrypt=True),
    Command(CC.GetCommandAuditDigest, (_PRIVACY, _SIGN), Attest_In, Attest_Out, nv=True,
            decrypt=True, encrypt=True),
    Command(CC.GetTime, (_PRIVACY, _SIGN), Attest_In, Attest_Out, decrypt=True,
            encrypt=True),
    Command(CC.NV_Certify,
            (_SIGN, HandleSpec("authHandle", TPMI_RH_NV_AUTH, Auth.USER),
             HandleSpec("nvIndex", TPMI_RH_NV_INDEX)),
            NV_Certify_In, Attest_Out, decrypt=True, encrypt=True),
    # CertifyX509 signs with a key: its signHandle cannot be TPM_RH_NULL.
    Command(CC.CertifyX509, (HandleSpec("objectHandle", TPMI_DH_OBJECT, Auth.ADMIN),
                             HandleSpec("signHandle", TPMI_DH_OBJECT, Auth.USER)),
            CertifyX509_In, CertifyX509_Out, decrypt=True, encrypt=True),
    Command(CC.SetCommandCodeAuditStatus,
            (HandleSpec("auth", TPMI_RH_PROVISION, Auth.USER),),
            SetCommandCodeAuditStatus_In, Empty, nv=True),
)
