"""The TPM's signing primitive: signature schemes and signatures (Part 2, 11.2.1 and
11.3), how a command's scheme meets a key's scheme (Part 3, 18.1 / 20.2), signing and
verifying with RSASSA and RSASSA-PSS (Part 1, Annex B), ECDSA (Annex C) and HMAC.

Used by TPM2_Sign and TPM2_VerifySignature and by every attestation command. All
errors are *bare* response codes (TPM_RC_SCHEME, _VALUE, _KEY …); the command that
calls adds the handle or parameter number, as the reference does. EC-Schnorr and
ECDAA (with a TPM2_Commit value) are in ``ecdaa``; SM2 is not implemented: a scheme or
signature naming it is refused while unmarshalling, with TPM_RC_SCHEME.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from ..codec import UINT16, Int, Sized
from ..constants import RC, TPM_ALG
from ..crypto import HASHES, equal, hashcheck_hmac
from ..errors import TpmError, with_parameter
from ..objects.keys import private_key, public_key
from ..objects.public import (
    CURVE_BYTES,
    MAX_ECC_KEY_BYTES,
    MAX_RSA_KEY_BYTES,
    TPMA_OBJECT,
    TPMS_ECC_PARMS,
    TPMS_KEYEDHASH_PARMS,
    TPMS_RSA_PARMS,
    TPMT_PUBLIC,
    TPMT_SENSITIVE,
)
from ..structures import TPMI_ALG_HASH, TPMT_HA, TPMT_TK_HASHCHECK, Selected
from . import ec_math, ecdaa
from .commit import CommitState

if TYPE_CHECKING:
    from ..objects.store import LoadedObject

NULL = TPM_ALG.NULL
# The signing schemes this TPM implements, and which key type each one needs.
SCHEMES_FOR_TYPE: dict[int, tuple[int, ...]] = {
    TPM_ALG.RSA: (TPM_ALG.RSASSA, TPM_ALG.RSAPSS),
    TPM_ALG.ECC: (TPM_ALG.ECDSA, TPM_ALG.ECDAA, TPM_ALG.ECSCHNORR),
    TPM_ALG.KEYEDHASH: (TPM_ALG.HMAC,),
}
SIG_SCHEMES: tuple[int, ...] = tuple(s for ss in SCHEMES_FOR_TYPE.values() for s in ss)
# Schemes whose signature needs a value from TPM2_Commit first (CryptIsSplitSign).
SPLIT_SCHEMES = (TPM_ALG.ECDAA,)

# TPMI_ALG_SIG_SCHEME+ (Part 2, 11.2.1.4): an unimplemented scheme is TPM_RC_SCHEME.
TPMI_ALG_SIG_SCHEME = Annotated[int, Int("H", (*SIG_SCHEMES, NULL), RC.SCHEME)]
TPM2B_PUBLIC_KEY_RSA = Annotated[bytes, Sized(MAX_RSA_KEY_BYTES)]
TPM2B_ECC_PARAMETER = Annotated[bytes, Sized(MAX_ECC_KEY_BYTES)]


@dataclass(frozen=True)
class TPMS_EMPTY:
    """Part 2, 10.1: the TPM_ALG_NULL member of a union."""


@dataclass(frozen=True)
class TPMS_SCHEME_HASH:
    """Part 2, 11.1.17: the details of every implemented signing scheme (HMAC's
    TPMS_SCHEME_HMAC is the same structure)."""

    hashAlg: TPMI_ALG_HASH


@dataclass(frozen=True)
class TPMS_SCHEME_ECDAA(TPMS_SCHEME_HASH):
    """Part 2, 11.1.18: ECDAA's details add the TPM2_Commit counter whose value the
    signature uses (keys/ecdaa.py)."""

    count: UINT16 = 0


# TPMU_SIG_SCHEME (Part 2, 11.2.1.4): the members, by scheme.
_SCHEME_DETAILS: dict[int, type] = {alg: TPMS_SCHEME_HASH for alg in SIG_SCHEMES}
_SCHEME_DETAILS[TPM_ALG.ECDAA] = TPMS_SCHEME_ECDAA
_SCHEME_DETAILS[NULL] = TPMS_EMPTY


@dataclass(frozen=True)
class TPMT_SIG_SCHEME:
    """Part 2, 11.2.1.5: a signing scheme and its TPMU_SIG_SCHEME details (a hash;
    nothing for TPM_ALG_NULL). Build one with ``TPMT_SIG_SCHEME.of(scheme, hash)``."""

    scheme: TPMI_ALG_SIG_SCHEME
    details: Annotated[Any, Selected("scheme", _SCHEME_DETAILS)] = TPMS_EMPTY()

    @classmethod
    def of(cls, scheme: int, hash_alg: int = NULL, count: int = 0) -> TPMT_SIG_SCHEME:
        if scheme == TPM_ALG.ECDAA:
            return cls(scheme, TPMS_SCHEME_ECDAA(hash_alg, count))
        return cls(scheme, TPMS_EMPTY() if scheme == NULL else TPMS_SCHEME_HASH(hash_alg))

    @property
    def hashAlg(self) -> int:
        """The scheme's hash (TPM_ALG_NULL for the NULL scheme)."""
        return self.details.hashAlg if isinstance(self.details, TPMS_SCHEME_HASH) else NULL


NULL_SCHEME = TPMT_SIG_SCHEME(NULL)


@dataclass(frozen=True)
class TPMS_SIGNATURE_RSA:
    """Part 2, 11.3.1: RSASSA and RSAPSS signatures."""

    hash: TPMI_ALG_HASH
    sig: TPM2B_PUBLIC_KEY_RSA


@dataclass(frozen=True)
class TPMS_SIGNATURE_ECC:
    """Part 2, 11.3.2: ECDSA signatures (r, s)."""

    hash: TPMI_ALG_HASH
    signatureR: TPM2B_ECC_PARAMETER
    signatureS: TPM2B_ECC_PARAMETER


# TPMU_SIGNATURE (Part 2, 11.3.3): the member each signature algorithm selects.
_SIGNATURE_MEMBERS: dict[int, type] = {
    TPM_ALG.RSASSA: TPMS_SIGNATURE_RSA,
    TPM_ALG.RSAPSS: TPMS_SIGNATURE_RSA,
    TPM_ALG.ECDSA: TPMS_SIGNATURE_ECC,
    TPM_ALG.ECDAA: TPMS_SIGNATURE_ECC,
    TPM_ALG.ECSCHNORR: TPMS_SIGNATURE_ECC,
    TPM_ALG.HMAC: TPMT_HA,
}


@dataclass(frozen=True)
class TPMT_SIGNATURE:
    """Part 2, 11.3.4: the TPMU_SIGNATURE member is selected by ``sigAlg``. A NULL
    signature (``sigAlg`` TPM_ALG_NULL) is what an unsigned attestation carries."""

    sigAlg: TPMI_ALG_SIG_SCHEME
    signature: Annotated[Any, Selected("sigAlg", {
        **_SIGNATURE_MEMBERS, NULL: TPMS_EMPTY})] = TPMS_EMPTY()

    @property
    def hashAlg(self) -> int:
        """The hash of the signing scheme (TPM_ALG_NULL for a NULL signature)."""
        s = self.signature
        return s.hashAlg if isinstance(s, TPMT_HA) else getattr(s, "hash", NULL)


NULL_SIGNATURE = TPMT_SIGNATURE(NULL)


@dataclass(frozen=True)
class TPMT_SIGNATURE_IN(TPMT_SIGNATURE):
    """A signature a command takes in (TPM2_VerifySignature, TPM2_PolicySigned): there
    TPM_ALG_NULL is no signature at all, TPM_RC_SCHEME when it is unmarshalled, as in
    the reference (TPMT_SIGNATURE_Unmarshal with allowNull NO)."""

    sigAlg: Annotated[int, Int("H", SIG_SCHEMES, RC.SCHEME)]
    signature: Annotated[Any, Selected("sigAlg", _SIGNATURE_MEMBERS)] = TPMS_EMPTY()


# ---- which key may sign, with which scheme -------------------------------------------
def is_signing_key(obj: LoadedObject | None) -> bool:
    """Whether an object may sign at all (the reference's IsSigningObject): TPM_RH_NULL
    (None) may, for an unsigned result; otherwise the key needs ``sign`` and must not be
    a symmetric cipher. A caller that gets False answers TPM_RC_KEY on the key handle."""
    return obj is None or (obj.public.has(TPMA_OBJECT.sign)
                           and obj.public.type != TPM_ALG.SYMCIPHER)


def key_scheme(pub: TPMT_PUBLIC) -> TPMT_SIG_SCHEME:
    """The key's own signing scheme from its public area (NULL if it has none)."""
    p = pub.parameters
    if isinstance(p, TPMS_RSA_PARMS | TPMS_ECC_PARMS | TPMS_KEYEDHASH_PARMS):
        return TPMT_SIG_SCHEME.of(p.scheme.scheme, p.scheme.hashAlg, p.scheme.extra)
    return NULL_SCHEME


def select_scheme(obj: LoadedObject | None, scheme: TPMT_SIG_SCHEME) -> TPMT_SIG_SCHEME:
    """The scheme a command signs with (Part 3, 18.1 and 20.2.1; the reference's
    CryptSelectSignScheme): TPM_RH_NULL signs with NULL whatever was asked; a key with
    no scheme of its own takes the command's, which must not be NULL and must suit the
    key type (no RSASSA for an ECC key); a key with a
    scheme takes it when the command says NULL (unless it needs TPM2_Commit data) and
    otherwise demands the command name the same scheme *and* hash. A restricted key
    always has a scheme (SchemeChecks), so it can only sign its own way.

    Raises bare TPM_RC_SCHEME; the command numbers it as its inScheme parameter."""
    if obj is None:
        return NULL_SCHEME
    pub = obj.public
    if pub.type == TPM_ALG.SYMCIPHER or not pub.has(TPMA_OBJECT.sign):
        raise TpmError(RC.SCHEME, "not a signing key")
    own = key_scheme(pub)
    if own.scheme == NULL:
        if scheme.scheme == NULL:
            raise TpmError(RC.SCHEME, "neither the key nor the command names a scheme")
        if scheme.scheme not in SCHEMES_FOR_TYPE.get(pub.type, ()):
            raise TpmError(RC.SCHEME, "the command's scheme does not suit the key type")
        return scheme
    if scheme.scheme == NULL:
        if own.scheme in SPLIT_SCHEMES:
            raise TpmError(RC.SCHEME, "the key's scheme needs the caller's commit data")
        return own
    # Scheme and hash must agree; ECDAA's commit count is the caller's (CryptSelectSignScheme).
    if (scheme.scheme, scheme.hashAlg) != (own.scheme, own.hashAlg):
        raise TpmError(RC.SCHEME, "scheme or hash differs from the key's")
    return scheme


# ---- signing ---------------------------------------------------------------------------
def sign(obj: LoadedObject | None, scheme: TPMT_SIG_SCHEME, digest: bytes,
         commits: CommitState | None = None) -> TPMT_SIGNATURE:
    """Sign ``digest`` with a loaded key and an already selected scheme (the reference's
    CryptSign). No key or scheme NULL gives the NULL signature. A scheme the key type
    cannot use is TPM_RC_SCHEME; an RSA digest that is not the scheme hash's size or
    does not fit the modulus is TPM_RC_VALUE; a public-only key is TPM_RC_KEY.
    ECDAA needs the TPM's ``commits`` (TPM_RC_SCHEME without them; TPM_RC_VALUE for a
    count that names no outstanding commitment)."""
    if obj is None or scheme.scheme == NULL:
        return NULL_SIGNATURE
    pub, alg, h = obj.public, scheme.scheme, scheme.hashAlg
    if alg not in SCHEMES_FOR_TYPE.get(pub.type, ()):
        raise TpmError(RC.SCHEME, f"scheme 0x{alg:04X} for a key of type 0x{pub.type:04X}")
    if obj.sensitive is None:
        raise TpmError(RC.KEY, "a public-only key cannot sign")
    if alg == TPM_ALG.HMAC:
        return TPMT_SIGNATURE(alg, TPMT_HA(h, HASHES[h].hmac(obj.sensitive.sensitive, digest)))
    if alg in (TPM_ALG.ECDAA, TPM_ALG.ECSCHNORR):
        return _sign_schnorr_type(obj, scheme, digest, commits)
    key = private_key(pub, obj.sensitive)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert isinstance(pub.parameters, TPMS_ECC_PARMS)
        e, prehashed = _ecdsa_input(pub.parameters.curveID, digest)
        r, s = utils.decode_dss_signature(key.sign(e, ec.ECDSA(prehashed)))
        size = CURVE_BYTES[pub.parameters.curveID]
        return TPMT_SIGNATURE(alg, TPMS_SIGNATURE_ECC(h, r.to_bytes(size, "big"),
                                                      s.to_bytes(size, "big")))
    if len(digest) != HASHES[h].size:
        raise TpmError(RC.VALUE, "digest is not the size of the scheme's hash")
    try:
        sig = key.sign(digest, _rsa_padding(alg, h, key_bits=key.key_size),
                       utils.Prehashed(_HASH_CLASSES[h]()))
    except ValueError:  # the padded digest does not fit the modulus
        raise TpmError(RC.VALUE, "digest too large for the key") from None
    return TPMT_SIGNATURE(alg, TPMS_SIGNATURE_RSA(h, sig))


def verify(pub: TPMT_PUBLIC, digest: bytes, signature: TPMT_SIGNATURE,
           sensitive: TPMT_SENSITIVE | None = None) -> bool:
    """Whether ``signature`` is a good signature over ``digest`` by this key (the
    reference's CryptValidateSignature): False answers TPM_RC_SIGNATURE. A signature
    algorithm the key type cannot produce raises TPM_RC_SCHEME; an HMAC key needs its
    ``sensitive`` area (a public-only one is TPM_RC_HANDLE, as libtpms has it). An HMAC
    key with a scheme of its own accepts only signatures made with that scheme."""
    alg = signature.sigAlg
    if alg == NULL:
        return False
    if alg not in SCHEMES_FOR_TYPE.get(pub.type, ()):
        raise TpmError(RC.SCHEME, f"signature 0x{alg:04X} for a key of type 0x{pub.type:04X}")
    sig = signature.signature
    if isinstance(sig, TPMT_HA):
        if sensitive is None:
            raise TpmError(RC.HANDLE, "an HMAC key loaded without its sensitive area")
        own = key_scheme(pub)
        if own.scheme != NULL and own != TPMT_SIG_SCHEME.of(alg, sig.hashAlg):
            return False
        expect = HASHES[sig.hashAlg].hmac(sensitive.sensitive, digest)
        return equal(expect, sig.digest)
    if alg in SPLIT_SCHEMES:  # needs the commit's points: not verifiable by the TPM
        raise TpmError(RC.SCHEME, "an ECDAA signature cannot be verified by the TPM")
    if alg == TPM_ALG.ECSCHNORR:
        assert isinstance(sig, TPMS_SIGNATURE_ECC) and isinstance(pub.parameters,
                                                                  TPMS_ECC_PARMS)
        c = ec_math.curve(pub.parameters.curveID)
        q = (int.from_bytes(pub.unique.x, "big"), int.from_bytes(pub.unique.y, "big"))
        return ecdaa.verify_schnorr(c, q, sig.hash, digest, sig.signatureR, sig.signatureS)
    key = public_key(pub)
    try:
        if isinstance(sig, TPMS_SIGNATURE_ECC) and isinstance(key, ec.EllipticCurvePublicKey):
            assert isinstance(pub.parameters, TPMS_ECC_PARMS)
            e, prehashed = _ecdsa_input(pub.parameters.curveID, digest)
            der = utils.encode_dss_signature(int.from_bytes(sig.signatureR, "big"),
                                             int.from_bytes(sig.signatureS, "big"))
            key.verify(der, e, ec.ECDSA(prehashed))
            return True
        if isinstance(sig, TPMS_SIGNATURE_RSA) and isinstance(key, rsa.RSAPublicKey):
            if len(sig.sig) != key.key_size // 8 or len(digest) != HASHES[sig.hash].size:
                return False
            key.verify(sig.sig, digest, _rsa_padding(alg, sig.hash, verifying=True),
                       utils.Prehashed(_HASH_CLASSES[sig.hash]()))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False  # pragma: no cover - the scheme table keeps types and members together


def _sign_schnorr_type(obj: LoadedObject, scheme: TPMT_SIG_SCHEME, digest: bytes,
                       commits: CommitState | None) -> TPMT_SIGNATURE:
    """EC-Schnorr and ECDAA (keys/ecdaa.py): (r, s) or (nonceK, s) in TPMS_SIGNATURE_ECC."""
    pub = obj.public
    assert isinstance(pub.parameters, TPMS_ECC_PARMS) and obj.sensitive is not None
    c = ec_math.curve(pub.parameters.curveID)
    d = int.from_bytes(obj.sensitive.sensitive, "big")
    h = scheme.hashAlg
    if scheme.scheme == TPM_ALG.ECSCHNORR:
        r, s = ecdaa.sign_schnorr(c, d, h, digest)
    else:
        if commits is None:
            raise TpmError(RC.SCHEME, "ECDAA signing is not available to this command")
        assert isinstance(scheme.details, TPMS_SCHEME_ECDAA)
        r, s = ecdaa.sign_ecdaa(c, d, h, digest, scheme.details.count, obj.name, commits)
    return TPMT_SIGNATURE(scheme.scheme, TPMS_SIGNATURE_ECC(h, r, s))


# ---- TPM2_Sign's digest rule for restricted keys (Part 3, 20.2.1) ----------------------
def hashcheck_digest(proof: bytes, hash_alg: int, digest: bytes) -> bytes:
    """The HMAC of a TPMT_TK_HASHCHECK (Part 2, 10.7.6; Part 3, 15.4): see
    ``crypto.hashcheck_hmac``."""
    return hashcheck_hmac(proof, hash_alg, digest)


def check_sign_digest(obj: LoadedObject, scheme: TPMT_SIG_SCHEME, digest: bytes,
                      validation: TPMT_TK_HASHCHECK, proof: bytes) -> None:
    """What TPM2_Sign demands of its digest: a restricted key signs only digests the
    TPM made itself, proven by a hashcheck ticket (so it cannot be made to sign
    something that looks like a TPMS_ATTEST); a ticket given to any key must be good;
    without one, the digest must at least be the scheme hash's size. ``proof`` is the
    hierarchy proof of ``validation.hierarchy``.

    Raises codes numbered as TPM2_Sign's parameters: TPM_RC_TICKET on validation (3),
    TPM_RC_SIZE on digest (1)."""
    h = scheme.hashAlg  # a selected scheme for a key always has a hash
    if validation.digest or obj.public.has(TPMA_OBJECT.restricted):
        if not equal(hashcheck_digest(proof, h, digest), validation.digest):
            raise TpmError(with_parameter(RC.TICKET, 3), "hashcheck ticket does not match")
    elif len(digest) != HASHES[h].size:
        raise TpmError(with_parameter(RC.SIZE, 1), "digest is not the scheme hash's size")


# ---- helpers -----------------------------------------------------------------------------
_HASH_CLASSES: dict[int, type[hashes.HashAlgorithm]] = {
    TPM_ALG.SHA1: hashes.SHA1,
    TPM_ALG.SHA256: hashes.SHA256,
    TPM_ALG.SHA384: hashes.SHA384,
    TPM_ALG.SHA512: hashes.SHA512,
}
# ECDSA takes the leftmost bits of the digest, up to the order's length (SEC 1, 4.1.3):
# a digest is cut or zero-extended on the left to this many octets, then handed over
# as a prehashed value of a hash with that size. P-521 takes at most 64 octets, which
# keeps every digest we have whole.
_ECDSA_INPUT: dict[int, tuple[int, type[hashes.HashAlgorithm]]] = {
    32: (32, hashes.SHA256), 48: (48, hashes.SHA384), 66: (64, hashes.SHA512),
}


def _ecdsa_input(curve: int, digest: bytes) -> tuple[bytes, utils.Prehashed]:
    size, cls = _ECDSA_INPUT[CURVE_BYTES[curve]]
    e = digest[:size].rjust(size, b"\x00")
    return e, utils.Prehashed(cls())


def _rsa_padding(alg: int, h: int, verifying: bool = False,
                 key_bits: int = 0) -> padding.AsymmetricPadding:
    """PKCS#1 v1.5, or PSS with MGF1 of the scheme hash and a salt as long as the digest
    (Part 1, B.7); a verifier accepts any salt length, as libtpms does. When the digest
    leaves less room than that in the encoded message (SHA-512 with RSA-1024: 128 octets
    hold 64 of digest and 2 of framing), the salt is the largest that fits, as in the
    reference's PssEncode."""
    if alg == TPM_ALG.RSASSA:
        return padding.PKCS1v15()
    room = (key_bits - 1 + 7) // 8 - HASHES[h].size - 2  # emLen - hLen - 2 (RFC 8017, 9.1.1)
    if verifying:
        salt: Any = padding.PSS.AUTO
    elif room < HASHES[h].size:
        salt = padding.PSS.MAX_LENGTH
    else:
        salt = padding.PSS.DIGEST_LENGTH
    return padding.PSS(mgf=padding.MGF1(_HASH_CLASSES[h]()), salt_length=salt)


# TPM_CAP_ALGS entries for the schemes implemented here (TPMA_ALGORITHM as libtpms:
# HMAC is hash|signing, the others asymmetric|signing).
SIGNING_ALGORITHMS: tuple[tuple[int, int], ...] = (
    (TPM_ALG.HMAC, 0x104),
    (TPM_ALG.RSASSA, 0x101),
    (TPM_ALG.RSAPSS, 0x101),
    (TPM_ALG.ECDSA, 0x101),
    (TPM_ALG.ECDAA, 0x101),
    (TPM_ALG.ECSCHNORR, 0x101),
)
