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

from ..codec import Reader, marshal, unmarshal_from
from ..constants import RC
from ..crypto import HashAlg, equal
from ..errors import TpmError
from .protect import cfb, outer_unwrap, outer_wrap, take_digest, tpm2b
from .public import TPMT_PUBLIC, TPMT_SENSITIVE

_U16 = struct.Struct(">H")


# ---- the sensitive area as it travels ------------------------------------------------
def sensitive_bytes(sens: TPMT_SENSITIVE, name_hash: HashAlg) -> bytes:
    """TPM2B_SENSITIVE with the authValue padded to a nameAlg digest, as the reference
    marshals every sensitive area it sends out (trailing zeros do not change an
    authValue, Part 1, 19.6.4)."""
    auth = sens.authValue.ljust(name_hash.size, b"\x00")
    return tpm2b(marshal(TPMT_SENSITIVE(sens.sensitiveType, auth, sens.seedValue,
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
    return cfb(key, tpm2b(integrity) + plain, True)


def inner_unwrap(name_hash: HashAlg, name: bytes, key: bytes, blob: bytes) -> bytes:
    integrity, plain = take_digest(cfb(key, blob, False))
    if not equal(integrity, name_hash.digest(plain, name)):
        raise TpmError(RC.INTEGRITY, "inner integrity")
    return plain


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
