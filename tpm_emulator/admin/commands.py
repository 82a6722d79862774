"""Part 3 hierarchy, dictionary-attack, Clock, PCR-administration and platform commands
as declarations (clauses 22.5-22.7, 24.4-24.10, 25, 26.2-26.3, 29.2-29.3), merged into
``COMMANDS``.

TPMA_CC attributes are libtpms' (read from its TPM_CAP_COMMANDS): the commands that
replace seeds or flush hierarchies are ``extensive``; ClockRateAdjust and
PCR_SetAuthValue touch no NV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from ..codec import UINT32, UINT64, Int
from ..commands import TPMI_DH_PCR, Auth, Command, Empty, HandleSpec
from ..constants import CC, IMPLEMENTATION_PCR, RC, RH, TPM_ALG
from ..crypto import HASHES
from ..structures import TPM2B_AUTH, TPM2B_DIGEST, TPMI_YES_NO, TPML_CC, TPML_PCR_SELECTION


# ---- handle interface types (Part 2, 9.x): a refused value is TPM_RC_VALUE + Hn -----------
def TPMI_RH_CLEAR(h: int) -> bool:
    return h in (RH.LOCKOUT, RH.PLATFORM)


def TPMI_RH_HIERARCHY_AUTH(h: int) -> bool:
    return h in (RH.LOCKOUT, RH.ENDORSEMENT, RH.OWNER, RH.PLATFORM)


TPMI_RH_HIERARCHY_POLICY = TPMI_RH_HIERARCHY_AUTH  # no TPM_RH_ACT_x: no ACTs here


def TPMI_RH_HIERARCHY(h: int) -> bool:
    return h in (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM)


def TPMI_RH_PLATFORM(h: int) -> bool:
    return h == RH.PLATFORM


def TPMI_RH_LOCKOUT(h: int) -> bool:
    return h == RH.LOCKOUT


def TPMI_RH_PROVISION(h: int) -> bool:
    return h in (RH.OWNER, RH.PLATFORM)


# ---- parameter interface types --------------------------------------------------------------
TPMI_RH_ENABLES = Annotated[
    int, Int("I", (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.PLATFORM_NV), RC.VALUE)]
TPMI_ALG_HASH_NULL = Annotated[int, Int("H", (*HASHES, TPM_ALG.NULL), RC.HASH)]  # "+"
# TPM_CLOCK_ADJUST (Part 2, 6.8): an INT8 from -3 to 3, kept as its octet (0xFD-0x03).
TPM_CLOCK_ADJUST = Annotated[int, Int("B", (0xFD, 0xFE, 0xFF, 0, 1, 2, 3), RC.VALUE)]
TPMI_DH_PCR_PARAM = Annotated[int, Int("I", range(IMPLEMENTATION_PCR), RC.VALUE)]


@dataclass(frozen=True)
class ClearControl_In:
    disable: TPMI_YES_NO


@dataclass(frozen=True)
class HierarchyChangeAuth_In:
    newAuth: TPM2B_AUTH


@dataclass(frozen=True)
class HierarchyControl_In:
    enable: TPMI_RH_ENABLES
    state: TPMI_YES_NO


@dataclass(frozen=True)
class SetPrimaryPolicy_In:
    authPolicy: TPM2B_DIGEST
    hashAlg: TPMI_ALG_HASH_NULL


@dataclass(frozen=True)
class DictionaryAttackParameters_In:
    newMaxTries: UINT32
    newRecoveryTime: UINT32
    lockoutRecovery: UINT32


@dataclass(frozen=True)
class ClockSet_In:
    newTime: UINT64


@dataclass(frozen=True)
class ClockRateAdjust_In:
    rateAdjust: TPM_CLOCK_ADJUST


@dataclass(frozen=True)
class PCR_Allocate_In:
    pcrAllocation: TPML_PCR_SELECTION


@dataclass(frozen=True)
class PCR_Allocate_Out:
    allocationSuccess: TPMI_YES_NO
    maxPCR: UINT32
    sizeNeeded: UINT32
    sizeAvailable: UINT32


@dataclass(frozen=True)
class PCR_SetAuthPolicy_In:
    authPolicy: TPM2B_DIGEST
    hashAlg: TPMI_ALG_HASH_NULL
    pcrNum: TPMI_DH_PCR_PARAM


@dataclass(frozen=True)
class PCR_SetAuthValue_In:
    auth: TPM2B_DIGEST


@dataclass(frozen=True)
class PP_Commands_In:
    setList: TPML_CC
    clearList: TPML_CC


@dataclass(frozen=True)
class SetAlgorithmSet_In:
    algorithmSet: UINT32


def _auth(name: str, accepts: Callable[[int], bool]) -> tuple[HandleSpec, ...]:
    return (HandleSpec(name, accepts, Auth.USER),)


_CLEAR = _auth("authHandle", TPMI_RH_CLEAR)
_PLATFORM = _auth("authHandle", TPMI_RH_PLATFORM)
_LOCKOUT = _auth("lockHandle", TPMI_RH_LOCKOUT)
_PROVISION = _auth("auth", TPMI_RH_PROVISION)

ADMIN_COMMANDS: tuple[Command, ...] = (
    Command(CC.PCR_Allocate, _PLATFORM, PCR_Allocate_In, PCR_Allocate_Out, nv=True),
    Command(CC.PCR_SetAuthPolicy, _PLATFORM, PCR_SetAuthPolicy_In, Empty, nv=True,
            decrypt=True),
    Command(CC.PCR_SetAuthValue, _auth("pcrHandle", TPMI_DH_PCR), PCR_SetAuthValue_In,
            Empty, decrypt=True),
    Command(CC.ChangePPS, _PLATFORM, Empty, Empty, nv=True, extensive=True),
    Command(CC.ChangeEPS, _PLATFORM, Empty, Empty, nv=True, extensive=True),
    Command(CC.Clear, _CLEAR, Empty, Empty, nv=True, extensive=True),
    Command(CC.ClearControl, _auth("auth", TPMI_RH_CLEAR), ClearControl_In, Empty, nv=True),
    Command(CC.HierarchyChangeAuth, _auth("authHandle", TPMI_RH_HIERARCHY_AUTH),
            HierarchyChangeAuth_In, Empty, nv=True, decrypt=True),
    Command(CC.HierarchyControl, _auth("authHandle", TPMI_RH_HIERARCHY), HierarchyControl_In,
            Empty, nv=True, extensive=True),
    Command(CC.SetPrimaryPolicy, _auth("authHandle", TPMI_RH_HIERARCHY_POLICY),
            SetPrimaryPolicy_In, Empty, nv=True, decrypt=True),
    Command(CC.DictionaryAttackLockReset, _LOCKOUT, Empty, Empty, nv=True),
    Command(CC.DictionaryAttackParameters, _LOCKOUT, DictionaryAttackParameters_In, Empty,
            nv=True),
    Command(CC.ClockSet, _PROVISION, ClockSet_In, Empty, nv=True),
    Command(CC.ClockRateAdjust, _PROVISION, ClockRateAdjust_In, Empty),
    Command(CC.PP_Commands, _PLATFORM, PP_Commands_In, Empty, nv=True),
    Command(CC.SetAlgorithmSet, _PLATFORM, SetAlgorithmSet_In, Empty, nv=True),
)
