"""The full ECDH point Z = d·Q for TPM2_ECDH_ZGen and TPM2_ECDH_KeyGen (Part 3, 14.4-14.5;
Part 1, C.6.2), which return both coordinates.

``cryptography`` computes d·Q in constant time but returns only its x coordinate. The
y coordinate is one of the two square roots of x³ - 3x + b; which one is settled by a
second exchange with the public point Q + G: d·(Q + G) = Z + d·G = Z + P, where P is
the key's own public point, so only the candidate Z for which Z + P has the x the
exchange gave is right. All the arithmetic done here in Python is on public values.
"""

from __future__ import annotations

from functools import cache

from cryptography.hazmat.primitives.asymmetric import ec

from ..constants import RC
from ..errors import TpmError
from ..objects.derive import CURVES
from ..objects.public import ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521

Point = tuple[int, int] | None  # None: the point at infinity

# Field primes of the NIST curves (FIPS 186-4, D.1.2); each is 3 mod 4, so a square
# root is a single exponentiation.
PRIMES: dict[int, int] = {
    ECC_NIST_P256: 2**256 - 2**224 + 2**192 + 2**96 - 1,
    ECC_NIST_P384: 2**384 - 2**128 - 2**96 + 2**32 - 1,
    ECC_NIST_P521: 2**521 - 1,
}
TPM_RC_NO_RESULT = RC.NO_RESULT


@cache
def _generator(curve: int) -> tuple[int, int]:
    n = ec.derive_private_key(1, CURVES[curve]).public_key().public_numbers()
    return n.x, n.y


@cache
def _b(curve: int) -> int:
    p = PRIMES[curve]
    gx, gy = _generator(curve)
    return (gy * gy - gx**3 + 3 * gx) % p


def _add(curve: int, a: Point, b: Point) -> Point:
    """Affine point addition on y² = x³ - 3x + b (public values only)."""
    if a is None:
        return b
    if b is None:
        return a
    p = PRIMES[curve]
    (x1, y1), (x2, y2) = a, b
    if x1 == x2:
        if (y1 + y2) % p == 0:
            return None
        slope = (3 * x1 * x1 - 3) * pow(2 * y1, -1, p) % p
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, p) % p
    x3 = (slope * slope - x1 - x2) % p
    return x3, (slope * (x1 - x3) - y1) % p


def _exchange(private: ec.EllipticCurvePrivateKey, point: tuple[int, int], curve: int) -> int:
    peer = ec.EllipticCurvePublicNumbers(point[0], point[1], CURVES[curve]).public_key()
    try:
        return int.from_bytes(private.exchange(ec.ECDH(), peer), "big")
    except ValueError:  # the product is the point at infinity
        raise TpmError(TPM_RC_NO_RESULT, "ECDH produced the point at infinity") from None


def on_curve(curve: int, x: int, y: int) -> bool:
    try:
        ec.EllipticCurvePublicNumbers(x, y, CURVES[curve]).public_key()
    except ValueError:
        return False
    return True


def multiply(private: ec.EllipticCurvePrivateKey, curve: int,
             q: tuple[int, int]) -> tuple[int, int]:
    """Z = d·Q for the private key d. TPM_RC_ECC_POINT if Q is not on the curve;
    TPM_RC_NO_RESULT if Z is the point at infinity."""
    if not on_curve(curve, *q):
        raise TpmError(RC.ECC_POINT, "point is not on the curve")
    p = PRIMES[curve]
    pub = private.public_key().public_numbers()
    own = (pub.x, pub.y)
    x = _exchange(private, q, curve)
    y = pow((x**3 - 3 * x + _b(curve)) % p, (p + 1) // 4, p)
    shifted = _add(curve, q, _generator(curve))
    if shifted is None:  # Q = -G, so Z = -P
        return own[0], (-own[1]) % p
    x_shifted = _exchange(private, shifted, curve)
    for candidate in ((x, y), (x, (-y) % p)):
        total = _add(curve, candidate, own)
        if total is not None and total[0] == x_shifted:
            return candidate
    raise TpmError(RC.FAILURE, "no square root matched")  # pragma: no cover
