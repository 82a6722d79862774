"""The arithmetic of session-based encryption and session audit, fenced in one module.

Part 1, clause 21: a session whose symmetric algorithm is not TPM_ALG_NULL may encrypt
the first parameter of a command (``decrypt`` attribute: the TPM decrypts it) and of a
response (``encrypt``: the TPM encrypts it), when that parameter is a TPM2B. The key
material is ``sessionValue``: sessionKey || authValue when the session also authorizes
a handle (its binding is ignored, 21.1), sessionKey alone otherwise.

* AES in CFB mode (21.3): key and IV := KDFa(authHash, sessionValue, "CFB", nonceNewer,
  nonceOlder, keyBits + 128), the key first.
* XOR obfuscation (21.2): the data XORed with KDFa(authHash, sessionValue, "XOR",
  nonceNewer, nonceOlder, 8 * size).

For a command nonceNewer is nonceCaller and nonceOlder the session's nonceTPM; for the
response, the freshly rolled nonceTPM and then nonceCaller.

Session audit (Part 1, 19.6.x; Part 3, 18.5): auditDigest := H(auditDigest || cpHash ||
rpHash) after each audited command, starting from a digest of zeros.
"""

from __future__ import annotations

import struct

try:  # cryptography >= 43 keeps CFB in "decrepit"
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from .constants import RC, TPM_ALG
from .crypto import HashAlg, kdfa
from .errors import TpmError
from .structures import TPMT_SYM_DEF

AES_BLOCK_BITS = 128
# A Name is at most a nameAlg identifier and a digest (TPMU_NAME, Part 2, 10.5.3).
BOUND_ENTITY_SIZE = 2 + 64
_U16 = struct.Struct(">H")


def session_value(session_key: bytes, auth_value: bytes | None) -> bytes:
    """sessionValue (Part 1, 21.1): ``auth_value`` is the trailing-zero-stripped authValue
    of the entity the session authorizes in this command, None when it authorizes none."""
    return session_key if auth_value is None else session_key + auth_value


def _cipher(sym: TPMT_SYM_DEF, h: HashAlg, key: bytes, nonce_newer: bytes,
            nonce_older: bytes, data: bytes, encrypt: bool) -> bytes:
    if sym.algorithm == TPM_ALG.XOR:
        mask = kdfa(h, key, b"XOR", nonce_newer, nonce_older, 8 * len(data))
        return bytes(a ^ b for a, b in zip(data, mask, strict=True))
    if sym.algorithm != TPM_ALG.AES or sym.mode != TPM_ALG.CFB:  # pragma: no cover
        raise TpmError(RC.FAILURE, "session has no usable symmetric algorithm")
    key_bytes = sym.keyBits // 8
    material = kdfa(h, key, b"CFB", nonce_newer, nonce_older, sym.keyBits + AES_BLOCK_BITS)
    cipher = Cipher(algorithms.AES(material[:key_bytes]), CFB(material[key_bytes:]))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def decrypt_command_parameter(sym: TPMT_SYM_DEF, h: HashAlg, key: bytes, nonce_caller: bytes,
                              nonce_tpm: bytes, params: bytes) -> bytes:
    """The command parameters with the first one (a TPM2B) decrypted in place. Too few
    octets for its size field is TPM_RC_INSUFFICIENT, a size beyond the parameters
    TPM_RC_SIZE (reference CryptParameterDecryption); the caller adds the session."""
    if len(params) < _U16.size:
        raise TpmError(RC.INSUFFICIENT, "no room for the encrypted parameter's size")
    (size,) = _U16.unpack_from(params)
    if size > len(params) - _U16.size:
        raise TpmError(RC.SIZE, "encrypted parameter runs past the parameters")
    end = _U16.size + size
    plain = _cipher(sym, h, key, nonce_caller, nonce_tpm, params[_U16.size:end], False)
    return params[:_U16.size] + plain + params[end:]


def encrypt_response_parameter(sym: TPMT_SYM_DEF, h: HashAlg, key: bytes, nonce_tpm: bytes,
                               nonce_caller: bytes, params: bytes) -> bytes:
    """The response parameters with the first one (a TPM2B we marshalled) encrypted."""
    (size,) = _U16.unpack_from(params)
    end = _U16.size + size
    secret = _cipher(sym, h, key, nonce_tpm, nonce_caller, params[_U16.size:end], True)
    return params[:_U16.size] + secret + params[end:]


def bound_entity(name: bytes, auth_value: bytes) -> bytes:
    """The value a bound session remembers of its bind entity (reference
    SessionComputeBoundEntity): the Name, zero-padded, with the authValue XORed into its
    tail. Comparing it, rather than the Name alone, ends the binding when the entity's
    authValue changes or another entity takes its Name (Part 1, 19.6.x "squatting")."""
    out = bytearray(name.ljust(BOUND_ENTITY_SIZE, b"\x00"))
    for i, b in enumerate(auth_value):
        out[BOUND_ENTITY_SIZE - len(auth_value) + i] ^= b
    return bytes(out)


def extend_audit(h: HashAlg, digest: bytes, cp_hash: bytes, rp_hash: bytes) -> bytes:
    """auditDigest_new := H(auditDigest_old || cpHash || rpHash) (Part 1, 19.6.x)."""
    return h.digest(digest, cp_hash, rp_hash)
