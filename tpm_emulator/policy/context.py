"""What a policy session remembers besides its policyDigest (the reference's SESSION
fields set by TPM2_Policy* commands and checked at authorization).

Kept in loaded-session snapshots and saved session contexts as an opaque, versioned
octet string (``encode``/``decode``), so the session table does not need to know its
fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import RC
from ..errors import TpmError

MAX_ENCODED = 1024


@dataclass
class PolicyContext:
    """Per-session policy state; starts empty and is reset by PolicyRestart."""

    def encode(self) -> bytes:
        return b"\x01"

    @classmethod
    def decode(cls, blob: bytes) -> PolicyContext:
        if blob not in (b"", b"\x01"):
            raise TpmError(RC.INTEGRITY, "policy session state is malformed")
        return cls()
