"""Raw TPM command bytes over the data port of ``swtpm socket`` (one TCP connection).

The swtpm data channel carries bare TPM 2.0 frames: a command in, a response out, the
response's length read from its own header (Part 1, 18.3 — no extra framing as in mssim).
"""

from __future__ import annotations

import socket
import struct

_HEADER = struct.Struct(">HII")


class SwtpmSocket:
    """One connection to swtpm's data port; ``execute`` reconnects once if it dropped."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def execute(self, command: bytes) -> bytes:
        for attempt in (1, 2):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(self.address, timeout=self.timeout)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock.sendall(command)
                head = self._read(_HEADER.size)
                return head + self._read(_HEADER.unpack(head)[1] - _HEADER.size)
            except OSError:
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _read(self, n: int) -> bytes:
        assert self.sock is not None
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("swtpm closed the connection")
            out += chunk
        return bytes(out)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> SwtpmSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
