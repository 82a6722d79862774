"""What DomS0 keeps per vTPM for attestation, beside the vTPM's record.

- ``eventlogs/<uuid>.bin``: the TCG event log of the vTPM's last measured build;
- ``attestation/<uuid>.json``: the enrolled AK (public and private blobs, persistent
  handle, name) and its certificate, with the EK certificate it was checked against.

Sidecar files, not the record's metadata: metadata is the operator's (vtpmctl create
--meta, shown by vtpmctl show) and limited in size, and neither item is secret (the
AK's private blob is wrapped by the vTPM's EK and useless outside it; the log and the
certificates are public by design). Both are written durably; the AK file carries a
format version and is refused, not misread, if it is another version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vtpm_manager.attestation import AttestationKey, Enrollment
from vtpm_manager.durable import atomic_write, durable_unlink
from vtpm_manager.errors import FailedPrecondition

EVENTLOGS_DIR = "eventlogs"
ATTESTATION_DIR = "attestation"
AK_FORMAT = "vtpm-stack.ak"
AK_VERSION = 1


@dataclass(frozen=True)
class EnrolledAk:
    """An AK as DomS0 remembers it: enough to quote and to hand out its chain."""

    ak: AttestationKey
    certificate_pem: bytes
    ek_certificate_pem: bytes


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


BOOTS_DIR = "boots"
BOOT_FORMAT = "vtpm-stack.boot"
BOOT_VERSION = 1


@dataclass(frozen=True)
class BootRecord:
    """A built domain's boot: stored image names (sha256) and its settings."""

    kernel_sha256: str
    initrd_sha256: str | None
    cmdline: str
    config: str  # canonical launch-config JSON


class AttestationStore:
    def __init__(self, state_dir: Path) -> None:
        self.eventlogs = state_dir / EVENTLOGS_DIR
        self.aks = state_dir / ATTESTATION_DIR
        self.boots = state_dir / BOOTS_DIR
        for folder in (self.eventlogs, self.aks, self.boots):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- event logs ----------------------------------------------------------------

    def save_eventlog(self, uuid: str, log: bytes) -> None:
        atomic_write(self.eventlogs / f"{uuid}.bin", log)

    def eventlog(self, uuid: str) -> bytes | None:
        path = self.eventlogs / f"{uuid}.bin"
        return path.read_bytes() if path.exists() else None

    # -- what the domain boots --------------------------------------------------------

    def save_boot(self, uuid: str, boot: BootRecord) -> None:
        """The stored images and settings a build measured, to measure again at every
        boot of the domain."""
        document = {"format": BOOT_FORMAT, "version": BOOT_VERSION, **asdict(boot)}
        atomic_write(self.boots / f"{uuid}.json", json.dumps(document, indent=1).encode())

    def boot(self, uuid: str) -> BootRecord | None:
        path = self.boots / f"{uuid}.json"
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != BOOT_FORMAT or doc.get("version") != BOOT_VERSION:
                raise ValueError(f"not a version-{BOOT_VERSION} boot record")
            return BootRecord(doc["kernel_sha256"], doc["initrd_sha256"], doc["cmdline"],
                              doc["config"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FailedPrecondition(f"{path} is unreadable ({exc}); rebuild the domain"
                                     ) from None

    # -- AKs -------------------------------------------------------------------------

    def save_enrollment(self, uuid: str, enrollment: Enrollment) -> EnrolledAk:
        ak = enrollment.ak
        enrolled = EnrolledAk(ak, enrollment.certificate_pem, _pem(enrollment.ek_certificate))
        document = {
            "format": AK_FORMAT, "version": AK_VERSION, "alg": ak.alg, "handle": ak.handle,
            "public": ak.public.hex(), "private": ak.private.hex(), "name": ak.name.hex(),
            "certificate": enrolled.certificate_pem.decode(),
            "ek_certificate": enrolled.ek_certificate_pem.decode(),
        }
        atomic_write(self.aks / f"{uuid}.json", json.dumps(document, indent=1).encode())
        return enrolled

    def enrolled(self, uuid: str) -> EnrolledAk | None:
        path = self.aks / f"{uuid}.json"
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != AK_FORMAT or doc.get("version") != AK_VERSION:
                raise FailedPrecondition(
                    f"{path} is not a version-{AK_VERSION} AK file; remove it and rebuild "
                    "the domain to enroll a new AK")
            ak = AttestationKey(doc["alg"], int(doc["handle"]), bytes.fromhex(doc["public"]),
                                bytes.fromhex(doc["private"]), bytes.fromhex(doc["name"]))
            return EnrolledAk(ak, doc["certificate"].encode(), doc["ek_certificate"].encode())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FailedPrecondition(f"{path} is unreadable ({exc}); remove it and rebuild "
                                     "the domain to enroll a new AK") from None

    def forget(self, uuid: str) -> None:
        """A deleted vTPM's log and AK go with it."""
        durable_unlink(self.eventlogs / f"{uuid}.bin")
        durable_unlink(self.aks / f"{uuid}.json")
        durable_unlink(self.boots / f"{uuid}.json")
