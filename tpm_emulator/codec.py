"""One codec for every TPM structure: frozen dataclasses whose annotations are the wire schema.

A field is written ``name: Annotated[python_type, <wire rule>]`` (or just a nested
structure class). The wire rules are small objects declared beside the field, in the
spirit of go-tpm's struct tags: ``UINT16`` is a big-endian u16, ``Sized(48)`` is a
TPM2B of at most 48 octets, ``ListOf(TPMS_X, 16)`` a TPML with a u32 count,
``DigestOf("hashAlg")`` a digest whose length the sibling ``hashAlg`` selects.

Unmarshalling raises ``TpmError`` with the *bare* response code a TPM uses for the
failure (TPM_RC_INSUFFICIENT, _SIZE, _VALUE, _HASH …); the command dispatcher adds the
parameter or handle number, as the reference implementation does (Part 2, 6.6.3).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

from .constants import RC
from .errors import TpmError

T = TypeVar("T")


class Reader:
    """A cursor over received bytes; running off the end is TPM_RC_INSUFFICIENT."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise TpmError(RC.INSUFFICIENT, "input too short")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def unpack(self, st: struct.Struct) -> int:
        end = self.pos + st.size
        if end > len(self.buf):
            raise TpmError(RC.INSUFFICIENT, "input too short")
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos = end
        return int(value)


class Wire:
    """A wire rule: how one field is read and written."""

    def read(self, r: Reader, prior: dict[str, Any]) -> Any:
        raise NotImplementedError

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        raise NotImplementedError


class Int(Wire):
    """A big-endian unsigned integer, optionally restricted to a set of values
    (a TPMI_ interface type: an unlisted value is ``rc``, Part 2, 5.3)."""

    def __init__(self, fmt: str, allowed: Iterable[int] | None = None, rc: int = RC.VALUE):
        self.st = struct.Struct(">" + fmt)
        # A range stays a range (a handle range has millions of members; membership is
        # arithmetic); anything else becomes a frozenset.
        self.allowed: range | frozenset[int] | None = (
            allowed if isinstance(allowed, range)
            else frozenset(int(a) for a in allowed) if allowed is not None else None)
        self.rc = rc

    def restrict(self, allowed: Iterable[int], rc: int = RC.VALUE) -> Int:
        return Int(self.st.format[1:], allowed, rc)

    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        v = r.unpack(self.st)
        if self.allowed is not None and v not in self.allowed:
            raise TpmError(self.rc, f"value 0x{v:X} not allowed")
        return v

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        out += self.st.pack(value)


class Sized(Wire):
    """TPM2B_xxx: u16 size then that many octets; bigger than ``max_size`` is TPM_RC_SIZE."""

    def __init__(self, max_size: int, min_size: int = 0) -> None:
        self.max_size = max_size
        self.min_size = min_size

    def read(self, r: Reader, prior: dict[str, Any]) -> bytes:
        n = r.unpack(_U16)
        if n > self.max_size or n < self.min_size:
            raise TpmError(RC.SIZE, f"TPM2B of {n} octets")
        return r.take(n)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        out += _U16.pack(len(value))
        out += value


class Raw(Wire):
    """Octets whose length is known from context; ``length`` may be a sibling's name."""

    def __init__(self, length: int | Callable[[dict[str, Any]], int]) -> None:
        self.length = length

    def read(self, r: Reader, prior: dict[str, Any]) -> bytes:
        n = self.length(prior) if callable(self.length) else self.length
        return r.take(n)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        out += value


class ListOf(Wire):
    """TPML_xxx: a u32 count then that many elements; more than ``max_count`` is
    TPM_RC_SIZE (Part 2, 10.9)."""

    def __init__(self, element: Any, max_count: int, count: str = "I") -> None:
        self.element = element
        self.max_count = max_count
        self.count = struct.Struct(">" + count)
        self._wire: Wire | None = None

    def _elem(self) -> Wire:
        if self._wire is None:
            self._wire = wire_for(self.element)
        return self._wire

    def read(self, r: Reader, prior: dict[str, Any]) -> tuple[Any, ...]:
        n = r.unpack(self.count)
        if n > self.max_count:
            raise TpmError(RC.SIZE, f"list of {n}")
        elem = self._elem()
        return tuple(elem.read(r, {}) for _ in range(n))

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        out += self.count.pack(len(value))
        elem = self._elem()
        for v in value:
            elem.write(out, v, None)


class Struct(Wire):
    """A nested structure (any codec dataclass)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def read(self, r: Reader, prior: dict[str, Any]) -> Any:
        return unmarshal_from(self.cls, r)

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        marshal_into(out, value)


_U16 = struct.Struct(">H")

UINT8 = Annotated[int, Int("B")]
UINT16 = Annotated[int, Int("H")]
UINT32 = Annotated[int, Int("I")]
UINT64 = Annotated[int, Int("Q")]


def wire_for(tp: Any) -> Wire:
    """The wire rule for an annotation: an Annotated alias or a codec dataclass."""
    if get_origin(tp) is Annotated:
        for meta in get_args(tp)[1:]:
            if isinstance(meta, Wire):
                return meta
        raise TypeError(f"no wire rule in {tp!r}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return Struct(tp)
    raise TypeError(f"cannot marshal {tp!r}")


_Fields = tuple[tuple[str, Wire], ...]
_SCHEMAS: dict[type, _Fields] = {}


def schema(cls: type) -> _Fields:
    """(name, wire) pairs of a codec dataclass, in wire order; compiled once per class."""
    fields = _SCHEMAS.get(cls)
    if fields is None:
        hints = get_type_hints(cls, include_extras=True)
        fields = tuple(
            (f.name, wire_for(hints[f.name])) for f in dataclasses.fields(cls)
        )
        _SCHEMAS[cls] = fields
    return fields


def unmarshal_from(cls: type[T], r: Reader) -> T:
    values: dict[str, Any] = {}
    for name, wire in schema(cls):
        values[name] = wire.read(r, values)
    return cls(**values)


def marshal_into(out: bytearray, obj: Any) -> None:
    for name, wire in schema(type(obj)):
        wire.write(out, getattr(obj, name), obj)


def marshal(obj: Any) -> bytes:
    """Wire bytes of a codec dataclass."""
    out = bytearray()
    marshal_into(out, obj)
    return bytes(out)


def unmarshal(cls: type[T], data: bytes) -> T:
    """Parse exactly one ``cls`` from ``data``; leftover octets are TPM_RC_SIZE."""
    r = Reader(data)
    obj = unmarshal_from(cls, r)
    if r.remaining():
        raise TpmError(RC.SIZE, "trailing octets")
    return obj
