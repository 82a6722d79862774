"""Key material for new objects: deterministic for primaries, random for children.

Part 1, 26.3 ("Primary Objects"): a primary key is a function of the hierarchy's seed
and the template, so the same template under the same seed gives the same key every
time. As in the reference, a DRBG is instantiated from KDFa(nameAlg, seed,
"Primary Object Creation", H(template), sensitive data) and drives the key generation:
ECC private keys by the extra-random-bits method (FIPS 186-4, B.4.1), RSA primes by
candidate search with Miller-Rabin, symmetric keys and obfuscation values as plain
output. The RSA search is slow in Python, so its result is cached in memory by the
DRBG seed (which already binds hierarchy seed, template and sensitive data).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from math import gcd

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..codec import marshal
from ..constants import RC, TPM_ALG
from ..crypto import HASHES, HashAlg, kdfa
from ..errors import TpmError
from .public import (
    CURVE_BYTES,
    ECC_NIST_P256,
    ECC_NIST_P384,
    ECC_NIST_P521,
    TPMA_OBJECT,
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMS_RSA_PARMS,
    TPMS_SENSITIVE_CREATE,
    TPMS_SYMCIPHER_PARMS,
    TPMT_PUBLIC,
    TPMT_SENSITIVE,
    UniqueBytes,
)

_SHA256 = HASHES[TPM_ALG.SHA256]
PRIMARY_LABEL = b"Primary Object Creation"
CURVES: dict[int, ec.EllipticCurve] = {
    ECC_NIST_P256: ec.SECP256R1(), ECC_NIST_P384: ec.SECP384R1(),
    ECC_NIST_P521: ec.SECP521R1(),
}
CURVE_ORDER = {
    ECC_NIST_P256: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ECC_NIST_P384: int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
                       "581A0DB248B0A77AECEC196ACCC52973", 16),
    ECC_NIST_P521: int("01" + "F" * 64 + "FA51868783BF2F966B7FCC0148F709A5"
                       "D03BB5C9B8899C47AEBB6FB71E91386409", 16),
}


class Rng:
    """Where a new object's secrets come from."""

    def __init__(self, source: Callable[[int], bytes]) -> None:
        self.generate = source
        self.seed_id: bytes | None = None  # set for a DRBG: keys the RSA cache
        # A DRBG's read position and a way back to one, so that a cached RSA result
        # leaves the stream where the prime search would have (what follows the primes,
        # a storage key's seedValue, must come out the same either way).
        self.position: Callable[[], int] = lambda: 0
        self.seek: Callable[[int], None] = lambda position: None


def random_rng() -> Rng:
    return Rng(os.urandom)


def primary_rng(seed: bytes, pub: TPMT_PUBLIC, data: bytes) -> Rng:
    """The DRBG for a primary object: seeded from the hierarchy seed, the template
    (with its unique field, which callers vary to get distinct keys) and the data."""
    h = pub.name_hash
    template = h.digest(marshal(pub))
    key = kdfa(h, seed, PRIMARY_LABEL, template, data, 256)
    block_size = _SHA256.size
    at = 0  # octets of the stream handed out so far
    block_index, block = -1, b""

    def generate(n: int) -> bytes:
        # The stream is HMAC(key, 1) || HMAC(key, 2) || ...; ``at`` indexes into it.
        nonlocal at, block_index, block
        out = bytearray()
        while len(out) < n:
            index, offset = divmod(at, block_size)
            if index != block_index:
                block_index, block = index, _SHA256.hmac(key, struct.pack(">I", index + 1))
            chunk = block[offset : offset + n - len(out)]
            out += chunk
            at += len(chunk)
        return bytes(out)

    def seek(position: int) -> None:
        nonlocal at
        at = position

    rng = Rng(generate)
    rng.seed_id = _SHA256.digest(key)
    rng.position = lambda: at
    rng.seek = seek
    return rng


# ---- RSA ---------------------------------------------------------------------------
_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % q for q in range(2, int(p**0.5) + 1))]
_RSA_CACHE: dict[tuple[bytes, int, int], tuple[int, int, int]] = {}  # p, q, DRBG position


def _probably_prime(n: int, rng: Rng) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    nbytes = (n.bit_length() + 7) // 8
    for _ in range(5):  # FIPS 186-4 C.3: 5 rounds for 1024-bit primes
        a = 2 + int.from_bytes(rng.generate(nbytes), "big") % (n - 3)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, e: int, rng: Rng) -> int:
    while True:
        c = int.from_bytes(rng.generate(bits // 8), "big")
        c |= (3 << (bits - 2)) | 1  # top two bits: the product has exactly 2*bits bits
        if gcd(c - 1, e) == 1 and _probably_prime(c, rng):
            return c


def rsa_primes(bits: int, e: int, rng: Rng) -> tuple[int, int]:
    if rng.seed_id is None:
        key = rsa.generate_private_key(e, bits)
        nums = key.private_numbers()
        return nums.p, nums.q
    cache_key = (rng.seed_id, bits, e)
    hit = _RSA_CACHE.get(cache_key)
    if hit is None:
        while True:
            p, q = _prime(bits // 2, e, rng), _prime(bits // 2, e, rng)
            if p != q and (p * q).bit_length() == bits:
                break
        hit = _RSA_CACHE[cache_key] = (max(p, q), min(p, q), rng.position())
    rng.seek(hit[2])
    return hit[0], hit[1]


# ---- ECC ---------------------------------------------------------------------------
def ecc_point(curve: int, d: int) -> TPMS_ECC_POINT:
    nbytes = CURVE_BYTES[curve]
    pub = ec.derive_private_key(d, CURVES[curve]).public_key().public_numbers()
    return TPMS_ECC_POINT(pub.x.to_bytes(nbytes, "big"), pub.y.to_bytes(nbytes, "big"))


def ecc_scalar(curve: int, rng: Rng) -> int:
    n = CURVE_ORDER[curve]
    c = int.from_bytes(rng.generate(CURVE_BYTES[curve] + 8), "big")
    return c % (n - 1) + 1


# ---- the object as a whole -----------------------------------------------------------
@dataclass(frozen=True)
class NewObject:
    public: TPMT_PUBLIC
    sensitive: TPMT_SENSITIVE


def _obfuscated(h: HashAlg, seed: bytes, secret: bytes) -> UniqueBytes:
    # Part 2, 12.2.3.2: unique of a symmetric object is H_nameAlg(seedValue || key).
    return UniqueBytes(h.digest(seed, secret))


def _keyed_hash_key_size(pub: TPMT_PUBLIC, data_size: int) -> int:
    """A keyedHash key is as long as a digest of its scheme's hash (HMAC or XOR; the
    nameAlg for scheme NULL); a caller's HMAC or XOR key may be no longer than that
    hash's block (longer keys are hashed down by HMAC and gain nothing), else the bare
    TPM_RC_SIZE libtpms returns (reference CryptGenerateKeyedHash)."""
    scheme = pub.parameters.scheme
    h = HASHES[scheme.hashAlg] if scheme.scheme != TPM_ALG.NULL else pub.name_hash
    keyed = pub.has(TPMA_OBJECT.sign) or pub.has(TPMA_OBJECT.decrypt)
    if data_size and keyed and data_size > hashlib.new(h.name).block_size:
        raise TpmError(RC.SIZE, "keyedHash key longer than its hash's block")
    return h.size


def generate(pub: TPMT_PUBLIC, create: TPMS_SENSITIVE_CREATE, rng: Rng) -> NewObject:
    """Fill in unique and the sensitive area of an object built from ``pub``."""
    h = pub.name_hash
    attrs = pub.objectAttributes
    parent_like = bool(attrs & TPMA_OBJECT.restricted and attrs & TPMA_OBJECT.decrypt)
    p = pub.parameters
    if isinstance(p, TPMS_RSA_PARMS):
        e = p.exponent or 65537
        if e < 65537 or e % 2 == 0:  # libtpms: bare TPM_RC_RANGE
            raise TpmError(RC.RANGE, "RSA exponent")
        pr, q = rsa_primes(p.keyBits, e, rng)
        seed = rng.generate(h.size) if parent_like else b""
        unique: object = UniqueBytes((pr * q).to_bytes(p.keyBits // 8, "big"))
        secret = pr.to_bytes(p.keyBits // 16, "big")
    elif isinstance(p, TPMS_ECC_PARMS):
        d = ecc_scalar(p.curveID, rng)
        seed = rng.generate(h.size) if parent_like else b""
        unique = ecc_point(p.curveID, d)
        secret = d.to_bytes(CURVE_BYTES[p.curveID], "big")
    else:  # KEYEDHASH or SYMCIPHER
        if isinstance(p, TPMS_SYMCIPHER_PARMS):
            size = p.sym.keyBits // 8
            if create.data and len(create.data) != size:
                raise TpmError(RC.KEY_SIZE, "symmetric key of the wrong size")
        else:
            size = _keyed_hash_key_size(pub, len(create.data))
        secret = create.data or rng.generate(size)
        seed = rng.generate(h.size)
        unique = _obfuscated(h, seed, secret)
    public = TPMT_PUBLIC(pub.type, pub.nameAlg, pub.objectAttributes, pub.authPolicy,
                         pub.parameters, unique)
    return NewObject(public, TPMT_SENSITIVE(pub.type, create.userAuth, seed, secret))


def consistent(pub: TPMT_PUBLIC, sens: TPMT_SENSITIVE) -> bool:
    """Whether a sensitive area belongs to a public area (Load's binding check)."""
    if pub.type != sens.sensitiveType:
        return False
    p = pub.parameters
    if isinstance(p, TPMS_RSA_PARMS):
        n = int.from_bytes(pub.unique.buffer, "big")
        prime = int.from_bytes(sens.sensitive, "big")
        return 1 < prime < n and n % prime == 0
    if isinstance(p, TPMS_ECC_PARMS):
        d = int.from_bytes(sens.sensitive, "big")
        if not 0 < d < CURVE_ORDER[p.curveID]:
            return False
        # Compared as numbers: a caller's point may carry fewer octets (a leading zero
        # dropped), which the reference accepts (it adjusts the sizes before comparing).
        q = ecc_point(p.curveID, d)
        return all(int.from_bytes(a, "big") == int.from_bytes(b, "big")
                   for a, b in ((q.x, pub.unique.x), (q.y, pub.unique.y)))
    return bool(pub.unique.buffer == pub.name_hash.digest(sens.seedValue, sens.sensitive))
