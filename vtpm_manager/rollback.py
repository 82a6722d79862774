"""Rollback protection: the store's MANIFEST, its journal, and the epoch rule.

Threat model
============

The attacker can read and write DomS0's state folder while DomS0 runs or while it
is stopped (a backup restored, a disk image swapped, a hostile administrator), can
kill DomS0 at any moment, but cannot decrease the host's monotonic counter (an NV
counter in the host TPM) and does not hold the KEK. What they gain from a rollback
is a vTPM whose NV indices, counters, dictionary-attack lockout or PCR-sealed
secrets are older than what the guest was told: replayed monotonic counters,
un-revoked keys, a lockout reset.

Threats, and what catches each:

1. **One record replaced by an older copy of itself.** Every save stamps the record
   with a per-vTPM *generation* (+1 per save) inside its authenticated header, and
   appends ``(uuid, generation)`` to the MANIFEST's journal. At start a record older
   than the MANIFEST's generation is refused, naming the vTPM.
2. **The whole folder (records and MANIFEST) replaced by an older copy.** The
   MANIFEST carries the counter *epoch* it belongs to. DomS0 increments the counter
   when it starts and when it stops cleanly, so a copy taken earlier than the last
   clean stop, or earlier than the last start, names an epoch the counter has left:
   refused, naming the state folder and both numbers.
3. **A record deleted, or a deleted one put back.** A MANIFEST entry without its
   file is reported by name; a record file the MANIFEST does not list (a deleted
   vTPM's record put back, a record from another store) is refused as unknown.
4. **Bits flipped** in a record, the MANIFEST or its journal: each is authenticated
   (AES-GCM for records, HMAC-SHA256 for the MANIFEST, a chained HMAC per journal
   entry) and refused by name.

Why the counter moves only at start and at a clean stop: a copy of one record from
any time is caught by its generation alone; the MANIFEST that holds the generations
can only be rolled back together with everything, and the epoch catches that. The
counter therefore moves twice per DomS0 run, never per TPM command: a TPM's NV
counter endures 10^5-10^6 increments, a command stream would exhaust it in days.
Deleting a vTPM and migrating one away should also call :meth:`advance_epoch` so a
copy from before can never resurrect it on this host even after a crash (the lead
adds these calls).

What it cannot catch: after DomS0 dies *without* a clean stop (kill -9, power
loss), the counter still names the crashed run's epoch, so a copy of the whole
folder taken *during that run* cannot be told from its last state. DomS0 says so at
the next start (``EpochReport.previous_run_clean`` is False) instead of pretending.
Closing that window needs a counter increment per state change. The development
counter file is no anchor at all: whoever can write it can roll it back.

Crash safety of the bookkeeping itself
--------------------------------------

* A record is written before its journal entry. Killed in between, the record is
  one generation ahead of the MANIFEST: accepted and the MANIFEST repaired. Written
  the other way round a crash would look like a rollback.
* An epoch change first writes the MANIFEST with ``pending = C+1`` (the intent), then
  increments the counter, then writes the MANIFEST at epoch C+1. Whichever step a
  crash interrupts, the next start finds the counter at the MANIFEST's epoch or at
  its ``pending`` value and accepts it.
* A torn journal tail (zeros, or an entry cut short) is a crash mid-append, never
  acknowledged: ignored. Any complete entry that fails authentication is tampering.

Files
-----

``MANIFEST`` (replaced atomically at start, at stop and when the journal grows)::

    magic "VTPMMAN\\0" | u16 version | u32 body length | body (canonical JSON) | HMAC

``MANIFEST.journal`` (appended, one fdatasync per entry)::

    entry* where entry = u32 length | u32 ~length | payload (JSON) | HMAC(prev ‖ …)

The first entry names the MANIFEST snapshot it continues; a journal of an older
snapshot is stale (its content is already in the snapshot) and ignored. The HMAC
key is random, kept in the MANIFEST wrapped by the KEK under its own label, so the
KEK's AES-GCM is used once per start, not once per save (random nonces under one
key are good for 2^32 messages; saves are unbounded).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import os
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .durable import atomic_write
from .kek import KeyEncryptionKey, KeyUnwrapError

MANIFEST_NAME = "MANIFEST"
JOURNAL_NAME = "MANIFEST.journal"
MAGIC = b"VTPMMAN\x00"
VERSION = 1
_MAC_KEY_OWNER = "vtpm-stack store manifest v1"  # cannot collide with a vTPM UUID
_PREFIX = struct.Struct(">8sHI")
_LENGTH = struct.Struct(">II")
_TAG_BYTES = 32
_MAX_ENTRY = 1 << 16
#: Fold the journal into a new MANIFEST snapshot once it grows past this.
COMPACT_AFTER_BYTES = 1 << 20


class ManifestError(Exception):
    """The MANIFEST or its journal fails authentication or does not parse."""


@dataclass(frozen=True)
class Entry:
    """What the MANIFEST knows of one live record.

    ``provisional``: journaled as created, not yet saved. A vTPM's creation is
    journaled *before* its first record write, so that a kill in between leaves an
    entry without a file (dropped quietly: the create was never acknowledged) and
    never a file without an entry (which is what a deleted record put back is).
    """

    name: str
    generation: int
    provisional: bool = False


@dataclass
class ManifestState:
    """The MANIFEST's content: the epoch and every live record's generation.

    ``pending`` is the counter value an interrupted epoch change was moving to;
    ``closed`` says that change was a clean stop (the state is final).
    ``deleting`` holds vTPMs whose delete was journaled but maybe not finished.
    """

    epoch: int
    pending: int | None = None
    closed: bool = False
    records: dict[str, Entry] = field(default_factory=dict)
    deleting: set[str] = field(default_factory=set)

    def apply(self, op: dict[str, Any]) -> None:
        """Apply one journal operation (also used to replay the journal)."""
        kind, uuid = op["op"], str(op["uuid"])
        if kind == "create":
            self.records.setdefault(uuid, Entry(str(op["name"]), 0, provisional=True))
            self.deleting.discard(uuid)
        elif kind == "save":
            self.records[uuid] = Entry(str(op["name"]), _count(op["generation"]))
            self.deleting.discard(uuid)
        elif kind == "delete":
            self.records.pop(uuid, None)
            self.deleting.add(uuid)
        else:
            raise ValueError(f"unknown journal operation {kind!r}")


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a counter value: {value!r}")
    return value


# -- the epoch rule ------------------------------------------------------------------


class Verdict(enum.Enum):
    """How the MANIFEST relates to the host counter at start."""

    CLEAN = "the previous run stopped cleanly"
    FINISH_CLOSE = "the previous run stopped cleanly but did not advance the counter"
    UNCLEAN = "the previous run did not stop cleanly"
    OLDER_THAN_COUNTER = "the state is older than the counter"
    NEWER_THAN_COUNTER = "the state is newer than the counter"


def judge(state: ManifestState, counter: int) -> Verdict:
    """The epoch rule (see the module docstring, threat 2 and crash safety)."""
    if state.pending is not None:
        if state.closed and counter == state.pending - 1:
            return Verdict.FINISH_CLOSE
        if counter == state.pending:
            # A clean stop is final; an interrupted start is not: the run that
            # followed may have lived at this epoch and crashed.
            return Verdict.CLEAN if state.closed else Verdict.UNCLEAN
    if counter == state.epoch:
        return Verdict.UNCLEAN
    if counter > max(state.epoch, state.pending or 0):
        return Verdict.OLDER_THAN_COUNTER
    return Verdict.NEWER_THAN_COUNTER


class Check(enum.Enum):
    """How one record's generation relates to the MANIFEST's."""

    CURRENT = "current"
    CRASH_REPAIR = "one save ahead of the MANIFEST (killed between the two writes)"
    OLDER = "an older copy"
    NEWER = "newer than the MANIFEST"
    UNKNOWN = "not in the MANIFEST"


def check_generation(listed: Entry | None, found: int) -> Check:
    if listed is None:
        return Check.UNKNOWN
    if found == listed.generation:
        return Check.CURRENT
    if found == listed.generation + 1:
        return Check.CRASH_REPAIR
    return Check.OLDER if found < listed.generation else Check.NEWER


# -- the files ------------------------------------------------------------------------


def _tag(key: bytes, *parts: bytes) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class Manifest:
    """The MANIFEST snapshot and its journal, as one durable :class:`ManifestState`.

    Not thread-safe: the store serialises every call.
    """

    def __init__(self, folder: Path, kek: KeyEncryptionKey, mac_key: bytes,
                 wrapped_key: bytes, state: ManifestState) -> None:
        self.folder = folder
        self.state = state
        self._kek = kek
        self._key = mac_key
        self._wrapped = wrapped_key
        self._snapshot = b""
        self._chain = b""
        self._fd: int | None = None
        self._journal_bytes = 0

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @property
    def journal_path(self) -> Path:
        return self.folder / JOURNAL_NAME

    @classmethod
    def new(cls, folder: Path, kek: KeyEncryptionKey, state: ManifestState) -> Manifest:
        """A manifest with a fresh MAC key; nothing is written until :meth:`snapshot`."""
        key = secrets.token_bytes(32)
        return cls(folder, kek, key, kek.wrap(key, _MAC_KEY_OWNER), state)

    @classmethod
    def open(cls, folder: Path, kek: KeyEncryptionKey) -> Manifest | None:
        """Read and authenticate MANIFEST plus journal; None if there is no MANIFEST.

        Raises :class:`ManifestError` naming the file and the fault.
        """
        try:
            blob = (folder / MANIFEST_NAME).read_bytes()
        except FileNotFoundError:
            return None
        if len(blob) < _PREFIX.size + _TAG_BYTES:
            raise ManifestError(f"{MANIFEST_NAME} is truncated")
        magic, version, length = _PREFIX.unpack_from(blob)
        if magic != MAGIC:
            raise ManifestError(f"{MANIFEST_NAME} is not a store manifest (bad magic)")
        if version != VERSION:
            raise ManifestError(
                f"{MANIFEST_NAME} has format version {version}; this DomS0 reads "
                f"version {VERSION}")
        end = _PREFIX.size + length
        if end + _TAG_BYTES != len(blob):
            raise ManifestError(f"{MANIFEST_NAME} has the wrong length (altered or torn)")
        try:
            body = json.loads(blob[_PREFIX.size:end])
            wrapped = base64.b64decode(body["mac_key"], validate=True)
            key = kek.unwrap(wrapped, _MAC_KEY_OWNER)
        except KeyUnwrapError as exc:
            raise ManifestError(
                f"{MANIFEST_NAME}: its MAC key fails authentication (altered, or written "
                "under another KEK)") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{MANIFEST_NAME} is malformed ({exc})") from exc
        tag = _tag(key, blob[:end])
        if not hmac.compare_digest(tag, blob[end:]):
            raise ManifestError(f"{MANIFEST_NAME} fails authentication (altered or corrupt)")
        try:
            state = ManifestState(
                epoch=_count(body["epoch"]),
                pending=None if body["pending"] is None else _count(body["pending"]),
                closed=bool(body["closed"]),
                records={str(u): Entry(str(e["name"]), _count(e["generation"]),
                                       bool(e["provisional"]))
                         for u, e in body["records"].items()},
                deleting={str(u) for u in body["deleting"]},
            )
            snapshot = bytes.fromhex(str(body["snapshot"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"{MANIFEST_NAME} is malformed ({exc})") from exc
        manifest = cls(folder, kek, key, wrapped, state)
        manifest._snapshot = snapshot
        manifest._replay()
        return manifest

    def _replay(self) -> None:
        """Apply the journal entries that continue this snapshot."""
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return  # killed between writing a snapshot and its journal: nothing lost
        chain, pos, index = bytes(_TAG_BYTES), 0, 0
        while pos < len(data):
            entry = self._parse_entry(data, pos, chain, index)
            if entry is None:
                return  # torn tail: a crash mid-append, never acknowledged
            pos, chain, payload = entry
            try:
                op = json.loads(payload)
                if index == 0:
                    if bytes.fromhex(op["snapshot"]) != self._snapshot:
                        return  # stale: written before the snapshot that now holds it
                else:
                    self.state.apply(op)
            except (ValueError, KeyError, TypeError) as exc:
                raise ManifestError(f"{JOURNAL_NAME} entry {index} is malformed ({exc})") \
                    from exc
            index += 1

    def _parse_entry(self, data: bytes, pos: int, chain: bytes,
                     index: int) -> tuple[int, bytes, bytes] | None:
        rest = data[pos:]
        if len(rest) < _LENGTH.size or not rest.strip(b"\x00"):
            return None
        length, check = _LENGTH.unpack_from(rest)
        if check != length ^ 0xFFFFFFFF or length > _MAX_ENTRY:
            raise ManifestError(f"{JOURNAL_NAME} entry {index} has a corrupt length")
        end = _LENGTH.size + length + _TAG_BYTES
        if len(rest) < end:
            return None
        head, payload = rest[:_LENGTH.size], rest[_LENGTH.size:_LENGTH.size + length]
        tag = _tag(self._key, chain, head, payload)
        if not hmac.compare_digest(tag, rest[end - _TAG_BYTES:end]):
            raise ManifestError(f"{JOURNAL_NAME} entry {index} fails authentication "
                                "(altered or corrupt)")
        return pos + end, tag, payload

    def _entry(self, payload: bytes) -> bytes:
        head = _LENGTH.pack(len(payload), len(payload) ^ 0xFFFFFFFF)
        self._chain = _tag(self._key, self._chain, head, payload)
        return head + payload + self._chain

    def snapshot(self) -> None:
        """Durably replace MANIFEST with the current state and start a new journal."""
        self.close()
        self._snapshot = secrets.token_bytes(16)
        body = _json({
            "mac_key": base64.b64encode(self._wrapped).decode(),
            "snapshot": self._snapshot.hex(),
            "epoch": self.state.epoch,
            "pending": self.state.pending,
            "closed": self.state.closed,
            "records": {u: {"name": e.name, "generation": e.generation,
                            "provisional": e.provisional}
                        for u, e in self.state.records.items()},
            "deleting": sorted(self.state.deleting),
        })
        head = _PREFIX.pack(MAGIC, VERSION, len(body))
        atomic_write(self.path, head + body + _tag(self._key, head + body))
        self._chain = bytes(_TAG_BYTES)
        first = self._entry(_json({"journal": VERSION, "snapshot": self._snapshot.hex()}))
        atomic_write(self.journal_path, first)
        self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND)
        self._journal_bytes = len(first)

    def append(self, op: dict[str, Any]) -> None:
        """Apply ``op`` and make it durable: one append and one fdatasync."""
        if self._fd is None:
            # After open() (the tail may be torn) or a failed write: start afresh.
            self.snapshot()
        assert self._fd is not None
        entry = self._entry(_json(op))
        try:
            view = memoryview(entry)
            while view:
                view = view[os.write(self._fd, view):]
            os.fdatasync(self._fd)
        except BaseException:
            self.close()  # a half-written entry must not be followed by more
            raise
        self._journal_bytes += len(entry)
        self.state.apply(op)
        if self._journal_bytes > COMPACT_AFTER_BYTES:
            self.snapshot()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
