"""Running digests whose state can be written out: SHA-1 (FIPS 180-4, 6.1), SHA-256 (6.2),
SHA-512 (6.4) and SHA-384 (6.5: the SHA-512 compression with its own initial value and
a truncated output), and HMAC on top (RFC 2104).

A TPM can save a sequence object's context, and our snapshots carry loaded objects, so a
half-finished hash must be storable. ``hashlib`` objects cannot be serialised; these can:
the chaining words, the count of octets hashed and the unprocessed tail are the whole
state. The constants are computed from their definitions (fractional parts of square
and cube roots of primes) rather than pasted in, and the tests check every algorithm
against ``hashlib`` at block boundaries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from math import isqrt

from ..constants import TPM_ALG
from ..crypto import HASHES


def _primes(n: int) -> list[int]:
    out: list[int] = []
    k = 2
    while len(out) < n:
        if all(k % p for p in out if p * p <= k):
            out.append(k)
        k += 1
    return out


def _icbrt(n: int) -> int:
    x = 1 << ((n.bit_length() + 2) // 3)
    while True:
        y = (2 * x + n // (x * x)) // 3
        if y >= x:
            break
        x = y
    while x * x * x > n:
        x -= 1
    while (x + 1) ** 3 <= n:
        x += 1
    return x


_P = _primes(80)
_M32, _M64 = (1 << 32) - 1, (1 << 64) - 1
_K256 = tuple(_icbrt(p << 96) & _M32 for p in _P[:64])
_K512 = tuple(_icbrt(p << 192) & _M64 for p in _P)
_H256 = tuple(isqrt(p << 64) & _M32 for p in _P[:8])
_H384 = tuple(isqrt(p << 128) & _M64 for p in _P[8:16])  # FIPS 180-4, 5.3.4: primes 9-16
_H512 = tuple(isqrt(p << 128) & _M64 for p in _P[:8])  # 5.3.5: the first eight primes
_H1 = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)


def _rotr(x: int, n: int, bits: int) -> int:
    return ((x >> n) | (x << (bits - n))) & ((1 << bits) - 1)


def _sha1_block(h: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    w = list(struct.unpack(">16I", block))
    for t in range(16, 80):
        x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]
        w.append(((x << 1) | (x >> 31)) & _M32)
    a, b, c, d, e = h
    for t in range(80):
        if t < 20:
            f, k = (b & c) | (~b & d), 0x5A827999
        elif t < 40:
            f, k = b ^ c ^ d, 0x6ED9EBA1
        elif t < 60:
            f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
        else:
            f, k = b ^ c ^ d, 0xCA62C1D6
        temp = ((((a << 5) | (a >> 27)) & _M32) + f + e + k + w[t]) & _M32
        a, b, c, d, e = temp, a, ((b << 30) | (b >> 2)) & _M32, c, d
    return tuple((x + y) & _M32 for x, y in zip(h, (a, b, c, d, e), strict=True))


def _sha2_block(h: tuple[int, ...], block: bytes, wide: bool) -> tuple[int, ...]:
    """One SHA-256 (32-bit words) or SHA-512 (64-bit words) compression."""
    bits, mask, rounds = (64, _M64, 80) if wide else (32, _M32, 64)
    k = _K512 if wide else _K256
    s0r, s1r = ((1, 8, 7), (19, 61, 6)) if wide else ((7, 18, 3), (17, 19, 10))
    e0r, e1r = ((28, 34, 39), (14, 18, 41)) if wide else ((2, 13, 22), (6, 11, 25))
    w = list(struct.unpack(">16Q" if wide else ">16I", block))
    for t in range(16, rounds):
        x, y = w[t - 15], w[t - 2]
        s0 = _rotr(x, s0r[0], bits) ^ _rotr(x, s0r[1], bits) ^ (x >> s0r[2])
        s1 = _rotr(y, s1r[0], bits) ^ _rotr(y, s1r[1], bits) ^ (y >> s1r[2])
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & mask)
    a, b, c, d, e, f, g, hh = h
    for t in range(rounds):
        t1 = (hh + (_rotr(e, e1r[0], bits) ^ _rotr(e, e1r[1], bits) ^ _rotr(e, e1r[2], bits))
              + ((e & f) ^ (~e & g)) + k[t] + w[t]) & mask
        t2 = ((_rotr(a, e0r[0], bits) ^ _rotr(a, e0r[1], bits) ^ _rotr(a, e0r[2], bits))
              + ((a & b) ^ (a & c) ^ (b & c))) & mask
        a, b, c, d, e, f, g, hh = (t1 + t2) & mask, a, b, c, (d + t1) & mask, e, f, g
    return tuple((x + y) & mask for x, y in zip(h, (a, b, c, d, e, f, g, hh), strict=True))


def _sha256_block(h: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """SHA-256 compression with the rotations written out (the common case, so worth
    the speed: about twice the generic function's)."""
    m = _M32
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        x, y = w[t - 15], w[t - 2]
        s0 = ((x >> 7) | (x << 25)) ^ ((x >> 18) | (x << 14)) ^ (x >> 3)
        s1 = ((y >> 17) | (y << 15)) ^ ((y >> 19) | (y << 13)) ^ (y >> 10)
        w.append((w[t - 16] + (s0 & m) + w[t - 7] + (s1 & m)) & m)
    a, b, c, d, e, f, g, hh = h
    for k, wt in zip(_K256, w, strict=True):
        s1 = (((e >> 6) | (e << 26)) ^ ((e >> 11) | (e << 21)) ^ ((e >> 25) | (e << 7))) & m
        t1 = hh + s1 + ((e & f) ^ (~e & g)) + k + wt
        s0 = (((a >> 2) | (a << 30)) ^ ((a >> 13) | (a << 19)) ^ ((a >> 22) | (a << 10))) & m
        t2 = s0 + ((a & b) ^ (a & c) ^ (b & c))
        a, b, c, d, e, f, g, hh = (t1 + t2) & m, a, b, c, (d + t1) & m, e, f, g
    return tuple((x + y) & m for x, y in zip(h, (a, b, c, d, e, f, g, hh), strict=True))


@dataclass(frozen=True)
class _Algorithm:
    block: int
    initial: tuple[int, ...]
    word: str  # struct format of one chaining word
    length_octets: int  # width of the message-length field in the padding

    def compress(self, alg: int, h: tuple[int, ...], block: bytes) -> tuple[int, ...]:
        if alg == TPM_ALG.SHA1:
            return _sha1_block(h, block)
        if alg == TPM_ALG.SHA256:
            return _sha256_block(h, block)
        return _sha2_block(h, block, self.block == 128)


_ALGORITHMS: dict[int, _Algorithm] = {
    TPM_ALG.SHA1: _Algorithm(64, _H1, "I", 8),
    TPM_ALG.SHA256: _Algorithm(64, _H256, "I", 8),
    TPM_ALG.SHA384: _Algorithm(128, _H384, "Q", 16),
    TPM_ALG.SHA512: _Algorithm(128, _H512, "Q", 16),
}
assert set(_ALGORITHMS) == set(HASHES), "every implemented hash needs a digest state"


@dataclass
class DigestState:
    """A hash in progress: chaining words, octets consumed, and the unprocessed tail."""

    alg: int
    words: tuple[int, ...]
    length: int = 0
    tail: bytes = b""

    @classmethod
    def start(cls, alg: int) -> DigestState:
        return cls(alg, _ALGORITHMS[alg].initial)

    def copy(self) -> DigestState:
        return DigestState(self.alg, self.words, self.length, self.tail)

    def update(self, data: bytes) -> None:
        a = _ALGORITHMS[self.alg]
        buf = self.tail + data
        whole = len(buf) - len(buf) % a.block
        words = self.words
        for i in range(0, whole, a.block):
            words = a.compress(self.alg, words, buf[i : i + a.block])
        self.words = words
        self.tail = buf[whole:]
        self.length += len(data)

    def digest(self) -> bytes:
        """The digest of everything so far; the state itself is left as it was."""
        a = _ALGORITHMS[self.alg]
        pad = b"\x80" + bytes((-(self.length + 1 + a.length_octets)) % a.block)
        final = self.copy()
        final.update(pad + (self.length * 8).to_bytes(a.length_octets, "big"))
        out = b"".join(struct.pack(">" + a.word, w) for w in final.words)
        return out[: HASHES[self.alg].size]

    # ---- storage -----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        a = _ALGORITHMS[self.alg]
        return (struct.pack(">HQ", self.alg, self.length)
                + b"".join(struct.pack(">" + a.word, w) for w in self.words) + self.tail)

    @classmethod
    def from_bytes(cls, data: bytes) -> DigestState:
        """Raises ValueError for octets that are not a state ``to_bytes`` wrote."""
        if len(data) < 10:
            raise ValueError("digest state too short")
        alg, length = struct.unpack_from(">HQ", data)
        a = _ALGORITHMS.get(alg)
        if a is None:
            raise ValueError("unknown digest algorithm")
        n = len(a.initial)
        size = struct.calcsize(">" + a.word * n)
        if len(data) < 10 + size:
            raise ValueError("digest state too short")
        words = struct.unpack_from(">" + a.word * n, data, 10)
        tail = data[10 + size :]
        if len(tail) != length % a.block:
            raise ValueError("digest state tail disagrees with its length")
        return cls(alg, tuple(words), length, tail)


@dataclass
class HmacState:
    """HMAC in progress (RFC 2104): the inner hash, and the outer key block kept for the end."""

    inner: DigestState
    outer_key: bytes = field(repr=False)

    @classmethod
    def start(cls, alg: int, key: bytes) -> HmacState:
        block = _ALGORITHMS[alg].block
        if len(key) > block:
            key = HASHES[alg].digest(key)
        key = key.ljust(block, b"\x00")
        inner = DigestState.start(alg)
        inner.update(bytes(k ^ 0x36 for k in key))
        return cls(inner, bytes(k ^ 0x5C for k in key))

    @property
    def alg(self) -> int:
        return self.inner.alg

    def update(self, data: bytes) -> None:
        self.inner.update(data)

    def digest(self) -> bytes:
        outer = DigestState.start(self.inner.alg)
        outer.update(self.outer_key + self.inner.digest())
        return outer.digest()
