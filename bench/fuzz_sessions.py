"""Scripted command sequences for ``bench fuzz``: what a table-driven generator cannot
reach by chance.

``fuzz_generate.CommandGen`` draws each command on its own, so a command that needs a
correct HMAC over a nonce the TPM chose, a policy digest that matches an object's
authPolicy, or a handle an earlier command returned almost never gets past the
authorization checks. ``SessionScripts`` plays a small client instead: it starts real
HMAC, policy and trial sessions (unsalted, unbound or bound to an entity whose authValue
it knows), keeps each session's nonceTPM from the responses, and builds commands with
correct HMACs (Part 1, 19.6), parameter encryption (Part 1, 21: XOR or AES-CFB on the
first TPM2B parameter), audit attributes, policy sessions satisfied by TPM2_PolicyAuthValue,
TPM2_PolicyPassword, TPM2_PolicyCommandCode, TPM2_PolicyLocality, TPM2_PolicySecret or
TPM2_PolicyOR, hash and HMAC sequences, NV indices, and TPM2_ContextSave/ContextLoad
round trips of sessions and sequences.

A scenario (``fuzz_scenarios``) is a Python generator: it yields one command at a time
and receives the response when the command succeeded, None when it failed; most steps
end the scenario when they fail (the other fuzzed commands in between may have flushed a
handle or changed an authValue, which is the point). The commands go into the mutation
corpus like any other, so their mutated forms hit the session code with near-valid
input too.

What the client can check, it does: every response HMAC of its sessions (Part 1,
19.6.6, keyed as the command was) and the digest a hash sequence returns; a mismatch is
a ``problems`` entry, which ``bench fuzz`` reports as a finding. The session arithmetic
uses ``tpm_emulator.crypto`` (KDFa, HMAC) and ``session_crypto`` (the CFB/XOR masks),
not the session code under test; the differential run checks the client against
libtpms.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from tpm_emulator.commands import COMMANDS
from tpm_emulator.constants import CC, SE, TPM_ALG
from tpm_emulator.crypto import HASHES, HashAlg, kdfa
from tpm_emulator.session_crypto import encrypt_response_parameter
from tpm_emulator.structures import TPMT_SYM_DEF

RH_OWNER, RH_NULL, RH_ENDORSEMENT, RS_PW = 0x40000001, 0x40000007, 0x4000000B, 0x40000009
ATTR_CONTINUE, ATTR_AUDIT_EXCLUSIVE, ATTR_AUDIT_RESET = 0x01, 0x02, 0x04
ATTR_DECRYPT, ATTR_ENCRYPT, ATTR_AUDIT = 0x20, 0x40, 0x80
ST_NO_SESSIONS, ST_SESSIONS = 0x8001, 0x8002
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")

# A scenario or a part of one: yields commands, is sent the response bytes when the
# command succeeded (None when it failed), returns what it made (a session, an entity).
Step = Generator[bytes, bytes | None, Any]
Scenario = Callable[["SessionScripts"], Step]


def t2b(b: bytes) -> bytes:
    return _U16.pack(len(b)) + b


# ---- object templates (TPMT_PUBLIC, Part 2, 12.2.4) ----------------------------------
# TPMA_OBJECT bits: fixedTPM, fixedParent, noDA, sensitiveDataOrigin, userWithAuth,
# adminWithPolicy, restricted, decrypt, sign.
FIXED = 0x02 | 0x10 | 0x400  # and noDA: a wrong guess must not lock the TPM out
ORIGIN, USER_WITH_AUTH, ADMIN_WITH_POLICY = 0x20, 0x40, 0x80
RESTRICTED, DECRYPT, SIGN = 0x10000, 0x20000, 0x40000
_AES128_CFB = struct.pack(">HHH", TPM_ALG.AES, 128, TPM_ALG.CFB)
_NULL = _U16.pack(TPM_ALG.NULL)
_P256 = 0x0003
_ECC_UNIQUE = t2b(b"") + t2b(b"")


def template(kind: str, auth_policy: bytes = b"", user_with_auth: bool = True) -> bytes:
    """A TPMT_PUBLIC for one of the object kinds the scenarios use (ECC P-256 and
    keyed-hash objects only: their keys are cheap to make)."""
    user = USER_WITH_AUTH if user_with_auth else ADMIN_WITH_POLICY
    sha256 = _U16.pack(TPM_ALG.SHA256)
    if kind == "storage":
        head = struct.pack(">HHI", TPM_ALG.ECC, TPM_ALG.SHA256,
                           FIXED | ORIGIN | user | RESTRICTED | DECRYPT)
        parms = _AES128_CFB + _NULL + _U16.pack(_P256) + _NULL
        return head + t2b(auth_policy) + parms + _ECC_UNIQUE
    if kind == "ecdsa":
        head = struct.pack(">HHI", TPM_ALG.ECC, TPM_ALG.SHA256, FIXED | ORIGIN | user | SIGN)
        parms = _NULL + _U16.pack(TPM_ALG.ECDSA) + sha256 + _U16.pack(_P256) + _NULL
        return head + t2b(auth_policy) + parms + _ECC_UNIQUE
    if kind == "hmac":
        head = struct.pack(">HHI", TPM_ALG.KEYEDHASH, TPM_ALG.SHA256,
                           FIXED | ORIGIN | user | SIGN)
        return head + t2b(auth_policy) + _U16.pack(TPM_ALG.HMAC) + sha256 + t2b(b"")
    if kind == "sealed":
        head = struct.pack(">HHI", TPM_ALG.KEYEDHASH, TPM_ALG.SHA256, FIXED | user)
        return head + t2b(auth_policy) + _NULL + t2b(b"")
    assert kind == "aes"
    head = struct.pack(">HHI", TPM_ALG.SYMCIPHER, TPM_ALG.SHA256,
                       FIXED | ORIGIN | user | DECRYPT | SIGN)
    return head + t2b(auth_policy) + _AES128_CFB + t2b(b"")


KINDS = ("storage", "ecdsa", "hmac", "sealed", "aes")


@dataclass
class Entity:
    """Something a command authorizes: its Name and the authValue we believe it has."""

    handle: int
    name: bytes
    auth: bytes = b""
    kind: str = ""
    policy: tuple[str, ...] | None = None  # the policy program its authPolicy holds
    creation: tuple[bytes, bytes] = (b"", b"")  # creationHash and creationTicket, wire form


@dataclass
class Tracked:
    """A session this client started: what it needs to compute HMACs and masks."""

    handle: int
    kind: int
    hash: HashAlg
    sym: TPMT_SYM_DEF
    session_key: bytes
    nonce_tpm: bytes
    bind: Entity | None = None
    saved: bool = False
    auditing: bool = False


@dataclass
class Use:
    """One session in a command's authorization area; ``entity`` is what it authorizes
    (None: a session present only for encryption or audit)."""

    session: Tracked | None  # None: the password session
    attrs: int
    entity: Entity | None
    password: bytes = b""
    nonce: bytes = b""
    policy_password: bool = False
    policy_auth_value: bool = False
    key: bytes | None = None  # the HMAC key used (None: no HMAC, PolicyPassword's cleartext)
    mac: bytes = b""
    include_auth: bool = False  # the key holds the entity's authValue
    new_auth: bytes | None = None  # the entity's authValue once the command succeeds


def _strip(b: bytes) -> bytes:
    return b.rstrip(b"\x00")


class SessionScripts:
    """Runs one scenario at a time (see the module docstring)."""

    def __init__(self, rng: random.Random, scenarios: tuple[Scenario, ...],
                 cleanup: Scenario) -> None:
        self.rng = rng
        self.scenarios = scenarios
        self.cleanup = cleanup
        self.reset()

    def reset(self) -> None:
        """A fresh TPM: forget every handle, session and authValue."""
        self.entities: dict[int, Entity] = {
            h: Entity(h, _U32.pack(h)) for h in (RH_OWNER, RH_ENDORSEMENT, 0x4000000C,
                                                 0x4000000A)}
        self.sessions: dict[int, Tracked] = {}
        self.scenario: Step | None = None
        self.pending: bytes | None = None
        self.pending_uses: list[Use] = []
        self.reply: bytes | None = None
        self.problems: list[str] = []
        # (sequence handle, digest) the next SequenceComplete should return; sequences
        # that other (fuzzed) commands fed or completed meanwhile.
        self.expect_result: tuple[int, bytes] | None = None
        self.fed_by_others: set[int] = set()

    # -- driving --
    def play(self, execute: Callable[[bytes], bytes], seed: int, limit: int = 80
             ) -> list[tuple[int, int, bytes, bytes]]:
        """One whole scenario against ``execute``, from a clean client and a seeded
        random generator: two clients playing the same seed against two TPMs in the same
        state send the same commands for as long as the TPMs answer alike (nonces
        included). Returns [(command code, response code, command, response)]."""
        self.reset()
        self.rng.seed(seed)
        trace: list[tuple[int, int, bytes, bytes]] = []
        cmd = self.next()
        while cmd is not None and len(trace) < limit:
            resp = execute(cmd)
            rc = _U32.unpack_from(resp, 6)[0]
            if rc == 0:
                self.learn(cmd, resp)
            trace.append((_U32.unpack_from(cmd, 6)[0], rc, cmd, resp))
            reply, self.reply = self.reply, None
            try:
                cmd = self.scenario.send(reply) if self.scenario else None
            except (StopIteration, KeyError, IndexError, struct.error):
                cmd = None
            self.pending = cmd
        self.scenario = None
        return trace

    def next(self) -> bytes | None:
        """The next scripted command, or None when scenarios keep failing at once."""
        for _ in range(4):
            if self.scenario is None:
                crowded = len(self.sessions) > 1 or sum(
                    1 for h in self.entities if h >> 24 == 0x80) > 1
                pick = self.cleanup if crowded or self.rng.random() < 0.05 else \
                    self.rng.choice(self.scenarios)
                self.scenario = pick(self)
                cmd = next(self.scenario, None)
            else:
                reply, self.reply = self.reply, None
                try:
                    cmd = self.scenario.send(reply)
                except StopIteration:
                    cmd = None
                except (KeyError, IndexError, struct.error):
                    # Other fuzzed commands pulled a handle or response out from under
                    # the script (a flushed object, an odd success): start over.
                    cmd = None
            if cmd is not None:
                self.pending = cmd
                return cmd
            self.scenario = None
        return None

    def learn(self, command: bytes, response: bytes) -> None:
        """A success response (to any command): the nonceTPM of our sessions rolls, a
        flushed session or object is forgotten, a changed hierarchy authValue noted."""
        cc = _U32.unpack_from(command, 6)[0]
        spec = COMMANDS.get(cc)
        if spec is None:
            return
        if command == self.pending:
            self.reply = response
            if _U16.unpack_from(command)[0] == ST_SESSIONS:
                self._check_response_hmacs(cc, spec.response_handle, response)
            if cc == CC.SequenceComplete:
                self._check_digest(command, response)
            if cc in (CC.HashSequenceStart, CC.HMAC_Start, CC.ContextLoad):
                # A new sequence (or copy) at this handle: nothing has fed it yet. This
                # is noted now, not when the scenario resumes, as fuzzed commands run
                # in between.
                self.fed_by_others.discard(_U32.unpack_from(response, 10)[0])
        elif cc in (CC.SequenceUpdate, CC.SequenceComplete, CC.EventSequenceComplete):
            self.fed_by_others.update(split_command(command, len(spec.handles))[0])
        if cc == CC.FlushContext and len(command) >= 14:
            gone = _U32.unpack_from(command, 10)[0]
            self.sessions.pop(gone, None)
            self.entities.pop(gone, None)
        if cc == CC.Clear:
            for h in (RH_OWNER, RH_ENDORSEMENT, 0x4000000A):
                self.entities[h].auth = b""
        if cc == CC.HierarchyChangeAuth and len(command) >= 14:
            _, params, _ = split_command(command, 1)
            ent = self.entities.get(_U32.unpack_from(command, 10)[0])
            if ent is not None and len(params) >= 2 and not self._encrypted(command):
                ent.auth = params[2 : 2 + _U16.unpack_from(params)[0]]
        if _U16.unpack_from(response)[0] != ST_SESSIONS:
            return
        _, _, auths = split_command(command, len(spec.handles))
        resp_auths = response_auths(response, spec.response_handle)
        for (h, attrs), (nonce, _) in zip(auths, resp_auths, strict=False):
            s = self.sessions.get(h)
            if s is not None:
                s.nonce_tpm = nonce
                if attrs & ATTR_AUDIT and (not s.auditing or attrs & ATTR_AUDIT_RESET):
                    s.bind = None  # Part 1, 19.6.x: an audit session is not bound
                    s.auditing = True
                if not attrs & ATTR_CONTINUE:
                    del self.sessions[h]

    def _check_response_hmacs(self, cc: int, has_handle: bool, response: bytes) -> None:
        """Part 1, 19.6.6: each session's response HMAC over rpHash, the new nonceTPM,
        nonceCaller and the attributes, under the key the command used (empty when the
        key and the command's HMAC were empty, or after TPM2_PolicyPassword)."""
        pos = 10 + (4 if has_handle else 0)
        rparams = response[pos + 4 : pos + 4 + _U32.unpack_from(response, pos)[0]]
        for u, (nonce, attrs, mac) in zip(self.pending_uses,
                                          response_auths(response, has_handle, True),
                                          strict=False):
            s = u.session
            if s is None:
                continue
            # The response key takes the authValue as it is after the command
            # (HierarchyChangeAuth answers under the new one), if the command's did.
            auth = u.new_auth if u.new_auth is not None else \
                u.entity.auth if u.entity is not None else b""
            key = s.session_key + (_strip(auth) if u.include_auth else b"")
            if u.key is None or (not key and not u.mac):
                expected = b""
            else:
                rp = s.hash.digest(struct.pack(">II", 0, cc), rparams)
                expected = s.hash.hmac(key, rp, nonce, u.nonce, bytes([attrs]))
            if mac != expected:
                kind = {SE.HMAC: "HMAC", SE.POLICY: "policy"}.get(SE(s.kind), "trial")
                self.problems.append(
                    f"{CC(cc).name}: wrong response HMAC from a {kind} session "
                    f"(attributes 0x{attrs:02X}, {len(mac)} octets)")

    def _check_digest(self, command: bytes, response: bytes) -> None:
        expected = self.expect_result
        handle = _U32.unpack_from(command, 10)[0]
        if expected is None or expected[0] != handle or handle in self.fed_by_others:
            return
        if any(a & ATTR_ENCRYPT for _, a, *_ in response_auths(response, False)):
            return  # the result came encrypted
        pos = 14 if _U16.unpack_from(response)[0] == ST_SESSIONS else 10
        if read_t2b(response, pos)[0] != expected[1]:
            self.problems.append("SequenceComplete: the digest is not that of the data")

    def take_problems(self) -> list[str]:
        """What the last scripted response got wrong (response HMACs), once."""
        out, self.problems = self.problems, []
        return out

    def _encrypted(self, command: bytes) -> bool:
        spec = COMMANDS[_U32.unpack_from(command, 6)[0]]
        return any(a & ATTR_DECRYPT for _, a in split_command(command, len(spec.handles))[2])

    # -- building commands --
    def command(self, cc: int, handles: list[int], params: bytes,
                uses: list[Use] | None = None) -> bytes:
        """A command with correct HMACs for ``uses`` (Part 1, 19.6.5) and its first
        parameter encrypted when a session has ``decrypt`` (Part 1, 21). Encryption
        attributes the command cannot take (no TPM2B first parameter: TPMA_CC) are
        dropped most of the time, kept now and then for TPM_RC_ATTRIBUTES."""
        if not uses:
            return _frame(ST_NO_SESSIONS, cc, b"".join(map(_U32.pack, handles)) + params)
        rng = self.rng
        spec = COMMANDS[cc]
        if rng.random() < 0.97:
            for u in uses:
                u.attrs &= ~((0 if spec.decrypt else ATTR_DECRYPT)
                             | (0 if spec.encrypt else ATTR_ENCRYPT))
            uses = [u for u in uses if u.session is None or u.entity is not None or u.attrs & (
                ATTR_DECRYPT | ATTR_ENCRYPT | ATTR_AUDIT)] or uses[:1]
        for u in uses:
            if u.session is not None:
                u.nonce = rng.randbytes(rng.choice((16, 16, u.session.hash.size)))
        dec = next((u for u in uses if u.attrs & ATTR_DECRYPT and u.session), None)
        if dec is not None and dec.session is not None and len(params) >= 2:
            s = dec.session
            params = encrypt_response_parameter(s.sym, s.hash, self._value(s, dec.entity),
                                                dec.nonce, s.nonce_tpm, params)
        names = [self.entities[h].name if h in self.entities else _U32.pack(h)
                 for h in handles]
        area = b""
        for i, u in enumerate(uses):
            area += self._auth(u, i, uses, cc, names, params)
        self.pending_uses = uses
        body = b"".join(map(_U32.pack, handles)) + _U32.pack(len(area)) + area + params
        return _frame(ST_SESSIONS, cc, body)

    def _value(self, s: Tracked, entity: Entity | None) -> bytes:
        return s.session_key + (_strip(entity.auth) if entity is not None else b"")

    def _auth(self, u: Use, i: int, uses: list[Use], cc: int, names: list[bytes],
              params: bytes) -> bytes:
        s = u.session
        if s is None:
            return struct.pack(">IHBH", RS_PW, 0, u.attrs & ATTR_CONTINUE,
                               len(u.password)) + u.password
        head = _U32.pack(s.handle) + t2b(u.nonce) + bytes([u.attrs])
        if u.policy_password and u.entity is not None:
            u.key = None
            return head + t2b(u.entity.auth)
        key = s.session_key
        u.include_auth = u.entity is not None and (
            u.policy_auth_value or s.kind == SE.HMAC) and not (
                s.bind is not None and s.bind.name == u.entity.name
                and s.bind.auth == u.entity.auth)
        if u.include_auth and u.entity is not None:
            key += _strip(u.entity.auth)
        u.key, u.mac = key, b""
        if not key and self.rng.random() < 0.5:
            return head + t2b(b"")  # an empty key allows an empty HMAC
        extra = b""
        if i == 0:  # nonceTPMdecrypt || nonceTPMencrypt of the other sessions
            for bit in (ATTR_DECRYPT, ATTR_ENCRYPT):
                j = next((k for k, v in enumerate(uses) if v.attrs & bit), None)
                if j and uses[j].session is not None and not (
                        bit == ATTR_ENCRYPT and uses[j].attrs & ATTR_DECRYPT):
                    extra += uses[j].session.nonce_tpm  # type: ignore[union-attr]
        cp = s.hash.digest(_U32.pack(cc), *names, params)
        u.mac = s.hash.hmac(key, cp, u.nonce, s.nonce_tpm, extra, bytes([u.attrs]))
        return head + t2b(u.mac)

    def use(self, s: Tracked | None, entity: Entity | None, *, encrypt_ok: bool = True,
            decrypt_ok: bool = True) -> Use:
        """A session use with random but meaningful attributes."""
        rng = self.rng
        if s is None:
            return Use(None, ATTR_CONTINUE, entity, password=entity.auth if entity else b"")
        attrs = ATTR_CONTINUE if rng.random() < 0.9 else 0
        if s.sym.algorithm != TPM_ALG.NULL:
            if decrypt_ok and rng.random() < 0.5:
                attrs |= ATTR_DECRYPT
            if encrypt_ok and rng.random() < 0.5:
                attrs |= ATTR_ENCRYPT
        if s.kind == SE.HMAC and rng.random() < 0.25:
            attrs |= ATTR_AUDIT | rng.choice((0, 0, 0, 0, ATTR_AUDIT_RESET,
                                              ATTR_AUDIT_EXCLUSIVE))
        return Use(s, attrs, entity)

    def auth_for(self, entity: Entity, *, encrypt_ok: bool = True,
                 decrypt_ok: bool = True) -> list[Use]:
        """An authorization for ``entity``: a live HMAC session of ours or a password,
        now and then followed by an extra encrypt/audit-only session."""
        rng = self.rng
        hmacs = [s for s in self.sessions.values() if s.kind == SE.HMAC and not s.saved]
        first = self.use(rng.choice(hmacs) if hmacs and rng.random() < 0.8 else None, entity,
                         encrypt_ok=encrypt_ok, decrypt_ok=decrypt_ok)
        uses = [first]
        others = [s for s in hmacs if s is not first.session]
        if others and rng.random() < 0.2:
            extra = self.use(rng.choice(others), None, encrypt_ok=encrypt_ok,
                             decrypt_ok=decrypt_ok)
            extra.attrs |= ATTR_CONTINUE
            if any(u.attrs & extra.attrs & (ATTR_DECRYPT | ATTR_ENCRYPT | ATTR_AUDIT)
                   for u in uses):
                extra.attrs &= ATTR_CONTINUE
            uses.append(extra)
        return uses

    # -- steps shared by scenarios --
    def start_session(self, kind: int, bind: Entity | None = None) -> Step:
        rng = self.rng
        alg = rng.choice((TPM_ALG.SHA256, TPM_ALG.SHA256, TPM_ALG.SHA1, TPM_ALG.SHA384))
        h = HASHES[alg]
        sym = rng.choice((TPMT_SYM_DEF(TPM_ALG.NULL), TPMT_SYM_DEF(TPM_ALG.XOR, alg),
                          TPMT_SYM_DEF(TPM_ALG.AES, 128, TPM_ALG.CFB),
                          TPMT_SYM_DEF(TPM_ALG.AES, 128, TPM_ALG.CFB)))
        wire_sym = _U16.pack(sym.algorithm)
        if sym.algorithm == TPM_ALG.XOR:
            wire_sym += _U16.pack(sym.keyBits)
        elif sym.algorithm == TPM_ALG.AES:
            wire_sym += struct.pack(">HH", sym.keyBits, sym.mode)
        nonce = rng.randbytes(rng.choice((16, h.size)))
        params = t2b(nonce) + t2b(b"") + bytes([kind]) + wire_sym + _U16.pack(alg)
        resp = yield self.command(CC.StartAuthSession,
                                  [RH_NULL, bind.handle if bind else RH_NULL], params)
        if resp is None:
            return None
        handle = _U32.unpack_from(resp, 10)[0]
        nonce_tpm = read_t2b(resp, 14)[0]
        # Part 1, 19.6.8: any bind entity (even one with an empty authValue) gives a key.
        key = b"" if bind is None else kdfa(h, _strip(bind.auth), b"ATH", nonce_tpm, nonce,
                                            h.size * 8)
        s = Tracked(handle, kind, h, sym, key, nonce_tpm,
                    Entity(bind.handle, bind.name, bind.auth) if bind else None)
        self.sessions[handle] = s
        return s

    def create_primary(self, kind: str, auth_policy: bytes = b"",
                       policy: tuple[str, ...] | None = None) -> Step:
        rng = self.rng
        hier = self.entities[rng.choice((RH_OWNER, RH_OWNER, RH_ENDORSEMENT))]
        auth = rng.randbytes(rng.choice((0, 8, 16, 32)))
        data = rng.randbytes(rng.randint(1, 64)) if kind == "sealed" else b""
        public = template(kind, auth_policy, user_with_auth=policy is None)
        params = t2b(t2b(auth) + t2b(data)) + t2b(public) + t2b(rng.randbytes(
            rng.choice((0, 8)))) + _U32.pack(0)
        resp = yield self.command(CC.CreatePrimary, [hier.handle], params,
                                  self.auth_for(hier))
        if resp is None:
            return None
        handle = _U32.unpack_from(resp, 10)[0]
        ent = Entity(handle, last_t2b(resp), auth, kind, policy, _creation(resp))
        self.entities[handle] = ent
        return ent

    def context_roundtrip(self, handle: int) -> Step:
        """TPM2_ContextSave then TPM2_ContextLoad (Part 3, 28.2/28.3); returns the handle
        the context is loaded under."""
        resp = yield self.command(CC.ContextSave, [handle], b"")
        if resp is None:
            return None
        s = self.sessions.get(handle)
        if s is not None:
            s.saved = True
        context = resp[10:]
        resp = yield self.command(CC.ContextLoad, [], context)
        if resp is None:
            return None
        loaded = _U32.unpack_from(resp, 10)[0]
        if self.rng.random() < 0.1:  # loading it again: a stale context, refused
            yield self.command(CC.ContextLoad, [], context)
        if s is not None:
            s.saved = False
        elif handle in self.entities and loaded != handle:
            old = self.entities[handle]
            self.entities[loaded] = Entity(loaded, old.name, old.auth, old.kind, old.policy)
        return loaded

    def flush(self, handle: int) -> Step:
        yield self.command(CC.FlushContext, [], _U32.pack(handle))
        return None


def _frame(tag: int, cc: int, body: bytes) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), cc) + body


def read_t2b(buf: bytes, pos: int) -> tuple[bytes, int]:
    n = _U16.unpack_from(buf, pos)[0]
    return buf[pos + 2 : pos + 2 + n], pos + 2 + n


def last_t2b(resp: bytes) -> bytes:
    """The Name at the end of a response's parameters: CreatePrimary/Load (a response
    handle, maybe sessions) or NV_ReadPublic (no handle, no sessions)."""
    if _U16.unpack_from(resp)[0] == ST_SESSIONS:
        size = _U32.unpack_from(resp, 14)[0]
        end = 18 + size
    else:
        end = len(resp)
    # The Name is the last TPM2B: walk back over digest sizes of the known name algs.
    for n in (34, 22, 50, 66, 4):
        if end - n - 2 >= 0 and _U16.unpack_from(resp, end - n - 2)[0] == n:
            return resp[end - n : end]
    return b""


def _creation(resp: bytes) -> tuple[bytes, bytes]:
    """creationHash and creationTicket of a CreatePrimary response (Part 3, 24.1)."""
    pos = 18 if _U16.unpack_from(resp)[0] == ST_SESSIONS else 14
    for _ in range(2):  # outPublic, creationData
        pos = read_t2b(resp, pos)[1]
    digest, end = read_t2b(resp, pos)
    ticket_end = read_t2b(resp, end + 6)[1]
    return t2b(digest), resp[end:ticket_end]


def split_command(command: bytes, n_handles: int) -> tuple[list[int], bytes,
                                                            list[tuple[int, int]]]:
    """(handles, parameters, [(session handle, attributes)]) of a command; empty when it
    does not split."""
    try:
        pos = 10
        handles = [_U32.unpack_from(command, pos + 4 * i)[0] for i in range(n_handles)]
        pos += 4 * n_handles
        auths: list[tuple[int, int]] = []
        if _U16.unpack_from(command)[0] == ST_SESSIONS:
            end = pos + 4 + _U32.unpack_from(command, pos)[0]
            pos += 4
            while pos < end:
                h = _U32.unpack_from(command, pos)[0]
                _, pos = read_t2b(command, pos + 4)
                attrs = command[pos]
                _, pos = read_t2b(command, pos + 1)
                auths.append((h, attrs))
            pos = end
        return handles, command[pos:], auths
    except (struct.error, IndexError):
        return [], b"", []


def response_auths(response: bytes, has_handle: bool, with_hmac: bool = False
                   ) -> list[Any]:
    """[(nonceTPM, attributes)] of a success response's authorization area, or
    [(nonceTPM, attributes, hmac)] ``with_hmac``."""
    try:
        pos = 10 + (4 if has_handle else 0)
        pos += 4 + _U32.unpack_from(response, pos)[0]
        out: list[Any] = []
        while pos < len(response):
            nonce, pos = read_t2b(response, pos)
            attrs = response[pos]
            mac, pos = read_t2b(response, pos + 1)
            out.append((nonce, attrs, mac) if with_hmac else (nonce, attrs))
        return out
    except (struct.error, IndexError):
        return []
