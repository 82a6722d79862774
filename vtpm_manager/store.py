"""The encrypted, versioned, durable store: one record file per vTPM.

Record layout (version 3)::

    magic "VTPMREC\\0" (8) | u16 version | u32 header length | header | body

The header is canonical JSON (UUID, name, engine, metadata, running flag, the data
key wrapped by the KEK, the body nonce and, since version 2, the record's rollback
stamp: the counter ``epoch`` it was written in and its ``generation``, +1 per save;
since version 3, the vTPM's migration mark — outgoing, incoming or migrated — so the
tombstone that retires a migrated vTPM is as authenticated and rollback-protected as
the state it replaces, and an older DomS0, which would ignore it, cannot read it).
The body is the engine's state sealed with AES-256-GCM under the vTPM's own data
key, with magic, version and header as associated data: changing any bit anywhere
(the version included, so a version 2 record cannot pass for a version 1 one) makes
the record refuse to load, and the refusal names the vTPM. Version 1 records load as
generation 0 and are written as version 3 at their next save.

With a monotonic counter the store also keeps a MANIFEST of every live record's
generation, bound to the counter's epoch: see :mod:`vtpm_manager.rollback` for the
threat model and :class:`StateStore` for the calls DomS0 makes.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import struct
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .counter import MonotonicCounter
from .durable import atomic_write, durable_unlink
from .kek import KeyEncryptionKey, KeyUnwrapError
from .rollback import (
    MANIFEST_NAME,
    Check,
    Entry,
    Manifest,
    ManifestError,
    ManifestState,
    Verdict,
    check_generation,
    judge,
)

MAGIC = b"VTPMREC\x00"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
#: The states of a migration mark (see :mod:`vtpm_manager.migration`).
MIGRATION_STATES = ("outgoing", "incoming", "migrated")
_PREFIX = struct.Struct(">8sHI")
_NONCE_BYTES = 12
SUFFIX = ".vtpm"


class StateTampered(Exception):
    """A record failed authentication or does not parse; ``vtpm`` names it."""

    def __init__(self, vtpm: str, path: Path, reason: str) -> None:
        super().__init__(f"state record of vTPM {vtpm} ({path}) refused: {reason}")
        self.vtpm = vtpm
        self.path = path
        self.reason = reason


class RollbackDetected(StateTampered):
    """An older copy of a record, or of the whole state folder, was put back.

    ``vtpm`` is empty when the whole folder is refused; the message names it then.
    """

    def __init__(self, vtpm: str, path: Path, reason: str) -> None:
        super().__init__(vtpm, path, reason)
        if not vtpm:
            self.args = (f"state dir {path} refused: {reason}",)


class ManifestTampered(StateTampered):
    """The store's MANIFEST or its journal fails authentication or does not parse."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__("", path, reason)
        self.args = (f"store manifest {path} refused: {reason}",)


@dataclass(frozen=True)
class Stamp:
    """A record's place in the rollback history (version 2 header fields)."""

    epoch: int = 0
    generation: int = 0


@dataclass(frozen=True)
class EpochReport:
    """What :meth:`StateStore.begin_epoch` found; log ``notes`` as warnings."""

    protected: bool
    epoch: int = 0
    counter_origin: str = ""
    previous_run_clean: bool = True
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MigrationMark:
    """Where a vTPM stands in a migration. ``outgoing``: this host (the source) sent it
    and has not decided; ``migrated``: the tombstone — the destination owns it;
    ``incoming``: this host (the destination) holds it pending the source's decision.
    A marked vTPM does not run."""

    state: str
    migration_id: str          # hex
    peer_address: str          # the other DomS0's migration listener, HOST:PORT
    peer_host: str             # the other host's certificate name
    generation: int            # the vTPM's migration count after this migration

    def __post_init__(self) -> None:
        if self.state not in MIGRATION_STATES:
            raise ValueError(f"unknown migration state {self.state!r}")

    def to_json(self) -> dict[str, object]:
        return {"state": self.state, "migration_id": self.migration_id,
                "peer_address": self.peer_address, "peer_host": self.peer_host,
                "generation": self.generation}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> MigrationMark:
        return cls(str(doc["state"]), str(doc["migration_id"]), str(doc["peer_address"]),
                   str(doc["peer_host"]), _count(doc["generation"]))


@dataclass(frozen=True)
class Record:
    """Everything DomS0 keeps about one vTPM."""

    uuid: str
    name: str
    engine: str
    created_unix: int
    data_key: bytes = field(repr=False)
    metadata: dict[str, str] = field(default_factory=dict)
    running: bool = False
    state: bytes | None = field(default=None, repr=False)
    migration: MigrationMark | None = None
    #: Migrations this vTPM went through (the last mark's generation once it settles).
    migrations: int = 0

    def with_state(self, state: bytes | None) -> Record:
        return replace(self, state=state)


def encode(record: Record, kek: KeyEncryptionKey, wrapped_key: bytes | None = None,
           stamp: Stamp = Stamp()) -> bytes:
    """Seal ``record`` into its on-disk bytes, format version 3 (``wrapped_key``: its
    data key, already wrapped by ``kek``, to spare a wrap on every save)."""
    nonce = os.urandom(_NONCE_BYTES)
    header = json.dumps(
        {
            "epoch": stamp.epoch,
            "generation": stamp.generation,
            "uuid": record.uuid,
            "name": record.name,
            "engine": record.engine,
            "created_unix": record.created_unix,
            "metadata": record.metadata,
            "running": record.running,
            "has_state": record.state is not None,
            "migration": record.migration.to_json() if record.migration else None,
            "migrations": record.migrations,
            "wrapped_key": _b64(wrapped_key or kek.wrap(record.data_key, record.uuid)),
            "nonce": _b64(nonce),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    prefix = _PREFIX.pack(MAGIC, VERSION, len(header))
    body = AESGCM(record.data_key).encrypt(nonce, record.state or b"", prefix + header)
    return prefix + header + body


def decode(blob: bytes, kek: KeyEncryptionKey, path: Path) -> Record:
    """Open a record; raises :class:`StateTampered` naming the vTPM on any fault."""
    return open_record(blob, kek, path)[0]


def open_record(blob: bytes, kek: KeyEncryptionKey, path: Path) -> tuple[Record, Stamp]:
    """Open a record and its rollback stamp (version 1: ``Stamp()``, generation 0)."""
    who = path.name.removesuffix(SUFFIX)
    if len(blob) < _PREFIX.size:
        raise StateTampered(who, path, "truncated record")
    magic, version, header_len = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise StateTampered(who, path, "not a vTPM state record (bad magic)")
    if version not in READABLE_VERSIONS:
        raise StateTampered(
            who, path, f"record format version {version}; this DomS0 reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    end = _PREFIX.size + header_len
    if end > len(blob):
        raise StateTampered(who, path, "truncated header")
    try:
        header = json.loads(blob[_PREFIX.size:end])
        who = f"{header['name']} ({header['uuid']})"
        data_key = kek.unwrap(base64.b64decode(header["wrapped_key"]), header["uuid"])
        state = AESGCM(data_key).decrypt(
            base64.b64decode(header["nonce"]), blob[end:], blob[:end]
        )
        stamp = Stamp() if version == 1 else \
            Stamp(_count(header["epoch"]), _count(header["generation"]))
        record = Record(
            uuid=header["uuid"],
            name=header["name"],
            engine=header["engine"],
            created_unix=int(header["created_unix"]),
            data_key=data_key,
            metadata=dict(header["metadata"]),
            running=bool(header["running"]),
            state=state if header["has_state"] else None,
            migration=MigrationMark.from_json(header["migration"])
            if version >= 3 and header["migration"] is not None else None,
            migrations=_count(header["migrations"]) if version >= 3 else 0,
        )
        return record, stamp
    except KeyUnwrapError as exc:
        raise StateTampered(who, path, "its data key fails authentication") from exc
    except InvalidTag as exc:
        raise StateTampered(who, path, "authentication failed (altered or corrupt)") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise StateTampered(who, path, f"malformed header ({exc})") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a counter value: {value!r}")
    return value


class StoreClosed(OSError):
    """A save after :meth:`StateStore.close_epoch`: DomS0 is stopping."""


class StateStore:
    """Record files in one folder, written durably and read all at once at start.

    Without a counter the store behaves as before version 2 (no rollback
    protection; unit tests and tools). With one, DomS0 calls, in this order::

        store = StateStore(folder, kek, counter)
        store.begin_epoch()   # at start: RollbackDetected / ManifestTampered refuse it
        store.load_all()      # records whose generation is stale are refused by name
        ... save() / delete() while serving ...
        store.close_epoch()   # after the last save of an orderly stop

    Saves of one vTPM must not overlap (the instance lock ensures it); saves of
    different vTPMs may run side by side.
    """

    def __init__(self, folder: Path, kek: KeyEncryptionKey,
                 counter: MonotonicCounter | None = None) -> None:
        self.folder = folder
        self.kek = kek
        self.counter = counter
        self._wrapped: dict[str, tuple[bytes, bytes]] = {}  # uuid -> (data key, wrapped)
        self._generations: dict[str, int] = {}  # without a counter: uuid -> generation
        self._manifest: Manifest | None = None
        self._lock = threading.Lock()  # guards the manifest and the generations
        self._closed = False
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_of(self, uuid: str) -> Path:
        return self.folder / f"{uuid}{SUFFIX}"

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @property
    def epoch(self) -> int:
        """The counter epoch new records are written in (0: no rollback protection)."""
        return self._manifest.state.epoch if self._manifest else 0

    # -- epochs ----------------------------------------------------------------------

    def begin_epoch(self, *, adopt: bool = False) -> EpochReport:
        """Check the state folder against the counter, then advance the counter.

        Raises :class:`RollbackDetected` if the folder is older (or newer) than the
        counter, :class:`ManifestTampered` if the MANIFEST does not authenticate, and
        :class:`~vtpm_manager.counter.CounterError` if the counter cannot be used.
        ``adopt=True`` is the operator's override: trust the records on disk as they
        are and rebuild the MANIFEST from them (first start of a store written
        before rollback protection, or a deliberate restore of a backup).
        """
        self._remove_temporaries()
        if self.counter is None:
            return EpochReport(protected=False, notes=(
                "rollback protection is off: the store has no monotonic counter",))
        with self._lock:
            if self._manifest is not None:
                raise RuntimeError("begin_epoch() is called once, at start")
            notes: list[str] = []
            value = self.counter.read()
            manifest = None if adopt else self._open_manifest()
            clean = True
            if manifest is None:
                manifest = self._new_manifest(value, adopt, notes)
            else:
                verdict = judge(manifest.state, value)
                if verdict is Verdict.FINISH_CLOSE:
                    value = self._increment(value + 1)
                    verdict = Verdict.CLEAN
                if verdict in (Verdict.OLDER_THAN_COUNTER, Verdict.NEWER_THAN_COUNTER):
                    raise RollbackDetected("", self.folder,
                                           self._explain(verdict, manifest.state, value))
                clean = verdict is Verdict.CLEAN
                if not clean:
                    notes.append(
                        f"DomS0 did not stop cleanly in epoch {value} (killed, crashed or "
                        "power lost): rollback to a copy of the state folder taken during "
                        "that run cannot be ruled out")
            self._finish_deletes(manifest, notes)
            self._manifest = manifest
            self._advance(value)
            return EpochReport(True, manifest.state.epoch, self.counter.origin, clean,
                               tuple(notes))

    def advance_epoch(self) -> int:
        """Move to a new epoch now (after a delete or a migration away), so that no
        copy of the folder from before can be restored even after a crash."""
        with self._lock:
            if self._manifest is None or self.counter is None:
                return 0
            value = self.counter.read()
            if value != self._manifest.state.epoch:
                raise RollbackDetected("", self.folder, (
                    f"the host counter ({self.counter.origin}) moved to {value} while "
                    f"this store was in epoch {self._manifest.state.epoch}: is another "
                    "DomS0 or store using the same counter?"))
            self._advance(value)
            return self._manifest.state.epoch

    def close_epoch(self) -> None:
        """Mark the state final and advance the counter; no save is accepted after.

        Call after the last save of an orderly stop. A copy of the folder taken
        before this point is then refused at the next start instead of passing
        for the state of a crashed run.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            manifest = self._manifest
            if manifest is None or self.counter is None:
                return
            state = manifest.state
            state.pending, state.closed = state.epoch + 1, True
            manifest.snapshot()
            manifest.close()
            self._increment(state.epoch + 1)

    def _remove_temporaries(self) -> None:
        """Temporary files of writes a kill interrupted (see durable.atomic_write):
        never renamed into place, so never part of the state. Only this DomS0 writes
        here (it holds the state folder's lock)."""
        for path in self.folder.glob(".*.tmp-*"):
            path.unlink(missing_ok=True)

    def _open_manifest(self) -> Manifest | None:
        try:
            return Manifest.open(self.folder, self.kek)
        except ManifestError as exc:
            raise ManifestTampered(self.manifest_path, str(exc)) from exc

    def _new_manifest(self, value: int, adopt: bool, notes: list[str]) -> Manifest:
        paths = sorted(self.folder.glob(f"*{SUFFIX}"))
        state = ManifestState(epoch=value)
        if paths and not adopt:
            raise RollbackDetected("", self.folder, (
                f"it holds {len(paths)} record(s) but no {MANIFEST_NAME}: the MANIFEST was "
                "removed, or this store was written before rollback protection; in the "
                "latter case start once with adoption (StateStore.begin_epoch(adopt=True))"))
        for path in paths:
            try:
                record, stamp = open_record(path.read_bytes(), self.kek, path)
            except (StateTampered, OSError):
                continue  # load_all refuses it by name
            if path == self.path_of(record.uuid):
                state.records[record.uuid] = Entry(record.name, stamp.generation)
        notes.append(
            f"adopted {len(state.records)} record(s) as they are into a new {MANIFEST_NAME}"
            if adopt else f"new store: rollback protection starts at counter {value}")
        return Manifest.new(self.folder, self.kek, state)

    def _finish_deletes(self, manifest: Manifest, notes: list[str]) -> None:
        """Finish deletes a crash interrupted (the journal said so; the file stayed)."""
        for uuid in sorted(manifest.state.deleting):
            path = self.path_of(uuid)
            if path.exists():
                durable_unlink(path)
                notes.append(f"finished deleting vTPM {uuid} (its record file was there)")
        manifest.state.deleting.clear()

    def _advance(self, value: int) -> None:
        """Intent, increment, new epoch: a crash between any two steps is accepted."""
        assert self._manifest is not None
        state = self._manifest.state
        state.epoch, state.pending, state.closed = value, value + 1, False
        self._manifest.snapshot()
        state.epoch, state.pending = self._increment(value + 1), None
        self._manifest.snapshot()

    def _increment(self, expected: int) -> int:
        assert self.counter is not None
        value = self.counter.increment()
        if value != expected:
            raise RollbackDetected("", self.folder, (
                f"the host counter ({self.counter.origin}) went to {value}, expected "
                f"{expected}: is another DomS0 or store using the same counter?"))
        return value

    def _explain(self, verdict: Verdict, state: ManifestState, value: int) -> str:
        origin = self.counter.origin if self.counter else ""
        if verdict is Verdict.OLDER_THAN_COUNTER:
            return (f"it is from epoch {state.epoch} but the host counter ({origin}) is "
                    f"{value}: an older copy of the state was put back. Restore the latest "
                    "state; to accept this one and lose what happened since, start once "
                    "with adoption")
        return (f"it is from epoch {state.epoch} but the host counter ({origin}) is only "
                f"{value}: it was written with another counter (another host TPM, a "
                "cleared TPM, a reset counter file)")

    # -- records ---------------------------------------------------------------------

    def load_all(self) -> tuple[list[Record], list[StateTampered]]:
        """Every record that opens and is current, and one error per record that is
        not (tampered, an older copy, unknown to the MANIFEST, or missing)."""
        if self.counter is not None and self._manifest is None:
            raise RuntimeError("call begin_epoch() before load_all()")
        records: list[Record] = []
        failures: list[StateTampered] = []
        seen: set[str] = set()
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            seen.add(path.name.removesuffix(SUFFIX))
            try:
                record, stamp = open_record(path.read_bytes(), self.kek, path)
                if path != self.path_of(record.uuid):
                    raise StateTampered(f"{record.name} ({record.uuid})", path,
                                        "the file is named for another vTPM")
                self._admit(record, stamp, path)
            except StateTampered as exc:
                failures.append(exc)
                continue
            records.append(record)
        if self._manifest is not None:
            for uuid, entry in sorted(self._manifest.state.records.items()):
                if uuid in seen:
                    continue
                if entry.provisional:  # killed inside a create, before its first write
                    with self._lock:
                        self._manifest.append({"op": "delete", "uuid": uuid})
                    continue
                failures.append(StateTampered(
                    f"{entry.name} ({uuid})", self.path_of(uuid),
                    f"the {MANIFEST_NAME} lists it at generation {entry.generation} but "
                    "its record file is missing: deleted behind DomS0's back"))
        return records, failures

    def _admit(self, record: Record, stamp: Stamp, path: Path) -> None:
        """Accept a record that opened, or raise why its generation is refused."""
        with self._lock:
            if self._manifest is None:
                self._generations[record.uuid] = stamp.generation
                return
            state = self._manifest.state
            listed = state.records.get(record.uuid)
            check = check_generation(listed, stamp.generation)
            if stamp.epoch > state.epoch:
                check = Check.NEWER
            if check is Check.CURRENT:
                return
            if check is Check.CRASH_REPAIR:
                self._manifest.append(_save_op(record, stamp.generation))
                return
        who = f"{record.name} ({record.uuid})"
        written = f"generation {stamp.generation}, written in epoch {stamp.epoch}"
        if check is Check.UNKNOWN:
            raise RollbackDetected(who, path, (
                f"the store's {MANIFEST_NAME} does not list it ({written}): a deleted "
                "vTPM's record put back, or a record from another store"))
        assert listed is not None
        if check is Check.OLDER:
            raise RollbackDetected(who, path, (
                f"it is {written} but the {MANIFEST_NAME} says generation "
                f"{listed.generation}: an older copy of this record was put back"))
        raise RollbackDetected(who, path, (
            f"it is {written}, ahead of the {MANIFEST_NAME} (generation "
            f"{listed.generation}, epoch {state.epoch}): the MANIFEST was cut short"))

    def save(self, record: Record) -> None:
        """Durably replace the record and log its new generation; returns only once
        both are on disk. Raises OSError (``StoreClosed`` after close_epoch)."""
        if self._closed:
            raise StoreClosed(f"the store {self.folder} is closed: DomS0 is stopping")
        cached = self._wrapped.get(record.uuid)
        if cached is None or not hmac.compare_digest(cached[0], record.data_key):
            cached = (record.data_key, self.kek.wrap(record.data_key, record.uuid))
            self._wrapped[record.uuid] = cached
        with self._lock:
            if self.counter is not None and self._manifest is None:
                raise RuntimeError("call begin_epoch() before save()")
            if self._manifest is not None and record.uuid not in self._manifest.state.records:
                self._manifest.append({"op": "create", "uuid": record.uuid,
                                       "name": record.name})
            stamp = self._next_stamp(record.uuid)
        # The record goes first: killed before the journal entry, the record is one
        # generation ahead, which the next start accepts (the other order would not).
        atomic_write(self.path_of(record.uuid), encode(record, self.kek, cached[1], stamp))
        with self._lock:
            if self._manifest is None:
                self._generations[record.uuid] = stamp.generation
            elif self._closed:
                raise StoreClosed(f"the store {self.folder} closed during a save")
            else:
                self._manifest.append(_save_op(record, stamp.generation))

    def _next_stamp(self, uuid: str) -> Stamp:
        if self._manifest is None:
            return Stamp(0, self._generations.get(uuid, 0) + 1)
        listed = self._manifest.state.records.get(uuid)
        return Stamp(self._manifest.state.epoch, (listed.generation if listed else 0) + 1)

    def delete(self, uuid: str) -> None:
        """Durably remove the record (journaled first, so a crash cannot leave a record
        that the MANIFEST calls missing or unknown)."""
        with self._lock:
            if self._manifest is not None:
                self._manifest.append({"op": "delete", "uuid": uuid})
            durable_unlink(self.path_of(uuid))
            if self._manifest is not None:
                self._manifest.state.deleting.discard(uuid)
            self._generations.pop(uuid, None)
        self._wrapped.pop(uuid, None)


def _save_op(record: Record, generation: int) -> dict[str, object]:
    return {"op": "save", "uuid": record.uuid, "name": record.name, "generation": generation}


_BLOB_MAGIC = b"VTPMBLB\x01"


def seal_blob(record: Record, state: bytes) -> bytes:
    """Seal engine state for hand-out (state blobs): only this vTPM's key opens it."""
    nonce = os.urandom(_NONCE_BYTES)
    aad = _BLOB_MAGIC + record.uuid.encode()
    return _BLOB_MAGIC + nonce + AESGCM(record.data_key).encrypt(nonce, state, aad)


def open_blob(record: Record, blob: bytes) -> bytes:
    """Inverse of :func:`seal_blob`; a blob of another vTPM or an altered one is refused."""
    magic, rest = blob[: len(_BLOB_MAGIC)], blob[len(_BLOB_MAGIC):]
    if magic != _BLOB_MAGIC:
        raise ValueError("not a vtpm-stack state blob (bad magic or version)")
    try:
        return AESGCM(record.data_key).decrypt(
            rest[:_NONCE_BYTES], rest[_NONCE_BYTES:], _BLOB_MAGIC + record.uuid.encode()
        )
    except (InvalidTag, ValueError) as exc:
        raise ValueError(f"state blob does not open for vTPM {record.name}") from exc
