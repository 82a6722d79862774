"""The session table (Part 1, 19.6 and 30.5): loaded sessions, the saved-context
bookkeeping that refuses stale or replayed blobs, the saved-context plaintext and the
snapshot records of what sessions keep for encryption and audit. Authorization itself
(the authorization area, HMACs, parameter encryption) is in ``sessions.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from .codec import UINT8, UINT32, Int, ListOf, Sized, unmarshal
from .constants import (
    HT,
    MAX_ACTIVE_SESSIONS,
    MAX_LOADED_SESSIONS,
    RC,
    RH,
    SE,
    TPM_ALG,
)
from .crypto import HASHES, HashAlg
from .errors import StateFormatError, TpmError
from .policy.context import MAX_ENCODED as MAX_POLICY_STATE
from .policy.context import PolicyContext
from .structures import TPM2B_AUTH, TPM2B_DIGEST, TPM2B_NONCE, TPMT_SYM_DEF

HMAC_SESSION_FIRST = HT.HMAC_SESSION << 24
POLICY_SESSION_FIRST = HT.POLICY_SESSION << 24
TPM_RS_PW = RH.PW


def is_session_handle(handle: int) -> bool:
    return (handle >> 24) in (HT.HMAC_SESSION, HT.POLICY_SESSION) and (
        handle & 0xFFFFFF
    ) < MAX_ACTIVE_SESSIONS


NULL_SYM = TPMT_SYM_DEF(TPM_ALG.NULL)
TPMI_SH_AUTH_SESSION = Annotated[
    int,
    Int(
        "I",
        (
            TPM_RS_PW,
            *range(HMAC_SESSION_FIRST, HMAC_SESSION_FIRST + MAX_ACTIVE_SESSIONS),
            *range(POLICY_SESSION_FIRST, POLICY_SESSION_FIRST + MAX_ACTIVE_SESSIONS),
        ),
        RC.VALUE,
    ),
]


@dataclass(frozen=True)
class TPMS_AUTH_COMMAND:
    """Part 2, 10.13.2."""

    sessionHandle: TPMI_SH_AUTH_SESSION
    nonce: TPM2B_NONCE
    sessionAttributes: UINT8
    hmac: TPM2B_AUTH


@dataclass
class Session:
    """A loaded session (Part 1, 19.6): what the TPM keeps between commands."""

    index: int
    kind: int  # SE.HMAC / SE.POLICY / SE.TRIAL
    auth_hash: int
    nonce_tpm: bytes
    session_key: bytes = b""
    # A bound HMAC session's bound-entity value (session_crypto.bound_entity: the bind
    # entity's Name with its authValue folded in); empty when unbound or a policy session.
    bind_name: bytes = b""
    policy_digest: bytes = b""
    policy: PolicyContext = field(default_factory=PolicyContext)
    symmetric: TPMT_SYM_DEF = NULL_SYM  # parameter encryption (Part 1, 21)
    # Session audit (Part 1, 19.6.x): empty until the session is first used with the audit
    # attribute (the reference's isAudit), then H(digest || cpHash || rpHash) per command.
    # TPM2_GetSessionAuditDigest reports it; whether it is exclusive is
    # ``SessionTable.is_exclusive_audit(session)``.
    audit_digest: bytes = b""
    # Whether the authorization this command passed keyed its HMAC with the entity's
    # authValue (the reference's includeAuth, set in authorize). The response HMAC keeps
    # that choice even when the command itself ends the binding (a session starting to
    # audit becomes unbound; HierarchyChangeAuth changes the bound authValue): the caller
    # answers with the key it used for the command. Not part of a saved context.
    include_auth: bool = True

    @property
    def handle(self) -> int:
        first = HMAC_SESSION_FIRST if self.kind == SE.HMAC else POLICY_SESSION_FIRST
        return first + self.index

    @property
    def hash(self) -> HashAlg:
        return HASHES[self.auth_hash]


@dataclass(frozen=True)
class SessionContext:
    """Plaintext of a saved session context blob; versioned like every format we write."""

    version: Annotated[int, Int("B", (3,), RC.INTEGRITY)]  # 3: symmetric, auditDigest
    kind: UINT8
    authHash: Annotated[int, Int("H", HASHES, RC.INTEGRITY)]
    nonceTPM: TPM2B_DIGEST
    sessionKey: TPM2B_DIGEST
    bindName: Annotated[bytes, Sized(128)]
    policyDigest: TPM2B_DIGEST
    policyState: Annotated[bytes, Sized(MAX_POLICY_STATE)]
    symmetric: TPMT_SYM_DEF
    auditDigest: TPM2B_DIGEST

    @classmethod
    def of(cls, s: Session) -> SessionContext:
        return cls(3, s.kind, s.auth_hash, s.nonce_tpm, s.session_key, s.bind_name,
                   s.policy_digest, s.policy.encode(), s.symmetric, s.audit_digest)

    def session(self, index: int) -> Session:
        return Session(index, self.kind, self.authHash, self.nonceTPM, self.sessionKey,
                       self.bindName, self.policyDigest, PolicyContext.decode(self.policyState),
                       self.symmetric, self.auditDigest)


@dataclass
class SessionTable:
    """Loaded sessions plus the "contextArray" of saved ones (Part 1, 30.5): a saved
    session is remembered only by its slot and the sequence number of its one valid
    context, so an old or replayed blob is refused."""

    loaded: dict[int, Session] = field(default_factory=dict)
    saved: dict[int, int] = field(default_factory=dict)  # slot -> context sequence
    context_counter: int = MAX_LOADED_SESSIONS + 1
    # The exclusive audit session's handle, 0 for none (the reference's
    # g_exclusiveAuditSession, Part 1, 19.6.x): the audit session of the last command
    # that had one, lost when any other command that allows sessions runs without it.
    exclusive_audit: int = 0

    def is_exclusive_audit(self, s: Session) -> bool:
        return bool(s.audit_digest) and self.exclusive_audit == s.handle

    def active(self) -> int:
        return len(self.loaded) + len(self.saved)

    def find_loaded(self, handle: int) -> Session | None:
        """The loaded session a handle names. The slot is the low bits; the handle's
        type must match the session's (HMAC vs policy)."""
        s = self.loaded.get(handle & 0xFFFFFF)
        return s if s is not None and s.handle == handle else None

    def start(self, kind: int, auth_hash: int, nonce_tpm: bytes, session_key: bytes,
              bind_name: bytes, symmetric: TPMT_SYM_DEF = NULL_SYM) -> Session:
        if len(self.loaded) >= MAX_LOADED_SESSIONS:
            raise TpmError(RC.SESSION_MEMORY)
        if self.active() >= MAX_ACTIVE_SESSIONS:
            raise TpmError(RC.SESSION_HANDLES)
        index = next(i for i in range(MAX_ACTIVE_SESSIONS)
                     if i not in self.loaded and i not in self.saved)
        digest = bytes(HASHES[auth_hash].size) if kind != SE.HMAC else b""
        s = Session(index, kind, auth_hash, nonce_tpm, session_key, bind_name, digest,
                    symmetric=symmetric)
        self.loaded[index] = s
        return s

    def flush(self, handle: int) -> bool:
        if handle == self.exclusive_audit:  # reference TPM2_FlushContext
            self.exclusive_audit = 0
        index = handle & 0xFFFFFF
        if self.loaded.pop(index, None) is not None:
            return True
        return self.saved.pop(index, None) is not None

    def save(self, s: Session) -> int:
        sequence = self.context_counter
        self.context_counter += 1
        del self.loaded[s.index]
        self.saved[s.index] = sequence
        return sequence

    def reload(self, index: int, sequence: int, ctx: SessionContext) -> Session:
        if self.saved.get(index) != sequence:
            raise TpmError(RC.HANDLE, "session context is not the current one")
        if len(self.loaded) >= MAX_LOADED_SESSIONS:
            raise TpmError(RC.SESSION_MEMORY)
        del self.saved[index]
        s = ctx.session(index)
        self.loaded[index] = s
        return s


@dataclass(frozen=True)
class LoadedSessionCryptoRecord:
    """Snapshot record of what a loaded session keeps for encryption and audit (the
    older LoadedSessionRecord in state.py holds the rest, unchanged for old blobs)."""

    index: UINT8
    symmetric: TPMT_SYM_DEF
    auditDigest: TPM2B_DIGEST


@dataclass(frozen=True)
class SessionCryptoRecord:
    """Snapshot record (a trailing StateRecord field): the exclusive audit session and
    the loaded sessions' symmetric definitions and audit digests."""

    exclusiveAudit: UINT32
    loaded: Annotated[tuple[LoadedSessionCryptoRecord, ...],
                      ListOf(LoadedSessionCryptoRecord, MAX_LOADED_SESSIONS)]


def crypto_record(table: SessionTable) -> SessionCryptoRecord:
    return SessionCryptoRecord(table.exclusive_audit, tuple(
        LoadedSessionCryptoRecord(i, s.symmetric, s.audit_digest)
        for i, s in sorted(table.loaded.items())))


def restore_crypto_record(table: SessionTable, rec: SessionCryptoRecord) -> None:
    """Put a snapshot's encryption and audit state back on the loaded sessions; a blob
    from before this record leaves them unencrypted, unaudited."""
    for r in rec.loaded:
        s = table.loaded.get(r.index)
        if s is None:
            raise StateFormatError("session record for a session that is not loaded")
        s.symmetric = r.symmetric
        s.audit_digest = r.auditDigest
    table.exclusive_audit = rec.exclusiveAudit


def decode_session_context(plaintext: bytes) -> SessionContext:
    try:
        return unmarshal(SessionContext, plaintext)
    except TpmError:
        raise TpmError(RC.INTEGRITY) from None

