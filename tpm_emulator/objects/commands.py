"""Part 3 object commands as declarations (clauses 12, 28): handles, parameter and
response shapes, TPMA_CC attributes (checked against libtpms' TPM_CAP_COMMANDS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from ..codec import Int
from ..commands import (
    Auth,
    Command,
    HandleSpec,
    _persistent,
    _transient,
)
from ..constants import CC, RC, RH
from ..structures import (
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_SENSITIVE_DATA,
    TPMI_RH_HIERARCHY_NULL,
    TPML_PCR_SELECTION,
)
from .public import (
    TPM2B_CREATION_DATA,
    TPM2B_DATA,
    TPM2B_NAME,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_PUBLIC_NAMED,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_IN,
    TPMT_TK_CREATION,
)


def TPMI_DH_OBJECT(h: int) -> bool:
    return _transient(h) or _persistent(h)


def TPMI_RH_HIERARCHY_PLUS(h: int) -> bool:
    return h in (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.NULL)


def TPMI_RH_PROVISION(h: int) -> bool:
    return h in (RH.OWNER, RH.PLATFORM)


TPMI_DH_PERSISTENT = Annotated[int, Int("I", range(0x81000000, 0x82000000), RC.VALUE)]


@dataclass(frozen=True)
class Create_In:
    inSensitive: TPM2B_SENSITIVE_CREATE
    inPublic: TPM2B_PUBLIC_NAMED
    outsideInfo: TPM2B_DATA
    creationPCR: TPML_PCR_SELECTION


@dataclass(frozen=True)
class CreatePrimary_Out:
    objectHandle: Annotated[int, Int("I")]
    outPublic: TPM2B_PUBLIC
    creationData: TPM2B_CREATION_DATA
    creationHash: TPM2B_DIGEST
    creationTicket: TPMT_TK_CREATION
    name: TPM2B_NAME


@dataclass(frozen=True)
class Create_Out:
    outPrivate: TPM2B_PRIVATE
    outPublic: TPM2B_PUBLIC
    creationData: TPM2B_CREATION_DATA
    creationHash: TPM2B_DIGEST
    creationTicket: TPMT_TK_CREATION


@dataclass(frozen=True)
class Load_In:
    inPrivate: TPM2B_PRIVATE
    inPublic: TPM2B_PUBLIC_NAMED


@dataclass(frozen=True)
class Load_Out:
    objectHandle: Annotated[int, Int("I")]
    name: TPM2B_NAME


@dataclass(frozen=True)
class LoadExternal_In:
    inPrivate: TPM2B_SENSITIVE_IN
    inPublic: TPM2B_PUBLIC
    hierarchy: TPMI_RH_HIERARCHY_NULL


@dataclass(frozen=True)
class ReadPublic_Out:
    outPublic: TPM2B_PUBLIC
    name: TPM2B_NAME
    qualifiedName: TPM2B_NAME


@dataclass(frozen=True)
class Unseal_Out:
    outData: TPM2B_SENSITIVE_DATA


@dataclass(frozen=True)
class ObjectChangeAuth_In:
    newAuth: TPM2B_AUTH


@dataclass(frozen=True)
class ObjectChangeAuth_Out:
    outPrivate: TPM2B_PRIVATE


@dataclass(frozen=True)
class EvictControl_In:
    persistentHandle: TPMI_DH_PERSISTENT


@dataclass(frozen=True)
class _Empty:
    pass


_PARENT = HandleSpec("parentHandle", TPMI_DH_OBJECT, Auth.USER)

OBJECT_COMMANDS: tuple[Command, ...] = (
    Command(CC.CreatePrimary, (HandleSpec("primaryHandle", TPMI_RH_HIERARCHY_PLUS, Auth.USER),),
            Create_In, CreatePrimary_Out, response_handle=True, decrypt=True, encrypt=True),
    Command(CC.Create, (_PARENT,), Create_In, Create_Out, decrypt=True, encrypt=True),
    Command(CC.Load, (_PARENT,), Load_In, Load_Out, response_handle=True, decrypt=True,
            encrypt=True),
    Command(CC.LoadExternal, (), LoadExternal_In, Load_Out, response_handle=True,
            decrypt=True, encrypt=True),
    Command(CC.ReadPublic, (HandleSpec("objectHandle", TPMI_DH_OBJECT),), _Empty,
            ReadPublic_Out, encrypt=True),
    Command(CC.Unseal, (HandleSpec("itemHandle", TPMI_DH_OBJECT, Auth.USER),), _Empty,
            Unseal_Out, encrypt=True),
    Command(CC.ObjectChangeAuth, (HandleSpec("objectHandle", TPMI_DH_OBJECT, Auth.ADMIN),
                                  HandleSpec("parentHandle", TPMI_DH_OBJECT)),
            ObjectChangeAuth_In, ObjectChangeAuth_Out, decrypt=True, encrypt=True),
    Command(CC.EvictControl, (HandleSpec("auth", TPMI_RH_PROVISION, Auth.USER),
                              HandleSpec("objectHandle", TPMI_DH_OBJECT)),
            EvictControl_In, _Empty, nv=True),
)

# CreateLoaded and the duplication commands (Part 3, 12.9 and clause 13).
from .duplication_commands import DUPLICATION_COMMANDS  # noqa: E402

OBJECT_COMMANDS += DUPLICATION_COMMANDS
