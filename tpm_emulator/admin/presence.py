"""Physical presence (Part 1, 19.x "Physical Presence Authorization"; Part 3, 26.2).

This TPM has no physical-presence signal: no switch, jumper or firmware indication
reaches a virtual TPM, so presence is never asserted. Part 3 makes TPM2_PP_Commands
itself always need presence, so it is the only command on the list and the list can
never change; TPM_CAP_PP_COMMANDS reports exactly that, as libtpms does under swtpm.
PolicyPhysicalPresence, by the same fact, never succeeds at authorization.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..constants import CC, RC, RH
from ..errors import TpmError, with_session

#: Commands that need physical presence when authorized with platformAuth/platformPolicy.
PP_REQUIRED: frozenset[int] = frozenset({CC.PP_Commands})


def asserted() -> bool:
    """Whether the platform asserts physical presence (never, here)."""
    return False


def check(cc: int, auth_handles: Sequence[int]) -> None:
    """Refuse a command that needs presence before its authorization is checked: the
    reference does so first, so a wrong platformAuth still answers TPM_RC_PP + S1
    and costs the caller nothing."""
    if cc in PP_REQUIRED and auth_handles and auth_handles[0] == RH.PLATFORM \
            and not asserted():
        raise TpmError(with_session(RC.PP, 1), "physical presence is not asserted")
