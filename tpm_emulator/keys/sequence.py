"""Hash, HMAC and event sequences as objects in the transient slots (Part 1, 32.4; Part 3,
clause 17).

A sequence is an object: it takes a transient handle, has an authValue (the ``auth`` of
HashSequenceStart/HMAC_Start), and is flushed by SequenceComplete. Like the reference's
AllocateSequenceSlot it has no nameAlg, so its Name is the Empty Buffer; it belongs to
the NULL hierarchy, is DA-exempt, and its authValue may always be used (no policy is
required for the USER role).

The running digests are kept in ``digest_state.DigestState`` (pure Python, exportable),
so a sequence can be context-saved and carried in a snapshot mid-way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from ..commands import Auth
from ..constants import RC, RH, TPM_ALG, TPM_GENERATED_VALUE
from ..crypto import HASHES
from ..errors import TpmError
from ..objects.public import (
    TPMA_OBJECT,
    TPMS_KEYEDHASH_PARMS,
    TPMT_PUBLIC,
    TPMT_SENSITIVE,
    Scheme,
    UniqueBytes,
)
from ..objects.store import LoadedObject
from ..sessions import Entity, strip_zeros
from .digest_state import DigestState, HmacState

_GENERATED = struct.pack(">I", TPM_GENERATED_VALUE)

# What a sequence looks like to code that reads any object's public area: no nameAlg
# (which is how objects/store.py and objects/handlers.py tell a sequence apart), no
# sign/decrypt, noDA, as the reference's sequence slot. The reference's type is
# TPM_ALG_NULL; ours must be one the codec can write, and keyedHash needs no key
# material. Commands that could take a keyedHash object refuse sequences first.
SEQUENCE_PUBLIC = TPMT_PUBLIC(
    TPM_ALG.KEYEDHASH, TPM_ALG.NULL, int(TPMA_OBJECT.noDA), b"",
    TPMS_KEYEDHASH_PARMS(Scheme()), UniqueBytes(b""))


class Kind(IntEnum):
    HASH = 1
    HMAC = 2
    EVENT = 3


def ticket_safe(first_block: bytes) -> bool:
    """The reference's TicketIsSafe: a sequence may earn a hashcheck ticket only if its
    first block is at least four octets long and does not start with
    TPM_GENERATED_VALUE (Part 3, 17.5: else the TPM could be made to sign something
    that looks like its own attestation)."""
    return len(first_block) >= len(_GENERATED) and not first_block.startswith(_GENERATED)


@dataclass
class SequenceObject(LoadedObject):
    """A sequence in a transient slot."""

    kind: Kind = Kind.HASH
    auth: bytes = b""
    hashes: dict[int, DigestState] = field(default_factory=dict)  # HASH and EVENT
    hmac: HmacState | None = None
    first_block_seen: bool = False
    safe: bool = False

    def __post_init__(self) -> None:
        self.name = b""  # no nameAlg: the Name is the Empty Buffer

    def entity(self, role: Auth | None = None) -> Entity:
        """The authValue serves every role but DUP: the reference's IsPolicySessionRequired
        asks a policy session for the DUP role whatever the object (a password or HMAC
        session: TPM_RC_AUTH_TYPE), and a sequence has no policy to satisfy one."""
        return Entity(b"", self.auth, b"", da_exempt=True, policy_required=role is Auth.DUP)

    def stored_sensitive(self) -> TPMT_SENSITIVE:
        """The authValue and running state, in a sensitive area so that the object
        record and saved-context formats need nothing new (Part 1, 30.3 leaves the
        context contents to the TPM)."""
        return TPMT_SENSITIVE(TPM_ALG.KEYEDHASH, self.auth, b"", encode_state(self))

    def update(self, data: bytes) -> None:
        if self.kind is Kind.HASH and not self.first_block_seen:
            self.first_block_seen = True
            self.safe = ticket_safe(data)
        if self.hmac is not None:
            self.hmac.update(data)
        for state in self.hashes.values():
            state.update(data)


def _new(kind: Kind, auth: bytes) -> SequenceObject:
    return SequenceObject(SEQUENCE_PUBLIC, None, RH.NULL, b"", b"", kind=kind,
                          auth=strip_zeros(auth))


def hash_sequence(hash_alg: int, auth: bytes) -> SequenceObject:
    seq = _new(Kind.HASH, auth)
    seq.hashes = {hash_alg: DigestState.start(hash_alg)}
    return seq


# The banks an event sequence hashed with before SHA-512 was implemented. Such a
# sequence, carried in an older snapshot or saved context, still completes: it extends
# and reports the banks it has, and leaves the SHA-512 bank alone (as if the bank had
# been allocated after the sequence started).
_EVENT_BANKS_BEFORE_SHA512 = frozenset({TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384})


def event_sequence(auth: bytes) -> SequenceObject:
    """An event sequence hashes with every implemented algorithm (one per PCR bank)."""
    seq = _new(Kind.EVENT, auth)
    seq.hashes = {alg: DigestState.start(alg) for alg in sorted(HASHES)}
    return seq


def hmac_sequence(hash_alg: int, key: bytes, auth: bytes) -> SequenceObject:
    seq = _new(Kind.HMAC, auth)
    seq.hmac = HmacState.start(hash_alg, key)
    return seq


# ---- storage: the state inside a sensitive area (version 1) -----------------------------
_STATE_VERSION = 1
_HEAD = struct.Struct(">BBBB")  # version, kind, flags, number of parts
_LEN = struct.Struct(">H")


def encode_state(seq: SequenceObject) -> bytes:
    flags = int(seq.first_block_seen) | int(seq.safe) << 1
    if seq.hmac is not None:
        parts = [seq.hmac.inner.to_bytes(), seq.hmac.outer_key]
    else:
        parts = [state.to_bytes() for _, state in sorted(seq.hashes.items())]
    body = b"".join(_LEN.pack(len(part)) + part for part in parts)
    return _HEAD.pack(_STATE_VERSION, seq.kind, flags, len(parts)) + body


def sequence_from_record(public: TPMT_PUBLIC, sensitive: TPMT_SENSITIVE | None) -> SequenceObject:
    """A sequence object back from its record; TPM_RC_INTEGRITY if the record is not one
    ``encode_state`` wrote (a saved context passed its HMAC, so this means a bug or a
    state blob from elsewhere)."""
    try:
        if public != SEQUENCE_PUBLIC or sensitive is None:
            raise ValueError("not a sequence record")
        data = sensitive.sensitive
        version, kind, flags, count = _HEAD.unpack_from(data)
        if version != _STATE_VERSION:
            raise ValueError("unknown sequence state version")
        parts, pos = [], _HEAD.size
        for _ in range(count):
            (n,) = _LEN.unpack_from(data, pos)
            parts.append(data[pos + 2 : pos + 2 + n])
            pos += 2 + n
        if pos != len(data):
            raise ValueError("trailing octets in the sequence state")
        seq = _new(Kind(kind), sensitive.authValue)
        if seq.kind is Kind.HMAC:
            inner, outer = parts
            seq.hmac = HmacState(DigestState.from_bytes(inner), outer)
        else:
            states = [DigestState.from_bytes(part) for part in parts]
            seq.hashes = {state.alg: state for state in states}
            if len(seq.hashes) != len(states):
                raise ValueError("a bank appears twice in the sequence state")
            if seq.kind is Kind.EVENT and set(seq.hashes) not in (
                    set(HASHES), _EVENT_BANKS_BEFORE_SHA512):
                raise ValueError("an event sequence needs every bank")
            if seq.kind is Kind.HASH and len(states) != 1:
                raise ValueError("a hash sequence has one digest")
    except (ValueError, struct.error):
        raise TpmError(RC.INTEGRITY, "not a sequence state") from None
    seq.first_block_seen, seq.safe = bool(flags & 1), bool(flags & 2)
    return seq
