"""Authorization sessions: the authorization area, session HMACs, parameter encryption
and audit (the session table itself is in ``session_table.py``).

Part 1, clause 19 (authorizations), 19.6 (HMAC sessions), 21 (session-based
encryption), 30 (context management); Part 2, 10.13 (TPMS_AUTH_COMMAND / _RESPONSE).
Supported: password authorizations (TPM_RS_PW); HMAC, policy and trial sessions, salted
or not, bound or not; parameter encryption with AES-CFB or XOR (the arithmetic is in
``session_crypto.py``); sessions that only encrypt or audit; session audit with
exclusive-audit tracking. The order of the checks follows the reference
(RetrieveSessionData, ParseSessionBuffer, BuildResponseSession) so that a bad session
earns the response code libtpms gives.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .codec import Reader, unmarshal_from
from .constants import (
    MAX_SESSION_NUM,
    RC,
    SE,
    TPM_ALG,
    TPMA_SESSION,
    TPMA_SESSION_RESERVED,
)
from .crypto import HASHES, HashAlg, equal, kdfa
from .errors import TpmError, with_session
from .session_crypto import (
    bound_entity,
    decrypt_command_parameter,
    encrypt_response_parameter,
    extend_audit,
    session_value,
)
from .session_table import (
    TPM_RS_PW,
    TPMS_AUTH_COMMAND,
    Session,
    SessionTable,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .policy.enforce import PolicyFacts


def parse_auth_area(buf: bytes, start: int, size: int) -> list[TPMS_AUTH_COMMAND]:
    """Unmarshal the authorization area (Part 1, 18.4): up to three TPMS_AUTH_COMMAND
    filling exactly ``size`` octets; errors carry the session number. As the reference's
    ParseSessionBuffer, each session is checked before the next is read: a password
    session takes no attributes but continueSession and no nonce (Part 1, 19.8.4)."""
    r = Reader(buf[: start + size], start)
    out: list[TPMS_AUTH_COMMAND] = []
    while r.remaining():
        n = len(out) + 1
        if n > MAX_SESSION_NUM:  # the reference names the session past the last one
            raise TpmError(with_session(RC.SIZE, n), "more than three sessions")
        try:
            auth = unmarshal_from(TPMS_AUTH_COMMAND, r)
        except TpmError as e:
            raise TpmError(with_session(e.rc, n)) from None
        if auth.sessionAttributes & TPMA_SESSION_RESERVED:
            raise TpmError(with_session(RC.RESERVED_BITS, n))
        if auth.sessionHandle == TPM_RS_PW:
            if auth.sessionAttributes & ~TPMA_SESSION.continueSession:
                raise TpmError(with_session(RC.ATTRIBUTES, n))
            if auth.nonce:
                raise TpmError(with_session(RC.NONCE, n))
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
    """Session-level checks before any HMAC is computed, in the reference's order
    (RetrieveSessionData, then the TPM_RC_AUTH_MISSING check of ParseSessionBuffer):
    one decrypt, one encrypt and one audit session at most, only where the command
    allows them (Command.decrypt / .encrypt), never with symmetric TPM_ALG_NULL, audit
    never on a policy session (Part 1, 19.6.x and 21)."""
    sessions: list[Session | None] = []
    decrypt = encrypt = audit = False
    for i, auth in enumerate(auths):
        n = i + 1
        attrs = auth.sessionAttributes
        if auth.sessionHandle == TPM_RS_PW:
            # Its attributes and nonce were checked while parsing; one with nothing to
            # authorize is refused only after the authorizations (``authorize``).
            sessions.append(None)
            continue
        s = table.loaded.get(auth.sessionHandle & 0xFFFFFF)
        if s is None:
            raise TpmError(RC.REFERENCE_S0 + i, "session not loaded")
        if s.handle != auth.sessionHandle:  # an HMAC session named as a policy one, or back
            raise TpmError(with_session(RC.HANDLE, n), "session type and handle disagree")
        if any(auths[j].sessionHandle == auth.sessionHandle for j in range(i)):
            raise TpmError(with_session(RC.HANDLE, n), "session used twice")
        for bit, allowed, seen in ((TPMA_SESSION.decrypt, decrypt_allowed, decrypt),
                                   (TPMA_SESSION.encrypt, encrypt_allowed, encrypt)):
            if attrs & bit:
                if not allowed or seen:
                    raise TpmError(with_session(RC.ATTRIBUTES, n))
                if s.symmetric.algorithm == TPM_ALG.NULL:
                    raise TpmError(with_session(RC.SYMMETRIC, n))
        decrypt = decrypt or bool(attrs & TPMA_SESSION.decrypt)
        encrypt = encrypt or bool(attrs & TPMA_SESSION.encrypt)
        if attrs & TPMA_SESSION.audit:
            if audit or s.kind != SE.HMAC:
                raise TpmError(with_session(RC.ATTRIBUTES, n))
            audit = True
            # Continuing an exclusive audit requires that it still be exclusive; a reset
            # or a first use makes it exclusive anyway (reference RetrieveSessionData).
            if (attrs & TPMA_SESSION.auditExclusive and not attrs & TPMA_SESSION.auditReset
                    and s.audit_digest and table.exclusive_audit != s.handle):
                raise TpmError(RC.EXCLUSIVE, "the audit session is no longer exclusive")
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


def is_bound_to(s: Session, entity: Entity) -> bool:
    """Whether an HMAC session is bound to this entity with the authValue it had at
    TPM2_StartAuthSession (Part 1, 19.6.x; reference IsSessionBindEntity)."""
    return bool(s.bind_name) and equal(
        s.bind_name, bound_entity(entity.name, strip_zeros(entity.auth_value)))


def _hmac_key(s: Session, entity: Entity | None) -> bytes:
    # Part 1, 19.6.8: the entity's authValue joins the key unless the session is bound
    # to that very entity (its authValue is already in sessionKey); a session that
    # authorizes nothing (encrypt, decrypt or audit only) uses sessionKey alone.
    if entity is None or is_bound_to(s, entity):
        return s.session_key
    return s.session_key + strip_zeros(entity.auth_value)


def _extra_nonces(auths: list[TPMS_AUTH_COMMAND], sessions: list[Session | None],
                  i: int) -> bytes:
    """nonceTPMdecrypt || nonceTPMencrypt: the first session, when it authorizes, also
    HMACs the nonceTPM of other sessions used for parameter encryption, so that they
    cannot be removed unnoticed (Part 1, 19.6.5; reference ComputeCommandHMAC)."""
    if i != 0:
        return b""
    dec = _index_of(auths, TPMA_SESSION.decrypt)
    enc = _index_of(auths, TPMA_SESSION.encrypt)
    out = b""
    if dec is not None and dec != 0:
        out += _loaded(sessions, dec).nonce_tpm
    if enc is not None and enc not in (0, dec):
        out += _loaded(sessions, enc).nonce_tpm
    return out


def _index_of(auths: list[TPMS_AUTH_COMMAND], bit: int) -> int | None:
    """The one session with this attribute (check_sessions allows one at most)."""
    return next((i for i, a in enumerate(auths) if a.sessionAttributes & bit), None)


def _loaded(sessions: list[Session | None], i: int) -> Session:
    s = sessions[i]
    assert s is not None, "check_sessions refuses these attributes on a password"
    return s


def _hmac(s: Session, key: bytes, digest: bytes, nonce_newer: bytes, nonce_older: bytes,
          attrs: int, extra: bytes = b"", caller_hmac: bytes | None = None) -> bytes:
    """An HMAC session's authorization HMAC; with an empty key and an empty hmac from
    the caller it is the Empty Buffer (reference ComputeCommandHMAC/ComputeResponseHMAC)."""
    if not key and caller_hmac is not None and not caller_hmac:
        return b""
    return s.hash.hmac(key, digest, nonce_newer, nonce_older, extra, bytes([attrs]))


def authorize(
    auths: list[TPMS_AUTH_COMMAND], sessions: list[Session | None], entities: list[Entity],
    cc: int, params: bytes, names: list[bytes] | None = None,
    policy: PolicyFacts | None = None, before_each: Callable[[int], None] | None = None,
) -> None:
    """Check each authorization against its entity (Part 1, 19.8 / 19.6.5). ``names``
    are the Names of every handle of the command, for cpHash (default: the entities');
    ``policy`` is what policy sessions check besides their digest (locality, TPM state);
    ``before_each(i)`` runs first for each authorization (the dictionary-attack lockout
    check, which the reference makes session by session: admin/da.py)."""
    cp_cache: dict[int, bytes] = {}
    if names is None:
        names = [e.name for e in entities]
    for i, entity in enumerate(entities):
        if before_each is not None:
            before_each(i)
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
            cp = cp_cache.get(s.auth_hash)
            if cp is None:
                cp = cp_cache[s.auth_hash] = cp_hash(s.hash, cc, names, params)
            _authorize_policy(auth, s, entity, i, cc, cp, names, params, policy, fail,
                              _extra_nonces(auths, sessions, i))
            continue
        cp = cp_cache.get(s.auth_hash)
        if cp is None:
            cp = cp_cache[s.auth_hash] = cp_hash(s.hash, cc, names, params)
        s.include_auth = not is_bound_to(s, entity)
        expect = _hmac(s, _hmac_key(s, entity), cp, auth.nonce, s.nonce_tpm,
                       auth.sessionAttributes, _extra_nonces(auths, sessions, i), auth.hmac)
        if not equal(expect, auth.hmac):
            raise TpmError(with_session(fail, n), "HMAC mismatch")
    for i in range(len(entities), len(auths)):
        # Part 1, 19.6.x: a session beyond the authorizations must be there to decrypt,
        # encrypt or audit; its HMAC is keyed with sessionKey alone. A failure here is
        # never a dictionary-attack failure (reference IncrementLockout: no handle).
        if sessions[i] is None:  # libtpms: after every authorization passed, HANDLE
            raise TpmError(with_session(RC.HANDLE, i + 1), "password session with no role")
        auth, s, n = auths[i], _loaded(sessions, i), i + 1
        if s.kind == SE.TRIAL or not auth.sessionAttributes & _NON_AUTH_ROLES:
            raise TpmError(with_session(RC.ATTRIBUTES, n), "session with no role")
        cp = cp_cache.get(s.auth_hash)
        if cp is None:
            cp = cp_cache[s.auth_hash] = cp_hash(s.hash, cc, names, params)
        expect = _hmac(s, s.session_key, cp, auth.nonce, s.nonce_tpm, auth.sessionAttributes,
                       caller_hmac=auth.hmac)
        if not equal(expect, auth.hmac):
            raise TpmError(with_session(RC.BAD_AUTH, n), "HMAC mismatch")


_NON_AUTH_ROLES = TPMA_SESSION.audit | TPMA_SESSION.encrypt | TPMA_SESSION.decrypt


def decrypt_parameters(auths: list[TPMS_AUTH_COMMAND], sessions: list[Session | None],
                       entities: list[Entity], params: bytes) -> bytes:
    """The command parameters with the first one decrypted if a session has ``decrypt``
    (Part 1, 21): after every authorization was checked over the ciphertext and before
    the parameters are unmarshalled (reference ParseSessionBuffer). The key includes the
    authValue of the entity the session authorizes, bound or not (21.1)."""
    i = _index_of(auths, TPMA_SESSION.decrypt)
    if i is None:
        return params
    s = _loaded(sessions, i)
    auth_value = strip_zeros(entities[i].auth_value) if i < len(entities) else None
    try:
        return decrypt_command_parameter(s.symmetric, s.hash,
                                         session_value(s.session_key, auth_value),
                                         auths[i].nonce, s.nonce_tpm, params)
    except TpmError as e:
        raise TpmError(with_session(e.rc, i + 1), str(e)) from None


def encrypt_response(auths: list[TPMS_AUTH_COMMAND], sessions: list[Session | None],
                     entities: list[Entity], rparams: bytes) -> bytes:
    """Roll every session's nonceTPM, then encrypt the first response parameter if a
    session has ``encrypt``, with the new nonceTPM (reference BuildResponseSession: the
    nonces change before the encryption and before any rpHash)."""
    for s in sessions:
        if s is not None:
            s.nonce_tpm = os.urandom(len(s.nonce_tpm))
    i = _index_of(auths, TPMA_SESSION.encrypt)
    if i is None:
        return rparams
    s = _loaded(sessions, i)
    auth_value = strip_zeros(entities[i].auth_value) if i < len(entities) else None
    return encrypt_response_parameter(s.symmetric, s.hash,
                                      session_value(s.session_key, auth_value),
                                      s.nonce_tpm, auths[i].nonce, rparams)


def wants_audit(auths: list[TPMS_AUTH_COMMAND]) -> bool:
    return _index_of(auths, TPMA_SESSION.audit) is not None


def audit_sessions(table: SessionTable, auths: list[TPMS_AUTH_COMMAND],
                   sessions: list[Session | None], cc: int, names: list[bytes],
                   params: bytes, rparams: bytes, sessions_allowed: bool) -> list[int]:
    """Session audit after a successful command (Part 1, 19.6.x; reference
    UpdateAuditSessionStatus): the audit session's digest takes in H(cpHash || rpHash)
    over the parameters as sent and as returned (encrypted, if they were). Its first use,
    or auditReset, starts a digest of zeros and makes it the exclusive audit session; any
    command that allows sessions and has no audit session ends the exclusivity. Returns
    the attributes each response session reports: auditExclusive says whether the audit
    session is (still) exclusive."""
    attributes = [a.sessionAttributes for a in auths]
    i = _index_of(auths, TPMA_SESSION.audit)
    if i is None:
        if sessions_allowed:
            table.exclusive_audit = 0
        return attributes
    s = _loaded(sessions, i)
    if not s.audit_digest or attributes[i] & TPMA_SESSION.auditReset:
        s.audit_digest = bytes(s.hash.size)
        s.bind_name = b""  # the reference's InitAuditSession: an audit session is unbound
        table.exclusive_audit = s.handle
    elif table.exclusive_audit != s.handle:
        table.exclusive_audit = 0
    if table.exclusive_audit == s.handle:
        attributes[i] |= TPMA_SESSION.auditExclusive
    else:
        attributes[i] &= ~TPMA_SESSION.auditExclusive
    s.audit_digest = extend_audit(s.hash, s.audit_digest, cp_hash(s.hash, cc, names, params),
                                  rp_hash(s.hash, cc, rparams))
    return attributes


def _authorize_policy(
    auth: TPMS_AUTH_COMMAND, s: Session, entity: Entity, i: int, cc: int, cp: bytes,
    names: list[bytes], params: bytes, policy: PolicyFacts | None, fail: int,
    extra: bytes = b"",
) -> None:
    """A policy session (Part 1, 19.7): its assertions must hold, then its hmac field is
    the plain authValue after TPM2_PolicyPassword, else an HMAC keyed with sessionKey
    (and the authValue after TPM2_PolicyAuthValue); with an empty key, an empty hmac
    is accepted (the reference's ComputeCommandHMAC)."""
    # Imported here: policy.enforce reaches this module through commands and objects.
    from .policy.enforce import check_policy_session

    n = i + 1
    try:
        check_policy_session(s, entity, i, cc, cp, names, params, policy)
    except TpmError as e:
        raise TpmError(with_session(e.rc, n), str(e)) from None
    if s.policy.password_needed:
        if not equal(strip_zeros(auth.hmac), strip_zeros(entity.auth_value)):
            raise TpmError(with_session(fail, n), "password mismatch")
        return
    expect = _hmac(s, _policy_hmac_key(s, entity), cp, auth.nonce, s.nonce_tpm,
                   auth.sessionAttributes, extra, auth.hmac)
    if not equal(expect, auth.hmac):
        raise TpmError(with_session(fail, n), "HMAC mismatch")


def _policy_hmac_key(s: Session, entity: Entity) -> bytes:
    # Part 1, 19.6.8 / 19.7.x: a policy session is never "bound" for this purpose; the
    # entity's authValue joins its key only after TPM2_PolicyAuthValue.
    if s.policy.auth_value_needed:
        return s.session_key + strip_zeros(entity.auth_value)
    return s.session_key


def build_response_auths(
    table: SessionTable, auths: list[TPMS_AUTH_COMMAND], sessions: list[Session | None],
    entities: list[Entity], cc: int, rparams: bytes, attributes: list[int] | None = None,
) -> bytes:
    """The response authorization area (Part 1, 19.6.6): HMAC the (already encrypted)
    response with the nonceTPM ``encrypt_response`` rolled, report ``attributes`` (from
    ``audit_sessions``), and flush sessions whose continueSession was clear."""
    out = bytearray()
    rp_cache: dict[int, bytes] = {}
    for i, (auth, s) in enumerate(zip(auths, sessions, strict=True)):
        entity = entities[i] if i < len(entities) else None
        attrs = bytes([auth.sessionAttributes if attributes is None else attributes[i]])
        if s is None:
            out += b"\x00\x00" + bytes([TPMA_SESSION.continueSession]) + b"\x00\x00"
            continue
        rp = rp_cache.get(s.auth_hash)
        if rp is None:
            rp = rp_cache[s.auth_hash] = rp_hash(s.hash, cc, rparams)
        if entity is None:  # encrypt, decrypt or audit only: sessionKey alone
            key = s.session_key
        else:
            # A policy session HMACs its response too, keyed as its command HMAC was (an
            # empty key and an empty command hmac give an empty response hmac).
            key = _policy_hmac_key(s, entity) if s.kind != SE.HMAC else (
                s.session_key + strip_zeros(entity.auth_value) if s.include_auth
                else s.session_key)
        mac = s.hash.hmac(key, rp, s.nonce_tpm, auth.nonce, attrs)
        if s.kind == SE.HMAC and not key and not auth.hmac:  # reference ComputeResponseHMAC
            mac = b""
        if s.kind != SE.HMAC:
            # After TPM2_PolicyPassword the response carries no HMAC (there is no key
            # the caller proved); nor does it when key and command hmac were empty.
            if (not key and not auth.hmac) or (entity is not None and s.policy.password_needed):
                mac = b""
            if entity is not None:
                # Part 1, 19.7.x: a policy session used to authorize starts over.
                s.policy_digest = bytes(s.hash.size)
                s.policy = s.policy.restarted(s.policy.start_ms)
        out += struct.pack(">H", len(s.nonce_tpm)) + s.nonce_tpm + attrs
        out += struct.pack(">H", len(mac)) + mac
        if not auth.sessionAttributes & TPMA_SESSION.continueSession:
            table.flush(s.handle)
    return bytes(out)


def session_key_for(auth_hash: int, bind_auth: bytes | None, nonce_tpm: bytes,
                    nonce_caller: bytes, salt: bytes = b"") -> bytes:
    """sessionKey := KDFa(authHash, bind.authValue || salt, "ATH", nonceTPM, nonceCaller)
    (Part 1, 19.6.8); the Empty Buffer for an unbound, unsalted session."""
    if bind_auth is None and not salt:
        return b""
    h = HASHES[auth_hash]
    return kdfa(h, strip_zeros(bind_auth or b"") + salt, b"ATH", nonce_tpm, nonce_caller,
                h.size * 8)
