"""Per-vTPM Unix control sockets that speak swtpm's control protocol.

This is what QEMU's ``-tpmdev emulator`` connects to: it hands over one end of a
socketpair with CMD_SET_DATAFD and then sends raw TPM commands on it. Each vTPM
gets ``RUN_DIR/<uuid>.ctrl`` (mode 0600) for as long as DomS0 runs. A connection
holds the vTPM (one front end at a time) from its first command that touches the
TPM until it closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from domS0.execution import run_command
from tpm_emulator import swtpm_ctrl as ctrl
from tpm_emulator.constants import RC
from tpm_emulator.frame import error_response
from tpm_emulator.server.control import PLATFORM_CAPS, BackendError, ControlSession
from tpm_emulator.server.framing import read_command
from tpm_emulator.server.swtpm_socket import Endpoint
from vtpm_manager.errors import ManagerError, PermissionDenied
from vtpm_manager.instance import Instance, Lease
from vtpm_manager.manager import VtpmManager
from vtpm_manager.migration.qemu_blob import is_qemu_blob
from vtpm_manager.store import open_blob, seal_blob

from ..migration.qemu import QemuMigration
from ..security.gate import Gate, command_code_of, owner_principal
from ..security.hooks import Action

log = logging.getLogger(__name__)

CAPS = (
    PLATFORM_CAPS | ctrl.Capability.GET_STATEBLOB | ctrl.Capability.SET_STATEBLOB
    | ctrl.Capability.LOCK_STORAGE
    | ctrl.Capability.SET_DATAFD | ctrl.Capability.LOCK_STORAGE
)
RECV_BYTES = 65536
STALL_SECONDS = 0.5


BootMeasurer = Callable[[Instance, Callable[[bytes], bytes]], None]
_STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")


class LocalBackend:
    """The instance itself, held lazily for one control connection.

    After a platform reset (CMD_INIT) the first successful TPM2_Startup(CLEAR) is the
    guest firmware starting a new boot: the domain's boot is measured again then,
    before the firmware gets the answer (see ``domS0.finalizer``).
    """

    def __init__(self, instance: Instance, holder: str, gate: Gate,
                 boot_measurer: BootMeasurer | None = None,
                 qemu: QemuMigration | None = None) -> None:
        self.instance = instance
        self.holder = holder
        self.gate = gate
        self.boot_measurer = boot_measurer
        self.qemu = qemu
        # The socket belongs to the vTPM's domain: its commands are the domain's.
        self.principal = owner_principal(instance, "control socket")
        self._lease: Lease | None = None
        self._reset = False

    def _held(self) -> Lease:
        if self._lease is None:
            try:
                self._lease = self.instance.attach(self.holder)
            except ManagerError as exc:
                raise BackendError(str(exc)) from exc
        return self._lease

    def transmit(self, command: bytes, locality: int) -> bytes:
        lease = self._held()
        try:
            self.gate.check(self.principal, Action.TRANSMIT, self.instance,
                            command_code=command_code_of(command), locality=locality)
        except PermissionDenied:
            return error_response(RC.DISABLED)
        try:
            response = run_command(self.instance, command, locality, lease, self.holder)
            if self._reset and command == _STARTUP_CLEAR and response[6:10] == bytes(4):
                self._reset = False
                self._measure_boot(lease)
            return response
        except ManagerError as exc:
            raise BackendError(str(exc)) from exc

    def _measure_boot(self, lease: Lease) -> None:
        if self.boot_measurer is None:
            return
        try:
            self.boot_measurer(self.instance,
                               lambda c: self.instance.execute(c, 0, lease))
        except Exception as exc:  # the guest still boots; its quote will not match
            log.error("vTPM %s: boot not measured: %s", self.instance.record.name, exc)

    def power_cycle(self, delete_volatile: bool) -> None:
        try:
            self.instance.power_cycle(self._held(), delete_volatile)
            self._reset = True
        except ManagerError as exc:
            raise BackendError(str(exc)) from exc

    def get_state_blob(self) -> bytes:
        """With a QEMU migration key, the vTPM leaves in QEMU's stream (see
        :mod:`domS0.migration.qemu`); without one, a blob only this vTPM reopens."""
        try:
            if self.qemu is not None:
                return self.qemu.export(self.instance, self._held())
            state = self.instance.export_state(self._held())
        except ManagerError as exc:
            raise BackendError(str(exc)) from exc
        return seal_blob(self.instance.record, state)

    def set_state_blob(self, blob: bytes) -> None:
        try:
            if self.qemu is not None and is_qemu_blob(blob):
                self._held()
                self.qemu.receive(self.instance, blob)
                return
            state = open_blob(self.instance.record, blob)
            self.instance.replace_state(self._held(), state)
        except (ValueError, ManagerError) as exc:
            raise BackendError(str(exc)) from exc

    def resume(self) -> None:
        """INIT after a migration blob arrived: claim the vTPM from its source first."""
        if self.qemu is None:
            return
        try:
            self.qemu.claim(self.instance)
        except ManagerError as exc:
            raise BackendError(str(exc)) from exc

    def lock_storage(self) -> None:
        if self.qemu is not None:
            self.qemu.resume_here(self.instance)

    def release(self) -> None:
        if self._lease is not None:
            self.instance.detach(self._lease)
            self._lease = None


def _peer_name(conn: socket.socket) -> str:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return f"control socket client pid {pid} uid {uid}"
    except OSError:
        return "control socket client"


class _Connection:
    """One control connection and, once handed over, its data fd."""

    def __init__(self, conn: socket.socket, instance: Instance, gate: Gate,
                 boot_measurer: BootMeasurer | None = None,
                 qemu: QemuMigration | None = None) -> None:
        self.conn = conn
        self.backend = LocalBackend(instance, _peer_name(conn), gate, boot_measurer, qemu)
        self.session = ControlSession(self.backend, CAPS, instance.record.name)
        self.data: socket.socket | None = None
        self.closed = threading.Event()

    def serve(self) -> None:
        parser = ctrl.RequestParser()
        try:
            while not self.closed.is_set():
                self.conn.settimeout(STALL_SECONDS if parser.pending else None)
                try:
                    data, fds, _flags, _addr = socket.recv_fds(self.conn, RECV_BYTES, 1)
                except TimeoutError:
                    expired = parser.expire()
                    if expired is not None:
                        self.conn.sendall(ctrl.error_response(expired.result))
                    continue
                if not data:
                    for fd in fds:
                        os.close(fd)
                    return
                for request in parser.feed(data):
                    if not self._answer(request, fds):
                        return
                    fds = []
                for fd in fds:  # an fd that came with anything but SET_DATAFD
                    os.close(fd)
        except OSError:
            return
        finally:
            self.close()

    def _answer(self, request: ctrl.ParsedRequest, fds: list[int]) -> bool:
        outcome = self.session.handle(request)
        response = outcome.response
        if outcome.expect_fd:
            if self.data is not None:
                response = ctrl.error_response(ctrl.Result.IOERROR)
            elif not fds:
                response = ctrl.error_response(ctrl.Result.BAD_PARAMETER)
            else:
                self.data = socket.socket(fileno=fds.pop(0))
                threading.Thread(target=self._serve_data, daemon=True,
                                 name=f"data-{self.session.name}").start()
        self.conn.sendall(response)
        return not outcome.hang_up

    def _serve_data(self) -> None:
        data = self.data
        assert data is not None
        try:
            while not self.closed.is_set():
                command = read_command(data)
                if command is None:
                    return
                data.sendall(self.session.data_command(command))
        except OSError:
            return

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.conn, self.data):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self.backend.release()


class ControlSockets:
    """The control sockets of all of one manager's vTPMs.

    One thread accepts on every listening socket (a host may run hundreds of vTPMs
    that nobody is connected to); each accepted connection gets its own thread.
    """

    def __init__(self, manager: VtpmManager, run_root: Path, gate: Gate) -> None:
        self._manager = manager
        self._run_root = run_root
        self.gate = gate
        self._listeners: dict[str, socket.socket] = {}
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._changes: queue.SimpleQueue[tuple[bool, socket.socket, Instance | None]] = \
            queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._acceptor: threading.Thread | None = None
        self.boot_measurer: BootMeasurer | None = None  # set once the finalizer exists
        self.qemu: QemuMigration | None = None  # set when a QEMU migration key is set
        manager.add_listener(self._on_event)

    def path_of(self, instance: Instance) -> str:
        return str(self._run_root / f"{instance.record.uuid}.ctrl")

    def open_all(self) -> None:
        for instance in self._manager.list():
            self.open(instance)
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name="ctrl-accept")
        self._acceptor.start()

    def open(self, instance: Instance) -> None:
        listener = Endpoint(path=self.path_of(instance)).listen()
        listener.setblocking(False)
        with self._lock:
            self._listeners[instance.record.uuid] = listener
        self._change(True, listener, instance)

    def close(self, instance: Instance) -> None:
        with self._lock:
            listener = self._listeners.pop(instance.record.uuid, None)
            doomed = [c for c in self._connections if c.backend.instance is instance]
        if listener is not None:
            self._change(False, listener, None)
        for connection in doomed:
            connection.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_of(instance))

    def close_all(self) -> None:
        for instance in self._manager.list():
            self.close(instance)
        if self._acceptor is not None:
            self._change(False, self._wake_r, None)  # the acceptor's cue to finish
            self._acceptor.join(5)

    def _on_event(self, event: str, instance: Instance) -> None:
        if event == "created":
            self.open(instance)
        elif event == "deleted":
            self.close(instance)

    def _change(self, add: bool, sock: socket.socket, instance: Instance | None) -> None:
        """Hand a (de)registration to the acceptor thread, which owns the selector."""
        self._changes.put((add, sock, instance))
        self._wake_w.send(b"\0")

    def _apply_changes(self) -> bool:
        """Apply queued changes; False once the acceptor itself is told to stop."""
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        while not self._changes.empty():
            add, sock, instance = self._changes.get()
            if sock is self._wake_r:
                return False
            if add:
                self._selector.register(sock, selectors.EVENT_READ, instance)
            else:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()
        return True

    def _accept_loop(self) -> None:
        self._wake_r.setblocking(False)
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    if not self._apply_changes():
                        return
                    continue
                with contextlib.suppress(BlockingIOError, OSError):
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    conn.setblocking(True)
                    self._start(_Connection(conn, key.data, self.gate, self.boot_measurer,
                                            self.qemu))

    def _start(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.add(connection)
        threading.Thread(target=self._serve, args=(connection,), daemon=True,
                         name=f"ctrl-conn-{connection.session.name}").start()

    def _serve(self, connection: _Connection) -> None:
        try:
            connection.serve()
        finally:
            with self._lock:
                self._connections.discard(connection)
