"""The TPM's cryptographic constructions, fenced in one module.

Everything here is built from ``hashlib``/``hmac`` and the ``cryptography`` package:
the implemented hash algorithms, KDFa (Part 1, 11.4.10.2), the ticket and session
HMACs, and the protection of saved contexts (Part 1, 30.2: a symmetric key and IV
derived with KDFa from a hierarchy proof and the context sequence number, then an
HMAC over the ciphertext). Secrets are compared with ``hmac.compare_digest`` only.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

try:  # cryptography >= 43 keeps CFB (the mode Part 1 names for contexts) in "decrepit"
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from .constants import TPM_ALG


@dataclass(frozen=True)
class HashAlg:
    """An implemented hash algorithm: its TPM_ALG_ID, hashlib name and digest size."""

    alg: int
    name: str
    size: int

    def digest(self, *parts: bytes) -> bytes:
        h = hashlib.new(self.name)
        for p in parts:
            h.update(p)
        return h.digest()

    def hmac(self, key: bytes, *parts: bytes) -> bytes:
        m = hmac.new(key, digestmod=self.name)
        for p in parts:
            m.update(p)
        return m.digest()


# The hash algorithms this TPM implements, in TPM_ALG_ID order; one PCR bank each.
HASHES: dict[int, HashAlg] = {
    TPM_ALG.SHA1: HashAlg(TPM_ALG.SHA1, "sha1", 20),
    TPM_ALG.SHA256: HashAlg(TPM_ALG.SHA256, "sha256", 32),
    TPM_ALG.SHA384: HashAlg(TPM_ALG.SHA384, "sha384", 48),
}
MAX_DIGEST_SIZE = max(h.size for h in HASHES.values())  # TPM_PT_MAX_DIGEST, sizeof(TPMU_HA)
CONTEXT_HASH = HASHES[TPM_ALG.SHA256]
CONTEXT_SYM_BITS = 256


def kdfa(h: HashAlg, key: bytes, label: bytes, context_u: bytes, context_v: bytes,
         bits: int) -> bytes:
    """KDFa: SP800-108 counter-mode KDF with HMAC (Part 1, 11.4.10.2).

    The label is NUL-terminated on the wire of the KDF even if the caller's is not."""
    if not label.endswith(b"\x00"):
        label += b"\x00"
    out = bytearray()
    counter = 1
    tail = label + context_u + context_v + struct.pack(">I", bits)
    while len(out) * 8 < bits:
        out += h.hmac(key, struct.pack(">I", counter), tail)
        counter += 1
    n = (bits + 7) // 8
    result = bytearray(out[:n])
    if bits % 8:  # mask unused high bits of the first octet
        result[0] &= (1 << (bits % 8)) - 1
    return bytes(result)


def kdfe(h: HashAlg, z: bytes, label: bytes, party_u: bytes, party_v: bytes,
         bits: int) -> bytes:
    """KDFe: the SP800-56A concatenation KDF for ECDH secrets (Part 1, 11.4.10.3):
    H(counter || Z || label || PartyUInfo || PartyVInfo), label NUL-terminated."""
    if not label.endswith(b"\x00"):
        label += b"\x00"
    out = bytearray()
    counter = 1
    while len(out) * 8 < bits:
        out += h.digest(struct.pack(">I", counter), z, label, party_u, party_v)
        counter += 1
    n = (bits + 7) // 8
    result = bytearray(out[:n])
    if bits % 8:
        result[0] &= (1 << (bits % 8)) - 1
    return bytes(result)


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of secrets."""
    return hmac.compare_digest(a, b)


def _context_keys(proof: bytes, sequence: int, handle: int) -> tuple[bytes, bytes, bytes]:
    material = kdfa(CONTEXT_HASH, proof, b"CONTEXT", struct.pack(">Q", sequence),
                    struct.pack(">I", handle), CONTEXT_SYM_BITS + 128 + 256)
    return material[:32], material[32:48], material[48:]


def seal_context(proof: bytes, sequence: int, handle: int, hierarchy: int,
                 plaintext: bytes) -> bytes:
    """contextBlob = integrity || encrypted (Part 1, 30.3): AES-256-CFB under a key and
    IV derived from the proof and the sequence number, then an HMAC that also binds the
    sequence, saved handle and hierarchy so none of them can be swapped."""
    key, iv, mac_key = _context_keys(proof, sequence, handle)
    enc = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    ciphertext = enc.update(plaintext) + enc.finalize()
    tag = CONTEXT_HASH.hmac(mac_key, struct.pack(">QII", sequence, handle, hierarchy),
                            ciphertext)
    return struct.pack(">H", len(tag)) + tag + ciphertext


def split_context(blob: bytes) -> tuple[bytes, bytes]:
    """Split contextBlob into its integrity TPM2B_DIGEST and the ciphertext. Raises
    ``ValueError`` with the response code as its argument when the TPM2B is malformed:
    TPM_RC_SIZE (0x095) if larger than any digest, else TPM_RC_INSUFFICIENT (0x09A)."""
    if len(blob) < 2:
        raise ValueError(0x09A)
    (n,) = struct.unpack_from(">H", blob)
    if n > MAX_DIGEST_SIZE:
        raise ValueError(0x095)
    if len(blob) < 2 + n:
        raise ValueError(0x09A)
    return blob[2 : 2 + n], blob[2 + n :]


def open_context(proof: bytes, sequence: int, handle: int, hierarchy: int,
                 blob: bytes) -> bytes | None:
    """The plaintext of a blob made by ``seal_context``, or None if it fails integrity.
    The blob must already have passed ``split_context``."""
    tag, ciphertext = split_context(blob)
    if len(tag) != CONTEXT_HASH.size:
        return None
    key, iv, mac_key = _context_keys(proof, sequence, handle)
    expect = CONTEXT_HASH.hmac(mac_key, struct.pack(">QII", sequence, handle, hierarchy),
                               ciphertext)
    if not equal(tag, expect):
        return None
    dec = Cipher(algorithms.AES(key), CFB(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()
