"""The ``groups`` module: a group's vTPMs start and migrate in only on a host whose
DomS0 measurement is on the group's latest approval list (see :mod:`.groups`).

It is always active, whatever modules are configured: an approval list is the group
owner's policy, not the host's. vTPMs in no group are not its business."""

from __future__ import annotations

from .groups import Groups
from .hooks import Action, Decision, Request

NAME = "groups"
RUNS = frozenset({Action.START, Action.MIGRATE_IN})


class GroupModule:
    name = NAME
    cacheable = False           # a newer list may drop this host

    def __init__(self, groups: Groups, measurements: tuple[bytes, ...]) -> None:
        self.groups = groups
        #: This DomS0's code digest and whole measurement digest.
        self.measurements = measurements

    def decide(self, request: Request) -> Decision:
        target = request.target
        if target is None or not target.group or request.action not in RUNS:
            return Decision(True, NAME, "not mediated by approval groups")
        group = self.groups.get(target.group)
        if group is None:
            return Decision(False, NAME, f"vTPM {target.name} is in group {target.group}, "
                                         "which this host does not know")
        if not group.approves(self.measurements):
            return Decision(False, NAME,
                            f"this host's DomS0 measurement is not on group {group.name}'s "
                            f"approval list (sequence {group.sequence})")
        return Decision(True, NAME, f"on group {group.name}'s approval list "
                                    f"{group.sequence}")
