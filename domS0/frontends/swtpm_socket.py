"""``vtpmctl attach --swtpm HOST:PORT``: a vTPM behind swtpm's TCP socket protocol.

Data on PORT (raw TPM commands, framed by their header), control on PORT+1 (swtpm's
control protocol), exactly as tpm2-tss's ``swtpm:`` TCTI, tpm2-tools, tpm2-pytss and
tpm2-abrmd expect; every command travels to DomS0 over one gRPC Attach stream that
holds the vTPM while this front end runs.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from domS0.client.attach import AttachLink, LinkError
from tpm_emulator import swtpm_ctrl as ctrl

from .control import PLATFORM_CAPS, BackendError, ControlSession
from .framing import enable_nodelay, read_command

log = logging.getLogger(__name__)

CAPS = PLATFORM_CAPS
STALL_SECONDS = 0.5


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


class SwtpmSocketFrontEnd:
    """Listens on the data and control ports until ``stop()`` or CMD_SHUTDOWN."""

    def __init__(self, link: AttachLink, host: str, port: int, name: str) -> None:
        self.session = ControlSession(RemoteBackend(link), CAPS, name)
        self.stopped = threading.Event()
        self._data = _listen(host, port)
        self._ctrl = _listen(host, port + 1)
        self.address = self._data.getsockname()[:2]

    def serve_forever(self) -> None:
        threads = [
            threading.Thread(target=self._accept, args=(self._data, self._serve_data),
                             daemon=True, name="swtpm-data"),
            threading.Thread(target=self._accept, args=(self._ctrl, self._serve_ctrl),
                             daemon=True, name="swtpm-ctrl"),
        ]
        for thread in threads:
            thread.start()
        self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()
        for sock in (self._data, self._ctrl):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket, handler: object) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            enable_nodelay(conn)
            threading.Thread(target=self._guarded, args=(handler, conn), daemon=True).start()

    def _guarded(self, handler: object, conn: socket.socket) -> None:
        with conn:
            try:
                handler(conn)  # type: ignore[operator]
            except OSError:
                pass

    def _serve_data(self, conn: socket.socket) -> None:
        while not self.stopped.is_set():
            command = read_command(conn)
            if command is None:
                return
            conn.sendall(self.session.data_command(command))

    def _serve_ctrl(self, conn: socket.socket) -> None:
        parser = ctrl.RequestParser()
        while not self.stopped.is_set():
            conn.settimeout(STALL_SECONDS if parser.pending else None)
            try:
                data = conn.recv(65536)
            except TimeoutError:
                expired = parser.expire()
                if expired is not None:
                    conn.sendall(ctrl.error_response(expired.result))
                continue
            if not data:
                return
            for request in parser.feed(data):
                outcome = self.session.handle(request)
                conn.sendall(outcome.response)
                if outcome.hang_up:
                    self.stop()
                    return


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(16)
    return sock
