"""The ``dummy`` module: XSM's default, ownership without labels.

Administrators may do everything. A domain may use only its own vTPM — the vTPM whose
domain (metadata ``domain``, else its name) is the principal's name — for everything
a guest or its builder does (create, start, stop, read, attach, transmit, build,
quote, seal, unseal), and nothing administrative. A peer host may only bring vTPMs in
by migration. Decisions depend only on the request: cacheable.
"""

from __future__ import annotations

from .hooks import ADMINISTRATIVE, Action, Decision, Request

NAME = "dummy"


class DummyModule:
    name = NAME
    cacheable = True

    def decide(self, request: Request) -> Decision:
        subject = request.subject
        if subject.kind == "admin":
            return Decision(True, NAME, "administrators may do everything")
        if subject.kind == "peer":
            if request.action is Action.MIGRATE_IN:
                return Decision(True, NAME, "peer hosts may migrate vTPMs in")
            return Decision(False, NAME, "peer hosts may only migrate vTPMs in")
        if subject.kind != "domain":
            return Decision(False, NAME, "unauthenticated callers may do nothing")
        if request.action in ADMINISTRATIVE or request.action is Action.MIGRATE_IN:
            return Decision(False, NAME, f"domains may not {request.action}")
        target = request.target
        if target is None:
            # Listing: the servicer shows a domain only its own vTPMs.
            return Decision(True, NAME, "domains see their own vTPMs")
        if target.domain != subject.name:
            return Decision(False, NAME, f"vTPM {target.name} belongs to domain "
                                         f"{target.domain}, not {subject.name}")
        return Decision(True, NAME, "a domain uses its own vTPM")
