"""Our own TPM as a control-session backend, with its state kept in one file.

The standalone ``tpm-emulator`` keeps the whole TPM (permanent and volatile) in
``DIR/tpm-emulator.state``, rewritten durably after every command that may change
state, so a killed server restarts exactly where its last answered command left it.

One process at a time owns a state directory: ``DIR/.lock`` is held (``flock``) for
the backend's life, as swtpm holds its ``.lock``. Two writers would otherwise each
overwrite the other's commands. The socket and mssim servers refuse a directory in
use; the stdio server (one short-lived process per ``cmd:`` TCTI context) waits.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from ..errors import StateFormatError
from ..mutations import may_change_state
from ..tpm import TPM
from .control import BackendError

STATE_FILE = "tpm-emulator.state"
LOCK_FILE = ".lock"


class StateDirInUse(OSError):
    """Another process holds the state directory's lock."""


def lock_state_dir(state_dir: Path, wait: bool) -> int:
    """Hold ``state_dir/.lock`` exclusively; the returned fd keeps the lock."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirInUse(f"state directory {state_dir} is in use by another "
                            "tpm-emulator") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_durably(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync the folder: old or new, never torn."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class LocalBackend:
    """One in-process TPM; commands run one at a time."""

    def __init__(self, state_dir: Path | None, wait_for_lock: bool = False) -> None:
        self._path = state_dir / STATE_FILE if state_dir else None
        self._lock_fd = lock_state_dir(state_dir, wait_for_lock) if state_dir else None
        self._lock = threading.Lock()
        self._saved = b""
        if self._path is not None and self._path.exists():
            self._saved = self._path.read_bytes()
            self.tpm = TPM.restore(self._saved)
        else:
            self.tpm = TPM()
            self._persist()

    def _persist(self) -> None:
        if self._path is None:
            return
        blob = self.tpm.snapshot()
        if blob != self._saved:
            write_durably(self._path, blob)
            self._saved = blob

    def transmit(self, command: bytes, locality: int) -> bytes:
        with self._lock:
            response = self.tpm.execute(command, locality)
            if may_change_state(command):
                self._persist()
            return response

    def power_cycle(self, delete_volatile: bool) -> None:
        with self._lock:
            self.tpm.power_cycle(delete_volatile)
            self._persist()

    def get_state_blob(self) -> bytes:
        with self._lock:
            return self.tpm.snapshot()

    def set_state_blob(self, blob: bytes) -> None:
        with self._lock:
            try:
                self.tpm = TPM.restore(blob)
            except StateFormatError as exc:
                raise BackendError(str(exc)) from exc
            self._persist()

    def resume(self) -> None:
        """The restored snapshot already holds the TPM's whole state: nothing to do."""

    def lock_storage(self) -> None:
        """One process owns its state directory: nothing to re-lock."""
