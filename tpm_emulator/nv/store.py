"""The TPM's NV indices: what is stored, who may touch it, and its snapshot record.

Part 3, 31.2 states the access rules once for every NV command (the reference's
``NvWriteAccessChecks`` / ``NvReadAccessChecks``); Part 1, 19 says when an index's
authValue or authPolicy may authorize at all. Both live here, next to the data, so the
command bodies in ``actions.py`` read like Part 3's action clauses.

All indices are kept in ``PermanentState`` (orderly indices included: we have no NV
write budget to save, so "orderly" changes nothing observable but the attribute).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Annotated

from ..codec import UINT64, Int, ListOf, Sized
from ..constants import CC, RC, RH
from ..crypto import HASHES
from ..errors import StateFormatError, TpmError
from ..sessions import Entity
from . import pin
from .public import MAX_NV_INDEX_SIZE, TPM_NT, TPMA_NV, TPMS_NV_PUBLIC

# NV memory budget for indices (ours; libtpms has about 128 KiB for everything). An index
# costs its data plus a fixed overhead for its public area and authValue.
NV_MEMORY_SIZE = 64 * 1024
INDEX_OVERHEAD = 128
MAX_NV_INDICES = NV_MEMORY_SIZE // INDEX_OVERHEAD

# Commands whose NV authorization is a "write" (the reference's IsWriteOperation);
# any other command authorizing with an index's auth is a "read" (Part 1, 19.x / 37.x).
WRITE_OPERATIONS: frozenset[int] = frozenset(
    {CC.NV_Write, CC.NV_Increment, CC.NV_SetBits, CC.NV_Extend, CC.NV_WriteLock}
)


@dataclass
class NvIndex:
    """One defined index: its public area, authValue and data (dataSize octets)."""

    public: TPMS_NV_PUBLIC
    auth_value: bytes
    data: bytearray

    @property
    def handle(self) -> int:
        return self.public.nvIndex

    def has(self, flag: TPMA_NV) -> bool:
        return self.public.has(flag)

    def set_attributes(self, set_: int = 0, clear: int = 0) -> None:
        self.public = self.public.with_attributes(set_, clear)

    def write(self, offset: int, data: bytes) -> None:
        """Store ``data`` and SET TPMA_NV_WRITTEN (which changes the index's Name)."""
        self.data[offset : offset + len(data)] = data
        self.set_attributes(TPMA_NV.WRITTEN)

    def read_u64(self) -> int:
        return int(struct.unpack(">Q", bytes(self.data[:8]))[0])

    def cost(self) -> int:
        return self.public.dataSize + INDEX_OVERHEAD


@dataclass
class NvStore:
    """Every defined index, and the largest value any deleted counter reached (a
    counter's first TPM2_NV_Increment starts above it)."""

    indices: dict[int, NvIndex] = field(default_factory=dict)
    max_counter: int = 0
    # TPM2_NV_GlobalWriteLock is a state-clear flag, not an attribute change: it shows
    # as WRITELOCKED on every GLOBALLOCK index (even ones defined later) until the next
    # TPM Reset or Restart, whatever WRITEDEFINE says (libtpms behaves so).
    global_locked: bool = False

    # ---- lookup -----------------------------------------------------------------------
    def __contains__(self, handle: int) -> bool:
        return handle in self.indices

    def get(self, handle: int) -> NvIndex:
        index = self.indices.get(handle)
        if index is None:  # pragma: no cover - the handle-area load check refused it
            raise TpmError(RC.HANDLE)
        return index

    def handles(self) -> list[int]:
        return sorted(self.indices)

    def counters(self) -> int:
        return sum(1 for i in self.indices.values() if i.public.nt == TPM_NT.COUNTER)

    def free(self) -> int:
        return NV_MEMORY_SIZE - sum(i.cost() for i in self.indices.values())

    def counters_available(self) -> int:
        """TPM_PT_NV_COUNTERS_AVAIL: how many more 8-octet counters would fit."""
        return max(0, self.free()) // (8 + INDEX_OVERHEAD)

    # ---- define / delete ----------------------------------------------------------------
    def define(self, public: TPMS_NV_PUBLIC, auth: bytes) -> NvIndex:
        if public.nvIndex in self.indices:
            raise TpmError(RC.NV_DEFINED)
        index = NvIndex(public, auth, bytearray(b"\xff" * public.dataSize))
        if index.cost() > self.free():
            raise TpmError(RC.NV_SPACE)
        self.indices[public.nvIndex] = index
        return index

    def delete(self, handle: int) -> None:
        index = self.indices.pop(handle)
        if index.public.nt == TPM_NT.COUNTER and index.has(TPMA_NV.WRITTEN):
            self.max_counter = max(self.max_counter, index.read_u64())

    def initial_count(self) -> int:
        """The value a counter's first increment starts above: the largest value any
        *deleted* counter had. The reference and libtpms record it when a counter is
        undefined (NvDeleteIndex), which suffices for Part 1's promise that an index
        handle never shows a counter going backwards; live counters do not count."""
        return self.max_counter

    # ---- lifecycle ----------------------------------------------------------------------
    def startup_clear(self) -> None:
        """TPM Reset and TPM Restart (not Resume): READLOCKED always clears; WRITELOCKED
        clears unless it is WRITEDEFINE's permanent lock (a WRITE_STCLEAR or a global
        lock lasts until here, Part 3, 31.11 and 31.12); CLEAR_STCLEAR indices read as
        never written (Part 2, 13.4). As libtpms does."""
        self.global_locked = False
        for index in self.indices.values():
            clear = TPMA_NV.READLOCKED
            if index.has(TPMA_NV.WRITE_STCLEAR) or not index.has(TPMA_NV.WRITEDEFINE):
                clear |= TPMA_NV.WRITELOCKED
            if index.has(TPMA_NV.CLEAR_STCLEAR):
                clear |= TPMA_NV.WRITTEN
            index.set_attributes(clear=clear)

    def global_lock(self) -> None:
        """TPM2_NV_GlobalWriteLock (Part 3, 31.12)."""
        self.global_locked = True

    def public(self, index: NvIndex) -> TPMS_NV_PUBLIC:
        """The public area as reported (and named): the global lock shows as WRITELOCKED."""
        if self.global_locked and index.has(TPMA_NV.GLOBALLOCK):
            return index.public.with_attributes(TPMA_NV.WRITELOCKED)
        return index.public

    def write_locked(self, index: NvIndex) -> bool:
        return bool(self.public(index).attributes & TPMA_NV.WRITELOCKED)

    # ---- authorization (Part 1, 19; the reference's IsAuthValueAvailable & co.) ----------
    def entity(self, handle: int, cc: int | None = None, admin: bool = False) -> Entity:
        """The index as an authorization entity. With ``cc``, whether its authValue or
        authPolicy may authorize that command: a write needs AUTHWRITE/POLICYWRITE, any
        other command AUTHREAD/POLICYREAD (a PIN index's authValue instead needs a
        count under its limit: ``pin.py``), and the ADMIN role always a policy session
        (its policy only counts if one was set)."""
        index = self.get(handle)
        public = self.public(index)
        value_ok, policy_ok = True, bool(public.authPolicy)
        if cc is not None:
            write = cc in WRITE_OPERATIONS
            if admin:
                value_ok = False
            elif not write and pin.is_pin_index(public):
                value_ok = pin.auth_value_available(index)  # no AUTHREAD needed
            else:
                value_ok = index.has(TPMA_NV.AUTHWRITE if write else TPMA_NV.AUTHREAD)
                policy_ok = policy_ok and index.has(
                    TPMA_NV.POLICYWRITE if write else TPMA_NV.POLICYREAD)
        return Entity(public.name(), index.auth_value, public.authPolicy if policy_ok else b"",
                      da_exempt=index.has(TPMA_NV.NO_DA), auth_value_available=value_ok,
                      policy_required=admin)


# ---- access checks shared by the NV commands (Part 3, 31.3.1) ----------------------------
def check_write_access(store: NvStore, auth_handle: int, index: NvIndex) -> None:
    """NvWriteAccessChecks: TPM_RC_NV_LOCKED, then TPM_RC_NV_AUTHORIZATION when the
    authorizing entity is not one the attributes allow to write."""
    if store.write_locked(index):
        raise TpmError(RC.NV_LOCKED)
    _check_role(auth_handle, index, TPMA_NV.OWNERWRITE, TPMA_NV.PPWRITE)


def check_read_access(auth_handle: int, index: NvIndex) -> None:
    """NvReadAccessChecks: TPM_RC_NV_LOCKED, TPM_RC_NV_AUTHORIZATION, and
    TPM_RC_NV_UNINITIALIZED last (so NV_ReadLock can tell them apart)."""
    if index.has(TPMA_NV.READLOCKED):
        raise TpmError(RC.NV_LOCKED)
    _check_role(auth_handle, index, TPMA_NV.OWNERREAD, TPMA_NV.PPREAD)
    if not index.has(TPMA_NV.WRITTEN):
        raise TpmError(RC.NV_UNINITIALIZED)


def _check_role(auth_handle: int, index: NvIndex, owner: TPMA_NV, platform: TPMA_NV) -> None:
    # When the index authorized itself, its AUTH/POLICY bits were checked while
    # authorizing (NvStore.entity); another index's authorization never suffices.
    allowed = {RH.OWNER: index.has(owner), RH.PLATFORM: index.has(platform),
               index.handle: True}
    if not allowed.get(auth_handle, False):
        raise TpmError(RC.NV_AUTHORIZATION)


# ---- snapshot record ----------------------------------------------------------------------
@dataclass(frozen=True)
class NvIndexRecord:
    public: TPMS_NV_PUBLIC
    authValue: Annotated[bytes, Sized(64)]
    data: Annotated[bytes, Sized(MAX_NV_INDEX_SIZE)]


@dataclass(frozen=True)
class NvStateRecord:
    """The NV trailer of a state blob, version 1."""

    version: Annotated[int, Int("B", (1,))]
    maxCounter: UINT64
    globalLock: Annotated[int, Int("B", (0, 1))]
    indices: Annotated[tuple[NvIndexRecord, ...], ListOf(NvIndexRecord, MAX_NV_INDICES)]


def store_record(store: NvStore) -> NvStateRecord:
    return NvStateRecord(1, store.max_counter, int(store.global_locked), tuple(
        NvIndexRecord(i.public, i.auth_value, bytes(i.data))
        for _, i in sorted(store.indices.items())))


def store_from_record(rec: NvStateRecord) -> NvStore:
    """Rebuild the indices, refusing anything our own encoder could not have written."""
    store = NvStore({}, rec.maxCounter, bool(rec.globalLock))
    for r in rec.indices:
        public = r.public
        if (public.nvIndex in store.indices or len(r.data) != public.dataSize
                or len(r.authValue.rstrip(b"\x00")) > HASHES[public.nameAlg].size):
            raise StateFormatError(f"NV index 0x{public.nvIndex:08X} is malformed")
        store.indices[public.nvIndex] = NvIndex(public, r.authValue, bytearray(r.data))
    if store.free() < 0:
        raise StateFormatError("NV indices exceed the NV memory")
    return store
