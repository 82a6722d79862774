"""``STATE_DIR/root/``: what DomS0 needs to find its sealed KEK again.

All of it is public: the sealed object's public and private blobs (the private blob
is encrypted and integrity-protected by the storage primary key, Part 1 §27), the
policy, the PCR values at seal time (only so that a refusal can say which PCR moved),
and the approvals. ``root.json`` is written last, so its presence means provisioned.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..durable import atomic_write
from .base import RootRefused
from .host import format_values, parse_values
from .policy import PcrSelection, SelectionError

FORMAT = "vtpm-stack host root"
VERSION = 1
ROOT_DIR = "root"
RECORD_FILE = "root.json"
PUBLIC_BLOB = "kek.pub"
PRIVATE_BLOB = "kek.priv"
APPROVED_DIR = "approved"
MODES = ("pcr", "authorized")


@dataclass(frozen=True)
class RootRecord:
    """The versioned description of a provisioned TPM root."""

    mode: str  # "pcr": PolicyPCR; "authorized": PolicyAuthorize(approval key)
    selection: PcrSelection  # host PCRs plus the measurement PCR
    sealed_values: dict[str, bytes]
    auth_policy: bytes
    measure_pcr: int
    nv_index: int
    srk_name: bytes
    srk_handle: int | None = None  # a persistent SRK; None: the fixed template
    approval_key_pem: bytes | None = None
    created_unix: int = field(default_factory=lambda: int(time.time()))

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "version": VERSION, "kind": "tpm", "mode": self.mode,
            "selection": str(self.selection), "sealed_pcr_values":
                format_values(self.sealed_values),
            "auth_policy": self.auth_policy.hex(), "measure_pcr": self.measure_pcr,
            "nv_index": f"{self.nv_index:#010x}", "srk_name": self.srk_name.hex(),
            "srk_handle": None if self.srk_handle is None else f"{self.srk_handle:#010x}",
            "approval_key_pem": None if self.approval_key_pem is None
                else self.approval_key_pem.decode(),
            "public_blob": PUBLIC_BLOB, "private_blob": PRIVATE_BLOB,
            "created_unix": self.created_unix,
        }, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, source: Path) -> RootRecord:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise RootRefused(f"{source} is not a DomS0 root record")
            if doc.get("version") != VERSION:
                raise RootRefused(f"{source}: root record version {doc.get('version')!r} is "
                                  f"not supported (this DomS0 reads {VERSION})")
            if doc["mode"] not in MODES:
                raise RootRefused(f"{source}: unknown policy mode {doc['mode']!r}")
            pem = doc["approval_key_pem"]
            handle = doc["srk_handle"]
            return cls(doc["mode"], PcrSelection.parse(doc["selection"]),
                       parse_values(doc["sealed_pcr_values"]),
                       bytes.fromhex(doc["auth_policy"]), int(doc["measure_pcr"]),
                       int(doc["nv_index"], 16), bytes.fromhex(doc["srk_name"]),
                       None if handle is None else int(handle, 16),
                       None if pem is None else pem.encode(), int(doc["created_unix"]))
        except (ValueError, KeyError, TypeError, AttributeError, SelectionError) as exc:
            raise RootRefused(f"root record {source} is damaged ({exc}); restore "
                              f"{source.parent} from backup") from exc


class RootFiles:
    """Paths under ``STATE_DIR/root`` and their reading and writing."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / ROOT_DIR
        self.record = self.dir / RECORD_FILE
        self.public = self.dir / PUBLIC_BLOB
        self.private = self.dir / PRIVATE_BLOB
        self.approved = self.dir / APPROVED_DIR

    def exists(self) -> bool:
        return self.record.exists()

    def load(self) -> RootRecord:
        try:
            data = self.record.read_bytes()
        except FileNotFoundError:
            raise RootRefused(
                f"no host TPM root is provisioned in {self.dir.parent}; run "
                f"`doms0 init --state-dir {self.dir.parent} --root-tpm TCTI` first") from None
        return RootRecord.from_json(data, self.record)

    def blobs(self) -> tuple[bytes, bytes]:
        try:
            return self.public.read_bytes(), self.private.read_bytes()
        except FileNotFoundError as exc:
            raise RootRefused(f"sealed KEK blob {exc.filename} is missing; restore "
                              f"{self.dir} from backup") from None

    def save(self, record: RootRecord, public: bytes, private: bytes) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.approved.mkdir(mode=0o700, exist_ok=True)
        atomic_write(self.public, public, mode=0o644)
        atomic_write(self.private, private, mode=0o644)
        atomic_write(self.record, record.to_json(), mode=0o644)
