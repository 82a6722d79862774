"""The append-only audit log: one JSON line per decision worth keeping.

Every denial is written (and every permit when ``audit_permits`` is set): when, who,
what, on which object, which module and rule decided, and whether it was enforced
(``permissive`` mode logs the same denial and lets the call through). Lines are
appended with O_APPEND and fsync'd, so a crash loses at most the line being written
and never rewrites an earlier one; the file is created mode 0600.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, entry: dict[str, object]) -> None:
        line = json.dumps({"time": round(time.time(), 3), **entry}, sort_keys=True) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def entries(self) -> list[dict[str, object]]:
        """Every line so far (for tests and ``vtpmctl audit``)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
