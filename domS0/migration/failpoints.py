"""Named points in the migration protocol where a test can make DomS0 die at once.

``DOMS0_FAILPOINT=NAME`` in DomS0's environment makes it SIGKILL itself when it reaches
the point NAME — no cleanup, no flush, as a power cut or an OOM kill would. This is how
the tests show that every step is persisted and that a restarted DomS0 finishes or
undoes an interrupted migration. Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "DOMS0_FAILPOINT"
#: Source side, then destination side, in protocol order.
POINTS = (
    "source-after-hello",        # proof checked, nothing stored yet
    "source-after-outgoing",     # outgoing mark stored, engine stopped, nothing sent
    "destination-after-pending",  # pending copy stored, Transfer not yet answered
    "source-after-transfer",     # destination has the pending copy, no decision yet
    "source-after-tombstone",    # decision stored, Commit not sent
    "destination-after-activate",  # active here, Commit not yet answered
)


def reach(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
