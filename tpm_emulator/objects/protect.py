"""Sensitive-area protection under a storage parent (Part 1, 23.3 "Protected Storage").

    symKey     = KDFa(pNameAlg, seedValue, "STORAGE", Name, "", keyBits)
    encSens    = CFB_pSymAlg(symKey, IV = 0, TPM2B_SENSITIVE)
    HMACkey    = KDFa(pNameAlg, seedValue, "INTEGRITY", "", "", digest bits)
    outerHMAC  = HMAC_pNameAlg(HMACkey, encSens || Name)
    TPM2B_PRIVATE.buffer = TPM2B_DIGEST(outerHMAC) || encSens

The key is unique per object (it depends on the Name), so a zero IV is sound (Part 1,
23.3.2.2). The integrity check comes first and its failure is TPM_RC_INTEGRITY.
"""

from __future__ import annotations

import struct

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from ..codec import marshal, unmarshal
from ..constants import RC
from ..crypto import equal, kdfa
from ..errors import TpmError
from .public import TPMT_PUBLIC, TPMT_SENSITIVE

_U16 = struct.Struct(">H")


# sizeof(TPMU_HA) in libtpms (SHA-512): a TPM2B_DIGEST larger than this does not
# unmarshal (TPM_RC_SIZE); smaller but wrong sizes fail the comparison instead.
MAX_DIGEST_OCTETS = 64


def cfb(key: bytes, data: bytes, encrypt: bool) -> bytes:
    """AES-CFB with a zero IV: sound here because every key is used for one object."""
    c = Cipher(algorithms.AES(key), CFB(bytes(16)))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def tpm2b(data: bytes) -> bytes:
    return _U16.pack(len(data)) + data


def take_digest(blob: bytes) -> tuple[bytes, bytes]:
    """Split a leading TPM2B_DIGEST off ``blob`` as the reference unmarshals it: bare
    TPM_RC_INSUFFICIENT for too few octets, TPM_RC_SIZE for a size beyond any digest."""
    if len(blob) < 2:
        raise TpmError(RC.INSUFFICIENT, "no integrity size")
    (n,) = _U16.unpack_from(blob)
    if n > MAX_DIGEST_OCTETS:
        raise TpmError(RC.SIZE, "integrity larger than any digest")
    if len(blob) < 2 + n:
        raise TpmError(RC.INSUFFICIENT, "integrity runs past the blob")
    return blob[2 : 2 + n], blob[2 + n :]


def _keys(parent: TPMT_PUBLIC, seed: bytes, name: bytes) -> tuple[bytes, bytes]:
    h = parent.name_hash
    sym_key = kdfa(h, seed, b"STORAGE", name, b"", parent.symmetric.keyBits)
    hmac_key = kdfa(h, seed, b"INTEGRITY", b"", b"", h.size * 8)
    return sym_key, hmac_key


def outer_wrap(parent: TPMT_PUBLIC, seed: bytes, name: bytes, data: bytes) -> bytes:
    """TPM2B_DIGEST(outerHMAC) || encrypted ``data``: the wrapper every protected blob
    shares — a child's private area (seed: the parent's seedValue), a duplicate
    (a seed shared under "DUPLICATE") and a credential (under "IDENTITY")."""
    sym_key, hmac_key = _keys(parent, seed, name)
    enc = cfb(sym_key, data, True)
    return tpm2b(parent.name_hash.hmac(hmac_key, enc, name)) + enc


def outer_unwrap(parent: TPMT_PUBLIC, seed: bytes, name: bytes, blob: bytes) -> bytes:
    """The plaintext inside ``outer_wrap``'s blob; the HMAC is checked before anything
    is decrypted (bare TPM_RC_INTEGRITY), parse errors as ``take_digest``."""
    integrity, enc = take_digest(blob)
    sym_key, hmac_key = _keys(parent, seed, name)
    if not equal(integrity, parent.name_hash.hmac(hmac_key, enc, name)):
        raise TpmError(RC.INTEGRITY, "outer integrity")
    return cfb(sym_key, enc, False)


def protect(parent: TPMT_PUBLIC, seed: bytes, name: bytes, sens: TPMT_SENSITIVE) -> bytes:
    """The TPM2B_PRIVATE buffer for ``sens`` under a parent with seedValue ``seed``."""
    return outer_wrap(parent, seed, name, tpm2b(marshal(sens)))


def unprotect(parent: TPMT_PUBLIC, seed: bytes, name: bytes, private: bytes) -> TPMT_SENSITIVE:
    """Check and open a TPM2B_PRIVATE buffer; raises TPM_RC_INTEGRITY (bare)."""
    h = parent.name_hash
    if len(private) < 2:
        raise TpmError(RC.SIZE, "empty private area")
    (n,) = _U16.unpack_from(private)
    if n != h.size or len(private) < 2 + n:
        raise TpmError(RC.INTEGRITY, "outer HMAC size")
    plain = outer_unwrap(parent, seed, name, private)
    (size,) = _U16.unpack_from(plain) if len(plain) >= 2 else (0,)
    if size != len(plain) - 2:
        raise TpmError(RC.SENSITIVE, "sensitive area size")
    try:
        return unmarshal(TPMT_SENSITIVE, plain[2:])
    except TpmError:
        raise TpmError(RC.SENSITIVE, "sensitive area does not unmarshal") from None
