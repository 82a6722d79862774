"""swtpm's control-channel protocol (socket variant) as a sans-IO codec.

swtpm answers a second channel beside the TPM command channel: power (CMD_INIT,
CMD_STOP, CMD_SHUTDOWN), locality, the DRTM hash sequence, and the state blobs
QEMU and libvirt use to migrate a vTPM. This module turns those messages into
values and values into bytes, for both sides:

* a **client** (our swtpm engine) builds a request value, sends ``encode()``,
  and turns the answer into a response value with :func:`decode_response`;
* a **server** (the DomS0 front end, the emulator's own swtpm-compatible server)
  feeds received bytes into a :class:`RequestParser`, gets request values, and
  sends a response value's ``encode()``.

Wire rules (``man/man3/swtpm_ioctls.pod`` and ``include/swtpm/tpm_ioctl.h``):
everything is big-endian; a request is ``u32 command`` followed by the request
half of the command's ``ptm_*`` union; a response is only the response half,
whose first field is always a TPM 1.2 style result code (:class:`Result`).

Nothing here touches a socket or a clock. Two behaviours of swtpm that depend
on IO are exposed as explicit calls instead: the 500 ms deadline for the fixed
part of a request (:meth:`RequestParser.expire`) and the passing of a file
descriptor with CMD_SET_DATAFD (``SCM_RIGHTS`` is the IO layer's business; this
codec only sees the four command bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import ClassVar, Final, TypeAlias

# --------------------------------------------------------------------------------------
# Numbers (tpm_ioctl.h; result codes from libtpms' tpm_error.h)
# --------------------------------------------------------------------------------------


class Command(IntEnum):
    """Control-channel command codes (the ``CMD_*`` enum of ``tpm_ioctl.h``)."""

    GET_CAPABILITY = 0x01
    INIT = 0x02
    SHUTDOWN = 0x03
    GET_TPMESTABLISHED = 0x04
    SET_LOCALITY = 0x05
    HASH_START = 0x06
    HASH_DATA = 0x07
    HASH_END = 0x08
    CANCEL_TPM_CMD = 0x09
    STORE_VOLATILE = 0x0A
    RESET_TPMESTABLISHED = 0x0B
    GET_STATEBLOB = 0x0C
    SET_STATEBLOB = 0x0D
    STOP = 0x0E
    GET_CONFIG = 0x0F
    SET_DATAFD = 0x10
    SET_BUFFERSIZE = 0x11
    GET_INFO = 0x12
    LOCK_STORAGE = 0x13  # swtpm >= 0.8


CMD_GET_CAPABILITY: Final = Command.GET_CAPABILITY
CMD_INIT: Final = Command.INIT
CMD_SHUTDOWN: Final = Command.SHUTDOWN
CMD_GET_TPMESTABLISHED: Final = Command.GET_TPMESTABLISHED
CMD_SET_LOCALITY: Final = Command.SET_LOCALITY
CMD_HASH_START: Final = Command.HASH_START
CMD_HASH_DATA: Final = Command.HASH_DATA
CMD_HASH_END: Final = Command.HASH_END
CMD_CANCEL_TPM_CMD: Final = Command.CANCEL_TPM_CMD
CMD_STORE_VOLATILE: Final = Command.STORE_VOLATILE
CMD_RESET_TPMESTABLISHED: Final = Command.RESET_TPMESTABLISHED
CMD_GET_STATEBLOB: Final = Command.GET_STATEBLOB
CMD_SET_STATEBLOB: Final = Command.SET_STATEBLOB
CMD_STOP: Final = Command.STOP
CMD_GET_CONFIG: Final = Command.GET_CONFIG
CMD_SET_DATAFD: Final = Command.SET_DATAFD
CMD_SET_BUFFERSIZE: Final = Command.SET_BUFFERSIZE
CMD_GET_INFO: Final = Command.GET_INFO
CMD_LOCK_STORAGE: Final = Command.LOCK_STORAGE


class Result(IntEnum):
    """TPM 1.2 style result codes that swtpm puts first in every response."""

    SUCCESS = 0x00
    BAD_PARAMETER = 0x03  # malformed or short input
    FAIL = 0x09
    BAD_ORDINAL = 0x0A  # unknown command, or TPM not running / not stopped
    SIZE = 0x17
    IOERROR = 0x1F
    BAD_LOCALITY = 0x3D
    RETRY = 0x800  # non-fatal, e.g. no savestate blob exists


TPM_SUCCESS: Final = Result.SUCCESS
TPM_BAD_PARAMETER: Final = Result.BAD_PARAMETER
TPM_FAIL: Final = Result.FAIL
TPM_BAD_ORDINAL: Final = Result.BAD_ORDINAL
TPM_SIZE: Final = Result.SIZE
TPM_IOERROR: Final = Result.IOERROR
TPM_BAD_LOCALITY: Final = Result.BAD_LOCALITY
TPM_RETRY: Final = Result.RETRY


class Capability(IntFlag):
    """``PTM_CAP_*`` bits answered by CMD_GET_CAPABILITY."""

    INIT = 1 << 0
    SHUTDOWN = 1 << 1
    GET_TPMESTABLISHED = 1 << 2
    SET_LOCALITY = 1 << 3
    HASHING = 1 << 4
    CANCEL_TPM_CMD = 1 << 5
    STORE_VOLATILE = 1 << 6
    RESET_TPMESTABLISHED = 1 << 7
    GET_STATEBLOB = 1 << 8
    SET_STATEBLOB = 1 << 9
    STOP = 1 << 10
    GET_CONFIG = 1 << 11
    SET_DATAFD = 1 << 12
    SET_BUFFERSIZE = 1 << 13
    GET_INFO = 1 << 14
    SEND_COMMAND_HEADER = 1 << 15  # TPM 2 only
    LOCK_STORAGE = 1 << 16  # swtpm >= 0.8


PTM_CAP_INIT: Final = Capability.INIT
PTM_CAP_SHUTDOWN: Final = Capability.SHUTDOWN
PTM_CAP_GET_TPMESTABLISHED: Final = Capability.GET_TPMESTABLISHED
PTM_CAP_SET_LOCALITY: Final = Capability.SET_LOCALITY
PTM_CAP_HASHING: Final = Capability.HASHING
PTM_CAP_CANCEL_TPM_CMD: Final = Capability.CANCEL_TPM_CMD
PTM_CAP_STORE_VOLATILE: Final = Capability.STORE_VOLATILE
PTM_CAP_RESET_TPMESTABLISHED: Final = Capability.RESET_TPMESTABLISHED
PTM_CAP_GET_STATEBLOB: Final = Capability.GET_STATEBLOB
PTM_CAP_SET_STATEBLOB: Final = Capability.SET_STATEBLOB
PTM_CAP_STOP: Final = Capability.STOP
PTM_CAP_GET_CONFIG: Final = Capability.GET_CONFIG
PTM_CAP_SET_DATAFD: Final = Capability.SET_DATAFD
PTM_CAP_SET_BUFFERSIZE: Final = Capability.SET_BUFFERSIZE
PTM_CAP_GET_INFO: Final = Capability.GET_INFO
PTM_CAP_SEND_COMMAND_HEADER: Final = Capability.SEND_COMMAND_HEADER
PTM_CAP_LOCK_STORAGE: Final = Capability.LOCK_STORAGE

#: What QEMU insists on before it uses a TPM 2 emulator (backends/tpm/tpm_emulator.c).
QEMU_REQUIRED_TPM2_CAPS: Final = (
    Capability.INIT
    | Capability.SHUTDOWN
    | Capability.GET_TPMESTABLISHED
    | Capability.SET_LOCALITY
    | Capability.RESET_TPMESTABLISHED
    | Capability.SET_DATAFD
    | Capability.STOP
    | Capability.SET_BUFFERSIZE
)


class InitFlag(IntFlag):
    """CMD_INIT ``init_flags``."""

    DELETE_VOLATILE = 1 << 0  # forget saved volatile state after reading it


PTM_INIT_FLAG_DELETE_VOLATILE: Final = InitFlag.DELETE_VOLATILE


class BlobType(IntEnum):
    """Which state blob CMD_GET_STATEBLOB / CMD_SET_STATEBLOB move."""

    PERMANENT = 1
    VOLATILE = 2
    SAVESTATE = 3


PTM_BLOB_TYPE_PERMANENT: Final = BlobType.PERMANENT
PTM_BLOB_TYPE_VOLATILE: Final = BlobType.VOLATILE
PTM_BLOB_TYPE_SAVESTATE: Final = BlobType.SAVESTATE


class StateFlag(IntFlag):
    """``state_flags`` of the state-blob commands."""

    DECRYPTED = 1  # GET request: return the blob without the file-key encryption
    ENCRYPTED = 2  # GET response / SET request: blob is migration-key encrypted


PTM_STATE_FLAG_DECRYPTED: Final = StateFlag.DECRYPTED
PTM_STATE_FLAG_ENCRYPTED: Final = StateFlag.ENCRYPTED


class ConfigFlag(IntFlag):
    """CMD_GET_CONFIG flags: which keys the TPM was started with."""

    FILE_KEY = 0x1
    MIGRATION_KEY = 0x2


PTM_CONFIG_FLAG_FILE_KEY: Final = ConfigFlag.FILE_KEY
PTM_CONFIG_FLAG_MIGRATION_KEY: Final = ConfigFlag.MIGRATION_KEY


class InfoFlag(IntFlag):
    """CMD_GET_INFO flags (libtpms ``TPMLIB_GetInfo``)."""

    TPM_SPECIFICATION = 0x01
    TPM_ATTRIBUTES = 0x02
    TPM_FEATURES = 0x04
    RUNTIME_ALGORITHMS = 0x08
    RUNTIME_COMMANDS = 0x10
    ACTIVE_PROFILE = 0x20
    AVAILABLE_PROFILES = 0x40
    RUNTIME_ATTRIBUTES = 0x80


#: swtpm refuses larger state blobs; we refuse them before buffering them.
MAX_STATE_BLOB_SIZE: Final = 512 * 1024
#: swtpm has no limit for hash data on sockets; a server must bound its memory.
MAX_HASH_DATA_SIZE: Final = 512 * 1024

_COMMAND_CODES: Final = frozenset(int(c) for c in Command)
_U8_MAX: Final = 0xFF
_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class ControlProtocolError(ValueError):
    """Base of the two ways the control protocol can be broken."""


class LocalProtocolError(ControlProtocolError):
    """Our caller asked for something the protocol cannot express (a bug here)."""


class RemoteProtocolError(ControlProtocolError):
    """The peer sent bytes that do not follow the protocol."""


def _check_uint(name: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalProtocolError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise LocalProtocolError(f"{name}={value} does not fit the field (0..{maximum})")


def _check_bytes(name: str, value: bytes, maximum: int = _U32_MAX) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) > maximum:
        raise LocalProtocolError(f"{name} is {len(value)} bytes; at most {maximum} fit")


def _u32(data: bytes, offset: int = 0) -> int:
    value: int = struct.unpack_from(">I", data, offset)[0]
    return value


# --------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """Common shape: a command code and a payload."""

    command: ClassVar[Command]

    def payload(self) -> bytes:
        return b""

    def encode(self) -> bytes:
        """The request as sent on the wire: ``u32 command`` + payload."""
        return struct.pack(">I", self.command) + self.payload()


@dataclass(frozen=True)
class GetCapability(_Request):
    command: ClassVar[Command] = Command.GET_CAPABILITY


@dataclass(frozen=True)
class Init(_Request):
    """_TPM_Init: (re)start the TPM; it then awaits TPM2_Startup."""

    command: ClassVar[Command] = Command.INIT
    flags: int = 0

    def __post_init__(self) -> None:
        _check_uint("init flags", self.flags, _U32_MAX)

    def payload(self) -> bytes:
        return struct.pack(">I", self.flags)


@dataclass(frozen=True)
class Shutdown(_Request):
    """Stop the TPM and make the swtpm process exit."""

    command: ClassVar[Command] = Command.SHUTDOWN


@dataclass(frozen=True)
class GetTpmEstablished(_Request):
    command: ClassVar[Command] = Command.GET_TPMESTABLISHED


@dataclass(frozen=True)
class SetLocality(_Request):
    """Locality for later data-channel commands.

    The field is a byte; values above 4 are representable because a server must
    be able to parse them in order to answer TPM_BAD_LOCALITY.
    """

    command: ClassVar[Command] = Command.SET_LOCALITY
    locality: int = 0

    def __post_init__(self) -> None:
        _check_uint("locality", self.locality, _U8_MAX)

    def payload(self) -> bytes:
        return bytes([self.locality])


@dataclass(frozen=True)
class HashStart(_Request):
    command: ClassVar[Command] = Command.HASH_START


@dataclass(frozen=True)
class HashData(_Request):
    """A piece of the locality-4 DRTM hash sequence: ``u32 length`` + data."""

    command: ClassVar[Command] = Command.HASH_DATA
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_bytes("hash data", self.data)

    def payload(self) -> bytes:
        return struct.pack(">I", len(self.data)) + self.data


@dataclass(frozen=True)
class HashEnd(_Request):
    command: ClassVar[Command] = Command.HASH_END


@dataclass(frozen=True)
class CancelTpmCmd(_Request):
    command: ClassVar[Command] = Command.CANCEL_TPM_CMD


@dataclass(frozen=True)
class StoreVolatile(_Request):
    command: ClassVar[Command] = Command.STORE_VOLATILE


@dataclass(frozen=True)
class ResetTpmEstablished(_Request):
    command: ClassVar[Command] = Command.RESET_TPMESTABLISHED
    locality: int = 0

    def __post_init__(self) -> None:
        _check_uint("locality", self.locality, _U8_MAX)

    def payload(self) -> bytes:
        return bytes([self.locality])


@dataclass(frozen=True)
class GetStateBlob(_Request):
    """Fetch one state blob. On sockets the whole blob comes back in one answer.

    ``blob_type`` is an ``int`` rather than :class:`BlobType` so that a server can
    parse an unknown type and refuse it with TPM_BAD_PARAMETER.
    """

    command: ClassVar[Command] = Command.GET_STATEBLOB
    blob_type: int = BlobType.PERMANENT
    flags: int = StateFlag.DECRYPTED
    offset: int = 0

    def __post_init__(self) -> None:
        _check_uint("blob type", self.blob_type, _U32_MAX)
        _check_uint("state flags", self.flags, _U32_MAX)
        _check_uint("offset", self.offset, _U32_MAX)

    def payload(self) -> bytes:
        return struct.pack(">III", self.flags, self.blob_type, self.offset)


@dataclass(frozen=True)
class SetStateBlob(_Request):
    """Load one state blob into a stopped TPM: 12-byte header, then the blob."""

    command: ClassVar[Command] = Command.SET_STATEBLOB
    blob_type: int = BlobType.PERMANENT
    data: bytes = b""
    flags: int = 0

    def __post_init__(self) -> None:
        _check_uint("blob type", self.blob_type, _U32_MAX)
        _check_uint("state flags", self.flags, _U32_MAX)
        _check_bytes("state blob", self.data, MAX_STATE_BLOB_SIZE)

    def payload(self) -> bytes:
        return struct.pack(">III", self.flags, self.blob_type, len(self.data)) + self.data


@dataclass(frozen=True)
class Stop(_Request):
    """Terminate the TPM but keep the process (needed before SET_STATEBLOB)."""

    command: ClassVar[Command] = Command.STOP


@dataclass(frozen=True)
class GetConfig(_Request):
    command: ClassVar[Command] = Command.GET_CONFIG


@dataclass(frozen=True)
class SetDataFd(_Request):
    """Hand swtpm the data channel; the fd itself travels as ``SCM_RIGHTS``."""

    command: ClassVar[Command] = Command.SET_DATAFD


@dataclass(frozen=True)
class SetBufferSize(_Request):
    """Set (TPM stopped) or, with 0, query the data-channel buffer size."""

    command: ClassVar[Command] = Command.SET_BUFFERSIZE
    buffer_size: int = 0

    def __post_init__(self) -> None:
        _check_uint("buffer size", self.buffer_size, _U32_MAX)

    def payload(self) -> bytes:
        return struct.pack(">I", self.buffer_size)


@dataclass(frozen=True)
class GetInfo(_Request):
    """``TPMLIB_GetInfo`` JSON, paged by ``offset``: ``u64 flags, u32 offset, u32 pad``."""

    command: ClassVar[Command] = Command.GET_INFO
    flags: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        _check_uint("info flags", self.flags, _U64_MAX)
        _check_uint("offset", self.offset, _U32_MAX)

    def payload(self) -> bytes:
        return struct.pack(">QII", self.flags, self.offset, 0)


@dataclass(frozen=True)
class LockStorage(_Request):
    """Re-take the state-directory lock, trying ``retries`` times 10 ms apart."""

    command: ClassVar[Command] = Command.LOCK_STORAGE
    retries: int = 0

    def __post_init__(self) -> None:
        _check_uint("retries", self.retries, _U32_MAX)

    def payload(self) -> bytes:
        return struct.pack(">I", self.retries)


@dataclass(frozen=True)
class UnknownCommand:
    """A command code this protocol does not define; answer TPM_BAD_ORDINAL."""

    code: int

    def __post_init__(self) -> None:
        _check_uint("command code", self.code, _U32_MAX)
        if self.code in _COMMAND_CODES:
            raise LocalProtocolError(f"command 0x{self.code:02x} is known")

    def encode(self) -> bytes:
        return struct.pack(">I", self.code)

    @property
    def result(self) -> Result:
        return Result.BAD_ORDINAL


@dataclass(frozen=True)
class RejectedRequest:
    """A request the parser refused before it was whole; answer with ``result``.

    ``command`` is ``None`` when not even the four command bytes arrived.
    ``discarded`` counts the body bytes the parser drops so that the stream stays
    in step (an oversize SET_STATEBLOB still sends its body).
    """

    command: int | None
    result: Result
    reason: str
    discarded: int = 0


Request: TypeAlias = (
    GetCapability
    | Init
    | Shutdown
    | GetTpmEstablished
    | SetLocality
    | HashStart
    | HashData
    | HashEnd
    | CancelTpmCmd
    | StoreVolatile
    | ResetTpmEstablished
    | GetStateBlob
    | SetStateBlob
    | Stop
    | GetConfig
    | SetDataFd
    | SetBufferSize
    | GetInfo
    | LockStorage
)
ParsedRequest: TypeAlias = Request | UnknownCommand | RejectedRequest


def encode_request(request: Request) -> bytes:
    """The bytes a client writes (in one write) for ``request``."""
    return request.encode()


# The request table: for each command, the size of its fixed payload and how to
# build the value from that payload. HASH_DATA and SET_STATEBLOB have a variable
# tail whose length is the last u32 of the fixed part.
_FIXED_REQUEST: Final[dict[Command, tuple[int, Callable[[bytes], Request]]]] = {
    Command.GET_CAPABILITY: (0, lambda p: GetCapability()),
    Command.INIT: (4, lambda p: Init(_u32(p))),
    Command.SHUTDOWN: (0, lambda p: Shutdown()),
    Command.GET_TPMESTABLISHED: (0, lambda p: GetTpmEstablished()),
    Command.SET_LOCALITY: (1, lambda p: SetLocality(p[0])),
    Command.HASH_START: (0, lambda p: HashStart()),
    Command.HASH_END: (0, lambda p: HashEnd()),
    Command.CANCEL_TPM_CMD: (0, lambda p: CancelTpmCmd()),
    Command.STORE_VOLATILE: (0, lambda p: StoreVolatile()),
    Command.RESET_TPMESTABLISHED: (1, lambda p: ResetTpmEstablished(p[0])),
    Command.GET_STATEBLOB: (
        12,
        lambda p: GetStateBlob(blob_type=_u32(p, 4), flags=_u32(p, 0), offset=_u32(p, 8)),
    ),
    Command.STOP: (0, lambda p: Stop()),
    Command.GET_CONFIG: (0, lambda p: GetConfig()),
    Command.SET_DATAFD: (0, lambda p: SetDataFd()),
    Command.SET_BUFFERSIZE: (4, lambda p: SetBufferSize(_u32(p))),
    Command.GET_INFO: (16, lambda p: GetInfo(*struct.unpack_from(">QI", p))),
    Command.LOCK_STORAGE: (4, lambda p: LockStorage(_u32(p))),
}
_VARIABLE_HEADER: Final[dict[Command, int]] = {Command.HASH_DATA: 4, Command.SET_STATEBLOB: 12}


def parse_request(
    buf: bytes,
    *,
    max_state_blob: int = MAX_STATE_BLOB_SIZE,
    max_hash_data: int = MAX_HASH_DATA_SIZE,
) -> tuple[ParsedRequest | None, int]:
    """Parse one request from the start of ``buf``.

    Returns ``(request, consumed)``, or ``(None, 0)`` while more bytes are needed.
    An oversize variable part yields a :class:`RejectedRequest` after the header
    only; its ``discarded`` field says how many following bytes belong to it and
    must be skipped (:class:`RequestParser` does that). An unknown command
    consumes only its four bytes: its payload size is unknowable.
    """
    if len(buf) < 4:
        return None, 0
    code = _u32(buf)
    try:
        command = Command(code)
    except ValueError:
        return UnknownCommand(code), 4
    body = buf[4:]
    header_size = _VARIABLE_HEADER.get(command)
    if header_size is None:
        size, build = _FIXED_REQUEST[command]
        if len(body) < size:
            return None, 0
        return build(body[:size]), 4 + size
    if len(body) < header_size:
        return None, 0
    length = _u32(body, header_size - 4)
    limit = max_state_blob if command is Command.SET_STATEBLOB else max_hash_data
    if length > limit:
        rejected = RejectedRequest(
            command=command,
            result=Result.BAD_PARAMETER,
            reason=f"{command.name} announces {length} bytes; the limit is {limit}",
            discarded=length,
        )
        return rejected, 4 + header_size
    end = 4 + header_size + length
    if len(buf) < end:
        return None, 0
    data = bytes(buf[4 + header_size : end])
    if command is Command.HASH_DATA:
        return HashData(data), end
    flags, blob_type = struct.unpack_from(">II", body)
    return SetStateBlob(blob_type=blob_type, data=data, flags=flags), end


class RequestParser:
    """Incremental server-side request parser: bytes in, requests out.

    swtpm reads a control request with one ``read`` (plus streaming for the
    variable part) and ignores whatever else that read returned. QEMU relies on
    that: it sends ``sizeof(ptm_loc)`` = 4 payload bytes for SET_LOCALITY and
    RESET_TPMESTABLISHED, of which only the first is the locality. So by default
    bytes that arrive in the same ``feed`` after a complete request are dropped as
    padding; the protocol is strictly one request, one answer, so no honest
    client pipelines. ``keep_trailing=True`` parses them as further requests.
    """

    def __init__(
        self,
        *,
        keep_trailing: bool = False,
        max_state_blob: int = MAX_STATE_BLOB_SIZE,
        max_hash_data: int = MAX_HASH_DATA_SIZE,
    ) -> None:
        self._buf = bytearray()
        self._skip = 0
        self._keep_trailing = keep_trailing
        self._max_state_blob = max_state_blob
        self._max_hash_data = max_hash_data

    @property
    def pending(self) -> int:
        """Bytes of an incomplete request held (the IO layer's deadline clock runs)."""
        return len(self._buf)

    @property
    def discarding(self) -> int:
        """Body bytes of a rejected request still to be skipped."""
        return self._skip

    def feed(self, data: bytes) -> list[ParsedRequest]:
        """Add received bytes; return the requests they complete, in order."""
        view = memoryview(data)
        if self._skip:
            dropped = min(self._skip, len(view))
            self._skip -= dropped
            view = view[dropped:]
        self._buf += view
        out: list[ParsedRequest] = []
        while self._buf:
            request, consumed = parse_request(
                bytes(self._buf),
                max_state_blob=self._max_state_blob,
                max_hash_data=self._max_hash_data,
            )
            if request is None:
                break
            del self._buf[:consumed]
            out.append(request)
            if isinstance(request, RejectedRequest) and request.discarded:
                dropped = min(request.discarded, len(self._buf))
                del self._buf[:dropped]
                self._skip = request.discarded - dropped
            if not self._keep_trailing or isinstance(request, UnknownCommand):
                # Padding, or the unframeable payload of an unknown command.
                self._buf.clear()
                break
        return out

    def expire(self) -> RejectedRequest | None:
        """The IO layer's deadline passed with a request half-received.

        swtpm gives a request 500 ms to arrive and then answers
        TPM_BAD_PARAMETER; this returns that answer's request and forgets the
        partial bytes. ``None`` when nothing was pending.
        """
        if not self._buf:
            return None
        command = _u32(bytes(self._buf)) if len(self._buf) >= 4 else None
        held = len(self._buf)
        self._buf.clear()
        return RejectedRequest(
            command=command,
            result=Result.BAD_PARAMETER,
            reason=f"request incomplete after {held} bytes",
        )


# --------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------


def _check_result(result: int) -> None:
    _check_uint("result", result, _U32_MAX)


@dataclass(frozen=True)
class ResultResponse:
    """The whole answer of most commands, and the short form of any failure."""

    result: int = Result.SUCCESS

    def __post_init__(self) -> None:
        _check_result(self.result)

    def encode(self) -> bytes:
        return struct.pack(">I", self.result)


@dataclass(frozen=True)
class CapabilityResponse:
    """CMD_GET_CAPABILITY. swtpm writes one u64; equal to result(0) + caps."""

    caps: int
    result: int = Result.SUCCESS

    def __post_init__(self) -> None:
        _check_result(self.result)
        _check_uint("caps", self.caps, _U32_MAX)

    def encode(self) -> bytes:
        return struct.pack(">II", self.result, self.caps)


@dataclass(frozen=True)
class TpmEstablishedResponse:
    """CMD_GET_TPMESTABLISHED: ``result, u8 bit, u8 pad[3]``."""

    established: bool
    result: int = Result.SUCCESS

    def __post_init__(self) -> None:
        _check_result(self.result)

    def encode(self) -> bytes:
        return struct.pack(">IB3x", self.result, int(self.established))


@dataclass(frozen=True)
class StateBlobResponse:
    """CMD_GET_STATEBLOB: ``result, flags, totlength, length`` then the blob.

    On sockets the whole blob comes at once, so ``totlength`` defaults to the
    blob's length (QEMU refuses anything else).
    """

    blob: bytes = b""
    flags: int = 0
    result: int = Result.SUCCESS
    totlength: int | None = None

    def __post_init__(self) -> None:
        _check_result(self.result)
        _check_uint("state flags", self.flags, _U32_MAX)
        _check_bytes("state blob", self.blob)
        if self.totlength is not None:
            _check_uint("totlength", self.totlength, _U32_MAX)
            if self.totlength < len(self.blob):
                raise LocalProtocolError("totlength is shorter than the blob")

    @property
    def missing(self) -> bool:
        """QEMU's reading: the RETRY bit means 'no such blob', not an error."""
        return bool(self.result & Result.RETRY)

    def encode(self) -> bytes:
        total = len(self.blob) if self.totlength is None else self.totlength
        header = struct.pack(">IIII", self.result, self.flags, total, len(self.blob))
        return header + self.blob


@dataclass(frozen=True)
class ConfigResponse:
    """CMD_GET_CONFIG: ``result, flags`` (:class:`ConfigFlag`)."""

    flags: int = 0
    result: int = Result.SUCCESS

    def __post_init__(self) -> None:
        _check_result(self.result)
        _check_uint("config flags", self.flags, _U32_MAX)

    def encode(self) -> bytes:
        return struct.pack(">II", self.result, self.flags)


@dataclass(frozen=True)
class BufferSizeResponse:
    """CMD_SET_BUFFERSIZE: ``result, buffersize, minsize, maxsize``."""

    buffer_size: int = 0
    min_size: int = 0
    max_size: int = 0
    result: int = Result.SUCCESS

    def __post_init__(self) -> None:
        _check_result(self.result)
        for name in ("buffer_size", "min_size", "max_size"):
            _check_uint(name, getattr(self, name), _U32_MAX)

    def encode(self) -> bytes:
        return struct.pack(">IIII", self.result, self.buffer_size, self.min_size, self.max_size)


@dataclass(frozen=True)
class InfoResponse:
    """CMD_GET_INFO: ``result, totlength, length`` then ``length`` bytes of JSON.

    ``info`` is the page from the requested offset; swtpm's JSON ends in a NUL,
    which the server includes in ``info`` and in ``totlength``.
    """

    info: bytes = b""
    totlength: int | None = None
    result: int = Result.SUCCESS

    def __post_init__(self) -> None:
        _check_result(self.result)
        _check_bytes("info", self.info)
        if self.totlength is not None:
            _check_uint("totlength", self.totlength, _U32_MAX)

    def encode(self) -> bytes:
        total = len(self.info) if self.totlength is None else self.totlength
        return struct.pack(">III", self.result, total, len(self.info)) + self.info


Response: TypeAlias = (
    ResultResponse
    | CapabilityResponse
    | TpmEstablishedResponse
    | StateBlobResponse
    | ConfigResponse
    | BufferSizeResponse
    | InfoResponse
)

# The response table: size of each command's fixed answer when it succeeds; for
# the two with a tail, where the tail's u32 length sits in that fixed part.
_RESPONSE_FIXED: Final[dict[Command, int]] = {
    Command.GET_CAPABILITY: 8,
    Command.GET_TPMESTABLISHED: 8,
    Command.GET_STATEBLOB: 16,
    Command.GET_CONFIG: 8,
    Command.SET_BUFFERSIZE: 16,
    Command.GET_INFO: 12,
}
_RESPONSE_TAIL_LENGTH_AT: Final[dict[Command, int]] = {
    Command.GET_STATEBLOB: 12,
    Command.GET_INFO: 8,
}


def response_size(command: Command, head: bytes) -> int | None:
    """Total size of the answer to ``command`` that starts with ``head``.

    ``None`` until enough of the answer is there to tell. A failed result makes
    the answer 4 bytes long at least; swtpm sends the command's fixed part after
    some failures (GET_STATEBLOB's "no such blob") but only the result after
    others (TPM not running), so a reader on a persistent connection should then
    also take what else already arrived: swtpm writes every answer at once.
    """
    if len(head) < 4:
        return None
    if _u32(head) != Result.SUCCESS:
        return 4
    fixed = _RESPONSE_FIXED.get(command, 4)
    tail_at = _RESPONSE_TAIL_LENGTH_AT.get(command)
    if tail_at is None:
        return fixed
    if len(head) < fixed:
        return None
    return fixed + _u32(head, tail_at)


def decode_response(command: Command, data: bytes) -> Response:
    """Turn the complete answer to ``command`` into a response value.

    Accepts a failure in both shapes swtpm uses (the bare result, or the full
    fixed part). Raises :class:`RemoteProtocolError` for anything else.
    """
    if len(data) < 4:
        raise RemoteProtocolError(f"{command.name} answer is {len(data)} bytes, under 4")
    result = _u32(data)
    fixed = _RESPONSE_FIXED.get(command, 4)
    if result != Result.SUCCESS:
        if len(data) == 4:
            return _failure_response(command, result)
        expected: int | None = fixed  # a failure never carries a tail
    else:
        expected = response_size(command, data)
    if expected is None or len(data) != expected:
        raise RemoteProtocolError(
            f"{command.name} answer is {len(data)} bytes; {expected or fixed} expected"
        )
    if command is Command.GET_CAPABILITY:
        return CapabilityResponse(caps=_u32(data, 4), result=result)
    if command is Command.GET_TPMESTABLISHED:
        return TpmEstablishedResponse(established=bool(data[4] & 1), result=result)
    if command is Command.GET_CONFIG:
        return ConfigResponse(flags=_u32(data, 4), result=result)
    if command is Command.SET_BUFFERSIZE:
        size, low, high = struct.unpack_from(">III", data, 4)
        return BufferSizeResponse(size, low, high, result=result)
    if command is Command.GET_STATEBLOB:
        flags, total, _length = struct.unpack_from(">III", data, 4)
        blob = bytes(data[16:]) if result == Result.SUCCESS else b""
        if total < len(blob):
            raise RemoteProtocolError("GET_STATEBLOB totlength is shorter than its blob")
        return StateBlobResponse(blob=blob, flags=flags, result=result, totlength=total)
    if command is Command.GET_INFO:
        total = _u32(data, 4)
        info = bytes(data[12:]) if result == Result.SUCCESS else b""
        return InfoResponse(info=info, totlength=total, result=result)
    return ResultResponse(result)


def _failure_response(command: Command, result: int) -> Response:
    """A bare-result failure, typed like the command's normal answer."""
    if command is Command.GET_CAPABILITY:
        return CapabilityResponse(caps=0, result=result)
    if command is Command.GET_TPMESTABLISHED:
        return TpmEstablishedResponse(established=False, result=result)
    if command is Command.GET_CONFIG:
        return ConfigResponse(result=result)
    if command is Command.SET_BUFFERSIZE:
        return BufferSizeResponse(result=result)
    if command is Command.GET_STATEBLOB:
        return StateBlobResponse(result=result)
    if command is Command.GET_INFO:
        return InfoResponse(result=result)
    return ResultResponse(result)


def error_response(result: int) -> bytes:
    """The short failure answer, valid for every command (what swtpm sends for
    malformed input, unknown commands and a TPM in the wrong state)."""
    return ResultResponse(result).encode()
