"""The libtpms engine: one ``swtpm socket --tpm2`` process per running vTPM.

swtpm is what QEMU and libvirt use, so this engine gives a vTPM libtpms' exact
behaviour. We drive it the way QEMU does (backends/tpm/tpm_emulator.c): a
persistent control connection speaking the protocol in
:mod:`tpm_emulator.swtpm_ctrl`, and a persistent data connection carrying raw
TPM commands.

Our encrypted store, not swtpm's state directory, is the source of truth. The
run directory is scratch: it is emptied on start, its state files are encrypted
with a random key that lives only in this object and in swtpm's memory (handed
over through a pipe, never a file), and the whole TPM state leaves swtpm only as
plain state blobs (``CMD_GET_STATEBLOB`` with ``DECRYPTED``) packed into our own
versioned container by :func:`pack_state`.

swtpm must never outlive us, not even when we are SIGKILLed a microsecond after
spawning it, so both connections exist *before* swtpm does and no socket path
is ever left for a client to arrive at:

* control: one end of a ``socketpair`` is swtpm's already connected control
  client (``--ctrl type=unixio,clientfd=N``);
* data: we bind a listening socket in the private run directory, connect to it
  (the connection waits in the backlog), unlink the path, and pass the
  listening socket (``--server type=unixio,fd=N``); swtpm's first ``accept``
  returns our connection, and nobody else can ever reach that socket.

With ``--terminate`` swtpm exits as soon as that data connection is gone, even
when it was closed before swtpm accepted it; the kernel closes our ends when
this process dies, however it dies. (swtpm 0.7.1 ignores a hang-up on the
control client, so the data connection is what ends it.) Hence no ``__del__``
either: a dropped engine whose ``stop`` was never called still cannot outlive
us. ``PR_SET_PDEATHSIG`` is deliberately not used: it follows the forking
*thread*, and DomS0 starts engines from short-lived threads.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

from tpm_emulator import swtpm_ctrl as ctrl
from vtpm_manager.engine import Engine, EngineError

#: Debian/Ubuntu package that provides the binary; named in every "not found" error.
SWTPM_PACKAGE: Final = "swtpm"

_TPM_HEADER_SIZE: Final = 10
#: swtpm's data buffer is at most 4096 bytes; anything far beyond is a broken stream.
_MAX_RESPONSE_SIZE: Final = 64 * 1024
#: TPM_RC_LOCALITY (Part 2, 6.6.3: RC_VER1 + 0x007), for a locality swtpm refuses.
_TPM_RC_LOCALITY: Final = 0x107
_TPM_ST_NO_SESSIONS: Final = 0x8001
_LOG_TAIL_BYTES: Final = 2000
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------
# State container
# --------------------------------------------------------------------------------------

#: Our container for swtpm state: magic, u32 version, then length-prefixed blobs.
STATE_MAGIC: Final = b"VTPM-SWTPM\x00"
STATE_VERSION: Final = 1


class StateFormatError(EngineError, ValueError):
    """A state blob is not one this engine wrote, or of a version it cannot read."""


@dataclass(frozen=True)
class SwtpmState:
    """swtpm's two state blobs, as ``CMD_GET_STATEBLOB`` returned them (plain).

    ``permanent`` (NV, seeds, hierarchies) is never empty; ``volatile`` (PCRs,
    loaded objects, whether TPM2_Startup ran) is empty only when swtpm had none.
    libtpms keeps a TPM 2 shutdown state inside the permanent blob, so swtpm's
    third blob type (savestate) is not carried.
    """

    permanent: bytes
    volatile: bytes = b""

    def __post_init__(self) -> None:
        if not self.permanent:
            raise StateFormatError("swtpm state has no permanent blob")
        for name, blob in (("permanent", self.permanent), ("volatile", self.volatile)):
            if len(blob) > ctrl.MAX_STATE_BLOB_SIZE:
                raise StateFormatError(
                    f"swtpm {name} blob is {len(blob)} bytes; swtpm accepts at most "
                    f"{ctrl.MAX_STATE_BLOB_SIZE}"
                )


def pack_state(state: SwtpmState) -> bytes:
    """Serialize ``state`` into the versioned container ``export_state`` returns."""
    parts = [STATE_MAGIC, struct.pack(">I", STATE_VERSION)]
    for blob in (state.permanent, state.volatile):
        parts += [struct.pack(">I", len(blob)), blob]
    return b"".join(parts)


def unpack_state(data: bytes) -> SwtpmState:
    """Parse a container from :func:`pack_state`; refuse anything else, loudly."""
    if not data.startswith(STATE_MAGIC):
        raise StateFormatError(
            "not a swtpm engine state (wrong magic); was it exported by another engine?"
        )
    offset = len(STATE_MAGIC)
    if len(data) < offset + 4:
        raise StateFormatError("swtpm engine state is truncated (no version)")
    (version,) = struct.unpack_from(">I", data, offset)
    if version != STATE_VERSION:
        raise StateFormatError(
            f"swtpm engine state version {version} is not supported; this build reads "
            f"version {STATE_VERSION} only (was it written by a newer release?)"
        )
    offset += 4
    blobs: list[bytes] = []
    for name in ("permanent", "volatile"):
        if len(data) < offset + 4:
            raise StateFormatError(f"swtpm engine state is truncated before the {name} blob")
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if len(data) < offset + length:
            raise StateFormatError(f"swtpm engine state is truncated inside the {name} blob")
        blobs.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise StateFormatError(f"swtpm engine state has {len(data) - offset} trailing bytes")
    return SwtpmState(permanent=blobs[0], volatile=blobs[1])


# --------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------


class SwtpmEngine(Engine):
    """One TPM 2.0 backed by a private ``swtpm socket --tpm2`` process.

    ``run_dir`` is this instance's scratch directory (created if missing, mode
    0700); nothing in it survives ``stop`` except ``swtpm.log``. ``timeout``
    bounds every socket read, so a hung swtpm costs a caller at most that long;
    ``startup_timeout`` bounds the wait for swtpm's first control answer.
    """

    name = "swtpm"

    def __init__(
        self,
        run_dir: Path,
        swtpm_binary: str = "swtpm",
        *,
        timeout: float = 30.0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.swtpm_binary = swtpm_binary
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._ctrl: socket.socket | None = None
        self._data: socket.socket | None = None
        self._locality = 0
        self._broken: str | None = None

    # Paths inside the run directory -----------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    @property
    def ctrl_path(self) -> Path:
        return self.run_dir / "ctrl"

    @property
    def data_path(self) -> Path:
        return self.run_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "swtpm.log"

    @property
    def pid(self) -> int | None:
        """swtpm's process id while it runs (for diagnostics and tests)."""
        return self._process.pid if self._process is not None else None

    # Engine interface ---------------------------------------------------------------

    def start(self, state: bytes | None) -> None:
        if self._process is not None:
            raise EngineError("swtpm engine is already started; stop it first")
        # Refuse a bad state before spending a process on it.
        restored = unpack_state(state) if state is not None else None
        binary = self._find_binary()
        self._prepare_run_dir()
        self._broken = None
        self._locality = 0
        try:
            self._spawn(binary)
            self._await_ready()
            if restored is None:
                self._init(0)
            else:
                self._restore(restored)
        except BaseException:
            self.stop()
            raise

    def execute(self, command: bytes, locality: int = 0) -> bytes:
        self._check_usable()
        if locality != self._locality and not self._set_locality(locality):
            return _error_response(_TPM_RC_LOCALITY)
        data = self._require(self._data)
        try:
            # swtpm processes whatever it has once 10 bytes arrived, so one write.
            data.sendall(command)
            header = self._recv_exact(data, _TPM_HEADER_SIZE)
            (size,) = struct.unpack_from(">I", header, 2)
            if not _TPM_HEADER_SIZE <= size <= _MAX_RESPONSE_SIZE:
                raise self._fail(f"swtpm sent a response header with size {size}")
            return header + self._recv_exact(data, size - _TPM_HEADER_SIZE)
        except OSError as exc:
            raise self._fail(f"data channel failed: {exc}") from exc

    def power_cycle(self, delete_volatile: bool = False) -> None:
        self._check_usable()
        self._init(ctrl.InitFlag.DELETE_VOLATILE if delete_volatile else 0)

    def export_state(self) -> bytes:
        self._check_usable()
        permanent = self._get_blob(ctrl.BlobType.PERMANENT)
        volatile = self._get_blob(ctrl.BlobType.VOLATILE)
        return pack_state(SwtpmState(permanent=permanent, volatile=volatile))

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None and self._ctrl is not None:
            # Orderly: swtpm sends its own TPM2_Shutdown, then exits.
            with contextlib.suppress(OSError, EngineError, ctrl.ControlProtocolError):
                self._call(ctrl.Shutdown(), timeout=min(self.timeout, 5.0))
        for sock in (self._data, self._ctrl):
            if sock is not None:
                sock.close()
        self._data = self._ctrl = None
        if process is not None:
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        for path in (self.ctrl_path, self.data_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        # The scratch state is encrypted with a key that just died with swtpm.
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> SwtpmEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Process and sockets --------------------------------------------------------------

    def _find_binary(self) -> str:
        found = shutil.which(self.swtpm_binary)
        if found is None:
            raise EngineError(
                f"swtpm binary {self.swtpm_binary!r} not found; install the Debian "
                f"package {SWTPM_PACKAGE} (apt-get install {SWTPM_PACKAGE}) or configure "
                "the path to swtpm"
            )
        return found

    def _prepare_run_dir(self) -> None:
        """Empty scratch: stale state would make a 'fresh' TPM not fresh."""
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(mode=0o700)
        for path in (self.ctrl_path, self.data_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _spawn(self, binary: str) -> None:
        """Start swtpm with both of our connections already made (see module doc)."""
        parent_fds: list[socket.socket] = []  # ours, kept on success
        child_fds: list[socket.socket] = []  # swtpm's, closed here once passed
        key_read = key_write = -1
        what = f"could not set up swtpm's sockets in {self.run_dir}"
        try:
            ctrl_ours, ctrl_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            parent_fds.append(ctrl_ours)
            child_fds.append(ctrl_theirs)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            child_fds.append(listener)
            data = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            parent_fds.append(data)
            try:
                # The run directory is 0700 and the path lives only until our own
                # connection is queued, so no other client can ever get in.
                listener.bind(str(self.data_path))
                listener.listen(1)
                data.connect(str(self.data_path))
            finally:
                with contextlib.suppress(FileNotFoundError):
                    self.data_path.unlink()

            what = f"could not run {binary}"
            key_read, key_write = os.pipe()
            # 32 bytes fit a pipe buffer, so the write never blocks; closing our end
            # lets swtpm read to EOF. The key never touches a file system.
            os.write(key_write, secrets.token_bytes(32))
            os.close(key_write)
            key_write = -1
            argv = [
                binary,
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={self.state_dir},mode=0600",
                "--ctrl",
                f"type=unixio,clientfd={ctrl_theirs.fileno()}",
                "--server",
                f"type=unixio,fd={listener.fileno()}",
                "--key",
                f"fd={key_read},format=binary,mode=aes-256-cbc",
                "--log",
                f"file={self.log_path}",
                # Exit when our data connection closes, e.g. when DomS0 itself dies.
                "--terminate",
            ]
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(ctrl_theirs.fileno(), listener.fileno(), key_read),
                    close_fds=True,
                )
        except BaseException as exc:
            for sock in parent_fds:
                sock.close()
            if isinstance(exc, OSError):
                raise EngineError(f"{what}: {exc}") from exc
            raise
        finally:
            for sock in child_fds:
                sock.close()
            for fd in (key_read, key_write):
                if fd >= 0:
                    os.close(fd)
        ctrl_ours.settimeout(self.timeout)
        data.settimeout(self.timeout)
        self._ctrl, self._data = ctrl_ours, data

    def _await_ready(self) -> None:
        """Wait (bounded) for swtpm's first control answer; explain a failed start."""
        process = self._require(self._process)
        try:
            self._call(ctrl.GetCapability(), timeout=self.startup_timeout)
        except EngineError as exc:
            # swtpm's end of the channel closes when it exits; let its status arrive.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=min(self.startup_timeout, 2.0))
            if process.returncode is not None:
                raise EngineError(
                    f"swtpm exited with status {process.returncode} during startup"
                    f"{self._log_tail()}"
                ) from exc
            raise EngineError(f"swtpm did not start: {exc}") from exc

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                tail = log.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        return f"; swtpm log ({self.log_path}) ends with:\n{tail}" if tail else ""

    # Control channel ------------------------------------------------------------------

    def _call(self, request: ctrl.Request, *, timeout: float | None = None) -> ctrl.Response:
        """One control request and its answer over the persistent connection.

        ``timeout`` overrides ``self.timeout`` for this exchange only.
        """
        sock = self._require(self._ctrl)
        command = request.command
        limit = self.timeout if timeout is None else timeout
        try:
            sock.settimeout(limit)
            sock.sendall(request.encode())
            buf = bytearray()
            while True:
                need = ctrl.response_size(command, bytes(buf))
                if need is not None and len(buf) >= need:
                    break
                want = 4096 if need is None else need - len(buf)
                chunk = sock.recv(want)
                if not chunk:
                    raise self._fail(f"swtpm closed the control channel during {command.name}")
                buf += chunk
            if buf[:4] != ctrl.error_response(ctrl.Result.SUCCESS):
                # swtpm writes each answer at once; a failure may carry a fixed part
                # that is already here. Take it so the next answer starts clean.
                # (A socket with a timeout would wait despite MSG_DONTWAIT.)
                sock.setblocking(False)
                try:
                    with contextlib.suppress(BlockingIOError):
                        buf += sock.recv(4096)
                finally:
                    sock.settimeout(limit)
            return ctrl.decode_response(command, bytes(buf))
        except TimeoutError as exc:
            what = f"swtpm did not answer {command.name} within {limit} s"
            raise self._fail(what) from exc
        except ctrl.RemoteProtocolError as exc:
            raise self._fail(f"swtpm broke the control protocol: {exc}") from exc
        except OSError as exc:
            raise self._fail(f"control channel failed during {command.name}: {exc}") from exc
        finally:
            if timeout is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(self.timeout)

    def _call_ok(self, request: ctrl.Request) -> ctrl.Response:
        response = self._call(request)
        if response.result != ctrl.Result.SUCCESS:
            raise EngineError(
                f"swtpm refused {request.command.name}: {_result_name(response.result)}"
                f"{self._log_tail()}"
            )
        return response

    def _init(self, flags: int) -> None:
        self._call_ok(ctrl.Init(flags))

    def _set_locality(self, locality: int) -> bool:
        """Switch the locality for later commands; False if swtpm refuses it."""
        if not 0 <= locality <= 0xFF:
            return False
        response = self._call(ctrl.SetLocality(locality))
        if response.result != ctrl.Result.SUCCESS:
            return False
        self._locality = locality
        return True

    def _restore(self, state: SwtpmState) -> None:
        """QEMU's post_load: stop, load the blobs, then _TPM_Init from them."""
        self._call_ok(ctrl.Stop())
        self._call_ok(ctrl.SetStateBlob(ctrl.BlobType.PERMANENT, state.permanent))
        if state.volatile:
            self._call_ok(ctrl.SetStateBlob(ctrl.BlobType.VOLATILE, state.volatile))
        # DELETE_VOLATILE: resume from the blob once, never again on a later INIT.
        self._init(ctrl.InitFlag.DELETE_VOLATILE)

    def _get_blob(self, blob_type: ctrl.BlobType) -> bytes:
        response = self._call(ctrl.GetStateBlob(blob_type, flags=ctrl.StateFlag.DECRYPTED))
        assert isinstance(response, ctrl.StateBlobResponse)
        if response.missing and blob_type is ctrl.BlobType.VOLATILE:
            return b""
        if response.result != ctrl.Result.SUCCESS:
            raise EngineError(
                f"swtpm refused to export its {blob_type.name.lower()} state: "
                f"{_result_name(response.result)}{self._log_tail()}"
            )
        if response.flags & ctrl.StateFlag.ENCRYPTED:
            # Only a migration key would do this, and we never give swtpm one.
            raise EngineError("swtpm exported an encrypted state blob; refusing to store it")
        if response.totlength != len(response.blob):
            raise EngineError("swtpm exported a partial state blob")
        return response.blob

    # Failure handling -------------------------------------------------------------

    def _recv_exact(self, sock: socket.socket, size: int) -> bytes:
        buf = bytearray()
        try:
            while len(buf) < size:
                chunk = sock.recv(size - len(buf))
                if not chunk:
                    raise self._fail("swtpm closed the data channel")
                buf += chunk
        except TimeoutError as exc:
            raise self._fail(f"swtpm did not answer within {self.timeout} s") from exc
        return bytes(buf)

    def _fail(self, what: str) -> EngineError:
        """Mark the engine unusable: after a broken exchange the streams are out of
        step, so every later call must fail rather than misread an old answer."""
        if not what.startswith("swtpm"):
            what = f"swtpm {what}"
        process = self._process
        if process is not None and process.poll() is not None:
            what += f" (swtpm exited with status {process.returncode})"
        self._broken = what
        return EngineError(what + self._log_tail())

    def _check_usable(self) -> None:
        if self._process is None:
            raise EngineError("swtpm engine is not started")
        if self._broken is not None:
            raise EngineError(f"swtpm engine failed earlier and must be restarted: {self._broken}")

    @staticmethod
    def _require(value: _T | None) -> _T:
        if value is None:
            raise EngineError("swtpm engine is not started")
        return value


def _result_name(result: int) -> str:
    try:
        return f"{ctrl.Result(result).name} (0x{result:x})"
    except ValueError:
        return f"result 0x{result:x}"


def _error_response(rc: int) -> bytes:
    """A bare TPM 2.0 error response, as a real TPM answers a refused command."""
    return struct.pack(">HII", _TPM_ST_NO_SESSIONS, _TPM_HEADER_SIZE, rc)
