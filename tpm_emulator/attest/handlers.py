"""Attestation and audit command bodies (Part 3, clauses 18, 21 and 31.16), registered
in ``handlers.HANDLERS``. Each checks in the reference's order: the signing key
(TPM_RC_KEY on signHandle), the scheme (TPM_RC_SCHEME on inScheme), then what is
particular to the command; then it fills in a TPMS_ATTEST and signs it (``info.py``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..commands import Empty
from ..constants import CC, RC, RH, ST, TPM_ALG
from ..crypto import HASHES, equal
from ..errors import TpmError, with_handle, with_parameter
from ..keys.signing import sign
from ..nv.public import MAX_NV_BUFFER_SIZE
from ..nv.store import check_read_access
from ..objects import store
from ..structures import TPML_PCR_SELECTION, TPMS_PCR_SELECTION, TPMS_TIME_INFO
from . import commands as ac
from . import x509
from .info import (
    attestation,
    firmware_version,
    is_anonymous,
    sign_attestation,
    signing_key,
    signing_scheme,
)
from .structures import (
    ST_ATTEST_NV_DIGEST,
    TPMS_CERTIFY_INFO,
    TPMS_COMMAND_AUDIT_INFO,
    TPMS_CREATION_INFO,
    TPMS_NV_CERTIFY_INFO,
    TPMS_NV_DIGEST_CERTIFY_INFO,
    TPMS_QUOTE_INFO,
    TPMS_SESSION_AUDIT_INFO,
    TPMS_TIME_ATTEST_INFO,
)

if TYPE_CHECKING:
    from ..handlers import Invocation
    from ..tpm import TPM

ATTEST_HANDLERS: dict[int, Callable[[TPM, Invocation, Any], Any]] = {}


def _handles(cc: CC) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        ATTEST_HANDLERS[cc] = fn
        return fn

    return register


# ---- 18.4 Quote ------------------------------------------------------------------------
@_handles(CC.Quote)
def quote(tpm: TPM, inv: Invocation, p: ac.Quote_In) -> ac.Attest_Out:
    obj = signing_key(tpm, inv.handles[0], 1)
    scheme = signing_scheme(obj, p.inScheme, 2)
    # The PCR digest uses the scheme's hash, so an unsigned quote (whose scheme is
    # always NULL) has none to use: libtpms refuses it the same way.
    if scheme.hashAlg not in HASHES:
        raise TpmError(with_parameter(RC.SCHEME, 2), "a quote needs a scheme hash")
    selection, values = _selected_pcrs(tpm, p.PCRselect)
    info = TPMS_QUOTE_INFO(selection, HASHES[scheme.hashAlg].digest(*values))
    attest = attestation(tpm, obj, scheme, p.qualifyingData, ST.ATTEST_QUOTE, info)
    return ac.Attest_Out(*sign_attestation(tpm, obj, scheme, attest))


def _selected_pcrs(tpm: TPM, sel: TPML_PCR_SELECTION) -> tuple[TPML_PCR_SELECTION, list[bytes]]:
    """The selected PCR values in selection order, and the selection with the bits of
    PCRs that do not exist cleared (the reference's PCRComputeCurrentDigest / FilterPcr;
    unlike PCR_Read there is no limit of eight); unallocated PCRs do not exist."""
    out, values = tpm.reset_data.pcrs.select(tuple((s.hash, s.pcrSelect)
                                                   for s in sel.pcrSelections))
    return TPML_PCR_SELECTION(tuple(TPMS_PCR_SELECTION(a, b) for a, b in out)), values


# ---- 18.2 Certify ----------------------------------------------------------------------
@_handles(CC.Certify)
def certify(tpm: TPM, inv: Invocation, p: ac.Attest_In) -> ac.Attest_Out:
    certified = store.get(tpm, inv.handles[0])
    obj = signing_key(tpm, inv.handles[1], 2)
    scheme = signing_scheme(obj, p.inScheme, 2)
    # An anonymous signature must not link the object to its parents either.
    qualified = b"" if is_anonymous(scheme) else certified.qualified_name
    info = TPMS_CERTIFY_INFO(certified.name, qualified)
    attest = attestation(tpm, obj, scheme, p.qualifyingData, ST.ATTEST_CERTIFY, info)
    return ac.Attest_Out(*sign_attestation(tpm, obj, scheme, attest))


# ---- 18.8 CertifyX509 -------------------------------------------------------------------
@_handles(CC.CertifyX509)
def certify_x509(tpm: TPM, inv: Invocation, p: ac.CertifyX509_In) -> ac.CertifyX509_Out:
    """Checks in libtpms' order. Its response-code table numbers signHandle as handle 1
    and objectHandle as handle 2, the reverse of their places in the command; codes
    are numbered that way here too, so a TSS sees what libtpms answers."""
    certified = store.get(tpm, inv.handles[0])
    if p.reserved:
        raise TpmError(with_parameter(RC.SIZE, 1), "reserved must be empty")
    signer = signing_key(tpm, inv.handles[1], 1)
    assert signer is not None  # TPMI_DH_OBJECT: signHandle is never TPM_RH_NULL
    scheme = signing_scheme(signer, p.inScheme, 2)
    subject_key = x509.subject_public_key_info(certified.public)
    if subject_key is None:
        raise TpmError(with_handle(RC.ASYMMETRIC, 2), "no SubjectPublicKeyInfo for it")
    try:
        partial = x509.split_partial(p.partialCertificate)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 3), str(e)) from None
    signature_alg = partial.signature or x509.signature_algorithm(signer.public, scheme)
    if not signature_alg:
        raise TpmError(with_handle(RC.SCHEME, 1), "no AlgorithmIdentifier for the scheme")
    try:
        x509.check_extensions(certified.public, partial.extensions)
    except TpmError as e:
        numbered = with_handle(e.rc, 2) if e.rc == RC.ATTRIBUTES else with_parameter(e.rc, 3)
        raise TpmError(numbered, str(e)) from None
    added, tbs = x509.complete(partial, subject_key, signature_alg, signer.public.nameAlg,
                               signer.name, certified.name)
    digest = HASHES[scheme.hashAlg].digest(tbs)
    return ac.CertifyX509_Out(added, digest, sign(signer, scheme, digest))


# ---- 18.3 CertifyCreation --------------------------------------------------------------
@_handles(CC.CertifyCreation)
def certify_creation(tpm: TPM, inv: Invocation, p: ac.CertifyCreation_In) -> ac.Attest_Out:
    obj = signing_key(tpm, inv.handles[0], 1)
    scheme = signing_scheme(obj, p.inScheme, 3)
    certified = store.get(tpm, inv.handles[1])
    # The creation ticket proves this TPM made the object with that creation data: it
    # is the HMAC, under the hierarchy's proof, the object commands issue (12.1, 24.1).
    # An object without a nameAlg (a hash or HMAC sequence) never got one.
    ticket = p.creationTicket
    h = HASHES.get(certified.public.nameAlg)
    proof = tpm.hierarchy_proof(ticket.hierarchy)
    expect = h.hmac(proof, struct.pack(">H", ST.CREATION), certified.name,
                    p.creationHash) if h is not None else b""
    if not expect or not equal(expect, ticket.digest):
        raise TpmError(with_parameter(RC.TICKET, 4), "creation ticket does not match")
    info = TPMS_CREATION_INFO(certified.name, p.creationHash)
    attest = attestation(tpm, obj, scheme, p.qualifyingData, ST.ATTEST_CREATION, info)
    return ac.Attest_Out(*sign_attestation(tpm, obj, scheme, attest))


# ---- 18.7 GetTime ----------------------------------------------------------------------
@_handles(CC.GetTime)
def get_time(tpm: TPM, inv: Invocation, p: ac.Attest_In) -> ac.Attest_Out:
    obj = signing_key(tpm, inv.handles[1], 2)
    scheme = signing_scheme(obj, p.inScheme, 2)
    # The attested copy of Clock and the firmware version is in the clear: the
    # endorsement hierarchy's authorization already allowed revealing it.
    info = TPMS_TIME_ATTEST_INFO(TPMS_TIME_INFO(tpm.time_ms(), tpm.clock_info()),
                                 firmware_version(tpm))
    attest = attestation(tpm, obj, scheme, p.qualifyingData, ST.ATTEST_TIME, info)
    return ac.Attest_Out(*sign_attestation(tpm, obj, scheme, attest))


# ---- 31.16 NV_Certify ------------------------------------------------------------------
@_handles(CC.NV_Certify)
def nv_certify(tpm: TPM, inv: Invocation, p: ac.NV_Certify_In) -> ac.Attest_Out:
    sign_handle, auth_handle, nv_handle = inv.handles
    obj = signing_key(tpm, sign_handle, 1)
    scheme = signing_scheme(obj, p.inScheme, 2)
    nv = tpm.perm.nv
    index = nv.get(nv_handle)
    check_read_access(auth_handle, index)
    if p.size + p.offset > index.public.dataSize:
        raise TpmError(RC.NV_RANGE, "selection beyond the index")
    if p.size > MAX_NV_BUFFER_SIZE:
        raise TpmError(with_parameter(RC.VALUE, 3))
    name = nv.public(index).name()
    info: TPMS_NV_CERTIFY_INFO | TPMS_NV_DIGEST_CERTIFY_INFO
    if p.size or p.offset:
        st: int = ST.ATTEST_NV
        info = TPMS_NV_CERTIFY_INFO(name, p.offset,
                                    bytes(index.data[p.offset:p.offset + p.size]))
    else:  # size and offset zero: certify a digest of all the data (Part 3, 31.16.1)
        st = ST_ATTEST_NV_DIGEST
        digest = HASHES[scheme.hashAlg].digest(bytes(index.data)) \
            if scheme.hashAlg in HASHES else b""
        info = TPMS_NV_DIGEST_CERTIFY_INFO(name, digest)
    attest = attestation(tpm, obj, scheme, p.qualifyingData, st, info)
    return ac.Attest_Out(*sign_attestation(tpm, obj, scheme, attest))


# ---- 18.5 GetSessionAuditDigest ------------------------------------------------------------
@_handles(CC.GetSessionAuditDigest)
def get_session_audit_digest(tpm: TPM, inv: Invocation, p: ac.Attest_In) -> ac.Attest_Out:
    _, sign_handle, session_handle = inv.handles
    obj = signing_key(tpm, sign_handle, 2)
    scheme = signing_scheme(obj, p.inScheme, 2)
    table = tpm.reset_data.sessions
    session = table.find_loaded(session_handle)
    if session is None or not session.audit_digest:
        raise TpmError(with_handle(RC.TYPE, 3), "not an audit session")
    info = TPMS_SESSION_AUDIT_INFO(int(table.is_exclusive_audit(session)),
                                   session.audit_digest)
    attest = attestation(tpm, obj, scheme, p.qualifyingData, ST.ATTEST_SESSION_AUDIT, info)
    return ac.Attest_Out(*sign_attestation(tpm, obj, scheme, attest))


# ---- 18.6 GetCommandAuditDigest ------------------------------------------------------------
@_handles(CC.GetCommandAuditDigest)
def get_command_audit_digest(tpm: TPM, inv: Invocation, p: ac.Attest_In) -> ac.Attest_Out:
    sign_handle = inv.handles[1]
    obj = signing_key(tpm, sign_handle, 2)
    scheme = signing_scheme(obj, p.inScheme, 2)
    audit = tpm.perm.command_audit
    info = TPMS_COMMAND_AUDIT_INFO(audit.counter, audit.hash_alg,
                                   audit.current_digest(tpm.reset_data.null_proof),
                                   audit.command_digest())
    attest = attestation(tpm, obj, scheme, p.qualifyingData, ST.ATTEST_COMMAND_AUDIT, info)
    out = ac.Attest_Out(*sign_attestation(tpm, obj, scheme, attest))
    # A signed report closes the audit run: the next audited command starts a new
    # digest and counts up (Part 3, 18.6.1). An unsigned one changes nothing.
    if sign_handle != RH.NULL:
        audit.digest = b""
    return out


# ---- 21.2 SetCommandCodeAuditStatus --------------------------------------------------------
@_handles(CC.SetCommandCodeAuditStatus)
def set_command_code_audit_status(tpm: TPM, inv: Invocation,
                                  p: ac.SetCommandCodeAuditStatus_In) -> Empty:
    from ..commands import COMMANDS

    audit = tpm.perm.command_audit
    if p.auditAlg != TPM_ALG.NULL and p.auditAlg != audit.hash_alg:
        # Changing the hash and the list at once is refused (Part 3, 21.2.1).
        if p.setList or p.clearList:
            raise TpmError(with_parameter(RC.VALUE, 1), "hash and list change together")
        audit.change_hash(p.auditAlg)
        return Empty()
    # Codes of commands this TPM does not implement are ignored, not refused.
    for cc in p.setList:
        if cc in COMMANDS:
            audit.set(cc)
    for cc in p.clearList:
        if cc in COMMANDS:
            audit.clear(cc)
    return Empty()
