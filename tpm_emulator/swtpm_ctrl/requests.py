"""Control-channel requests: one value class per command, and the server-side parser.

A client builds a request value and sends its ``encode()``; a server feeds
received bytes into a :class:`RequestParser` (or calls :func:`parse_request`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias

from .errors import LocalProtocolError, _check_bytes, _check_uint, _u32
from .numbers import (
    _COMMAND_CODES,
    _U8_MAX,
    _U32_MAX,
    _U64_MAX,
    MAX_HASH_DATA_SIZE,
    MAX_STATE_BLOB_SIZE,
    BlobType,
    Command,
    Result,
    StateFlag,
)


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
