"""The development root of trust: a key file and a counter file in the state folder.

Anyone who can read the state folder can decrypt every vTPM and roll its counter
back, so it warns at every open and ``--production`` refuses it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..counter import FileCounter, MonotonicCounter
from ..kek import KeyEncryptionKey, load_development_kek
from .base import RootOfTrust

log = logging.getLogger(__name__)

KEK_FILE = "kek.dev"
COUNTER_FILE = "counter.dev"


class SoftwareRoot(RootOfTrust):
    """The 0600 ``kek.dev`` file and a :class:`FileCounter`: development only."""

    kind = "software"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def describe(self) -> str:
        return f"development software root (key file {self.state_dir / KEK_FILE})"

    def open(self) -> KeyEncryptionKey:
        log.warning("DEVELOPMENT ROOT OF TRUST: vTPM keys are NOT protected by a TPM; "
                    "provision the host TPM with `doms0 init --root-tpm TCTI` for real use")
        return load_development_kek(self.state_dir / KEK_FILE)

    def counter(self) -> MonotonicCounter:
        return FileCounter(self.state_dir / COUNTER_FILE)
