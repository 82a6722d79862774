"""The IO loop of swtpm's socket protocol: a data listener and a control listener.

Data connections carry raw TPM commands framed by their header (tpm2-tss's swtpm
TCTI opens one connection per command; QEMU-like clients keep one); control
connections carry swtpm's control protocol. Both share one ``ControlSession``, so a
locality set on the control port applies to the next data command, as in swtpm.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .. import swtpm_ctrl as ctrl
from .control import ControlSession
from .framing import enable_nodelay, read_command

STALL_SECONDS = 0.5


@dataclass(frozen=True)
class Endpoint:
    """Where to listen: TCP ``host:port`` or a Unix socket ``path``."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str = ""

    def listen(self) -> socket.socket:
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                sock.bind(self.path)
            finally:
                os.umask(old)
        else:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                sock.close()
                raise OSError(exc.errno,
                              f"cannot listen on {self.host}:{self.port}: {exc.strerror}"
                              ) from None
        sock.listen(16)
        return sock


class SwtpmSocketServer:
    """Serves one TPM on a data and a control endpoint until ``stop()``/CMD_SHUTDOWN."""

    def __init__(self, session: ControlSession, data: Endpoint, control: Endpoint) -> None:
        self.session = session
        self.stopped = threading.Event()
        self._data = data.listen()
        try:
            self._ctrl = control.listen()
        except OSError:
            self._data.close()
            raise
        self._paths = [e.path for e in (data, control) if e.path]

    @property
    def data_address(self) -> tuple[str, int]:
        name = self._data.getsockname()
        return (name[0], name[1]) if isinstance(name, tuple) else (str(name), 0)

    def serve_forever(self) -> None:
        for listener, handler in ((self._data, self._serve_data),
                                  (self._ctrl, self._serve_ctrl)):
            threading.Thread(target=self._accept, args=(listener, handler),
                             daemon=True).start()
        self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()
        for sock in (self._data, self._ctrl):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _accept(self, listener: socket.socket,
                handler: Callable[[socket.socket], None]) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            enable_nodelay(conn)
            threading.Thread(target=self._guarded, args=(handler, conn), daemon=True).start()

    @staticmethod
    def _guarded(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handler(conn)

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
