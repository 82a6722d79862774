"""Key objects for the ``cryptography`` package, built from TPM public/sensitive areas.

Our sensitive areas keep what Part 2 keeps (an RSA key's first prime, an ECC key's
private scalar); every asymmetric operation — signing, decryption, ECDH, salts,
credential and duplication secrets — goes through these two functions so the
conversion lives in one place.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..constants import RC
from ..errors import TpmError
from .derive import CURVES
from .public import TPMS_ECC_PARMS, TPMS_RSA_PARMS, TPMT_PUBLIC, TPMT_SENSITIVE

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def rsa_exponent(parms: TPMS_RSA_PARMS) -> int:
    """Part 2, 12.2.3.5: an exponent of zero means 2^16 + 1."""
    return parms.exponent or 65537


def public_key(pub: TPMT_PUBLIC) -> PublicKey:
    """The public key of an RSA or ECC object; TPM_RC_KEY if ``unique`` is not one."""
    p = pub.parameters
    try:
        if isinstance(p, TPMS_RSA_PARMS):
            n = int.from_bytes(pub.unique.buffer, "big")
            return rsa.RSAPublicNumbers(rsa_exponent(p), n).public_key()
        if isinstance(p, TPMS_ECC_PARMS):
            x = int.from_bytes(pub.unique.x, "big")
            y = int.from_bytes(pub.unique.y, "big")
            return ec.EllipticCurvePublicNumbers(x, y, CURVES[p.curveID]).public_key()
    except (ValueError, KeyError):
        raise TpmError(RC.KEY, "public key is not valid") from None
    raise TpmError(RC.KEY, "not an asymmetric key")


def private_key(pub: TPMT_PUBLIC, sens: TPMT_SENSITIVE) -> PrivateKey:
    """The private key of a loaded RSA or ECC object (its sensitive area is trusted:
    Load already checked that it matches the public area)."""
    p = pub.parameters
    if isinstance(p, TPMS_RSA_PARMS):
        e = rsa_exponent(p)
        n = int.from_bytes(pub.unique.buffer, "big")
        prime = int.from_bytes(sens.sensitive, "big")
        q = n // prime
        d = pow(e, -1, (prime - 1) * (q - 1))
        numbers = rsa.RSAPrivateNumbers(
            prime, q, d, rsa.rsa_crt_dmp1(d, prime), rsa.rsa_crt_dmq1(d, q),
            rsa.rsa_crt_iqmp(prime, q), rsa.RSAPublicNumbers(e, n))
        return numbers.private_key(unsafe_skip_rsa_key_validation=True)
    if isinstance(p, TPMS_ECC_PARMS):
        return ec.derive_private_key(int.from_bytes(sens.sensitive, "big"), CURVES[p.curveID])
    raise TpmError(RC.KEY, "not an asymmetric key")
