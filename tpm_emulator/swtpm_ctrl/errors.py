"""Errors of the control-channel codec, and the field checks that raise them."""

from __future__ import annotations

import struct

from .numbers import _U32_MAX


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
