"""Monotonic counters: the anchor of rollback protection.

A counter only ever goes up. The host TPM's NV counter is the real one; the file
counter exists for development (anyone who can write the state folder can roll it
back, which is exactly what it cannot protect against) and says so.
"""

from __future__ import annotations

import abc
import struct
import threading
from pathlib import Path

from .durable import atomic_write


class CounterError(Exception):
    """The counter cannot be read or advanced; the message says why."""


class MonotonicCounter(abc.ABC):
    """A counter that can be read and incremented, never decreased."""

    #: What backs it, for logs and messages ("host TPM NV 0x01500020", "file …").
    origin: str = ""

    @abc.abstractmethod
    def read(self) -> int:
        """The current value."""

    @abc.abstractmethod
    def increment(self) -> int:
        """Advance by one, durably; returns the new value."""


class FileCounter(MonotonicCounter):
    """A development counter in a file (8 bytes, big-endian)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.origin = f"development counter file {path}"
        self._lock = threading.Lock()

    def read(self) -> int:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        if len(data) != 8:
            raise CounterError(f"{self.path} is not a counter file ({len(data)} bytes)")
        return int(struct.unpack(">Q", data)[0])

    def increment(self) -> int:
        with self._lock:
            value = self.read() + 1
            atomic_write(self.path, struct.pack(">Q", value))
            return value
