"""Command bodies of Part 3, clause 23 (Enhanced Authorization), registered in
``handlers.HANDLERS``. Each assertion extends the session's policyDigest
(PolicyUpdate, Part 1, 19.7.x / Part 3, 23.2.x) and, outside a trial session, either
checks its condition now or records it in the session's PolicyContext for the
authorization checks (``enforce.py``). A trial session only computes the digest.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..codec import Reader, marshal, unmarshal_from
from ..commands import Empty
from ..constants import CC, HT, RC, RH, SE, ST, TPM_ALG
from ..crypto import HASHES, equal
from ..errors import TpmError, with_handle, with_parameter
from ..keys.signing import TPMT_SIGNATURE, verify
from ..nv.public import TPM_NT, TPMA_NV
from ..nv.store import check_read_access
from ..objects import store
from ..objects.public import TPMA_OBJECT
from ..objects.store import LoadedObject
from ..structures import TPML_PCR_SELECTION, TPMS_PCR_SELECTION, TPMS_TIME_INFO, TPMT_HA
from . import commands as pc
from .context import U1
from .tickets import auth_ticket, decode_timeout, encode_timeout, null_auth_ticket, verified_ticket

if TYPE_CHECKING:
    from ..handlers import Invocation
    from ..session_table import Session
    from ..tpm import TPM

POLICY_HANDLERS: dict[int, Callable[[TPM, Invocation, Any], Any]] = {}

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def _handles(cc: CC) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        POLICY_HANDLERS[cc] = fn
        return fn

    return register


# ---- the policy digest ------------------------------------------------------------------
def _session(tpm: TPM, handle: int) -> Session:
    s = tpm.reset_data.sessions.find_loaded(handle)
    if s is None:  # pragma: no cover - the handle-area load check refused it
        raise TpmError(RC.REFERENCE_H0)
    return s


def _trial(s: Session) -> bool:
    return s.kind == SE.TRIAL


def _extend(s: Session, cc: int, *parts: bytes) -> None:
    """policyDigest_new := H(policyDigest_old || commandCode || parts) (Part 1, 19.7.x)."""
    s.policy_digest = s.hash.digest(s.policy_digest, _U32.pack(cc), *parts)


def _context_update(s: Session, cc: int, name: bytes, ref: bytes | None, cp_hash: bytes = b"",
                    timeout_ms: int = 0) -> None:
    """PolicyUpdate(commandCode, arg2, arg3) (Part 3, 23.2.x): H(H(old || cc || arg2)
    || arg3), the second step only when the command has a policyRef. Also records a
    cpHashA and the earliest expiry."""
    _extend(s, cc, name)
    if ref is not None:
        s.policy_digest = s.hash.digest(s.policy_digest, ref)
    if cp_hash:
        s.policy.u1, s.policy.u1_kind = cp_hash, U1.CP_HASH
    if timeout_ms and (not s.policy.timeout_ms or timeout_ms < s.policy.timeout_ms):
        s.policy.timeout_ms = timeout_ms


def _reset(tpm: TPM, s: Session) -> None:
    s.policy_digest = bytes(s.hash.size)
    s.policy = s.policy.restarted(tpm.time_ms())


# ---- PolicySigned / PolicySecret / PolicyTicket (23.3 - 23.5) -----------------------------
def _auth_timeout(tpm: TPM, s: Session, expiration: int, nonce_tpm: bytes) -> int:
    """When the authorization expires, in TPM Time (ms): |expiration| seconds after the
    session started when bound to its nonceTPM, else |expiration| seconds of TPM Time
    (Part 3, 23.3.1). Zero means "never"."""
    if expiration == 0:
        return 0
    seconds = abs(expiration) * 1000
    if nonce_tpm:
        return seconds + s.policy.start_ms
    return seconds + tpm.time_ms() % 1000


def _parameter_checks(tpm: TPM, s: Session, timeout_ms: int, cp_hash: bytes,
                      nonce_tpm: bytes | None, nonce_n: int, cp_n: int, expiry_n: int) -> None:
    """The common checks of PolicySigned, PolicySecret and PolicyTicket."""
    if nonce_tpm and not equal(nonce_tpm, s.nonce_tpm):
        raise TpmError(with_parameter(RC.NONCE, nonce_n), "nonceTPM is not the session's")
    if timeout_ms and timeout_ms < tpm.time_ms():
        raise TpmError(with_parameter(RC.EXPIRED, expiry_n), "authorization expired")
    if cp_hash:
        if len(cp_hash) != s.hash.size:
            raise TpmError(with_parameter(RC.SIZE, cp_n), "cpHashA size")
        p = s.policy
        if p.u1_kind != U1.NONE and (p.u1_kind != U1.CP_HASH or not equal(p.u1, cp_hash)):
            raise TpmError(RC.CPHASH, "a different cpHash is already set")


def _entity_hierarchy(tpm: TPM, handle: int) -> int:
    """The hierarchy whose proof keys a ticket for ``handle`` (EntityGetHierarchy)."""
    if store.is_object_handle(handle):
        return store.get(tpm, handle).hierarchy
    if handle >> 24 == HT.NV_INDEX:
        index = tpm.perm.nv.get(handle)
        return RH.PLATFORM if index.has(TPMA_NV.PLATFORMCREATE) else RH.OWNER
    if handle in (RH.ENDORSEMENT, RH.PLATFORM):
        return handle
    return RH.OWNER


def _auth_out(tpm: TPM, s: Session, tag: int, expiration: int, nonce_tpm: bytes, hierarchy: int,
              timeout_ms: int, cp_hash: bytes, ref: bytes, name: bytes) -> pc.PolicyAuth_Out:
    """A ticket when the caller asked for one (expiration < 0), else the NULL ticket."""
    if expiration < 0 and not _trial(s):
        expires_on_reset = not nonce_tpm
        ticket = auth_ticket(tpm, tag, hierarchy, timeout_ms, expires_on_reset, cp_hash,
                             ref, name)
        return pc.PolicyAuth_Out(encode_timeout(timeout_ms, expires_on_reset), ticket)
    return pc.PolicyAuth_Out(b"", null_auth_ticket(tag))


def _check_signature(key: LoadedObject, digest: bytes, sig: TPMT_SIGNATURE) -> None:
    """PolicySigned's signature check (the reference's CryptValidateSignature):
    TPM_RC_ATTRIBUTES for a key that cannot sign, else TPM_RC_SIGNATURE (or the
    scheme error ``verify`` raises), numbered as parameter 5."""
    if not key.public.has(TPMA_OBJECT.sign):
        raise TpmError(with_parameter(RC.ATTRIBUTES, 5), "not a signing key")
    try:
        good = verify(key.public, digest, sig, key.sensitive)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 5), str(e)) from None
    if not good:
        raise TpmError(with_parameter(RC.SIGNATURE, 5), "signature does not verify")


@_handles(CC.PolicySigned)
def policy_signed(tpm: TPM, inv: Invocation, p: pc.PolicySigned_In) -> pc.PolicyAuth_Out:
    auth_object, handle = inv.handles
    s = _session(tpm, handle)
    key = store.get(tpm, auth_object)
    expiration, timeout = pc.int32(p.expiration), 0
    if p.auth.sigAlg == TPM_ALG.NULL:  # TPMT_SIGNATURE here has no NULL member
        raise TpmError(with_parameter(RC.SCHEME, 5), "a NULL signature")
    if not _trial(s):
        timeout = _auth_timeout(tpm, s, expiration, p.nonceTPM)
        _parameter_checks(tpm, s, timeout, p.cpHashA, p.nonceTPM, 1, 2, 4)
        # aHash := H_sig(nonceTPM || expiration || cpHashA || policyRef) (Part 3, 23.3.1)
        a_hash = HASHES[p.auth.hashAlg].digest(p.nonceTPM, _U32.pack(p.expiration),
                                               p.cpHashA, p.policyRef)
        _check_signature(key, a_hash, p.auth)
    _context_update(s, CC.PolicySigned, key.name, p.policyRef, p.cpHashA, timeout)
    return _auth_out(tpm, s, ST.AUTH_SIGNED, expiration, p.nonceTPM, key.hierarchy, timeout,
                     p.cpHashA, p.policyRef, key.name)


@_handles(CC.PolicySecret)
def policy_secret(tpm: TPM, inv: Invocation, p: pc.PolicySecret_In) -> pc.PolicyAuth_Out:
    """authHandle's authorization was already checked by the command's session."""
    auth_handle, handle = inv.handles
    s = _session(tpm, handle)
    name = tpm.entity(auth_handle).name
    expiration, timeout = pc.int32(p.expiration), 0
    if not _trial(s):
        timeout = _auth_timeout(tpm, s, expiration, p.nonceTPM)
        _parameter_checks(tpm, s, timeout, p.cpHashA, p.nonceTPM, 1, 2, 4)
    _context_update(s, CC.PolicySecret, name, p.policyRef, p.cpHashA, timeout)
    # No ticket for a PIN Pass index (the reference and libtpms): each use of its PIN
    # must be counted, and a ticket would stand in for the PIN uncounted (nv/pin.py).
    if auth_handle >> 24 == HT.NV_INDEX and tpm.perm.nv.get(auth_handle).public.nt == (
            TPM_NT.PIN_PASS):
        expiration = 0
    return _auth_out(tpm, s, ST.AUTH_SECRET, expiration, p.nonceTPM,
                     _entity_hierarchy(tpm, auth_handle), timeout, p.cpHashA, p.policyRef, name)


@_handles(CC.PolicyTicket)
def policy_ticket(tpm: TPM, inv: Invocation, p: pc.PolicyTicket_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    if _trial(s):  # a ticket stands in for an authorization a trial never checks
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "PolicyTicket in a trial session")
    decoded = decode_timeout(p.timeout)
    if decoded is None:
        raise TpmError(with_parameter(RC.SIZE, 1), "not a timeout this TPM made")
    timeout, expires_on_reset = decoded
    _parameter_checks(tpm, s, timeout, p.cpHashA, None, 0, 2, 1)
    expect = auth_ticket(tpm, p.ticket.tag, p.ticket.hierarchy, timeout, expires_on_reset,
                         p.cpHashA, p.policyRef, p.authName)
    if not equal(expect.digest, p.ticket.digest):
        raise TpmError(with_parameter(RC.TICKET, 5), "ticket does not verify")
    cc = CC.PolicySigned if p.ticket.tag == ST.AUTH_SIGNED else CC.PolicySecret
    _context_update(s, cc, p.authName, p.policyRef, p.cpHashA, timeout)
    return Empty()


# ---- PolicyOR / PolicyPCR / PolicyLocality (23.6 - 23.8) -----------------------------------
@_handles(CC.PolicyOR)
def policy_or(tpm: TPM, inv: Invocation, p: pc.PolicyOR_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    digests = p.pHashList.digests
    if len(digests) < 2:
        raise TpmError(with_parameter(RC.SIZE, 1), "PolicyOR needs two digests or more")
    if not _trial(s) and not any(equal(d, s.policy_digest) for d in digests):
        raise TpmError(with_parameter(RC.VALUE, 1), "policyDigest is not in the list")
    # policyDigest_new := H(0...0 || TPM_CC_PolicyOR || digests) (Part 3, 23.6.1)
    s.policy_digest = bytes(s.hash.size)
    _extend(s, CC.PolicyOR, *digests)
    return Empty()


@_handles(CC.PolicyPCR)
def policy_pcr(tpm: TPM, inv: Invocation, p: pc.PolicyPCR_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    pcrs = tpm.reset_data.pcrs
    # The reference filters the selection in place (FilterPcr): PCRs that are not
    # allocated are left out of the digest and of the selection the policy records.
    kept, values = pcrs.select(tuple((sel.hash, sel.pcrSelect) for sel in p.pcrs.pcrSelections))
    selection = TPML_PCR_SELECTION(tuple(TPMS_PCR_SELECTION(a, b) for a, b in kept))
    digest = s.hash.digest(*values)
    if not _trial(s):
        if s.policy.pcr_counter is not None and s.policy.pcr_counter != pcrs.update_counter:
            raise TpmError(RC.PCR_CHANGED, "PCRs changed since the last PolicyPCR")
        if p.pcrDigest and not equal(p.pcrDigest, digest):
            raise TpmError(with_parameter(RC.VALUE, 1), "PCR values differ from pcrDigest")
        s.policy.pcr_counter = pcrs.update_counter
    elif p.pcrDigest:
        digest = p.pcrDigest
    _extend(s, CC.PolicyPCR, marshal(selection), digest)
    return Empty()


@_handles(CC.PolicyLocality)
def policy_locality(tpm: TPM, inv: Invocation, p: pc.PolicyLocality_In) -> Empty:
    """Part 3, 23.8: localities 0-4 narrow by intersection; an extended locality must
    stay the same; mixing the two kinds, or narrowing to nothing, is TPM_RC_RANGE."""
    s = _session(tpm, inv.handles[0])
    prev, new = s.policy.locality, p.locality
    out_of_range = TpmError(with_parameter(RC.RANGE, 1), "locality")
    if prev and (prev < 32) != (new < 32):
        raise out_of_range
    if new < 32:
        setting = (prev or 0x1F) & new
        if not setting:
            raise out_of_range
    else:
        if prev and prev != new:
            raise out_of_range
        setting = new
    _extend(s, CC.PolicyLocality, bytes([new]))
    s.policy.locality = setting
    return Empty()


# ---- PolicyNV / PolicyCounterTimer (23.9, 23.10) ----------------------------------------
def _condition(operation: int, a: bytes, b: bytes) -> bool:
    """PolicySptCheckCondition: compare operand A (TPM data) with operand B, both
    big-endian of B's length."""
    ua, ub = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    sa, sb = int.from_bytes(a, "big", signed=True), int.from_bytes(b, "big", signed=True)
    eo = pc.TPM_EO
    results = {
        eo.EQ: a == b, eo.NEQ: a != b,
        eo.SIGNED_GT: sa > sb, eo.UNSIGNED_GT: ua > ub,
        eo.SIGNED_LT: sa < sb, eo.UNSIGNED_LT: ua < ub,
        eo.SIGNED_GE: sa >= sb, eo.UNSIGNED_GE: ua >= ub,
        eo.SIGNED_LE: sa <= sb, eo.UNSIGNED_LE: ua <= ub,
        eo.BITSET: ua & ub == ub, eo.BITCLEAR: ua & ub == 0,
    }
    return results[operation]


def _args_hash(s: Session, p: pc.PolicyNV_In) -> bytes:
    """args := H(operandB.buffer || offset || operation) (Part 3, 23.9.1)."""
    return s.hash.digest(p.operandB, struct.pack(">HH", p.offset, p.operation))


@_handles(CC.PolicyNV)
def policy_nv(tpm: TPM, inv: Invocation, p: pc.PolicyNV_In) -> Empty:
    auth_handle, nv_handle, handle = inv.handles
    s = _session(tpm, handle)
    if not _trial(s):
        index = tpm.perm.nv.get(nv_handle)
        check_read_access(auth_handle, index)
        size = index.public.dataSize
        if p.offset > size:
            raise TpmError(with_parameter(RC.VALUE, 2), "offset beyond the index")
        if size - p.offset < len(p.operandB):
            raise TpmError(with_parameter(RC.SIZE, 1), "operandB beyond the index")
        data = bytes(index.data[p.offset : p.offset + len(p.operandB)])
        if not _condition(p.operation, data, p.operandB):
            raise TpmError(RC.POLICY, "NV contents do not satisfy the condition")
    _extend(s, CC.PolicyNV, _args_hash(s, p), tpm.entity(nv_handle).name)
    return Empty()


@_handles(CC.PolicyCounterTimer)
def policy_counter_timer(tpm: TPM, inv: Invocation, p: pc.PolicyNV_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    # The range checks come before the trial test: a trial session gets them too (as
    # libtpms does); an offset past TPMS_TIME_INFO is the offset's fault, an operand
    # running past it the pair's (a bare TPM_RC_RANGE).
    info = marshal(TPMS_TIME_INFO(tpm.time_ms(), tpm.clock_info()))
    if p.offset > len(info):
        raise TpmError(with_parameter(RC.VALUE, 2), "offset beyond TPMS_TIME_INFO")
    if p.offset + len(p.operandB) > len(info):
        raise TpmError(RC.RANGE, "beyond TPMS_TIME_INFO")
    if not _trial(s):
        data = info[p.offset : p.offset + len(p.operandB)]
        if not _condition(p.operation, data, p.operandB):
            raise TpmError(RC.POLICY, "time or clock does not satisfy the condition")
    _extend(s, CC.PolicyCounterTimer, _args_hash(s, p))
    return Empty()


# ---- the simple assertions (23.11 - 23.21) ------------------------------------------------
@_handles(CC.PolicyCommandCode)
def policy_command_code(tpm: TPM, inv: Invocation, p: pc.PolicyCommandCode_In) -> Empty:
    from ..commands import COMMANDS

    s = _session(tpm, inv.handles[0])
    if s.policy.command_code and s.policy.command_code != p.code:
        raise TpmError(with_parameter(RC.VALUE, 1), "another command code is set")
    if p.code not in COMMANDS:
        raise TpmError(with_parameter(RC.POLICY_CC, 1), "command not implemented")
    _extend(s, CC.PolicyCommandCode, _U32.pack(p.code))
    s.policy.command_code = p.code
    return Empty()


@_handles(CC.PolicyPhysicalPresence)
def policy_physical_presence(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    s = _session(tpm, inv.handles[0])
    _extend(s, CC.PolicyPhysicalPresence)
    s.policy.pp_required = True
    return Empty()


def _digest_sized(s: Session, value: bytes) -> None:
    if len(value) != s.hash.size:
        raise TpmError(with_parameter(RC.SIZE, 1), "not a digest of the session's hash")


@_handles(CC.PolicyCpHash)
def policy_cp_hash(tpm: TPM, inv: Invocation, p: pc.PolicyCpHash_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    _digest_sized(s, p.cpHashA)
    if s.policy.u1_kind != U1.NONE and (s.policy.u1_kind != U1.CP_HASH
                                        or not equal(s.policy.u1, p.cpHashA)):
        raise TpmError(RC.CPHASH, "a different cpHash or nameHash is set")
    _extend(s, CC.PolicyCpHash, p.cpHashA)
    s.policy.u1, s.policy.u1_kind = p.cpHashA, U1.CP_HASH
    return Empty()


@_handles(CC.PolicyNameHash)
def policy_name_hash(tpm: TPM, inv: Invocation, p: pc.PolicyNameHash_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    _digest_sized(s, p.nameHash)
    if s.policy.u1_kind != U1.NONE:
        raise TpmError(RC.CPHASH, "cpHash, nameHash or template already set")
    _extend(s, CC.PolicyNameHash, p.nameHash)
    s.policy.u1, s.policy.u1_kind = p.nameHash, U1.NAME_HASH
    return Empty()


@_handles(CC.PolicyDuplicationSelect)
def policy_duplication_select(tpm: TPM, inv: Invocation,
                              p: pc.PolicyDuplicationSelect_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    if s.policy.u1_kind != U1.NONE:
        raise TpmError(RC.CPHASH, "cpHash, nameHash or template already set")
    if s.policy.command_code:
        raise TpmError(RC.COMMAND_CODE, "a command code is already set")
    # nameHash := H(objectName || newParentName): TPM2_Duplicate's two handles.
    s.policy.u1 = s.hash.digest(p.objectName, p.newParentName)
    s.policy.u1_kind = U1.NAME_HASH
    _extend(s, CC.PolicyDuplicationSelect, p.objectName if p.includeObject else b"",
            p.newParentName, bytes([p.includeObject]))
    s.policy.command_code = CC.Duplicate
    return Empty()


@_handles(CC.PolicyAuthorize)
def policy_authorize(tpm: TPM, inv: Invocation, p: pc.PolicyAuthorize_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    if not _trial(s):
        name = p.keySign
        alg = _U16.unpack(name[:2])[0] if len(name) >= 2 else 0
        if alg not in HASHES:
            raise TpmError(with_parameter(RC.HASH, 3), "keySign is not a Name")
        if len(name) - 2 != HASHES[alg].size:
            raise TpmError(with_parameter(RC.SIZE, 3), "keySign is not a Name")
        if not equal(p.approvedPolicy, s.policy_digest):
            raise TpmError(with_parameter(RC.VALUE, 1), "approvedPolicy is not policyDigest")
        # aHash := H_keyNameAlg(approvedPolicy || policyRef), what the authority signed
        a_hash = HASHES[alg].digest(p.approvedPolicy, p.policyRef)
        expect = verified_ticket(tpm, p.checkTicket.hierarchy, a_hash, name)
        if not equal(expect, p.checkTicket.digest):
            raise TpmError(with_parameter(RC.VALUE, 4), "checkTicket does not verify")
    s.policy_digest = bytes(s.hash.size)
    _context_update(s, CC.PolicyAuthorize, p.keySign, p.policyRef)
    return Empty()


@_handles(CC.PolicyAuthValue)
def policy_auth_value(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    s = _session(tpm, inv.handles[0])
    _extend(s, CC.PolicyAuthValue)
    s.policy.auth_value_needed, s.policy.password_needed = True, False
    return Empty()


@_handles(CC.PolicyPassword)
def policy_password(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    """Part 3, 23.18: the digest is PolicyAuthValue's, so one policy serves both."""
    s = _session(tpm, inv.handles[0])
    _extend(s, CC.PolicyAuthValue)
    s.policy.password_needed, s.policy.auth_value_needed = True, False
    return Empty()


@_handles(CC.PolicyGetDigest)
def policy_get_digest(tpm: TPM, inv: Invocation, p: Empty) -> pc.PolicyGetDigest_Out:
    return pc.PolicyGetDigest_Out(_session(tpm, inv.handles[0]).policy_digest)


@_handles(CC.PolicyNvWritten)
def policy_nv_written(tpm: TPM, inv: Invocation, p: pc.PolicyNvWritten_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    wanted = bool(p.writtenSet)
    if s.policy.nv_written is not None and s.policy.nv_written != wanted:
        raise TpmError(with_parameter(RC.VALUE, 1), "conflicting PolicyNvWritten")
    s.policy.nv_written = wanted
    _extend(s, CC.PolicyNvWritten, bytes([p.writtenSet]))
    return Empty()


@_handles(CC.PolicyTemplate)
def policy_template(tpm: TPM, inv: Invocation, p: pc.PolicyTemplate_In) -> Empty:
    s = _session(tpm, inv.handles[0])
    if s.policy.u1_kind == U1.TEMPLATE:
        if not equal(s.policy.u1, p.templateHash):
            raise TpmError(with_parameter(RC.VALUE, 1), "another template is set")
    elif s.policy.u1_kind != U1.NONE:
        raise TpmError(RC.CPHASH, "cpHash or nameHash already set")
    _digest_sized(s, p.templateHash)
    _extend(s, CC.PolicyTemplate, p.templateHash)
    s.policy.u1, s.policy.u1_kind = p.templateHash, U1.TEMPLATE
    return Empty()


@_handles(CC.PolicyAuthorizeNV)
def policy_authorize_nv(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    auth_handle, nv_handle, handle = inv.handles
    s = _session(tpm, handle)
    if not _trial(s):
        index = tpm.perm.nv.get(nv_handle)
        check_read_access(auth_handle, index)
        if index.public.nt != TPM_NT.ORDINARY:
            raise TpmError(with_handle(RC.ATTRIBUTES, 2), "not an ordinary index")
        # The index holds a TPMT_HA: the policy it approves.
        data = bytes(index.data[: 2 + max(h.size for h in HASHES.values())])
        approved = unmarshal_from(TPMT_HA, Reader(data))
        if approved.hashAlg != s.auth_hash:
            raise TpmError(RC.HASH, "the index approves a policy of another hash")
        if not equal(approved.digest, s.policy_digest):
            raise TpmError(RC.VALUE, "policyDigest is not the approved policy")
    s.policy_digest = bytes(s.hash.size)
    _context_update(s, CC.PolicyAuthorizeNV, tpm.entity(nv_handle).name, None)
    return Empty()


@_handles(CC.PolicyRestart)
def policy_restart(tpm: TPM, inv: Invocation, p: Empty) -> Empty:
    _reset(tpm, _session(tpm, inv.handles[0]))
    return Empty()
