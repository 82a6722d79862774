"""Error types of the emulator core.

Two audiences, two types (the h11 split): ``TpmError`` is the *peer's* fault — the
command was wrong — and is turned into a response code by the dispatcher;
``StateFormatError`` is the *caller's* fault — it handed ``TPM.restore`` something
that is not one of our state blobs — and is raised to the caller.
"""

from __future__ import annotations

from .constants import RC, RC_FMT1, RC_N_SHIFT, RC_P, RC_S


class TpmError(Exception):
    """A command failed with a TPM response code. Never escapes ``TPM.execute``."""

    def __init__(self, rc: int, detail: str = "") -> None:
        super().__init__(f"TPM_RC 0x{rc:03X} {detail}".rstrip())
        self.rc = rc

    @property
    def numbered(self) -> bool:
        """Whether a parameter/handle/session number was already attached."""
        return bool(self.rc & RC_FMT1) and bool(self.rc & 0xF00)


class StateFormatError(ValueError):
    """A state blob given to ``TPM.restore`` is not one we wrote, or is damaged."""


def _number(rc: int, n: int) -> int:
    # Part 2, 6.6.3: only format-1 codes carry a number; others pass through unchanged.
    if not rc & RC_FMT1 or rc & 0xF00 or not 1 <= n <= 15:
        return rc
    return rc | (n << RC_N_SHIFT)


def with_parameter(rc: int, n: int) -> int:
    """Format-1 code for parameter ``n`` (1-based), e.g. VALUE on P1 = 0x1C4."""
    if not rc & RC_FMT1 or rc & 0xF00:
        return rc
    return _number(rc | RC_P, n)


def with_handle(rc: int, n: int) -> int:
    """Format-1 code for handle ``n`` (1-based), e.g. VALUE on H1 = 0x184."""
    return _number(rc, n) if 1 <= n <= 7 else rc


def with_session(rc: int, n: int) -> int:
    """Format-1 code for session ``n`` (1-based), e.g. BAD_AUTH on S1 = 0x9A2."""
    if not rc & RC_FMT1 or rc & 0xF00 or not 1 <= n <= 7:
        return rc
    return rc | RC_S | (n << RC_N_SHIFT)


def base_code(rc: int) -> int:
    """Strip the handle/parameter/session number so a code compares to ``RC`` members."""
    if rc & RC_FMT1:
        return rc & 0xBF  # keep the 6-bit error and the FMT1 bit
    return rc


__all__ = [
    "RC",
    "StateFormatError",
    "TpmError",
    "base_code",
    "with_handle",
    "with_parameter",
    "with_session",
]
