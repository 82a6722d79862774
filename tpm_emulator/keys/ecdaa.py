"""The two Schnorr-type ECC signing schemes (Part 1, Annex C; the reference's
BnSignEcdaa, BnSignEcSchnorr and BnValidateSignatureEcSchnorr).

Both compute s = k + T·d (mod n) for a private key d:

* EC-Schnorr: k is fresh, R = [k]G, T = r = H(R.x || digest) cut to the octets of n;
  the signature is (r, s), checked by recomputing R = [s]G - [r]Q.
* ECDAA: k is the value r a TPM2_Commit made (recomputed from the commit ``count``
  the caller names, then used up), nonceK is fresh and T = H(nonceK || digest); the
  signature is (nonceK, s). The TPM cannot check one: the verifier needs the commit's
  points, so TPM2_VerifySignature refuses it (TPM_RC_SCHEME), as libtpms does.

Codes are bare; the command numbers them. The arithmetic with d, k and r is done on
Python integers, whose timing is not constant; the points with secret scalars go
through OpenSSL (``ec_math.base_multiply``).
"""

from __future__ import annotations

import secrets

from ..constants import RC
from ..crypto import HASHES
from ..errors import TpmError
from . import ec_math
from .commit import CommitState, generate_r


def _order_bytes(c: ec_math.Curve) -> int:
    return (c.n.bit_length() + 7) // 8


def _nonce(c: ec_math.Curve) -> int:
    return secrets.randbelow(c.n - 1) + 1


def _minimal(v: int) -> bytes:
    """An integer in as few octets as it needs (the reference's BnTo2B with size 0)."""
    return v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")


def _schnorr_challenge(c: ec_math.Curve, hash_alg: int, x: int, digest: bytes) -> int:
    """H(x || digest), x padded to the octets of n, the hash cut to that many octets
    (SchnorrReduce keeps the leading ones)."""
    size = _order_bytes(c)
    e = HASHES[hash_alg].digest(x.to_bytes(size, "big"), digest)
    return int.from_bytes(e[:size], "big")


def sign_schnorr(c: ec_math.Curve, d: int, hash_alg: int, digest: bytes) -> tuple[bytes, bytes]:
    """An EC-Schnorr signature (r, s), each padded to the octets of n."""
    size = _order_bytes(c)
    while True:
        k = _nonce(c)
        rx, _ = ec_math.base_multiply(c, k)
        r = _schnorr_challenge(c, hash_alg, rx, digest)
        s = (k + r * d) % c.n
        if s:
            return r.to_bytes(size, "big"), s.to_bytes(size, "big")


def verify_schnorr(c: ec_math.Curve, q: tuple[int, int], hash_alg: int, digest: bytes,
                   r_bytes: bytes, s_bytes: bytes) -> bool:
    """Whether (r, s) is an EC-Schnorr signature over ``digest`` by the key Q: both in
    [1, n - 1], and H([s]G - [r]Q || digest) = r."""
    r, s = int.from_bytes(r_bytes, "big"), int.from_bytes(s_bytes, "big")
    if not (0 < r < c.n and 0 < s < c.n):
        return False
    point = ec_math.multiply_add(c, s, c.g, c.n - r, q)
    if point is None:
        return False
    return _schnorr_challenge(c, hash_alg, point[0], digest) == r


def sign_ecdaa(c: ec_math.Curve, d: int, hash_alg: int, digest: bytes, count: int,
               name: bytes, commits: CommitState) -> tuple[bytes, bytes]:
    """An ECDAA signature (nonceK, s) with the commitment of ``count``, which is then
    used up. TPM_RC_VALUE if ``count`` names no outstanding commitment of this key's
    curve (a value made for another key simply gives a signature that does not
    verify, as the TPM cannot tell)."""
    r = generate_r(commits, count, c, name)
    if r is None:
        raise TpmError(RC.VALUE, "the commit count is not outstanding")
    while True:
        nonce_k = _minimal(_nonce(c))
        t = int.from_bytes(HASHES[hash_alg].digest(nonce_k, digest), "big")
        s = (r + t * d) % c.n
        if s:
            break
    commits.end_commit(count)
    return nonce_k, s.to_bytes(_order_bytes(c), "big")
