"""Public-area rules for new and loaded objects (Part 1, 27.2 and Part 3, 12.1):
the order and the codes follow the reference's CreateChecks, PublicAttributesValidation
and SchemeChecks, so a bad template earns what libtpms answers. Codes are bare; the
command adds the parameter number.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from ..constants import RC, TPM_ALG
from ..errors import TpmError
from .derive import CURVES
from .public import (
    CURVE_BYTES,
    DECRYPT_SCHEMES,
    SIGN_SCHEMES,
    TPMA_OBJECT,
    TPMS_ECC_PARMS,
    TPMS_KEYEDHASH_PARMS,
    TPMS_RSA_PARMS,
    TPMS_SYMCIPHER_PARMS,
    TPMT_PUBLIC,
    SymDef,
)

A = TPMA_OBJECT
NULL = TPM_ALG.NULL


def create_checks(parent: TPMT_PUBLIC | None, pub: TPMT_PUBLIC, data_size: int) -> None:
    """Rules for an object the TPM is about to create (``parent`` None: a primary)."""
    origin = pub.has(A.sensitiveDataOrigin)
    if not origin and data_size == 0:
        raise TpmError(RC.ATTRIBUTES, "no sensitive data and not sensitiveDataOrigin")
    if parent is not None and origin and data_size != 0:
        raise TpmError(RC.ATTRIBUTES, "sensitive data given with sensitiveDataOrigin")
    if pub.type == TPM_ALG.KEYEDHASH:
        if not pub.has(A.sign) and not pub.has(A.decrypt) and origin:
            raise TpmError(RC.ATTRIBUTES, "a data object's data comes from the caller")
    if pub.type in (TPM_ALG.KEYEDHASH, TPM_ALG.SYMCIPHER):
        # Both symmetric types (the reference's KEYEDHASH case falls through): a
        # restricted key whose secret the caller chose could be made again outside
        # this TPM, so it may not claim to be fixed to a parent or to the TPM.
        if (pub.has(A.restricted) and not origin
                and (pub.has(A.fixedParent) or pub.has(A.fixedTPM))):
            raise TpmError(RC.ATTRIBUTES, "caller-chosen restricted key that is fixed")
    elif not origin:
        raise TpmError(RC.ATTRIBUTES, "an asymmetric key's sensitive area is the TPM's")
    public_attributes_validation(parent, pub)


def public_attributes_validation(parent: TPMT_PUBLIC | None, pub: TPMT_PUBLIC) -> None:
    """Rules shared by Create, CreatePrimary and Load."""
    if pub.nameAlg == NULL:
        raise TpmError(RC.HASH, "an object needs a nameAlg")
    if pub.authPolicy and len(pub.authPolicy) != pub.name_hash.size:
        raise TpmError(RC.SIZE, "authPolicy is not a nameAlg digest")
    fixed_tpm, fixed_parent = pub.has(A.fixedTPM), pub.has(A.fixedParent)
    if parent is None or parent.has(A.fixedTPM):
        if fixed_tpm != fixed_parent:
            raise TpmError(RC.ATTRIBUTES, "fixedTPM and fixedParent differ")
    elif fixed_tpm:
        raise TpmError(RC.ATTRIBUTES, "fixedTPM under a parent that is not")
    sign, decrypt = pub.has(A.sign), pub.has(A.decrypt)
    if sign == decrypt:
        if pub.has(A.restricted):
            raise TpmError(RC.ATTRIBUTES, "restricted needs exactly one of sign/decrypt")
        if pub.type != TPM_ALG.KEYEDHASH and not sign:
            raise TpmError(RC.ATTRIBUTES, "only a data object may neither sign nor decrypt")
    if fixed_tpm and pub.has(A.encryptedDuplication):
        raise TpmError(RC.ATTRIBUTES, "encryptedDuplication on a fixedTPM object")
    if parent is not None and not parent.has(A.fixedTPM):
        if pub.has(A.encryptedDuplication) != parent.has(A.encryptedDuplication):
            raise TpmError(RC.ATTRIBUTES, "encryptedDuplication differs from the parent")
    scheme_checks(parent, pub)


def scheme_checks(parent: TPMT_PUBLIC | None, pub: TPMT_PUBLIC) -> None:
    """The reference's SchemeChecks; ``parent`` None for a primary or external object."""
    sign, decrypt, restricted = pub.has(A.sign), pub.has(A.decrypt), pub.has(A.restricted)
    p = pub.parameters
    sym = None
    if isinstance(p, TPMS_SYMCIPHER_PARMS):
        # A decryption key may have any block mode or NULL (the command then names
        # one): the reference refuses only SMAC modes here, which the wire never lets in.
        sym = p.sym
    elif isinstance(p, TPMS_KEYEDHASH_PARMS):
        scheme = p.scheme.scheme
        if sign == decrypt:
            if scheme != NULL:
                raise TpmError(RC.SCHEME)
        elif sign and scheme != TPM_ALG.HMAC:
            raise TpmError(RC.SCHEME)
        elif decrypt:
            if scheme != TPM_ALG.XOR:
                raise TpmError(RC.SCHEME)
            if restricted and p.scheme.extra != TPM_ALG.KDF1_SP800_108:
                raise TpmError(RC.SCHEME)
    elif isinstance(p, TPMS_RSA_PARMS | TPMS_ECC_PARMS):
        scheme = p.scheme.scheme
        sym = p.symmetric
        if sign == decrypt:
            if scheme != NULL:
                raise TpmError(RC.SCHEME, "sign and decrypt need scheme NULL")
        elif sign:
            if scheme in SIGN_SCHEMES:
                if p.scheme.hashAlg == NULL:
                    raise TpmError(RC.SCHEME)
            elif scheme != NULL or restricted:
                raise TpmError(RC.SCHEME, "a restricted signing key needs a signing scheme")
        if decrypt:
            if restricted:
                if scheme != NULL:
                    raise TpmError(RC.SCHEME, "a parent has scheme NULL")
            elif scheme != NULL and scheme not in DECRYPT_SCHEMES:
                raise TpmError(RC.SCHEME)
        if not restricted or not decrypt:
            if p.symmetric.algorithm != NULL:
                raise TpmError(RC.SYMMETRIC, "only a parent has a symmetric definition")
        if isinstance(p, TPMS_ECC_PARMS) and p.kdf.scheme != NULL:
            raise TpmError(RC.KDF, "no curve here needs a KDF")
    # A parent needs a symmetric algorithm; its mode is not checked (libtpms accepts any:
    # protection always uses CFB, Part 1, 23.3.2.2).
    if sym is not None and restricted and decrypt:
        if sym.algorithm == NULL:
            raise TpmError(RC.SYMMETRIC, "a parent needs a symmetric definition")
        if parent is not None and pub.has(A.fixedParent):
            like_its_parent(parent, pub, sym)


def like_its_parent(parent: TPMT_PUBLIC, pub: TPMT_PUBLIC, sym: SymDef) -> None:
    """A storage key that cannot leave its parent (fixedParent) uses the parent's nameAlg
    and symmetric definition (the end of the reference's SchemeChecks), so it protects
    its children no worse than its parent protects it. The reference compares the
    child's TPMT_SYM_DEF_OBJECT with the start of the parent's parameters, so a
    derivation parent (a keyedHash scheme there) never matches."""
    if pub.nameAlg != parent.nameAlg:
        raise TpmError(RC.HASH, "nameAlg differs from the parent's")
    if parent.type == TPM_ALG.KEYEDHASH or sym != parent.symmetric:
        raise TpmError(RC.SYMMETRIC, "symmetric definition differs from the parent's")


def external_key_checks(pub: TPMT_PUBLIC, public_only: bool) -> None:
    """The public-key part of the reference's CryptValidateKeys, as LoadExternal runs it:
    a public key this TPM will use must have the size its parameters promise (an RSA
    modulus with its top bit set, an ECC point on its curve, a symmetric object's
    unique a nameAlg digest). With a sensitive area the binding check (derive.py
    ``consistent``) covers the rest. Bare codes."""
    p = pub.parameters
    if isinstance(p, TPMS_RSA_PARMS):
        modulus = pub.unique.buffer
        if len(modulus) != p.keyBits // 8 or modulus[0] < 0x80:
            raise TpmError(RC.KEY, "modulus of the wrong size")
        if p.exponent != 0 and p.exponent < 7:
            raise TpmError(RC.VALUE, "RSA exponent")
        return
    if not public_only:
        return
    if isinstance(p, TPMS_ECC_PARMS):
        size = CURVE_BYTES[p.curveID]
        x, y = pub.unique.x, pub.unique.y
        if len(x) != size or len(y) != size:
            raise TpmError(RC.KEY, "ECC point of the wrong size")
        try:
            ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                          CURVES[p.curveID]).public_key()
        except ValueError:
            raise TpmError(RC.ECC_POINT, "point not on the curve") from None
    elif len(pub.unique.buffer) != pub.name_hash.size:
        raise TpmError(RC.KEY, "unique is not a nameAlg digest")
