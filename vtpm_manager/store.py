"""The encrypted, versioned, durable store: one record file per vTPM.

Record layout (version 1)::

    magic "VTPMREC\\0" (8) | u16 version | u32 header length | header | body

The header is canonical JSON (UUID, name, engine, metadata, running flag, the data
key wrapped by the KEK, the body nonce). The body is the engine's state sealed with
AES-256-GCM under the vTPM's own data key, with magic, version and header as
associated data: changing any bit anywhere makes the record refuse to load, and the
refusal names the vTPM.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .durable import atomic_write, durable_unlink
from .kek import KeyEncryptionKey, KeyUnwrapError

MAGIC = b"VTPMREC\x00"
VERSION = 1
_PREFIX = struct.Struct(">8sHI")
_NONCE_BYTES = 12
SUFFIX = ".vtpm"


class StateTampered(Exception):
    """A record failed authentication or does not parse; ``vtpm`` names it."""

    def __init__(self, vtpm: str, path: Path, reason: str) -> None:
        super().__init__(f"state record of vTPM {vtpm} ({path}) refused: {reason}")
        self.vtpm = vtpm
        self.path = path


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

    def with_state(self, state: bytes | None) -> Record:
        return replace(self, state=state)


def encode(record: Record, kek: KeyEncryptionKey, wrapped_key: bytes | None = None) -> bytes:
    """Seal ``record`` into its on-disk bytes (``wrapped_key``: its data key, already
    wrapped by ``kek``, to spare a wrap on every save)."""
    nonce = os.urandom(_NONCE_BYTES)
    header = json.dumps(
        {
            "uuid": record.uuid,
            "name": record.name,
            "engine": record.engine,
            "created_unix": record.created_unix,
            "metadata": record.metadata,
            "running": record.running,
            "has_state": record.state is not None,
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
    who = path.name.removesuffix(SUFFIX)
    if len(blob) < _PREFIX.size:
        raise StateTampered(who, path, "truncated record")
    magic, version, header_len = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise StateTampered(who, path, "not a vTPM state record (bad magic)")
    if version != VERSION:
        raise StateTampered(
            who, path, f"record format version {version}; this DomS0 reads version {VERSION}"
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
        return Record(
            uuid=header["uuid"],
            name=header["name"],
            engine=header["engine"],
            created_unix=int(header["created_unix"]),
            data_key=data_key,
            metadata=dict(header["metadata"]),
            running=bool(header["running"]),
            state=state if header["has_state"] else None,
        )
    except KeyUnwrapError as exc:
        raise StateTampered(who, path, "its data key fails authentication") from exc
    except InvalidTag as exc:
        raise StateTampered(who, path, "authentication failed (altered or corrupt)") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise StateTampered(who, path, f"malformed header ({exc})") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class StateStore:
    """Record files in one folder, written durably and read all at once at start."""

    def __init__(self, folder: Path, kek: KeyEncryptionKey) -> None:
        self.folder = folder
        self.kek = kek
        self._wrapped: dict[str, tuple[bytes, bytes]] = {}  # uuid -> (data key, wrapped)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_of(self, uuid: str) -> Path:
        return self.folder / f"{uuid}{SUFFIX}"

    def load_all(self) -> tuple[list[Record], list[StateTampered]]:
        """Every record that opens, and one error per record that does not."""
        records: list[Record] = []
        failures: list[StateTampered] = []
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                records.append(decode(path.read_bytes(), self.kek, path))
            except StateTampered as exc:
                failures.append(exc)
        return records, failures

    def save(self, record: Record) -> None:
        """Durably replace the record; returns only once it is on disk."""
        cached = self._wrapped.get(record.uuid)
        if cached is None or not hmac.compare_digest(cached[0], record.data_key):
            cached = (record.data_key, self.kek.wrap(record.data_key, record.uuid))
            self._wrapped[record.uuid] = cached
        atomic_write(self.path_of(record.uuid), encode(record, self.kek, cached[1]))

    def delete(self, uuid: str) -> None:
        durable_unlink(self.path_of(uuid))
        self._wrapped.pop(uuid, None)


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
