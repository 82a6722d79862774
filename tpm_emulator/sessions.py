"""Authorization sessions: the session table, the authorization area, session HMACs.

Part 1, clause 19 (authorizations), 19.6 (HMAC sessions), 30 (context management);
Part 2, 10.13 (TPMS_AUTH_COMMAND / _RESPONSE). Supported: password authorizations
(TPM_RS_PW) and unsalted HMAC, policy and trial sessions with symmetric TPM_ALG_NULL,
unbound or bound to an entity whose authValue we know. Not yet: salted sessions,
parameter encryption, audit sessions.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Annotated

from .codec import UINT8, Int, Reader, Sized, unmarshal, unmarshal_from
from .constants import (
    HT,
    MAX_ACTIVE_SESSIONS,
    MAX_LOADED_SESSIONS,
    MAX_SESSION_NUM,
    RC,
    RH,
    SE,
    TPMA_SESSION,
    TPMA_SESSION_RESERVED,
)
from .crypto import HASHES, HashAlg, equal, kdfa
from .errors import TpmError, with_session
from .policy.context import MAX_ENCODED as MAX_POLICY_STATE
from .policy.context import PolicyContext
from .structures import TPM2B_AUTH, TPM2B_DIGEST, TPM2B_NONCE

HMAC_SESSION_FIRST = HT.HMAC_SESSION << 24
POLICY_SESSION_FIRST = HT.POLICY_SESSION << 24
TPM_RS_PW = RH.PW


def is_session_handle(handle: int) -> bool:
    return (handle >> 24) in (HT.HMAC_SESSION, HT.POLICY_SESSION) and (
        handle & 0xFFFFFF
    ) < MAX_ACTIVE_SESSIONS


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
    bind_name: bytes = b""  # Name of the bound entity, empty when unbound
    policy_digest: bytes = b""
    policy: PolicyContext = field(default_factory=PolicyContext)

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

    version: Annotated[int, Int("B", (2,), RC.INTEGRITY)]
    kind: UINT8
    authHash: Annotated[int, Int("H", HASHES, RC.INTEGRITY)]
    nonceTPM: TPM2B_DIGEST
    sessionKey: TPM2B_DIGEST
    bindName: Annotated[bytes, Sized(128)]
    policyDigest: TPM2B_DIGEST
    policyState: Annotated[bytes, Sized(MAX_POLICY_STATE)]

    @classmethod
    def of(cls, s: Session) -> SessionContext:
        return cls(2, s.kind, s.auth_hash, s.nonce_tpm, s.session_key, s.bind_name,
                   s.policy_digest, s.policy.encode())

    def session(self, index: int) -> Session:
        return Session(index, self.kind, self.authHash, self.nonceTPM, self.sessionKey,
                       self.bindName, self.policyDigest, PolicyContext.decode(self.policyState))


@dataclass
class SessionTable:
    """Loaded sessions plus the "contextArray" of saved ones (Part 1, 30.5): a saved
    session is remembered only by its slot and the sequence number of its one valid
    context, so an old or replayed blob is refused."""

    loaded: dict[int, Session] = field(default_factory=dict)
    saved: dict[int, int] = field(default_factory=dict)  # slot -> context sequence
    context_counter: int = MAX_LOADED_SESSIONS + 1

    def active(self) -> int:
        return len(self.loaded) + len(self.saved)

    def find_loaded(self, handle: int) -> Session | None:
        """The loaded session a handle names. The slot is the low bits; the handle's
        type must match the session's (HMAC vs policy)."""
        s = self.loaded.get(handle & 0xFFFFFF)
        return s if s is not None and s.handle == handle else None

    def start(self, kind: int, auth_hash: int, nonce_tpm: bytes, session_key: bytes,
              bind_name: bytes) -> Session:
        if len(self.loaded) >= MAX_LOADED_SESSIONS:
            raise TpmError(RC.SESSION_MEMORY)
        if self.active() >= MAX_ACTIVE_SESSIONS:
            raise TpmError(RC.SESSION_HANDLES)
        index = next(i for i in range(MAX_ACTIVE_SESSIONS)
                     if i not in self.loaded and i not in self.saved)
        digest = bytes(HASHES[auth_hash].size) if kind != SE.HMAC else b""
        s = Session(index, kind, auth_hash, nonce_tpm, session_key, bind_name, digest)
        self.loaded[index] = s
        return s

    def flush(self, handle: int) -> bool:
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


def parse_auth_area(buf: bytes, start: int, size: int) -> list[TPMS_AUTH_COMMAND]:
    """Unmarshal the authorization area (Part 1, 18.4): up to three TPMS_AUTH_COMMAND
    filling exactly ``size`` octets; errors carry the session number."""
    r = Reader(buf[: start + size], start)
    out: list[TPMS_AUTH_COMMAND] = []
    while r.remaining():
        n = len(out) + 1
        if n > MAX_SESSION_NUM:
            raise TpmError(RC.AUTHSIZE, "more than three sessions")
        try:
            auth = unmarshal_from(TPMS_AUTH_COMMAND, r)
        except TpmError as e:
            raise TpmError(with_session(e.rc, n)) from None
        if auth.sessionAttributes & TPMA_SESSION_RESERVED:
            raise TpmError(with_session(RC.RESERVED_BITS, n))
        out.append(auth)
    return out


@dataclass(frozen=True)
class Entity:
    """What authorization needs to know about the object behind a handle."""

    name: bytes
    auth_value: bytes
    auth_policy: bytes
    da_exempt: bool
    # Part 1, 19.x: whether the authValue may be used for this command (an NV index
    # without AUTHREAD cannot be read with it), and whether the role demands a policy
    # session (ADMIN on an NV index); else TPM_RC_AUTH_UNAVAILABLE / TPM_RC_AUTH_TYPE.
    auth_value_available: bool = True
    policy_required: bool = False


def strip_zeros(b: bytes) -> bytes:
    """authValues are compared and used with trailing zero octets removed (Part 1, 19.6.4)."""
    return b.rstrip(b"\x00")


def check_sessions(
    table: SessionTable, auths: list[TPMS_AUTH_COMMAND], n_auth_handles: int,
    decrypt_allowed: bool, encrypt_allowed: bool,
) -> list[Session | None]:
    """Session-level checks before any HMAC is computed (reference ParseSessionBuffer)."""
    sessions: list[Session | None] = []
    seen: set[int] = set()
    for i, auth in enumerate(auths):
        n = i + 1
        attrs = auth.sessionAttributes
        if auth.sessionHandle in seen:
            raise TpmError(with_session(RC.HANDLE, n), "session used twice")
        seen.add(auth.sessionHandle)
        if auth.sessionHandle == TPM_RS_PW:
            if i >= n_auth_handles:  # a password with nothing to authorize (libtpms: HANDLE)
                raise TpmError(with_session(RC.HANDLE, n), "password session with no role")
            if attrs & ~TPMA_SESSION.continueSession:
                raise TpmError(with_session(RC.ATTRIBUTES, n))
            if auth.nonce:
                raise TpmError(with_session(RC.NONCE, n))
            sessions.append(None)
            continue
        s = table.find_loaded(auth.sessionHandle)
        if s is None:
            raise TpmError(RC.REFERENCE_S0 + i, "session not loaded")
        if attrs & (TPMA_SESSION.audit | TPMA_SESSION.auditExclusive | TPMA_SESSION.auditReset):
            raise TpmError(with_session(RC.ATTRIBUTES, n), "audit sessions not implemented")
        for bit, allowed in ((TPMA_SESSION.decrypt, decrypt_allowed),
                             (TPMA_SESSION.encrypt, encrypt_allowed)):
            if attrs & bit:
                # Every session we create has symmetric TPM_ALG_NULL (Part 1, 19.6.x).
                raise TpmError(with_session(RC.SYMMETRIC if allowed else RC.ATTRIBUTES, n))
        if i >= n_auth_handles:
            raise TpmError(with_session(RC.ATTRIBUTES, n), "session with no role")
        sessions.append(s)
    if len(auths) < n_auth_handles:
        raise TpmError(RC.AUTH_MISSING)
    return sessions


def cp_hash(h: HashAlg, cc: int, names: list[bytes], params: bytes) -> bytes:
    """cpHash := H(commandCode || Name1 || Name2 || … || parameters) (Part 1, 18.7)."""
    return h.digest(struct.pack(">I", cc), *names, params)


def rp_hash(h: HashAlg, cc: int, params: bytes) -> bytes:
    """rpHash := H(responseCode || commandCode || parameters) (Part 1, 18.8), rc = 0."""
    return h.digest(struct.pack(">II", 0, cc), params)


def _hmac_key(s: Session, entity: Entity) -> bytes:
    # Part 1, 19.6.8: the entity's authValue joins the key unless the session is bound
    # to that very entity (its authValue is already in sessionKey).
    if s.bind_name and equal(s.bind_name, entity.name):
        return s.session_key
    return s.session_key + strip_zeros(entity.auth_value)


def authorize(
    auths: list[TPMS_AUTH_COMMAND], sessions: list[Session | None], entities: list[Entity],
    cc: int, params: bytes, names: list[bytes] | None = None,
) -> None:
    """Check each authorization against its entity (Part 1, 19.8 / 19.6.5). ``names``
    are the Names of every handle of the command, for cpHash (default: the entities')."""
    cp_cache: dict[int, bytes] = {}
    if names is None:
        names = [e.name for e in entities]
    for i, entity in enumerate(entities):
        auth, s, n = auths[i], sessions[i], i + 1
        fail = RC.BAD_AUTH if entity.da_exempt else RC.AUTH_FAIL
        uses_auth_value = s is None or s.kind == SE.HMAC
        if entity.policy_required and uses_auth_value:
            raise TpmError(RC.AUTH_TYPE, "this role needs a policy session")
        if uses_auth_value and not entity.auth_value_available:
            raise TpmError(RC.AUTH_UNAVAILABLE)
        if s is None:  # password
            if not equal(strip_zeros(auth.hmac), strip_zeros(entity.auth_value)):
                raise TpmError(with_session(fail, n), "password mismatch")
            continue
        if s.kind == SE.TRIAL:
            raise TpmError(with_session(RC.ATTRIBUTES, n), "trial session cannot authorize")
        if s.kind == SE.POLICY:
            if not entity.auth_policy:
                raise TpmError(RC.AUTH_UNAVAILABLE)
            if not equal(s.policy_digest, entity.auth_policy):
                raise TpmError(with_session(RC.POLICY_FAIL, n))
            continue
        cp = cp_cache.get(s.auth_hash)
        if cp is None:
            cp = cp_cache[s.auth_hash] = cp_hash(s.hash, cc, names, params)
        expect = s.hash.hmac(_hmac_key(s, entity), cp, auth.nonce, s.nonce_tpm,
                             bytes([auth.sessionAttributes]))
        if not equal(expect, auth.hmac):
            raise TpmError(with_session(fail, n), "HMAC mismatch")


def build_response_auths(
    table: SessionTable, auths: list[TPMS_AUTH_COMMAND], sessions: list[Session | None],
    entities: list[Entity], cc: int, rparams: bytes,
) -> bytes:
    """The response authorization area (Part 1, 19.6.6): roll nonceTPM, HMAC the
    response, and flush sessions whose continueSession was clear."""
    out = bytearray()
    rp_cache: dict[int, bytes] = {}
    for auth, s, entity in zip(auths, sessions, entities, strict=True):
        attrs = bytes([auth.sessionAttributes])
        if s is None:
            out += b"\x00\x00" + bytes([TPMA_SESSION.continueSession]) + b"\x00\x00"
            continue
        s.nonce_tpm = os.urandom(s.hash.size)
        rp = rp_cache.get(s.auth_hash)
        if rp is None:
            rp = rp_cache[s.auth_hash] = rp_hash(s.hash, cc, rparams)
        # A policy session HMACs its response too, keyed by sessionKey alone: the
        # authValue joins only after TPM2_PolicyAuthValue (Part 1, 19.6.x), not implemented.
        key = _hmac_key(s, entity) if s.kind == SE.HMAC else s.session_key
        mac = s.hash.hmac(key, rp, s.nonce_tpm, auth.nonce, attrs)
        if s.kind != SE.HMAC:
            s.policy_digest = bytes(s.hash.size)  # a used policy session starts over
        out += struct.pack(">H", len(s.nonce_tpm)) + s.nonce_tpm + attrs
        out += struct.pack(">H", len(mac)) + mac
        if not auth.sessionAttributes & TPMA_SESSION.continueSession:
            table.flush(s.handle)
    return bytes(out)


def session_key_for(auth_hash: int, bind_auth: bytes | None, nonce_tpm: bytes,
                    nonce_caller: bytes) -> bytes:
    """sessionKey := KDFa(authHash, bind.authValue || salt, "ATH", nonceTPM, nonceCaller)
    (Part 1, 19.6.8); the Empty Buffer for an unbound, unsalted session."""
    if bind_auth is None:
        return b""
    h = HASHES[auth_hash]
    return kdfa(h, strip_zeros(bind_auth), b"ATH", nonce_tpm, nonce_caller, h.size * 8)


def decode_session_context(plaintext: bytes) -> SessionContext:
    try:
        return unmarshal(SessionContext, plaintext)
    except TpmError:
        raise TpmError(RC.INTEGRITY) from None

