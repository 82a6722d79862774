"""The TPM's power lifecycle as tables (Part 1, clause 12 "TPM Operational States").

What belongs here: which Startup type after which Shutdown is a TPM Reset, Restart or
Resume, and what each of those does to counters, proofs, PCRs and saved sessions; which
commands the TPM accepts before Startup; which commands void a pending Shutdown.
What does not: the mechanics (those are in ``tpm.py`` and ``handlers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from .constants import CC, SU


class Orderly(IntEnum):
    """What the last TPM2_Shutdown left behind (the reference's ``orderlyState``)."""

    NONE = 0  # no shutdown, or a state-changing command ran after it
    CLEAR = 1
    STATE = 2


class StartupKind(Enum):
    """Part 1, 12.2: the three ways a TPM can come up."""

    RESET = "TPM Reset"
    RESTART = "TPM Restart"
    RESUME = "TPM Resume"


# (startupType, orderly state left by the previous Shutdown) -> kind of startup.
# Any pair missing from the table is refused with TPM_RC_VALUE (Part 3, 9.3.1):
# Startup(STATE) needs a preceding Shutdown(STATE).
STARTUP_TRANSITIONS: dict[tuple[int, Orderly], StartupKind] = {
    (SU.CLEAR, Orderly.NONE): StartupKind.RESET,
    (SU.CLEAR, Orderly.CLEAR): StartupKind.RESET,
    (SU.CLEAR, Orderly.STATE): StartupKind.RESTART,
    (SU.STATE, Orderly.STATE): StartupKind.RESUME,
}


@dataclass(frozen=True)
class StartupEffects:
    """What a kind of startup does (Part 1, 12.2.3 - 12.2.5)."""

    new_null_proof: bool  # nullProof is regenerated: NULL-hierarchy contexts die
    count_reset: bool  # resetCount += 1, restartCount := 0
    count_restart: bool  # restartCount += 1
    restore_saved_pcrs: bool  # state-saved PCRs come back from Shutdown(STATE)
    keep_saved_sessions: bool  # saved session contexts stay loadable
    keep_pcr_counter: bool
    clear_nv_stclear: bool  # NV read locks, WRITE_STCLEAR locks, CLEAR_STCLEAR data


STARTUP_EFFECTS: dict[StartupKind, StartupEffects] = {
    StartupKind.RESET: StartupEffects(True, True, False, False, False, False, True),
    StartupKind.RESTART: StartupEffects(False, False, True, False, True, True, True),
    StartupKind.RESUME: StartupEffects(False, False, True, True, True, True, False),
}

# Before TPM2_Startup only TPM2_Startup is accepted; after it, TPM2_Startup is not
# (Part 3, 9.3.1; ExecuteCommand in the reference). Everything else: TPM_RC_INITIALIZE.
ALLOWED_BEFORE_STARTUP: frozenset[int] = frozenset({CC.Startup})
REFUSED_AFTER_STARTUP: frozenset[int] = frozenset({CC.Startup})

# Commands that may follow a Shutdown without voiding it. Any other command carrying
# the TPMA_CC nv attribute changes state the Shutdown recorded, so the pending
# orderly state is cleared (a later Startup(STATE) then fails). PCR_Allocate only
# records an allocation for the next _TPM_Init, which libtpms applies even to a TPM
# Resume after it (admin/allocation.py).
KEEPS_ORDERLY: frozenset[int] = frozenset(
    {CC.Shutdown, CC.SelfTest, CC.IncrementalSelfTest, CC.StirRandom, CC.PCR_Allocate}
)
