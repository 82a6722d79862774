"""The sidecar files a vTPM takes along when it migrates: its event log, its enrolled
AK (public, EK-wrapped private, certificate), its boot record and the images that boot
record names, so the destination can attest the domain and measure its next boot.

None of them is secret (see :mod:`domS0.attestation_store`); they travel inside the
encrypted package anyway, so the package alone says everything about the vTPM."""

from __future__ import annotations

import json
from pathlib import Path

from vtpm_manager.durable import atomic_write

from ..attestation_store import AttestationStore
from ..imagestore import ImageStore

EVENTLOG, AK, BOOT, IMAGE_PREFIX = "eventlog.bin", "ak.json", "boot.json", "image-"


class Artifacts:
    def __init__(self, records: AttestationStore, images: ImageStore) -> None:
        self.records = records
        self.images = images

    def _paths(self, uuid: str) -> dict[str, Path]:
        return {EVENTLOG: self.records.eventlogs / f"{uuid}.bin",
                AK: self.records.aks / f"{uuid}.json",
                BOOT: self.records.boots / f"{uuid}.json"}

    def export(self, uuid: str) -> dict[str, bytes]:
        files = {name: path.read_bytes() for name, path in self._paths(uuid).items()
                 if path.exists()}
        if BOOT in files:
            boot = json.loads(files[BOOT])
            for sha256 in (boot.get("kernel_sha256"), boot.get("initrd_sha256")):
                image = self.images.get(sha256) if sha256 else None
                if image is not None:
                    files[IMAGE_PREFIX + sha256] = image.path.read_bytes()
        return files

    def restore(self, uuid: str, files: dict[str, bytes]) -> None:
        """Write what arrived; images are content-addressed, so a copy already here is
        the same image and is kept."""
        paths = self._paths(uuid)
        for name, data in files.items():
            if name in paths:
                atomic_write(paths[name], data)
            elif name.startswith(IMAGE_PREFIX):
                with self.images.writer() as writer:
                    writer.write(data)
                    stored = writer.commit()
                if stored.sha256 != name.removeprefix(IMAGE_PREFIX):
                    raise ValueError(f"image {name} does not hash to its name")

    def forget(self, uuid: str) -> None:
        self.records.forget(uuid)
