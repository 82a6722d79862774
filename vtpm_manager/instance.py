"""One vTPM: its record, its engine when running, its holder, its lock.

Every operation on one vTPM takes its lock, so commands to one vTPM run one at a
time and in order, while different vTPMs run side by side. A state-changing
command's response is handed back only after the new state is durably in the
store; if the store cannot take it, the engine is rolled back to the last committed
state and the caller gets TPM_RC_NV_UNAVAILABLE, so what a client was told is
always what a restart will show.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from tpm_emulator.constants import RC
from tpm_emulator.frame import check_frame, error_response
from tpm_emulator.mutations import may_change_state

from .engine import Engine, EngineError
from .engines import cannot_migrate
from .errors import FailedPrecondition, InvalidArgument, Unavailable
from .store import MigrationMark, Record, StateStore

log = logging.getLogger(__name__)

EngineFactory = Callable[[str, Path], Engine]
MAX_LOCALITY = 4


class Lease:
    """Proof that a front end holds a vTPM; only its holder may use it meanwhile."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        self.token = secrets.token_hex(16)


class Instance:
    """A vTPM as the manager sees it."""

    def __init__(
        self, record: Record, store: StateStore, factory: EngineFactory, run_dir: Path
    ) -> None:
        self.record = record
        self._store = store
        self._factory = factory
        self._run_dir = run_dir
        self._engine: Engine | None = None
        self._lease: Lease | None = None
        self.lock = threading.RLock()

    # -- read-only views -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._engine is not None

    @property
    def holder(self) -> str | None:
        return self._lease.holder if self._lease else None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Run the engine from the committed state and mark the vTPM running."""
        with self.lock:
            if self._engine is not None:
                return
            self.refuse_if_marked()
            self._engine = self._launch(self.record.state)
            try:
                self._commit(running=True)
            except OSError:
                self._shutdown_engine()
                raise

    def stop(self, *, remember: bool = True) -> None:
        """Commit and stop the engine (callers decide whether a holder may object).

        ``remember=False`` keeps the record's running flag, so that a DomS0 shutting
        down starts this vTPM again at its next start.
        """
        with self.lock:
            if self._engine is None:
                return
            try:
                self._commit(running=False if remember else self.record.running)
            finally:
                self._shutdown_engine()

    def attach(self, holder: str) -> Lease:
        """Hold the vTPM for one front end; a second holder is refused by name."""
        with self.lock:
            if self._lease is not None:
                raise FailedPrecondition(
                    f"vTPM {self.record.name} is held by {self._lease.holder}; "
                    "detach that front end first"
                )
            self._lease = Lease(holder)
            return self._lease

    def detach(self, lease: Lease) -> None:
        with self.lock:
            if self._lease is lease:
                self._lease = None

    @contextmanager
    def exclusive(self, holder: str, *, force: bool = False) -> Iterator[Lease]:
        """A lease for a sequence of commands no one may interleave with (DomS0's own
        measurements, enrollment, quotes): the vTPM's lock is held throughout.

        If a front end holds the vTPM, ``force`` borrows its lease for the duration
        (its commands wait meanwhile); without ``force`` that is refused by name.
        """
        with self.lock:
            if self._lease is not None:
                if not force:
                    raise FailedPrecondition(
                        f"vTPM {self.record.name} is held by {self._lease.holder}; "
                        "detach that front end (stop the domain) first")
                yield self._lease
                return
            lease = self.attach(holder)
            try:
                yield lease
            finally:
                self.detach(lease)

    # -- commands --------------------------------------------------------------------

    def execute(self, command: bytes, locality: int, lease: Lease | None) -> bytes:
        """Run one command; returns the response bytes (TPM errors included)."""
        if not 0 <= locality <= MAX_LOCALITY:
            raise InvalidArgument(f"locality {locality} is out of range; use 0 to 4")
        with self.lock:
            self.refuse_if_marked()    # before the holder: say where the vTPM went
            self._check_lease(lease)
            engine = self._require_engine()
            framing_error = check_frame(command)
            if framing_error is not None:
                return framing_error
            try:
                response = engine.execute(command, locality)
            except EngineError as exc:
                self._recover(exc)
            if may_change_state(command) and not self._try_commit():
                return error_response(RC.NV_UNAVAILABLE)
            return response

    def power_cycle(self, lease: Lease | None, delete_volatile: bool) -> None:
        with self.lock:
            self._check_lease(lease)
            try:
                self._require_engine().power_cycle(delete_volatile)
            except EngineError as exc:
                self._recover(exc)
            if not self._try_commit():
                raise Unavailable(f"state of vTPM {self.record.name} could not be stored")

    def export_state(self, lease: Lease | None) -> bytes:
        """The engine's whole state (plaintext: callers must seal it before it leaves)."""
        with self.lock:
            self._check_lease(lease)
            self._refuse_if_unmigratable()
            return self._require_engine().export_state()

    def replace_state(self, lease: Lease | None, state: bytes) -> None:
        """Restart the engine from ``state`` and make that the committed state."""
        with self.lock:
            self._check_lease(lease)
            self._refuse_if_unmigratable()
            self._require_engine()
            # Engines own their run directory, so the old one stops before the new
            # one starts; a state the engine refuses brings the committed one back.
            self._shutdown_engine()
            try:
                self._engine = self._launch(state)
            except Unavailable:
                self._engine = self._launch(self.record.state)
                raise
            if not self._try_commit():
                raise Unavailable(f"state of vTPM {self.record.name} could not be stored")

    # -- migration ------------------------------------------------------------------

    def mark_outgoing(self, mark: MigrationMark) -> Record:
        """Quiesce for a migration: commit the engine's latest state, store the record
        with the ``outgoing`` mark, then stop the engine. Returns the record to send.

        The caller holds :attr:`lock` (or :meth:`exclusive`) around the whole exchange,
        so front-end commands wait rather than fail. If the mark cannot be stored
        (OSError) the vTPM stays live and nothing changed."""
        with self.lock:
            self.refuse_if_marked()
            self._refuse_if_unmigratable()
            if self._engine is not None:
                self._commit()
            self._save(replace(self.record, migration=mark))
            self._shutdown_engine()
            return self.record

    def remark(self, mark: MigrationMark | None, *, drop_state: bool = False,
               migrations: int | None = None) -> None:
        """Store a new migration mark (``None``: live here again, started if it was
        running), optionally dropping the state (a tombstone keeps none)."""
        with self.lock:
            new = replace(self.record, migration=mark,
                          state=None if drop_state else self.record.state,
                          migrations=self.record.migrations if migrations is None
                          else migrations)
            self._save(new)
            if mark is None and new.running and self._engine is None:
                self._engine = self._launch(new.state)

    def receive_state(self, mark: MigrationMark, state: bytes, *, running: bool,
                      metadata: dict[str, str]) -> None:
        """Store an arriving vTPM's state under its ``incoming`` mark (it does not run
        until the source gives it up)."""
        with self.lock:
            self._save(replace(self.record, state=state, migration=mark, running=running,
                               metadata=metadata))

    def _save(self, record: Record) -> None:
        self._store.save(record)
        self.record = record

    # -- internals -------------------------------------------------------------------

    def _check_lease(self, lease: Lease | None) -> None:
        if self._lease is None:
            if lease is not None:
                raise FailedPrecondition(f"vTPM {self.record.name} was detached")
            return
        if lease is None or not secrets.compare_digest(lease.token, self._lease.token):
            raise FailedPrecondition(
                f"vTPM {self.record.name} is held by {self._lease.holder}; "
                "send commands through that front end or detach it first"
            )

    def _refuse_if_unmigratable(self) -> None:
        """State hand-out and import are migration; some engines' state cannot move."""
        reason = cannot_migrate(self.record.engine)
        if reason is not None:
            raise FailedPrecondition(f"vTPM {self.record.name}: {reason}")

    def refuse_if_marked(self) -> None:
        """A vTPM in a migration (or moved away) serves nothing here; say where it is."""
        mark = self.record.migration
        if mark is None:
            return
        where = f"{mark.peer_host} ({mark.peer_address})"
        if mark.state == "migrated":
            message = f"was migrated to {where}; use it there"
        elif mark.state == "outgoing":
            message = f"is being migrated to {where}; retry when the migration settles"
        else:
            message = f"is arriving from {where} and not active yet"
        raise FailedPrecondition(f"vTPM {self.record.name} {message}")

    def _require_engine(self) -> Engine:
        if self._engine is None:
            self.refuse_if_marked()
            raise FailedPrecondition(
                f"vTPM {self.record.name} is stopped; start it with: vtpmctl start "
                f"{self.record.name}"
            )
        return self._engine

    def _launch(self, state: bytes | None) -> Engine:
        engine = self._factory(self.record.engine, self._run_dir)
        try:
            engine.start(state)
        except EngineError as exc:
            engine.stop()
            raise Unavailable(f"vTPM {self.record.name}: {exc}") from exc
        return engine

    def _shutdown_engine(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.stop()

    def _commit(self, running: bool | None = None) -> None:
        """Store the engine's state (and flags) if anything changed; raises OSError."""
        engine = self._require_engine()
        state = engine.export_state()
        new = replace(
            self.record, state=state,
            running=self.record.running if running is None else running,
        )
        if new != self.record:
            self._store.save(new)
            self.record = new

    def _try_commit(self) -> bool:
        """Commit, or roll the engine back to the committed state and return False."""
        try:
            self._commit()
            return True
        except (OSError, EngineError) as exc:
            log.error("vTPM %s: state not stored (%s); rolled back to the last "
                      "committed state", self.record.name, exc)
            self._shutdown_engine()
            self._engine = self._launch(self.record.state)
            return False

    def _recover(self, exc: EngineError) -> NoReturn:
        """The engine broke mid-command: restart it from the committed state."""
        log.error("vTPM %s: engine failed (%s); restarting from committed state",
                  self.record.name, exc)
        self._shutdown_engine()
        self._engine = self._launch(self.record.state)
        raise Unavailable(
            f"engine of vTPM {self.record.name} failed ({exc}); it was restarted from its "
            "last committed state, retry the command"
        ) from exc
