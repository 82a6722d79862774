"""Key and crypto command bodies (Part 3, 12.5-12.6 credentials, clause 14 RSA and ECDH,
15.2-15.3 EncryptDecrypt, clause 20 Sign/VerifySignature, and TPM2_TestParms),
registered in the shared handler table; the HMAC and sequence commands (15.5, clause
17) are in ``hash_handlers``.

The checks run in the order of the reference's command actions, so that a misuse earns
the code (and the handle or parameter number) libtpms gives; where the reference passes
a helper's code through bare, so do we.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..constants import CC, RC, RH, ST, TPM_ALG
from ..errors import TpmError, with_handle, with_parameter
from ..handlers import Invocation, handles
from ..objects import store
from ..objects.derive import CURVES
from ..objects.keys import private_key, public_key
from ..objects.public import (
    CURVE_BYTES,
    TPMA_OBJECT,
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMS_RSA_PARMS,
    TPMS_SYMCIPHER_PARMS,
)
from ..objects.secret import IDENTITY, decrypt_secret, make_secret
from ..objects.store import LoadedObject
from ..policy.tickets import TPMT_TK_VERIFIED, verified_ticket
from ..structures import TPMT_TK_HASHCHECK
from . import commands as kc
from . import credential, ecc, symmetric
from .sequence import SequenceObject
from .signing import (
    check_sign_digest,
    is_signing_key,
    select_scheme,
    sign,
    verify,
)

if TYPE_CHECKING:
    from ..tpm import TPM

A = TPMA_OBJECT
NULL = TPM_ALG.NULL
_HASH_CLASSES: dict[int, type[hashes.HashAlgorithm]] = {
    TPM_ALG.SHA1: hashes.SHA1, TPM_ALG.SHA256: hashes.SHA256, TPM_ALG.SHA384: hashes.SHA384,
    TPM_ALG.SHA512: hashes.SHA512,
}


def _object(tpm: TPM, inv: Invocation, n: int = 0) -> LoadedObject:
    return store.get(tpm, inv.handles[n])


def _is_sequence(obj: LoadedObject) -> bool:
    return isinstance(obj, SequenceObject)


# ---- RSA (Part 3, 14.2-14.3) -------------------------------------------------------------
# libtpms reports every failure inside its RSA primitive (padding that does not fit or
# does not check, a value not below the modulus) as TPM_RC_FAILURE, without entering
# failure mode, where the reference code says TPM_RC_VALUE or TPM_RC_SIZE; we answer as
# libtpms does (checked by tests/emulator/test_differential_keys.py).
RSA_FAILED = RC.FAILURE


def _label_ok(label: bytes) -> bool:
    """IsLabelProperlyFormatted: an OAEP label is empty or ends in a NUL octet."""
    return not label or label[-1] == 0


def _rsa_scheme(obj: LoadedObject, scheme: kc.TPMT_RSA_DECRYPT, n: int) -> kc.TPMT_RSA_DECRYPT:
    """CryptRsaSelectScheme: the key's scheme wins when the command says NULL; a key
    without one takes the command's; otherwise both must agree, scheme and hash
    (else TPM_RC_SCHEME on inScheme, parameter ``n``)."""
    assert isinstance(obj.public.parameters, TPMS_RSA_PARMS)
    own = obj.public.parameters.scheme
    if own.scheme == NULL:
        return scheme
    if scheme.scheme == NULL:
        return kc.TPMT_RSA_DECRYPT(own.scheme, own.hashAlg)
    if own.scheme == scheme.scheme and own.hashAlg == scheme.hashAlg:
        return scheme
    raise TpmError(with_parameter(RC.SCHEME, n), "scheme differs from the key's")


def _oaep(scheme: kc.TPMT_RSA_DECRYPT, label: bytes) -> padding.OAEP:
    h = _HASH_CLASSES[scheme.hashAlg]()
    return padding.OAEP(padding.MGF1(h), h, label or None)


def _check_rsa_key(obj: LoadedObject, decrypting: bool) -> None:
    if obj.public.type != TPM_ALG.RSA:
        raise TpmError(with_handle(RC.KEY, 1), "not an RSA key")
    restricted = decrypting and obj.public.has(A.restricted)
    if restricted or not obj.public.has(A.decrypt):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "not an unrestricted decryption key")


@handles(CC.RSA_Encrypt)
def rsa_encrypt(tpm: TPM, inv: Invocation, p: kc.RSA_Encrypt_In) -> kc.RSA_Encrypt_Out:
    obj = _object(tpm, inv)
    _check_rsa_key(obj, decrypting=False)
    if not _label_ok(p.label):
        raise TpmError(with_parameter(RC.VALUE, 3), "label is not NUL-terminated")
    scheme = _rsa_scheme(obj, p.inScheme, 2)
    key = public_key(obj.public)
    assert isinstance(key, rsa.RSAPublicKey)
    size = key.key_size // 8
    try:
        if scheme.scheme == TPM_ALG.OAEP:
            return kc.RSA_Encrypt_Out(key.encrypt(p.message, _oaep(scheme, p.label)))
        if scheme.scheme == TPM_ALG.RSAES:
            return kc.RSA_Encrypt_Out(key.encrypt(p.message, padding.PKCS1v15()))
    except ValueError:  # the message does not fit the padding
        raise TpmError(RSA_FAILED, "message too long for the scheme") from None
    if scheme.scheme != NULL:
        raise TpmError(RC.SCHEME, "not an encryption scheme")
    # TPM_ALG_NULL: raw RSAEP on the message as a big-endian number (leading zero
    # octets may make it longer than the modulus; its value must still be below it).
    m = int.from_bytes(p.message, "big")
    n = key.public_numbers().n
    if len(p.message.lstrip(b"\x00")) > size:
        raise TpmError(RC.VALUE, "message longer than the modulus")
    if m >= n:
        raise TpmError(RSA_FAILED, "message not below the modulus")
    return kc.RSA_Encrypt_Out(pow(m, key.public_numbers().e, n).to_bytes(size, "big"))


@handles(CC.RSA_Decrypt)
def rsa_decrypt(tpm: TPM, inv: Invocation, p: kc.RSA_Decrypt_In) -> kc.RSA_Decrypt_Out:
    obj = _object(tpm, inv)
    _check_rsa_key(obj, decrypting=True)
    if not _label_ok(p.label):
        raise TpmError(with_parameter(RC.VALUE, 3), "label is not NUL-terminated")
    scheme = _rsa_scheme(obj, p.inScheme, 2)
    if obj.sensitive is None:
        raise TpmError(with_handle(RC.KEY, 1), "no private key loaded")
    key = private_key(obj.public, obj.sensitive)
    assert isinstance(key, rsa.RSAPrivateKey)
    size = key.key_size // 8
    numbers = key.private_numbers()
    c = int.from_bytes(p.cipherText, "big")
    if len(p.cipherText) != size:
        raise TpmError(RC.SIZE, "ciphertext is not the size of the modulus")
    if c >= numbers.public_numbers.n:
        raise TpmError(RSA_FAILED, "ciphertext not below the modulus")
    if scheme.scheme == TPM_ALG.OAEP:
        try:
            return kc.RSA_Decrypt_Out(key.decrypt(p.cipherText, _oaep(scheme, p.label)))
        except ValueError:
            raise TpmError(RSA_FAILED, "OAEP padding check failed") from None
    if scheme.scheme not in (TPM_ALG.RSAES, NULL):
        raise TpmError(RC.SCHEME, "not a decryption scheme")
    m = _rsadp(numbers, c).to_bytes(size, "big")
    if scheme.scheme == TPM_ALG.RSAES:
        return kc.RSA_Decrypt_Out(_pkcs1_v15_decode(m))
    return kc.RSA_Decrypt_Out(m)


def _rsadp(numbers: rsa.RSAPrivateNumbers, c: int) -> int:
    """RSADP (RFC 8017, 5.1.2) with blinding: Python's modular exponentiation takes time
    that depends on its operands, so the private exponent is applied to c·r^e for a
    fresh random r, never to the caller's value itself."""
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    while True:
        r = secrets.randbelow(n - 2) + 2
        try:
            r_inv = pow(r, -1, n)
        except ValueError:  # pragma: no cover - r shares a factor with n
            continue
        return pow(c * pow(r, e, n) % n, numbers.d, n) * r_inv % n


def _pkcs1_v15_decode(em: bytes) -> bytes:
    """RSAES-PKCS1-v1_5 decoding (RFC 8017, 7.2.2): 00 || 02 || PS (8+ non-zero octets)
    || 00 || M. Done here, not by ``cryptography``, whose implicit rejection would hand
    back a random message where a TPM reports the failure."""
    sep = em.find(b"\x00", 2)
    if em[:2] != b"\x00\x02" or sep < 10:
        raise TpmError(RSA_FAILED, "PKCS#1 v1.5 padding check failed")
    return em[sep + 1 :]


# ---- ECDH (Part 3, 14.4-14.5) ------------------------------------------------------------
def _point(curve: int, xy: tuple[int, int]) -> TPMS_ECC_POINT:
    size = CURVE_BYTES[curve]
    return TPMS_ECC_POINT(xy[0].to_bytes(size, "big"), xy[1].to_bytes(size, "big"))


@handles(CC.ECDH_KeyGen)
def ecdh_keygen(tpm: TPM, inv: Invocation, p: kc.Empty) -> kc.ECDH_KeyGen_Out:
    obj = _object(tpm, inv)
    if obj.public.type != TPM_ALG.ECC:
        raise TpmError(with_handle(RC.KEY, 1), "not an ECC key")
    assert isinstance(obj.public.parameters, TPMS_ECC_PARMS)
    curve = obj.public.parameters.curveID
    q = (int.from_bytes(obj.public.unique.x, "big"), int.from_bytes(obj.public.unique.y, "big"))
    while True:  # an ephemeral key whose product is the point at infinity is retried
        ephemeral = ec.generate_private_key(CURVES[curve])
        try:
            z = ecc.multiply(ephemeral, curve, q)
        except TpmError as e:
            if e.rc == RC.NO_RESULT:
                continue
            raise
        pub = ephemeral.public_key().public_numbers()
        return kc.ECDH_KeyGen_Out(_point(curve, z), _point(curve, (pub.x, pub.y)))


@handles(CC.ECDH_ZGen)
def ecdh_zgen(tpm: TPM, inv: Invocation, p: kc.ECDH_ZGen_In) -> kc.ECDH_ZGen_Out:
    obj = _object(tpm, inv)
    pub = obj.public
    if pub.type != TPM_ALG.ECC:
        raise TpmError(with_handle(RC.KEY, 1), "not an ECC key")
    if pub.has(A.restricted) or not pub.has(A.decrypt):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "not an unrestricted decryption key")
    assert isinstance(pub.parameters, TPMS_ECC_PARMS)
    if pub.parameters.scheme.scheme not in (TPM_ALG.ECDH, NULL):
        raise TpmError(with_handle(RC.SCHEME, 1), "the key's scheme is not ECDH")
    if obj.sensitive is None:
        raise TpmError(with_handle(RC.KEY, 1), "no private key loaded")
    key = private_key(pub, obj.sensitive)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    curve = pub.parameters.curveID
    q = (int.from_bytes(p.inPoint.x, "big"), int.from_bytes(p.inPoint.y, "big"))
    try:
        z = ecc.multiply(key, curve, q)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 1), str(e)) from None
    return kc.ECDH_ZGen_Out(_point(curve, z))


# ---- EncryptDecrypt and EncryptDecrypt2 (Part 3, 15.2 and 15.3) -------------------------
# EncryptDecryptShared numbers its codes as TPM2_EncryptDecrypt's parameters; for
# TPM2_EncryptDecrypt2 (inData first) the reference swaps them to its own order.
_ED1 = {"mode": 2, "ivIn": 3, "inData": 4}
_ED2 = {"mode": 3, "ivIn": 4, "inData": 1}


def _encrypt_decrypt(tpm: TPM, inv: Invocation, decrypt: int, mode_in: int, iv: bytes,
                     data: bytes, numbers: dict[str, int]) -> kc.EncryptDecrypt_Out:
    obj = _object(tpm, inv)
    pub = obj.public
    if pub.type != TPM_ALG.SYMCIPHER:
        raise TpmError(with_handle(RC.KEY, 1), "not a symmetric cipher key")
    allowed = pub.has(A.decrypt) if decrypt else pub.has(A.sign)
    if pub.has(A.restricted) or not allowed:
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "the key may not do this")
    assert isinstance(pub.parameters, TPMS_SYMCIPHER_PARMS)
    mode = pub.parameters.sym.mode
    if mode == NULL:
        if mode_in == NULL:
            raise TpmError(with_parameter(RC.MODE, numbers["mode"]), "no mode")
        mode = mode_in
    elif mode_in not in (NULL, mode):
        raise TpmError(with_parameter(RC.MODE, numbers["mode"]), "mode differs from the key's")
    if len(iv) != (0 if mode == TPM_ALG.ECB else symmetric.BLOCK):
        raise TpmError(with_parameter(RC.SIZE, numbers["ivIn"]), "IV size for the mode")
    if mode in (TPM_ALG.CBC, TPM_ALG.ECB) and len(data) % symmetric.BLOCK:
        raise TpmError(with_parameter(RC.SIZE, numbers["inData"]), "not whole blocks")
    if obj.sensitive is None:
        raise TpmError(with_handle(RC.KEY, 1), "no key loaded")
    out, iv_out = symmetric.crypt(obj.sensitive.sensitive, mode, iv, data, bool(decrypt))
    return kc.EncryptDecrypt_Out(out, iv_out)


@handles(CC.EncryptDecrypt)
def encrypt_decrypt(tpm: TPM, inv: Invocation,
                    p: kc.EncryptDecrypt_In) -> kc.EncryptDecrypt_Out:
    return _encrypt_decrypt(tpm, inv, p.decrypt, p.mode, p.ivIn, p.inData, _ED1)


@handles(CC.EncryptDecrypt2)
def encrypt_decrypt2(tpm: TPM, inv: Invocation,
                     p: kc.EncryptDecrypt2_In) -> kc.EncryptDecrypt_Out:
    return _encrypt_decrypt(tpm, inv, p.decrypt, p.mode, p.ivIn, p.inData, _ED2)


# ---- credentials (Part 3, 12.5-12.6) -------------------------------------------------------
def _credential_key(obj: LoadedObject, n: int) -> None:
    """An asymmetric restricted decryption key (it has the symmetric definition the
    credential is encrypted with); else TPM_RC_TYPE on handle ``n``."""
    pub = obj.public
    if (pub.type not in (TPM_ALG.RSA, TPM_ALG.ECC) or not pub.has(A.decrypt)
            or not pub.has(A.restricted)):
        raise TpmError(with_handle(RC.TYPE, n), "not a restricted decryption key")


@handles(CC.MakeCredential)
def make_credential(tpm: TPM, inv: Invocation,
                    p: kc.MakeCredential_In) -> kc.MakeCredential_Out:
    obj = _object(tpm, inv)
    _credential_key(obj, 1)
    if len(p.credential) > obj.public.name_hash.size:
        raise TpmError(with_parameter(RC.SIZE, 1), "credential larger than a nameAlg digest")
    seed, secret = make_secret(obj.public, IDENTITY)
    blob = credential.wrap(obj.public, seed, p.objectName, p.credential)
    return kc.MakeCredential_Out(blob, secret)


@handles(CC.ActivateCredential)
def activate_credential(tpm: TPM, inv: Invocation,
                        p: kc.ActivateCredential_In) -> kc.ActivateCredential_Out:
    activate = _object(tpm, inv, 0)
    obj = _object(tpm, inv, 1)
    _credential_key(obj, 2)
    if obj.sensitive is None:
        raise TpmError(with_handle(RC.TYPE, 2), "no private key loaded")
    try:
        seed = decrypt_secret(obj.public, obj.sensitive, IDENTITY, p.secret)
    except TpmError as e:
        if e.rc == RC.KEY:
            raise TpmError(RC.FAILURE, str(e)) from None
        raise TpmError(with_parameter(e.rc, 2), str(e)) from None
    try:
        cert = credential.unwrap(obj.public, seed, activate.name, p.credentialBlob)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 1), str(e)) from None
    return kc.ActivateCredential_Out(cert)


# ---- TestParms (Part 3, 10.5) --------------------------------------------------------------
@handles(CC.TestParms)
def test_parms(tpm: TPM, inv: Invocation, p: kc.TestParms_In) -> kc.Empty:
    # Every check is in unmarshalling TPMT_PUBLIC_PARMS: what parses is supported.
    return kc.Empty()


# ---- Sign and VerifySignature (Part 3, 20.1-20.2) ------------------------------------------
@handles(CC.Sign)
def sign_(tpm: TPM, inv: Invocation, p: kc.Sign_In) -> kc.Sign_Out:
    obj = _object(tpm, inv)
    if _is_sequence(obj) or not is_signing_key(obj):
        raise TpmError(with_handle(RC.KEY, 1), "not a signing key")
    try:
        scheme = select_scheme(obj, p.inScheme)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 2), str(e)) from None
    ticket = TPMT_TK_HASHCHECK(p.validation.tag, p.validation.hierarchy, p.validation.digest)
    check_sign_digest(obj, scheme, p.digest, ticket,
                      tpm.hierarchy_proof(p.validation.hierarchy))
    return kc.Sign_Out(sign(obj, scheme, p.digest, tpm.reset_data.commit))


@handles(CC.VerifySignature)
def verify_signature(tpm: TPM, inv: Invocation,
                     p: kc.VerifySignature_In) -> kc.VerifySignature_Out:
    obj = _object(tpm, inv)
    if _is_sequence(obj) or not obj.public.has(A.sign):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "not a signing key")
    if p.signature.sigAlg == NULL:  # nothing to verify: libtpms calls that a scheme error
        raise TpmError(with_parameter(RC.SCHEME, 2), "a NULL signature")
    try:
        good = verify(obj.public, p.digest, p.signature, obj.sensitive)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 2), str(e)) from None
    if not good:
        raise TpmError(with_parameter(RC.SIGNATURE, 2), "signature does not verify")
    if obj.hierarchy == RH.NULL:
        return kc.VerifySignature_Out(TPMT_TK_VERIFIED(ST.VERIFIED, RH.NULL, b""))
    digest = verified_ticket(tpm, obj.hierarchy, p.digest, obj.name)
    return kc.VerifySignature_Out(TPMT_TK_VERIFIED(ST.VERIFIED, obj.hierarchy, digest))


# The HMAC and sequence commands, and the ECC commands beyond ECDH, register from their
# own modules.
from . import ecc_handlers as _ecc_handlers  # noqa: E402, F401
from . import hash_handlers as _hash_handlers  # noqa: E402, F401
