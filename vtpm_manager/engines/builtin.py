"""The built-in engine: our own sans-IO TPM 2.0 (``tpm_emulator``) in this process."""

from __future__ import annotations

from tpm_emulator import TPM, StateFormatError

from ..engine import Engine, EngineError


class BuiltinEngine(Engine):
    """No process, no socket: commands are function calls, state is a snapshot."""

    name = "builtin"

    def __init__(self) -> None:
        self._tpm: TPM | None = None

    def start(self, state: bytes | None) -> None:
        try:
            self._tpm = TPM() if state is None else TPM.restore(state)
        except StateFormatError as exc:
            raise EngineError(f"builtin TPM state refused: {exc}") from exc

    def _running(self) -> TPM:
        if self._tpm is None:
            raise EngineError("builtin engine is not started")
        return self._tpm

    def execute(self, command: bytes, locality: int = 0) -> bytes:
        return self._running().execute(command, locality)

    def power_cycle(self, delete_volatile: bool = False) -> None:
        self._running().power_cycle(delete_volatile)

    def export_state(self) -> bytes:
        return self._running().snapshot()

    def stop(self) -> None:
        self._tpm = None
