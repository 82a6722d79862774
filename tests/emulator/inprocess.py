"""tpm2-pytss ESAPI straight onto an in-process emulator core: no sockets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tpm2_pytss import ESAPI
from tpm2_pytss.TCTI import PyTCTI

from tpm_emulator import TPM


class InProcessTCTI(PyTCTI):
    """Hands command bytes to the core and its response back."""

    def __init__(self, core: TPM) -> None:
        super().__init__(max_size=4096)
        self.core = core
        self.response = b""

    def do_transmit(self, command: bytes) -> None:
        self.response = self.core.execute(bytes(command))

    def do_receive(self, timeout: int) -> bytes:
        return self.response


@contextmanager
def esapi_over(core: TPM) -> Iterator[Any]:
    with ESAPI(InProcessTCTI(core)) as ectx:
        yield ectx
