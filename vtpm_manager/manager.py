"""The vTPM manager: creates, finds, starts, stops and deletes vTPMs.

It owns the table of instances and the store; callers (DomS0's gRPC servicers and
socket front ends) identify a vTPM by UUID or by its unique name.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from .engines import ENGINE_NAMES, make_engine
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from .instance import EngineFactory, Instance
from .store import MigrationMark, Record, StateStore, StateTampered

log = logging.getLogger(__name__)

Listener = Callable[[str, Instance], None]
#: Runs once on every new vTPM while it is started (see vtpm_manager.manufacture).
Manufacturer = Callable[[Record], bytes | None]
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 1024
#: The peer of a migration that travels inside QEMU's stream, before a host claims it.
QEMU_PEER = "(QEMU migration stream)"


def validate_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"invalid vTPM name {name!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )


def validate_metadata(metadata: Mapping[str, str]) -> None:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidArgument(f"at most {MAX_METADATA_ENTRIES} metadata entries")
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise InvalidArgument(
                f"metadata {key!r}: keys are 1..{MAX_METADATA_KEY} characters, values at "
                f"most {MAX_METADATA_VALUE}"
            )


def _refuse_if_held(instance: Instance, action: str) -> None:
    if instance.holder is not None:
        raise FailedPrecondition(
            f"vTPM {instance.record.name} is held by {instance.holder}; "
            f"detach it before {action}"
        )


class VtpmManager:
    """All vTPMs of one DomS0."""

    def __init__(
        self,
        store: StateStore,
        run_root: Path,
        default_engine: str = "builtin",
        factory: EngineFactory = make_engine,
        manufacturer: Manufacturer | None = None,
    ) -> None:
        if default_engine not in ENGINE_NAMES:
            raise InvalidArgument(f"unknown default engine {default_engine!r}")
        self.store = store
        self.run_root = run_root
        self.default_engine = default_engine
        self._factory = factory
        self._manufacturer = manufacturer
        self._instances: dict[str, Instance] = {}
        self._lock = threading.Lock()
        self.load_failures: list[StateTampered] = []
        self._listeners: list[Listener] = []
        self._reserved: set[str] = set()  # names of vTPMs being created

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event, instance)`` on "created" and "deleted"."""
        self._listeners.append(listener)

    def _notify(self, event: str, instance: Instance) -> None:
        for listener in self._listeners:
            try:
                listener(event, instance)
            except Exception as exc:
                log.error("listener failed on %s of %s: %s", event, instance.record.name, exc)

    # -- start and stop of the whole manager -----------------------------------------

    def load(self, may_start: Callable[[Instance], str | None] | None = None
             ) -> list[StateTampered]:
        """Read every record; start the vTPMs that were running. Returns the refusals.

        A record that fails authentication is refused by name and left on disk for
        inspection; every other vTPM still loads and serves. ``may_start`` (the security
        policy) may keep a vTPM stopped, naming why; its running flag is kept, so it
        starts at a later start that permits it.
        """
        records, failures = self.store.load_all()
        for failure in failures:
            log.error("%s", failure)
        self.load_failures = failures
        for record in records:
            instance = self._new_instance(record)
            self._instances[record.uuid] = instance
            if record.running and record.migration is None:
                refusal = may_start(instance) if may_start is not None else None
                if refusal is not None:
                    log.error("vTPM %s stays stopped: %s", record.name, refusal)
                    continue
                try:
                    instance.start()
                except Exception as exc:  # one broken vTPM must not stop the others
                    log.error("vTPM %s could not be restarted: %s", record.name, exc)
        return failures

    def shutdown(self) -> None:
        """Commit and stop every engine, keeping running flags for the next start."""
        for instance in list(self._instances.values()):
            try:
                instance.stop(remember=False)
            except Exception as exc:
                log.error("vTPM %s: stop failed: %s", instance.record.name, exc)

    # -- lookups ---------------------------------------------------------------------

    def get(self, ref: str) -> Instance:
        """Find a vTPM by UUID or name."""
        if not ref:
            raise InvalidArgument("name the vTPM (its UUID or name)")
        with self._lock:
            instance = self._instances.get(ref)
            if instance is not None:
                return instance
            for candidate in self._instances.values():
                if candidate.record.name == ref:
                    return candidate
        raise NotFound(f"no vTPM named {ref!r}; list them with: vtpmctl list")

    def list(self) -> list[Instance]:
        with self._lock:
            return sorted(self._instances.values(), key=lambda i: i.record.name)

    # -- lifecycle -------------------------------------------------------------------

    def create(
        self,
        name: str,
        engine: str = "",
        metadata: Mapping[str, str] | None = None,
        start: bool = False,
    ) -> Instance:
        validate_name(name)
        engine = engine or self.default_engine
        if engine not in ENGINE_NAMES:
            raise InvalidArgument(
                f"unknown engine {engine!r}; choose one of: {', '.join(ENGINE_NAMES)}"
            )
        metadata = dict(metadata or {})
        validate_metadata(metadata)
        with self._lock:
            if name in self._reserved or any(
                    i.record.name == name for i in self._instances.values()):
                raise AlreadyExists(f"a vTPM named {name!r} exists already")
            self._reserved.add(name)
        try:
            record = Record(
                uuid=str(uuidlib.uuid4()),
                name=name,
                engine=engine,
                created_unix=int(time.time()),
                data_key=secrets.token_bytes(32),
                metadata=metadata,
            )
            if self._manufacturer is not None:
                # Manufactured before the first write: a vTPM is stored with its EKs
                # and certificates, or not at all.
                record = record.with_state(self._manufacturer(record))
            instance = self._register(record)
        finally:
            with self._lock:
                self._reserved.discard(name)
        self._notify("created", instance)
        if start:
            instance.start()
        log.info("created vTPM %s (%s, engine %s)", name, record.uuid, engine)
        return instance

    def delete(self, ref: str) -> None:
        instance = self.get(ref)
        with instance.lock:
            _refuse_if_held(instance, "deleting")
            instance.stop()
            self.store.delete(instance.record.uuid)
            # A new epoch: no copy of the folder from before the delete can come back.
            self.store.advance_epoch()
            with self._lock:
                self._instances.pop(instance.record.uuid, None)
            shutil.rmtree(self.run_root / instance.record.uuid, ignore_errors=True)
        self._notify("deleted", instance)
        log.info("deleted vTPM %s (%s)", instance.record.name, instance.record.uuid)

    def start(self, ref: str) -> Instance:
        instance = self.get(ref)
        instance.start()
        return instance

    def stop(self, ref: str) -> Instance:
        instance = self.get(ref)
        with instance.lock:
            _refuse_if_held(instance, "stopping")
            instance.stop()
        return instance

    def create_placeholder(self, name: str, vtpm_uuid: str, engine: str = "") -> Instance:
        """A vTPM that will arrive in QEMU's migration stream: no TPM yet, an
        ``incoming`` mark awaiting its state blob on the control socket (the UUID is
        the source's, so the blob can be matched to it). A tombstone of the same vTPM
        (it left this host once) becomes the placeholder, keeping its migration count."""
        validate_name(name)
        try:
            vtpm_uuid = str(uuidlib.UUID(vtpm_uuid))
        except ValueError:
            raise InvalidArgument(f"incoming UUID {vtpm_uuid!r} is not a UUID") from None
        engine = engine or self.default_engine
        awaiting = MigrationMark("incoming", "", "", QEMU_PEER, 0)
        with self._lock:
            existing = self._instances.get(vtpm_uuid)
        if existing is not None:
            mark = existing.record.migration
            if mark is None or mark.state != "migrated" or existing.record.name != name:
                raise AlreadyExists(f"vTPM {vtpm_uuid} exists here as "
                                    f"{existing.record.name} "
                                    f"({'live' if mark is None else mark.state})")
            existing.remark(awaiting)
            log.info("vTPM %s (%s) awaits its return through QEMU", name, vtpm_uuid)
            return existing
        record = Record(uuid=vtpm_uuid, name=name, engine=engine,
                        created_unix=int(time.time()), data_key=secrets.token_bytes(32),
                        migration=awaiting)
        return self.adopt_incoming(record)

    def adopt_incoming(self, record: Record) -> Instance:
        """Store a vTPM that arrives by migration, marked ``incoming`` (it does not run
        until the source commits). Refused when the vTPM is live here, when this host
        already saw the same or a later migration of it (a replayed package), or when
        another vTPM here has its name."""
        mark = record.migration
        if mark is None or mark.state != "incoming":
            raise InvalidArgument("an arriving vTPM carries an incoming mark")
        with self._lock:
            existing = self._instances.get(record.uuid)
            clash = next((i for i in self._instances.values()
                          if i.record.name == record.name and i.record.uuid != record.uuid),
                         None)
            if clash is not None or record.name in self._reserved:
                raise AlreadyExists(f"a vTPM named {record.name!r} exists on this host "
                                    f"already ({clash.record.uuid if clash else 'creating'})")
            if existing is not None:
                here = existing.record.migration
                if here is None or here.state != "migrated":
                    raise FailedPrecondition(
                        f"vTPM {record.name} ({record.uuid}) is "
                        f"{'live' if here is None else here.state} on this host: refusing "
                        "a second copy")
                if mark.generation <= here.generation:
                    raise FailedPrecondition(
                        f"vTPM {record.name} left this host at migration {here.generation}; "
                        f"a package of migration {mark.generation} is old or replayed")
                record = replace(record, migrations=here.generation)
            self._reserved.add(record.name)
        try:
            if existing is not None:
                with existing.lock:
                    self.store.save(record)
                    existing.record = record
                instance = existing
            else:
                instance = self._register(record)
        finally:
            with self._lock:
                self._reserved.discard(record.name)
        if existing is None:
            self._notify("created", instance)
        log.info("vTPM %s (%s) arrived from %s, pending its source's commit", record.name,
                 record.uuid, mark.peer_host)
        return instance

    def _register(self, record: Record) -> Instance:
        """Store a new vTPM's first record, then list it (callers hold its name)."""
        self.store.save(record)
        instance = self._new_instance(record)
        with self._lock:
            self._instances[record.uuid] = instance
        return instance

    def _new_instance(self, record: Record) -> Instance:
        return Instance(record, self.store, self._factory, self.run_root / record.uuid)
