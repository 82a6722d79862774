"""The commit counter and commit array of the anonymous (split) signing schemes and
the two-phase key exchange (Part 1, Annex C; Part 3, 19.2-19.3 and 14.7).

TPM2_Commit and TPM2_EC_Ephemeral hand the caller a 16-bit ``counter`` that names a
secret value r the TPM can later recompute: r = KDFa(commitNonce, "ECDAA Commit",
name, commitCount, bits of n), retried with the next KDF counter until 0 < r < n. The
nonce is a per-TPM-Reset secret, so the TPM stores only the nonce, the 64-bit count of
commitments made, and one bit per recent commitment that is still unused. A signature
(ECDAA) or a TPM2_ZGen_2Phase uses the value once: its bit is cleared afterwards.

Like the reference (``gr.commitNonce``, ``gr.commitCounter``, ``gr.commitArray``) this
is TPM Reset data: a new nonce, count 0 and an empty array at every TPM Reset; kept
across a TPM Restart and Resume by Shutdown(STATE). The bit array is 128 bits (as
libtpms'), so at most 128 commitments are outstanding; the count's bits above the
array index catch a counter that was left behind by 128 or more later commitments.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from ..codec import UINT64, Int, ListOf, Sized
from ..constants import TPM_ALG
from ..crypto import HASHES
from ..errors import StateFormatError
from .ec_math import Curve

if TYPE_CHECKING:
    from ..tpm import TPM

COMMIT_SLOTS = 128  # bits in the commit array (libtpms: BYTE commitArray[16])
COMMIT_INDEX_MASK = COMMIT_SLOTS - 1
NONCE_SIZE = 64  # a TPM2B_NONCE at its largest (SHA-512)
COMMIT_LABEL = b"ECDAA Commit"
# The hash of the commit KDF is the TPM's own choice (the reference uses its context
# integrity hash); r is never seen outside the TPM, so it only has to be fixed.
COMMIT_HASH = TPM_ALG.SHA512
_MAX_TRIES = 1000


@dataclass
class CommitState:
    """commitNonce, commitCounter and commitArray (the array as an integer bitmap)."""

    nonce: bytes = field(default_factory=lambda: os.urandom(NONCE_SIZE))
    counter: int = 0
    array: int = 0

    def copy(self) -> CommitState:
        return CommitState(self.nonce, self.counter, self.array)

    def commit(self) -> int:
        """Mark the current count committed and advance it; returns the low 16 bits of
        the count the commitment was made with (CryptCommit)."""
        old = self.counter & 0xFFFF
        self.counter = (self.counter + 1) & 0xFFFFFFFFFFFFFFFF
        self.array |= 1 << (old & COMMIT_INDEX_MASK)
        return old

    def end_commit(self, c: int) -> None:
        """The value of counter ``c`` has been used: it cannot be used again."""
        self.array &= ~(1 << (c & COMMIT_INDEX_MASK))

    def count_for(self, c: int) -> int | None:
        """The full 64-bit count that a caller's 16-bit ``c`` was issued at, or None if
        that commitment is not outstanding (its bit is clear, or ``c`` is out of range
        of the recent counts). Follows the reference's CryptGenerateR."""
        if not self.array >> (c & COMMIT_INDEX_MASK) & 1:
            return None
        current = self.counter
        if (c & COMMIT_INDEX_MASK) >= (current & COMMIT_INDEX_MASK):
            current = (current - COMMIT_SLOTS) & 0xFFFFFFFFFFFFFFFF  # one lap back
        if (current & 0xFFFF & ~COMMIT_INDEX_MASK) != (c & ~COMMIT_INDEX_MASK):
            return None
        return (current & ~0xFFFF) | c


def generate_r(state: CommitState, c: int | None, curve: Curve, name: bytes) -> int | None:
    """r for the current count (``c`` None: Commit, EC_Ephemeral) or for the count
    that the caller's ``c`` was issued at (Sign with ECDAA, ZGen_2Phase); None when
    ``c`` names no outstanding commitment. ``name`` is the key's Name (empty for
    EC_Ephemeral), binding r to the key.

    KDFa's counter runs on across retries (as in the reference), so a candidate that
    is not below n, or has nothing in its upper half, is replaced by the next block."""
    count = state.counter if c is None else state.count_for(c)
    if count is None:
        return None
    h = HASHES[COMMIT_HASH]
    size = (curve.n.bit_length() + 7) // 8
    label = COMMIT_LABEL + b"\x00"
    tail = label + name + struct.pack(">Q", count) + struct.pack(">I", size * 8)
    counter = 1
    for _ in range(_MAX_TRIES):
        out = bytearray()
        while len(out) < size:
            out += h.hmac(state.nonce, struct.pack(">I", counter), tail)
            counter += 1
        candidate = bytes(out[:size])
        if int.from_bytes(candidate, "big") >= curve.n:
            continue
        if any(candidate[: size // 2 + 1]):
            return int.from_bytes(candidate, "big")
    return None  # pragma: no cover - would need 1000 bad KDF blocks in a row


# ---- snapshot record ------------------------------------------------------------------
_Nonce = Annotated[bytes, Sized(NONCE_SIZE, NONCE_SIZE)]
_Array = Annotated[bytes, Sized(COMMIT_SLOTS // 8, COMMIT_SLOTS // 8)]


@dataclass(frozen=True)
class CommitStateRecord:
    nonce: _Nonce
    counter: UINT64
    array: _Array


@dataclass(frozen=True)
class CommitRecord:
    """The commit state of the current reset data and of the one Shutdown(STATE)
    saved (each present exactly when that reset data is)."""

    version: Annotated[int, Int("B", (1,))]
    current: Annotated[tuple[CommitStateRecord, ...], ListOf(CommitStateRecord, 1)]
    shutdown: Annotated[tuple[CommitStateRecord, ...], ListOf(CommitStateRecord, 1)]


def _record(s: CommitState) -> CommitStateRecord:
    return CommitStateRecord(s.nonce, s.counter, s.array.to_bytes(COMMIT_SLOTS // 8, "big"))


def _state(r: CommitStateRecord) -> CommitState:
    return CommitState(r.nonce, r.counter, int.from_bytes(r.array, "big"))


def record_of(tpm: TPM) -> CommitRecord:
    rd, saved = tpm._rd, tpm.perm.shutdown_state
    return CommitRecord(1, (_record(rd.commit),) if rd is not None else (),
                        (_record(saved.commit),) if saved is not None else ())


def restore(tpm: TPM, records: tuple[CommitRecord, ...]) -> None:
    """Put the commit state back; a blob written before the record existed leaves the
    fresh state of a TPM Reset (outstanding commitments from then are lost)."""
    if not records:
        return
    rec = records[0]
    rd, saved = tpm._rd, tpm.perm.shutdown_state
    if bool(rec.current) != (rd is not None) or bool(rec.shutdown) != (saved is not None):
        raise StateFormatError("commit state does not match the reset data")
    if rd is not None:
        rd.commit = _state(rec.current[0])
    if saved is not None:
        saved.commit = _state(rec.shutdown[0])
