"""PIN Fail and PIN Pass indices, differentially: the same raw commands to a real swtpm
(libtpms) and to our TPM. Response codes must agree, and so must every NV_Read and
NV_ReadPublic answer (pinCount and pinLimit, TPMA_NV, Names).

What is pinned here (Part 1, clause 37; Part 3, 31.3; libtpms' NvDefineSpace,
IsAuthValueAvailable and CheckAuthSession):

* NV_DefineSpace: 8 octets; PIN Fail needs NO_DA; neither type takes AUTHWRITE,
  GLOBALLOCK or WRITEDEFINE;
* the index's authValue authorizes "reads" of it (NV_Read, PolicySecret, …) without
  AUTHREAD, only once written and while pinCount < pinLimit, else
  TPM_RC_AUTH_UNAVAILABLE; it never authorizes a write;
* PIN Fail: a wrong PIN counts, a right one starts over; PIN Pass: a right PIN counts,
  a wrong one is a dictionary-attack failure unless NO_DA; only authorizations that
  use the authValue count (password, unbound HMAC, policy after PolicyAuthValue or
  PolicyPassword);
* PolicySecret gives no ticket for a PIN Pass index.

Last, tpm2-pytss ESAPI (in process) and tpm2-tools (against our server) use them.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path
from typing import Any

import pytest
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_NT,
    TPM2_RC,
    TPM2_SE,
    TPM2B_NV_PUBLIC,
    TPMA_NV,
    TPMS_NV_PUBLIC,
    TPMT_SYM_DEF,
    TSS2_Exception,
)

from tests.conftest import require_tool
from tests.emulator.emulator_wire import RH_OWNER, command, rc, startup, with_pw
from tests.emulator.inprocess import esapi_over
from tests.emulator.test_differential_nv import (
    AUTHREAD,
    AUTHWRITE,
    CC_EXTEND,
    CC_INCREMENT,
    CC_READ,
    CC_READLOCK,
    CC_READPUBLIC,
    CC_SETBITS,
    CLEAR_STCLEAR,
    GLOBALLOCK,
    NO_DA,
    ORDERLY,
    OWNERREAD,
    OWNERWRITE,
    PLATFORMCREATE,
    POLICYREAD,
    POLICYWRITE,
    PPREAD,
    PPWRITE,
    READ_STCLEAR,
    RH_PLATFORM,
    WRITEALL,
    WRITEDEFINE,
    WRITTEN,
    _power_cycle,
    define,
    read,
    read_public,
    simple,
    write,
)
from tests.emulator.test_differential_swtpm import started_pair
from tests.emulator.test_server import Server
from tpm_emulator import TPM

PIN_FAIL, PIN_PASS = 0x8 << 4, 0x9 << 4
OWNER_PIN = OWNERWRITE | OWNERREAD  # the owner sets the count; the PIN reads
RH_NULL, RS_PW = 0x40000007, 0x40000009
CC_START_AUTH_SESSION, CC_FLUSH, CC_GETCAP = 0x176, 0x165, 0x17A
CC_POLICY_SECRET, CC_POLICY_AUTH_VALUE, CC_POLICY_PASSWORD = 0x151, 0x16B, 0x18C
CC_POLICY_COMMAND_CODE, CC_CHANGEAUTH, CC_WRITE = 0x16C, 0x13B, 0x137
HMAC_SESSION, POLICY_SESSION = 0, 1

SUCCESS, RETRY, LOCKOUT = 0x000, 0x922, 0x921
ATTRIBUTES_P2, SIZE_P2, ATTRIBUTES_H1 = 0x2C2, 0x2D5, 0x182
ATTRIBUTES_H2, NV_RANGE, NV_LOCKED, NV_UNINITIALIZED = 0x282, 0x146, 0x148, 0x14A
AUTH_UNAVAILABLE, AUTH_TYPE = 0x12F, 0x124
BAD_AUTH_S1, AUTH_FAIL_S1, BAD_AUTH_S2 = 0x9A2, 0x98E, 0xAA2

# PolicyAuthValue and PolicyPassword extend the same digest (Part 3, 23.18 and 23.19).
POLICY_AUTH_VALUE = hashlib.sha256(bytes(32) + struct.pack(">I", CC_POLICY_AUTH_VALUE)).digest()
POLICY_NV_READ = hashlib.sha256(
    bytes(32) + struct.pack(">II", CC_POLICY_COMMAND_CODE, CC_READ)).digest()


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def pin(count: int, limit: int) -> bytes:
    """TPMS_NV_PIN_COUNTER_PARAMETERS (Part 2, 13.3)."""
    return struct.pack(">II", count, limit)


def owner_write(index: int, data: bytes, offset: int = 0) -> bytes:
    return write(index, data, offset, auth=RH_OWNER)


def send(tpm: Any, cmd: bytes) -> bytes:
    """One command; libtpms' TPM_RC_RETRY (its first DA-protected authorization of a
    power cycle) is answered by sending the command again, as a TSS does."""
    r = tpm.execute(cmd)
    return tpm.execute(cmd) if rc(r) == RETRY else r


def run(ours: TPM, theirs: Any, script: list[bytes]) -> list[int]:
    """Each command to both: the codes must agree, and so must every successful
    NV_Read and NV_ReadPublic response. Returns the codes."""
    codes = []
    for n, cmd in enumerate(script):
        a, b = send(ours, cmd), send(theirs, cmd)
        assert rc(a) == rc(b), f"step {n}: ours 0x{rc(a):03X}, libtpms 0x{rc(b):03X}"
        if rc(a) == SUCCESS and struct.unpack_from(">I", cmd, 6)[0] in (CC_READ, CC_READPUBLIC):
            assert a == b, f"step {n}: responses differ"
        codes.append(rc(a))
    return codes


def counts(ours: TPM, theirs: Any, index: int) -> tuple[int, int]:
    """(pinCount, pinLimit) as the owner reads them, the same on both TPMs."""
    cmd = read(index, 8, auth=RH_OWNER)
    a, b = ours.execute(cmd), theirs.execute(cmd)
    assert rc(a) == rc(b) == SUCCESS and a == b, (hex(rc(a)), hex(rc(b)))
    count, limit = struct.unpack_from(">II", a, 16)  # header, parameterSize, TPM2B size
    return count, limit


def name_of(tpm: Any, index: int) -> bytes:
    r = tpm.execute(read_public(index))
    assert rc(r) == SUCCESS
    o = 12 + struct.unpack_from(">H", r, 10)[0]
    return r[o + 2 : o + 2 + struct.unpack_from(">H", r, o)[0]]


class Session:
    """An unbound, unsalted session on one TPM (sessionKey is empty), kept in step
    with that TPM's nonceTPM. Built from the spec, not from the emulator's code."""

    def __init__(self, tpm: Any, kind: int) -> None:
        self.tpm = tpm
        self.nonce_caller = b"\x11" * 16
        body = (struct.pack(">II", RH_NULL, RH_NULL) + tpm2b(self.nonce_caller) + tpm2b(b"")
                + bytes([kind]) + struct.pack(">HH", 0x10, 0x0B))  # no symmetric, SHA-256
        r = tpm.execute(command(CC_START_AUTH_SESSION, body))
        assert rc(r) == SUCCESS, hex(rc(r))
        self.handle = struct.unpack_from(">I", r, 10)[0]
        self.nonce_tpm = r[16 : 16 + struct.unpack_from(">H", r, 14)[0]]

    def hmac_area(self, cc: int, names: list[bytes], params: bytes, auth_value: bytes,
                  attrs: int = 1) -> bytes:
        """An authorization area with this session's HMAC over cpHash (Part 1, 19.6)."""
        cp = hashlib.sha256(struct.pack(">I", cc) + b"".join(names) + params).digest()
        self.nonce_caller = hashlib.sha256(self.nonce_caller).digest()[:16]
        key = auth_value.rstrip(b"\x00")
        mac = hmac.new(key, cp + self.nonce_caller + self.nonce_tpm + bytes([attrs]),
                       "sha256").digest() if key else b""
        return area(struct.pack(">I", self.handle) + tpm2b(self.nonce_caller)
                    + bytes([attrs]) + tpm2b(mac))

    def password_area(self, password: bytes) -> bytes:
        """A policy session's area with ``password`` as its hmac field: the authValue
        after PolicyPassword, or empty when the policy involves no authValue."""
        return area(struct.pack(">I", self.handle) + tpm2b(b"") + b"\x01" + tpm2b(password))

    def execute(self, cmd: bytes) -> bytes:
        r = send(self.tpm, cmd)
        if rc(r) == SUCCESS and struct.unpack_from(">H", r)[0] == 0x8002:
            o = 14 + struct.unpack_from(">I", r, 10)[0]
            self.nonce_tpm = r[o + 2 : o + 2 + struct.unpack_from(">H", r, o)[0]]
        return r

    def flush(self) -> None:
        assert rc(self.tpm.execute(command(CC_FLUSH, struct.pack(">I", self.handle)))) == 0


def area(*sessions: bytes) -> bytes:
    body = b"".join(sessions)
    return struct.pack(">I", len(body)) + body


def pw(password: bytes) -> bytes:
    return struct.pack(">IHBH", RS_PW, 0, 1, len(password)) + password


def nv_read_with(index: int, auth_area: bytes, size: int = 8) -> bytes:
    params = struct.pack(">HH", size, 0)
    return command(CC_READ, struct.pack(">II", index, index) + auth_area + params, 0x8002)


def both_sessions(ours: TPM, theirs: Any, kind: int) -> tuple[Session, Session]:
    return Session(ours, kind), Session(theirs, kind)


def agree(a: bytes, b: bytes) -> int:
    assert rc(a) == rc(b), f"ours 0x{rc(a):03X}, libtpms 0x{rc(b):03X}"
    return rc(a)


# ---- NV_DefineSpace ------------------------------------------------------------------------
def test_define_space_attribute_rules(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    cases = {
        "PIN_FAIL, NO_DA": (PIN_FAIL | OWNER_PIN | NO_DA, SUCCESS),
        "PIN_FAIL without NO_DA": (PIN_FAIL | OWNER_PIN, ATTRIBUTES_P2),
        "PIN_FAIL, AUTHWRITE": (PIN_FAIL | OWNER_PIN | NO_DA | AUTHWRITE, ATTRIBUTES_P2),
        "PIN_FAIL, GLOBALLOCK": (PIN_FAIL | OWNER_PIN | NO_DA | GLOBALLOCK, ATTRIBUTES_P2),
        "PIN_FAIL, WRITEDEFINE": (PIN_FAIL | OWNER_PIN | NO_DA | WRITEDEFINE, ATTRIBUTES_P2),
        "PIN_FAIL, policy only": (PIN_FAIL | POLICYWRITE | POLICYREAD | NO_DA, SUCCESS),
        "PIN_FAIL, AUTHREAD": (PIN_FAIL | OWNERWRITE | AUTHREAD | NO_DA, SUCCESS),
        "PIN_FAIL, only AUTHWRITE to write": (PIN_FAIL | AUTHWRITE | OWNERREAD | NO_DA,
                                              ATTRIBUTES_P2),
        "PIN_FAIL, no way to read": (PIN_FAIL | OWNERWRITE | NO_DA, ATTRIBUTES_P2),
        "PIN_FAIL, WRITTEN": (PIN_FAIL | OWNER_PIN | NO_DA | WRITTEN, ATTRIBUTES_P2),
        "PIN_FAIL, stclear bits, WRITEALL, ORDERLY": (
            PIN_FAIL | OWNER_PIN | NO_DA | CLEAR_STCLEAR | READ_STCLEAR | WRITEALL | ORDERLY,
            SUCCESS),
        "PIN_PASS, DA-protected": (PIN_PASS | OWNER_PIN, SUCCESS),
        "PIN_PASS, NO_DA": (PIN_PASS | OWNER_PIN | NO_DA, SUCCESS),
        "PIN_PASS, AUTHWRITE": (PIN_PASS | OWNER_PIN | AUTHWRITE, ATTRIBUTES_P2),
        "PIN_PASS, GLOBALLOCK": (PIN_PASS | OWNER_PIN | GLOBALLOCK, ATTRIBUTES_P2),
        "PIN_PASS, WRITEDEFINE": (PIN_PASS | OWNER_PIN | WRITEDEFINE, ATTRIBUTES_P2),
        "PIN_PASS, PLATFORMCREATE by the owner": (PIN_PASS | OWNER_PIN | PLATFORMCREATE,
                                                  ATTRIBUTES_H1),
        # Not PIN rules, but next to them in libtpms' NvDefineSpace:
        "ordinary, CLEAR_STCLEAR with WRITEDEFINE": (
            OWNER_PIN | CLEAR_STCLEAR | WRITEDEFINE, ATTRIBUTES_P2),
        "bit field, CLEAR_STCLEAR": (0x20 | OWNER_PIN | CLEAR_STCLEAR, SUCCESS),
    }
    for n, (label, (attrs, expected)) in enumerate(cases.items()):
        cmd = define(0x01500100 + n, attrs, 8)
        a, b = ours.execute(cmd), theirs.execute(cmd)
        assert rc(a) == rc(b) == expected, (label, hex(rc(a)), hex(rc(b)))
    platform = define(0x01500180, PIN_PASS | PPWRITE | PPREAD | PLATFORMCREATE, 8,
                      hierarchy=RH_PLATFORM)
    for size, expected in ((8, SUCCESS), (16, SIZE_P2), (0, SIZE_P2)):
        cmd = define(0x01500181 + size, PIN_FAIL | OWNER_PIN | NO_DA, size)
        assert agree(ours.execute(cmd), theirs.execute(cmd)) == expected
    assert run(ours, theirs, [platform, read_public(0x01500180)]) == [SUCCESS, SUCCESS]


# ---- PIN Fail ------------------------------------------------------------------------------
def test_pin_fail_counts_wrong_pins_and_a_right_one_starts_over(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    idx = 0x01500200
    codes = run(ours, theirs, [
        define(idx, PIN_FAIL | OWNER_PIN | NO_DA, 8, b"1234"),
        read_public(idx),
        read(idx, 8, password=b"1234"),             # not written: AUTH_UNAVAILABLE
        read(idx, 8, auth=RH_OWNER),                # NV_UNINITIALIZED
        owner_write(idx, pin(0, 3)),
        read_public(idx),                           # WRITTEN, a new Name
        read(idx, 8, password=b"1234"),             # no AUTHREAD needed
        read(idx, 8, password=b"bad"),
        read(idx, 8, password=b"bad"),
    ])
    assert codes[2:4] == [AUTH_UNAVAILABLE, NV_UNINITIALIZED] and codes[-1] == BAD_AUTH_S1
    assert counts(ours, theirs, idx) == (2, 3)
    assert run(ours, theirs, [read(idx, 8, password=b"1234")]) == [SUCCESS]
    assert counts(ours, theirs, idx) == (0, 3)
    codes = run(ours, theirs, [
        read(idx, 8, password=b"bad"),
        read(idx, 8, password=b"bad"),
        read(idx, 8, password=b"bad"),
        read(idx, 8, password=b"bad"),              # the limit: no more tries
        read(idx, 8, password=b"1234"),             # not even the right PIN
    ])
    assert codes == [BAD_AUTH_S1] * 3 + [AUTH_UNAVAILABLE] * 2
    assert counts(ours, theirs, idx) == (3, 3)
    codes = run(ours, theirs, [
        owner_write(idx, pin(2, 3)),                # whoever may write resets the count
        read(idx, 9, password=b"1234"),             # NV_RANGE, yet the PIN was right
        owner_write(idx, b"\x00\x00\x00\x09", 4),   # a partial write: pinLimit alone
        read(idx, 8, offset=1, password=b"bad"),    # NV_RANGE is never reached
    ])
    assert codes == [SUCCESS, NV_RANGE, SUCCESS, BAD_AUTH_S1]
    assert counts(ours, theirs, idx) == (1, 9)


def test_pin_index_writes_and_typed_commands(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    idx = 0x01500210
    codes = run(ours, theirs, [
        define(idx, PIN_FAIL | OWNER_PIN | NO_DA | READ_STCLEAR, 8, b"1234"),
        owner_write(idx, pin(0, 5)),
        write(idx, pin(0, 0), password=b"1234"),    # the PIN never writes: no AUTHWRITE
        owner_write(idx, b"\x00" * 9),              # NV_RANGE
        simple(CC_INCREMENT, idx, auth=RH_OWNER),   # ATTRIBUTES on the index
        simple(CC_SETBITS, idx, auth=RH_OWNER, params=struct.pack(">Q", 1)),
        simple(CC_EXTEND, idx, auth=RH_OWNER, params=tpm2b(b"x")),
        simple(0x138, idx, auth=RH_OWNER),          # NV_WriteLock: no lock to take
        simple(CC_READLOCK, idx, password=b"bad"),  # a wrong PIN counts here too
        with_pw(CC_CHANGEAUTH, struct.pack(">I", idx), tpm2b(b"new"), b"1234"),  # AUTH_TYPE
    ])
    assert codes[2:] == [AUTH_UNAVAILABLE, NV_RANGE] + [ATTRIBUTES_H2] * 4 + [
        BAD_AUTH_S1, AUTH_TYPE]
    assert counts(ours, theirs, idx) == (1, 5)
    codes = run(ours, theirs, [
        simple(CC_READLOCK, idx, password=b"1234"),
        read(idx, 8, password=b"1234"),             # NV_LOCKED, after the PIN passed
        read_public(idx),                           # READLOCKED
    ])
    assert codes == [SUCCESS, NV_LOCKED, SUCCESS]


# ---- PIN Pass ------------------------------------------------------------------------------
def test_pin_pass_counts_right_pins_and_wrong_ones_are_dictionary_attacks(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    da, no_da = 0x01500300, 0x01500301
    lockout_counter = command(CC_GETCAP, struct.pack(">III", 6, 0x20E, 1))
    codes = run(ours, theirs, [
        define(da, PIN_PASS | OWNER_PIN, 8, b"pass"),
        define(no_da, PIN_PASS | OWNER_PIN | NO_DA, 8, b"pass"),
        owner_write(da, pin(0, 2)),
        owner_write(no_da, pin(0xFFFFFFFE, 0xFFFFFFFF)),
        read(da, 8, password=b"bad"),               # AUTH_FAIL: a DA failure, not a use
        read(no_da, 8, password=b"bad"),            # BAD_AUTH
    ])
    assert codes[-2:] == [AUTH_FAIL_S1, BAD_AUTH_S1]
    a, b = ours.execute(lockout_counter), theirs.execute(lockout_counter)
    assert a == b and a[-4:] == struct.pack(">I", 1)
    assert counts(ours, theirs, da) == (0, 2)
    codes = run(ours, theirs, [
        read(da, 8, password=b"pass"),
        read(da, 8, password=b"pass"),
        read(da, 8, password=b"pass"),              # used up
        read(da, 8, password=b"bad"),               # refused before the PIN is compared
        read(no_da, 8, password=b"pass"),           # the last use a UINT32 count allows
        read(no_da, 8, password=b"pass"),
    ])
    assert codes == [SUCCESS] * 2 + [AUTH_UNAVAILABLE] * 2 + [SUCCESS, AUTH_UNAVAILABLE]
    assert counts(ours, theirs, da) == (2, 2)
    assert counts(ours, theirs, no_da) == (0xFFFFFFFF, 0xFFFFFFFF)
    a, b = ours.execute(lockout_counter), theirs.execute(lockout_counter)
    assert a == b and a[-4:] == struct.pack(">I", 1)


def test_in_lockout_a_pin_pass_index_is_not_even_tried(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    idx = 0x01500310
    lockout, da_parameters = 0x4000000A, 0x13A
    codes = run(ours, theirs, [
        define(idx, PIN_PASS | OWNER_PIN, 8, b"pass"),
        owner_write(idx, pin(0, 5)),
        with_pw(da_parameters, struct.pack(">I", lockout), struct.pack(">III", 1, 1000, 1000)),
        read(idx, 8, password=b"bad"),              # the one failure maxTries allows
        read(idx, 8, password=b"pass"),             # TPM_RC_LOCKOUT: no use to count
    ])
    assert codes[-2:] == [AUTH_FAIL_S1, LOCKOUT]
    assert counts(ours, theirs, idx) == (0, 5)


# ---- sessions -------------------------------------------------------------------------------
def test_hmac_sessions_count_like_passwords(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    idx = 0x01500400
    run(ours, theirs, [define(idx, PIN_FAIL | OWNER_PIN | NO_DA, 8, b"1234"),
                       owner_write(idx, pin(1, 3))])
    name = name_of(ours, idx)
    assert name == name_of(theirs, idx)
    sessions = both_sessions(ours, theirs, HMAC_SESSION)
    params = struct.pack(">HH", 8, 0)

    def attempt(auth_value: bytes) -> int:
        a, b = (s.execute(nv_read_with(idx, s.hmac_area(CC_READ, [name, name], params,
                                                       auth_value))) for s in sessions)
        return agree(a, b)

    assert [attempt(b"bad"), attempt(b"bad")] == [BAD_AUTH_S1] * 2
    assert counts(ours, theirs, idx) == (3, 3)
    assert attempt(b"1234") == AUTH_UNAVAILABLE
    run(ours, theirs, [owner_write(idx, pin(2, 3))])
    assert attempt(b"1234") == SUCCESS
    assert counts(ours, theirs, idx) == (0, 3)


def test_policy_sessions_count_only_when_they_use_the_auth_value(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    by_pin, by_command = 0x01500500, 0x01500501
    run(ours, theirs, [
        define(by_pin, PIN_FAIL | OWNER_PIN | NO_DA | POLICYREAD, 8, b"1234",
               policy=POLICY_AUTH_VALUE),
        define(by_command, PIN_FAIL | OWNER_PIN | NO_DA | POLICYREAD, 8, b"1234",
               policy=POLICY_NV_READ),
        owner_write(by_pin, pin(0, 2)),
        owner_write(by_command, pin(1, 2)),
    ])
    name = name_of(ours, by_pin)
    params = struct.pack(">HH", 8, 0)

    def attempt(auth_value: bytes, password: bool) -> int:
        codes = []
        for s in both_sessions(ours, theirs, POLICY_SESSION):
            cc = CC_POLICY_PASSWORD if password else CC_POLICY_AUTH_VALUE
            assert rc(s.tpm.execute(command(cc, struct.pack(">I", s.handle)))) == SUCCESS
            auth = (s.password_area(auth_value) if password
                    else s.hmac_area(CC_READ, [name, name], params, auth_value))
            codes.append(rc(s.execute(nv_read_with(by_pin, auth))))
            s.flush()
        assert codes[0] == codes[1], [hex(c) for c in codes]
        return codes[0]

    assert attempt(b"1234", password=False) == SUCCESS
    assert [attempt(b"bad", False), attempt(b"bad", True)] == [BAD_AUTH_S1] * 2
    assert counts(ours, theirs, by_pin) == (2, 2)
    # At the limit only the authValue is unavailable, not the policy: a policy session
    # still authorizes, and its right PIN starts the count over (libtpms does so).
    assert attempt(b"1234", password=True) == SUCCESS
    assert counts(ours, theirs, by_pin) == (0, 2)

    for s in both_sessions(ours, theirs, POLICY_SESSION):  # no authValue in this policy
        cc = struct.pack(">II", s.handle, CC_READ)
        assert rc(s.tpm.execute(command(CC_POLICY_COMMAND_CODE, cc))) == SUCCESS
        assert rc(s.execute(nv_read_with(by_command, s.password_area(b"")))) == SUCCESS
    assert counts(ours, theirs, by_command) == (1, 2)


def test_a_failing_session_after_the_pin_does_not_undo_its_count(swtpm: Any) -> None:
    """The checks stop at the first failing session: a right PIN before a bad audit
    session was used (a PIN Fail starts over), a wrong one was a failed try."""
    ours, theirs = started_pair(swtpm)
    idx = 0x01500600
    run(ours, theirs, [define(idx, PIN_FAIL | OWNER_PIN | NO_DA, 8, b"1234"),
                       owner_write(idx, pin(2, 5))])
    sessions = both_sessions(ours, theirs, HMAC_SESSION)

    def attempt(password: bytes) -> int:
        bad_audit = [struct.pack(">I", s.handle) + tpm2b(b"\x22" * 16) + b"\x81"
                     + tpm2b(bytes(32)) for s in sessions]
        a, b = (s.execute(nv_read_with(idx, area(pw(password), audit)))
                for s, audit in zip(sessions, bad_audit, strict=True))
        return agree(a, b)

    assert attempt(b"1234") == BAD_AUTH_S2
    assert counts(ours, theirs, idx) == (0, 5)
    assert attempt(b"bad") == BAD_AUTH_S1
    assert counts(ours, theirs, idx) == (1, 5)


def test_policy_secret_with_pin_indices(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    fail, pass_ = 0x01500700, 0x01500701
    run(ours, theirs, [
        define(fail, PIN_FAIL | OWNER_PIN | NO_DA, 8, b"1234"),
        define(pass_, PIN_PASS | OWNER_PIN | NO_DA, 8, b"pp"),
        owner_write(fail, pin(1, 3)),
        owner_write(pass_, pin(0, 3)),
    ])
    sessions = both_sessions(ours, theirs, POLICY_SESSION)

    def secret(index: int, password: bytes, expiration: int) -> tuple[bytes, bytes]:
        out = []
        for s in sessions:
            params = (tpm2b(s.nonce_tpm) + tpm2b(b"") + tpm2b(b"")
                      + struct.pack(">i", expiration))
            out.append(s.execute(with_pw(CC_POLICY_SECRET, struct.pack(">II", index, s.handle),
                                         params, password)))
        a, b = out
        agree(a, b)
        return a, b

    a, b = secret(fail, b"bad", 0)
    assert rc(a) == BAD_AUTH_S1 and counts(ours, theirs, fail) == (2, 3)
    a, b = secret(fail, b"1234", -10)  # a ticket, as for any other entity
    assert rc(a) == SUCCESS and counts(ours, theirs, fail) == (0, 3)
    for r in (a, b):  # an 8-octet timeout, then a TPM_ST_AUTH_SECRET ticket of the owner
        assert r[14:16] == struct.pack(">H", 8)
        assert r[24:30] == struct.pack(">HI", 0x8023, RH_OWNER)
    a, b = secret(pass_, b"pp", -10)  # no ticket for a PIN Pass index
    null_ticket = struct.pack(">HIH", 0x8023, RH_NULL, 0)
    assert a[14:] == b[14:] and a[14:] == tpm2b(b"") + null_ticket + a[-5:]
    assert counts(ours, theirs, pass_) == (1, 3)


def test_policy_nv_authorized_by_the_pin_itself(swtpm: Any) -> None:
    """TPM2_PolicyNV reads the index: its own PIN may authorize that, and counts."""
    ours, theirs = started_pair(swtpm)
    idx = 0x01500710
    run(ours, theirs, [define(idx, PIN_FAIL | OWNER_PIN | NO_DA, 8, b"1234"),
                       owner_write(idx, pin(1, 5))])
    sessions = both_sessions(ours, theirs, POLICY_SESSION)

    def policy_nv(password: bytes, operand: bytes) -> int:
        a, b = (s.execute(with_pw(0x149, struct.pack(">III", idx, idx, s.handle),
                                  tpm2b(operand) + struct.pack(">HH", 0, 0), password))
                for s in sessions)
        return agree(a, b)

    # The count is reset while authorizing, so pinCount reads 0 by the comparison.
    assert policy_nv(b"1234", pin(1, 5)[:4]) == 0x126  # TPM_RC_POLICY
    assert policy_nv(b"1234", pin(0, 5)[:4]) == SUCCESS
    assert policy_nv(b"bad", pin(0, 5)[:4]) == BAD_AUTH_S1
    assert counts(ours, theirs, idx) == (1, 5)


def test_a_clear_stclear_pin_index_needs_a_new_count_after_startup(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    idx = 0x01500720
    run(ours, theirs, [define(idx, PIN_PASS | OWNER_PIN | NO_DA | CLEAR_STCLEAR, 8, b"pp"),
                       owner_write(idx, pin(0, 5)),
                       read(idx, 8, password=b"pp"),
                       command(0x145, b"\x00\x00")])  # Shutdown(CLEAR)
    _power_cycle(ours, theirs)
    codes = run(ours, theirs, [
        command(0x144, b"\x00\x00"),                 # Startup(CLEAR): WRITTEN is cleared
        read_public(idx),
        read(idx, 8, password=b"pp"),               # no count: AUTH_UNAVAILABLE
        read(idx, 8, auth=RH_OWNER),                # NV_UNINITIALIZED
        owner_write(idx, pin(3, 5)),
        read(idx, 8, password=b"pp"),
    ])
    assert codes[2:] == [AUTH_UNAVAILABLE, NV_UNINITIALIZED, SUCCESS, SUCCESS]
    assert counts(ours, theirs, idx) == (4, 5)


# ---- state -----------------------------------------------------------------------------------
def test_counts_survive_a_snapshot_and_restore(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    fail, pass_ = 0x01500800, 0x01500801
    run(ours, theirs, [
        define(fail, PIN_FAIL | OWNER_PIN | NO_DA, 8, b"1234"),
        define(pass_, PIN_PASS | OWNER_PIN | NO_DA | CLEAR_STCLEAR, 8, b"pp"),
        owner_write(fail, pin(0, 2)),
        owner_write(pass_, pin(0, 2)),
        read(fail, 8, password=b"bad"),
        read(pass_, 8, password=b"pp"),
    ])
    restored = TPM.restore(ours.snapshot())
    codes = run(restored, theirs, [
        read_public(fail),
        read_public(pass_),
        read(fail, 8, password=b"bad"),
        read(fail, 8, password=b"1234"),            # at the limit
        read(pass_, 8, password=b"pp"),
        read(pass_, 8, password=b"pp"),             # used up
    ])
    assert codes[2:] == [BAD_AUTH_S1, AUTH_UNAVAILABLE, SUCCESS, AUTH_UNAVAILABLE]
    assert counts(restored, theirs, fail) == (2, 2)
    assert counts(restored, theirs, pass_) == (2, 2)


# ---- a TSS ------------------------------------------------------------------------------------
def test_esapi_reads_a_pin_pass_index_with_its_pin() -> None:
    """tpm2-pytss ESAPI checks the Names, nonces and response HMACs of our answers."""
    tpm = TPM()
    startup(tpm)
    attrs = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.NO_DA | (TPM2_NT.PIN_PASS << 4)
    public = TPM2B_NV_PUBLIC(TPMS_NV_PUBLIC(nvIndex=0x01500900, nameAlg=TPM2_ALG.SHA256,
                                            attributes=attrs, dataSize=8))
    with esapi_over(tpm) as e:
        index = e.nv_define_space(b"pin", public, auth_handle=ESYS_TR.OWNER)
        e.nv_write(index, pin(0, 2), auth_handle=ESYS_TR.OWNER)
        e.tr_set_auth(index, b"pin")
        session = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC,
                                       TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
        # The count changes while the authorization is checked, before the read.
        assert bytes(e.nv_read(index, 8, auth_handle=index, session1=session)) == pin(1, 2)
        assert bytes(e.nv_read(index, 8, auth_handle=index, session1=session)) == pin(2, 2)
        with pytest.raises(TSS2_Exception) as refused:
            e.nv_read(index, 8, auth_handle=index, session1=session)
        assert refused.value.error == TPM2_RC.AUTH_UNAVAILABLE
        nv_public, _ = e.nv_read_public(index)
        assert nv_public.nvPublic.attributes & TPMA_NV.WRITTEN


def test_tpm2_tools_define_and_use_a_pin_fail_index(tmp_path: Path) -> None:
    require_tool("tpm2_nvdefine")
    server = Server(tmp_path / "state")
    try:
        server.tools("tpm2_startup", "-c")
        server.tools("tpm2_nvdefine", "0x1500a00", "-C", "o", "-s", "8", "-p", "1234",
                     "-a", "ownerread|ownerwrite|no_da|nt=pinfail")
        counters = tmp_path / "pin.bin"
        counters.write_bytes(pin(0, 3))
        server.tools("tpm2_nvwrite", "0x1500a00", "-C", "o", "-i", str(counters))
        out = tmp_path / "out.bin"
        with pytest.raises(AssertionError, match=r"Esys_NV_Read\(0x9A2\)"):  # BAD_AUTH
            server.tools("tpm2_nvread", "0x1500a00", "-C", "0x1500a00", "-P", "bad",
                         "-s", "8", "-o", str(out))
        server.tools("tpm2_nvread", "0x1500a00", "-C", "o", "-s", "8", "-o", str(out))
        assert out.read_bytes() == pin(1, 3)
        server.tools("tpm2_nvread", "0x1500a00", "-C", "0x1500a00", "-P", "1234",
                     "-s", "8", "-o", str(out))
        assert out.read_bytes() == pin(0, 3)
        # WRITTEN | NO_DA | OWNERREAD | TPM_NT_PIN_FAIL | OWNERWRITE
        assert "value: 0x22020082" in server.tools("tpm2_nvreadpublic", "0x1500a00")
    finally:
        server.stop()
