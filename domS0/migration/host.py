"""What a DomS0 with a migration identity offers its Manager service: migrate out."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from vtpm_manager.manager import VtpmManager
from vtpm_manager.store import MigrationMark

from ..security.setup import Security
from .artifacts import Artifacts
from .identity import HostIdentity
from .source import migrate_out

#: (step, message, percent), or the finished result / the exception that ended it.
Progress = tuple[str, str, int]


@dataclass(frozen=True)
class MigrationHost:
    manager: VtpmManager
    identity: HostIdentity
    artifacts: Artifacts
    allowed_code: frozenset[bytes]
    address: str                 # this host's migration listener, for the peer to call
    security: Security

    def migrate(self, ref: str, destination: str) -> Iterator[Progress | MigrationMark]:
        """Run one migration in its own thread, yielding its progress as it comes and
        finally the tombstone; an exception of the migration is raised here."""
        events: queue.Queue[Progress | MigrationMark | BaseException] = queue.Queue()

        def run() -> None:
            try:
                events.put(migrate_out(
                    self.manager, ref, destination, self.identity, self.artifacts,
                    self.allowed_code, self.security, self.address,
                    lambda step, message, percent: events.put((step, message, percent))))
            except BaseException as exc:
                events.put(exc)

        threading.Thread(target=run, name=f"migrate-{ref}", daemon=True).start()
        while True:
            event = events.get()
            if isinstance(event, BaseException):
                raise event
            yield event
            if isinstance(event, MigrationMark):
                return
