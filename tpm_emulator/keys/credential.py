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

from ..constants import RC
from ..errors import TpmError
from ..objects.protect import outer_unwrap, outer_wrap, tpm2b
from ..objects.public import TPMT_PUBLIC

_U16 = struct.Struct(">H")


def wrap(protector: TPMT_PUBLIC, seed: bytes, name: bytes, credential: bytes) -> bytes:
    """The TPMS_ID_OBJECT octets (the body of a TPM2B_ID_OBJECT)."""
    return outer_wrap(protector, seed, name, tpm2b(credential))


def unwrap(protector: TPMT_PUBLIC, seed: bytes, name: bytes, blob: bytes) -> bytes:
    """The credential inside a TPMS_ID_OBJECT. Bare codes: TPM_RC_INSUFFICIENT or
    TPM_RC_SIZE for a blob that does not parse, TPM_RC_INTEGRITY if the HMAC is wrong
    (the wrong key, the wrong Name, or tampering), TPM_RC_SIZE if the decrypted
    credential is not a well-formed TPM2B_DIGEST."""
    h = protector.name_hash
    plain = outer_unwrap(protector, seed, name, blob)
    if len(plain) < 2:
        raise TpmError(RC.INSUFFICIENT, "no credential")
    (size,) = _U16.unpack_from(plain)
    if size > h.size or size != len(plain) - 2:
        raise TpmError(RC.SIZE, "credential size")
    return plain[2:]
