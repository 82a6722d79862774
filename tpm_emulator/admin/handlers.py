"""Command bodies of the hierarchy, dictionary-attack, Clock and PCR-administration
commands, in the order Part 3 (and libtpms) checks things. Registered in the shared
handler table; they run after authorization."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..commands import Empty
from ..constants import CC, IMPLEMENTATION_PCR, RC, RH, TPM_ALG
from ..crypto import HASHES
from ..errors import TpmError, with_parameter
from ..handlers import Invocation, handles
from ..pcr import PCR_AUTH_GROUP, PCR_POLICY_GROUP
from ..state import PROOF_SIZE, SEED_SIZE
from . import commands as ac
from . import da
from .hierarchy import flush, hierarchy_auth, void_orderly
from .state import AuthPolicy, DictionaryAttack, HierarchyAuth

if TYPE_CHECKING:
    from ..tpm import TPM

MAX_CLOCK = 0xFFFF000000000000  # Part 3, 29.2: ClockSet refuses anything larger
CLOCK_UPDATE_MASK = (1 << 12) - 1  # NV_CLOCK_UPDATE_INTERVAL (TPM_PT_CLOCK_UPDATE)
HCRTM_PCR, DRTM_PCR = 0, 17  # Part 3, 22.5: an allocation must keep one of each


def _policy(digest: bytes, alg: int, n: int) -> AuthPolicy:
    """An authPolicy must be a digest of its hashAlg; TPM_ALG_NULL means "none"."""
    size = HASHES[alg].size if alg != TPM_ALG.NULL else 0
    if len(digest) != size:
        raise TpmError(with_parameter(RC.SIZE, n), "authPolicy size does not match hashAlg")
    return AuthPolicy(alg, digest)


def _set_clock(tpm: TPM, new_ms: int) -> None:
    """Move Clock to ``new_ms``; the DA healing intervals move with it."""
    delta = new_ms - tpm.clock_ms()
    tpm.perm.clock_ms += delta
    da.shift_clock(tpm.perm.admin.da, delta)


# ---- 24.4 ChangePPS, 24.5 ChangeEPS -------------------------------------------------------------
@handles(CC.ChangePPS)
def change_pps(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    """New platform seed and phProof (old platform contexts stop loading); the
    platform and PCR policies go; platform objects are flushed, platform NV stays."""
    perm = tpm.perm
    perm.pps, perm.ph_proof = os.urandom(SEED_SIZE), os.urandom(PROOF_SIZE)
    tpm.reset_data.stclear.platform.policy = AuthPolicy()
    perm.admin.pcr_policy = AuthPolicy()
    flush(tpm, RH.PLATFORM, persistent=True)
    void_orderly(tpm)
    return Empty()


@handles(CC.ChangeEPS)
def change_eps(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    """New endorsement seed and ehProof: every EK changes. The endorsement hierarchy is
    enabled again with an empty authValue and no policy; its objects are flushed."""
    perm = tpm.perm
    perm.eps, perm.eh_proof = os.urandom(SEED_SIZE), os.urandom(PROOF_SIZE)
    tpm.reset_data.stclear.eh_enable = True
    perm.admin.endorsement = HierarchyAuth()
    flush(tpm, RH.ENDORSEMENT, persistent=True)
    void_orderly(tpm)
    return Empty()


# ---- 24.6 Clear, 24.7 ClearControl ------------------------------------------------------------
@handles(CC.Clear)
def clear(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    """Take ownership back to factory state: a new storage seed and new owner and
    endorsement proofs, empty owner/endorsement/lockout authorizations, no owner or
    endorsement objects, no owner NV indices, DA back to its defaults, Clock and the
    reset/restart counts to zero, PCR authValues cleared (Part 3, 24.6)."""
    perm = tpm.perm
    admin = perm.admin
    if admin.disable_clear:
        raise TpmError(RC.DISABLED, "TPM2_Clear is disabled")
    perm.sps = os.urandom(SEED_SIZE)
    perm.sh_proof, perm.eh_proof = os.urandom(PROOF_SIZE), os.urandom(PROOF_SIZE)
    stclear = tpm.reset_data.stclear
    stclear.sh_enable = stclear.eh_enable = True
    admin.owner, admin.endorsement, admin.lockout = (HierarchyAuth(), HierarchyAuth(),
                                                     HierarchyAuth())
    flush(tpm, RH.OWNER, persistent=True)
    flush(tpm, RH.ENDORSEMENT, persistent=True)
    _set_clock(tpm, 0)
    tpm.clock_safe = True
    admin.da = DictionaryAttack(used=admin.da.used)
    perm.reset_count = perm.restart_count = 0
    stclear.pcr_auth = b""
    tpm.reset_data.pcrs.changed(0)
    return Empty()


@handles(CC.ClearControl)
def clear_control(tpm: TPM, inv: Invocation, p: ac.ClearControl_In) -> Empty:
    # lockoutAuth may set disableClear but only platformAuth may clear it (libtpms
    # answers the bare TPM_RC_AUTH_FAIL).
    if inv.handles[0] == RH.LOCKOUT and not p.disable:
        raise TpmError(RC.AUTH_FAIL, "only the platform may re-enable TPM2_Clear")
    tpm.perm.admin.disable_clear = bool(p.disable)
    return Empty()


# ---- 24.8 HierarchyChangeAuth, 24.9 HierarchyControl, 24.10 SetPrimaryPolicy --------------
@handles(CC.HierarchyChangeAuth)
def hierarchy_change_auth(tpm: TPM, inv: Invocation, p: ac.HierarchyChangeAuth_In) -> Empty:
    # The TPM2B_AUTH bound (our largest digest) already holds; trailing zeros go.
    target = hierarchy_auth(tpm, inv.handles[0])
    assert target is not None  # TPMI_RH_HIERARCHY_AUTH admits hierarchies only
    target.auth_value = p.newAuth.rstrip(b"\x00")
    if inv.handles[0] == RH.PLATFORM:
        void_orderly(tpm)
    return Empty()


@handles(CC.HierarchyControl)
def hierarchy_control(tpm: TPM, inv: Invocation, p: ac.HierarchyControl_In) -> Empty:
    """Enable or disable a hierarchy until the next Startup(CLEAR). The platform may
    switch anything; the owner and endorsement may only switch their own hierarchy
    off, and a disabled one back on only by the platform (TPM_RC_AUTH_TYPE). Setting
    an enabled hierarchy "on" with its own authorization changes nothing and succeeds,
    as in libtpms (it refuses YES only for a hierarchy that is off)."""
    auth = inv.handles[0]
    state = tpm.reset_data.stclear
    on = bool(p.state)
    attrs: dict[int, str] = {RH.OWNER: "sh_enable", RH.ENDORSEMENT: "eh_enable",
                             RH.PLATFORM: "ph_enable", RH.PLATFORM_NV: "ph_enable_nv"}
    attr = attrs[p.enable]
    if p.enable in (RH.PLATFORM, RH.PLATFORM_NV):
        if auth != RH.PLATFORM:
            raise TpmError(RC.AUTH_TYPE, "only platformAuth switches the platform")
    elif auth not in (RH.PLATFORM, p.enable):
        raise TpmError(RC.AUTH_TYPE, "not this hierarchy's authorization")
    elif on and auth != RH.PLATFORM and not getattr(state, attr):
        raise TpmError(RC.AUTH_TYPE, "only platformAuth re-enables a hierarchy")
    if getattr(state, attr) != on:
        setattr(state, attr, on)
        if not on and p.enable != RH.PLATFORM_NV:
            flush(tpm, p.enable, persistent=False)
        void_orderly(tpm)
    return Empty()


@handles(CC.SetPrimaryPolicy)
def set_primary_policy(tpm: TPM, inv: Invocation, p: ac.SetPrimaryPolicy_In) -> Empty:
    policy = _policy(p.authPolicy, p.hashAlg, 1)
    target = hierarchy_auth(tpm, inv.handles[0])
    assert target is not None
    target.policy = policy
    if inv.handles[0] == RH.PLATFORM:
        void_orderly(tpm)
    return Empty()


# ---- 25.2 DictionaryAttackLockReset, 25.3 DictionaryAttackParameters ----------------------
@handles(CC.DictionaryAttackLockReset)
def da_lock_reset(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    tpm.perm.admin.da.failed_tries = 0
    return Empty()


@handles(CC.DictionaryAttackParameters)
def da_parameters(tpm: TPM, inv: Invocation, p: ac.DictionaryAttackParameters_In) -> Empty:
    # failedTries is kept (the errata removed its reset); maxTries 0 means lockout.
    d = tpm.perm.admin.da
    d.max_tries, d.recovery_time = p.newMaxTries, p.newRecoveryTime
    d.lockout_recovery = p.lockoutRecovery
    return Empty()


# ---- 29.2 ClockSet, 29.3 ClockRateAdjust ----------------------------------------------------
@handles(CC.ClockSet)
def clock_set(tpm: TPM, inv: Invocation, p: ac.ClockSet_In) -> Empty:
    now = tpm.clock_ms()
    if p.newTime > MAX_CLOCK or p.newTime < now:
        raise TpmError(with_parameter(RC.VALUE, 1), "Clock only moves forward")
    if p.newTime | CLOCK_UPDATE_MASK > now | CLOCK_UPDATE_MASK:
        tpm.clock_safe = True  # the TPM records Clock in NV: it is safe again
    _set_clock(tpm, p.newTime)
    return Empty()


@handles(CC.ClockRateAdjust)
def clock_rate_adjust(tpm: TPM, inv: Invocation, p: ac.ClockRateAdjust_In) -> Empty:
    # Our Clock follows the host's monotonic clock; there is no oscillator to trim.
    # The range (-3..3) was checked while unmarshalling.
    return Empty()


# ---- 22.5 PCR_Allocate, 22.6 PCR_SetAuthPolicy, 22.7 PCR_SetAuthValue ----------------------
def _count(bitmap: bytes) -> int:
    return sum(bin(b).count("1") for b in bitmap)


def _has(bitmap: bytes, pcr: int) -> bool:
    return pcr // 8 < len(bitmap) and bool(bitmap[pcr // 8] >> (pcr % 8) & 1)


@handles(CC.PCR_Allocate)
def pcr_allocate(tpm: TPM, inv: Invocation, p: ac.PCR_Allocate_In) -> ac.PCR_Allocate_Out:
    """Part 3, 22.5: the request replaces the listed banks of the *active* allocation
    (the last entry for a bank wins) and is checked for an H-CRTM and a D-RTM PCR.
    An allocation that fits is kept for the next _TPM_Init (admin/allocation.py)."""
    allocation = dict(tpm.reset_data.pcrs.allocated)
    for sel in p.pcrAllocation.pcrSelections:
        allocation[sel.hash] = sel.pcrSelect
    if not (any(_has(b, HCRTM_PCR) for b in allocation.values())
            and any(_has(b, DRTM_PCR) for b in allocation.values())):
        raise TpmError(RC.PCR, "the allocation drops the H-CRTM or D-RTM PCR")
    needed = sum(_count(bits) * HASHES[alg].size for alg, bits in allocation.items())
    available = IMPLEMENTATION_PCR * sum(h.size for h in HASHES.values())
    if needed <= available:
        tpm.perm.pcr_allocation.request(allocation)
    return ac.PCR_Allocate_Out(int(needed <= available), IMPLEMENTATION_PCR, needed, available)


@handles(CC.PCR_SetAuthPolicy)
def pcr_set_auth_policy(tpm: TPM, inv: Invocation, p: ac.PCR_SetAuthPolicy_In) -> Empty:
    policy = _policy(p.authPolicy, p.hashAlg, 1)
    if p.pcrNum not in PCR_POLICY_GROUP:
        raise TpmError(with_parameter(RC.VALUE, 3), "PCR is in no policy group")
    tpm.perm.admin.pcr_policy = policy
    return Empty()


@handles(CC.PCR_SetAuthValue)
def pcr_set_auth_value(tpm: TPM, inv: Invocation, p: ac.PCR_SetAuthValue_In) -> Empty:
    if inv.handles[0] not in PCR_AUTH_GROUP:
        raise TpmError(RC.VALUE, "PCR is in no authorization group")  # libtpms: unnumbered
    tpm.reset_data.stclear.pcr_auth = p.auth.rstrip(b"\x00")
    void_orderly(tpm)
    return Empty()


# ---- 26.2 PP_Commands, 26.3 SetAlgorithmSet ------------------------------------------------------
@handles(CC.PP_Commands)
def pp_commands(tpm: TPM, inv: Invocation, p: ac.PP_Commands_In) -> Empty:
    """Changing the list needs physical presence, which a virtual TPM never has
    (admin/presence.py refuses the command before its authorization, so this body
    only runs if that ever changes); the list stays PP_Commands alone."""
    raise TpmError(RC.PP, "physical presence is not asserted")


@handles(CC.SetAlgorithmSet)
def set_algorithm_set(tpm: TPM, inv: Invocation, p: ac.SetAlgorithmSet_In) -> Empty:
    """Part 3, 26.3: the value is the vendor's to interpret; every algorithm this TPM
    implements stays available whatever it is. It is kept (TPM_PT_ALGORITHM_SET) and
    survives TPM2_Clear, as in the reference."""
    tpm.perm.admin.algorithm_set = p.algorithmSet
    return Empty()
