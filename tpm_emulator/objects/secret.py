"""Secret sharing with an asymmetric key (Part 1, Annex B.10.3 and C.6.1).

Salted sessions ("SECRET"), credential activation ("IDENTITY") and duplication
("DUPLICATE") all hand the TPM a seed encrypted to one of its keys: RSA keys receive it
OAEP-encrypted with the label as OAEP label and the key's nameAlg as hash; ECC keys
receive an ephemeral public point, and both sides derive the seed with KDFe from the
shared x coordinate. ``decrypt_secret`` is the TPM's side, ``make_secret`` the
caller's (TPM2_MakeCredential and outer-wrapped duplication need it).
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..codec import Reader, marshal, unmarshal_from
from ..constants import RC
from ..crypto import kdfe
from ..errors import TpmError
from .derive import CURVES
from .keys import private_key, public_key
from .public import CURVE_BYTES, TPMS_ECC_PARMS, TPMS_ECC_POINT, TPMT_PUBLIC, TPMT_SENSITIVE

SECRET = b"SECRET"
IDENTITY = b"IDENTITY"
DUPLICATE = b"DUPLICATE"

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _oaep(pub: TPMT_PUBLIC, label: bytes) -> padding.OAEP:
    algorithm = _HASHES[pub.name_hash.name]()
    return padding.OAEP(padding.MGF1(algorithm), algorithm, label + b"\x00")


def _ecc_seed(pub: TPMT_PUBLIC, label: bytes, z: int, ephemeral: TPMS_ECC_POINT) -> bytes:
    assert isinstance(pub.parameters, TPMS_ECC_PARMS)
    size = CURVE_BYTES[pub.parameters.curveID]
    h = pub.name_hash
    return kdfe(h, z.to_bytes(size, "big"), label, ephemeral.x, pub.unique.x, h.size * 8)


def _shared_x(private: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey) -> int:
    return int.from_bytes(private.exchange(ec.ECDH(), peer), "big")


def decrypt_secret(pub: TPMT_PUBLIC, sens: TPMT_SENSITIVE, label: bytes,
                   encrypted: bytes) -> bytes:
    """The seed a caller encrypted to this key. TPM_RC_SIZE if an RSA secret is not the
    size of the modulus, TPM_RC_FAILURE (as libtpms) if OAEP decryption fails,
    TPM_RC_VALUE if the seed is longer than a nameAlg digest; the unmarshal code of a
    malformed ECC point, TPM_RC_ECC_POINT for a point that is not on the key's curve;
    TPM_RC_KEY for a key that cannot share secrets."""
    key = private_key(pub, sens)
    if isinstance(key, rsa.RSAPrivateKey):
        if len(encrypted) != key.key_size // 8:  # reference CryptRsaDecrypt
            raise TpmError(RC.SIZE, "secret is not the size of the modulus")
        try:
            seed = key.decrypt(encrypted, _oaep(pub, label))
        except ValueError:
            # libtpms (its OpenSSL CryptRsaDecrypt) answers a padding failure with a bare
            # TPM_RC_FAILURE, without entering failure mode; the spec says TPM_RC_VALUE.
            raise TpmError(RC.FAILURE, "OAEP decryption of the secret failed") from None
        if len(seed) > pub.name_hash.size:
            raise TpmError(RC.VALUE, "secret longer than a nameAlg digest")
        return seed
    assert isinstance(pub.parameters, TPMS_ECC_PARMS)
    # As the reference's CryptSecretDecrypt: the point's own unmarshal code
    # (TPM_RC_INSUFFICIENT, TPM_RC_SIZE) comes back, and octets after it are ignored.
    point = unmarshal_from(TPMS_ECC_POINT, Reader(encrypted))
    curve = CURVES[pub.parameters.curveID]
    try:
        peer = ec.EllipticCurvePublicNumbers(
            int.from_bytes(point.x, "big"), int.from_bytes(point.y, "big"), curve).public_key()
    except ValueError:
        raise TpmError(RC.ECC_POINT, "ephemeral point is not on the curve") from None
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return _ecc_seed(pub, label, _shared_x(key, peer), point)


def make_secret(pub: TPMT_PUBLIC, label: bytes) -> tuple[bytes, bytes]:
    """A fresh seed and its encryption to ``pub``: (seed, encrypted secret)."""
    key = public_key(pub)
    if isinstance(key, rsa.RSAPublicKey):
        seed = os.urandom(pub.name_hash.size)
        return seed, key.encrypt(seed, _oaep(pub, label))
    assert isinstance(pub.parameters, TPMS_ECC_PARMS)
    size = CURVE_BYTES[pub.parameters.curveID]
    ephemeral = ec.generate_private_key(CURVES[pub.parameters.curveID])
    numbers = ephemeral.public_key().public_numbers()
    point = TPMS_ECC_POINT(numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big"))
    seed = _ecc_seed(pub, label, _shared_x(ephemeral, key), point)
    return seed, marshal(point)
