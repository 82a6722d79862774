"""Part 2 structures of an NV index: TPM_NT, TPMA_NV (13.4), TPMS_NV_PUBLIC (13.5)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import IntEnum, IntFlag
from typing import Annotated, Any

from ..codec import UINT16, Int, Reader, Sized, Wire, marshal, unmarshal_from
from ..constants import HT, RC
from ..crypto import HASHES, MAX_DIGEST_SIZE
from ..errors import TpmError

# Implementation limits, as libtpms has them (TPM_PT_NV_INDEX_MAX, TPM_PT_NV_BUFFER_MAX).
MAX_NV_INDEX_SIZE = 2048
MAX_NV_BUFFER_SIZE = 1024

NV_INDEX_FIRST = HT.NV_INDEX << 24
NV_INDEX_LAST = NV_INDEX_FIRST | 0xFFFFFF


class TPM_NT(IntEnum):
    """Part 2, 13.2: the type of an index, held in TPMA_NV bits 7:4."""

    ORDINARY = 0x0
    COUNTER = 0x1
    BITS = 0x2
    EXTEND = 0x4
    PIN_FAIL = 0x8
    PIN_PASS = 0x9


class TPMA_NV(IntFlag):
    """Part 2, 13.4."""

    PPWRITE = 1 << 0
    OWNERWRITE = 1 << 1
    AUTHWRITE = 1 << 2
    POLICYWRITE = 1 << 3
    # bits 7:4 are TPM_NT
    POLICY_DELETE = 1 << 10
    WRITELOCKED = 1 << 11
    WRITEALL = 1 << 12
    WRITEDEFINE = 1 << 13
    WRITE_STCLEAR = 1 << 14
    GLOBALLOCK = 1 << 15
    PPREAD = 1 << 16
    OWNERREAD = 1 << 17
    AUTHREAD = 1 << 18
    POLICYREAD = 1 << 19
    NO_DA = 1 << 25
    ORDERLY = 1 << 26
    CLEAR_STCLEAR = 1 << 27
    READLOCKED = 1 << 28
    WRITTEN = 1 << 29
    PLATFORMCREATE = 1 << 30
    READ_STCLEAR = 1 << 31


TPMA_NV_TPM_NT_SHIFT = 4
TPMA_NV_TPM_NT_MASK = 0xF << TPMA_NV_TPM_NT_SHIFT
TPMA_NV_RESERVED = 0x0000_0300 | 0x01F0_0000  # bits 9:8 and 24:20


def nt_of(attributes: int) -> int:
    return (attributes & TPMA_NV_TPM_NT_MASK) >> TPMA_NV_TPM_NT_SHIFT


class _Attributes(Int):
    """TPMA_NV: a set reserved bit is TPM_RC_RESERVED_BITS (Part 2, 13.4)."""

    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        v = r.unpack(self.st)
        if v & TPMA_NV_RESERVED:
            raise TpmError(RC.RESERVED_BITS, f"TPMA_NV 0x{v:08X}")
        return v


class _DataSize(Int):
    """dataSize {:MAX_NV_INDEX_SIZE}: larger is TPM_RC_SIZE (Part 2, 13.5)."""

    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        v = r.unpack(self.st)
        if v > MAX_NV_INDEX_SIZE:
            raise TpmError(RC.SIZE, f"dataSize {v}")
        return v


class _NvIndexHandle(Int):
    """TPMI_RH_NV_INDEX (Part 2, 9.24): a handle outside the NV range is TPM_RC_VALUE."""

    def read(self, r: Reader, prior: dict[str, Any]) -> int:
        v = r.unpack(self.st)
        if not is_nv_index(v):
            raise TpmError(RC.VALUE, f"0x{v:08X} is not an NV index handle")
        return v


def is_nv_index(handle: int) -> bool:
    return NV_INDEX_FIRST <= handle <= NV_INDEX_LAST


TPMI_RH_NV_INDEX_ = Annotated[int, _NvIndexHandle("I")]
TPMI_ALG_HASH_ = Annotated[int, Int("H", HASHES, RC.HASH)]


@dataclass(frozen=True)
class TPMS_NV_PUBLIC:
    """Part 2, 13.5."""

    nvIndex: TPMI_RH_NV_INDEX_
    nameAlg: TPMI_ALG_HASH_
    attributes: Annotated[int, _Attributes("I")]
    authPolicy: Annotated[bytes, Sized(MAX_DIGEST_SIZE)]
    dataSize: Annotated[int, _DataSize("H")]

    @property
    def nt(self) -> int:
        return nt_of(self.attributes)

    def has(self, flag: TPMA_NV) -> bool:
        return bool(self.attributes & flag)

    def with_attributes(self, set_: int = 0, clear: int = 0) -> TPMS_NV_PUBLIC:
        return replace(self, attributes=(self.attributes | set_) & ~clear & 0xFFFFFFFF)

    def name(self) -> bytes:
        """Name := nameAlg || H_nameAlg(TPMS_NV_PUBLIC) (Part 1, 16): it changes with
        the attributes, so with TPMA_NV_WRITTEN and the locks."""
        return struct.pack(">H", self.nameAlg) + HASHES[self.nameAlg].digest(marshal(self))


class SizedPublic(Wire):
    """TPM2B_NV_PUBLIC (Part 2, 13.6): a zero size, or a size the structure does not
    fill exactly, is TPM_RC_SIZE."""

    def read(self, r: Reader, prior: dict[str, Any]) -> TPMS_NV_PUBLIC:
        size = r.unpack(_U16)
        if size == 0:
            raise TpmError(RC.SIZE, "empty TPM2B_NV_PUBLIC")
        inner = Reader(r.take(size))
        public = unmarshal_from(TPMS_NV_PUBLIC, inner)
        if inner.remaining():
            raise TpmError(RC.SIZE, "TPM2B_NV_PUBLIC size disagrees with its content")
        return public

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        body = marshal(value)
        out += _U16.pack(len(body)) + body


_U16 = struct.Struct(">H")

TPM2B_NV_PUBLIC = Annotated[TPMS_NV_PUBLIC, SizedPublic()]
TPM2B_MAX_NV_BUFFER = Annotated[bytes, Sized(MAX_NV_BUFFER_SIZE)]
TPM2B_NAME = Annotated[bytes, Sized(2 + MAX_DIGEST_SIZE)]

__all__ = [
    "MAX_NV_BUFFER_SIZE",
    "MAX_NV_INDEX_SIZE",
    "NV_INDEX_FIRST",
    "NV_INDEX_LAST",
    "TPM2B_MAX_NV_BUFFER",
    "TPM2B_NAME",
    "TPM2B_NV_PUBLIC",
    "TPMA_NV",
    "TPMS_NV_PUBLIC",
    "TPM_NT",
    "UINT16",
    "is_nv_index",
    "nt_of",
]
