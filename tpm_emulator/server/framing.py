"""Reading TPM commands off a stream socket, framed by the header's size field.

A command is complete when the 10-byte header and ``size - 10`` more bytes have
arrived. A client that stops mid-frame (a size field larger than what it sent) is
not waited for forever: after ``stall`` seconds without a byte, what arrived so far
is handed over as is, and the TPM answers it with TPM_RC_COMMAND_SIZE, which is
also what swtpm does with a short command.
"""

from __future__ import annotations

import socket
import struct

HEADER_BYTES = 10
STALL_SECONDS = 0.5
# Far beyond any real command (4096) yet bounded: a hostile size field must not
# make us buffer gigabytes. Bytes past this are drained and dropped.
MAX_BUFFERED = 4 * 1024 * 1024
# A length-prefixed or size-framed command above this is refused outright. Real
# commands stop at MAX_COMMAND_SIZE (4096); the slack lets the TPM itself answer a
# merely oversized command with TPM_RC_COMMAND_SIZE.
MAX_COMMAND_BYTES = 64 * 1024


def read_command(sock: socket.socket, stall: float = STALL_SECONDS) -> bytes | None:
    """Block for the next command; None when the peer closed before sending one."""
    sock.settimeout(None)
    first = sock.recv(HEADER_BYTES)
    if not first:
        return None
    data = bytearray(first)
    sock.settimeout(stall)
    dropped = 0
    try:
        while True:
            want = struct.unpack(">I", data[2:6])[0] if len(data) >= 6 else HEADER_BYTES
            want = max(want, HEADER_BYTES)
            if len(data) + dropped >= want:
                break
            chunk = sock.recv(min(65536, want - len(data) - dropped))
            if not chunk:
                break
            if len(data) < MAX_BUFFERED:
                data += chunk
            else:
                dropped += len(chunk)
    except TimeoutError:
        pass
    finally:
        sock.settimeout(None)
    return bytes(data)


def enable_nodelay(sock: socket.socket) -> None:
    """Responses go out at once: no Nagle stall on the client's next command."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def quick_ack(sock: socket.socket) -> None:
    """ACK at once what was just read (Linux re-arms delayed ACK after each read).

    tpm2-tss's mssim TCTI writes the 9-byte prefix and the command separately
    without TCP_NODELAY, so its second write waits for our ACK of the first: with
    delayed ACK that costs ~40 ms per command (swtpm-protocols.md 1.5).
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


class FrameTooLarge(Exception):
    """The peer announced a command larger than any TPM command (the peer's fault)."""


class CommandSplitter:
    """Bytes of a stream in, whole TPM commands out, cut at the header's size field.

    For streams that carry nothing but commands back to back (the ``cmd:`` TCTI's
    pipe). A size below the header's 10 bytes yields the header alone, for the TPM to
    answer with TPM_RC_COMMAND_SIZE; a size beyond ``limit`` cannot be resynchronised
    and raises ``FrameTooLarge``.
    """

    def __init__(self, limit: int = MAX_COMMAND_BYTES) -> None:
        self._buffer = bytearray()
        self._limit = limit

    @property
    def pending(self) -> bool:
        """Part of a command has arrived."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        commands: list[bytes] = []
        while len(self._buffer) >= HEADER_BYTES:
            size = max(struct.unpack_from(">I", self._buffer, 2)[0], HEADER_BYTES)
            if size > self._limit:
                raise FrameTooLarge(f"command of {size} bytes announced")
            if len(self._buffer) < size:
                break
            commands.append(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return commands
