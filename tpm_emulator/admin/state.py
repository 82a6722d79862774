"""Hierarchy and dictionary-attack state, and its snapshot record.

Part 1 splits it the way the reference does:

* ``AdminState`` (in ``PermanentState``; the reference's ``gp``): ownerAuth,
  endorsementAuth, lockoutAuth and their authPolicies, disableClear, the DA counters and
  parameters, and the PCR policy group's authPolicy. Only TPM2_Clear (and, for the
  endorsement hierarchy, TPM2_ChangeEPS) takes them back.
* ``StateClear`` (in ``ResetData``; the reference's ``gc`` and ``g_phEnable``): the
  TPMA_STARTUP_CLEAR enables, platformAuth/platformPolicy and the PCR authValue group.
  Every Startup(CLEAR) sets them afresh; Shutdown(STATE) keeps them for a TPM Resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated

from ..codec import UINT32, UINT64, Int, ListOf, Sized
from ..constants import TPM_ALG
from ..crypto import HASHES

# Defaults of the reference's DAPreInstall_Init, which libtpms and swtpm report on a
# fresh TPM and TPM2_Clear restores (maxTries 3, both recovery times 1000 s).
DEFAULT_MAX_TRIES = 3
DEFAULT_RECOVERY_TIME = 1000
DEFAULT_LOCKOUT_RECOVERY = 1000


@dataclass(frozen=True)
class AuthPolicy:
    """An authPolicy and the hash that made it; TPM_ALG_NULL with no digest is "none"."""

    alg: int = TPM_ALG.NULL
    digest: bytes = b""


@dataclass
class HierarchyAuth:
    """A hierarchy's authValue (trailing zeros removed) and authPolicy."""

    auth_value: bytes = b""
    policy: AuthPolicy = AuthPolicy()


@dataclass
class DictionaryAttack:
    """Part 1, 19.8.x "Dictionary Attack Protection": ``failed_tries`` counts
    authorization failures of DA-protected entities; at ``max_tries`` the TPM is in
    lockout. One failure heals every ``recovery_time`` seconds; a failed lockoutAuth
    disables lockoutAuth for ``lockout_recovery`` seconds. The anchors are Clock
    values (ms) at which the current healing interval began."""

    failed_tries: int = 0
    max_tries: int = DEFAULT_MAX_TRIES
    recovery_time: int = DEFAULT_RECOVERY_TIME
    lockout_recovery: int = DEFAULT_LOCKOUT_RECOVERY
    lockout_auth_enabled: bool = True
    heal_anchor_ms: int = 0
    lockout_anchor_ms: int = 0
    used: bool = False  # a DA-protected authorization was checked since Startup/Shutdown

    @property
    def in_lockout(self) -> bool:
        return self.failed_tries >= self.max_tries


@dataclass
class AdminState:
    """The persistent part (``gp``)."""

    owner: HierarchyAuth = field(default_factory=HierarchyAuth)
    endorsement: HierarchyAuth = field(default_factory=HierarchyAuth)
    lockout: HierarchyAuth = field(default_factory=HierarchyAuth)
    disable_clear: bool = False
    da: DictionaryAttack = field(default_factory=DictionaryAttack)
    pcr_policy: AuthPolicy = AuthPolicy()  # the PCR policy group (PCR_SetAuthPolicy)
    algorithm_set: int = 0  # TPM2_SetAlgorithmSet's vendor-defined value


@dataclass
class StateClear:
    """The state-clear part (``gc``): TPMA_STARTUP_CLEAR (Part 2, 8.7) and the
    platform hierarchy's authorization, which platform firmware sets on every boot."""

    ph_enable: bool = True
    sh_enable: bool = True
    eh_enable: bool = True
    ph_enable_nv: bool = True
    platform: HierarchyAuth = field(default_factory=HierarchyAuth)
    pcr_auth: bytes = b""  # the PCR authValue group (PCR_SetAuthValue)

    def copy(self) -> StateClear:
        return replace(self, platform=replace(self.platform))


# ---- snapshot record (a Trailing field of the state blob, version 1) ---------------------
_Alg = Annotated[int, Int("H", (TPM_ALG.NULL, *HASHES))]
_Value = Annotated[bytes, Sized(64)]
_Flag = Annotated[int, Int("B", (0, 1))]


@dataclass(frozen=True)
class PolicyRecord:
    alg: _Alg
    digest: _Value


@dataclass(frozen=True)
class HierarchyAuthRecord:
    authValue: _Value
    policy: PolicyRecord


@dataclass(frozen=True)
class StateClearRecord:
    enables: Annotated[int, Int("B", range(16))]  # TPMA_STARTUP_CLEAR bits 0-3
    platform: HierarchyAuthRecord
    pcrAuth: _Value


@dataclass(frozen=True)
class AdminRecord:
    version: Annotated[int, Int("B", (1,))]
    owner: HierarchyAuthRecord
    endorsement: HierarchyAuthRecord
    lockout: HierarchyAuthRecord
    disableClear: _Flag
    failedTries: UINT32
    maxTries: UINT32
    recoveryTime: UINT32
    lockoutRecovery: UINT32
    lockoutAuthEnabled: _Flag
    daUsed: _Flag
    healAnchor: UINT64
    lockoutAnchor: UINT64
    pcrPolicy: PolicyRecord
    current: Annotated[tuple[StateClearRecord, ...], ListOf(StateClearRecord, 1)]
    shutdown: Annotated[tuple[StateClearRecord, ...], ListOf(StateClearRecord, 1)]


def _policy_record(p: AuthPolicy) -> PolicyRecord:
    return PolicyRecord(p.alg, p.digest)


def _auth_record(h: HierarchyAuth) -> HierarchyAuthRecord:
    return HierarchyAuthRecord(h.auth_value, _policy_record(h.policy))


def _policy(r: PolicyRecord) -> AuthPolicy:
    return AuthPolicy(r.alg, r.digest)


def _auth(r: HierarchyAuthRecord) -> HierarchyAuth:
    return HierarchyAuth(r.authValue, _policy(r.policy))


def stclear_record(s: StateClear) -> StateClearRecord:
    enables = (s.ph_enable | s.sh_enable << 1 | s.eh_enable << 2 | s.ph_enable_nv << 3)
    return StateClearRecord(enables, _auth_record(s.platform), s.pcr_auth)


def stclear_from(r: StateClearRecord) -> StateClear:
    e = r.enables
    return StateClear(bool(e & 1), bool(e & 2), bool(e & 4), bool(e & 8),
                      _auth(r.platform), r.pcrAuth)


def admin_record(a: AdminState, current: StateClear | None,
                 shutdown: StateClear | None) -> AdminRecord:
    da = a.da
    return AdminRecord(
        1, _auth_record(a.owner), _auth_record(a.endorsement), _auth_record(a.lockout),
        int(a.disable_clear), da.failed_tries, da.max_tries, da.recovery_time,
        da.lockout_recovery, int(da.lockout_auth_enabled), int(da.used),
        da.heal_anchor_ms, da.lockout_anchor_ms, _policy_record(a.pcr_policy),
        (stclear_record(current),) if current is not None else (),
        (stclear_record(shutdown),) if shutdown is not None else (),
    )


def admin_from(r: AdminRecord) -> AdminState:
    da = DictionaryAttack(r.failedTries, r.maxTries, r.recoveryTime, r.lockoutRecovery,
                          bool(r.lockoutAuthEnabled), r.healAnchor, r.lockoutAnchor,
                          bool(r.daUsed))
    return AdminState(_auth(r.owner), _auth(r.endorsement), _auth(r.lockout),
                      bool(r.disableClear), da, _policy(r.pcrPolicy))
