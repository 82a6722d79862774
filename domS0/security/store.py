"""DomS0's security state on disk: the active ACM policy, the labels, the approval
lists — each one file in ``STATE_DIR/security/``, sealed under the KEK (AES-GCM bound
to the file's role), so an edit behind DomS0's back is refused at load, never obeyed.

Labels: ``dom`` labels name a domain's subject label (its STE and Chinese Wall types);
``res`` labels name a vTPM's object label (its STE types), as ``xm addlabel … dom|res``
did for sHype.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Final

from vtpm_manager.durable import atomic_write
from vtpm_manager.kek import KeyEncryptionKey, KeyUnwrapError

SECURITY_DIR: Final = "security"
LABEL_KINDS: Final = ("dom", "res")


class SecurityStateError(Exception):
    """A security state file does not open (altered, or another DomS0's)."""


class SealedFile:
    """One JSON document sealed under the KEK for one role."""

    def __init__(self, path: Path, kek: KeyEncryptionKey, role: str) -> None:
        self.path, self._kek, self._role = path, kek, role

    def load(self) -> Any | None:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return json.loads(self._kek.unwrap(blob, f"security/{self._role}"))
        except (KeyUnwrapError, ValueError) as exc:
            raise SecurityStateError(f"{self.path} does not open under this DomS0's key "
                                     f"(altered?): {exc}") from None

    def save(self, doc: Any) -> None:
        data = json.dumps(doc, sort_keys=True).encode()
        atomic_write(self.path, self._kek.wrap(data, f"security/{self._role}"), mode=0o600)


class Labels:
    """Label assignments: ``dom`` NAME → subject label, ``res`` vTPM → object label."""

    def __init__(self, folder: Path, kek: KeyEncryptionKey) -> None:
        self._file = SealedFile(folder / "labels.sealed", kek, "labels")
        self._lock = threading.Lock()
        doc = self._file.load() or {"dom": {}, "res": {}}
        self._labels: dict[str, dict[str, str]] = {k: dict(doc.get(k, {}))
                                                   for k in LABEL_KINDS}

    def get(self, kind: str, name: str) -> str | None:
        with self._lock:
            return self._labels[kind].get(name)

    def all(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {k: dict(v) for k, v in self._labels.items()}

    def set(self, kind: str, name: str, label: str | None) -> None:
        """Assign (or, with None, remove) a label; durable before it returns."""
        if kind not in LABEL_KINDS:
            raise ValueError(f"label kind is dom or res, not {kind!r}")
        with self._lock:
            updated = {k: dict(v) for k, v in self._labels.items()}
            if label is None:
                updated[kind].pop(name, None)
            else:
                updated[kind][name] = label
            self._file.save(updated)
            self._labels = updated
