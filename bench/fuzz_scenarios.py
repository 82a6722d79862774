"""The scenarios ``bench fuzz`` scripts through ``fuzz_sessions.SessionScripts``: each a
short, plausible conversation with the TPM that a table-driven generator would not hit
by chance (see ``fuzz_sessions`` for how a scenario is driven).

* ``scenario_hmac``: an HMAC session (unbound or bound) authorizing object commands with
  parameter encryption and audit; session context save/load; the session audit digest.
* ``scenario_policy``: an object whose authPolicy a small policy program satisfies, the
  program run on a policy (or trial) session, the object used under it.
* ``scenario_sequence``: hash, event and HMAC sequences fed in pieces, saved and reloaded.
* ``scenario_nv``: ordinary, counter, bit-field and extend NV indices with their own
  authValue, written, read, locked, certified, undefined.
* ``scenario_policy_digest``: policy assertions in a row, then the policyDigest.
* ``scenario_external``: a P-256 public key made with ``cryptography``, loaded with
  TPM2_LoadExternal, and a signature by it verified (a verification ticket).
* ``scenario_cleanup``: flush what earlier scenarios left loaded.
"""

from __future__ import annotations

import struct

from tpm_emulator.constants import CC, SE, TPM_ALG
from tpm_emulator.crypto import HASHES, HashAlg

from .fuzz_sessions import (
    ATTR_AUDIT,
    ATTR_AUDIT_EXCLUSIVE,
    ATTR_AUDIT_RESET,
    ATTR_CONTINUE,
    ATTR_ENCRYPT,
    KINDS,
    RH_ENDORSEMENT,
    RH_NULL,
    RH_OWNER,
    ST_SESSIONS,
    Entity,
    SessionScripts,
    Step,
    Use,
    last_t2b,
    read_t2b,
    response_auths,
    t2b,
    template,
)

_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")
_NULL = _U16.pack(TPM_ALG.NULL)


# ---- policy programs (Part 3, 23): the commands and the digest they leave ----------
def policy_digest(h: HashAlg, program: tuple[str, ...], owner: bytes,
                  locality: int, cc: int) -> bytes:
    """The policyDigest a program leaves (PolicyUpdate, Part 3, 23.2.3)."""
    d = bytes(h.size)
    for step in program:
        if step in ("auth_value", "password"):
            d = h.digest(d, _U32.pack(CC.PolicyAuthValue))
        elif step == "command_code":
            d = h.digest(d, _U32.pack(CC.PolicyCommandCode), _U32.pack(cc))
        elif step == "locality":
            d = h.digest(d, _U32.pack(CC.PolicyLocality), bytes([locality]))
        elif step == "secret":
            d = h.digest(h.digest(d, _U32.pack(CC.PolicySecret), owner))  # empty policyRef
        elif step == "or":  # this branch or another one nobody can satisfy
            d = h.digest(bytes(h.size), _U32.pack(CC.PolicyOR), d, or_branch(h))
    return d


def or_branch(h: HashAlg) -> bytes:
    return h.digest(b"the other branch")


_PROGRAMS: tuple[tuple[str, ...], ...] = (
    ("auth_value",), ("password",), ("command_code",), ("locality",), ("secret",),
    ("command_code", "auth_value"), ("locality", "password"), ("secret", "command_code"),
    ("auth_value", "or"), ("command_code", "or", "password"),
)
_USE_CC = {"sealed": CC.Unseal, "hmac": CC.HMAC, "ecdsa": CC.Sign, "aes": CC.EncryptDecrypt2,
           "storage": CC.ReadPublic}


def _operate(sc: SessionScripts, ent: Entity, uses: list[Use] | None = None) -> Step:
    """One command that uses the object for what it is."""
    rng = sc.rng
    uses = uses if uses is not None else sc.auth_for(ent)
    if ent.kind == "sealed":
        yield sc.command(CC.Unseal, [ent.handle], b"", uses)
    elif ent.kind == "hmac":
        yield sc.command(CC.HMAC, [ent.handle], t2b(rng.randbytes(rng.randint(0, 256)))
                         + _U16.pack(rng.choice((TPM_ALG.SHA256, TPM_ALG.NULL))), uses)
    elif ent.kind == "ecdsa":
        yield from _attest(sc, ent, uses)
    elif ent.kind == "aes":
        data = rng.randbytes(rng.choice((16, 32, 48, 5)))
        yield sc.command(CC.EncryptDecrypt2, [ent.handle], t2b(data) + bytes(
            [rng.random() < 0.5]) + _U16.pack(rng.choice((TPM_ALG.CFB, TPM_ALG.NULL)))
            + t2b(rng.randbytes(16)), uses)
    else:  # storage: a child object, loaded
        child = rng.choice(("ecdsa", "hmac", "sealed", "aes"))
        data = rng.randbytes(16) if child == "sealed" else b""
        auth = rng.randbytes(rng.choice((0, 12)))
        params = t2b(t2b(auth) + t2b(data)) + t2b(template(child)) + t2b(b"") + _U32.pack(0)
        resp = yield sc.command(CC.Create, [ent.handle], params,
                                sc.auth_for(ent, encrypt_ok=False))
        if resp is None:
            return None
        pos = 14 if _U16.unpack_from(resp)[0] == ST_SESSIONS else 10
        private, pos = read_t2b(resp, pos)
        public, pos = read_t2b(resp, pos)
        resp = yield sc.command(CC.Load, [ent.handle], t2b(private) + t2b(public),
                                sc.auth_for(ent))
        if resp is None:
            return None
        handle = _U32.unpack_from(resp, 10)[0]
        sc.entities[handle] = Entity(handle, last_t2b(resp), auth, child)
        if rng.random() < 0.3:
            yield from _operate(sc, sc.entities[handle])
        if rng.random() < 0.3:  # ADMIN role of the child; a new private to load
            new_auth = rng.randbytes(rng.choice((0, 20)))
            resp = yield sc.command(CC.ObjectChangeAuth, [handle, ent.handle], t2b(new_auth),
                                    sc.auth_for(sc.entities[handle]))
            if resp is not None and not _encrypted_reply(resp):
                pos = 14 if _U16.unpack_from(resp)[0] == ST_SESSIONS else 10
                yield sc.command(CC.Load, [ent.handle],
                                 t2b(read_t2b(resp, pos)[0]) + t2b(public), sc.auth_for(ent))
        yield from sc.flush(handle)
    return None


def _encrypted_reply(resp: bytes) -> bool:
    """Whether a response's authorization area says its first parameter is encrypted."""
    return any(attrs & ATTR_ENCRYPT for _, attrs in response_auths(resp, False))


_SCHEMES = (_NULL, struct.pack(">HH", TPM_ALG.ECDSA, TPM_ALG.SHA256))
_PCR_SELECTION = struct.pack(">IHB", 1, TPM_ALG.SHA256, 3) + bytes([0x01, 0x00, 0x80])


def _attest(sc: SessionScripts, key: Entity, uses: list[Use]) -> Step:
    """The signing key signs: a digest (then verified), a quote, the time, a
    certification of itself or of its creation (Part 3, 18 and 20)."""
    rng = sc.rng
    data = t2b(rng.randbytes(rng.choice((0, 16, 32))))
    op = rng.choice(("sign", "sign", "quote", "time", "certify", "creation"))
    if op == "sign":
        ticket = struct.pack(">HI", 0x8024, RH_NULL) + t2b(b"")
        digest = rng.randbytes(32)
        resp = yield sc.command(CC.Sign, [key.handle], t2b(digest) + rng.choice(_SCHEMES)
                                + ticket, uses)
        if resp is not None and rng.random() < 0.7:
            pos = 14 if _U16.unpack_from(resp)[0] == ST_SESSIONS else 10
            signature = resp[pos : pos + 4 + 2 * (2 + 32)]
            yield sc.command(CC.VerifySignature, [key.handle], t2b(digest) + signature)
    elif op == "quote":
        yield sc.command(CC.Quote, [key.handle], data + rng.choice(_SCHEMES) + _PCR_SELECTION,
                         uses)
    elif op == "time":
        endorsement = sc.entities[RH_ENDORSEMENT]
        yield sc.command(CC.GetTime, [RH_ENDORSEMENT, key.handle], data + rng.choice(_SCHEMES),
                         [sc.use(None, endorsement), *uses[:1]])
    elif op == "certify":
        yield sc.command(CC.Certify, [key.handle, key.handle], data + rng.choice(_SCHEMES),
                         [*uses[:1], sc.use(None, key)])
    elif key.creation:
        yield sc.command(CC.CertifyCreation, [key.handle, key.handle],
                         data + key.creation[0] + rng.choice(_SCHEMES) + key.creation[1], uses)
    return None


def scenario_hmac(sc: SessionScripts) -> Step:
    """An HMAC session, maybe bound, authorizing a few object commands, with parameter
    encryption, audit and a context save/load of the session on the way."""
    rng = sc.rng
    bind = None
    if rng.random() < 0.4:
        candidates = [e for e in sc.entities.values() if e.kind]
        if not candidates or rng.random() < 0.5:
            candidates = [sc.entities[RH_OWNER], sc.entities[RH_ENDORSEMENT]]
        bind = rng.choice(candidates)
    s = yield from sc.start_session(SE.HMAC, bind)
    if s is None:
        return None
    ent = yield from sc.create_primary(rng.choice(KINDS))
    if ent is None:
        return None
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.15:
            if (yield from sc.context_roundtrip(s.handle)) is None:
                return None
        yield from _operate(sc, ent)
        if rng.random() < 0.1:
            yield from _change_hierarchy_auth(sc)
    if rng.random() < 0.4:  # audit-only use, then the session's audit digest
        yield sc.command(CC.GetRandom, [], _U16.pack(rng.randint(0, 48)),
                         [Use(s, ATTR_CONTINUE | ATTR_AUDIT | rng.choice((0, ATTR_ENCRYPT))
                              * (s.sym.algorithm != TPM_ALG.NULL), None)])
        yield sc.command(CC.GetSessionAuditDigest, [RH_ENDORSEMENT, RH_NULL, s.handle],
                         t2b(b"") + _NULL, [sc.use(None, sc.entities[RH_ENDORSEMENT]),
                                            Use(None, ATTR_CONTINUE, None)])
    yield from sc.flush(ent.handle)
    if rng.random() < 0.7:
        yield from sc.flush(s.handle)
    return None


def _change_hierarchy_auth(sc: SessionScripts) -> Step:
    """TPM2_HierarchyChangeAuth (Part 3, 24.8) through an HMAC session, often the one
    bound to that hierarchy: the response HMAC is keyed with the new authValue when the
    command's was keyed with the old one."""
    rng = sc.rng
    hier = sc.entities[rng.choice((RH_OWNER, RH_ENDORSEMENT))]
    new = rng.choice((b"", rng.randbytes(rng.choice((4, 20, 32)))))
    uses = sc.auth_for(hier)
    uses[0].new_auth = new
    resp = yield sc.command(CC.HierarchyChangeAuth, [hier.handle], t2b(new), uses)
    if resp is not None:
        hier.auth = new
    return None


def scenario_policy(sc: SessionScripts) -> Step:
    """An object whose authPolicy a policy program satisfies; a policy (or trial)
    session runs the program and authorizes the object's use."""
    rng = sc.rng
    program = rng.choice(_PROGRAMS)
    kind = rng.choice(("sealed", "hmac", "ecdsa", "aes"))
    h = HASHES[TPM_ALG.SHA256]
    locality = rng.choice((1, 1, 3, 0x1F))  # TPMA_LOCALITY: locality 0 (or 0-4)
    owner = sc.entities[RH_OWNER]
    digest = policy_digest(h, program, owner.name, locality, _USE_CC[kind])
    ent = yield from sc.create_primary(kind, digest, program)
    if ent is None:
        return None
    kind_se = SE.TRIAL if rng.random() < 0.1 else SE.POLICY
    s = yield from sc.start_session(kind_se)
    if s is None:
        return None
    for k, step in enumerate(program):
        if step == "or":
            # Part 3, 23.6: the current digest must be one of the branches, in any place.
            so_far = policy_digest(h, program[:k], owner.name, locality, _USE_CC[kind])
            branches = [so_far, or_branch(h)]
            rng.shuffle(branches)
            yield sc.command(CC.PolicyOR, [s.handle],
                             _U32.pack(2) + b"".join(t2b(b) for b in branches))
        elif step == "auth_value":
            yield sc.command(CC.PolicyAuthValue, [s.handle], b"")
        elif step == "password":
            yield sc.command(CC.PolicyPassword, [s.handle], b"")
        elif step == "command_code":
            yield sc.command(CC.PolicyCommandCode, [s.handle], _U32.pack(_USE_CC[kind]))
        elif step == "locality":
            yield sc.command(CC.PolicyLocality, [s.handle], bytes([locality]))
        elif step == "secret":
            params = t2b(rng.choice((b"", s.nonce_tpm))) + t2b(b"") + t2b(b"") + \
                _U32.pack(rng.choice((0, 0, 60)))
            yield sc.command(CC.PolicySecret, [RH_OWNER, s.handle], params,
                             sc.auth_for(owner, decrypt_ok=False))
        if rng.random() < 0.1:
            if (yield from sc.context_roundtrip(s.handle)) is None:
                return None
    if rng.random() < 0.3:
        yield sc.command(CC.PolicyGetDigest, [s.handle], b"")
    if kind_se == SE.TRIAL or rng.random() < 0.05:
        yield sc.command(CC.PolicyRestart, [s.handle], b"")
    use = sc.use(s, ent)
    use.attrs &= ~(ATTR_AUDIT | ATTR_AUDIT_RESET | ATTR_AUDIT_EXCLUSIVE)
    use.policy_password = "password" in program
    use.policy_auth_value = "auth_value" in program
    yield from _operate(sc, ent, [use])
    yield from sc.flush(ent.handle)
    if s.handle in sc.sessions:
        yield from sc.flush(s.handle)
    return None


def _digest(sc: SessionScripts, size: int = 32) -> bytes:
    """A digest-sized value, now and then the wrong size (TPM_RC_SIZE)."""
    rng = sc.rng
    return t2b(rng.randbytes(rng.choice((size, size, size, 0, 20, 48))))


def _name(sc: SessionScripts) -> bytes:
    return t2b(_U16.pack(TPM_ALG.SHA256) + sc.rng.randbytes(32))


_ASSERTIONS = ("auth_value", "password", "command_code", "locality", "cp_hash", "name_hash",
               "physical_presence", "nv_written", "template", "duplication_select",
               "counter_timer", "pcr", "or", "authorize", "restart", "secret")


def _assertion(sc: SessionScripts, session: int, step: str) -> bytes:
    """One policy command (Part 3, 23) with plausible, deterministic parameters."""
    rng = sc.rng
    if step == "auth_value":
        return sc.command(CC.PolicyAuthValue, [session], b"")
    if step == "password":
        return sc.command(CC.PolicyPassword, [session], b"")
    if step == "command_code":
        code = rng.choice((CC.Unseal, CC.Sign, CC.NV_Read, CC.Duplicate, CC.PolicyNV, 0x1FF))
        return sc.command(CC.PolicyCommandCode, [session], _U32.pack(code))
    if step == "locality":
        return sc.command(CC.PolicyLocality, [session], bytes([rng.choice((0, 1, 3, 0x1F,
                                                                             0x20, 0xFF))]))
    if step == "cp_hash":
        return sc.command(CC.PolicyCpHash, [session], _digest(sc))
    if step == "name_hash":
        return sc.command(CC.PolicyNameHash, [session], _digest(sc))
    if step == "physical_presence":
        return sc.command(CC.PolicyPhysicalPresence, [session], b"")
    if step == "nv_written":
        return sc.command(CC.PolicyNvWritten, [session], bytes([rng.choice((0, 1, 2))]))
    if step == "template":
        return sc.command(CC.PolicyTemplate, [session], _digest(sc))
    if step == "duplication_select":
        return sc.command(CC.PolicyDuplicationSelect, [session],
                          _name(sc) + _name(sc) + bytes([rng.choice((0, 1))]))
    if step == "counter_timer":
        operand = t2b(rng.randbytes(rng.choice((1, 4, 8))))
        return sc.command(CC.PolicyCounterTimer, [session], operand + struct.pack(
            ">HH", rng.choice((0, 8, 16, 24)), rng.randrange(12)))
    if step == "pcr":
        pcr_digest = t2b(rng.choice((b"", rng.randbytes(32))))
        select = struct.pack(">IHB", 1, rng.choice((TPM_ALG.SHA256, TPM_ALG.SHA1)), 3)
        return sc.command(CC.PolicyPCR, [session], pcr_digest + select + rng.randbytes(3))
    if step == "or":
        branches = [_digest(sc) for _ in range(rng.choice((1, 2, 3, 8, 9)))]
        return sc.command(CC.PolicyOR, [session], _U32.pack(len(branches)) + b"".join(branches))
    if step == "authorize":
        ticket = struct.pack(">HI", 0x8022, RH_NULL) + t2b(b"")
        return sc.command(CC.PolicyAuthorize, [session], _digest(sc) + t2b(b"") + _name(sc)
                          + ticket)
    if step == "restart":
        return sc.command(CC.PolicyRestart, [session], b"")
    owner = sc.entities[RH_OWNER]
    return sc.command(CC.PolicySecret, [RH_OWNER, session],
                      t2b(b"") + t2b(b"") + t2b(rng.randbytes(rng.choice((0, 8)))) + _U32.pack(0),
                      [sc.use(None, owner)])


def scenario_policy_digest(sc: SessionScripts) -> Step:
    """Policy assertions in a row on a trial (mostly) or policy session, then its
    policyDigest: deterministic, so the differential run compares it octet for octet."""
    rng = sc.rng
    s = yield from sc.start_session(SE.TRIAL if rng.random() < 0.8 else SE.POLICY)
    if s is None:
        return None
    for _ in range(rng.randint(1, 6)):
        yield _assertion(sc, s.handle, rng.choice(_ASSERTIONS))
        if rng.random() < 0.4:
            yield sc.command(CC.PolicyGetDigest, [s.handle], b"")
    yield sc.command(CC.PolicyGetDigest, [s.handle], b"")
    yield from sc.flush(s.handle)
    return None


def scenario_sequence(sc: SessionScripts) -> Step:
    """A hash, event or HMAC sequence fed in pieces, saved and reloaded on the way."""
    rng = sc.rng
    auth = rng.randbytes(rng.choice((0, 8, 20)))
    alg = rng.choice((TPM_ALG.SHA256, TPM_ALG.SHA1, TPM_ALG.SHA384, TPM_ALG.NULL))
    hmac_key = None
    if rng.random() < 0.3:
        hmac_key = yield from sc.create_primary("hmac")
        if hmac_key is None:
            return None
        resp = yield sc.command(CC.HMAC_Start, [hmac_key.handle],
                                t2b(auth) + _U16.pack(TPM_ALG.SHA256), sc.auth_for(hmac_key))
    else:
        resp = yield sc.command(CC.HashSequenceStart, [], t2b(auth) + _U16.pack(alg))
    if resp is None:
        return None
    # A sequence object has no nameAlg: its Name is the Empty Buffer (Part 1, 16).
    seq = Entity(_U32.unpack_from(resp, 10)[0], b"", auth, "sequence")
    sc.entities[seq.handle] = seq
    fed = b""  # what the sequence has taken in, to check the digest it returns
    for _ in range(rng.randint(0, 4)):
        if rng.random() < 0.2:
            loaded = yield from sc.context_roundtrip(seq.handle)
            if loaded is None:
                return None
            if loaded != seq.handle and rng.random() < 0.5:
                yield from sc.flush(seq.handle)
                if seq.handle in sc.fed_by_others:  # the copy has its original's past
                    sc.fed_by_others.add(loaded)
                seq = sc.entities.get(loaded, Entity(loaded, b"", auth, "sequence"))
        data = rng.randbytes(rng.choice((0, 1, 63, 64, 65, 1024)))
        if (yield sc.command(CC.SequenceUpdate, [seq.handle], t2b(data),
                            sc.auth_for(seq))) is not None:
            fed += data
    last = rng.randbytes(rng.randint(0, 64))
    data = t2b(last)
    if hmac_key is None and (alg == TPM_ALG.NULL) != (rng.random() < 0.1):
        pcr = sc.entities.setdefault(16, Entity(16, _U32.pack(16)))
        uses = [sc.use(None, pcr), *sc.auth_for(seq)[:1]]
        yield sc.command(CC.EventSequenceComplete, [16, seq.handle], data, uses)
    else:
        if hmac_key is None and alg != TPM_ALG.NULL:
            # Part 3, 17.5: the digest of everything the sequence was given (checked
            # by ``learn`` unless another command fed the sequence meanwhile).
            sc.expect_result = (seq.handle, HASHES[alg].digest(fed + last))
        yield sc.command(CC.SequenceComplete, [seq.handle], data + _U32.pack(
            rng.choice((RH_OWNER, RH_NULL))), sc.auth_for(seq))
        sc.expect_result = None
    if hmac_key is not None:
        yield from sc.flush(hmac_key.handle)
    return None


# TPM_NT (TPMA_NV bits 7:4) with the data size it needs, and the write each type takes.
_NV_TYPES = {0: 0, 1: 8, 2: 8, 4: 32}  # ordinary (size chosen), counter, bits, extend
_AUTHWRITE, _AUTHREAD, _NO_DA = 0x4, 0x40000, 0x2000000
_WRITE_STCLEAR, _READ_STCLEAR = 0x4000, 0x80000000


def scenario_nv(sc: SessionScripts) -> Step:
    """An NV index of each type (ordinary, counter, bit field, extend) defined with its
    own authValue, written and read through HMAC sessions (its Name changes once written:
    TPMA_NV_WRITTEN), maybe locked or certified, then undefined."""
    rng = sc.rng
    owner = sc.entities[RH_OWNER]
    if not any(s.kind == SE.HMAC for s in sc.sessions.values()) and rng.random() < 0.8:
        if (yield from sc.start_session(SE.HMAC)) is None:
            return None
    index = 0x01000000 | rng.randrange(0x100, 0x200)
    auth = rng.randbytes(rng.choice((0, 8, 32)))
    nt = rng.choice(tuple(_NV_TYPES))
    size = _NV_TYPES[nt] or rng.choice((8, 32, 100))
    attrs = _AUTHWRITE | _AUTHREAD | (nt << 4) | (_NO_DA if rng.random() < 0.9 else 0)
    attrs |= rng.choice((0, 0, _WRITE_STCLEAR, _READ_STCLEAR, _WRITE_STCLEAR | _READ_STCLEAR))
    public = struct.pack(">IHI", index, TPM_ALG.SHA256, attrs) + t2b(b"") + _U16.pack(size)
    resp = yield sc.command(CC.NV_DefineSpace, [RH_OWNER], t2b(auth) + t2b(public),
                            sc.auth_for(owner))
    if resp is None:
        return None
    nv = sc.entities[index] = Entity(index, b"", auth, "nv")
    for op in rng.choices(("write", "write", "read", "lock", "certify"), k=rng.randint(1, 4)):
        resp = yield sc.command(CC.NV_ReadPublic, [index], b"")
        if resp is None:
            break
        nv.name = last_t2b(resp)
        if op == "write":
            yield sc.command(*_nv_write(sc, nt, index, size), sc.auth_for(nv, encrypt_ok=False))
        elif op == "read":
            yield sc.command(CC.NV_Read, [index, index], struct.pack(">HH", size, 0),
                             sc.auth_for(nv, decrypt_ok=False))
        elif op == "lock":
            cc = CC.NV_WriteLock if rng.random() < 0.5 else CC.NV_ReadLock
            yield sc.command(cc, [index, index], b"", sc.auth_for(nv))
        else:
            keys = [e for e in sc.entities.values() if e.kind == "ecdsa"]
            if keys:
                key = rng.choice(keys)
                yield sc.command(CC.NV_Certify, [key.handle, index, index],
                                 t2b(b"") + _NULL + struct.pack(">HH", rng.choice((0, size)), 0),
                                 [sc.use(None, key), *sc.auth_for(nv)[:1]])
    yield sc.command(CC.NV_UndefineSpace, [RH_OWNER, index], b"", sc.auth_for(owner))
    sc.entities.pop(index, None)
    return None


def _nv_write(sc: SessionScripts, nt: int, index: int, size: int
              ) -> tuple[int, list[int], bytes]:
    """The write command an NV index of type ``nt`` takes (Part 3, 31.7-31.9)."""
    rng = sc.rng
    if nt == 1:
        return CC.NV_Increment, [index, index], b""
    if nt == 2:
        return CC.NV_SetBits, [index, index], struct.pack(">Q", rng.getrandbits(64))
    if nt == 4:
        return CC.NV_Extend, [index, index], t2b(rng.randbytes(rng.randint(0, 64)))
    data = rng.randbytes(rng.randint(1, size))
    return CC.NV_Write, [index, index], t2b(data) + _U16.pack(rng.randint(0, size - len(data)))


def scenario_external(sc: SessionScripts) -> Step:
    """A P-256 public key loaded with TPM2_LoadExternal and a signature by its private
    key (made with ``cryptography``) verified, sometimes damaged (Part 3, 12.3, 20.1)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import (
        Prehashed,
        decode_dss_signature,
    )
    from cryptography.hazmat.primitives.hashes import SHA256

    rng = sc.rng
    key = ec.derive_private_key(rng.randrange(1, 2**255), ec.SECP256R1())
    point = key.public_key().public_numbers()
    public = template("ecdsa")[:4] + _U32.pack(0x400 | 0x40 | 0x40000) + template("ecdsa")[8:]
    public = public[: -len(t2b(b"") * 2)] + t2b(point.x.to_bytes(32, "big")) + t2b(
        point.y.to_bytes(32, "big"))
    hier = rng.choice((RH_OWNER, RH_NULL, RH_ENDORSEMENT))
    resp = yield sc.command(CC.LoadExternal, [], t2b(b"") + t2b(public) + _U32.pack(hier))
    if resp is None:
        return None
    handle = _U32.unpack_from(resp, 10)[0]
    for _ in range(rng.randint(1, 3)):
        digest = rng.randbytes(32)
        r, s_ = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(SHA256()))))
        sig = bytearray(struct.pack(">HH", TPM_ALG.ECDSA, TPM_ALG.SHA256)
                        + t2b(r.to_bytes(32, "big")) + t2b(s_.to_bytes(32, "big")))
        if rng.random() < 0.2:
            sig[rng.randrange(4, len(sig))] ^= 1
        yield sc.command(CC.VerifySignature, [handle], t2b(digest) + bytes(sig))
    yield from sc.flush(handle)
    return None


def scenario_cleanup(sc: SessionScripts) -> Step:
    """Flush what earlier scenarios (or other fuzzed commands) left loaded: the TPM has
    three session slots and three object slots."""
    tracked = [*sc.sessions, *(h for h in sc.entities if h >> 24 == 0x80)]
    guessed = [base + i for base in (0x02000000, 0x03000000, 0x80000000) for i in range(3)]
    for h in dict.fromkeys(tracked + guessed):
        yield sc.command(CC.FlushContext, [], _U32.pack(h))
    for h in tracked:
        sc.sessions.pop(h, None)
        sc.entities.pop(h, None)
    return None


SCENARIOS = (scenario_hmac, scenario_hmac, scenario_policy, scenario_policy,
             scenario_sequence, scenario_nv, scenario_nv, scenario_external,
             scenario_policy_digest, scenario_policy_digest)
