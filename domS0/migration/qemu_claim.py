"""The source's answer when a destination claims a vTPM that left in QEMU's stream."""

from __future__ import annotations

import logging

from vtpm_manager.errors import ManagerError
from vtpm_manager.instance import Instance
from vtpm_manager.manager import QEMU_PEER
from vtpm_manager.store import MigrationMark

log = logging.getLogger("doms0.migration")


def claim_answer(instance: Instance, migration_id: str, claimer: str) -> str:
    """The source's side of Claim: give the vTPM up if it is still in QEMU's stream
    under this migration (store the tombstone naming the claimer)."""
    with instance.lock:
        mark = instance.record.migration
        if mark is None or mark.migration_id != migration_id:
            return "aborted"
        if mark.state == "migrated":
            return "committed" if mark.peer_host == claimer else "aborted"
        if mark.state != "outgoing" or mark.peer_host != QEMU_PEER:
            return "aborted"
        try:
            instance.remark(MigrationMark("migrated", migration_id, "", claimer,
                                          mark.generation),
                            drop_state=True, migrations=mark.generation)
        except (OSError, ManagerError):
            return "aborted"
    log.info("vTPM %s given up to %s (QEMU migration %d)", instance.record.name, claimer,
             mark.generation)
    return "committed"
