"""tpm2-pytss ESAPI straight onto anything that executes TPM commands in process (our
emulator core, an engine): no sockets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from tpm2_pytss import ESAPI
from tpm2_pytss.TCTI import PyTCTI


class Executes(Protocol):
    def execute(self, command: bytes) -> bytes: ...


class InProcessTCTI(PyTCTI):
    """Hands command bytes to the core and its response back."""

    def __init__(self, core: Executes) -> None:
        super().__init__(max_size=4096)
        self.core = core
        self.response = b""

    def do_transmit(self, command: bytes) -> None:
        self.response = self.core.execute(bytes(command))

    def do_receive(self, timeout: int) -> bytes:
        return self.response


@contextmanager
def esapi_over(core: Executes) -> Iterator[Any]:
    with ESAPI(InProcessTCTI(core)) as ectx:
        yield ectx
