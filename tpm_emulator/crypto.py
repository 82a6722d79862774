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

from .constants import ST, TPM_ALG


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
    TPM_ALG.SHA512: HashAlg(TPM_ALG.SHA512, "sha512", 64),
}
MAX_DIGEST_SIZE = max(h.size for h in HASHES.values())  # TPM_PT_MAX_DIGEST, sizeof(TPMU_HA)
# The context integrity hash (TPM_PT_CONTEXT_HASH): the strongest implemented hash, as
# in libtpms (CONTEXT_INTEGRITY_HASH_ALG = SHA-512). It keys and MACs saved contexts,
# policy and verification tickets, and obfuscates attested clock information.
CONTEXT_HASH = HASHES[TPM_ALG.SHA512]
# Context blobs sealed before SHA-512 was implemented carry a SHA-256 integrity value;
# ``open_context`` still accepts them so that a client holding one can load it.
LEGACY_CONTEXT_HASH = HASHES[TPM_ALG.SHA256]
_CONTEXT_HASH_BY_SIZE = {h.size: h for h in (CONTEXT_HASH, LEGACY_CONTEXT_HASH)}
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


def hashcheck_hmac(proof: bytes, hash_alg: int, digest: bytes) -> bytes:
    """The digest of a TPMT_TK_HASHCHECK (Part 2, 10.7.6), made by TPM2_Hash and
    TPM2_SequenceComplete and checked by TPM2_Sign: HMAC with the hierarchy's proof
    over TPM_ST_HASHCHECK || hashAlg || digest. It is made with the context hash
    whatever hash made the digest, as in libtpms (whose tickets are always 64 octets);
    binding hashAlg keeps a ticket from vouching for the same octets under another
    hash."""
    return CONTEXT_HASH.hmac(proof, struct.pack(">HH", ST.HASHCHECK, hash_alg), digest)


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of secrets."""
    return hmac.compare_digest(a, b)


def _context_keys(proof: bytes, sequence: int, handle: int,
                  h: HashAlg = CONTEXT_HASH) -> tuple[bytes, bytes, bytes]:
    material = kdfa(h, proof, b"CONTEXT", struct.pack(">Q", sequence),
                    struct.pack(">I", handle), CONTEXT_SYM_BITS + 128 + 8 * h.size)
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
    The blob must already have passed ``split_context``. The integrity value's size
    tells which context hash sealed it: SHA-512 now, SHA-256 before SHA-512 was
    implemented (an HMAC either way, so accepting both weakens nothing)."""
    tag, ciphertext = split_context(blob)
    h = _CONTEXT_HASH_BY_SIZE.get(len(tag))
    if h is None:
        return None
    key, iv, mac_key = _context_keys(proof, sequence, handle, h)
    expect = h.hmac(mac_key, struct.pack(">QII", sequence, handle, hierarchy), ciphertext)
    if not equal(tag, expect):
        return None
    dec = Cipher(algorithms.AES(key), CFB(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()
