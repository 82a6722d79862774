"""The swtpm control protocol, answered on behalf of one vTPM.

This is the decision table of a control channel, with no sockets: a parsed request
goes in, the response bytes come out, and the IO loop is told whether to expect a
data fd or to hang up. The TPM itself is reached through a ``Backend``: our own
in-process TPM for the standalone ``tpm-emulator``, a vTPM instance for DomS0's
control sockets (QEMU's ``-tpmdev emulator``), a gRPC Attach stream for
``vtpmctl attach``.

Semantics follow swtpm (see swtpm-protocols.md §1.2): CMD_STOP halts the TPM and
data commands then fail until CMD_INIT; state blobs may be set only while halted;
CMD_INIT after a state blob was set resumes that state instead of resetting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from .. import swtpm_ctrl as ctrl
from ..frame import error_response as _tpm_error

log = logging.getLogger(__name__)

TPM_RC_FAILURE = 0x101

# What every front end offers: the platform controls QEMU and the TSS use. State
# blobs and SET_DATAFD are added where they make sense (DomS0's own Unix socket).
PLATFORM_CAPS = (
    ctrl.Capability.INIT | ctrl.Capability.SHUTDOWN | ctrl.Capability.GET_TPMESTABLISHED
    | ctrl.Capability.SET_LOCALITY | ctrl.Capability.CANCEL_TPM_CMD
    | ctrl.Capability.STORE_VOLATILE | ctrl.Capability.RESET_TPMESTABLISHED
    | ctrl.Capability.STOP | ctrl.Capability.GET_CONFIG | ctrl.Capability.SET_BUFFERSIZE
)
BUFFER_SIZE = 4096
MIN_BUFFER_SIZE = 2808


class BackendError(Exception):
    """The vTPM cannot be reached or refused the operation; the message says why."""


class Backend(Protocol):
    """What a control channel needs from the vTPM behind it."""

    def transmit(self, command: bytes, locality: int) -> bytes: ...
    def power_cycle(self, delete_volatile: bool) -> None: ...
    def get_state_blob(self) -> bytes: ...
    def set_state_blob(self, blob: bytes) -> None: ...
    def resume(self) -> None:
        """CMD_INIT after SET_STATEBLOB: the TPM continues from the state it was given."""
    def lock_storage(self) -> None:
        """CMD_LOCK_STORAGE: the VM runs here again after handing out its state."""


@dataclass
class Outcome:
    """What the IO loop must do after sending ``response``."""

    response: bytes
    expect_fd: bool = False
    hang_up: bool = False


class ControlSession:
    """One control connection's view of the vTPM's platform state."""

    def __init__(self, backend: Backend, caps: ctrl.Capability, name: str,
                 halted: bool = False) -> None:
        self.backend = backend
        self.caps = caps
        self.name = name
        self.locality = 0
        # A halted TPM answers data commands with TPM_RC_FAILURE until CMD_INIT, as
        # swtpm does before its first CMD_INIT (without not-need-init) and after STOP.
        self.halted = halted
        self.resume_pending = False
        self.established = False
        self.buffer_size = BUFFER_SIZE

    # -- data channel ----------------------------------------------------------------

    def data_command(self, command: bytes) -> bytes:
        """Run a command from the data channel at the current locality."""
        if self.halted:
            return _tpm_error(TPM_RC_FAILURE)
        try:
            return self.backend.transmit(command, self.locality)
        except BackendError as exc:
            log.warning("vTPM %s: command refused: %s", self.name, exc)
            return _tpm_error(TPM_RC_FAILURE)

    # -- control channel -------------------------------------------------------------

    def handle(self, request: ctrl.ParsedRequest) -> Outcome:
        if isinstance(request, ctrl.RejectedRequest):
            return Outcome(ctrl.error_response(request.result))
        if isinstance(request, ctrl.UnknownCommand):
            return Outcome(ctrl.error_response(ctrl.Result.BAD_ORDINAL))
        if not self._advertised(request):
            return Outcome(ctrl.error_response(ctrl.Result.BAD_ORDINAL))
        try:
            return self._dispatch(request)
        except BackendError as exc:
            log.warning("vTPM %s: control %s refused: %s", self.name,
                        type(request).__name__, exc)
            return Outcome(ctrl.error_response(ctrl.Result.FAIL))

    def _advertised(self, request: ctrl.Request) -> bool:
        needed = _CAP_OF.get(type(request))
        return needed is None or bool(self.caps & needed)

    def _dispatch(self, request: ctrl.Request) -> Outcome:
        ok = ctrl.ResultResponse().encode()
        match request:
            case ctrl.GetCapability():
                return Outcome(ctrl.CapabilityResponse(caps=int(self.caps)).encode())
            case ctrl.Init(flags=flags):
                if self.resume_pending:
                    self.backend.resume()
                    self.resume_pending = False
                else:
                    delete = bool(flags & ctrl.InitFlag.DELETE_VOLATILE)
                    self.backend.power_cycle(delete)
                self.halted = False
                return Outcome(ok)
            case ctrl.Shutdown():
                self.halted = True
                return Outcome(ok, hang_up=True)
            case ctrl.GetTpmEstablished():
                return Outcome(ctrl.TpmEstablishedResponse(self.established).encode())
            case ctrl.SetLocality(locality=locality):
                if locality > 4:
                    return Outcome(ctrl.error_response(ctrl.Result.BAD_LOCALITY))
                self.locality = locality
                return Outcome(ok)
            case ctrl.ResetTpmEstablished():
                self.established = False
                return Outcome(ok)
            case ctrl.LockStorage():
                self.backend.lock_storage()
                return Outcome(ok)
            case ctrl.CancelTpmCmd() | ctrl.StoreVolatile():
                # Commands run to completion and state is committed after each one,
                # so there is nothing to cancel or store.
                return Outcome(ok)
            case ctrl.Stop():
                self.halted = True
                return Outcome(ok)
            case ctrl.GetConfig():
                return Outcome(ctrl.ConfigResponse(flags=ctrl.ConfigFlag.FILE_KEY).encode())
            case ctrl.SetDataFd():
                return Outcome(ok, expect_fd=True)
            case ctrl.SetBufferSize(buffer_size=size):
                return Outcome(self._buffer_size(size))
            case ctrl.GetStateBlob(blob_type=blob_type, offset=offset):
                return Outcome(self._get_blob(blob_type, offset))
            case ctrl.SetStateBlob(blob_type=blob_type, data=data):
                return Outcome(self._set_blob(blob_type, data))
        return Outcome(ctrl.error_response(ctrl.Result.BAD_ORDINAL))

    def _buffer_size(self, size: int) -> bytes:
        if size:
            if not self.halted:
                return ctrl.error_response(ctrl.Result.BAD_ORDINAL)
            self.buffer_size = max(MIN_BUFFER_SIZE, min(BUFFER_SIZE, size))
        return ctrl.BufferSizeResponse(
            buffer_size=self.buffer_size, min_size=MIN_BUFFER_SIZE, max_size=BUFFER_SIZE
        ).encode()

    def _get_blob(self, blob_type: int, offset: int) -> bytes:
        """The whole vTPM travels as the PERMANENT blob, sealed to this vTPM.

        VOLATILE is present but empty (its content is inside PERMANENT), so a
        migration that copies all three blob types round-trips; SAVESTATE is absent.
        """
        if blob_type == ctrl.BlobType.PERMANENT:
            blob = self.backend.get_state_blob()
            return ctrl.StateBlobResponse(
                blob=blob[offset:], flags=ctrl.StateFlag.ENCRYPTED, totlength=len(blob)
            ).encode()
        if blob_type == ctrl.BlobType.VOLATILE:
            return ctrl.StateBlobResponse(blob=b"").encode()
        return ctrl.error_response(ctrl.Result.RETRY)

    def _set_blob(self, blob_type: int, data: bytes) -> bytes:
        if not self.halted:
            return ctrl.error_response(ctrl.Result.BAD_ORDINAL)
        if blob_type == ctrl.BlobType.PERMANENT:
            self.backend.set_state_blob(data)
            self.resume_pending = True
            return ctrl.ResultResponse().encode()
        if blob_type in (ctrl.BlobType.VOLATILE, ctrl.BlobType.SAVESTATE) and not data:
            return ctrl.ResultResponse().encode()
        return ctrl.error_response(ctrl.Result.BAD_PARAMETER)


_CAP_OF: dict[type, ctrl.Capability] = {
    ctrl.Init: ctrl.Capability.INIT,
    ctrl.Shutdown: ctrl.Capability.SHUTDOWN,
    ctrl.GetTpmEstablished: ctrl.Capability.GET_TPMESTABLISHED,
    ctrl.SetLocality: ctrl.Capability.SET_LOCALITY,
    ctrl.HashStart: ctrl.Capability.HASHING,
    ctrl.HashData: ctrl.Capability.HASHING,
    ctrl.HashEnd: ctrl.Capability.HASHING,
    ctrl.CancelTpmCmd: ctrl.Capability.CANCEL_TPM_CMD,
    ctrl.StoreVolatile: ctrl.Capability.STORE_VOLATILE,
    ctrl.ResetTpmEstablished: ctrl.Capability.RESET_TPMESTABLISHED,
    ctrl.GetStateBlob: ctrl.Capability.GET_STATEBLOB,
    ctrl.SetStateBlob: ctrl.Capability.SET_STATEBLOB,
    ctrl.Stop: ctrl.Capability.STOP,
    ctrl.GetConfig: ctrl.Capability.GET_CONFIG,
    ctrl.SetDataFd: ctrl.Capability.SET_DATAFD,
    ctrl.SetBufferSize: ctrl.Capability.SET_BUFFERSIZE,
    ctrl.GetInfo: ctrl.Capability.GET_INFO,
    ctrl.LockStorage: ctrl.Capability.LOCK_STORAGE,
}
