"""Dictionary-attack protection (Part 1, 19.8.x "Dictionary Attack Protection").

An authorization that uses an authValue (a password, an HMAC session, or a policy
session after TPM2_PolicyAuthValue/PolicyPassword) of a DA-protected entity is first
refused with TPM_RC_LOCKOUT while the TPM is in lockout; when it fails, ``failedTries``
counts it. lockoutAuth is protected on its own: one failure disables it for
``lockoutRecovery`` seconds and never counts in ``failedTries``. Entities are exempt
when Part 1 says so: permanent handles other than TPM_RH_LOCKOUT, PCRs, objects with
noDA and NV indices with TPMA_NV_NO_DA (the ``Entity.da_exempt`` flag).

Timing follows the reference's DA.c, measured on Clock (which only advances, TPM2_ClockSet
excepted, and ClockSet moves the anchors with it so that it cannot hasten recovery).

One difference from libtpms: libtpms answers TPM_RC_RETRY to the first DA-protected
authorization of a power cycle (its USE_DA_USED NV-write ordering); our state changes
are atomic with the command, so we never ask for a retry. We keep the rest of that
rule: such an authorization voids a pending orderly shutdown, and a TPM that then loses
power without TPM2_Shutdown counts one failure at the next TPM2_Startup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..constants import RC, RH, SE
from ..errors import TpmError, base_code
from ..lifecycle import Orderly
from ..session_table import Session
from ..sessions import Entity
from .state import DictionaryAttack

if TYPE_CHECKING:
    from ..tpm import TPM


def self_heal(da: DictionaryAttack, now_ms: int) -> None:
    """Forgive one failure per recoveryTime seconds since the last failure, and
    re-enable lockoutAuth lockoutRecovery seconds after its last failure (DASelfHeal)."""
    if da.failed_tries:
        if da.recovery_time == 0:  # DA protection is off: nothing is remembered
            da.failed_tries = 0
        else:
            da.failed_tries = min(da.failed_tries, da.max_tries)
            interval_ms = da.recovery_time * 1000
            healed = max(0, now_ms - da.heal_anchor_ms) // interval_ms
            da.failed_tries = max(0, da.failed_tries - healed)
            da.heal_anchor_ms += healed * interval_ms
    if not da.lockout_auth_enabled and da.lockout_recovery:
        # lockoutRecovery 0: only the next TPM2_Startup re-enables lockoutAuth
        if max(0, now_ms - da.lockout_anchor_ms) // 1000 >= da.lockout_recovery:
            da.lockout_auth_enabled = True


def shift_clock(da: DictionaryAttack, delta_ms: int) -> None:
    """TPM2_ClockSet moved Clock by ``delta_ms``: the healing intervals keep their length."""
    da.heal_anchor_ms += delta_ms
    da.lockout_anchor_ms += delta_ms


def on_startup(da: DictionaryAttack, previous: Orderly) -> None:
    """DAStartup: lockoutRecovery 0 re-enables lockoutAuth at every Startup; a power
    loss after a DA-protected authorization (no orderly shutdown) counts as a failure,
    since that authorization might have failed unrecorded."""
    if da.lockout_recovery == 0:
        da.lockout_auth_enabled = True
    if (da.used and previous == Orderly.NONE and da.recovery_time != 0
            and da.failed_tries < da.max_tries):
        da.failed_tries += 1
    da.used = False


def _uses_auth_value(s: Session | None) -> bool:
    if s is None or s.kind == SE.HMAC:
        return True
    return s.policy.auth_value_needed or s.policy.password_needed


@contextmanager
def guarded(tpm: TPM, handles: Sequence[int], entities: Sequence[Entity],
            sessions: Sequence[Session | None]) -> Iterator[Callable[[int], None]]:
    """Wrap the authorization checks of one command: refuse DA-protected entities while
    locked out (CheckLockedOut), and count a TPM_RC_AUTH_FAIL against the entity whose
    session failed (IncrementLockout / DARegisterFailure). The lockout check is the
    function it gives, to run just before each authorization is checked: the reference
    checks session by session (CheckAuthSession), so a failed password for a DA-exempt
    first handle is TPM_RC_BAD_AUTH even while a second handle is locked out."""
    da = tpm.perm.admin.da
    now = tpm.clock_ms()
    self_heal(da, now)

    def check_locked_out(i: int) -> None:
        if i >= len(handles):
            return
        handle, entity, s = handles[i], entities[i], sessions[i]
        if entity.da_exempt or not _uses_auth_value(s):
            return
        if handle == RH.LOCKOUT:
            if not da.lockout_auth_enabled:
                raise TpmError(RC.LOCKOUT, "lockoutAuth is disabled")
            return
        if da.in_lockout:
            raise TpmError(RC.LOCKOUT, "the TPM is in dictionary-attack lockout")
        if not da.used:
            da.used = True
            # After TPM2_Shutdown, the first one voids the orderly state (libtpms sets
            # SU_DA_USED), so that losing power now counts as a failure at Startup.
            if tpm.perm.orderly != Orderly.NONE:
                tpm.perm.orderly = Orderly.NONE
                tpm.perm.shutdown_state = None

    try:
        yield check_locked_out
    except TpmError as e:
        if base_code(e.rc) == RC.AUTH_FAIL:
            n = (e.rc >> 8) & 0x7  # the failing session's number (format-1, RC_S)
            if 1 <= n <= len(handles):
                _register_failure(da, handles[n - 1], now)
        raise


def _register_failure(da: DictionaryAttack, handle: int, now_ms: int) -> None:
    if handle == RH.LOCKOUT:
        da.lockout_auth_enabled = False
        da.lockout_anchor_ms = now_ms
        return
    if da.recovery_time != 0:
        da.failed_tries += 1
    da.heal_anchor_ms = now_ms
