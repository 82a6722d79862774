"""Loaded objects: the transient slots (Part 1, 30.4) and the persistent handles
(Part 1, 37.4) — what each holds, how a handle is found, and their snapshot records.

Transient objects live in ``ResetData.objects`` (gone at every Startup; kept in the
snapshot's volatile part); persistent ones in ``PermanentState.persistent``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from ..codec import UINT32, Int, marshal, unmarshal
from ..commands import MAX_LOADED_OBJECTS, Auth
from ..constants import HT, RC, RH, TPM_ALG
from ..errors import StateFormatError, TpmError
from ..sessions import Entity
from .public import (
    TPM2B_NAME,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPMA_OBJECT,
    TPMT_PUBLIC,
    TPMT_SENSITIVE,
)

if TYPE_CHECKING:
    from ..tpm import TPM

TRANSIENT_FIRST = HT.TRANSIENT << 24
PERSISTENT_FIRST = HT.PERSISTENT << 24
OWNER_PERSISTENT_LAST = 0x817FFFFF
MAX_PERSISTENT_OBJECTS = 65  # what swtpm reports as TPM_PT_HR_PERSISTENT_AVAIL
HIERARCHIES = (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.NULL)
_U32 = struct.Struct(">I")


@dataclass
class LoadedObject:
    """An object in a slot: its public and sensitive areas and where it belongs."""

    public: TPMT_PUBLIC
    sensitive: TPMT_SENSITIVE | None  # None: public part only (LoadExternal)
    hierarchy: int
    qualified_name: bytes
    name: bytes = b""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.public.name()

    def entity(self, role: Auth | None = None) -> Entity:
        """The object as an authorization target. Part 1, 19.7.3: the USER role of an
        object without userWithAuth, the ADMIN role of one with adminWithPolicy and
        the DUP role need a policy session. libtpms tells them apart: for the USER role
        the authValue is merely unavailable (IsAuthValueAvailable: TPM_RC_AUTH_UNAVAILABLE
        to a password or HMAC session), the other two demand a policy session
        (IsPolicySessionRequired: TPM_RC_AUTH_TYPE)."""
        auth = self.sensitive.authValue if self.sensitive is not None else b""
        pub = self.public
        policy_required = (
            role is Auth.DUP or (role is Auth.ADMIN and pub.has(TPMA_OBJECT.adminWithPolicy))
        )
        user_without_auth = role is Auth.USER and not pub.has(TPMA_OBJECT.userWithAuth)
        # A public-only object (LoadExternal without a sensitive area) has no authValue
        # to check: TPM_RC_AUTH_UNAVAILABLE for password and HMAC sessions (libtpms).
        # Nor does its policy authorize anything (the reference's IsAuthPolicyAvailable
        # refuses a public-only object): an empty policy makes a policy session
        # TPM_RC_AUTH_UNAVAILABLE too.
        policy = pub.authPolicy if self.sensitive is not None else b""
        return Entity(self.name, auth, policy, da_exempt=pub.has(TPMA_OBJECT.noDA),
                      auth_value_available=self.sensitive is not None and not user_without_auth,
                      policy_required=policy_required)

    def stored_sensitive(self) -> TPMT_SENSITIVE | None:
        """The sensitive area as records and saved contexts keep it (a sequence object
        keeps its running state here instead: keys/sequence.py)."""
        return self.sensitive


def qualified_name(pub: TPMT_PUBLIC, parent_qn: bytes, name: bytes) -> bytes:
    """QN := nameAlg || H_nameAlg(parent's QN || Name) (Part 1, 16); a hierarchy's QN
    is its handle."""
    return struct.pack(">H", pub.nameAlg) + pub.name_hash.digest(parent_qn, name)


def hierarchy_qn(hierarchy: int) -> bytes:
    return _U32.pack(hierarchy)


def is_object_handle(handle: int) -> bool:
    return handle >> 24 in (HT.TRANSIENT, HT.PERSISTENT)


def find(tpm: TPM, handle: int) -> LoadedObject | None:
    if handle >> 24 == HT.TRANSIENT:
        return tpm.reset_data.objects.get(handle & 0xFFFFFF) if tpm.started else None
    if handle >> 24 == HT.PERSISTENT:
        return tpm.perm.persistent.get(handle)
    return None


def get(tpm: TPM, handle: int) -> LoadedObject:
    obj = find(tpm, handle)
    if obj is None:  # pragma: no cover - the handle-area load check comes first
        raise TpmError(RC.HANDLE)
    return obj


def slot_available(tpm: TPM, command_handles: tuple[int, ...] = ()) -> bool:
    """Whether a new object would find a free slot. A persistent object a command names
    sits in a slot of its own while the command runs (the reference's ObjectLoadEvict),
    so it counts as taken: with a persistent parent and one slot free, TPM2_Load has
    nowhere to put the child (TPM_RC_OBJECT_MEMORY, as libtpms answers)."""
    evicted = sum(1 for h in command_handles if h >> 24 == HT.PERSISTENT)
    return len(tpm.reset_data.objects) + evicted < MAX_LOADED_OBJECTS


def load(tpm: TPM, obj: LoadedObject) -> int:
    """Put an object in the lowest free transient slot; TPM_RC_OBJECT_MEMORY if full."""
    slots = tpm.reset_data.objects
    for i in range(MAX_LOADED_OBJECTS):
        if i not in slots:
            slots[i] = obj
            return TRANSIENT_FIRST + i
    raise TpmError(RC.OBJECT_MEMORY)


def flush(tpm: TPM, handle: int) -> bool:
    return tpm.reset_data.objects.pop(handle & 0xFFFFFF, None) is not None


def handles(tpm: TPM, htype: int) -> list[int]:
    if htype == HT.TRANSIENT:
        return sorted(TRANSIENT_FIRST + i for i in tpm.reset_data.objects) if tpm.started else []
    return sorted(tpm.perm.persistent)


# ---- records: saved contexts and the snapshot -----------------------------------------
@dataclass(frozen=True)
class ObjectRecord:
    """One object as stored (version 1): also the plaintext of a saved object context."""

    version: Annotated[int, Int("B", (1,), RC.INTEGRITY)]
    handle: UINT32
    hierarchy: Annotated[int, Int("I", HIERARCHIES, RC.INTEGRITY)]
    public: TPM2B_PUBLIC
    sensitive: TPM2B_SENSITIVE
    qualifiedName: TPM2B_NAME


def record(handle: int, obj: LoadedObject) -> ObjectRecord:
    return ObjectRecord(1, handle, obj.hierarchy, obj.public, obj.stored_sensitive(),
                        obj.qualified_name)


def from_record(rec: ObjectRecord) -> LoadedObject:
    if rec.public.nameAlg == TPM_ALG.NULL:  # only a sequence object has no nameAlg
        from ..keys.sequence import sequence_from_record

        return sequence_from_record(rec.public, rec.sensitive)
    return LoadedObject(rec.public, rec.sensitive, rec.hierarchy, rec.qualifiedName)


def context_plaintext(handle: int, obj: LoadedObject) -> bytes:
    return marshal(record(handle, obj))


def from_context_plaintext(plaintext: bytes) -> LoadedObject:
    try:
        return from_record(unmarshal(ObjectRecord, plaintext))
    except TpmError:
        raise TpmError(RC.INTEGRITY) from None


def transient_records(tpm: TPM) -> tuple[ObjectRecord, ...]:
    if not tpm.started:
        return ()
    return tuple(record(TRANSIENT_FIRST + i, o)
                 for i, o in sorted(tpm.reset_data.objects.items()))


def persistent_records(tpm: TPM) -> tuple[ObjectRecord, ...]:
    return tuple(record(h, o) for h, o in sorted(tpm.perm.persistent.items()))


def restore_records(tpm: TPM, transient: tuple[ObjectRecord, ...],
                    persistent: tuple[ObjectRecord, ...]) -> None:
    for rec in persistent:
        if rec.handle >> 24 != HT.PERSISTENT or rec.handle in tpm.perm.persistent:
            raise StateFormatError("persistent object table is malformed")
        tpm.perm.persistent[rec.handle] = from_record(rec)
    if transient and not tpm.started:
        raise StateFormatError("transient objects in a TPM that is not started")
    for rec in transient:
        i = rec.handle - TRANSIENT_FIRST
        if not 0 <= i < MAX_LOADED_OBJECTS or i in tpm.reset_data.objects:
            raise StateFormatError("transient object table is malformed")
        tpm.reset_data.objects[i] = from_record(rec)
