"""The TPM's state, and its snapshot format.

Live state is split as Part 1 splits it (and the reference's ``gp``/``gr``/``gc``):

* ``PermanentState`` — survives everything but manufacture: primary seeds, hierarchy
  proofs, Clock, reset/restart counts, NV indices (``nv/store.py``), and what the last
  TPM2_Shutdown left behind.
* ``ResetData`` — lives from one TPM Reset to the next: nullProof, PCR values and
  pcrUpdateCounter, the context counter and the saved-session table. TPM2_Shutdown(STATE)
  stores a copy of it so a TPM Restart/Resume can bring it back.
* volatile state (in ``TPM``) — started flag, loaded sessions, Time.

``encode``/``decode`` turn all of it into a versioned blob: magic, format version, the
body in the TPM's own big-endian wire encoding (deterministic: same state, same bytes),
and a SHA-256 over all of it to catch corruption. Loaded sessions are kept in the
snapshot, so a restored TPM continues mid-session. The blob is *not* encrypted or
authenticated against an attacker: the vTPM manager seals it.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from typing import Annotated, Any

from .admin.allocation import PcrAllocation, PcrAllocationRecord
from .admin.state import AdminRecord, AdminState, StateClear
from .attest.audit import CommandAudit, CommandAuditRecord
from .codec import UINT8, UINT32, UINT64, Int, ListOf, Reader, Sized, Wire, unmarshal
from .constants import (
    IMPLEMENTATION_PCR,
    MAX_ACTIVE_SESSIONS,
    MAX_LOADED_SESSIONS,
    RC,
    SE,
    TPM_ALG,
)
from .crypto import HASHES
from .errors import StateFormatError, TpmError
from .keys.commit import CommitRecord, CommitState
from .lifecycle import Orderly
from .nv.store import NvStateRecord, NvStore
from .objects.store import MAX_PERSISTENT_OBJECTS, LoadedObject, ObjectRecord
from .pcr import PcrBanks
from .policy.context import MAX_ENCODED as MAX_POLICY_STATE
from .policy.context import PolicyContext
from .session_table import Session, SessionCryptoRecord, SessionTable

SEED_SIZE = 64  # octets: a SHA-512 digest, the largest nameAlg a primary key may have
PROOF_SIZE = 64

MAGIC = b"VTPMSTAT"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sHI")


@dataclass
class ResetData:
    """State that lives from one TPM Reset to the next (the reference's ``gr``)."""

    null_proof: bytes = field(default_factory=lambda: os.urandom(PROOF_SIZE))
    pcrs: PcrBanks = field(default_factory=PcrBanks)
    sessions: SessionTable = field(default_factory=SessionTable)
    objects: dict[int, LoadedObject] = field(default_factory=dict)  # transient slots
    stclear: StateClear = field(default_factory=StateClear)  # enables, platformAuth
    commit: CommitState = field(default_factory=CommitState)  # keys/commit.py

    def saved_copy(self) -> ResetData:
        """What Shutdown(STATE) keeps: everything but the loaded sessions."""
        table = SessionTable({}, dict(self.sessions.saved), self.sessions.context_counter)
        return ResetData(self.null_proof, self.pcrs.copy(), table,
                         stclear=self.stclear.copy(), commit=self.commit.copy())


@dataclass
class PermanentState:
    """Survives power loss and every kind of Startup (the reference's ``gp``)."""

    eps: bytes
    sps: bytes
    pps: bytes
    ph_proof: bytes
    sh_proof: bytes
    eh_proof: bytes
    clock_ms: int = 0
    reset_count: int = 0
    restart_count: int = 0
    orderly: Orderly = Orderly.NONE
    shutdown_state: ResetData | None = None  # present after Shutdown(STATE)
    persistent: dict[int, LoadedObject] = field(default_factory=dict)  # EvictControl
    nv: NvStore = field(default_factory=NvStore)  # NV indices (nv/store.py)
    command_audit: CommandAudit = field(default_factory=CommandAudit)  # attest/audit.py
    admin: AdminState = field(default_factory=AdminState)  # hierarchy auths, DA
    pcr_allocation: PcrAllocation = field(default_factory=PcrAllocation)  # PCR_Allocate

    @classmethod
    def manufacture(cls) -> PermanentState:
        """Fresh random seeds and proofs: what a TPM gets in the factory."""
        r = os.urandom
        # Leaving the factory counts as an orderly shutdown (swtpm reports a fresh TPM's
        # first Startup as orderly, with Clock "safe").
        return cls(r(SEED_SIZE), r(SEED_SIZE), r(SEED_SIZE),
                   r(PROOF_SIZE), r(PROOF_SIZE), r(PROOF_SIZE), orderly=Orderly.CLEAR)


# ---- snapshot records: the same codec as the wire, so the encoding is fixed ----------
_Secret = Annotated[bytes, Sized(PROOF_SIZE, PROOF_SIZE)]
_Digest = Annotated[bytes, Sized(64)]
_Hash = Annotated[int, Int("H", HASHES, RC.HASH)]


@dataclass(frozen=True)
class PcrBankRecord:
    alg: _Hash
    values: Annotated[tuple[bytes, ...], ListOf(_Digest, IMPLEMENTATION_PCR)]


@dataclass(frozen=True)
class SavedSlotRecord:
    index: UINT8
    sequence: UINT64


@dataclass(frozen=True)
class LoadedSessionRecord:
    index: UINT8
    kind: Annotated[int, Int("B", tuple(SE))]
    authHash: _Hash
    nonceTPM: _Digest
    sessionKey: _Digest
    bindName: Annotated[bytes, Sized(128)]
    policyDigest: _Digest
    policyState: Annotated[bytes, Sized(MAX_POLICY_STATE)]


@dataclass(frozen=True)
class ResetDataRecord:
    nullProof: _Secret
    pcrUpdateCounter: UINT32
    pcrs: Annotated[tuple[PcrBankRecord, ...], ListOf(PcrBankRecord, len(HASHES))]
    contextCounter: UINT64
    savedSessions: Annotated[tuple[SavedSlotRecord, ...], ListOf(SavedSlotRecord,
                                                                 MAX_ACTIVE_SESSIONS)]
    loadedSessions: Annotated[tuple[LoadedSessionRecord, ...], ListOf(LoadedSessionRecord,
                                                                      MAX_LOADED_SESSIONS)]


class Trailing(Wire):
    """A record appended to format version 1 after it shipped: absent (older blob) reads
    as the empty list, so blobs written before it still restore."""

    def __init__(self, inner: Wire) -> None:
        self.inner = inner

    def read(self, r: Reader, prior: dict[str, Any]) -> Any:
        return self.inner.read(r, prior) if r.remaining() else ()

    def write(self, out: bytearray, value: Any, obj: Any) -> None:
        self.inner.write(out, value, obj)


@dataclass(frozen=True)
class StateRecord:
    """Format version 1 of the whole TPM."""

    eps: _Secret
    sps: _Secret
    pps: _Secret
    phProof: _Secret
    shProof: _Secret
    ehProof: _Secret
    clock: UINT64
    resetCount: UINT32
    restartCount: UINT32
    orderly: Annotated[int, Int("B", tuple(Orderly))]
    shutdownState: Annotated[tuple[ResetDataRecord, ...], ListOf(ResetDataRecord, 1)]
    started: Annotated[int, Int("B", (0, 1))]
    startupOrderly: Annotated[int, Int("B", (0, 1))]
    clockSafe: Annotated[int, Int("B", (0, 1))]
    time: UINT64
    current: Annotated[tuple[ResetDataRecord, ...], ListOf(ResetDataRecord, 1)]
    # Trailing records (still format version 1): persistent and loaded transient objects.
    persistentObjects: Annotated[tuple[ObjectRecord, ...], Trailing(
        ListOf(ObjectRecord, MAX_PERSISTENT_OBJECTS))] = ()
    transientObjects: Annotated[tuple[ObjectRecord, ...], Trailing(
        ListOf(ObjectRecord, MAX_PERSISTENT_OBJECTS))] = ()
    # Trailing record: the NV indices and the counters' high-water mark (none: no NV).
    nvState: Annotated[tuple[NvStateRecord, ...], Trailing(ListOf(NvStateRecord, 1))] = ()
    # Trailing record: session encryption and audit state of the current reset data.
    sessionCrypto: Annotated[tuple[SessionCryptoRecord, ...], Trailing(
        ListOf(SessionCryptoRecord, 1))] = ()
    # Trailing record: the command audit list, hash, counter and digest (attest/audit.py).
    commandAudit: Annotated[tuple[CommandAuditRecord, ...], Trailing(
        ListOf(CommandAuditRecord, 1))] = ()
    # Trailing record: hierarchy authorizations, enables and dictionary-attack state
    # (admin/state.py).
    adminState: Annotated[tuple[AdminRecord, ...], Trailing(ListOf(AdminRecord, 1))] = ()
    # Trailing record: the active and the pending PCR allocation (admin/allocation.py).
    pcrAllocation: Annotated[tuple[PcrAllocationRecord, ...], Trailing(
        ListOf(PcrAllocationRecord, 1))] = ()
    # Trailing record: TPM2_SetAlgorithmSet's value (admin/handlers.py).
    algorithmSet: Annotated[tuple[int, ...], Trailing(ListOf(UINT32, 1))] = ()
    # Trailing record: the ECC commit nonce, counter and array (keys/commit.py).
    commitState: Annotated[tuple[CommitRecord, ...], Trailing(ListOf(CommitRecord, 1))] = ()


def reset_record(rd: ResetData) -> ResetDataRecord:
    return ResetDataRecord(
        rd.null_proof,
        rd.pcrs.update_counter,
        tuple(PcrBankRecord(alg, tuple(v)) for alg, v in sorted(rd.pcrs.banks.items())),
        rd.sessions.context_counter,
        tuple(SavedSlotRecord(i, s) for i, s in sorted(rd.sessions.saved.items())),
        tuple(
            LoadedSessionRecord(s.index, s.kind, s.auth_hash, s.nonce_tpm, s.session_key,
                                s.bind_name, s.policy_digest, s.policy.encode())
            for _, s in sorted(rd.sessions.loaded.items())
        ),
    )


# The PCR banks of snapshots written before SHA-512 was implemented.
_BANKS_BEFORE_SHA512 = (TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384)


def reset_data(rec: ResetDataRecord) -> ResetData:
    """Rebuild live reset data, refusing anything our own encoder could not have written.

    A snapshot written before SHA-512 was implemented has three banks. It restores with
    a SHA-512 bank at its TPM Reset values (zero, all ones for the D-RTM PCRs 17-22), as
    if TPM2_PCR_Allocate had added the bank (Part 3, 22.5) and it had never been
    extended since: its PCR 0-15 then hold none of the measurements the other banks
    hold, so a verifier must not trust that bank unless the measuring software extends
    it too."""
    pcrs = PcrBanks()
    algs = sorted(b.alg for b in rec.pcrs)
    if algs != sorted(HASHES) and tuple(algs) != _BANKS_BEFORE_SHA512:
        raise StateFormatError("PCR banks do not match this TPM's hash algorithms")
    pcrs.initialise(startup_locality=0)
    for bank in rec.pcrs:
        size = HASHES[bank.alg].size
        if len(bank.values) != IMPLEMENTATION_PCR or any(len(v) != size for v in bank.values):
            raise StateFormatError(f"PCR bank 0x{bank.alg:04X} is malformed")
        pcrs.banks[bank.alg] = list(bank.values)
    pcrs.update_counter = rec.pcrUpdateCounter
    table = SessionTable({}, {}, rec.contextCounter)
    for slot in rec.savedSessions:
        if slot.index >= MAX_ACTIVE_SESSIONS or slot.index in table.saved:
            raise StateFormatError("saved session table is malformed")
        table.saved[slot.index] = slot.sequence
    for s in rec.loadedSessions:
        if s.index >= MAX_ACTIVE_SESSIONS or s.index in table.saved or s.index in table.loaded:
            raise StateFormatError("loaded session table is malformed")
        try:
            policy = PolicyContext.decode(s.policyState)
        except TpmError:
            raise StateFormatError("a loaded session's policy state is malformed") from None
        table.loaded[s.index] = Session(s.index, s.kind, s.authHash, s.nonceTPM,
                                        s.sessionKey, s.bindName, s.policyDigest, policy)
    return ResetData(rec.nullProof, pcrs, table)


def encode(record: StateRecord) -> bytes:
    from .codec import marshal

    body = marshal(record)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body))
    return head + body + hashlib.sha256(head + body).digest()


def decode(blob: bytes) -> StateRecord:
    """Parse a snapshot, raising ``StateFormatError`` for anything but a sound v1 blob."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise StateFormatError(f"a TPM state blob is bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _HEADER.size + 32:
        raise StateFormatError("not a TPM state blob: too short")
    magic, version, length = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise StateFormatError("not a TPM state blob: bad magic")
    if version != FORMAT_VERSION:
        raise StateFormatError(
            f"TPM state format version {version} is not supported (this build reads "
            f"version {FORMAT_VERSION})"
        )
    if len(blob) != _HEADER.size + length + 32:
        raise StateFormatError("TPM state blob length does not match its header")
    body_end = _HEADER.size + length
    if hashlib.sha256(blob[:body_end]).digest() != blob[body_end:]:
        raise StateFormatError("TPM state blob is corrupted (checksum mismatch)")
    try:
        return unmarshal(StateRecord, blob[_HEADER.size : body_end])
    except TpmError as e:
        raise StateFormatError(f"TPM state blob body is malformed ({e})") from None


