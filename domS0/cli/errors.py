"""vtpmctl's exit codes and its one error type (shared by its command modules)."""

from __future__ import annotations

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
RPC_TIMEOUT = 30.0


class CliError(Exception):
    """A failure vtpmctl reports as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code
