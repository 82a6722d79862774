"""Part 3 declarations of TPM2_CreateLoaded (12.9) and the duplication commands
(clause 13: Duplicate, Rewrap, Import); their bodies are in ``create_loaded.py`` and
``duplication.py``. TPMA_CC values are checked against libtpms' TPM_CAP_COMMANDS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from ..codec import Int, Sized
from ..commands import Auth, Command, HandleSpec
from ..constants import CC, RH
from ..structures import TPM2B_ENCRYPTED_SECRET
from .commands import TPMI_DH_OBJECT, TPMI_RH_HIERARCHY_PLUS
from .public import (
    TPM2B_DATA,
    TPM2B_NAME,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_PUBLIC_NAMED,
    TPM2B_SENSITIVE_CREATE,
    SymDef,
    SymDefObject,
)

# TPMT_SYM_DEF_OBJECT+: AES or TPM_ALG_NULL (Part 2, 11.1.7).
TPMT_SYM_DEF_OBJECT = Annotated[SymDef, SymDefObject()]
# TPM2B_TEMPLATE (Part 2): a TPMT_PUBLIC, or for a derivation parent a
# TPMT_PUBLIC whose unique field is a TPMS_DERIVE; parsed by the command body. Its size
# is bounded by sizeof(TPMT_PUBLIC) as the reference compiles it: 484 octets in libtpms
# (RSA up to 3072 bits); beyond that TPM_RC_SIZE, before the content is looked at.
TEMPLATE_MAX = 484
TPM2B_TEMPLATE = Annotated[bytes, Sized(TEMPLATE_MAX)]


def TPMI_DH_OBJECT_NULL(h: int) -> bool:
    return TPMI_DH_OBJECT(h) or h == RH.NULL


def TPMI_DH_PARENT(h: int) -> bool:
    """TPMI_DH_PARENT+ (Part 2): an object or a hierarchy, TPM_RH_NULL included."""
    return TPMI_DH_OBJECT(h) or TPMI_RH_HIERARCHY_PLUS(h)


@dataclass(frozen=True)
class CreateLoaded_In:
    inSensitive: TPM2B_SENSITIVE_CREATE
    inPublic: TPM2B_TEMPLATE


@dataclass(frozen=True)
class CreateLoaded_Out:
    objectHandle: Annotated[int, Int("I")]
    outPrivate: TPM2B_PRIVATE
    outPublic: TPM2B_PUBLIC
    name: TPM2B_NAME


@dataclass(frozen=True)
class Duplicate_In:
    encryptionKeyIn: TPM2B_DATA
    symmetricAlg: TPMT_SYM_DEF_OBJECT


@dataclass(frozen=True)
class Duplicate_Out:
    encryptionKeyOut: TPM2B_DATA
    duplicate: TPM2B_PRIVATE
    outSymSeed: TPM2B_ENCRYPTED_SECRET


@dataclass(frozen=True)
class Rewrap_In:
    inDuplicate: TPM2B_PRIVATE
    name: TPM2B_NAME
    inSymSeed: TPM2B_ENCRYPTED_SECRET


@dataclass(frozen=True)
class Rewrap_Out:
    outDuplicate: TPM2B_PRIVATE
    outSymSeed: TPM2B_ENCRYPTED_SECRET


@dataclass(frozen=True)
class Import_In:
    encryptionKey: TPM2B_DATA
    objectPublic: TPM2B_PUBLIC_NAMED
    duplicate: TPM2B_PRIVATE
    inSymSeed: TPM2B_ENCRYPTED_SECRET
    symmetricAlg: TPMT_SYM_DEF_OBJECT


@dataclass(frozen=True)
class Import_Out:
    outPrivate: TPM2B_PRIVATE


DUPLICATION_COMMANDS: tuple[Command, ...] = (
    Command(CC.CreateLoaded, (HandleSpec("parentHandle", TPMI_DH_PARENT, Auth.USER),),
            CreateLoaded_In, CreateLoaded_Out, response_handle=True, decrypt=True,
            encrypt=True),
    Command(CC.Duplicate, (HandleSpec("objectHandle", TPMI_DH_OBJECT, Auth.DUP),
                           HandleSpec("newParentHandle", TPMI_DH_OBJECT_NULL)),
            Duplicate_In, Duplicate_Out, decrypt=True, encrypt=True),
    Command(CC.Rewrap, (HandleSpec("oldParent", TPMI_DH_OBJECT_NULL, Auth.USER),
                        HandleSpec("newParent", TPMI_DH_OBJECT_NULL)),
            Rewrap_In, Rewrap_Out, decrypt=True, encrypt=True),
    Command(CC.Import, (HandleSpec("parentHandle", TPMI_DH_OBJECT, Auth.USER),),
            Import_In, Import_Out, decrypt=True, encrypt=True),
)
