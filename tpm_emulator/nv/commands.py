"""Part 3, clause 31 (NV storage) as command declarations, merged into ``COMMANDS``.

TPMA_CC attributes follow the reference's command attribute table: every NV command
but NV_Read and NV_ReadPublic carries ``nv``; cHandles counts the handle area.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..codec import UINT16, UINT64
from ..commands import Auth, Command, Empty, HandleSpec
from ..constants import CC, RH
from ..structures import TPM2B_AUTH
from .public import TPM2B_MAX_NV_BUFFER, TPM2B_NAME, TPM2B_NV_PUBLIC, is_nv_index


# ---- handle interface types (Part 2, 9.x) -------------------------------------------------
def TPMI_RH_PROVISION(h: int) -> bool:
    return h in (RH.OWNER, RH.PLATFORM)


def TPMI_RH_PLATFORM(h: int) -> bool:
    return h == RH.PLATFORM


def TPMI_RH_NV_AUTH(h: int) -> bool:
    return h in (RH.OWNER, RH.PLATFORM) or is_nv_index(h)


def TPMI_RH_NV_INDEX(h: int) -> bool:
    return is_nv_index(h)


# ---- parameters and responses ---------------------------------------------------------------
@dataclass(frozen=True)
class NV_DefineSpace_In:
    auth: TPM2B_AUTH
    publicInfo: TPM2B_NV_PUBLIC


@dataclass(frozen=True)
class NV_Write_In:
    data: TPM2B_MAX_NV_BUFFER
    offset: UINT16


@dataclass(frozen=True)
class NV_Extend_In:
    data: TPM2B_MAX_NV_BUFFER


@dataclass(frozen=True)
class NV_SetBits_In:
    bits: UINT64


@dataclass(frozen=True)
class NV_Read_In:
    size: UINT16
    offset: UINT16


@dataclass(frozen=True)
class NV_Read_Out:
    data: TPM2B_MAX_NV_BUFFER


@dataclass(frozen=True)
class NV_ReadPublic_Out:
    nvPublic: TPM2B_NV_PUBLIC
    nvName: TPM2B_NAME


@dataclass(frozen=True)
class NV_ChangeAuth_In:
    newAuth: TPM2B_AUTH


_PROVISION = HandleSpec("authHandle", TPMI_RH_PROVISION, Auth.USER)
_NV_AUTH = HandleSpec("authHandle", TPMI_RH_NV_AUTH, Auth.USER)
_NV_INDEX = HandleSpec("nvIndex", TPMI_RH_NV_INDEX)

NV_COMMANDS: tuple[Command, ...] = (
    Command(CC.NV_DefineSpace, (_PROVISION,), NV_DefineSpace_In, Empty, nv=True,
            decrypt=True),
    Command(CC.NV_UndefineSpace, (_PROVISION, _NV_INDEX), Empty, Empty, nv=True),
    Command(CC.NV_UndefineSpaceSpecial,
            (HandleSpec("nvIndex", TPMI_RH_NV_INDEX, Auth.ADMIN),
             HandleSpec("platform", TPMI_RH_PLATFORM, Auth.USER)),
            Empty, Empty, nv=True),
    Command(CC.NV_ReadPublic, (_NV_INDEX,), Empty, NV_ReadPublic_Out, encrypt=True),
    Command(CC.NV_Write, (_NV_AUTH, _NV_INDEX), NV_Write_In, Empty, nv=True, decrypt=True),
    Command(CC.NV_Increment, (_NV_AUTH, _NV_INDEX), Empty, Empty, nv=True),
    Command(CC.NV_Extend, (_NV_AUTH, _NV_INDEX), NV_Extend_In, Empty, nv=True, decrypt=True),
    Command(CC.NV_SetBits, (_NV_AUTH, _NV_INDEX), NV_SetBits_In, Empty, nv=True),
    Command(CC.NV_WriteLock, (_NV_AUTH, _NV_INDEX), Empty, Empty, nv=True),
    Command(CC.NV_GlobalWriteLock, (_PROVISION,), Empty, Empty, nv=True),
    Command(CC.NV_Read, (_NV_AUTH, _NV_INDEX), NV_Read_In, NV_Read_Out, encrypt=True),
    Command(CC.NV_ReadLock, (_NV_AUTH, _NV_INDEX), Empty, Empty, nv=True),
    Command(CC.NV_ChangeAuth, (HandleSpec("nvIndex", TPMI_RH_NV_INDEX, Auth.ADMIN),),
            NV_ChangeAuth_In, Empty, nv=True, decrypt=True),
)
