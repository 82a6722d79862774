"""Part 2 object structures (clause 12): TPMT_PUBLIC and its parameter and unique
unions, TPMT_SENSITIVE, TPM2B_SENSITIVE_CREATE, creation data and tickets.

Unions selected by a sibling (TPMU_PUBLIC_PARMS, TPMU_PUBLIC_ID, the scheme details)
are small wire rules here; unmarshalling errors carry the bare response code the
reference unmarshaller gives (TPM_RC_TYPE, _HASH, _SYMMETRIC, _MODE, _CURVE …).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntFlag
from typing import Annotated, Any

from ..codec import UINT16, UINT32, Int, Reader, Sized, Wire, marshal, unmarshal_from
from ..constants import RC, TPM_ALG
from ..crypto import HASHES, HashAlg
from ..errors import TpmError
from ..structures import TPM2B_DIGEST, TPML_PCR_SELECTION


class TPMA_OBJECT(IntFlag):
    """Part 2, 8.3."""

    fixedTPM = 1 << 1
    stClear = 1 << 2
    fixedParent = 1 << 4
    sensitiveDataOrigin = 1 << 5
    userWithAuth = 1 << 6
    adminWithPolicy = 1 << 7
    noDA = 1 << 10
    encryptedDuplication = 1 << 11
    restricted = 1 << 16
    decrypt = 1 << 17
    sign = 1 << 18


TPMA_OBJECT_RESERVED = 0xFFF0F309  # bits 0, 3, 8-9, 12-15, 20-31 (19 is x509sign)

# ECC curves (TPM_ECC_CURVE, Part 2, 6.4) this TPM implements, with their key size.
ECC_NIST_P256 = 0x0003
ECC_NIST_P384 = 0x0004
ECC_NIST_P521 = 0x0005
CURVE_BYTES = {ECC_NIST_P256: 32, ECC_NIST_P384: 48, ECC_NIST_P521: 66}
RSA_KEY_BITS = (1024, 2048, 3072)
AES_KEY_BITS = (128, 192, 256)
MAX_RSA_KEY_BYTES = 384
MAX_ECC_KEY_BYTES = 80  # libtpms sizes TPMS_ECC_POINT for BN-638
MAX_SYM_KEY_BYTES = 32

OBJECT_TYPES = (TPM_ALG.RSA, TPM_ALG.KEYEDHASH, TPM_ALG.ECC, TPM_ALG.SYMCIPHER)
SYM_MODES = (TPM_ALG.CTR, TPM_ALG.OFB, TPM_ALG.CBC, TPM_ALG.CFB, TPM_ALG.ECB)
RSA_SCHEMES = (TPM_ALG.RSASSA, TPM_ALG.RSAES, TPM_ALG.RSAPSS, TPM_ALG.OAEP)
ECC_SCHEMES = (TPM_ALG.ECDSA, TPM_ALG.ECDH, TPM_ALG.ECDAA, TPM_ALG.ECSCHNORR, TPM_ALG.ECMQV)
KDFS = (TPM_ALG.KDF1_SP800_56A, TPM_ALG.KDF2, TPM_ALG.KDF1_SP800_108, TPM_ALG.MGF1)
SIGN_SCHEMES = (TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.ECDSA, TPM_ALG.ECDAA,
                TPM_ALG.ECSCHNORR)
DECRYPT_SCHEMES = (TPM_ALG.RSAES, TPM_ALG.OAEP, TPM_ALG.ECDH, TPM_ALG.ECMQV)

_U16 = struct.Struct(">H")
NULL = TPM_ALG.NULL

# TPM_CAP_ALGS entries for what this package implements (TPMA_ALGORITHM as libtpms).
OBJECT_ALGORITHMS = (
    (TPM_ALG.RSA, 0x009),  # asymmetric | object
    (TPM_ALG.AES, 0x002),  # symmetric
    (TPM_ALG.KEYEDHASH, 0x30C),  # hash | object | signing | encrypting
    (TPM_ALG.ECC, 0x009),
    (TPM_ALG.SYMCIPHER, 0x008),  # object
    (TPM_ALG.CFB, 0x202),  # symmetric | encrypting
)


def _u16(r: Reader, allowed: tuple[int, ...], rc: int) -> int:
    v = r.unpack(_U16)
    if v not in allowed:
        raise TpmError(rc, f"0x{v:04X} not allowed")
    return v


# ---- TPMT_SYM_DEF_OBJECT (Part 2, 11.1.7) ------------------------------------------
@dataclass(frozen=True)
class SymDef:
    """TPMT_SYM_DEF_OBJECT: keyBits and mode are absent on the wire for TPM_ALG_NULL."""

    algorithm: int = NULL
    keyBits: int = 0
    mode: int = NULL


class SymDefObject(Wire):
    def read(self, r: Reader, prior: dict[str, Any]) -> SymDef:
        alg = _u16(r, (TPM_ALG.AES, NULL), RC.SYMMETRIC)
        if alg == NULL:
            return SymDef()
        bits = _u16(r, AES_KEY_BITS, RC.VALUE)
        mode = _u16(r, (*SYM_MODES, NULL), RC.MODE)
        return SymDef(alg, bits, mode)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        out += _U16.pack(value.algorithm)
        if value.algorithm != NULL:
            out += struct.pack(">HH", value.keyBits, value.mode)


class SymDefObjectNullMode(SymDefObject):
    """TPMT_SYM_DEF_OBJECT+ as in SYMCIPHER parameters: mode may be TPM_ALG_NULL."""

    def read(self, r: Reader, prior: dict[str, Any]) -> SymDef:
        alg = _u16(r, (TPM_ALG.AES,), RC.SYMMETRIC)
        bits = _u16(r, AES_KEY_BITS, RC.VALUE)
        mode = _u16(r, (*SYM_MODES, NULL), RC.MODE)
        return SymDef(alg, bits, mode)


# ---- schemes: an algorithm, then a hash (and more) unless it is TPM_ALG_NULL --------
@dataclass(frozen=True)
class Scheme:
    """TPMT_RSA_SCHEME / TPMT_ECC_SCHEME / TPMT_KEYEDHASH_SCHEME / TPMT_KDF_SCHEME:
    ``hashAlg`` is the detail's hash; ``extra`` is ECDAA's count or XOR's kdf."""

    scheme: int = NULL
    hashAlg: int = NULL
    extra: int = 0


# Schemes whose details structure is empty, so nothing follows the algorithm on the
# wire: TPMS_ENC_SCHEME_RSAES (Part 2, 11.2.2.2). Every other scheme here carries a hash.
NO_DETAILS = (TPM_ALG.RSAES,)


class SchemeWire(Wire):
    def __init__(self, allowed: tuple[int, ...], rc: int,
                 extra_for: tuple[int, ...] = (), extra_allowed: tuple[int, ...] = ()):
        self.allowed = (*allowed, NULL)
        self.rc = rc
        self.extra_for = extra_for
        self.extra_allowed = extra_allowed

    def read(self, r: Reader, prior: dict[str, Any]) -> Scheme:
        scheme = _u16(r, self.allowed, self.rc)
        if scheme == NULL:
            return Scheme()
        if scheme in NO_DETAILS:
            return Scheme(scheme)
        h = _u16(r, tuple(HASHES), RC.HASH)
        extra = 0
        if scheme in self.extra_for:
            extra = r.unpack(_U16)
            if self.extra_allowed and extra not in self.extra_allowed:
                raise TpmError(RC.KDF)
        return Scheme(scheme, h, extra)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        out += _U16.pack(value.scheme)
        if value.scheme not in (NULL, *NO_DETAILS):
            out += _U16.pack(value.hashAlg)
            if value.scheme in self.extra_for:
                out += _U16.pack(value.extra)


# ---- TPMU_PUBLIC_PARMS (Part 2, 12.2.3.7) ------------------------------------------
@dataclass(frozen=True)
class TPMS_KEYEDHASH_PARMS:
    scheme: Annotated[Scheme, SchemeWire((TPM_ALG.HMAC, TPM_ALG.XOR), RC.VALUE,
                                         (TPM_ALG.XOR,), KDFS)]


@dataclass(frozen=True)
class TPMS_SYMCIPHER_PARMS:
    sym: Annotated[SymDef, SymDefObjectNullMode()]


@dataclass(frozen=True)
class TPMS_RSA_PARMS:
    symmetric: Annotated[SymDef, SymDefObject()]
    scheme: Annotated[Scheme, SchemeWire(RSA_SCHEMES, RC.VALUE)]
    keyBits: Annotated[int, Int("H", RSA_KEY_BITS, RC.VALUE)]
    exponent: UINT32


@dataclass(frozen=True)
class TPMS_ECC_PARMS:
    symmetric: Annotated[SymDef, SymDefObject()]
    scheme: Annotated[Scheme, SchemeWire(ECC_SCHEMES, RC.SCHEME, (TPM_ALG.ECDAA,))]
    curveID: Annotated[int, Int("H", tuple(CURVE_BYTES), RC.CURVE)]
    kdf: Annotated[Scheme, SchemeWire(KDFS, RC.KDF)]


Parms = TPMS_KEYEDHASH_PARMS | TPMS_SYMCIPHER_PARMS | TPMS_RSA_PARMS | TPMS_ECC_PARMS


# ---- TPMU_PUBLIC_ID (Part 2, 12.2.3.2) ---------------------------------------------
@dataclass(frozen=True)
class TPMS_ECC_POINT:
    x: Annotated[bytes, Sized(MAX_ECC_KEY_BYTES)]
    y: Annotated[bytes, Sized(MAX_ECC_KEY_BYTES)]


@dataclass(frozen=True)
class UniqueBytes:
    """TPM2B_DIGEST (keyedHash, sym) or TPM2B_PUBLIC_KEY_RSA (rsa)."""

    buffer: bytes


class ByType(Wire):
    """A union member selected by the sibling ``type`` (TPMI_ALG_PUBLIC)."""

    def __init__(self, members: dict[int, Wire]) -> None:
        self.members = members

    def read(self, r: Reader, prior: dict[str, Any]) -> Any:
        return self.members[prior["type"]].read(r, prior)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        self.members[obj.type].write(out, value, obj)


class _StructOf(Wire):
    def __init__(self, cls: type) -> None:
        self.cls = cls

    def read(self, r: Reader, prior: dict[str, Any]) -> Any:
        return unmarshal_from(self.cls, r)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        out += marshal(value)


class _Buffer(Wire):
    def __init__(self, max_size: int) -> None:
        self.sized = Sized(max_size)

    def read(self, r: Reader, prior: dict[str, Any]) -> UniqueBytes:
        return UniqueBytes(self.sized.read(r, prior))

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        self.sized.write(out, value.buffer, obj)


_PARMS = ByType({
    TPM_ALG.KEYEDHASH: _StructOf(TPMS_KEYEDHASH_PARMS),
    TPM_ALG.SYMCIPHER: _StructOf(TPMS_SYMCIPHER_PARMS),
    TPM_ALG.RSA: _StructOf(TPMS_RSA_PARMS),
    TPM_ALG.ECC: _StructOf(TPMS_ECC_PARMS),
})
_UNIQUE = ByType({
    TPM_ALG.KEYEDHASH: _Buffer(max(h.size for h in HASHES.values())),
    TPM_ALG.SYMCIPHER: _Buffer(max(h.size for h in HASHES.values())),
    TPM_ALG.RSA: _Buffer(MAX_RSA_KEY_BYTES),
    TPM_ALG.ECC: _StructOf(TPMS_ECC_POINT),
})


class ObjectAttributes(Int):
    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        v = r.unpack(self.st)
        if v & TPMA_OBJECT_RESERVED:
            raise TpmError(RC.RESERVED_BITS, "TPMA_OBJECT reserved bits")
        return v


@dataclass(frozen=True)
class TPMT_PUBLIC:
    """Part 2, 12.2.4."""

    type: Annotated[int, Int("H", OBJECT_TYPES, RC.TYPE)]
    nameAlg: Annotated[int, Int("H", (*HASHES, NULL), RC.HASH)]
    objectAttributes: Annotated[int, ObjectAttributes("I")]
    authPolicy: TPM2B_DIGEST
    parameters: Annotated[Any, _PARMS]
    unique: Annotated[Any, _UNIQUE]

    def has(self, attr: TPMA_OBJECT) -> bool:
        return bool(self.objectAttributes & attr)

    @property
    def name_hash(self) -> HashAlg:
        return HASHES[self.nameAlg]

    def name(self) -> bytes:
        """Name := nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1, 16)."""
        return _U16.pack(self.nameAlg) + self.name_hash.digest(marshal(self))

    @property
    def is_storage_parent(self) -> bool:
        """An ordinary storage parent: restricted decrypt with a symmetric definition."""
        return (self.has(TPMA_OBJECT.restricted) and self.has(TPMA_OBJECT.decrypt)
                and not self.has(TPMA_OBJECT.sign) and self.type in (TPM_ALG.RSA, TPM_ALG.ECC))

    @property
    def symmetric(self) -> SymDef:
        p = self.parameters
        if isinstance(p, TPMS_RSA_PARMS | TPMS_ECC_PARMS):
            return p.symmetric
        if isinstance(p, TPMS_SYMCIPHER_PARMS):
            return p.sym
        return SymDef()


class SizedStruct(Wire):
    """TPM2B_xxx around a structure: the size must be non-zero and match exactly
    (Part 2, 5.4: a size that disagrees with the content is TPM_RC_SIZE)."""

    def __init__(self, cls: type, allow_empty: bool = False) -> None:
        self.cls = cls
        self.allow_empty = allow_empty

    def read(self, r: Reader, prior: dict[str, Any]) -> Any:
        n = r.unpack(_U16)
        if n == 0:
            if self.allow_empty:
                return None
            raise TpmError(RC.SIZE, "empty TPM2B structure")
        # As the reference does: the structure is read from the rest of the command
        # (not just n octets), then what it used must be exactly n.
        start = r.pos
        value: Any = unmarshal_from(self.cls, r)
        if r.pos - start != n:
            raise TpmError(RC.SIZE, "TPM2B size disagrees with its structure")
        return value

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        if value is None:
            out += b"\x00\x00"
            return
        b = marshal(value)
        out += _U16.pack(len(b)) + b


TPM2B_PUBLIC = Annotated[TPMT_PUBLIC, SizedStruct(TPMT_PUBLIC)]


@dataclass(frozen=True)
class _NamedPublic(TPMT_PUBLIC):
    """TPMT_PUBLIC+ without the '+': nameAlg may not be TPM_ALG_NULL (Part 2, 12.2.4)."""

    nameAlg: Annotated[int, Int("H", tuple(HASHES), RC.HASH)]


class NamedPublic(SizedStruct):
    """TPM2B_PUBLIC for an object that must have a Name (Create, CreatePrimary, Load,
    Import): a nameAlg of TPM_ALG_NULL is TPM_RC_HASH as soon as it is read, before the
    rest of the command (as libtpms unmarshals it). The value is a plain TPMT_PUBLIC."""

    def __init__(self) -> None:
        super().__init__(_NamedPublic)

    def read(self, r: Reader, prior: dict[str, Any]) -> TPMT_PUBLIC:
        v = super().read(r, prior)
        return TPMT_PUBLIC(v.type, v.nameAlg, v.objectAttributes, v.authPolicy,
                           v.parameters, v.unique)


TPM2B_PUBLIC_NAMED = Annotated[TPMT_PUBLIC, NamedPublic()]
TPM2B_NAME = Annotated[bytes, Sized(2 + max(h.size for h in HASHES.values()))]


# ---- the sensitive area (Part 2, 12.3) ---------------------------------------------
@dataclass(frozen=True)
class TPMS_SENSITIVE_CREATE:
    """Part 2, 12.1.15."""

    userAuth: TPM2B_DIGEST
    data: Annotated[bytes, Sized(128)]  # TPM2B_SENSITIVE_DATA: MAX_SYM_DATA, as libtpms


TPM2B_SENSITIVE_CREATE = Annotated[TPMS_SENSITIVE_CREATE, SizedStruct(TPMS_SENSITIVE_CREATE)]


@dataclass(frozen=True)
class TPMT_SENSITIVE:
    """Part 2, 12.3.2.4: every TPMU_SENSITIVE_COMPOSITE member is a TPM2B, so the union
    is one sized buffer whose bound depends on ``sensitiveType``."""

    sensitiveType: Annotated[int, Int("H", OBJECT_TYPES, RC.TYPE)]
    authValue: TPM2B_DIGEST
    seedValue: TPM2B_DIGEST
    sensitive: Annotated[bytes, Sized(MAX_RSA_KEY_BYTES * 5 // 2)]


TPM2B_SENSITIVE = Annotated[TPMT_SENSITIVE | None, SizedStruct(TPMT_SENSITIVE, True)]

# TPMU_SENSITIVE_COMPOSITE members (Part 2, 12.3.2.3) and their bounds as libtpms sizes
# them: TPM2B_PRIVATE_KEY_RSA holds one prime, TPM2B_ECC_PARAMETER the largest curve
# parameter, TPM2B_SENSITIVE_DATA MAX_SYM_DATA, TPM2B_SYM_KEY MAX_SYM_KEY_BYTES.
SENSITIVE_BOUNDS = {
    TPM_ALG.RSA: MAX_RSA_KEY_BYTES // 2,
    TPM_ALG.ECC: MAX_ECC_KEY_BYTES,
    TPM_ALG.KEYEDHASH: 128,
    TPM_ALG.SYMCIPHER: MAX_SYM_KEY_BYTES,
}


class SensitiveComposite(Wire):
    """The union as a caller sends it: the member ``sensitiveType`` selects, so a size
    beyond that member's bound is TPM_RC_SIZE while unmarshalling, before any check of
    the command (what TPM2_LoadExternal meets first in libtpms)."""

    def read(self, r: Reader, prior: dict[str, Any]) -> bytes:
        return Sized(SENSITIVE_BOUNDS[prior["sensitiveType"]]).read(r, prior)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        out += _U16.pack(len(value)) + value


@dataclass(frozen=True)
class TPMT_SENSITIVE_IN(TPMT_SENSITIVE):
    """TPMT_SENSITIVE from a command. The stored form (TPMT_SENSITIVE) keeps one loose
    bound, as a sequence object keeps its running state in the union."""

    sensitive: Annotated[bytes, SensitiveComposite()]


TPM2B_SENSITIVE_IN = Annotated[TPMT_SENSITIVE_IN | None, SizedStruct(TPMT_SENSITIVE_IN, True)]
TPM2B_PRIVATE = Annotated[bytes, Sized(1024)]
TPM2B_DATA = Annotated[bytes, Sized(64)]


@dataclass(frozen=True)
class TPMT_TK_CREATION:
    """Part 2, 10.7.3."""

    tag: UINT16
    hierarchy: UINT32
    digest: TPM2B_DIGEST


@dataclass(frozen=True)
class TPMS_CREATION_DATA:
    """Part 2, 15.1: what the TPM attests about a new object's creation."""

    pcrSelect: TPML_PCR_SELECTION
    pcrDigest: TPM2B_DIGEST
    locality: Annotated[int, Int("B")]
    parentNameAlg: UINT16
    parentName: TPM2B_NAME
    parentQualifiedName: TPM2B_NAME
    outsideInfo: TPM2B_DATA


TPM2B_CREATION_DATA = Annotated[TPMS_CREATION_DATA, SizedStruct(TPMS_CREATION_DATA)]
