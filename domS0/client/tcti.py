"""A tpm2-pytss TCTI that reaches a vTPM over gRPC.

    from tpm2_pytss import ESAPI
    from domS0.client.tcti import GrpcTcti
    tcti = GrpcTcti("127.0.0.1:7340", "vm1", token)
    with ESAPI(tcti) as esapi:
        esapi.get_random(16)
    tcti.close()

The TCTI holds the vTPM (Attach) from its first command until it is closed.
"""

from __future__ import annotations

import os

from tpm2_pytss.TCTI import PyTCTI

from .attach import AttachLink
from .channel import ClientTls, open_channel


class GrpcTcti(PyTCTI):
    def __init__(self, server: str, vtpm: str, token: str | None = None,
                 tls: ClientTls | None = None) -> None:
        """``tls`` for a mutual-TLS DomS0, ``token`` for an insecure-loopback one,
        neither for its Unix socket."""
        super().__init__(max_size=4096, magic=b"VTPMGRPC")
        self._channel = open_channel(server, token or None, tls=tls)
        self._link = AttachLink(self._channel, vtpm, f"tpm2-pytss GrpcTcti pid {os.getpid()}")
        self._locality = 0
        self._response = b""

    def do_transmit(self, command: bytes) -> None:
        self._response = self._link.transmit(bytes(command), self._locality)

    def do_receive(self, timeout: int) -> bytes:
        response, self._response = self._response, b""
        return response

    def do_set_locality(self, locality: int) -> None:
        self._locality = locality

    def do_finalize(self) -> None:
        self.close()

    def close(self) -> None:
        """Detach now; tpm2-pytss may finalize a Python TCTI only when it is collected."""
        self._link.close()
        self._channel.close()
