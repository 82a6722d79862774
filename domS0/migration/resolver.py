"""Settle vTPMs left marked by an interrupted migration, with their peer.

- ``outgoing`` (this host is the source and never stored its decision): abort — serve
  the vTPM here again, and tell the destination to drop its copy (best effort). Done
  once at start, before anything is served: no migration of this process is running.
- ``incoming`` (this host holds a pending copy): ask the source's Status. "committed":
  activate; "aborted": drop the copy; no answer or "outgoing": ask again later.
  Repeated every few seconds while any pending copy is left.
- ``migrated``: the tombstone; nothing to do (at start the Commit is sent once more so
  a destination that missed it activates without waiting for its own poll).
"""

from __future__ import annotations

import logging
import threading

import grpc

from vtpm_manager.instance import Instance
from vtpm_manager.manager import VtpmManager
from vtpm_manager.store import MigrationMark

from ..api.vtpm.v1 import vtpm_pb2 as pb
from ..api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from .artifacts import Artifacts
from .destination import activate, discard
from .identity import HostIdentity

log = logging.getLogger("doms0.migration")
POLL_SECONDS = 2.0
CALL_TIMEOUT = 5.0


class Resolver:
    def __init__(self, manager: VtpmManager, identity: HostIdentity,
                 artifacts: Artifacts) -> None:
        self._manager = manager
        self._identity = identity
        self._artifacts = artifacts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify: list[tuple[MigrationMark, str, Instance]] = []

    def settle_at_start(self) -> None:
        """Before anything is served: a migration this host never decided is aborted
        here, locally (no network: a peer that does not answer must not delay the
        start). Telling peers — Abort for those, Commit again for tombstones — is the
        background thread's first pass."""
        for instance, mark in self._marked():
            if mark.state == "outgoing":
                instance.remark(None)
                self._notify.append((mark, "Abort", instance))
                log.warning("vTPM %s: migration %s to %s was interrupted before its "
                            "decision; aborted, live here", instance.record.name,
                            mark.migration_id, mark.peer_host)
            elif mark.state == "migrated":
                self._notify.append((mark, "Commit", instance))

    def settle_pending(self) -> int:
        """One pass over pending copies; returns how many remain undecided."""
        left = 0
        for instance, mark in self._marked():
            if mark.state != "incoming":
                continue
            answer = self._call(mark, "Status", instance)
            if answer == "committed":
                activate(instance, mark)
            elif answer == "aborted":
                discard(self._manager, self._artifacts, instance, mark)
            else:
                left += 1
        return left

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="migration-resolver",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CALL_TIMEOUT)

    def _run(self) -> None:
        for mark, method, instance in self._notify:
            if self._stop.is_set():
                return
            self._call(mark, method, instance)
        self._notify.clear()
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.settle_pending()
            except Exception as exc:  # never let the resolver die
                log.error("migration resolver: %s", exc)

    def _marked(self) -> list[tuple[Instance, MigrationMark]]:
        return [(i, i.record.migration) for i in self._manager.list()
                if i.record.migration is not None]

    def _call(self, mark: MigrationMark, method: str, instance: Instance) -> str | None:
        if not mark.peer_address:
            return None
        ref = pb.MigrationRef(migration_id=bytes.fromhex(mark.migration_id),
                              vtpm_uuid=instance.record.uuid)
        try:
            with self._identity.channel(mark.peer_address) as channel:
                stub = pb_grpc.MigrationStub(channel)
                answer: pb.MigrationStatus = getattr(stub, method)(ref, timeout=CALL_TIMEOUT)
                return answer.state
        except grpc.RpcError as exc:
            log.info("migration %s: %s to %s not answered (%s)", mark.migration_id, method,
                     mark.peer_address, exc.details() if hasattr(exc, "details") else exc)
            return None
