"""The signing primitive (tpm_emulator/keys/signing.py) on its own: signatures checked
by ``cryptography`` directly, the wire forms checked against tpm2-pytss, and the scheme
selection rules of Part 3, 20.2 as a table."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from tpm2_pytss import TPMT_SIG_SCHEME as PyScheme
from tpm2_pytss import TPMT_SIGNATURE as PySignature

from tpm_emulator.codec import marshal, unmarshal
from tpm_emulator.constants import RC, TPM_ALG
from tpm_emulator.errors import TpmError
from tpm_emulator.keys.signing import (
    NULL_SCHEME,
    TPMT_SIG_SCHEME,
    TPMT_SIGNATURE,
    select_scheme,
    sign,
    verify,
)
from tpm_emulator.objects.derive import generate, random_rng
from tpm_emulator.objects.keys import public_key
from tpm_emulator.objects.public import (
    ECC_NIST_P256,
    ECC_NIST_P384,
    ECC_NIST_P521,
    TPMA_OBJECT,
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMS_KEYEDHASH_PARMS,
    TPMS_RSA_PARMS,
    TPMS_SENSITIVE_CREATE,
    TPMT_PUBLIC,
    Scheme,
    SymDef,
    UniqueBytes,
)
from tpm_emulator.objects.store import LoadedObject

A = TPMA_OBJECT
SIGN = A.sign | A.userWithAuth | A.sensitiveDataOrigin
SHA1, SHA256, SHA384, SHA512 = TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512
ECDSA, RSASSA, RSAPSS, HMAC = TPM_ALG.ECDSA, TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.HMAC
CRYPTO_HASH: dict[int, Any] = {SHA1: hashes.SHA1, SHA256: hashes.SHA256, SHA384: hashes.SHA384,
                               SHA512: hashes.SHA512}


NO_SCHEME = Scheme()


def key(kind: str, own: Scheme = NO_SCHEME, attrs: int = SIGN, curve: int = ECC_NIST_P256
        ) -> LoadedObject:
    if kind == "ecc":
        pub = TPMT_PUBLIC(TPM_ALG.ECC, SHA256, attrs, b"",
                          TPMS_ECC_PARMS(SymDef(), own, curve, Scheme()),
                          TPMS_ECC_POINT(b"", b""))
    elif kind == "rsa":
        pub = TPMT_PUBLIC(TPM_ALG.RSA, SHA256, attrs, b"", TPMS_RSA_PARMS(SymDef(), own, 2048, 0),
                          UniqueBytes(b""))
    else:
        pub = TPMT_PUBLIC(TPM_ALG.KEYEDHASH, SHA256, attrs, b"", TPMS_KEYEDHASH_PARMS(own),
                          UniqueBytes(b""))
    made = generate(pub, TPMS_SENSITIVE_CREATE(b"", b""), random_rng())
    return LoadedObject(made.public, made.sensitive, 0x40000001, b"")


@pytest.fixture(scope="module")
def rsa_key() -> LoadedObject:
    return key("rsa")


@pytest.mark.parametrize("curve", [ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521])
@pytest.mark.parametrize("h", [SHA1, SHA256, SHA384, SHA512])
def test_ecdsa_any_curve_any_hash_verifies_with_cryptography(curve: int, h: int) -> None:
    k = key("ecc", curve=curve)
    digest = hashlib.new(CRYPTO_HASH[h].name, os.urandom(9)).digest()
    sig = sign(k, TPMT_SIG_SCHEME.of(ECDSA, h), digest)
    pub = public_key(k.public)
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(sig.signature.signatureR, "big"),
                               int.from_bytes(sig.signature.signatureS, "big"))
    # cryptography applies the standard's leftmost-bits rule for digest and curve itself.
    pub.verify(der, digest, ec.ECDSA(Prehashed(CRYPTO_HASH[h]())))
    assert verify(k.public, digest, sig)
    assert not verify(k.public, bytes(len(digest)), sig)


@pytest.mark.parametrize("alg", [RSASSA, RSAPSS])
@pytest.mark.parametrize("h", [SHA1, SHA256, SHA384, SHA512])
def test_rsa_signatures_verify_with_cryptography(rsa_key: LoadedObject, alg: int, h: int) -> None:
    digest = os.urandom(CRYPTO_HASH[h].digest_size)
    sig = sign(rsa_key, TPMT_SIG_SCHEME.of(alg, h), digest)
    pad = padding.PKCS1v15() if alg == RSASSA else padding.PSS(
        padding.MGF1(CRYPTO_HASH[h]()), CRYPTO_HASH[h].digest_size)  # salt = digest size
    pub = public_key(rsa_key.public)
    assert isinstance(pub, rsa.RSAPublicKey)
    pub.verify(sig.signature.sig, digest, pad, Prehashed(CRYPTO_HASH[h]()))
    assert verify(rsa_key.public, digest, sig)
    with pytest.raises(TpmError) as err:  # the digest must be the scheme hash's size
        sign(rsa_key, TPMT_SIG_SCHEME.of(alg, h), digest + b"\x00")
    assert err.value.rc == RC.VALUE


def test_hmac_signature_and_its_verification() -> None:
    k = key("keyedhash", Scheme(HMAC, SHA384))
    assert k.sensitive is not None
    sig = sign(k, select_scheme(k, NULL_SCHEME), b"any length at all")
    assert sig.signature.digest == hmac.new(k.sensitive.sensitive, b"any length at all",
                                            "sha384").digest()
    assert verify(k.public, b"any length at all", sig, k.sensitive)
    with pytest.raises(TpmError) as err:  # no sensitive area: libtpms says TPM_RC_HANDLE
        verify(k.public, b"x", sig)
    assert err.value.rc == RC.HANDLE


def test_signatures_match_tpm2_pytss_wire_forms(rsa_key: LoadedObject) -> None:
    cases = [sign(rsa_key, TPMT_SIG_SCHEME.of(RSAPSS, SHA256), bytes(32)),
             sign(key("ecc"), TPMT_SIG_SCHEME.of(ECDSA, SHA1), bytes(20)),
             sign(key("keyedhash", Scheme(HMAC, SHA256)), TPMT_SIG_SCHEME.of(HMAC, SHA256), b""),
             TPMT_SIGNATURE(TPM_ALG.NULL)]
    for s in cases:
        wire = marshal(s)
        theirs, used = PySignature.unmarshal(wire)
        assert used == len(wire) and bytes(theirs.marshal()) == wire
        assert unmarshal(TPMT_SIGNATURE, wire) == s
    for scheme in (NULL_SCHEME, TPMT_SIG_SCHEME.of(ECDSA, SHA384)):
        assert bytes(PyScheme.unmarshal(marshal(scheme))[0].marshal()) == marshal(scheme)


@pytest.mark.parametrize("raw,code", [
    ("001b000b", RC.SCHEME),  # SM2: not implemented (ECDAA and EC-Schnorr are)
    ("001a00990000", RC.HASH),  # ECDAA's hash is checked before its count
    ("00230000", RC.SCHEME),  # not a signing scheme at all
    ("00180099", RC.HASH),
    ("00180010", RC.HASH),  # a scheme's hash cannot be NULL
])
def test_unimplemented_schemes_are_refused_on_the_wire(raw: str, code: int) -> None:
    with pytest.raises(TpmError) as err:
        unmarshal(TPMT_SIG_SCHEME, bytes.fromhex(raw))
    assert err.value.rc == code


OWN_ECDSA = Scheme(ECDSA, SHA256)
SELECTION = [  # key kind, key's scheme, command's scheme -> chosen scheme or error
    ("ecc", OWN_ECDSA, NULL_SCHEME, TPMT_SIG_SCHEME.of(ECDSA, SHA256)),
    ("ecc", OWN_ECDSA, TPMT_SIG_SCHEME.of(ECDSA, SHA256), TPMT_SIG_SCHEME.of(ECDSA, SHA256)),
    ("ecc", OWN_ECDSA, TPMT_SIG_SCHEME.of(ECDSA, SHA384), RC.SCHEME),  # hash differs
    ("ecc", Scheme(), NULL_SCHEME, RC.SCHEME),  # neither names one
    ("ecc", Scheme(), TPMT_SIG_SCHEME.of(ECDSA, SHA1), TPMT_SIG_SCHEME.of(ECDSA, SHA1)),
    ("ecc", Scheme(TPM_ALG.ECDAA, SHA256, 1), NULL_SCHEME, RC.SCHEME),  # needs Commit
    ("rsa", Scheme(RSASSA, SHA256), TPMT_SIG_SCHEME.of(RSAPSS, SHA256), RC.SCHEME),
]


@pytest.mark.parametrize("kind,own,asked,expect", SELECTION)
def test_scheme_selection(kind: str, own: Scheme, asked: TPMT_SIG_SCHEME, expect: Any) -> None:
    k = key(kind, own) if kind == "ecc" else _rsa_with(own)
    if isinstance(expect, TPMT_SIG_SCHEME):
        assert select_scheme(k, asked) == expect
    else:
        with pytest.raises(TpmError) as err:
            select_scheme(k, asked)
        assert err.value.rc == expect
    assert select_scheme(None, asked) == NULL_SCHEME  # TPM_RH_NULL: always unsigned


def _rsa_with(own: Scheme) -> LoadedObject:
    base = key("ecc")  # an RSA public area with the scheme; only its parameters matter
    pub = TPMT_PUBLIC(TPM_ALG.RSA, SHA256, SIGN, b"", TPMS_RSA_PARMS(SymDef(), own, 2048, 0),
                      UniqueBytes(b""))
    return LoadedObject(pub, base.sensitive, 0x40000001, b"")


def test_a_scheme_for_another_key_type_is_refused_when_signing(rsa_key: LoadedObject) -> None:
    with pytest.raises(TpmError) as err:
        sign(rsa_key, TPMT_SIG_SCHEME.of(ECDSA, SHA256), bytes(32))
    assert err.value.rc == RC.SCHEME
    with pytest.raises(TpmError) as err:
        verify(key("ecc").public, bytes(32), sign(rsa_key, TPMT_SIG_SCHEME.of(RSASSA, SHA256),
                                                  bytes(32)))
    assert err.value.rc == RC.SCHEME
