"""Raw key commands for ``bench engine``: CreatePrimary templates, Sign, Quote, and the
housekeeping around them (FlushContext, Clear), built by hand from Parts 2 and 3.

Hand-built for the same reason as :mod:`bench.tpm_commands`: the figures should measure
the TPM, not a marshalling library. Every template is a plain TPMT_PUBLIC (Part 2, 12.2.4)
with an empty ``unique`` field, so the same template under the same seed always names
the same primary key (Part 1, 26.3).
"""

from __future__ import annotations

import struct
from typing import Final

from .tpm_commands import TPM_ALG_SHA256, TPM_RS_PW, TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS

TPM_CC_CLEAR: Final = 0x126
TPM_CC_CREATE_PRIMARY: Final = 0x131
TPM_CC_QUOTE: Final = 0x158
TPM_CC_SIGN: Final = 0x15D
TPM_CC_FLUSH_CONTEXT: Final = 0x165
TPM_RC_COMMAND_CODE: Final = 0x143  # the TPM does not implement the command

TPM_RH_OWNER: Final = 0x40000001
TPM_RH_NULL: Final = 0x40000007
TPM_RH_ENDORSEMENT: Final = 0x4000000B
TPM_RH_PLATFORM: Final = 0x4000000C
TPM_ST_HASHCHECK: Final = 0x8024

TPM_ALG_RSA: Final = 0x0001
TPM_ALG_AES: Final = 0x0006
TPM_ALG_NULL: Final = 0x0010
TPM_ALG_RSASSA: Final = 0x0014
TPM_ALG_ECDSA: Final = 0x0018
TPM_ALG_ECC: Final = 0x0023
TPM_ALG_CFB: Final = 0x0043
TPM_ECC_NIST_P256: Final = 0x0003

# TPMA_OBJECT bits (Part 2, 8.3.2).
FIXED_TPM: Final = 1 << 1
FIXED_PARENT: Final = 1 << 4
SENSITIVE_DATA_ORIGIN: Final = 1 << 5
USER_WITH_AUTH: Final = 1 << 6
ADMIN_WITH_POLICY: Final = 1 << 7
NO_DA: Final = 1 << 10
RESTRICTED: Final = 1 << 16
DECRYPT: Final = 1 << 17
SIGN: Final = 1 << 18

_FIXED = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN
STORAGE_KEY: Final = _FIXED | USER_WITH_AUTH | NO_DA | RESTRICTED | DECRYPT
SIGNING_KEY: Final = _FIXED | USER_WITH_AUTH | NO_DA | SIGN
ATTESTATION_KEY: Final = _FIXED | USER_WITH_AUTH | NO_DA | RESTRICTED | SIGN
#: TCG EK Credential Profile, template L-2 (ECC NIST P-256): authorised by policy only.
ENDORSEMENT_KEY: Final = _FIXED | ADMIN_WITH_POLICY | RESTRICTED | DECRYPT
#: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the EK profile's authPolicy.
EK_POLICY: Final = bytes.fromhex(
    "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
#: What every Sign signs: a SHA-256-sized digest (the TPM does not hash it again).
SIGN_DIGEST: Final = bytes(range(32))

_HEADER = struct.Struct(">HII")
_PASSWORD = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)  # handle, nonce, attributes, hmac


def _sized(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _command(code: int, handles: tuple[int, ...], params: bytes, *,
             authorized: int = 0) -> bytes:
    """A command whose first ``authorized`` handles take an empty password session
    (Part 1, 19.8.4): the benchmarks measure the command, not session HMACs."""
    body = b"".join(struct.pack(">I", h) for h in handles)
    tag = TPM_ST_NO_SESSIONS
    if authorized:
        tag = TPM_ST_SESSIONS
        body += struct.pack(">I", len(_PASSWORD) * authorized) + _PASSWORD * authorized
    body += params
    return _HEADER.pack(tag, _HEADER.size + len(body), code) + body


# ---- templates (TPMT_PUBLIC, Part 2, 12.2.4) --------------------------------------------
def _symmetric(storage: bool) -> bytes:
    """TPMT_SYM_DEF_OBJECT: AES-128-CFB for storage parents, TPM_ALG_NULL otherwise."""
    if storage:
        return struct.pack(">HHH", TPM_ALG_AES, 128, TPM_ALG_CFB)
    return struct.pack(">H", TPM_ALG_NULL)


def _scheme(scheme: int) -> bytes:
    if scheme == TPM_ALG_NULL:
        return struct.pack(">H", TPM_ALG_NULL)
    return struct.pack(">HH", scheme, TPM_ALG_SHA256)


def rsa_template(attributes: int, scheme: int = TPM_ALG_NULL, bits: int = 2048) -> bytes:
    """An RSA TPMT_PUBLIC (TPMS_RSA_PARMS, Part 2, 12.2.3.5), exponent 65537 (0)."""
    parms = _symmetric(bool(attributes & DECRYPT)) + _scheme(scheme) + struct.pack(">HI", bits, 0)
    return (struct.pack(">HHI", TPM_ALG_RSA, TPM_ALG_SHA256, attributes) + _sized(b"")
            + parms + _sized(b""))


def ecc_template(attributes: int, scheme: int = TPM_ALG_NULL,
                 auth_policy: bytes = b"") -> bytes:
    """A NIST P-256 TPMT_PUBLIC (TPMS_ECC_PARMS, Part 2, 12.2.3.6), KDF NULL."""
    parms = (_symmetric(bool(attributes & DECRYPT)) + _scheme(scheme)
             + struct.pack(">HH", TPM_ECC_NIST_P256, TPM_ALG_NULL))
    unique = _sized(b"") + _sized(b"")  # TPMS_ECC_POINT with empty x and y
    return (struct.pack(">HHI", TPM_ALG_ECC, TPM_ALG_SHA256, attributes)
            + _sized(auth_policy) + parms + unique)


RSA_2048_STORAGE: Final = rsa_template(STORAGE_KEY)
ECC_P256_STORAGE: Final = ecc_template(STORAGE_KEY)
RSA_2048_RSASSA: Final = rsa_template(SIGNING_KEY, TPM_ALG_RSASSA)
ECC_P256_ECDSA: Final = ecc_template(SIGNING_KEY, TPM_ALG_ECDSA)
ECC_P256_AK: Final = ecc_template(ATTESTATION_KEY, TPM_ALG_ECDSA)
ECC_P256_EK: Final = ecc_template(ENDORSEMENT_KEY, auth_policy=EK_POLICY)


# ---- commands ---------------------------------------------------------------------------
def create_primary(template: bytes, hierarchy: int = TPM_RH_OWNER) -> bytes:
    """TPM2_CreatePrimary (Part 3, 24.1): empty userAuth and data, no outsideInfo, no
    creation PCRs."""
    sensitive = _sized(_sized(b"") + _sized(b""))  # TPM2B_SENSITIVE_CREATE
    params = sensitive + _sized(template) + _sized(b"") + struct.pack(">I", 0)
    return _command(TPM_CC_CREATE_PRIMARY, (hierarchy,), params, authorized=1)


def flush_context(handle: int) -> bytes:
    """TPM2_FlushContext (Part 3, 28.4): the handle is a parameter, not authorised."""
    return _command(TPM_CC_FLUSH_CONTEXT, (), struct.pack(">I", handle))


def clear() -> bytes:
    """TPM2_Clear under platform authorisation (Part 3, 24.6): new owner seed, so the
    next owner primary is derived afresh."""
    return _command(TPM_CC_CLEAR, (TPM_RH_PLATFORM,), b"", authorized=1)


def sign(key: int, digest: bytes = SIGN_DIGEST) -> bytes:
    """TPM2_Sign (Part 3, 20.2) with the key's own scheme (inScheme NULL) and a NULL
    ticket: allowed because the key is not restricted."""
    ticket = struct.pack(">HI", TPM_ST_HASHCHECK, TPM_RH_NULL) + _sized(b"")
    params = _sized(digest) + struct.pack(">H", TPM_ALG_NULL) + ticket
    return _command(TPM_CC_SIGN, (key,), params, authorized=1)


def quote(key: int, pcrs: range = range(8), nonce: bytes = bytes(16)) -> bytes:
    """TPM2_Quote (Part 3, 18.4) over SHA-256 ``pcrs`` with the key's scheme."""
    select = bytearray(3)
    for pcr in pcrs:
        select[pcr // 8] |= 1 << (pcr % 8)
    selection = struct.pack(">IHB", 1, TPM_ALG_SHA256, len(select)) + bytes(select)
    params = _sized(nonce) + struct.pack(">H", TPM_ALG_NULL) + selection
    return _command(TPM_CC_QUOTE, (key,), params, authorized=1)


def created_handle(response: bytes) -> int:
    """The object handle of a successful CreatePrimary/Load response (first after the
    header, Part 3, 24.1)."""
    return int(struct.unpack_from(">I", response, _HEADER.size)[0])
