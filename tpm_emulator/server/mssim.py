"""The Microsoft TPM simulator's TCP protocol, for tpm2-tss's ``mssim:`` TCTI.

Two ports (the reference simulator's ``TpmTcpProtocol.h`` and ``TcpServer.c``,
summarised in swtpm-protocols.md 1.5):

* the **TPM port** P carries ``SEND_COMMAND`` = ``u32 8 | u8 locality | u32 size |
  command``, answered ``u32 size | response | u32 0``;
* the **platform port** P+1 carries the platform's signals (power, NV, cancel,
  reset), each a bare ``u32``, each answered ``u32 0``.

``SESSION_END`` closes the connection it arrives on without an answer; ``STOP``
is acknowledged and ends the server. A code a port does not know is answered
``u32 1`` and the connection is dropped, as the reference simulator does.

The layers follow the rest of ``server``: ``RequestReader`` turns a connection's
bytes into requests, ``Platform`` holds the simulated board's state (what each
signal does is the ``_SIGNAL_EFFECTS`` table), ``answer`` turns a request into the
reply bytes; only ``MssimServer`` touches sockets.

The platform starts powered with NV available: a server that is (re)started on a
state directory continues where its last answered command left the TPM, like the
swtpm socket server. A repeated POWER_ON on a powered platform changes nothing --
tpm2-tss sends POWER_ON and NV_ON at every TCTI initialisation (every tpm2-tools
run), and the reference simulator ignores a POWER_ON while powered
(``_rpc__Signal_PowerOn``). POWER_OFF performs the TPM's ``_TPM_Init`` at once, so
the state on disk already says "waiting for TPM2_Startup" when the power is off.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Protocol

from ..constants import RC
from ..frame import error_response
from ..mutations import may_change_state
from .framing import MAX_COMMAND_BYTES, enable_nodelay, quick_ack
from .swtpm_socket import Endpoint

_U32 = struct.Struct(">I")
_SEND_PREFIX = struct.Struct(">IBI")  # code, locality, command size
ACK = _U32.pack(0)
NAK = _U32.pack(1)


class Signal(IntEnum):
    """Interface command codes (TpmTcpProtocol.h). Codes we never answer are omitted:
    HASH_START/DATA/END (5-7, H-CRTM), REMOTE_HANDSHAKE (15), SET_ALTERNATIVE_RESULT
    (16), GET_COMMAND_RESPONSE_SIZES (25), ACT_GET_SIGNALED (26), TEST_FAILURE_MODE
    (30); they get the unknown-command answer."""

    POWER_ON = 1
    POWER_OFF = 2
    PHYS_PRES_ON = 3
    PHYS_PRES_OFF = 4
    SEND_COMMAND = 8
    CANCEL_ON = 9
    CANCEL_OFF = 10
    NV_ON = 11
    NV_OFF = 12
    KEY_CACHE_ON = 13
    KEY_CACHE_OFF = 14
    RESET = 17
    RESTART = 18
    SESSION_END = 20
    STOP = 21


class Port(Enum):
    TPM = "tpm"
    PLATFORM = "platform"


# Which codes each port takes (the reference server splits them the same way).
ACCEPTED: dict[Port, frozenset[Signal]] = {
    Port.TPM: frozenset({Signal.SEND_COMMAND, Signal.SESSION_END, Signal.STOP}),
    Port.PLATFORM: frozenset({
        Signal.POWER_ON, Signal.POWER_OFF, Signal.PHYS_PRES_ON, Signal.PHYS_PRES_OFF,
        Signal.CANCEL_ON, Signal.CANCEL_OFF, Signal.NV_ON, Signal.NV_OFF,
        Signal.KEY_CACHE_ON, Signal.KEY_CACHE_OFF, Signal.RESET, Signal.RESTART,
        Signal.SESSION_END, Signal.STOP,
    }),
}


# -- requests: what a connection's bytes say --------------------------------------------

@dataclass(frozen=True)
class SendCommand:
    locality: int
    command: bytes


@dataclass(frozen=True)
class PlatformSignal:
    signal: Signal


@dataclass(frozen=True)
class SessionEnd:
    pass


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Refused:
    """A code this port does not take, or a command too large to be one."""

    code: int
    reason: str


Request = SendCommand | PlatformSignal | SessionEnd | Stop | Refused


class RequestReader:
    """One connection's bytes in, requests out; nothing is read past the last one."""

    def __init__(self, port: Port) -> None:
        self.port = port
        self.finished = False
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Request]:
        self._buffer += data
        requests: list[Request] = []
        while not self.finished:
            request = self._next()
            if request is None:
                break
            requests.append(request)
            self.finished = isinstance(request, SessionEnd | Stop | Refused)
        return requests

    def _next(self) -> Request | None:
        if len(self._buffer) < _U32.size:
            return None
        (code,) = _U32.unpack_from(self._buffer)
        if code not in ACCEPTED[self.port]:
            return Refused(code, f"code {code} is not taken on the {self.port.value} port")
        if code == Signal.SEND_COMMAND:
            if len(self._buffer) < _SEND_PREFIX.size:
                return None
            _, locality, size = _SEND_PREFIX.unpack_from(self._buffer)
            if size > MAX_COMMAND_BYTES:
                return Refused(code, f"command of {size} bytes")
            end = _SEND_PREFIX.size + size
            if len(self._buffer) < end:
                return None
            command = bytes(self._buffer[_SEND_PREFIX.size:end])
            del self._buffer[:end]
            return SendCommand(locality, command)
        del self._buffer[:_U32.size]
        if code == Signal.SESSION_END:
            return SessionEnd()
        if code == Signal.STOP:
            return Stop()
        return PlatformSignal(Signal(code))


# -- the platform: power, NV and cancel lines around the TPM ------------------------------

class Backend(Protocol):
    """What the platform needs from the TPM behind it (``LocalBackend`` fits)."""

    def transmit(self, command: bytes, locality: int) -> bytes: ...
    def power_cycle(self, delete_volatile: bool) -> None: ...


class Platform:
    """The simulated board: one per server, shared by all connections."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.powered = True
        self.nv_available = True
        # Commands run to completion before the next request is read, so the cancel
        # line is recorded but there is never a command in flight to cancel.
        self.cancel = False
        self._lock = threading.Lock()

    def signal(self, signal: Signal) -> None:
        with self._lock:
            _SIGNAL_EFFECTS[signal](self)

    def send_command(self, locality: int, command: bytes) -> bytes:
        with self._lock:
            if not self.powered:
                return error_response(RC.FAILURE)
            if not self.nv_available and may_change_state(command):
                return error_response(RC.NV_UNAVAILABLE)
            return self.backend.transmit(command, locality)

    # Each effect runs with the platform lock held.
    def _power_on(self) -> None:
        self.powered = True  # _TPM_Init already ran at POWER_OFF; repeated: no change

    def _power_off(self) -> None:
        if self.powered:
            self.backend.power_cycle(False)
        self.powered = False
        self.cancel = False

    def _reset(self) -> None:
        """RESET and RESTART: _TPM_Init on a powered TPM (Part 1, 12.2.2)."""
        self.backend.power_cycle(False)
        self.powered = True
        self.cancel = False

    def _nv(self, available: bool) -> None:
        self.nv_available = available

    def _cancel(self, on: bool) -> None:
        self.cancel = on

    def _nothing(self) -> None:
        """Physical presence and the key cache are not modelled."""


_SIGNAL_EFFECTS: dict[Signal, Callable[[Platform], None]] = {
    Signal.POWER_ON: Platform._power_on,
    Signal.POWER_OFF: Platform._power_off,
    Signal.RESET: Platform._reset,
    Signal.RESTART: Platform._reset,
    Signal.NV_ON: lambda p: p._nv(True),
    Signal.NV_OFF: lambda p: p._nv(False),
    Signal.CANCEL_ON: lambda p: p._cancel(True),
    Signal.CANCEL_OFF: lambda p: p._cancel(False),
    Signal.PHYS_PRES_ON: Platform._nothing,
    Signal.PHYS_PRES_OFF: Platform._nothing,
    Signal.KEY_CACHE_ON: Platform._nothing,
    Signal.KEY_CACHE_OFF: Platform._nothing,
}


@dataclass(frozen=True)
class Reply:
    """Bytes to send, then whether to close this connection or stop the server."""

    data: bytes
    close: bool = False
    stop: bool = False


def answer(platform: Platform, request: Request) -> Reply:
    match request:
        case SendCommand(locality=locality, command=command):
            response = platform.send_command(locality, command)
            return Reply(_U32.pack(len(response)) + response + ACK)
        case PlatformSignal(signal=signal):
            platform.signal(signal)
            return Reply(ACK)
        case SessionEnd():
            return Reply(b"", close=True)
        case Stop():
            return Reply(ACK, close=True, stop=True)
        case Refused():
            return Reply(NAK, close=True)


# -- the IO loop ------------------------------------------------------------------------

class MssimServer:
    """Serves one platform on ``port`` (TPM) and ``port + 1`` (platform) until stopped."""

    def __init__(self, platform: Platform, host: str, port: int) -> None:
        self.platform = platform
        self.stopped = threading.Event()
        self._tpm = Endpoint(host=host, port=port).listen()
        try:
            self._platform = Endpoint(host=host, port=port + 1).listen()
        except OSError:
            self._tpm.close()
            raise

    def serve_forever(self) -> None:
        for listener, port in ((self._tpm, Port.TPM), (self._platform, Port.PLATFORM)):
            threading.Thread(target=self._accept, args=(listener, port), daemon=True).start()
        self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()
        for sock in (self._tpm, self._platform):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket, port: Port) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            enable_nodelay(conn)
            threading.Thread(target=self._guarded, args=(conn, port), daemon=True).start()

    def _guarded(self, conn: socket.socket, port: Port) -> None:
        with conn, contextlib.suppress(OSError):
            self._serve(conn, port)

    def _serve(self, conn: socket.socket, port: Port) -> None:
        reader = RequestReader(port)
        quick_ack(conn)
        while not self.stopped.is_set():
            data = conn.recv(65536)
            quick_ack(conn)
            if not data:
                return
            for request in reader.feed(data):
                reply = answer(self.platform, request)
                if reply.data:
                    conn.sendall(reply.data)
                if reply.stop:
                    self.stop()
                if reply.close:
                    return
