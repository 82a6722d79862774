"""TPM 2.0 Part 2 structures used by the implemented commands, as codec dataclasses.

Names are the specification's; each docstring cites its clause. Interface types
(TPMI_*) are ``Annotated`` integer aliases carrying the allowed set and the response
code an unlisted value earns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from .codec import UINT8, UINT16, UINT32, UINT64, Int, ListOf, Raw, Reader, Sized, Wire
from .constants import (
    CAP,
    MAX_ACTIVE_SESSIONS,
    MAX_DIGEST_BUFFER,
    MAX_EVENT_DATA,
    PCR_SELECT_MAX,
    PCR_SELECT_MIN,
    RC,
    RH,
    SE,
    ST,
    SU,
    TPM_ALG,
)
from .crypto import HASHES, MAX_DIGEST_SIZE
from .errors import TpmError

HASH_COUNT = len(HASHES)

# --- interface types (Part 2, clause 9) -------------------------------------------
TPMI_ALG_HASH = Annotated[int, Int("H", HASHES, RC.HASH)]
TPMI_YES_NO = Annotated[int, Int("B", (0, 1), RC.VALUE)]
TPM_SU = Annotated[int, Int("H", tuple(SU), RC.VALUE)]
TPM_SE = Annotated[int, Int("B", tuple(SE), RC.VALUE)]
TPMI_RH_HIERARCHY_NULL = Annotated[
    int, Int("I", (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.NULL), RC.VALUE)
]
# Session symmetric definitions (TPMI_ALG_SYM, Part 2, 9.29): AES, XOR or NULL; any other
# algorithm is "not implemented", which the unmarshaller reports as TPM_RC_SYMMETRIC.
TPMI_ALG_SYM = Annotated[int, Int("H", (TPM_ALG.AES, TPM_ALG.XOR, TPM_ALG.NULL), RC.SYMMETRIC)]
# AES key sizes for sessions: libtpms 0.9 is built without AES-192 (TPM_RC_VALUE).
SESSION_AES_KEY_BITS = (128, 256)
SYM_MODES = (TPM_ALG.CTR, TPM_ALG.OFB, TPM_ALG.CBC, TPM_ALG.CFB, TPM_ALG.ECB)
TPM_CAP_ = Annotated[int, Int("I", tuple(c for c in CAP if c != CAP.VENDOR_PROPERTY), RC.VALUE)]
# The TPM_ST values libtpms unmarshals (all of Part 2, 6.9 but TPM_ST_FU_MANIFEST).
TPM_ST_VALUES = frozenset(st for st in ST if st != ST.FU_MANIFEST)


class TicketTag(Int):
    """A ticket's tag (TPMT_TK_xxx, Part 2, 10.7): read as a TPM_ST first, so a value
    that is no structure tag at all is TPM_RC_VALUE; a structure tag other than the
    ticket's is TPM_RC_TAG (the reference's unmarshalling order)."""

    def __init__(self, *tags: int) -> None:
        super().__init__("H", tags, RC.TAG)

    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        v = r.unpack(self.st)
        if v not in TPM_ST_VALUES:
            raise TpmError(RC.VALUE, f"0x{v:04X} is not a TPM_ST")
        if self.allowed is not None and v not in self.allowed:
            raise TpmError(RC.TAG, f"tag 0x{v:04X} is not this ticket's")
        return v

TPM2B_DIGEST = Annotated[bytes, Sized(MAX_DIGEST_SIZE)]
TPM2B_NONCE = TPM2B_DIGEST
TPM2B_AUTH = TPM2B_DIGEST
TPM2B_MAX_BUFFER = Annotated[bytes, Sized(MAX_DIGEST_BUFFER)]
TPM2B_EVENT = Annotated[bytes, Sized(MAX_EVENT_DATA)]
TPM2B_SENSITIVE_DATA = Annotated[bytes, Sized(128)]
TPM2B_ENCRYPTED_SECRET = Annotated[bytes, Sized(384)]  # sizeof(TPMU_ENCRYPTED_SECRET): RSA-3072
MAX_CONTEXT_SIZE = 1024
TPM2B_CONTEXT_DATA = Annotated[bytes, Sized(MAX_CONTEXT_SIZE)]


class PcrSelect(Wire):
    """sizeofSelect (u8) + pcrSelect octets; a size outside PCR_SELECT_MIN..MAX is
    TPM_RC_VALUE (Part 2, 10.6.1)."""

    def read(self, r: Reader, prior: dict[str, Any]) -> bytes:
        n = r.take(1)[0]
        if n < PCR_SELECT_MIN or n > PCR_SELECT_MAX:
            raise TpmError(RC.VALUE, f"sizeofSelect {n}")
        return r.take(n)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        out.append(len(value))
        out += value


class Selected(Wire):
    """A union member chosen by a sibling selector field (TPMU_xxx, Part 2, 11.1)."""

    def __init__(self, selector: str, members: dict[int, Any]) -> None:
        self.selector = selector
        self.members = members

    def read(self, r: Reader, prior: dict[str, Any]) -> Any:
        from .codec import wire_for

        member = self.members.get(prior[self.selector])
        if member is None:
            raise TpmError(RC.SELECTOR, "no such union member")
        return wire_for(member).read(r, prior)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        from .codec import marshal_into

        marshal_into(out, value)


def _digest_size(prior: dict[str, Any]) -> int:
    return HASHES[prior["hashAlg"]].size


@dataclass(frozen=True)
class TPMS_PCR_SELECTION:
    """Part 2, 10.6.2."""

    hash: TPMI_ALG_HASH
    pcrSelect: Annotated[bytes, PcrSelect()]


@dataclass(frozen=True)
class TPML_PCR_SELECTION:
    """Part 2, 10.9.7."""

    pcrSelections: Annotated[tuple[TPMS_PCR_SELECTION, ...], ListOf(TPMS_PCR_SELECTION, HASH_COUNT)]


@dataclass(frozen=True)
class TPMT_HA:
    """Part 2, 10.3.2: a digest tagged with its algorithm; the size follows the tag."""

    hashAlg: TPMI_ALG_HASH
    digest: Annotated[bytes, Raw(_digest_size)]


@dataclass(frozen=True)
class TPML_DIGEST_VALUES:
    """Part 2, 10.9.6."""

    digests: Annotated[tuple[TPMT_HA, ...], ListOf(TPMT_HA, HASH_COUNT)]


@dataclass(frozen=True)
class TPML_DIGEST:
    """Part 2, 10.9.5 (at most eight digests)."""

    digests: Annotated[tuple[bytes, ...], ListOf(TPM2B_DIGEST, 8)]


@dataclass(frozen=True)
class TPMT_TK_HASHCHECK:
    """Part 2, 10.7.6: proof that the TPM hashed data that did not start with
    TPM_GENERATED_VALUE."""

    tag: UINT16
    hierarchy: UINT32
    digest: TPM2B_DIGEST


@dataclass(frozen=True)
class TPMS_CLOCK_INFO:
    """Part 2, 10.11.1."""

    clock: UINT64
    resetCount: UINT32
    restartCount: UINT32
    safe: UINT8


@dataclass(frozen=True)
class TPMS_TIME_INFO:
    """Part 2, 10.11.6."""

    time: UINT64
    clockInfo: TPMS_CLOCK_INFO


# TPMI_DH_SAVED (Part 2, 9.x): an HMAC or policy session handle, or one of the three
# handles a saved object carries (0x80000000 object, 0x80000001 sequence, 0x80000002
# stClear object); anything else is TPM_RC_VALUE when the context is unmarshalled.
TPMI_DH_SAVED = Annotated[int, Int("I", frozenset(
    {0x80000000, 0x80000001, 0x80000002}
    | {(ht << 24) + i for ht in (0x02, 0x03) for i in range(MAX_ACTIVE_SESSIONS)}))]


@dataclass(frozen=True)
class TPMS_CONTEXT:
    """Part 2, 14.5: a saved context as the client holds it."""

    sequence: UINT64
    savedHandle: TPMI_DH_SAVED
    hierarchy: TPMI_RH_HIERARCHY_NULL
    contextBlob: TPM2B_CONTEXT_DATA


_XOR_HASH = Int("H", HASHES, RC.HASH)
_AES_BITS = Int("H", SESSION_AES_KEY_BITS, RC.VALUE)
_MODE = Int("H", (*SYM_MODES, TPM_ALG.NULL), RC.MODE)


class _SymKeyBits(Wire):
    """TPMU_SYM_KEY_BITS (Part 2, 11.1.4): a key size for AES, a hash for XOR (TPM_RC_HASH
    if not implemented), absent for NULL."""

    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        alg = prior["algorithm"]
        if alg == TPM_ALG.NULL:
            return 0
        if alg == TPM_ALG.XOR:
            return _XOR_HASH.read(r, prior)
        return _AES_BITS.read(r, prior)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        if obj.algorithm != TPM_ALG.NULL:
            out += value.to_bytes(2, "big")


class _SymMode(Wire):
    """TPMU_SYM_MODE (Part 2, 11.1.5): a block cipher's mode (NULL allowed here, refused
    later by TPM2_StartAuthSession as TPM_RC_MODE); absent for XOR and NULL."""

    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        if prior["algorithm"] in (TPM_ALG.NULL, TPM_ALG.XOR):
            return TPM_ALG.NULL
        return _MODE.read(r, prior)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        if obj.algorithm not in (TPM_ALG.NULL, TPM_ALG.XOR):
            out += value.to_bytes(2, "big")


@dataclass(frozen=True)
class TPMT_SYM_DEF:
    """Part 2, 11.1.6: a session's parameter-encryption algorithm. ``keyBits`` holds the
    XOR hash for TPM_ALG_XOR; key bits and mode are absent on the wire for NULL."""

    algorithm: TPMI_ALG_SYM
    keyBits: Annotated[int, _SymKeyBits()] = 0
    mode: Annotated[int, _SymMode()] = TPM_ALG.NULL


@dataclass(frozen=True)
class TPMS_ALG_PROPERTY:
    """Part 2, 10.8.1."""

    alg: UINT16
    algProperties: UINT32


@dataclass(frozen=True)
class TPMS_TAGGED_PROPERTY:
    """Part 2, 10.8.2."""

    property: UINT32
    value: UINT32


@dataclass(frozen=True)
class TPMS_TAGGED_PCR_SELECT:
    """Part 2, 10.8.3."""

    tag: UINT32
    pcrSelect: Annotated[bytes, PcrSelect()]


@dataclass(frozen=True)
class TPML_ALG_PROPERTY:
    algProperties: Annotated[tuple[TPMS_ALG_PROPERTY, ...], ListOf(TPMS_ALG_PROPERTY, 1 << 16)]


@dataclass(frozen=True)
class TPML_HANDLE:
    handle: Annotated[tuple[int, ...], ListOf(UINT32, 1 << 16)]


@dataclass(frozen=True)
class TPML_CCA:
    commandAttributes: Annotated[tuple[int, ...], ListOf(UINT32, 1 << 16)]


@dataclass(frozen=True)
class TPML_CC:
    commandCodes: Annotated[tuple[int, ...], ListOf(UINT32, 1 << 16)]


@dataclass(frozen=True)
class TPML_TAGGED_TPM_PROPERTY:
    tpmProperty: Annotated[tuple[TPMS_TAGGED_PROPERTY, ...], ListOf(TPMS_TAGGED_PROPERTY, 1 << 16)]


@dataclass(frozen=True)
class TPML_TAGGED_PCR_PROPERTY:
    pcrProperty: Annotated[
        tuple[TPMS_TAGGED_PCR_SELECT, ...], ListOf(TPMS_TAGGED_PCR_SELECT, 1 << 16)
    ]


@dataclass(frozen=True)
class TPML_EMPTY:
    """Any TPML this TPM has nothing to put in (auth policies, ACTs)."""

    items: Annotated[tuple[int, ...], ListOf(UINT32, 0)]


@dataclass(frozen=True)
class TPML_ECC_CURVE:
    """Part 2, 10.9.12."""

    eccCurves: Annotated[tuple[int, ...], ListOf(UINT16, 1 << 16)]


@dataclass(frozen=True)
class TPML_ALG:
    """Part 2, 10.9.3."""

    algorithms: Annotated[tuple[int, ...], ListOf(UINT16, 64)]


@dataclass(frozen=True)
class TPMS_CAPABILITY_DATA:
    """Part 2, 10.10.2: the TPMU_CAPABILITIES member is selected by ``capability``."""

    capability: UINT32
    data: Annotated[
        Any,
        Selected(
            "capability",
            {
                CAP.ALGS: TPML_ALG_PROPERTY,
                CAP.HANDLES: TPML_HANDLE,
                CAP.COMMANDS: TPML_CCA,
                CAP.PP_COMMANDS: TPML_CC,
                CAP.AUDIT_COMMANDS: TPML_CC,
                CAP.PCRS: TPML_PCR_SELECTION,
                CAP.TPM_PROPERTIES: TPML_TAGGED_TPM_PROPERTY,
                CAP.PCR_PROPERTIES: TPML_TAGGED_PCR_PROPERTY,
                CAP.ECC_CURVES: TPML_ECC_CURVE,
                CAP.AUTH_POLICIES: TPML_EMPTY,
                CAP.ACT: TPML_EMPTY,
            },
        ),
    ]
