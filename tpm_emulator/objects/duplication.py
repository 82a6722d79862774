"""TPM2_Duplicate, TPM2_Rewrap and TPM2_Import (Part 3, clause 13; Part 1, 23.3).

The checks run in the reference's order, so a command wrong in several ways earns the
code libtpms gives, numbered as libtpms numbers it. The blob format is in
``duplicate.py``; the seed of an outer wrapper is shared with the (new) parent by
``secret.py`` under the label "DUPLICATE".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..constants import CC, RC, RH, TPM_ALG
from ..errors import TpmError, with_handle, with_parameter
from ..handlers import Invocation, handles
from . import duplication_commands as dc
from . import store
from .checks import public_attributes_validation
from .derive import consistent
from .derived import is_parent
from .duplicate import from_duplicate, to_duplicate
from .protect import outer_unwrap, outer_wrap, protect
from .public import TPMA_OBJECT, TPMT_PUBLIC, SymDef
from .secret import DUPLICATE, decrypt_secret, make_secret
from .store import LoadedObject

if TYPE_CHECKING:
    from ..tpm import TPM

A = TPMA_OBJECT
NULL = TPM_ALG.NULL
MAX_PRIVATE = 1024  # TPM2B_PRIVATE's buffer


def _storage_key(tpm: TPM, handle: int, n: int) -> LoadedObject:
    """A new parent needs only its public area (it may be another TPM's key loaded
    with LoadExternal); ObjectIsStorage: a restricted RSA/ECC decryption key."""
    obj = store.get(tpm, handle)
    if not obj.public.is_storage_parent:
        raise TpmError(with_handle(RC.TYPE, n), "not a storage key")
    return obj


def _private_parent(tpm: TPM, handle: int, n: int) -> LoadedObject:
    """Rewrap's old parent: a storage key with its sensitive area."""
    obj = _storage_key(tpm, handle, n)
    if obj.sensitive is None:
        raise TpmError(with_handle(RC.TYPE, n), "a public-only key cannot open a blob")
    return obj


def _import_parent(tpm: TPM, handle: int) -> LoadedObject:
    """Import's parent: any parent (the reference's isParent, a symmetric key
    included) with its sensitive area."""
    obj = store.get(tpm, handle)
    if not is_parent(obj.public) or obj.sensitive is None:
        raise TpmError(with_handle(RC.TYPE, 1), "not a parent")
    return obj


def _key_size_ok(key: bytes, sym: SymDef) -> bool:
    return len(key) == (sym.keyBits + 7) // 8


# ---- Duplicate (Part 3, 13.1) ----------------------------------------------------------
@handles(CC.Duplicate)
def duplicate(tpm: TPM, inv: Invocation, p: dc.Duplicate_In) -> dc.Duplicate_Out:
    obj_handle, parent_handle = inv.handles
    obj = store.get(tpm, obj_handle)
    pub = obj.public
    if pub.has(A.fixedParent):
        raise TpmError(with_handle(RC.ATTRIBUTES, 1), "fixedParent objects stay put")
    if pub.nameAlg == NULL or obj.sensitive is None:
        raise TpmError(with_handle(RC.TYPE, 1), "nothing to duplicate")
    new_parent = None if parent_handle == RH.NULL else _storage_key(tpm, parent_handle, 2)
    sym = p.symmetricAlg
    if pub.has(A.encryptedDuplication):
        # Part 1, 23.3: such an object leaves only inside both wrappers.
        if sym.algorithm == NULL:
            raise TpmError(with_parameter(RC.SYMMETRIC, 2), "inner wrapper required")
        if new_parent is None:
            raise TpmError(with_handle(RC.HIERARCHY, 2), "outer wrapper required")
    if sym.algorithm == NULL:
        if p.encryptionKeyIn:
            raise TpmError(with_parameter(RC.SIZE, 1), "a key without an algorithm")
    elif p.encryptionKeyIn and not _key_size_ok(p.encryptionKeyIn, sym):
        raise TpmError(with_parameter(RC.SIZE, 1), "key size disagrees with symmetricAlg")
    seed, out_seed = (b"", b"")
    if new_parent is not None:
        seed, out_seed = make_secret(new_parent.public, DUPLICATE)
    inner_key = None
    key_out = b""
    if sym.algorithm != NULL:
        inner_key = p.encryptionKeyIn
        if not inner_key:  # Part 3, 13.1: the TPM picks one and returns it
            inner_key = key_out = os.urandom((sym.keyBits + 7) // 8)
    blob = to_duplicate(obj.sensitive, pub.name_hash, obj.name, inner_key,
                        None if new_parent is None else new_parent.public, seed)
    return dc.Duplicate_Out(key_out, blob, out_seed)


# ---- Rewrap (Part 3, 13.2) -------------------------------------------------------------
@handles(CC.Rewrap)
def rewrap(tpm: TPM, inv: Invocation, p: dc.Rewrap_In) -> dc.Rewrap_Out:
    old_handle, new_handle = inv.handles
    if bool(p.inSymSeed) != (old_handle != RH.NULL):
        raise TpmError(with_handle(RC.HANDLE, 1), "seed and old parent disagree")
    inner = p.inDuplicate
    if old_handle != RH.NULL:
        old = _private_parent(tpm, old_handle, 1)
        assert old.sensitive is not None
        try:
            seed = decrypt_secret(old.public, old.sensitive, DUPLICATE, p.inSymSeed)
        except TpmError:  # the reference reports every seed failure as a bad value
            raise TpmError(with_parameter(RC.VALUE, 3), "inSymSeed") from None
        try:
            inner = outer_unwrap(old.public, seed, p.name, p.inDuplicate)
        except TpmError as e:
            raise TpmError(with_parameter(e.rc, 1), str(e)) from None
    if new_handle == RH.NULL:
        return dc.Rewrap_Out(inner, b"")
    new = _storage_key(tpm, new_handle, 2)
    seed, out_seed = make_secret(new.public, DUPLICATE)
    if len(inner) + 2 + new.public.name_hash.size > MAX_PRIVATE:
        raise TpmError(with_parameter(RC.VALUE, 1), "rewrapped blob would not fit")
    return dc.Rewrap_Out(outer_wrap(new.public, seed, p.name, inner), out_seed)


# ---- Import (Part 3, 13.3) -------------------------------------------------------------
def _import_checks(pub: TPMT_PUBLIC, p: dc.Import_In) -> None:
    if p.symmetricAlg.algorithm != NULL:
        if not _key_size_ok(p.encryptionKey, p.symmetricAlg):
            raise TpmError(with_parameter(RC.SIZE, 1), "key size disagrees with symmetricAlg")
        return
    if p.encryptionKey:
        raise TpmError(with_parameter(RC.SIZE, 1), "a key without an algorithm")
    if pub.has(A.encryptedDuplication):
        raise TpmError(with_parameter(RC.ATTRIBUTES, 1), "inner wrapper required")


@handles(CC.Import)
def import_(tpm: TPM, inv: Invocation, p: dc.Import_In) -> dc.Import_Out:
    pub = p.objectPublic
    if pub.has(A.fixedTPM) or pub.has(A.fixedParent):
        raise TpmError(with_parameter(RC.ATTRIBUTES, 2), "only duplicable objects import")
    parent = _import_parent(tpm, inv.handles[0])
    assert parent.sensitive is not None
    _import_checks(pub, p)
    seed = None
    if p.inSymSeed:
        if parent.public.type == TPM_ALG.SYMCIPHER:  # no key to share a seed with
            raise TpmError(with_handle(RC.TYPE, 1), "a symmetric parent takes no outer wrapper")
        try:
            seed = decrypt_secret(parent.public, parent.sensitive, DUPLICATE, p.inSymSeed)
        except TpmError as e:
            raise TpmError(with_parameter(e.rc, 4), str(e)) from None
    elif pub.has(A.encryptedDuplication):
        raise TpmError(with_parameter(RC.ATTRIBUTES, 4), "outer wrapper required")
    if pub.nameAlg == NULL:
        raise TpmError(with_parameter(RC.HASH, 2), "an object needs a nameAlg")
    name = pub.name()
    inner_key = p.encryptionKey if p.symmetricAlg.algorithm != NULL else None
    try:
        sens = from_duplicate(p.duplicate, pub.name_hash, name, inner_key, parent.public,
                              seed)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 3), str(e)) from None
    if parent.public.has(A.fixedTPM):
        # The reference validates now (as Load would for a primary-like object) so
        # that Load under a fixedTPM parent can trust the blob.
        if len(sens.seedValue) > pub.name_hash.size:
            raise TpmError(with_parameter(RC.KEY_SIZE, 3), "seedValue too long")
        try:
            public_attributes_validation(None, pub)
        except TpmError as e:
            raise TpmError(with_parameter(e.rc, 2), str(e)) from None
        if not consistent(pub, sens):
            raise TpmError(RC.BINDING, "public and sensitive areas do not match")
    return dc.Import_Out(protect(parent.public, parent.sensitive.seedValue, name, sens))
