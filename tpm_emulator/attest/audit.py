"""Command audit (Part 1, "Command Audit"; Part 3, 18.6 and 21): which commands are
audited, with which hash, and the running digest over them.

After every successful audited command the TPM extends
``auditDigest := H_auditAlg(auditDigest || cpHash || rpHash)`` (cpHash and rpHash with
the audit hash, Part 1, 18.7/18.8). The first audited command after the digest was
emptied starts from a zero digest and increments ``auditCounter`` (so a verifier can
tell one audit run from the next). TPM2_GetCommandAuditDigest with a signing key
empties the digest; a TPM Reset does too, but a TPM Restart or Resume does not (the
reference keeps it in ``gr``). We tell a TPM Reset by the nullProof, which is renewed
at exactly those startups: the digest carries a fingerprint of the nullProof it was
built under, and under another one it reads as empty.

The audited list, the hash and the counter are permanent (PermanentState, with a
trailing snapshot record). TPM2_SetCommandCodeAuditStatus is always audited and
TPM2_Shutdown never is (Part 3, 21.2.1).

The hook: ``before_command`` runs once authorization has passed (cpHash needs the
handles' Names as they were *before* the command — NV_Write or NV_UndefineSpace change
or remove them), ``after_command`` when the response parameters are known.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from ..codec import UINT64, Int, ListOf, Sized
from ..constants import CC, RC, TPM_ALG
from ..crypto import CONTEXT_HASH, HASHES, MAX_DIGEST_SIZE

if TYPE_CHECKING:
    from ..tpm import TPM

ALWAYS_AUDITED = CC.SetCommandCodeAuditStatus
NEVER_AUDITED = CC.Shutdown
# The reference starts auditing with its context integrity hash (TPM_Manufacture), as
# libtpms does: SHA-512.
DEFAULT_AUDIT_HASH = CONTEXT_HASH.alg
# The epoch fingerprint stays SHA-256 whatever the context hash: it is stored in
# snapshots, and one written before SHA-512 must still match its own nullProof.
_EPOCH_HASH = HASHES[TPM_ALG.SHA256]
_U32 = struct.Struct(">I")


@dataclass
class CommandAudit:
    """The command audit state (the reference's gp.auditCommands, gp.auditHashAlg,
    gp.auditCounter and gr.commandAuditDigest)."""

    hash_alg: int = DEFAULT_AUDIT_HASH
    commands: set[int] = field(default_factory=lambda: {int(ALWAYS_AUDITED)})
    counter: int = 0
    digest: bytes = b""  # empty: nothing audited since it was last emptied
    epoch: bytes = b""  # fingerprint of the nullProof the digest belongs to
    # Set by SetCommandCodeAuditStatus when it changes the hash: that command itself is
    # then not audited, and the digest starts over (the reference's "size 1" marker).
    skip_next: bool = False
    pending: tuple[int, bytes] | None = None  # (command code, cpHash) being executed

    def current_digest(self, null_proof: bytes) -> bytes:
        """The digest as TPM2_GetCommandAuditDigest reports it (empty after a Reset)."""
        return self.digest if self.epoch == _fingerprint(null_proof) else b""

    def command_digest(self) -> bytes:
        """H_auditAlg of the audited command codes in ascending order (Part 3, 18.6)."""
        return HASHES[self.hash_alg].digest(*(_U32.pack(c) for c in sorted(self.commands)))

    def set(self, cc: int) -> None:
        if cc != NEVER_AUDITED:
            self.commands.add(cc)

    def clear(self, cc: int) -> None:
        if cc != ALWAYS_AUDITED:
            self.commands.discard(cc)

    def change_hash(self, alg: int) -> None:
        self.hash_alg = alg
        self.digest = b""
        self.skip_next = True


def _fingerprint(null_proof: bytes) -> bytes:
    return _EPOCH_HASH.digest(b"command audit epoch\x00", null_proof)[:8]


def before_command(tpm: TPM, cc: int, handles: list[int], params: bytes) -> None:
    """Remember cpHash := H_auditAlg(cc || Names || parameters) if ``cc`` is audited."""
    audit = tpm.perm.command_audit
    audit.pending = None
    if cc not in audit.commands:
        return
    names = [tpm.entity(h).name for h in handles]
    cp = HASHES[audit.hash_alg].digest(_U32.pack(cc), *names, params)
    audit.pending = (cc, cp)


def after_command(tpm: TPM, cc: int, rparams: bytes) -> None:
    """Extend the audit digest with the command that just succeeded, if audited."""
    audit = tpm.perm.command_audit
    pending, audit.pending = audit.pending, None
    if pending is None or pending[0] != cc or not tpm.started:
        return
    if audit.skip_next:
        audit.skip_next = False
        return
    h = HASHES[audit.hash_alg]
    null_proof = tpm.reset_data.null_proof
    old = audit.current_digest(null_proof)
    if not old:
        old = bytes(h.size)
        audit.counter = (audit.counter + 1) & 0xFFFFFFFFFFFFFFFF
    rp = h.digest(struct.pack(">II", RC.SUCCESS, cc), rparams)
    audit.digest = h.digest(old, pending[1], rp)
    audit.epoch = _fingerprint(null_proof)


# ---- snapshot record -----------------------------------------------------------------------
@dataclass(frozen=True)
class CommandAuditRecord:
    """The command audit trailer of a state blob, version 1."""

    version: Annotated[int, Int("B", (1,), RC.INTEGRITY)]
    hashAlg: Annotated[int, Int("H", HASHES, RC.HASH)]
    counter: UINT64
    commands: Annotated[tuple[int, ...], ListOf(Annotated[int, Int("I")], 1024)]
    digest: Annotated[bytes, Sized(MAX_DIGEST_SIZE)]
    epoch: Annotated[bytes, Sized(32)]


def audit_record(audit: CommandAudit) -> CommandAuditRecord:
    return CommandAuditRecord(1, audit.hash_alg, audit.counter, tuple(sorted(audit.commands)),
                              audit.digest, audit.epoch)


def audit_from_record(rec: CommandAuditRecord) -> CommandAudit:
    commands = set(rec.commands) | {int(ALWAYS_AUDITED)}
    return CommandAudit(rec.hashAlg, commands, rec.counter, rec.digest, rec.epoch)
