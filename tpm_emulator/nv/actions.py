"""Command bodies of Part 3, clause 31, in the order the reference checks things, so
that each refusal earns the code libtpms gives. Registered in ``handlers.HANDLERS``.

Handlers run after authorization: when ``authHandle`` is the index itself, its
AUTH/POLICY read or write bit was already checked (``NvStore.entity``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..commands import Empty
from ..constants import CC, RC, RH
from ..crypto import HASHES
from ..errors import TpmError, with_handle, with_parameter
from . import commands as c
from . import pin
from .public import MAX_NV_BUFFER_SIZE, MAX_NV_INDEX_SIZE, TPM_NT, TPMA_NV
from .store import NvIndex, check_read_access, check_write_access

if TYPE_CHECKING:
    from ..handlers import Invocation
    from ..tpm import TPM

NV_HANDLERS: dict[int, Callable[[TPM, Invocation, Any], Any]] = {}


def _handles(cc: CC) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        NV_HANDLERS[cc] = fn
        return fn

    return register


def _index(tpm: TPM, inv: Invocation) -> tuple[int, NvIndex]:
    auth_handle, nv_handle = inv.handles
    return auth_handle, tpm.perm.nv.get(nv_handle)


def _require_type(index: NvIndex, nt: TPM_NT) -> None:
    if index.public.nt != nt:
        raise TpmError(with_handle(RC.ATTRIBUTES, 2), f"index is not of type {nt.name}")


# ---- 31.3 NV_DefineSpace ---------------------------------------------------------------------
_ONE_OF_WRITE = TPMA_NV.PPWRITE | TPMA_NV.OWNERWRITE | TPMA_NV.AUTHWRITE | TPMA_NV.POLICYWRITE
_ONE_OF_READ = TPMA_NV.PPREAD | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD | TPMA_NV.POLICYREAD
_STATE_BITS = TPMA_NV.WRITELOCKED | TPMA_NV.READLOCKED | TPMA_NV.WRITTEN


@_handles(CC.NV_DefineSpace)
def nv_define_space(tpm: TPM, inv: Invocation, p: c.NV_DefineSpace_In) -> Empty:
    auth_handle = inv.handles[0]
    public = p.publicInfo
    attrs = public.attributes
    bad_public = TpmError(with_parameter(RC.ATTRIBUTES, 2))
    digest_size = HASHES[public.nameAlg].size
    if public.authPolicy and len(public.authPolicy) != digest_size:
        raise TpmError(with_parameter(RC.SIZE, 2), "authPolicy size")
    if len(p.auth.rstrip(b"\x00")) > digest_size:
        raise TpmError(with_parameter(RC.SIZE, 1), "auth larger than the nameAlg digest")
    nt = public.nt
    if nt not in tuple(TPM_NT):
        raise bad_public
    expected_size = {TPM_NT.ORDINARY: None, TPM_NT.EXTEND: digest_size}.get(TPM_NT(nt), 8)
    if (public.dataSize > MAX_NV_INDEX_SIZE if expected_size is None
            else public.dataSize != expected_size):
        raise TpmError(with_parameter(RC.SIZE, 2), "dataSize for the index type")
    # A counter is never cleared (Part 2, 13.4); a PIN index has rules of its own.
    if nt == TPM_NT.COUNTER and attrs & TPMA_NV.CLEAR_STCLEAR:
        raise bad_public
    if pin.define_refused(public):
        raise bad_public
    if not attrs & _ONE_OF_WRITE or not attrs & _ONE_OF_READ or attrs & _STATE_BITS:
        raise bad_public
    # An index that reads as unwritten after every Startup cannot be locked for good.
    if attrs & TPMA_NV.CLEAR_STCLEAR and attrs & TPMA_NV.WRITEDEFINE:
        raise bad_public
    # Whoever defines an index must be able to delete it (Part 3, 31.3.1).
    if bool(attrs & TPMA_NV.PLATFORMCREATE) != (auth_handle == RH.PLATFORM):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "PLATFORMCREATE vs authHandle")
    if attrs & TPMA_NV.POLICY_DELETE and auth_handle != RH.PLATFORM:
        raise bad_public
    if public.dataSize > MAX_NV_BUFFER_SIZE and attrs & TPMA_NV.WRITEALL:
        raise TpmError(with_parameter(RC.SIZE, 2), "WRITEALL index larger than a write")
    tpm.perm.nv.define(public, p.auth.rstrip(b"\x00"))
    return Empty()


# ---- 31.4 NV_UndefineSpace, 31.5 NV_UndefineSpaceSpecial ------------------------------------
@_handles(CC.NV_UndefineSpace)
def nv_undefine_space(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    auth_handle, index = _index(tpm, inv)
    if index.has(TPMA_NV.POLICY_DELETE):
        raise TpmError(with_handle(RC.ATTRIBUTES, 2), "needs NV_UndefineSpaceSpecial")
    # The owner may delete only what the owner created; the platform may delete both.
    if auth_handle == RH.OWNER and index.has(TPMA_NV.PLATFORMCREATE):
        raise TpmError(RC.NV_AUTHORIZATION)
    tpm.perm.nv.delete(index.handle)
    return Empty()


@_handles(CC.NV_UndefineSpaceSpecial)
def nv_undefine_space_special(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    index = tpm.perm.nv.get(inv.handles[0])
    if not index.has(TPMA_NV.POLICY_DELETE):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "POLICY_DELETE is not set")
    tpm.perm.nv.delete(index.handle)
    return Empty()


# ---- 31.6 NV_ReadPublic -----------------------------------------------------------------------
@_handles(CC.NV_ReadPublic)
def nv_read_public(tpm: TPM, inv: Invocation, p: Empty) -> c.NV_ReadPublic_Out:
    store = tpm.perm.nv
    public = store.public(store.get(inv.handles[0]))
    return c.NV_ReadPublic_Out(public, public.name())


# ---- 31.7 NV_Write, 31.8 NV_Increment, 31.9 NV_Extend, 31.10 NV_SetBits -------------------------
_NOT_WRITABLE = (TPM_NT.COUNTER, TPM_NT.BITS, TPM_NT.EXTEND)


@_handles(CC.NV_Write)
def nv_write(tpm: TPM, inv: Invocation, p: c.NV_Write_In) -> Empty:
    auth_handle, index = _index(tpm, inv)
    check_write_access(tpm.perm.nv, auth_handle, index)
    # Counters, bit fields and extend indices change only as their type says; a PIN
    # index is written like an ordinary one (that is how its count is set).
    if index.public.nt in _NOT_WRITABLE:
        raise TpmError(RC.ATTRIBUTES, "NV_Write to a typed index")
    size = index.public.dataSize
    if p.offset > size:
        raise TpmError(with_parameter(RC.VALUE, 2), "offset beyond the index")
    if len(p.data) > size - p.offset:
        raise TpmError(RC.NV_RANGE)
    if index.has(TPMA_NV.WRITEALL) and len(p.data) < size:
        raise TpmError(RC.NV_RANGE, "WRITEALL index written partially")
    index.write(p.offset, p.data)
    return Empty()


@_handles(CC.NV_Increment)
def nv_increment(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    auth_handle, index = _index(tpm, inv)
    check_write_access(tpm.perm.nv, auth_handle, index)
    _require_type(index, TPM_NT.COUNTER)
    count = index.read_u64() if index.has(TPMA_NV.WRITTEN) else tpm.perm.nv.initial_count()
    index.write(0, ((count + 1) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big"))
    return Empty()


@_handles(CC.NV_Extend)
def nv_extend(tpm: TPM, inv: Invocation, p: c.NV_Extend_In) -> Empty:
    auth_handle, index = _index(tpm, inv)
    check_write_access(tpm.perm.nv, auth_handle, index)
    _require_type(index, TPM_NT.EXTEND)
    h = HASHES[index.public.nameAlg]
    old = bytes(index.data) if index.has(TPMA_NV.WRITTEN) else bytes(h.size)
    index.write(0, h.digest(old, p.data))
    return Empty()


@_handles(CC.NV_SetBits)
def nv_set_bits(tpm: TPM, inv: Invocation, p: c.NV_SetBits_In) -> Empty:
    auth_handle, index = _index(tpm, inv)
    check_write_access(tpm.perm.nv, auth_handle, index)
    _require_type(index, TPM_NT.BITS)
    old = index.read_u64() if index.has(TPMA_NV.WRITTEN) else 0
    index.write(0, (old | p.bits).to_bytes(8, "big"))
    return Empty()


# ---- 31.11 NV_WriteLock, 31.12 NV_GlobalWriteLock ------------------------------------------------
@_handles(CC.NV_WriteLock)
def nv_write_lock(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    auth_handle, index = _index(tpm, inv)
    try:
        check_write_access(tpm.perm.nv, auth_handle, index)
    except TpmError as e:
        if e.rc == RC.NV_AUTHORIZATION:
            raise
        return Empty()  # already locked: nothing to do, and no error
    if not index.has(TPMA_NV.WRITEDEFINE) and not index.has(TPMA_NV.WRITE_STCLEAR):
        raise TpmError(with_handle(RC.ATTRIBUTES, 2), "index cannot be write-locked")
    index.set_attributes(TPMA_NV.WRITELOCKED)
    return Empty()


@_handles(CC.NV_GlobalWriteLock)
def nv_global_write_lock(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    tpm.perm.nv.global_lock()
    return Empty()


# ---- 31.13 NV_Read, 31.14 NV_ReadLock ------------------------------------------------------------
@_handles(CC.NV_Read)
def nv_read(tpm: TPM, inv: Invocation, p: c.NV_Read_In) -> c.NV_Read_Out:
    auth_handle, index = _index(tpm, inv)
    check_read_access(auth_handle, index)
    if p.size > MAX_NV_BUFFER_SIZE:
        raise TpmError(with_parameter(RC.VALUE, 1), "size larger than a read")
    size = index.public.dataSize
    if p.offset > size:
        raise TpmError(with_parameter(RC.VALUE, 2), "offset beyond the index")
    if p.size > size - p.offset:
        raise TpmError(RC.NV_RANGE)
    return c.NV_Read_Out(bytes(index.data[p.offset : p.offset + p.size]))


@_handles(CC.NV_ReadLock)
def nv_read_lock(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    auth_handle, index = _index(tpm, inv)
    try:
        check_read_access(auth_handle, index)
    except TpmError as e:
        if e.rc == RC.NV_AUTHORIZATION:
            raise
        if e.rc == RC.NV_LOCKED:
            return Empty()  # already read-locked
        # An index that was never written may still be read-locked.
    if not index.has(TPMA_NV.READ_STCLEAR):
        raise TpmError(with_handle(RC.ATTRIBUTES, 2), "READ_STCLEAR is not set")
    index.set_attributes(TPMA_NV.READLOCKED)
    return Empty()


# ---- 31.15 NV_ChangeAuth ------------------------------------------------------------------
@_handles(CC.NV_ChangeAuth)
def nv_change_auth(tpm: TPM, inv: Invocation, p: c.NV_ChangeAuth_In) -> Empty:
    index = tpm.perm.nv.get(inv.handles[0])
    if len(p.newAuth.rstrip(b"\x00")) > HASHES[index.public.nameAlg].size:
        raise TpmError(with_parameter(RC.SIZE, 1), "newAuth larger than the nameAlg digest")
    index.auth_value = p.newAuth.rstrip(b"\x00")
    return Empty()
