"""Control-channel responses: one value class per answer shape, and the client-side decoder.

A server sends a response value's ``encode()``; a client sizes the answer with
:func:`response_size` and turns it into a value with :func:`decode_response`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, TypeAlias

from .errors import LocalProtocolError, RemoteProtocolError, _check_bytes, _check_uint, _u32
from .numbers import _U32_MAX, Command, Result


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
