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

    def resume(self) -> None:
        """No state blob is taken here, so there is nothing to resume from."""

    def lock_storage(self) -> None:
        """DomS0 owns the storage; nothing to re-lock from an attach."""


def parse_swtpm_address(text: str) -> tuple[Endpoint, Endpoint]:
    """``HOST:PORT`` -> data PORT, control PORT+1; ``unix:PATH`` -> PATH, PATH.ctrl.

    These are tpm2-tss's swtpm TCTI conventions. A Unix socket (mode 0600) limits the
    vTPM to its owner; a TCP port on loopback is open to every local user.
    """
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path:
            raise ValueError("--swtpm unix: needs a path, e.g. unix:/run/vm1.sock")
        return Endpoint(path=path), Endpoint(path=path + ".ctrl")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65534:
        raise ValueError(f"--swtpm expects HOST:PORT or unix:PATH, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return Endpoint(host, int(port)), Endpoint(host, int(port) + 1)


def attach_server(link: AttachLink, data: Endpoint, control: Endpoint,
                  name: str) -> SwtpmSocketServer:
    """Serve the attached vTPM on swtpm's data and control endpoints."""
    session = ControlSession(RemoteBackend(link), PLATFORM_CAPS, name)
    return SwtpmSocketServer(session, data, control)
