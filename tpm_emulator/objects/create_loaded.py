"""TPM2_CreateLoaded (Part 3, 12.9): create an object and load it in one command.

The parent decides what is made (Part 1, 26.3 and 27): a hierarchy gives a primary
object exactly as TPM2_CreatePrimary would (same seed, same DRBG, so the same key for
the same template), a storage parent an ordinary child whose private area comes back
protected as TPM2_Create would return it, and a derivation parent a derived object
(``derived.py``) that has no private area to return: it can always be derived again.
The template is a TPM2B_TEMPLATE, parsed here rather than by the dispatcher because
its unique field is a TPMS_DERIVE under a derivation parent. The checks run in the
reference's order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..codec import unmarshal
from ..constants import CC, RC, TPM_ALG
from ..errors import TpmError, with_handle, with_parameter
from ..handlers import Invocation, handles
from . import duplication_commands as dc
from . import store
from .checks import create_checks, public_attributes_validation
from .derive import NewObject, Rng, generate, primary_rng, random_rng
from .derived import (
    TPMS_DERIVE,
    derivation_rng,
    is_derivation_parent,
    is_parent,
    label_and_context,
    parse_template,
)
from .handlers import _check_auth_size, _seed_of
from .protect import protect
from .public import TPMA_OBJECT, TPMS_SENSITIVE_CREATE, TPMT_PUBLIC
from .store import LoadedObject, hierarchy_qn, qualified_name

if TYPE_CHECKING:
    from ..tpm import TPM

A = TPMA_OBJECT


def _parent(tpm: TPM, handle: int) -> LoadedObject | None:
    """The parent object (an ordinary parent, a symmetric one included, or a derivation
    parent), or None for a hierarchy."""
    if not store.is_object_handle(handle):
        return None
    parent = store.get(tpm, handle)
    usable = is_parent(parent.public) or is_derivation_parent(parent.public)
    if not usable or parent.sensitive is None:
        raise TpmError(with_handle(RC.TYPE, 1), "not a parent")
    return parent


def _template(data: bytes, derivation: bool) -> tuple[TPMT_PUBLIC, TPMS_DERIVE | None]:
    try:
        if derivation:
            return parse_template(data)
        pub = unmarshal(TPMT_PUBLIC, data)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 2), str(e)) from None
    return pub, None


def _derived_rng(parent: LoadedObject, pub: TPMT_PUBLIC, create: TPMS_SENSITIVE_CREATE,
                 derive: TPMS_DERIVE) -> Rng:
    """Checks and key source for a derived object (reference TPM2_CreateLoaded)."""
    if pub.type == TPM_ALG.RSA:  # no RSA key is derived: the prime search is not defined
        raise TpmError(with_parameter(RC.TYPE, 2), "RSA keys are not derived")
    if pub.has(A.sensitiveDataOrigin):
        raise TpmError(RC.ATTRIBUTES, "a derived object's key comes from its parent")
    try:
        # Part 1, "Derived Objects": a derived object is fixedParent and as fixedTPM as its parent.
        if not pub.has(A.fixedParent) or (
                pub.has(A.fixedTPM) != parent.public.has(A.fixedTPM)):
            raise TpmError(RC.ATTRIBUTES, "derived objects are fixedParent")
        public_attributes_validation(parent.public, pub)  # with checks.like_its_parent
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, 2), str(e)) from None
    assert parent.sensitive is not None
    return derivation_rng(parent.public, parent.sensitive,
                          label_and_context(derive, create.data))


@handles(CC.CreateLoaded)
def create_loaded(tpm: TPM, inv: Invocation, p: dc.CreateLoaded_In) -> dc.CreateLoaded_Out:
    handle = inv.handles[0]
    parent = _parent(tpm, handle)
    derivation = parent is not None and is_derivation_parent(parent.public)
    # The reference finds the slot before it reads the template.
    if not store.slot_available(tpm, inv.handles):
        raise TpmError(RC.OBJECT_MEMORY)
    pub, derive = _template(p.inPublic, derivation)
    if pub.nameAlg == TPM_ALG.NULL:  # a template's nameAlg is TPMI_ALG_HASH without NULL
        raise TpmError(with_parameter(RC.HASH, 2), "an object needs a nameAlg")
    create = _check_auth_size(p.inSensitive, pub)
    rng: Rng
    if derivation:
        assert parent is not None and derive is not None
        rng = _derived_rng(parent, pub, create, derive)
        create = TPMS_SENSITIVE_CREATE(create.userAuth, b"")  # the data was label/context
    else:
        try:
            create_checks(None if parent is None else parent.public, pub,
                          len(p.inSensitive.data))
        except TpmError as e:
            raise TpmError(with_parameter(e.rc, 2), str(e)) from None
        rng = random_rng() if parent is not None else primary_rng(
            _seed_of(tpm, handle), pub, create.data)
    new = generate(pub, create, rng)
    return _load(tpm, handle, parent, derivation, new)


def _load(tpm: TPM, handle: int, parent: LoadedObject | None, derivation: bool,
          new: NewObject) -> dc.CreateLoaded_Out:
    name = new.public.name()
    if parent is None:
        private = b""  # a primary is re-created, never loaded from a blob
        hierarchy, parent_qn = handle, hierarchy_qn(handle)
    else:
        assert parent.sensitive is not None
        private = b"" if derivation else protect(parent.public, parent.sensitive.seedValue,
                                                  name, new.sensitive)
        hierarchy, parent_qn = parent.hierarchy, parent.qualified_name
    obj = LoadedObject(new.public, new.sensitive, hierarchy,
                       qualified_name(new.public, parent_qn, name), name)
    return dc.CreateLoaded_Out(store.load(tpm, obj), private, new.public, name)
