"""The TPM_PT values this package owns (Part 2, 6.13): TPMA_PERMANENT (8.6),
TPMA_STARTUP_CLEAR (8.7), the dictionary-attack counters and parameters, and the
algorithm set (TPM2_SetAlgorithmSet)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import PT
from .da import self_heal

if TYPE_CHECKING:
    from ..tpm import TPM

# TPMA_PERMANENT bits
OWNER_AUTH_SET = 1 << 0
ENDORSEMENT_AUTH_SET = 1 << 1
LOCKOUT_AUTH_SET = 1 << 2
DISABLE_CLEAR = 1 << 8
IN_LOCKOUT = 1 << 9
TPM_GENERATED_EPS = 1 << 10  # our seeds all come from the TPM's own RNG

# TPMA_STARTUP_CLEAR bits
PH_ENABLE, SH_ENABLE, EH_ENABLE, PH_ENABLE_NV = 1 << 0, 1 << 1, 1 << 2, 1 << 3
ORDERLY = 1 << 31


def admin_properties(tpm: TPM) -> dict[int, int]:
    admin = tpm.perm.admin
    da = admin.da
    self_heal(da, tpm.clock_ms())  # as a command's TimeUpdate would, before reporting
    permanent = (
        (OWNER_AUTH_SET if admin.owner.auth_value else 0)
        | (ENDORSEMENT_AUTH_SET if admin.endorsement.auth_value else 0)
        | (LOCKOUT_AUTH_SET if admin.lockout.auth_value else 0)
        | (DISABLE_CLEAR if admin.disable_clear else 0)
        | (IN_LOCKOUT if da.in_lockout else 0)
        | TPM_GENERATED_EPS
    )
    startup_clear = ORDERLY if tpm.startup_orderly else 0
    if tpm._rd is not None:
        s = tpm._rd.stclear
        startup_clear |= ((PH_ENABLE if s.ph_enable else 0) | (SH_ENABLE if s.sh_enable else 0)
                          | (EH_ENABLE if s.eh_enable else 0)
                          | (PH_ENABLE_NV if s.ph_enable_nv else 0))
    return {
        PT.PERMANENT: permanent,
        PT.STARTUP_CLEAR: startup_clear,
        PT.LOCKOUT_COUNTER: da.failed_tries,
        PT.MAX_AUTH_FAIL: da.max_tries,
        PT.LOCKOUT_INTERVAL: da.recovery_time,
        PT.LOCKOUT_RECOVERY: da.lockout_recovery,
        PT.ALGORITHM_SET: admin.algorithm_set,
    }
