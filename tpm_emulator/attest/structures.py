"""Part 2, 10.12: the attestation structures the TPM signs.

Every TPMS_ATTEST starts with TPM_GENERATED_VALUE, so a restricted signing key — which
only signs digests the TPM computed (TPM2_Sign needs a hashcheck ticket for it) — can
never be made to sign outside data that looks like an attestation (Part 1, 18.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from ..codec import UINT16, UINT32, UINT64, Int, Sized
from ..constants import RC, ST
from ..nv.public import TPM2B_MAX_NV_BUFFER
from ..objects.public import TPM2B_DATA, TPM2B_NAME
from ..structures import (
    TPM2B_DIGEST,
    TPMI_RH_HIERARCHY_NULL,
    TPMI_YES_NO,
    TPML_PCR_SELECTION,
    TPMS_CLOCK_INFO,
    TPMS_TIME_INFO,
    Selected,
    TicketTag,
)

# TPM_ST_ATTEST_NV_DIGEST (Part 2, 6.9, added in 1.59): NV_Certify of a whole index.
ST_ATTEST_NV_DIGEST = 0x801C


@dataclass(frozen=True)
class TPMS_CERTIFY_INFO:
    """Part 2, 10.12.3."""

    name: TPM2B_NAME
    qualifiedName: TPM2B_NAME


@dataclass(frozen=True)
class TPMS_QUOTE_INFO:
    """Part 2, 10.12.4: the PCRs quoted and the digest of their values."""

    pcrSelect: TPML_PCR_SELECTION
    pcrDigest: TPM2B_DIGEST


@dataclass(frozen=True)
class TPMS_COMMAND_AUDIT_INFO:
    """Part 2, 10.12.5."""

    auditCounter: UINT64
    digestAlg: UINT16
    auditDigest: TPM2B_DIGEST
    commandDigest: TPM2B_DIGEST


@dataclass(frozen=True)
class TPMS_SESSION_AUDIT_INFO:
    """Part 2, 10.12.6."""

    exclusiveSession: TPMI_YES_NO
    sessionDigest: TPM2B_DIGEST


@dataclass(frozen=True)
class TPMS_CREATION_INFO:
    """Part 2, 10.12.7."""

    objectName: TPM2B_NAME
    creationHash: TPM2B_DIGEST


@dataclass(frozen=True)
class TPMS_NV_CERTIFY_INFO:
    """Part 2, 10.12.8: a slice of an index's data."""

    indexName: TPM2B_NAME
    offset: UINT16
    nvContents: TPM2B_MAX_NV_BUFFER


@dataclass(frozen=True)
class TPMS_NV_DIGEST_CERTIFY_INFO:
    """Part 2, 10.12.9: the digest of an index's whole data."""

    indexName: TPM2B_NAME
    nvDigest: TPM2B_DIGEST


@dataclass(frozen=True)
class TPMS_TIME_ATTEST_INFO:
    """Part 2, 10.12.2: Time and Clock, and the firmware version in the clear."""

    time: TPMS_TIME_INFO
    firmwareVersion: UINT64


ATTESTED: dict[int, type] = {
    ST.ATTEST_CERTIFY: TPMS_CERTIFY_INFO,
    ST.ATTEST_CREATION: TPMS_CREATION_INFO,
    ST.ATTEST_QUOTE: TPMS_QUOTE_INFO,
    ST.ATTEST_COMMAND_AUDIT: TPMS_COMMAND_AUDIT_INFO,
    ST.ATTEST_SESSION_AUDIT: TPMS_SESSION_AUDIT_INFO,
    ST.ATTEST_TIME: TPMS_TIME_ATTEST_INFO,
    ST.ATTEST_NV: TPMS_NV_CERTIFY_INFO,
    ST_ATTEST_NV_DIGEST: TPMS_NV_DIGEST_CERTIFY_INFO,
}


@dataclass(frozen=True)
class TPMS_ATTEST:
    """Part 2, 10.12.12: the common header, then the TPMU_ATTEST member ``type``
    selects. For a key outside the endorsement and platform hierarchies, resetCount,
    restartCount and firmwareVersion are obfuscated (``info.py``)."""

    magic: UINT32
    type: Annotated[int, Int("H", tuple(ATTESTED), RC.TYPE)]
    qualifiedSigner: TPM2B_NAME
    extraData: TPM2B_DATA
    clockInfo: TPMS_CLOCK_INFO
    firmwareVersion: UINT64
    attested: Annotated[Any, Selected("type", ATTESTED)]


# TPM2B_ATTEST (Part 2, 10.12.13) travels as the marshalled TPMS_ATTEST: the signature
# is over exactly those octets. Bounded by the largest member (an NV slice).
TPM2B_ATTEST = Annotated[bytes, Sized(2048)]


@dataclass(frozen=True)
class TPMT_TK_CREATION_IN:
    """TPMT_TK_CREATION as a command parameter (Part 2, 10.7.3): the tag must be
    TPM_ST_CREATION (else TPM_RC_TAG) and the hierarchy a TPMI_RH_HIERARCHY+."""

    tag: Annotated[int, TicketTag(ST.CREATION)]
    hierarchy: TPMI_RH_HIERARCHY_NULL
    digest: TPM2B_DIGEST

