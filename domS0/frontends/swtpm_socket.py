"""``vtpmctl attach --swtpm HOST:PORT``: a vTPM behind swtpm's TCP socket protocol.

Data on PORT, control on PORT+1, exactly as tpm2-tss's ``swtpm:`` TCTI, tpm2-tools,
tpm2-pytss and tpm2-abrmd expect; every command travels to DomS0 over one gRPC
Attach stream that holds the vTPM while this front end runs.
"""

from __future__ import annotations

from domS0.client.attach import AttachLink, LinkError
from tpm_emulator.server.control import PLATFORM_CAPS, BackendError, ControlSession
from tpm_emulator.server.swtpm_socket import Endpoint, SwtpmSocketServer


class RemoteBackend:
    """The vTPM at the far end of an Attach link."""

    def __init__(self, link: AttachLink) -> None:
        self.link = link

    def transmit(self, command: bytes, locality: int) -> bytes:
        try:
            return self.link.transmit(command, locality)
        except LinkError as exc:
            raise BackendError(str(exc)) from exc

    def power_cycle(self, delete_volatile: bool) -> None:
        try:
            self.link.power_cycle(delete_volatile)
        except LinkError as exc:
            raise BackendError(str(exc)) from exc

    def get_state_blob(self) -> bytes:
        raise BackendError("state blobs are served on DomS0's own control socket")

    def set_state_blob(self, blob: bytes) -> None:
        raise BackendError("state blobs are served on DomS0's own control socket")


def attach_server(link: AttachLink, host: str, port: int, name: str) -> SwtpmSocketServer:
    """Listen on HOST:PORT (data) and HOST:PORT+1 (control) for the attached vTPM."""
    session = ControlSession(RemoteBackend(link), PLATFORM_CAPS, name)
    return SwtpmSocketServer(session, Endpoint(host, port), Endpoint(host, port + 1))
