"""Policy commands, differentially: the same trial- and policy-session sequences to a
real swtpm (libtpms) and to our TPM; every response code and every PolicyGetDigest
must agree, and so must TPM_CAP_COMMANDS for the clause-23 commands."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from tpm2_pytss import TPM2B_PUBLIC

from tests.emulator.emulator_wire import (
    RH_OWNER,
    SHA1,
    SHA256,
    SHA512,
    SIZES,
    command,
    rc,
    with_pw,
)
from tests.emulator.test_differential_nv import OWNER_RW, define, write
from tests.emulator.test_differential_objects import _capability, both, started_pair
from tpm_emulator import TPM

RH_NULL = 0x40000007
TRIAL, POLICY = 3, 1
SESSION = 0x03000000
NV_INDEX = 0x01500020
CC_START_AUTH_SESSION, CC_LOAD_EXTERNAL = 0x176, 0x167
ST_VERIFIED, ST_AUTH_SIGNED = 0x8022, 0x8025
POLICY_CCS = (0x149, 0x151, 0x160, 0x16A, 0x16B, 0x16C, 0x16D, 0x16E, 0x16F, 0x170, 0x171,
              0x172, 0x17F, 0x180, 0x187, 0x188, 0x189, 0x18C, 0x18F, 0x190, 0x192)


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def start_session(kind: int, alg: int = SHA256) -> bytes:
    body = u32(RH_NULL) + u32(RH_NULL) + tpm2b(b"\x11" * 16) + tpm2b(b"")
    return command(CC_START_AUTH_SESSION, body + bytes([kind]) + struct.pack(">HH", 0x10, alg))


def on(cc: int, params: bytes = b"", session: int = SESSION) -> bytes:
    return command(cc, u32(session) + params)


def pcr_selection(alg: int, pcrs: list[int]) -> bytes:
    bits = bytearray(3)
    for p in pcrs:
        bits[p // 8] |= 1 << (p % 8)
    return struct.pack(">IHB", 1, alg, 3) + bytes(bits)


def ecc_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    """TPMT_PUBLIC of a P-256 ECDSA/SHA-256 verification key (sign | userWithAuth)."""
    n = key.public_key().public_numbers()
    return (struct.pack(">HHI", 0x23, SHA256, (1 << 18) | (1 << 6)) + tpm2b(b"")
            + struct.pack(">HHHHH", 0x10, 0x18, SHA256, 0x0003, 0x10)
            + tpm2b(n.x.to_bytes(32, "big")) + tpm2b(n.y.to_bytes(32, "big")))


def load_external(public: bytes) -> bytes:
    return command(CC_LOAD_EXTERNAL, tpm2b(b"") + tpm2b(public) + u32(RH_OWNER))


def ecdsa_signature(r: int = 1, s: int = 1) -> bytes:
    return struct.pack(">HH", 0x18, SHA256) + tpm2b(r.to_bytes(32, "big")) + tpm2b(
        s.to_bytes(32, "big"))


def signed(nonce: bytes = b"", cp: bytes = b"", ref: bytes = b"", exp: int = 0,
           sig: bytes | None = None, key: int = 0x80000000) -> bytes:
    params = tpm2b(nonce) + tpm2b(cp) + tpm2b(ref) + struct.pack(">i", exp)
    return command(0x160, u32(key) + u32(SESSION) + params + (sig or ecdsa_signature()))


def secret(nonce: bytes = b"", cp: bytes = b"", ref: bytes = b"", exp: int = 0) -> bytes:
    params = tpm2b(nonce) + tpm2b(cp) + tpm2b(ref) + struct.pack(">i", exp)
    return with_pw(0x151, u32(RH_OWNER) + u32(SESSION), params)


def policy_nv(operand: bytes, offset: int, op: int) -> bytes:
    return with_pw(0x149, u32(RH_OWNER) + u32(NV_INDEX) + u32(SESSION),
                   tpm2b(operand) + struct.pack(">HH", offset, op))


def counter_timer(operand: bytes, offset: int, op: int) -> bytes:
    return on(0x16D, tpm2b(operand) + struct.pack(">HH", offset, op))


def digests(*ds: bytes) -> bytes:
    return u32(len(ds)) + b"".join(tpm2b(d) for d in ds)


def authorize(approved: bytes, ref: bytes, name: bytes, ticket_digest: bytes = b"") -> bytes:
    ticket = struct.pack(">HI", ST_VERIFIED, RH_OWNER) + tpm2b(ticket_digest)
    return on(0x16A, tpm2b(approved) + tpm2b(ref) + tpm2b(name) + ticket)


def get_digest() -> bytes:
    return on(0x189)


KEY = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())


def _signature_over(nonce: bytes, expiration: int, cp: bytes, ref: bytes) -> bytes:
    """KEY's ECDSA signature over PolicySigned's aHash (Part 3, 23.3.1)."""
    a_hash = hashlib.sha256(nonce + struct.pack(">i", expiration) + cp + ref).digest()
    der = KEY.sign(a_hash, ec.ECDSA(Prehashed(hashes.SHA256())))
    return ecdsa_signature(*decode_dss_signature(der))


def _setup(ours: TPM, theirs: Any, kind: int, alg: int) -> None:
    key = KEY
    for cmd in (define(NV_INDEX, OWNER_RW, 8), write(NV_INDEX, b"\x00\x05\x00\x00\x00\x00\x00\x07"),
                load_external(ecc_public(key)), start_session(kind, alg)):
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b) == 0, (hex(rc(a)), hex(rc(b)))


def run(ours: TPM, theirs: Any, script: list[tuple[str, bytes]]) -> list[int]:
    """Each step to both TPMs: the codes must match, and so must the policyDigest."""
    codes = []
    for name, cmd in script:
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b), f"{name}: ours 0x{rc(a):03X}, libtpms 0x{rc(b):03X}"
        da, db = ours.execute(get_digest()), theirs.execute(get_digest())
        assert da == db, f"{name}: policyDigest differs"
        codes.append(rc(a))
    return codes


NAME = struct.pack(">H", SHA256) + b"\x42" * 32


def trial_script(size: int) -> list[tuple[str, bytes]]:
    d1, d2 = b"\x01" * size, b"\x02" * size
    return [
        ("PolicyCommandCode unimplemented", on(0x16C, u32(0x1FFF))),
        ("PolicyPCR computed", on(0x17F, tpm2b(b"") + pcr_selection(SHA256, [0, 1, 2, 16]))),
        ("PolicyPCR given", on(0x17F, tpm2b(b"\xaa" * size) + pcr_selection(SHA1, [7]))),
        ("PolicyAuthValue", on(0x16B)),
        ("PolicyPassword", on(0x18C)),
        ("PolicyCommandCode", on(0x16C, u32(0x15E))),
        ("PolicyCommandCode other", on(0x16C, u32(0x153))),
        ("PolicyLocality", on(0x16F, b"\x03")),
        ("PolicyLocality narrower", on(0x16F, b"\x01")),
        ("PolicyLocality disjoint", on(0x16F, b"\x04")),
        ("PolicyLocality extended", on(0x16F, b"\x40")),
        ("PolicyOR", on(0x171, digests(d1, d2))),
        ("PolicyOR of one", on(0x171, digests(d1))),
        ("PolicySecret", secret(ref=b"ref")),
        ("PolicySecret no ref", secret()),
        ("PolicySigned", signed(ref=b"signed-ref", exp=-10)),
        ("PolicySigned with cpHash", signed(cp=b"\x05" * size)),
        ("PolicyNV", policy_nv(b"\x00\x01", 0, 7)),
        ("PolicyCounterTimer", counter_timer(b"\x00" * 8, 0, 5)),
        ("PolicyRestart", on(0x180)),
        ("PolicyCpHash", on(0x16E, tpm2b(b"\x07" * size))),
        ("PolicyCpHash again", on(0x16E, tpm2b(b"\x07" * size))),
        ("PolicyCpHash other", on(0x16E, tpm2b(b"\x08" * size))),
        ("PolicyNameHash after cpHash", on(0x170, tpm2b(b"\x09" * size))),
        ("PolicyRestart", on(0x180)),
        ("PolicyNameHash", on(0x170, tpm2b(b"\x09" * size))),
        ("PolicyTemplate after nameHash", on(0x190, tpm2b(b"\x0a" * size))),
        ("PolicyPhysicalPresence", on(0x187)),
        ("PolicyNvWritten", on(0x18F, b"\x01")),
        ("PolicyNvWritten conflicting", on(0x18F, b"\x00")),
        ("PolicyRestart", on(0x180)),
        ("PolicyTemplate", on(0x190, tpm2b(b"\x0a" * size))),
        ("PolicyTemplate short", on(0x190, tpm2b(b"\x0a" * (size - 1)))),
        ("PolicyRestart", on(0x180)),
        ("PolicyDuplicationSelect", on(0x188, tpm2b(NAME) + tpm2b(NAME[::-1]) + b"\x01")),
        ("PolicyDuplicationSelect twice", on(0x188, tpm2b(NAME) + tpm2b(NAME) + b"\x00")),
        ("PolicyRestart", on(0x180)),
        ("PolicyDuplicationSelect without object", on(0x188, tpm2b(NAME) + tpm2b(NAME)
                                                      + b"\x00")),
        ("PolicyAuthorize", authorize(b"\x00" * size, b"approved", NAME)),
        ("PolicyAuthorizeNV", with_pw(0x192, u32(RH_OWNER) + u32(NV_INDEX) + u32(SESSION),
                                      b"")),
        ("PolicyTicket in a trial", on(0x172, tpm2b(b"\x00" * 8) + tpm2b(b"") + tpm2b(b"")
                                       + tpm2b(NAME) + struct.pack(">HI", ST_AUTH_SIGNED,
                                                                   RH_OWNER) + tpm2b(b""))),
        ("PolicyGetDigest of an HMAC session", on(0x189, session=0x02000000)),
    ]


@pytest.mark.parametrize("alg", [SHA256, SHA1, SHA512])
def test_trial_session_digests_match_libtpms(swtpm: Any, alg: int) -> None:
    ours, theirs = started_pair(swtpm)
    _setup(ours, theirs, TRIAL, alg)
    codes = run(ours, theirs, trial_script(SIZES[alg]))
    assert codes.count(0) > 25  # most steps succeed, so most digests were compared


def test_policy_session_checks_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    _setup(ours, theirs, POLICY, SHA256)
    d1, d2 = b"\x01" * 32, b"\x02" * 32
    codes = run(ours, theirs, [
        ("PolicyOR without the digest", on(0x171, digests(d1, d2))),
        ("PolicyOR with it", on(0x171, digests(d1, b"\x00" * 32))),
        ("PolicyPCR wrong digest", on(0x17F, tpm2b(b"\xaa" * 32) + pcr_selection(SHA256, [0]))),
        ("PolicyPCR", on(0x17F, tpm2b(b"") + pcr_selection(SHA256, [0]))),
        ("PolicyLocality none", on(0x16F, b"\x00")),
        ("PolicyCpHash wrong size", on(0x16E, tpm2b(b"\x07" * 20))),
        ("PolicyNV equal", policy_nv(b"\x00\x05", 0, 0)),
        ("PolicyNV unequal", policy_nv(b"\x00\x06", 0, 0)),
        ("PolicyNV signed less", policy_nv(b"\x00\x07", 6, 4)),
        ("PolicyNV bits set", policy_nv(b"\x00\x05", 0, 0xA)),
        ("PolicyNV bits clear", policy_nv(b"\x00\x05", 0, 0xB)),
        ("PolicyNV beyond", policy_nv(b"\x00", 9, 0)),
        ("PolicyNV too long", policy_nv(b"\x00" * 4, 6, 0)),
        ("PolicyCounterTimer time ≥ 0", counter_timer(b"\x00" * 8, 0, 7)),
        ("PolicyCounterTimer safe", counter_timer(b"\x01", 24, 0)),
        ("PolicyCounterTimer beyond", counter_timer(b"\x01" * 4, 24, 0)),
        ("PolicySigned bad signature", signed(sig=ecdsa_signature(5, 7))),
        ("PolicySigned", signed(ref=b"r", sig=_signature_over(b"", 0, b"", b"r"))),
        ("PolicySigned for a ticket", signed(exp=-30, sig=_signature_over(b"", -30, b"", b""))),
        ("PolicySigned expiring", signed(exp=30, sig=_signature_over(b"", 30, b"", b""))),
        ("PolicySigned foreign nonce", signed(nonce=b"\x01" * 32)),
        ("PolicySigned RSA signature on ECC key",
         signed(sig=struct.pack(">HH", 0x14, SHA256) + tpm2b(b"\x01" * 256))),
        ("PolicySecret cpHash size", secret(cp=b"\x01" * 20)),
        ("PolicySecret", secret(cp=b"\x01" * 32, ref=b"r")),
        ("PolicySecret other cpHash", secret(cp=b"\x02" * 32)),
        ("PolicyAuthorize keySign alg", authorize(b"", b"", b"\x00\x99" + b"\x00" * 32)),
        ("PolicyAuthorize keySign size", authorize(b"", b"", NAME[:-1])),
        ("PolicyAuthorize not approved", authorize(b"\x00" * 32, b"", NAME)),
        ("PolicyTicket timeout size", on(0x172, tpm2b(b"\x00" * 4) + tpm2b(b"") + tpm2b(b"")
                                         + tpm2b(NAME) + struct.pack(">HI", ST_AUTH_SIGNED,
                                                                     RH_OWNER) + tpm2b(b""))),
        ("PolicyRestart", on(0x180)),
        ("PolicyAuthorizeNV wrong hash", with_pw(0x192, u32(RH_OWNER) + u32(NV_INDEX)
                                                 + u32(SESSION), b"")),
    ])
    assert codes[0] == 0x1C4 and codes[7] == 0x126


def test_policy_command_attributes_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cc in POLICY_CCS:
        assert _capability(ours, 2, cc, 1)[0] == _capability(theirs, 2, cc, 1)[0], hex(cc)


# ---- enforcement at authorization: a sealed object behind a policy ------------------------
def _with_policy_session(cc: int, handles: bytes, params: bytes, session: int = SESSION) -> bytes:
    """A command authorized by a policy session with an empty hmac (unbound, unsalted
    and without PolicyAuthValue/PolicyPassword, the key is empty)."""
    area = struct.pack(">IHBH", session, 0, 1, 0)
    return command(cc, handles + u32(len(area)) + area + params, 0x8002)


def _sealed_under_parent(tpm: Any, policy: bytes) -> int:
    from tests.emulator.test_differential_objects import BASE, create, create_primary

    assert rc(tpm.execute(create_primary(BASE))) == 0
    public = TPM2B_PUBLIC.parse("keyedhash", objectAttributes="fixedtpm|fixedparent|noda")
    public.publicArea.authPolicy = policy
    sensitive = tpm2b(tpm2b(b"") + tpm2b(b"sealed secret"))
    r = tpm.execute(create(0x80000000, bytes(public.publicArea.marshal()), sensitive))
    assert rc(r) == 0, hex(rc(r))
    at = 14
    (n,) = struct.unpack_from(">H", r, at)
    private = r[at : at + 2 + n]
    at += 2 + n
    (n,) = struct.unpack_from(">H", r, at)
    public_bytes = r[at : at + 2 + n]
    r = tpm.execute(with_pw(0x157, u32(0x80000000), private + public_bytes))
    assert rc(r) == 0, hex(rc(r))
    return int(struct.unpack_from(">I", r, 10)[0])


def test_policy_enforcement_codes_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    pcr7 = pcr_selection(SHA256, [7])
    assertions = [on(0x16C, u32(0x15E)), on(0x17F, tpm2b(b"") + pcr7)]
    assert rc(ours.execute(start_session(TRIAL))) == 0
    for cmd in assertions:
        assert rc(ours.execute(cmd)) == 0
    policy = ours.execute(get_digest())[12:]
    assert rc(ours.execute(command(0x165, u32(SESSION)))) == 0
    unseal = _with_policy_session(0x15E, u32(0x80000001), b"")
    extend7 = with_pw(0x182, u32(7), struct.pack(">IH", 1, SHA256) + b"\x07" * 32)
    script: list[tuple[str, bytes]] = [
        ("policy session", start_session(POLICY)),
        ("Unseal without assertions", unseal),
        *[(f"assertion {i}", cmd) for i, cmd in enumerate(assertions)],
        ("Unseal", unseal),
        ("Unseal again: the session started over", unseal),
        ("PolicyPCR first", assertions[1]),
        ("then PolicyCommandCode", assertions[0]),
        ("Unseal with the assertions swapped", unseal),
        ("PolicyRestart", on(0x180)),
        *[(f"assertion {i} again", cmd) for i, cmd in enumerate(assertions)],
        ("PCR 7 extended", extend7),
        ("Unseal after the PCR changed", unseal),
        ("PolicyRestart", on(0x180)),
        *[(f"assertion {i} once more", cmd) for i, cmd in enumerate(assertions)],
        ("Unseal with other PCR values", unseal),
        ("NV index with a policy", define(NV_INDEX, OWNER_RW, 8, b"old", policy=bytes(32))),
        ("PolicyRestart", on(0x180)),
        ("NV_ChangeAuth (ADMIN) without PolicyCommandCode",
         _with_policy_session(0x13B, u32(NV_INDEX), tpm2b(b"new"))),
    ]
    sealed = [_sealed_under_parent(t, policy) for t in (ours, theirs)]
    assert sealed == [0x80000001, 0x80000001]
    outcome = []
    for name, cmd in script:
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b), f"{name}: ours 0x{rc(a):03X}, libtpms 0x{rc(b):03X}"
        if cmd == unseal and rc(a) == 0:
            assert a[14:].startswith(tpm2b(b"sealed secret")) and b[14:].startswith(
                tpm2b(b"sealed secret"))
        outcome.append(rc(a))
    assert outcome[4] == 0 and 0x128 in outcome and outcome[-1] == 0x99D
