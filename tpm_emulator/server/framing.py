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
