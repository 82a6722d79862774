"""Approval groups, after Xen vtpmmgr's vTPM groups and their System Approval Agent.

A group binds vTPMs (metadata ``group=NAME``) to an approval key. The key's holder signs
*approval lists*: a sequence number and the DomS0 measurements (code digests, or whole
measurement digests) acceptable for the group. A group's vTPMs start — their keys open
— and migrate in only on a host whose DomS0 measurement is on the group's latest list.
A list is accepted only if the group's key signed it and its sequence number is higher
than the stored one's, so an old list (naming a DomS0 since found wanting) can never be
replayed to bring that DomS0 back.

The list is a small JSON document, signed over its canonical form without the
signature (ECDSA with SHA-384, P-256 or P-384 keys)::

    {"format": "vtpm-stack approval list", "version": 1, "group": "tenant-a",
     "sequence": 7, "measurements": ["<hex>", …], "signature": "<hex DER>"}
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vtpm_manager.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from vtpm_manager.kek import KeyEncryptionKey

from .store import SealedFile

FORMAT: Final = "vtpm-stack approval list"
VERSION: Final = 1
GROUP_KEY: Final = "group"
_CURVES: Final = ("secp256r1", "secp384r1")


@dataclass(frozen=True)
class ApprovalList:
    group: str
    sequence: int
    measurements: tuple[bytes, ...]
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        return json.dumps({"format": FORMAT, "version": VERSION, "group": self.group,
                           "sequence": self.sequence,
                           "measurements": [m.hex() for m in self.measurements]},
                          sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> str:
        doc = json.loads(self.signed_bytes())
        doc["signature"] = self.signature.hex()
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ApprovalList:
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT or doc.get("version") != VERSION:
                raise ValueError(f"not a version-{VERSION} approval list")
            sequence = doc["sequence"]
            if type(sequence) is not int or sequence < 1:
                raise ValueError("sequence must be a positive integer")
            measurements = tuple(bytes.fromhex(m) for m in doc["measurements"])
            if any(len(m) != 32 for m in measurements):
                raise ValueError("measurements are SHA-256 digests (64 hex digits)")
            return cls(str(doc["group"]), sequence, measurements,
                       bytes.fromhex(doc["signature"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"bad approval list: {exc}") from None


def sign_list(private_key: ec.EllipticCurvePrivateKey, group: str, sequence: int,
              measurements: Iterable[bytes]) -> ApprovalList:
    unsigned = ApprovalList(group, sequence, tuple(measurements))
    signature = private_key.sign(unsigned.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    return ApprovalList(group, sequence, unsigned.measurements, signature)


def load_approval_key(pem: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise InvalidArgument(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise InvalidArgument("approval keys are ECDSA P-256 or P-384")
    return key


def fingerprint(pem: str) -> str:
    der = load_approval_key(pem).public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:32]


@dataclass(frozen=True)
class Group:
    name: str
    key_pem: str
    sequence: int = 0
    measurements: tuple[bytes, ...] = ()

    def approves(self, measurements: Iterable[bytes]) -> bool:
        return any(m in self.measurements for m in measurements)

    def to_json(self) -> dict[str, Any]:
        return {"key_pem": self.key_pem, "sequence": self.sequence,
                "measurements": [m.hex() for m in self.measurements]}


class Groups:
    """The groups this DomS0 knows, sealed under its KEK in ``groups.sealed``."""

    def __init__(self, folder: Path, kek: KeyEncryptionKey) -> None:
        self._file = SealedFile(folder / "groups.sealed", kek, "groups")
        self._lock = threading.Lock()
        doc = self._file.load() or {}
        self._groups = {name: Group(name, g["key_pem"], int(g["sequence"]),
                                    tuple(bytes.fromhex(m) for m in g["measurements"]))
                        for name, g in doc.items()}

    def get(self, name: str) -> Group | None:
        with self._lock:
            return self._groups.get(name)

    def all(self) -> list[Group]:
        with self._lock:
            return sorted(self._groups.values(), key=lambda g: g.name)

    def create(self, name: str, key_pem: str) -> Group:
        load_approval_key(key_pem)
        with self._lock:
            if name in self._groups:
                raise AlreadyExists(f"approval group {name!r} exists already")
            group = Group(name, key_pem)
            self._save({**self._groups, name: group})
            return group

    def load_list(self, approval: ApprovalList) -> Group:
        """Accept a newer list signed by the group's key; refuse anything else."""
        with self._lock:
            group = self._groups.get(approval.group)
            if group is None:
                raise NotFound(f"no approval group {approval.group!r}; create it first with "
                               "vtpmctl group create")
            try:
                load_approval_key(group.key_pem).verify(
                    approval.signature, approval.signed_bytes(), ec.ECDSA(hashes.SHA384()))
            except InvalidSignature:
                raise FailedPrecondition(f"the approval list for {group.name} is not signed "
                                         "by the group's approval key") from None
            if approval.sequence <= group.sequence:
                raise FailedPrecondition(
                    f"approval list {approval.sequence} for {group.name} is not newer than "
                    f"the stored list {group.sequence}: an old list is never taken back")
            updated = Group(group.name, group.key_pem, approval.sequence,
                            approval.measurements)
            self._save({**self._groups, group.name: updated})
            return updated

    def _save(self, groups: dict[str, Group]) -> None:
        self._file.save({name: g.to_json() for name, g in groups.items()})
        self._groups = groups
