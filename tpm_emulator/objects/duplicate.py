"""Duplication blobs (Part 1, 23.3 "Protected Storage Hierarchy": duplication).

A duplicate is a TPM2B_SENSITIVE wrapped in up to two layers:

    inner wrapper (optional, symmetricAlg not NULL; the caller holds the key):
        innerIntegrity = H_nameAlg(TPM2B_SENSITIVE || Name)
        inner          = CFB_sym(encryptionKey, IV = 0,
                                 TPM2B_DIGEST(innerIntegrity) || TPM2B_SENSITIVE)
    outer wrapper (optional, new parent not TPM_RH_NULL; seed shared with the new
    parent by ``secret.make_secret(..., DUPLICATE)``):
        symKey   = KDFa(npNameAlg, seed, "STORAGE", Name, "", npSymBits)
        HMACkey  = KDFa(npNameAlg, seed, "INTEGRITY", "", "", npDigestBits)
        enc      = CFB_npSym(symKey, IV = 0, inner)
        blob     = TPM2B_DIGEST(HMAC_npNameAlg(HMACkey, enc || Name)) || enc

The outer wrapper is the one ``protect.py`` puts around a child of a storage parent,
with the duplication seed in place of the parent's seedValue. Every mode field is
ignored: protection always uses CFB (Part 1, 23.3.2.2). Errors carry bare codes that
the command numbers: TPM_RC_INTEGRITY for a failed HMAC or inner digest, TPM_RC_SIZE
and TPM_RC_INSUFFICIENT where the reference unmarshaller reports them.
"""

from __future__ import annotations

import struct

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from ..codec import Reader, marshal, unmarshal_from
from ..constants import RC
from ..crypto import HashAlg, equal, kdfa
from ..errors import TpmError
from .public import TPMT_PUBLIC, TPMT_SENSITIVE

_U16 = struct.Struct(">H")
# sizeof(TPMU_HA) in libtpms (SHA-512): a TPM2B_DIGEST larger than this does not
# unmarshal (TPM_RC_SIZE); smaller but wrong sizes fail the comparison instead.
_MAX_DIGEST_OCTETS = 64


def _cfb(key: bytes, data: bytes, encrypt: bool) -> bytes:
    c = Cipher(algorithms.AES(key), CFB(bytes(16)))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def _tpm2b(data: bytes) -> bytes:
    return _U16.pack(len(data)) + data


def _take_digest(blob: bytes) -> tuple[bytes, bytes]:
    """Split a leading TPM2B_DIGEST off ``blob`` as the reference unmarshals it."""
    if len(blob) < 2:
        raise TpmError(RC.INSUFFICIENT, "no integrity size")
    (n,) = _U16.unpack_from(blob)
    if n > _MAX_DIGEST_OCTETS:
        raise TpmError(RC.SIZE, "integrity larger than any digest")
    if len(blob) < 2 + n:
        raise TpmError(RC.INSUFFICIENT, "integrity runs past the blob")
    return blob[2 : 2 + n], blob[2 + n :]


# ---- the sensitive area as it travels ------------------------------------------------
def sensitive_bytes(sens: TPMT_SENSITIVE, name_hash: HashAlg) -> bytes:
    """TPM2B_SENSITIVE with the authValue padded to a nameAlg digest, as the reference
    marshals every sensitive area it sends out (trailing zeros do not change an
    authValue, Part 1, 19.6.4)."""
    auth = sens.authValue.ljust(name_hash.size, b"\x00")
    return _tpm2b(marshal(TPMT_SENSITIVE(sens.sensitiveType, auth, sens.seedValue,
                                         sens.sensitive)))


def parse_sensitive(data: bytes) -> TPMT_SENSITIVE:
    """The TPM2B_SENSITIVE left once the wrappers are off; its size must account for
    every octet (TPM_RC_SIZE otherwise, as the reference's DuplicateToSensitive)."""
    if len(data) < 2:
        raise TpmError(RC.INSUFFICIENT, "no sensitive size")
    (n,) = _U16.unpack_from(data)
    if n + 2 != len(data):
        raise TpmError(RC.SIZE, "sensitive size disagrees with the blob")
    r = Reader(data, 2)
    sens = unmarshal_from(TPMT_SENSITIVE, r)
    if r.remaining():
        raise TpmError(RC.SIZE, "octets after the sensitive area")
    return TPMT_SENSITIVE(sens.sensitiveType, sens.authValue.rstrip(b"\x00"),
                          sens.seedValue, sens.sensitive)


# ---- inner wrapper (Part 1, 23.3: the inner duplication wrapper) -------------------------
def inner_wrap(name_hash: HashAlg, name: bytes, key: bytes, plain: bytes) -> bytes:
    integrity = name_hash.digest(plain, name)
    return _cfb(key, _tpm2b(integrity) + plain, True)


def inner_unwrap(name_hash: HashAlg, name: bytes, key: bytes, blob: bytes) -> bytes:
    integrity, plain = _take_digest(_cfb(key, blob, False))
    if not equal(integrity, name_hash.digest(plain, name)):
        raise TpmError(RC.INTEGRITY, "inner integrity")
    return plain


# ---- outer wrapper (Part 1, 23.3: protected storage, with an external seed) --------------
def _outer_keys(parent: TPMT_PUBLIC, seed: bytes, name: bytes) -> tuple[bytes, bytes]:
    h = parent.name_hash
    sym_key = kdfa(h, seed, b"STORAGE", name, b"", parent.symmetric.keyBits)
    hmac_key = kdfa(h, seed, b"INTEGRITY", b"", b"", h.size * 8)
    return sym_key, hmac_key


def outer_wrap(parent: TPMT_PUBLIC, seed: bytes, name: bytes, data: bytes) -> bytes:
    sym_key, hmac_key = _outer_keys(parent, seed, name)
    enc = _cfb(sym_key, data, True)
    return _tpm2b(parent.name_hash.hmac(hmac_key, enc, name)) + enc


def outer_unwrap(parent: TPMT_PUBLIC, seed: bytes, name: bytes, blob: bytes) -> bytes:
    integrity, enc = _take_digest(blob)
    sym_key, hmac_key = _outer_keys(parent, seed, name)
    if not equal(integrity, parent.name_hash.hmac(hmac_key, enc, name)):
        raise TpmError(RC.INTEGRITY, "outer integrity")
    return _cfb(sym_key, enc, False)


# ---- the whole duplicate -------------------------------------------------------------
def to_duplicate(sens: TPMT_SENSITIVE, name_hash: HashAlg, name: bytes,
                 inner_key: bytes | None, new_parent: TPMT_PUBLIC | None,
                 seed: bytes) -> bytes:
    """The duplicate of an object: ``inner_key`` None means no inner wrapper,
    ``new_parent`` None (TPM_RH_NULL) no outer wrapper."""
    data = sensitive_bytes(sens, name_hash)
    if inner_key is not None:
        data = inner_wrap(name_hash, name, inner_key, data)
    if new_parent is not None:
        data = outer_wrap(new_parent, seed, name, data)
    return data


def from_duplicate(blob: bytes, name_hash: HashAlg, name: bytes, inner_key: bytes | None,
                   parent: TPMT_PUBLIC, seed: bytes | None) -> TPMT_SENSITIVE:
    """Open a duplicate for Import: ``seed`` None means no outer wrapper."""
    data = blob
    if seed is not None:
        data = outer_unwrap(parent, seed, name, data)
    if inner_key is not None:
        data = inner_unwrap(name_hash, name, inner_key, data)
    return parse_sensitive(data)
