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


def _keys(parent: TPMT_PUBLIC, seed: bytes, name: bytes) -> tuple[bytes, bytes]:
    h = parent.name_hash
    sym_key = kdfa(h, seed, b"STORAGE", name, b"", parent.symmetric.keyBits)
    hmac_key = kdfa(h, seed, b"INTEGRITY", b"", b"", h.size * 8)
    return sym_key, hmac_key


def _cfb(key: bytes, data: bytes, encrypt: bool) -> bytes:
    c = Cipher(algorithms.AES(key), CFB(bytes(16)))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def protect(parent: TPMT_PUBLIC, seed: bytes, name: bytes, sens: TPMT_SENSITIVE) -> bytes:
    """The TPM2B_PRIVATE buffer for ``sens`` under a parent with seedValue ``seed``."""
    sym_key, hmac_key = _keys(parent, seed, name)
    body = marshal(sens)
    enc = _cfb(sym_key, _U16.pack(len(body)) + body, True)
    outer = parent.name_hash.hmac(hmac_key, enc, name)
    return _U16.pack(len(outer)) + outer + enc


def unprotect(parent: TPMT_PUBLIC, seed: bytes, name: bytes, private: bytes) -> TPMT_SENSITIVE:
    """Check and open a TPM2B_PRIVATE buffer; raises TPM_RC_INTEGRITY (bare)."""
    h = parent.name_hash
    if len(private) < 2:
        raise TpmError(RC.SIZE, "empty private area")
    (n,) = _U16.unpack_from(private)
    if n != h.size or len(private) < 2 + n:
        raise TpmError(RC.INTEGRITY, "outer HMAC size")
    outer, enc = private[2 : 2 + n], private[2 + n :]
    sym_key, hmac_key = _keys(parent, seed, name)
    if not equal(outer, h.hmac(hmac_key, enc, name)):
        raise TpmError(RC.INTEGRITY, "outer HMAC")
    plain = _cfb(sym_key, enc, False)
    (size,) = _U16.unpack_from(plain) if len(plain) >= 2 else (0,)
    if size != len(plain) - 2:
        raise TpmError(RC.SENSITIVE, "sensitive area size")
    try:
        return unmarshal(TPMT_SENSITIVE, plain[2:])
    except TpmError:
        raise TpmError(RC.SENSITIVE, "sensitive area does not unmarshal") from None
