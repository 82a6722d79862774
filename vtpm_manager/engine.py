"""The interface every vTPM engine implements.

An engine is one TPM 2.0 instance: bytes in at a locality, bytes out. The manager
owns lifecycle, persistence and serialization; an engine only runs commands and
hands its whole state over as an opaque, engine-versioned blob so that our store,
not the engine's own files, is the source of truth.
"""

from __future__ import annotations

import abc


class EngineError(Exception):
    """The engine itself failed (process died, socket broke, state refused).

    A TPM-level error is never an ``EngineError``: it is a response code inside the
    response bytes. This exception means the engine can no longer answer at all.
    """


class Engine(abc.ABC):
    """One running TPM 2.0 instance.

    Lifecycle: ``start(state)`` (``state`` is ``None`` for a freshly manufactured TPM,
    or a blob earlier returned by ``export_state``), any number of ``execute`` calls,
    ``stop()``. Callers serialize calls to one engine; an engine need not be
    thread-safe.
    """

    #: Short name used in configuration, records and the API ("builtin", "swtpm").
    name: str = ""

    @abc.abstractmethod
    def start(self, state: bytes | None) -> None:
        """Power the TPM on, from ``state`` if given, else freshly manufactured.

        A restored TPM resumes exactly where it was (PCRs, sessions-free volatile
        state, started or not); a fresh one is powered on and awaits TPM2_Startup.
        """

    @abc.abstractmethod
    def execute(self, command: bytes, locality: int = 0) -> bytes:
        """Run one well-framed TPM command and return the response bytes.

        The caller has already checked the frame (header present, size field equal
        to the byte count, within the maximum size). Never raises for TPM-level
        errors; raises ``EngineError`` only when the engine cannot answer.
        """

    @abc.abstractmethod
    def power_cycle(self, delete_volatile: bool = False) -> None:
        """Reset the TPM as a platform reset would (_TPM_Init).

        This is what swtpm's CMD_INIT does: the TPM then waits for TPM2_Startup.
        With ``delete_volatile`` any saved volatile state is discarded first.
        """

    @abc.abstractmethod
    def export_state(self) -> bytes:
        """Return the whole TPM state (permanent and volatile) as one blob."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release the engine's resources. Safe to call more than once."""
