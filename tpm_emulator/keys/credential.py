"""Credential protection (Part 1, 24.4 "Credential Protection"; Part 3, 12.5-12.6).

A credential is wrapped for one key (normally an EK) and one object Name (normally an
AK): a seed is shared with the key under the "IDENTITY" label (objects/secret.py), then

    symKey        = KDFa(ekNameAlg, seed, "STORAGE", Name, "", ekSymmetric.keyBits)
    encIdentity   = CFB_ekSymmetric(symKey, IV = 0, TPM2B_DIGEST(credential))
    HMACkey       = KDFa(ekNameAlg, seed, "INTEGRITY", "", "", ekNameAlg digest bits)
    integrityHMAC = HMAC_ekNameAlg(HMACkey, encIdentity || Name)
    credentialBlob (TPMS_ID_OBJECT) = TPM2B_DIGEST(integrityHMAC) || encIdentity

Binding the Name into both keys and the HMAC is what makes the credential come out only
through TPM2_ActivateCredential on the object the caller meant: that is how a CA learns
the AK is resident in the same TPM as the EK.
"""

from __future__ import annotations

import struct

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from ..constants import RC
from ..crypto import equal, kdfa
from ..errors import TpmError
from ..objects.public import TPMT_PUBLIC

_U16 = struct.Struct(">H")
# The TPM2B_DIGEST bound libtpms unmarshals the integrityHMAC with (SHA-512's size).
MAX_TPM2B_DIGEST = 64


def _keys(protector: TPMT_PUBLIC, seed: bytes, name: bytes) -> tuple[bytes, bytes]:
    h = protector.name_hash
    sym_key = kdfa(h, seed, b"STORAGE", name, b"", protector.symmetric.keyBits)
    hmac_key = kdfa(h, seed, b"INTEGRITY", b"", b"", h.size * 8)
    return sym_key, hmac_key


def _cfb(key: bytes, data: bytes, encrypt: bool) -> bytes:
    c = Cipher(algorithms.AES(key), CFB(bytes(16)))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def wrap(protector: TPMT_PUBLIC, seed: bytes, name: bytes, credential: bytes) -> bytes:
    """The TPMS_ID_OBJECT octets (the body of a TPM2B_ID_OBJECT)."""
    sym_key, hmac_key = _keys(protector, seed, name)
    enc = _cfb(sym_key, _U16.pack(len(credential)) + credential, True)
    mac = protector.name_hash.hmac(hmac_key, enc, name)
    return _U16.pack(len(mac)) + mac + enc


def unwrap(protector: TPMT_PUBLIC, seed: bytes, name: bytes, blob: bytes) -> bytes:
    """The credential inside a TPMS_ID_OBJECT. Bare codes: TPM_RC_INSUFFICIENT or
    TPM_RC_SIZE for a blob that does not parse, TPM_RC_INTEGRITY if the HMAC is wrong
    (the wrong key, the wrong Name, or tampering), TPM_RC_SIZE if the decrypted
    credential is not a well-formed TPM2B_DIGEST."""
    h = protector.name_hash
    if len(blob) < 2:
        raise TpmError(RC.INSUFFICIENT, "credential blob too short")
    (n,) = _U16.unpack_from(blob)
    if n > MAX_TPM2B_DIGEST:
        raise TpmError(RC.SIZE, "integrityHMAC larger than any digest")
    if len(blob) < 2 + n:
        raise TpmError(RC.INSUFFICIENT, "credential blob too short")
    mac, enc = blob[2 : 2 + n], blob[2 + n :]
    sym_key, hmac_key = _keys(protector, seed, name)
    if not equal(mac, h.hmac(hmac_key, enc, name)):
        raise TpmError(RC.INTEGRITY, "credential integrity")
    plain = _cfb(sym_key, enc, False)
    if len(plain) < 2:
        raise TpmError(RC.INSUFFICIENT, "no credential")
    (size,) = _U16.unpack_from(plain)
    if size > h.size or size != len(plain) - 2:
        raise TpmError(RC.SIZE, "credential size")
    return plain[2:]
