"""Object command bodies (Part 3, clauses 12 and 28), registered in the shared
handler table, plus the object branches of FlushContext/ContextSave/ContextLoad."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..admin.hierarchy import enabled
from ..codec import marshal
from ..constants import CC, HT, RC, RH, TPM_ALG
from ..crypto import open_context, seal_context, split_context
from ..errors import TpmError, with_handle, with_parameter
from ..handlers import Invocation, handles
from ..structures import TPML_PCR_SELECTION, TPMS_CONTEXT, TPMS_PCR_SELECTION
from . import commands as oc
from . import store
from .checks import create_checks, public_attributes_validation
from .derive import consistent, generate, primary_rng, random_rng
from .derived import is_parent
from .external import validate_external
from .protect import protect, unprotect
from .public import (
    TPMA_OBJECT,
    TPMS_CREATION_DATA,
    TPMS_SENSITIVE_CREATE,
    TPMT_PUBLIC,
    TPMT_SENSITIVE,
    TPMT_TK_CREATION,
)
from .store import LoadedObject, hierarchy_qn, qualified_name

if TYPE_CHECKING:
    from ..tpm import TPM

A = TPMA_OBJECT
ST_CREATION = 0x8021
# Saved-handle values for object contexts (the reference's 0x80000000 / 0x80000002, and
# 0x80000001 for sequence objects).
OBJECT_CONTEXT_HANDLE = 0x80000000
STCLEAR_CONTEXT_HANDLE = 0x80000002
SEQUENCE_CONTEXT_HANDLE = 0x80000001


def _seed_of(tpm: TPM, hierarchy: int) -> bytes:
    seeds: dict[int, bytes] = {
        RH.OWNER: tpm.perm.sps, RH.ENDORSEMENT: tpm.perm.eps, RH.PLATFORM: tpm.perm.pps,
    }
    return seeds.get(hierarchy) or tpm.reset_data.null_proof  # the NULL seed: per reset


def _check_auth_size(create: TPMS_SENSITIVE_CREATE, pub: TPMT_PUBLIC) -> TPMS_SENSITIVE_CREATE:
    """AdjustAuthSize: an authValue longer than a nameAlg digest is TPM_RC_SIZE; trailing
    zeros beyond it are dropped."""
    auth = create.userAuth
    size = pub.name_hash.size
    if len(auth) > size:
        if any(auth[size:]):
            raise TpmError(with_parameter(RC.SIZE, 1), "userAuth longer than nameAlg")
        auth = auth[:size]
    return TPMS_SENSITIVE_CREATE(auth.rstrip(b"\x00"), create.data)


def _creation(tpm: TPM, inv: Invocation, pub: TPMT_PUBLIC, name: bytes, hierarchy: int,
              parent_name: bytes, parent_qn: bytes, parent_alg: int, outside: bytes,
              pcrs: TPML_PCR_SELECTION) -> tuple[TPMS_CREATION_DATA, bytes, TPMT_TK_CREATION]:
    """Creation data, its hash and the creation ticket (Part 3, 12.1, 12.5)."""
    h = pub.name_hash
    bank = tpm.reset_data.pcrs
    # As Quote (PCRComputeCurrentDigest): every allocated PCR selected, no limit of eight.
    sel, digests = bank.select(tuple((s.hash, s.pcrSelect) for s in pcrs.pcrSelections))
    pcr_digest = h.digest(*digests)
    select = TPML_PCR_SELECTION(tuple(TPMS_PCR_SELECTION(a, b) for a, b in sel))
    locality = 1 << inv.locality if inv.locality < 5 else inv.locality
    data = TPMS_CREATION_DATA(select, pcr_digest, locality, parent_alg, parent_name,
                              parent_qn, outside)
    creation_hash = h.digest(marshal(data))
    proof = tpm.hierarchy_proof(hierarchy)
    mac = h.hmac(proof, struct.pack(">H", ST_CREATION), name, creation_hash)
    return data, creation_hash, TPMT_TK_CREATION(ST_CREATION, hierarchy, mac)


def _storage_parent(tpm: TPM, handle: int) -> LoadedObject:
    """The reference's isParent: a restricted decryption key with its sensitive area,
    a SYMCIPHER key included. Protection under any of them is the same construction
    (Part 1, 23.3): the parent's seedValue and symmetric definition, which the
    reference reads from the same place for a symmetric key (protect.py)."""
    parent = store.get(tpm, handle)
    if not is_parent(parent.public) or parent.sensitive is None:
        raise TpmError(with_handle(RC.TYPE, 1), "not a storage parent")
    return parent


# ---- CreatePrimary (Part 3, 24.1) ------------------------------------------------------
@handles(CC.CreatePrimary)
def create_primary(tpm: TPM, inv: Invocation, p: oc.Create_In) -> oc.CreatePrimary_Out:
    hierarchy = inv.handles[0]
    if not store.slot_available(tpm):  # the reference finds the slot first
        raise TpmError(RC.OBJECT_MEMORY)
    pub = p.inPublic
    try:
        create_checks(None, pub, len(p.inSensitive.data))
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 2), str(e)) from None
    create = _check_auth_size(p.inSensitive, pub)
    # Key-generation failures (exponent, key size) come back unnumbered, as in libtpms.
    new = generate(pub, create, primary_rng(_seed_of(tpm, hierarchy), pub, create.data))
    name = new.public.name()
    obj = LoadedObject(new.public, new.sensitive, hierarchy,
                       qualified_name(new.public, hierarchy_qn(hierarchy), name), name)
    data, chash, ticket = _creation(tpm, inv, new.public, name, hierarchy,
                                    hierarchy_qn(hierarchy), hierarchy_qn(hierarchy),
                                    TPM_ALG.NULL, p.outsideInfo, p.creationPCR)
    handle = store.load(tpm, obj)
    return oc.CreatePrimary_Out(handle, new.public, data, chash, ticket, name)


# ---- Create (Part 3, 12.1) -------------------------------------------------------------
@handles(CC.Create)
def create(tpm: TPM, inv: Invocation, p: oc.Create_In) -> oc.Create_Out:
    parent = _storage_parent(tpm, inv.handles[0])
    pub = p.inPublic
    try:
        create_checks(parent.public, pub, len(p.inSensitive.data))
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 2), str(e)) from None
    sens_in = _check_auth_size(p.inSensitive, pub)
    new = generate(pub, sens_in, random_rng())
    name = new.public.name()
    assert parent.sensitive is not None
    private = protect(parent.public, parent.sensitive.seedValue, name, new.sensitive)
    data, chash, ticket = _creation(tpm, inv, new.public, name, parent.hierarchy,
                                    parent.name, parent.qualified_name, parent.public.nameAlg,
                                    p.outsideInfo, p.creationPCR)
    return oc.Create_Out(private, new.public, data, chash, ticket)


# ---- Load (Part 3, 12.2) ---------------------------------------------------------------
@handles(CC.Load)
def load(tpm: TPM, inv: Invocation, p: oc.Load_In) -> oc.Load_Out:
    # The reference's order: a slot for the object, a private area at all, a parent.
    if not store.slot_available(tpm, inv.handles):
        raise TpmError(RC.OBJECT_MEMORY)
    if not p.inPrivate:
        raise TpmError(with_parameter(RC.SIZE, 1), "empty inPrivate")
    parent = _storage_parent(tpm, inv.handles[0])
    pub = p.inPublic
    try:
        public_attributes_validation(parent.public, pub)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 2), str(e)) from None
    name = pub.name()
    assert parent.sensitive is not None
    try:
        sens = unprotect(parent.public, parent.sensitive.seedValue, name, p.inPrivate)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 1), str(e)) from None
    if not consistent(pub, sens):
        raise TpmError(RC.BINDING, "public and sensitive areas do not match")
    obj = LoadedObject(pub, sens, parent.hierarchy,
                       qualified_name(pub, parent.qualified_name, name), name)
    return oc.Load_Out(store.load(tpm, obj), name)


# ---- LoadExternal (Part 3, 12.3) -------------------------------------------------------
@handles(CC.LoadExternal)
def load_external(tpm: TPM, inv: Invocation, p: oc.LoadExternal_In) -> oc.Load_Out:
    pub = p.inPublic
    if not store.slot_available(tpm):  # the reference looks first
        raise TpmError(RC.OBJECT_MEMORY)
    if not enabled(tpm.reset_data.stclear, p.hierarchy):
        raise TpmError(with_parameter(RC.HIERARCHY, 3), "the hierarchy is disabled")
    if p.inPrivate is not None:
        if p.hierarchy != RH.NULL:
            raise TpmError(with_parameter(RC.HIERARCHY, 3), "a sensitive area loads in NULL")
        # Nothing loaded from outside may pass for a key this TPM made or protects
        # (fixedTPM/fixedParent) or sign/decrypt as a restricted key would.
        if pub.has(A.fixedTPM) or pub.has(A.fixedParent) or pub.has(A.restricted):
            raise TpmError(with_parameter(RC.ATTRIBUTES, 2), "external fixed object")
    sens = None
    if p.inPrivate is not None:
        s = p.inPrivate
        sens = TPMT_SENSITIVE(s.sensitiveType, s.authValue, s.seedValue, s.sensitive)
    validate_external(pub, sens)  # ObjectLoad, in the reference's order (external.py)
    if pub.nameAlg == TPM_ALG.NULL:
        # libtpms would load it, with no Name. Here a nameAlg of NULL marks a sequence
        # object (keys/sequence.py), so such a key is refused, but only once every
        # check libtpms makes has passed: a malformed one earns libtpms' code.
        raise TpmError(with_parameter(RC.HASH, 2), "an external object without a Name")
    name = pub.name()
    # An external object's qualified Name is its Name (reference ObjectSetLoadedAttributes):
    # the TPM vouches for no parent chain, whichever hierarchy it is loaded in.
    obj = LoadedObject(pub, sens, p.hierarchy, name, name)
    return oc.Load_Out(store.load(tpm, obj), name)


# ---- ReadPublic (Part 3, 12.4) ---------------------------------------------------------
@handles(CC.ReadPublic)
def read_public(tpm: TPM, inv: Invocation, p: oc._Empty) -> oc.ReadPublic_Out:
    obj = store.get(tpm, inv.handles[0])
    if obj.public.nameAlg == TPM_ALG.NULL:  # a sequence object has no public area to read
        raise TpmError(RC.SEQUENCE)
    return oc.ReadPublic_Out(obj.public, obj.name, obj.qualified_name)


# ---- Unseal (Part 3, 12.7) -------------------------------------------------------------
@handles(CC.Unseal)
def unseal(tpm: TPM, inv: Invocation, p: oc._Empty) -> oc.Unseal_Out:
    obj = store.get(tpm, inv.handles[0])
    pub = obj.public
    if pub.type != TPM_ALG.KEYEDHASH:
        raise TpmError(with_handle(RC.TYPE, 1), "not a data object")
    if pub.has(A.decrypt) or pub.has(A.sign) or pub.has(A.restricted):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "not a sealed data object")
    if obj.sensitive is None:  # a sequence object (keys/sequence.py): not a data object
        raise TpmError(with_handle(RC.TYPE, 1), "not a data object")
    return oc.Unseal_Out(obj.sensitive.sensitive)


# ---- ObjectChangeAuth (Part 3, 12.6) ---------------------------------------------------
@handles(CC.ObjectChangeAuth)
def object_change_auth(tpm: TPM, inv: Invocation,
                       p: oc.ObjectChangeAuth_In) -> oc.ObjectChangeAuth_Out:
    obj = store.get(tpm, inv.handles[0])
    parent = store.get(tpm, inv.handles[1])
    # The reference's order: a sequence object has no authValue to change (H1), then
    # the new authValue must fit the nameAlg (P1), and only then is the parent checked
    # against the object's qualified Name (H2).
    if obj.public.nameAlg == TPM_ALG.NULL:
        raise TpmError(with_handle(RC.TYPE, 1), "a sequence object")
    size = obj.public.name_hash.size
    if len(p.newAuth.rstrip(b"\x00")) > size:
        raise TpmError(with_parameter(RC.SIZE, 1))
    if (not is_parent(parent.public) or obj.sensitive is None
            or qualified_name(obj.public, parent.qualified_name, obj.name) != obj.qualified_name):
        raise TpmError(with_handle(RC.TYPE, 2), "not the object's parent")
    sens = obj.sensitive
    changed = TPMT_SENSITIVE(sens.sensitiveType, p.newAuth.rstrip(b"\x00"), sens.seedValue,
                             sens.sensitive)
    assert parent.sensitive is not None
    return oc.ObjectChangeAuth_Out(
        protect(parent.public, parent.sensitive.seedValue, obj.name, changed))


# ---- EvictControl (Part 3, 28.5) -------------------------------------------------------
@handles(CC.EvictControl)
def evict_control(tpm: TPM, inv: Invocation, p: oc.EvictControl_In) -> oc._Empty:
    auth, handle = inv.handles
    obj = store.get(tpm, handle)
    persistent = p.persistentHandle
    if obj.hierarchy == RH.NULL:
        raise TpmError(with_handle(RC.ATTRIBUTES, 2), "a NULL-hierarchy object")
    if obj.sensitive is None:  # reference: publicOnly objects are never persistent
        raise TpmError(with_handle(RC.ATTRIBUTES, 2), "a public-only object")
    if obj.public.has(A.stClear):
        raise TpmError(with_handle(RC.ATTRIBUTES, 2), "stClear objects cannot persist")
    if auth == RH.OWNER and obj.hierarchy == RH.PLATFORM:
        raise TpmError(with_handle(RC.HIERARCHY, 2), "a platform object")
    if auth == RH.PLATFORM and obj.hierarchy != RH.PLATFORM:
        raise TpmError(with_handle(RC.HIERARCHY, 2), "not a platform object")
    if handle >> 24 == HT.PERSISTENT:
        if handle != persistent:  # libtpms blames objectHandle (H2)
            raise TpmError(with_handle(RC.HANDLE, 2), "handles differ")
        del tpm.perm.persistent[handle]
        return oc._Empty()
    owner_range = persistent <= store.OWNER_PERSISTENT_LAST
    if (auth == RH.OWNER) != owner_range:
        raise TpmError(with_parameter(RC.RANGE, 1), "persistent handle outside the range")
    if persistent in tpm.perm.persistent:
        raise TpmError(RC.NV_DEFINED, "persistent handle in use")
    if len(tpm.perm.persistent) >= store.MAX_PERSISTENT_OBJECTS:
        raise TpmError(RC.NV_SPACE)
    tpm.perm.persistent[persistent] = LoadedObject(obj.public, obj.sensitive, obj.hierarchy,
                                                   obj.qualified_name, obj.name)
    return oc._Empty()


# ---- object contexts: FlushContext, ContextSave, ContextLoad (Part 3, 28) ---------------
def flush_object(tpm: TPM, handle: int) -> bool:
    return handle >> 24 == HT.TRANSIENT and store.flush(tpm, handle)


def save_object(tpm: TPM, handle: int) -> TPMS_CONTEXT:
    """An object's context: the whole object, encrypted and MACed under its hierarchy's
    proof (Part 1, 30.3); the object stays loaded."""
    obj = store.get(tpm, handle)
    if handle >> 24 != HT.TRANSIENT:
        raise TpmError(with_handle(RC.HANDLE, 1))
    table = tpm.reset_data.sessions
    sequence = table.context_counter
    table.context_counter += 1
    saved = STCLEAR_CONTEXT_HANDLE if obj.public.has(A.stClear) else OBJECT_CONTEXT_HANDLE
    if obj.public.nameAlg == TPM_ALG.NULL:
        saved = SEQUENCE_CONTEXT_HANDLE
    plaintext = store.context_plaintext(saved, obj)
    blob = seal_context(tpm.hierarchy_proof(obj.hierarchy), sequence, saved, obj.hierarchy,
                        plaintext)
    return TPMS_CONTEXT(sequence, saved, obj.hierarchy, blob)


def load_object(tpm: TPM, ctx: TPMS_CONTEXT) -> int:
    try:
        split_context(ctx.contextBlob)
    except ValueError as e:
        raise TpmError(int(e.args[0]), "malformed context blob") from None
    plaintext = open_context(tpm.hierarchy_proof(ctx.hierarchy), ctx.sequence,
                             ctx.savedHandle, ctx.hierarchy, ctx.contextBlob)
    if plaintext is None:
        raise TpmError(with_parameter(RC.INTEGRITY, 1), "context integrity")
    if not enabled(tpm.reset_data.stclear, ctx.hierarchy):
        raise TpmError(with_parameter(RC.HIERARCHY, 1), "the hierarchy is disabled")
    try:
        obj = store.from_context_plaintext(plaintext)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 1)) from None
    return store.load(tpm, obj)


# CreateLoaded and the duplication commands register themselves.
from . import create_loaded as _create_loaded  # noqa: E402, F401
from . import duplication as _duplication  # noqa: E402, F401
