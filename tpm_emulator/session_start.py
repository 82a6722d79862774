"""TPM2_StartAuthSession (Part 3, 11.1): checks, salt recovery and the new session.

The checks run in the reference's order so that a bad request earns the code libtpms
gives: nonceCaller size (TPM_RC_SIZE, parameter 1), then the salt key — asymmetric
(TPM_RC_KEY), a non-empty salt (TPM_RC_VALUE, parameter 2), its private part loaded
(TPM_RC_HANDLE), a decrypt key (TPM_RC_ATTRIBUTES), all on handle 1 — and any failure to
recover the salt is TPM_RC_VALUE on parameter 2; then the bind entity (an object with
only its public part, or a PIN index, is TPM_RC_HANDLE on handle 2) and the symmetric mode
(a block cipher must use CFB: TPM_RC_MODE on parameter 4).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import commands as c
from .constants import HT, RC, RH, SE, TPM_ALG
from .crypto import HASHES
from .errors import TpmError, with_handle, with_parameter
from .nv.public import TPM_NT
from .objects import store
from .objects.keys import private_key
from .objects.public import TPMA_OBJECT, TPMS_RSA_PARMS
from .objects.secret import SECRET, decrypt_secret
from .session_crypto import bound_entity
from .session_table import Session
from .sessions import session_key_for, strip_zeros

if TYPE_CHECKING:
    from .objects.store import LoadedObject
    from .tpm import TPM

_PIN_INDICES = (TPM_NT.PIN_FAIL, TPM_NT.PIN_PASS)
_OAEP_HASHES: dict[int, str] = {TPM_ALG.SHA1: "SHA1", TPM_ALG.SHA256: "SHA256",
                                TPM_ALG.SHA384: "SHA384", TPM_ALG.SHA512: "SHA512"}


def start_session(tpm: TPM, tpm_key: int, bind: int, p: c.StartAuthSession_In) -> Session:
    """Check the request and load the new session (its nonceTPM is the response's)."""
    h = HASHES[p.authHash]
    if not 16 <= len(p.nonceCaller) <= h.size:
        raise TpmError(with_parameter(RC.SIZE, 1), "nonceCaller size")
    if tpm_key != RH.NULL:
        salt = _salt(store.get(tpm, tpm_key), p.encryptedSalt)
    elif p.encryptedSalt:  # no key could have encrypted a salt
        raise TpmError(with_parameter(RC.VALUE, 2), "salt without tpmKey")
    else:
        salt = b""
    if bind >> 24 in (HT.TRANSIENT, HT.PERSISTENT) and store.get(tpm, bind).sensitive is None:
        raise TpmError(with_handle(RC.HANDLE, 2), "bind object has no authValue loaded")
    if bind >> 24 == HT.NV_INDEX and tpm.perm.nv.get(bind).public.nt in _PIN_INDICES:
        # A PIN index's authValue is a count of uses, not a secret to bind to.
        raise TpmError(with_handle(RC.HANDLE, 2), "a PIN index cannot be a bind entity")
    sym = p.symmetric
    if sym.algorithm not in (TPM_ALG.NULL, TPM_ALG.XOR) and sym.mode != TPM_ALG.CFB:
        raise TpmError(with_parameter(RC.MODE, 4), "session block cipher must use CFB")
    # nonceTPM is as long as nonceCaller, on every roll (reference SessionCreate).
    nonce_tpm = os.urandom(len(p.nonceCaller))
    bind_name = b""
    bind_auth = None
    if bind != RH.NULL:
        entity = tpm.entity(bind)
        bind_auth = entity.auth_value
        if p.sessionType == SE.HMAC:  # a policy session is never bound
            bind_name = bound_entity(entity.name, strip_zeros(bind_auth))
    key = session_key_for(p.authHash, bind_auth, nonce_tpm, p.nonceCaller, salt)
    return tpm.reset_data.sessions.start(p.sessionType, p.authHash, nonce_tpm, key, bind_name,
                                         sym)


def _salt(key: LoadedObject, encrypted: bytes) -> bytes:
    """The salt a caller encrypted to ``key`` with the label "SECRET" (Part 1, 19.6.x)."""
    pub = key.public
    if pub.type not in (TPM_ALG.RSA, TPM_ALG.ECC):
        raise TpmError(with_handle(RC.KEY, 1), "tpmKey is not asymmetric")
    if not encrypted:
        raise TpmError(with_parameter(RC.VALUE, 2), "tpmKey without a salt")
    if key.sensitive is None:
        raise TpmError(with_handle(RC.HANDLE, 1), "tpmKey has only its public part")
    if not pub.has(TPMA_OBJECT.decrypt):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "tpmKey is not a decrypt key")
    try:
        parms = pub.parameters
        if isinstance(parms, TPMS_RSA_PARMS) and parms.scheme.scheme != TPM_ALG.NULL:
            return _rsa_salt_with_scheme(key, encrypted)
        return decrypt_secret(pub, key.sensitive, SECRET, encrypted)
    except TpmError:
        raise TpmError(with_parameter(RC.VALUE, 2), "salt cannot be recovered") from None


def _rsa_salt_with_scheme(key: LoadedObject, encrypted: bytes) -> bytes:
    """An RSA key with its own scheme must use OAEP, with the scheme's hash rather than
    nameAlg (reference CryptSecretDecrypt); the salt is at most that hash's size."""
    parms = key.public.parameters
    assert isinstance(parms, TPMS_RSA_PARMS) and key.sensitive is not None
    if parms.scheme.scheme != TPM_ALG.OAEP:
        raise TpmError(RC.SCHEME, "salt keys use OAEP")
    algorithm = getattr(hashes, _OAEP_HASHES[parms.scheme.hashAlg])()
    private = private_key(key.public, key.sensitive)
    assert isinstance(private, rsa.RSAPrivateKey)
    try:
        salt = private.decrypt(encrypted, padding.OAEP(padding.MGF1(algorithm), algorithm,
                                                       SECRET + b"\x00"))
    except ValueError:
        raise TpmError(RC.VALUE, "OAEP decryption of the salt failed") from None
    if len(salt) > HASHES[parms.scheme.hashAlg].size:
        raise TpmError(RC.VALUE, "salt longer than the OAEP hash")
    return salt
