"""Elliptic-curve arithmetic on arbitrary points of the NIST prime curves, for the
commands that need more than ``cryptography`` offers (it gives ECDH x coordinates and
signatures, never a point sum): TPM2_Commit, TPM2_ZGen_2Phase, TPM2_EC_Ephemeral and
EC-Schnorr / ECDAA (Part 1, Annex C; Part 3, 14.7 and 19.2-19.3).

Curves are y² = x³ + ax + b over GF(p) with a = -3 (FIPS 186-4, D.1.2; the values are
the TPMS_ALGORITHM_DETAIL_ECC that TPM2_ECC_Parameters reports). Points are affine
``(x, y)`` tuples, None being the point at infinity; the working form inside a
multiplication is Jacobian (X, Y, Z), which needs one inversion per product.

Timing: Python integers do not run in constant time, so this module is for *public*
scalars (verifying a signature). A product with a secret scalar — a private key, the
commit value r — goes through ``secret_multiply``, which hands the scalar to OpenSSL
(constant time there) and only recovers the y coordinate here, from public values.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives.asymmetric import ec

from ..constants import RC
from ..errors import TpmError
from ..objects.public import ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, TPMS_ECC_POINT
from . import ecc

Point = tuple[int, int] | None  # None: the point at infinity
_Jacobian = tuple[int, int, int]  # Z == 0: the point at infinity


@dataclass(frozen=True)
class Curve:
    """The domain parameters of a prime curve (TPMS_ALGORITHM_DETAIL_ECC, Part 2,
    11.2.5.7, without the kdf and sign schemes)."""

    curve_id: int
    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int
    h: int

    @property
    def size(self) -> int:
        """Octets of a coordinate (the size of p)."""
        return (self.p.bit_length() + 7) // 8

    @property
    def g(self) -> tuple[int, int]:
        return self.gx, self.gy


def _hex(s: str) -> int:
    return int(s.replace(" ", ""), 16)


CURVES: dict[int, Curve] = {
    ECC_NIST_P256: Curve(
        ECC_NIST_P256,
        p=2**256 - 2**224 + 2**192 + 2**96 - 1,
        a=2**256 - 2**224 + 2**192 + 2**96 - 4,
        b=_hex("5ac635d8 aa3a93e7 b3ebbd55 769886bc 651d06b0 cc53b0f6 3bce3c3e 27d2604b"),
        gx=_hex("6b17d1f2 e12c4247 f8bce6e5 63a440f2 77037d81 2deb33a0 f4a13945 d898c296"),
        gy=_hex("4fe342e2 fe1a7f9b 8ee7eb4a 7c0f9e16 2bce3357 6b315ece cbb64068 37bf51f5"),
        n=_hex("ffffffff 00000000 ffffffff ffffffff bce6faad a7179e84 f3b9cac2 fc632551"),
        h=1,
    ),
    ECC_NIST_P384: Curve(
        ECC_NIST_P384,
        p=2**384 - 2**128 - 2**96 + 2**32 - 1,
        a=2**384 - 2**128 - 2**96 + 2**32 - 4,
        b=_hex("b3312fa7 e23ee7e4 988e056b e3f82d19 181d9c6e fe814112 0314088f 5013875a"
               "c656398d 8a2ed19d 2a85c8ed d3ec2aef"),
        gx=_hex("aa87ca22 be8b0537 8eb1c71e f320ad74 6e1d3b62 8ba79b98 59f741e0 82542a38"
                "5502f25d bf55296c 3a545e38 72760ab7"),
        gy=_hex("3617de4a 96262c6f 5d9e98bf 9292dc29 f8f41dbd 289a147c e9da3113 b5f0b8c0"
                "0a60b1ce 1d7e819d 7a431d7c 90ea0e5f"),
        n=_hex("ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff c7634d81 f4372ddf"
               "581a0db2 48b0a77a ecec196a ccc52973"),
        h=1,
    ),
    ECC_NIST_P521: Curve(
        ECC_NIST_P521,
        p=2**521 - 1,
        a=2**521 - 4,
        b=_hex("0051 953eb961 8e1c9a1f 929a21a0 b68540ee a2da725b 99b315f3 b8b48991"
               "8ef109e1 56193951 ec7e937b 1652c0bd 3bb1bf07 3573df88 3d2c34f1 ef451fd4"
               "6b503f00"),
        gx=_hex("00c6 858e06b7 0404e9cd 9e3ecb66 2395b442 9c648139 053fb521 f828af60"
                "6b4d3dba a14b5e77 efe75928 fe1dc127 a2ffa8de 3348b3c1 856a429b f97e7e31"
                "c2e5bd66"),
        gy=_hex("0118 39296a78 9a3bc004 5c8a5fb4 2c7d1bd9 98f54449 579b4468 17afbd17"
                "273e662c 97ee7299 5ef42640 c550b901 3fad0761 353c7086 a272c240 88be9476"
                "9fd16650"),
        n=_hex("01ff ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff"
               "fffffffa 51868783 bf2f966b 7fcc0148 f709a5d0 3bb5c9b8 899c47ae bb6fb71e"
               "91386409"),
        h=1,
    ),
}


def curve(curve_id: int) -> Curve:
    return CURVES[curve_id]


# ---- points -------------------------------------------------------------------------
def on_curve(c: Curve, pt: Point) -> bool:
    """Whether a (finite) point satisfies the curve equation with coordinates below p;
    the point at infinity is not a point a caller may send."""
    if pt is None:
        return False
    x, y = pt
    if not (0 <= x < c.p and 0 <= y < c.p):
        return False
    return (y * y - (x * x * x + c.a * x + c.b)) % c.p == 0


def from_tpms(c: Curve, point: TPMS_ECC_POINT) -> tuple[int, int]:
    """A TPMS_ECC_POINT as integers, or TPM_RC_ECC_POINT (bare) if it is not on the
    curve (an empty point reads as (0, 0), which never is)."""
    pt = (int.from_bytes(point.x, "big"), int.from_bytes(point.y, "big"))
    if not on_curve(c, pt):
        raise TpmError(RC.ECC_POINT, "point is not on the curve")
    return pt


def to_tpms(c: Curve, pt: tuple[int, int]) -> TPMS_ECC_POINT:
    """A point with both coordinates padded to the size of p, as the reference writes
    them (BnPointTo2B)."""
    return TPMS_ECC_POINT(pt[0].to_bytes(c.size, "big"), pt[1].to_bytes(c.size, "big"))


def negate(c: Curve, pt: Point) -> Point:
    return None if pt is None else (pt[0], (-pt[1]) % c.p)


def _to_jacobian(pt: Point) -> _Jacobian:
    return (1, 1, 0) if pt is None else (pt[0], pt[1], 1)


def _to_affine(c: Curve, j: _Jacobian) -> Point:
    x, y, z = j
    if z % c.p == 0:
        return None
    zi = pow(z, -1, c.p)
    zi2 = zi * zi % c.p
    return x * zi2 % c.p, y * zi2 * zi % c.p


def _double(c: Curve, j: _Jacobian) -> _Jacobian:
    """2P in Jacobian form, using a = -3: M = 3(X - Z²)(X + Z²)."""
    x, y, z = j
    p = c.p
    if z == 0 or y == 0:
        return 1, 1, 0
    zz = z * z % p
    m = 3 * (x - zz) * (x + zz) % p
    yy = y * y % p
    s = 4 * x * yy % p
    x3 = (m * m - 2 * s) % p
    y3 = (m * (s - x3) - 8 * yy * yy) % p
    z3 = 2 * y * z % p
    return x3, y3, z3


def _add(c: Curve, j1: _Jacobian, j2: _Jacobian) -> _Jacobian:
    """P + Q in Jacobian form (the doubling and inverse cases handled)."""
    p = c.p
    x1, y1, z1 = j1
    x2, y2, z2 = j2
    if z1 == 0:
        return j2
    if z2 == 0:
        return j1
    z1z1, z2z2 = z1 * z1 % p, z2 * z2 % p
    u1, u2 = x1 * z2z2 % p, x2 * z1z1 % p
    s1, s2 = y1 * z2 * z2z2 % p, y2 * z1 * z1z1 % p
    if u1 == u2:
        return _double(c, j1) if s1 == s2 else (1, 1, 0)
    h = (u2 - u1) % p
    r = (s2 - s1) % p
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    y3 = (r * (v - x3) - s1 * hhh) % p
    z3 = h * z1 * z2 % p
    return x3, y3, z3


def add(c: Curve, a: Point, b: Point) -> Point:
    return _to_affine(c, _add(c, _to_jacobian(a), _to_jacobian(b)))


def multiply(c: Curve, k: int, pt: Point) -> Point:
    """[k]P for a *public* scalar k (left-to-right double and add; its timing depends
    on k). k is taken mod n."""
    k %= c.n
    acc: _Jacobian = (1, 1, 0)
    base = _to_jacobian(pt)
    for bit in bin(k)[2:] if k else "":
        acc = _double(c, acc)
        if bit == "1":
            acc = _add(c, acc, base)
    return _to_affine(c, acc)


def multiply_add(c: Curve, k1: int, p1: Point, k2: int, p2: Point) -> Point:
    """[k1]P1 + [k2]P2 for public scalars (signature verification)."""
    return add(c, multiply(c, k1, p1), multiply(c, k2, p2))


# ---- products with secret scalars ------------------------------------------------------
@cache
def _ec_curve(curve_id: int) -> ec.EllipticCurve:
    from ..objects.derive import CURVES as EC_CURVES

    return EC_CURVES[curve_id]


def base_multiply(c: Curve, k: int) -> tuple[int, int]:
    """[k]G for a secret 0 < k < n, computed by OpenSSL."""
    pub = ec.derive_private_key(k, _ec_curve(c.curve_id)).public_key().public_numbers()
    return pub.x, pub.y


def secret_multiply(c: Curve, k: int, pt: tuple[int, int]) -> tuple[int, int]:
    """[k]P for a secret 0 < k < n and a point on the curve: the scalar goes to OpenSSL
    as an ECDH private key (``ecc.multiply`` recovers y). TPM_RC_NO_RESULT if the
    product is the point at infinity."""
    if pt == c.g:
        return base_multiply(c, k)
    private = ec.derive_private_key(k, _ec_curve(c.curve_id))
    return ecc.multiply(private, c.curve_id, pt)
