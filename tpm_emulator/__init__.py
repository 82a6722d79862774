"""A TPM 2.0 in pure Python: the sans-IO core of the ``builtin`` vTPM engine.

``TPM().execute(command_bytes, locality) -> response_bytes``, ``snapshot()`` /
``TPM.restore(blob)``; ``check_frame`` for callers that forward to other engines.
"""

from __future__ import annotations

import struct

from .errors import StateFormatError
from .frame import check_frame
from .tpm import TPM


def response_code(response: bytes) -> int:
    """The TPM_RC of a response (0 for success); TPM_RC_INSUFFICIENT if it is short."""
    if len(response) < 10:
        return 0x09A
    return int(struct.unpack_from(">I", response, 6)[0])


__all__ = ["TPM", "StateFormatError", "check_frame", "response_code"]
