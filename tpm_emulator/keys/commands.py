"""Part 3 key and crypto commands as declarations (clauses 12.5-12.6, 14, 15, 17, 20 and
TPM2_TestParms): handles with their auth roles, parameter and response shapes, TPMA_CC
attributes (checked against libtpms' TPM_CAP_COMMANDS).

The Part 2 interface types these commands add (TPMT_RSA_DECRYPT, TPM2B_IV, the cipher
mode, TPM2B_ID_OBJECT, TPMT_PUBLIC_PARMS) are declared here too, beside their only users.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated, Any

from ..codec import Int, Reader, Sized, Wire
from ..commands import TPMI_DH_PCR_NULL, Auth, Command, HandleSpec
from ..constants import CC, RC, ST, TPM_ALG
from ..crypto import HASHES, MAX_DIGEST_SIZE
from ..errors import TpmError
from ..objects.commands import TPMI_DH_OBJECT
from ..objects.public import (
    _PARMS,
    OBJECT_TYPES,
    SYM_MODES,
    TPM2B_DATA,
    TPM2B_NAME,
    TPMS_ECC_POINT,
    SizedStruct,
)
from ..policy.tickets import TPMT_TK_VERIFIED
from ..structures import (
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_MAX_BUFFER,
    TPMI_RH_HIERARCHY_NULL,
    TPMI_YES_NO,
    TPML_DIGEST_VALUES,
    TPMT_TK_HASHCHECK,
    TicketTag,
)
from .signing import TPM2B_PUBLIC_KEY_RSA, TPMT_SIG_SCHEME, TPMT_SIGNATURE, TPMT_SIGNATURE_IN

NULL = TPM_ALG.NULL
_U16 = struct.Struct(">H")
MAX_SYM_BLOCK_SIZE = 16  # AES is the only block cipher

# ---- interface types (Part 2) --------------------------------------------------------
# TPMI_ALG_HASH+ (Part 2, 9.27): an implemented hash or TPM_ALG_NULL.
TPMI_ALG_HASH_NULL = Annotated[int, Int("H", (*HASHES, NULL), RC.HASH)]
# TPMI_ALG_CIPHER_MODE+ (Part 2, 9.31): an unimplemented mode is TPM_RC_MODE.
TPMI_ALG_CIPHER_MODE = Annotated[int, Int("H", (*SYM_MODES, NULL), RC.MODE)]
TPM2B_IV = Annotated[bytes, Sized(MAX_SYM_BLOCK_SIZE)]
TPM2B_ECC_POINT = Annotated[TPMS_ECC_POINT, SizedStruct(TPMS_ECC_POINT)]
# TPMS_ID_OBJECT (Part 2, 12.4.2) is two TPM2B_DIGESTs: integrityHMAC and encIdentity.
TPM2B_ID_OBJECT = Annotated[bytes, Sized(2 * (2 + MAX_DIGEST_SIZE))]


class _RsaDecryptHash(Wire):
    """TPMU_ASYM_SCHEME for TPMT_RSA_DECRYPT: OAEP carries a hash, RSAES and NULL
    carry nothing (they read as TPM_ALG_NULL)."""

    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        if prior["scheme"] != TPM_ALG.OAEP:
            return NULL
        h = r.unpack(_U16)
        if h not in HASHES:
            raise TpmError(RC.HASH, f"OAEP hash 0x{h:04X}")
        return h

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        if obj.scheme == TPM_ALG.OAEP:
            out += _U16.pack(value)


@dataclass(frozen=True)
class TPMT_RSA_DECRYPT:
    """Part 2, 11.2.4.3: TPMI_ALG_RSA_DECRYPT+ (RSAES, OAEP or NULL; anything else is
    TPM_RC_VALUE) and, for OAEP, its hash."""

    scheme: Annotated[int, Int("H", (TPM_ALG.RSAES, TPM_ALG.OAEP, NULL), RC.VALUE)]
    hashAlg: Annotated[int, _RsaDecryptHash()] = NULL


@dataclass(frozen=True)
class TPMT_PUBLIC_PARMS:
    """Part 2, 12.2.3.8: an object type and its parameters, as TPM2_TestParms takes them."""

    type: Annotated[int, Int("H", OBJECT_TYPES, RC.TYPE)]
    parameters: Annotated[Any, _PARMS]


@dataclass(frozen=True)
class TPMT_TK_HASHCHECK_IN:
    """TPMT_TK_HASHCHECK as a command parameter (Part 2, 10.7.6): the tag must be
    TPM_ST_HASHCHECK (else TPM_RC_TAG) and the hierarchy a TPMI_RH_HIERARCHY+."""

    tag: Annotated[int, TicketTag(ST.HASHCHECK)]
    hierarchy: TPMI_RH_HIERARCHY_NULL
    digest: TPM2B_DIGEST


SequenceHandle = Annotated[int, Int("I")]


# ---- parameters and responses ---------------------------------------------------------
@dataclass(frozen=True)
class Empty:
    pass


@dataclass(frozen=True)
class RSA_Encrypt_In:
    message: TPM2B_PUBLIC_KEY_RSA
    inScheme: TPMT_RSA_DECRYPT
    label: TPM2B_DATA


@dataclass(frozen=True)
class RSA_Encrypt_Out:
    outData: TPM2B_PUBLIC_KEY_RSA


@dataclass(frozen=True)
class RSA_Decrypt_In:
    cipherText: TPM2B_PUBLIC_KEY_RSA
    inScheme: TPMT_RSA_DECRYPT
    label: TPM2B_DATA


@dataclass(frozen=True)
class RSA_Decrypt_Out:
    message: TPM2B_PUBLIC_KEY_RSA


@dataclass(frozen=True)
class ECDH_KeyGen_Out:
    zPoint: TPM2B_ECC_POINT
    pubPoint: TPM2B_ECC_POINT


@dataclass(frozen=True)
class ECDH_ZGen_In:
    inPoint: TPM2B_ECC_POINT


@dataclass(frozen=True)
class ECDH_ZGen_Out:
    outPoint: TPM2B_ECC_POINT


@dataclass(frozen=True)
class EncryptDecrypt_In:
    decrypt: TPMI_YES_NO
    mode: TPMI_ALG_CIPHER_MODE
    ivIn: TPM2B_IV
    inData: TPM2B_MAX_BUFFER


@dataclass(frozen=True)
class EncryptDecrypt2_In:
    inData: TPM2B_MAX_BUFFER
    decrypt: TPMI_YES_NO
    mode: TPMI_ALG_CIPHER_MODE
    ivIn: TPM2B_IV


@dataclass(frozen=True)
class EncryptDecrypt_Out:
    outData: TPM2B_MAX_BUFFER
    ivOut: TPM2B_IV


@dataclass(frozen=True)
class HMAC_In:
    buffer: TPM2B_MAX_BUFFER
    hashAlg: TPMI_ALG_HASH_NULL


@dataclass(frozen=True)
class HMAC_Out:
    outHMAC: TPM2B_DIGEST


@dataclass(frozen=True)
class HMAC_Start_In:
    auth: TPM2B_AUTH
    hashAlg: TPMI_ALG_HASH_NULL


@dataclass(frozen=True)
class HashSequenceStart_In:
    auth: TPM2B_AUTH
    hashAlg: TPMI_ALG_HASH_NULL


@dataclass(frozen=True)
class SequenceStart_Out:
    sequenceHandle: SequenceHandle


@dataclass(frozen=True)
class SequenceUpdate_In:
    buffer: TPM2B_MAX_BUFFER


@dataclass(frozen=True)
class SequenceComplete_In:
    buffer: TPM2B_MAX_BUFFER
    hierarchy: TPMI_RH_HIERARCHY_NULL


@dataclass(frozen=True)
class SequenceComplete_Out:
    result: TPM2B_DIGEST
    validation: TPMT_TK_HASHCHECK


@dataclass(frozen=True)
class EventSequenceComplete_Out:
    results: TPML_DIGEST_VALUES


@dataclass(frozen=True)
class MakeCredential_In:
    credential: TPM2B_DIGEST
    objectName: TPM2B_NAME


@dataclass(frozen=True)
class MakeCredential_Out:
    credentialBlob: TPM2B_ID_OBJECT
    secret: TPM2B_ENCRYPTED_SECRET


@dataclass(frozen=True)
class ActivateCredential_In:
    credentialBlob: TPM2B_ID_OBJECT
    secret: TPM2B_ENCRYPTED_SECRET


@dataclass(frozen=True)
class ActivateCredential_Out:
    certInfo: TPM2B_DIGEST


@dataclass(frozen=True)
class TestParms_In:
    parameters: TPMT_PUBLIC_PARMS


@dataclass(frozen=True)
class Sign_In:
    digest: TPM2B_DIGEST
    inScheme: TPMT_SIG_SCHEME
    validation: TPMT_TK_HASHCHECK_IN


@dataclass(frozen=True)
class Sign_Out:
    signature: TPMT_SIGNATURE


@dataclass(frozen=True)
class VerifySignature_In:
    digest: TPM2B_DIGEST
    signature: TPMT_SIGNATURE_IN


@dataclass(frozen=True)
class VerifySignature_Out:
    validation: TPMT_TK_VERIFIED


# ---- the table --------------------------------------------------------------------------
def _key(auth: Auth | None = None, name: str = "keyHandle") -> HandleSpec:
    return HandleSpec(name, TPMI_DH_OBJECT, auth)


KEY_COMMANDS: tuple[Command, ...] = (
    Command(CC.RSA_Encrypt, (_key(),), RSA_Encrypt_In, RSA_Encrypt_Out,
            decrypt=True, encrypt=True),
    Command(CC.RSA_Decrypt, (_key(Auth.USER),), RSA_Decrypt_In, RSA_Decrypt_Out,
            decrypt=True, encrypt=True),
    Command(CC.ECDH_KeyGen, (_key(),), Empty, ECDH_KeyGen_Out, encrypt=True),
    Command(CC.ECDH_ZGen, (_key(Auth.USER),), ECDH_ZGen_In, ECDH_ZGen_Out,
            decrypt=True, encrypt=True),
    Command(CC.EncryptDecrypt, (_key(Auth.USER),), EncryptDecrypt_In, EncryptDecrypt_Out,
            encrypt=True),
    Command(CC.EncryptDecrypt2, (_key(Auth.USER),), EncryptDecrypt2_In, EncryptDecrypt_Out,
            decrypt=True, encrypt=True),
    Command(CC.HMAC, (_key(Auth.USER, "handle"),), HMAC_In, HMAC_Out,
            decrypt=True, encrypt=True),
    Command(CC.HMAC_Start, (_key(Auth.USER, "handle"),), HMAC_Start_In, SequenceStart_Out,
            response_handle=True, decrypt=True),
    Command(CC.HashSequenceStart, (), HashSequenceStart_In, SequenceStart_Out,
            response_handle=True, decrypt=True),
    Command(CC.SequenceUpdate, (_key(Auth.USER, "sequenceHandle"),), SequenceUpdate_In,
            Empty, decrypt=True),
    Command(CC.SequenceComplete, (_key(Auth.USER, "sequenceHandle"),), SequenceComplete_In,
            SequenceComplete_Out, flushed=True, decrypt=True, encrypt=True),
    Command(CC.EventSequenceComplete,
            (HandleSpec("pcrHandle", TPMI_DH_PCR_NULL, Auth.USER),
             _key(Auth.USER, "sequenceHandle")),
            SequenceUpdate_In, EventSequenceComplete_Out, nv=True, flushed=True, decrypt=True),
    Command(CC.MakeCredential, (_key(None, "handle"),), MakeCredential_In, MakeCredential_Out,
            decrypt=True, encrypt=True),
    Command(CC.ActivateCredential, (_key(Auth.ADMIN, "activateHandle"), _key(Auth.USER)),
            ActivateCredential_In, ActivateCredential_Out, decrypt=True, encrypt=True),
    Command(CC.TestParms, (), TestParms_In, Empty),
    Command(CC.Sign, (_key(Auth.USER),), Sign_In, Sign_Out, decrypt=True),
    Command(CC.VerifySignature, (_key(),), VerifySignature_In, VerifySignature_Out,
            decrypt=True),
)

# The ECC commands beyond ECDH (ECC_Parameters, EC_Ephemeral, Commit, ZGen_2Phase).
from .ecc_commands import ECC_COMMANDS  # noqa: E402

KEY_COMMANDS = KEY_COMMANDS + ECC_COMMANDS
