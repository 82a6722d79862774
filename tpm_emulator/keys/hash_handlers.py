"""HMAC and hash sequence command bodies (Part 3, 15.5 and clause 17): TPM2_HMAC and the
sequences started by TPM2_HMAC_Start/TPM2_HashSequenceStart, fed by
TPM2_SequenceUpdate and finished by TPM2_SequenceComplete/TPM2_EventSequenceComplete.
The sequence objects themselves are in ``sequence``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import CC, RC, RH, ST, TPM_ALG
from ..crypto import HASHES
from ..errors import TpmError, with_handle, with_parameter
from ..handlers import Invocation, handles
from ..objects import store
from ..objects.public import TPMA_OBJECT, TPMS_KEYEDHASH_PARMS
from ..objects.store import LoadedObject
from ..pcr import may_extend
from ..structures import TPML_DIGEST_VALUES, TPMT_HA, TPMT_TK_HASHCHECK
from . import commands as kc
from .sequence import Kind, SequenceObject, event_sequence, hash_sequence, hmac_sequence
from .signing import hashcheck_digest

if TYPE_CHECKING:
    from ..tpm import TPM

A = TPMA_OBJECT
NULL = TPM_ALG.NULL


def _object(tpm: TPM, inv: Invocation, n: int = 0) -> LoadedObject:
    return store.get(tpm, inv.handles[n])


# ---- HMAC and sequences (Part 3, 15.5 and clause 17) --------------------------------------
def _hmac_key(obj: LoadedObject, hash_alg: int) -> tuple[int, bytes]:
    """The hash and key of an HMAC (TPM2_HMAC, TPM2_HMAC_Start): an unrestricted
    keyedHash signing key; the key's own scheme hash, unless the command names another
    (then TPM_RC_VALUE on hashAlg, as with no hash at all)."""
    pub = obj.public
    if pub.type != TPM_ALG.KEYEDHASH or isinstance(obj, SequenceObject):
        raise TpmError(with_handle(RC.TYPE, 1), "not a keyedHash object")
    if pub.has(A.restricted):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "a restricted key")
    if not pub.has(A.sign):
        raise TpmError(with_handle(RC.KEY, 1), "not a signing key")
    assert isinstance(pub.parameters, TPMS_KEYEDHASH_PARMS)
    own = pub.parameters.scheme
    alg = hash_alg
    if own.scheme != NULL:
        alg = own.hashAlg if hash_alg in (NULL, own.hashAlg) else NULL
    if alg == NULL:
        raise TpmError(with_parameter(RC.VALUE, 2), "no hash algorithm")
    if obj.sensitive is None:
        raise TpmError(with_handle(RC.KEY, 1), "no key loaded")
    return alg, obj.sensitive.sensitive


@handles(CC.HMAC)
def hmac_(tpm: TPM, inv: Invocation, p: kc.HMAC_In) -> kc.HMAC_Out:
    alg, key = _hmac_key(_object(tpm, inv), p.hashAlg)
    return kc.HMAC_Out(HASHES[alg].hmac(key, p.buffer))


@handles(CC.HMAC_Start)
def hmac_start(tpm: TPM, inv: Invocation, p: kc.HMAC_Start_In) -> kc.SequenceStart_Out:
    alg, key = _hmac_key(_object(tpm, inv), p.hashAlg)
    return kc.SequenceStart_Out(store.load(tpm, hmac_sequence(alg, key, p.auth)))


@handles(CC.HashSequenceStart)
def hash_sequence_start(tpm: TPM, inv: Invocation,
                        p: kc.HashSequenceStart_In) -> kc.SequenceStart_Out:
    seq = event_sequence(p.auth) if p.hashAlg == NULL else hash_sequence(p.hashAlg, p.auth)
    return kc.SequenceStart_Out(store.load(tpm, seq))


def _sequence(tpm: TPM, inv: Invocation, n: int = 0) -> SequenceObject:
    obj = _object(tpm, inv, n)
    if not isinstance(obj, SequenceObject):
        raise TpmError(with_handle(RC.MODE, n + 1), "not a sequence object")
    return obj


@handles(CC.SequenceUpdate)
def sequence_update(tpm: TPM, inv: Invocation, p: kc.SequenceUpdate_In) -> kc.Empty:
    obj = _object(tpm, inv)
    if not isinstance(obj, SequenceObject):
        # libtpms numbers this one as parameter 1, not handle 1 (TPM_RC_MODE + P1).
        raise TpmError(with_parameter(RC.MODE, 1), "not a sequence object")
    obj.update(p.buffer)
    return kc.Empty()


@handles(CC.SequenceComplete)
def sequence_complete(tpm: TPM, inv: Invocation,
                      p: kc.SequenceComplete_In) -> kc.SequenceComplete_Out:
    seq = _sequence(tpm, inv)
    if seq.kind is Kind.EVENT:
        raise TpmError(with_handle(RC.MODE, 1), "an event sequence")
    seq.update(p.buffer)
    null_ticket = TPMT_TK_HASHCHECK(ST.HASHCHECK, RH.NULL, b"")
    if seq.hmac is not None:  # no ticket for an HMAC
        result, ticket = seq.hmac.digest(), null_ticket
    else:
        ((alg, state),) = seq.hashes.items()
        result = state.digest()
        if p.hierarchy == RH.NULL or not seq.safe:
            ticket = null_ticket
        else:
            mac = hashcheck_digest(tpm.hierarchy_proof(p.hierarchy), alg, result)
            ticket = TPMT_TK_HASHCHECK(ST.HASHCHECK, p.hierarchy, mac)
    store.flush(tpm, inv.handles[0])
    return kc.SequenceComplete_Out(result, ticket)


@handles(CC.EventSequenceComplete)
def event_sequence_complete(tpm: TPM, inv: Invocation,
                            p: kc.SequenceUpdate_In) -> kc.EventSequenceComplete_Out:
    pcr = inv.handles[0]
    seq = _sequence(tpm, inv, 1)
    if seq.kind is not Kind.EVENT:
        raise TpmError(with_handle(RC.MODE, 2), "not an event sequence")
    if pcr != RH.NULL and not may_extend(pcr, inv.locality):
        raise TpmError(RC.LOCALITY, f"PCR {pcr} not extendable at locality {inv.locality}")
    seq.update(p.buffer)
    digests = tuple(TPMT_HA(alg, state.digest()) for alg, state in sorted(seq.hashes.items()))
    if pcr != RH.NULL:
        for d in digests:
            tpm.reset_data.pcrs.extend(pcr, d.hashAlg, d.digest)
    store.flush(tpm, inv.handles[1])
    return kc.EventSequenceComplete_Out(TPML_DIGEST_VALUES(digests))
