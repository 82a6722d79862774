"""Command bodies (Part 3), one function per command, registered by command code.

Each handler gets the TPM, the invocation (locality, handles) and its already
unmarshalled, already authorized parameters, and returns its response structure.
Errors are raised as ``TpmError`` carrying the numbered code Part 3 lists.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import capability
from . import commands as c
from .codec import marshal
from .constants import (
    CC,
    HT,
    RC,
    RH,
    ST,
    SU,
    TPM_GENERATED_VALUE,
)
from .crypto import (
    HASHES,
    MAX_DIGEST_SIZE,
    hashcheck_hmac,
    open_context,
    seal_context,
    split_context,
)
from .errors import TpmError, with_handle, with_parameter
from .lifecycle import STARTUP_EFFECTS, STARTUP_TRANSITIONS, Orderly
from .pcr import may_extend, may_reset
from .session_table import (
    SessionContext,
    decode_session_context,
    is_session_handle,
)
from .state import ResetData
from .structures import (
    TPML_ALG,
    TPML_DIGEST,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_CONTEXT,
    TPMS_PCR_SELECTION,
    TPMS_TIME_INFO,
    TPMT_HA,
    TPMT_TK_HASHCHECK,
)

if TYPE_CHECKING:
    from .tpm import TPM


@dataclass(frozen=True)
class Invocation:
    """What a handler may know about the command besides its parameters."""

    cc: int
    locality: int
    handles: tuple[int, ...]


Handler = Callable[["TPM", Invocation, Any], Any]
HANDLERS: dict[int, Handler] = {}


def handles(cc: CC) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[cc] = fn
        return fn

    return register


# ---- Startup / Shutdown (Part 3, clause 9) ------------------------------------------
@handles(CC.Startup)
def startup(tpm: TPM, inv: Invocation, p: c.Startup_In) -> c.Empty:
    perm = tpm.perm
    kind = STARTUP_TRANSITIONS.get((p.startupType, perm.orderly))
    if kind is None:
        raise TpmError(with_parameter(RC.VALUE, 1), "Startup(STATE) without Shutdown(STATE)")
    fx = STARTUP_EFFECTS[kind]
    saved = perm.shutdown_state
    rd = ResetData()
    if not fx.new_null_proof and saved is not None:
        rd.null_proof = saved.null_proof
    if fx.keep_saved_sessions and saved is not None:
        rd.sessions.saved = dict(saved.sessions.saved)
        rd.sessions.context_counter = saved.sessions.context_counter
        rd.commit = saved.commit.copy()  # ECC commit state: new only at TPM Reset
    keep = saved.pcrs if fx.restore_saved_pcrs and saved is not None else None
    if fx.keep_pcr_counter and saved is not None:
        rd.pcrs.update_counter = saved.pcrs.update_counter
    # The first Startup after _TPM_Init brings a PCR_Allocate into effect (admin/allocation.py).
    rd.pcrs.allocated = perm.pcr_allocation.take_effect()
    rd.pcrs.initialise(inv.locality, keep)  # counts the PCRs it resets (pcr.py)
    if fx.count_reset:
        perm.reset_count = (perm.reset_count + 1) & 0xFFFFFFFF
        perm.restart_count = 0
        tpm.clock_safe = perm.orderly != Orderly.NONE
    if fx.count_restart:
        perm.restart_count = (perm.restart_count + 1) & 0xFFFFFFFF
    if fx.clear_nv_stclear:
        perm.nv.startup_clear()
    # Hierarchy enables and platformAuth: kept only by a TPM Resume; DA startup rules.
    _admin_startup(tpm, rd, saved if fx.restore_saved_pcrs else None)
    tpm.startup_orderly = perm.orderly != Orderly.NONE
    perm.orderly = Orderly.NONE
    perm.shutdown_state = None
    tpm.reset_data = rd
    tpm.started = True
    return c.Empty()


@handles(CC.Shutdown)
def shutdown(tpm: TPM, inv: Invocation, p: c.Shutdown_In) -> c.Empty:
    if p.shutdownType == SU.STATE:
        if tpm.perm.pcr_allocation.pending is not None:
            # Part 3, 9.4: after PCR_Allocate only Shutdown(CLEAR) (libtpms: TYPE, P1)
            raise TpmError(with_parameter(RC.TYPE, 1), "PCR allocation pending")
        tpm.perm.orderly = Orderly.STATE
        tpm.perm.shutdown_state = tpm.reset_data.saved_copy()
    else:
        tpm.perm.orderly = Orderly.CLEAR
        tpm.perm.shutdown_state = None
    tpm.perm.admin.da.used = False  # the next DA-protected use voids this shutdown (admin/da.py)
    return c.Empty()


# ---- Testing (Part 3, clause 10): the self-tests have nothing left to do ------------------
@handles(CC.SelfTest)
def self_test(tpm: TPM, inv: Invocation, p: c.SelfTest_In) -> c.Empty:
    return c.Empty()


@handles(CC.IncrementalSelfTest)
def incremental_self_test(tpm: TPM, inv: Invocation,
                          p: c.IncrementalSelfTest_In) -> c.IncrementalSelfTest_Out:
    # Part 3, 10.3: asking to test an algorithm the TPM does not implement (does not
    # list in TPM_CAP_ALGS) is TPM_RC_VALUE, numbered P1 as libtpms answers. Everything
    # implemented is tested already, so nothing is left to do.
    implemented = {alg for alg, _ in capability.ALGORITHMS}
    if any(alg not in implemented for alg in p.toTest.algorithms):
        raise TpmError(with_parameter(RC.VALUE, 1), "algorithm not implemented")
    return c.IncrementalSelfTest_Out(TPML_ALG(()))


@handles(CC.GetTestResult)
def get_test_result(tpm: TPM, inv: Invocation, p: c.Empty) -> c.GetTestResult_Out:
    return c.GetTestResult_Out(b"", RC.SUCCESS)


# ---- Random (Part 3, clause 16) ---------------------------------------------------------
@handles(CC.GetRandom)
def get_random(tpm: TPM, inv: Invocation, p: c.GetRandom_In) -> c.GetRandom_Out:
    # A TPM returns at most one digest's worth (TPM_PT_MAX_DIGEST) per call.
    return c.GetRandom_Out(os.urandom(min(p.bytesRequested, MAX_DIGEST_SIZE)))


@handles(CC.StirRandom)
def stir_random(tpm: TPM, inv: Invocation, p: c.StirRandom_In) -> c.Empty:
    # Our random numbers come from the OS CSPRNG, which needs no stirring; the input is
    # accepted (and validated) for compatibility.
    return c.Empty()


# ---- Capability (Part 3, 30.2) ------------------------------------------------------------
@handles(CC.GetCapability)
def get_capability(tpm: TPM, inv: Invocation, p: c.GetCapability_In) -> c.GetCapability_Out:
    more, data = capability.get_capability(
        p.capability, p.property, p.propertyCount, tpm.handles_of_type, tpm.tpm_properties,
        lambda: sorted(tpm.perm.command_audit.commands),
        pcr_allocation=tpm.reset_data.pcrs.allocated,
    )
    return c.GetCapability_Out(int(more), data)


# ---- PCRs (Part 3, clause 22) ------------------------------------------------------------
@handles(CC.PCR_Read)
def pcr_read(tpm: TPM, inv: Invocation, p: c.PCR_Read_In) -> c.PCR_Read_Out:
    pcrs = tpm.reset_data.pcrs
    sel, digests = pcrs.read(tuple((s.hash, s.pcrSelect) for s in p.pcrSelectionIn.pcrSelections))
    return c.PCR_Read_Out(
        pcrs.update_counter,
        TPML_PCR_SELECTION(tuple(TPMS_PCR_SELECTION(a, b) for a, b in sel)),
        TPML_DIGEST(tuple(digests)),
    )


@handles(CC.PCR_Extend)
def pcr_extend(tpm: TPM, inv: Invocation, p: c.PCR_Extend_In) -> c.Empty:
    pcr = inv.handles[0]
    if pcr == RH.NULL:
        return c.Empty()
    if not may_extend(pcr, inv.locality):
        raise TpmError(RC.LOCALITY, f"PCR {pcr} not extendable at locality {inv.locality}")
    for d in p.digests.digests:
        tpm.reset_data.pcrs.extend(pcr, d.hashAlg, d.digest)
    return c.Empty()


@handles(CC.PCR_Event)
def pcr_event(tpm: TPM, inv: Invocation, p: c.PCR_Event_In) -> c.PCR_Event_Out:
    pcr = inv.handles[0]
    if pcr != RH.NULL and not may_extend(pcr, inv.locality):
        raise TpmError(RC.LOCALITY, f"PCR {pcr} not extendable at locality {inv.locality}")
    digests = tuple(TPMT_HA(alg, h.digest(p.eventData)) for alg, h in sorted(HASHES.items()))
    if pcr != RH.NULL:
        for d in digests:
            tpm.reset_data.pcrs.extend(pcr, d.hashAlg, d.digest)
    return c.PCR_Event_Out(TPML_DIGEST_VALUES(digests))


@handles(CC.PCR_Reset)
def pcr_reset(tpm: TPM, inv: Invocation, p: c.Empty) -> c.Empty:
    pcr = inv.handles[0]
    if not may_reset(pcr, inv.locality):
        raise TpmError(RC.LOCALITY, f"PCR {pcr} not resettable at locality {inv.locality}")
    tpm.reset_data.pcrs.reset(pcr)
    return c.Empty()


# ---- Clock (Part 3, 29.1) and Hash (Part 3, 15.4) -----------------------------------------
@handles(CC.ReadClock)
def read_clock(tpm: TPM, inv: Invocation, p: c.Empty) -> c.ReadClock_Out:
    return c.ReadClock_Out(TPMS_TIME_INFO(tpm.time_ms(), tpm.clock_info()))


@handles(CC.Hash)
def hash_(tpm: TPM, inv: Invocation, p: c.Hash_In) -> c.Hash_Out:
    h = HASHES[p.hashAlg]
    digest = h.digest(p.data)
    # Part 3, 15.4: a ticket only for a real hierarchy and data that could not be
    # mistaken for a TPM-generated structure; otherwise the NULL ticket.
    generated = p.data[:4] == struct.pack(">I", TPM_GENERATED_VALUE)
    if p.hierarchy == RH.NULL or generated:
        ticket = TPMT_TK_HASHCHECK(ST.HASHCHECK, RH.NULL, b"")
    else:
        proof = tpm.hierarchy_proof(p.hierarchy)
        mac = hashcheck_hmac(proof, p.hashAlg, digest)  # as SequenceComplete's
        ticket = TPMT_TK_HASHCHECK(ST.HASHCHECK, p.hierarchy, mac)
    return c.Hash_Out(digest, ticket)


# ---- Sessions and contexts (Part 3, 11.1 and clause 28) ------------------------------------
@handles(CC.StartAuthSession)
def start_auth_session(tpm: TPM, inv: Invocation,
                       p: c.StartAuthSession_In) -> c.StartAuthSession_Out:
    tpm_key, bind = inv.handles
    # The checks, the salt and the sessionKey are in session_start.py.
    s = start_session(tpm, tpm_key, bind, p)
    s.policy.start_ms = tpm.time_ms()  # policy expirations count from here (Part 3, 23.3)
    return c.StartAuthSession_Out(s.handle, s.nonce_tpm)


@handles(CC.FlushContext)
def flush_context(tpm: TPM, inv: Invocation, p: c.FlushContext_In) -> c.Empty:
    if _objects.flush_object(tpm, p.flushHandle):
        return c.Empty()
    if not (is_session_handle(p.flushHandle)
            and tpm.reset_data.sessions.flush(p.flushHandle)):
        raise TpmError(with_parameter(RC.HANDLE, 1), "nothing to flush")
    return c.Empty()


@handles(CC.ContextSave)
def context_save(tpm: TPM, inv: Invocation, p: c.Empty) -> c.ContextSave_Out:
    handle = inv.handles[0]
    if handle >> 24 == HT.TRANSIENT:
        return c.ContextSave_Out(_objects.save_object(tpm, handle))
    table = tpm.reset_data.sessions
    s = table.find_loaded(handle)
    if s is None:  # pragma: no cover - the load-status check already refused it
        raise TpmError(with_handle(RC.HANDLE, 1))
    plaintext = marshal(SessionContext.of(s))
    sequence = table.save(s)
    blob = seal_context(tpm.reset_data.null_proof, sequence, handle, RH.NULL, plaintext)
    return c.ContextSave_Out(TPMS_CONTEXT(sequence, handle, RH.NULL, blob))


@handles(CC.ContextLoad)
def context_load(tpm: TPM, inv: Invocation, p: c.ContextLoad_In) -> c.ContextLoad_Out:
    ctx = p.context
    handle = ctx.savedHandle
    if handle >> 24 == HT.TRANSIENT:
        return c.ContextLoad_Out(_objects.load_object(tpm, ctx))
    if not is_session_handle(handle):
        raise TpmError(with_parameter(RC.VALUE, 1))
    try:
        split_context(ctx.contextBlob)
    except ValueError as e:  # reference ContextLoad returns the bare unmarshal code
        raise TpmError(int(e.args[0]), "malformed context blob") from None
    plaintext = open_context(tpm.hierarchy_proof(ctx.hierarchy), ctx.sequence, handle,
                             ctx.hierarchy, ctx.contextBlob)
    if plaintext is None:
        raise TpmError(with_parameter(RC.INTEGRITY, 1), "context integrity")
    try:
        session_ctx = decode_session_context(plaintext)
        expected_type = HT.HMAC_SESSION if session_ctx.kind == 0 else HT.POLICY_SESSION
        if handle >> 24 != expected_type:
            raise TpmError(RC.INTEGRITY)
        s = tpm.reset_data.sessions.reload(handle & 0xFFFFFF, ctx.sequence, session_ctx)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 1)) from None
    return c.ContextLoad_Out(s.handle)


from .nv.actions import NV_HANDLERS  # noqa: E402
from .objects import handlers as _objects  # noqa: E402  (registers the object commands)
from .session_start import start_session  # noqa: E402  (it needs the object store)

HANDLERS.update(NV_HANDLERS)

from .policy.handlers import POLICY_HANDLERS  # noqa: E402

HANDLERS.update(POLICY_HANDLERS)

from .attest.handlers import ATTEST_HANDLERS  # noqa: E402

HANDLERS.update(ATTEST_HANDLERS)

from .admin import handlers as _admin  # noqa: E402, F401  (registers the admin commands)
from .admin.hierarchy import on_startup as _admin_startup  # noqa: E402
from .keys import handlers as _keys  # noqa: E402, F401  (registers the key commands)

assert set(HANDLERS) == set(c.COMMANDS), "every declared command needs a handler"
