"""TPM2_EC_Ephemeral, TPM2_Commit, TPM2_ZGen_2Phase and the ECDAA / EC-Schnorr signing
schemes, checked against arithmetic done here independently: ``cryptography`` ECDH
for x coordinates and a plain affine double-and-add for whole points. Keys are made
with ``cryptography`` and loaded with TPM2_LoadExternal, so their private scalars
are known to the test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import TPM2_ALG, TPM2B_PUBLIC, TPM2B_SENSITIVE

from tests.emulator.emulator_wire import command, rc, with_pw
from tests.emulator.outside_keys import p256_key
from tpm_emulator import TPM
from tpm_emulator import state as tpm_state

# P-256 (FIPS 186-4, D.1.2.3), written out here so the test does not lean on the code
# under test.
P = 2**256 - 2**224 + 2**192 + 2**96 - 1
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)
NULL_H = 0x40000007
SHA256, ECDH, ECDAA, ECSCHNORR = 0x0B, 0x19, 0x1A, 0x1C
Pt = tuple[int, int] | None


# ---- independent affine arithmetic (y² = x³ - 3x + b) ----------------------------
def add(a: Pt, b: Pt) -> Pt:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P == 0:
        return None
    if a == b:
        m = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, P) % P
    else:
        m = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (m * m - a[0] - b[0]) % P
    return x, (m * (a[0] - x) - a[1]) % P


def mul(k: int, pt: Pt) -> Pt:
    out: Pt = None
    for bit in bin(k % N)[2:]:
        out = add(out, out)
        if bit == "1":
            out = add(out, pt)
    return out


def basename_point() -> tuple[bytes, tuple[int, int]]:
    """A basename s2 whose SHA-256 (mod p) is the x of a curve point, and that point
    (TPM2_Commit's P2 = (H(s2) mod p, y2))."""
    for i in range(100):
        s2 = b"basename %d" % i
        x = int.from_bytes(hashlib.sha256(s2).digest(), "big") % P
        rhs = (x**3 - 3 * x + B) % P
        y = pow(rhs, (P + 1) // 4, P)
        if y * y % P == rhs:
            return s2, (x, y)
    raise AssertionError("no basename maps to a point")  # pragma: no cover


# ---- wire helpers ----------------------------------------------------------------------
def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def point(pt: Pt) -> bytes:
    if pt is None:
        return tpm2b(tpm2b(b"") + tpm2b(b""))
    return tpm2b(tpm2b(pt[0].to_bytes(32, "big")) + tpm2b(pt[1].to_bytes(32, "big")))


def read_point(buf: bytes, at: int) -> tuple[Pt, int]:
    """A TPM2B_ECC_POINT at ``at``; the point (None if empty) and the offset after it."""
    size = struct.unpack(">H", buf[at:at + 2])[0]
    body = buf[at + 2:at + 2 + size]
    nx = struct.unpack(">H", body[:2])[0]
    x = body[2:2 + nx]
    y = body[4 + nx:]
    return (None if not x else (int.from_bytes(x, "big"), int.from_bytes(y, "big"))), at + 2 + size


def key_command(key: ec.EllipticCurvePrivateKey, attrs: str, scheme: int | None = None,
                count: int = 0, private: bool = True) -> bytes:
    """TPM2_LoadExternal of a P-256 key, with an optional scheme (hash SHA-256)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = TPM2B_PUBLIC.from_pem(pem, objectAttributes=attrs)
    if scheme is not None:
        pub.publicArea.parameters.eccDetail.scheme.scheme = scheme
        pub.publicArea.parameters.eccDetail.scheme.details.ecdaa.hashAlg = TPM2_ALG.SHA256
        pub.publicArea.parameters.eccDetail.scheme.details.ecdaa.count = count
    sens = bytes(TPM2B_SENSITIVE.from_pem(pem).marshal()) if private else b"\x00\x00"
    return command(0x167, sens + bytes(pub.marshal()) + struct.pack(">I", NULL_H))


def load(tpm: Any, cmd: bytes) -> int:
    r = tpm.execute(cmd)
    assert rc(r) == 0, hex(rc(r))
    return int(struct.unpack(">I", r[10:14])[0])


def ec_ephemeral(curve: int = 3) -> bytes:
    return command(0x18E, struct.pack(">H", curve))


def commit(h: int, p1: Pt | bytes = b"", s2: bytes = b"", y2: bytes = b"") -> bytes:
    p1_wire = p1 if isinstance(p1, bytes) else point(p1)
    return with_pw(0x18B, struct.pack(">I", h),
                   (p1_wire or point(None)) + tpm2b(s2) + tpm2b(y2))


def zgen(h: int, qs: Pt | bytes, qe: Pt | bytes, counter: int, scheme: int = ECDH) -> bytes:
    qs_wire = qs if isinstance(qs, bytes) else point(qs)
    qe_wire = qe if isinstance(qe, bytes) else point(qe)
    return with_pw(0x18D, struct.pack(">I", h),
                   qs_wire + qe_wire + struct.pack(">HH", scheme, counter))


def sign(h: int, digest: bytes, scheme: bytes) -> bytes:
    return with_pw(0x15D, struct.pack(">I", h),
                   tpm2b(digest) + scheme + struct.pack(">HIH", 0x8024, NULL_H, 0))


def ecdaa_scheme(count: int) -> bytes:
    return struct.pack(">HHH", ECDAA, SHA256, count)


SCHNORR = struct.pack(">HH", ECSCHNORR, SHA256)


def parameters(r: bytes) -> bytes:
    """The response parameters of a command sent with a session."""
    return r[14:14 + struct.unpack(">I", r[10:14])[0]]


def signature_pair(r: bytes) -> tuple[int, bytes, bytes]:
    """(sigAlg, first component, second component) of TPM2_Sign's ECC signature."""
    body = parameters(r)
    alg = struct.unpack(">H", body[:2])[0]
    n1 = struct.unpack(">H", body[4:6])[0]
    first = body[6:6 + n1]
    n2 = struct.unpack(">H", body[6 + n1:8 + n1])[0]
    return alg, first, body[8 + n1:8 + n1 + n2]


def public(key: ec.EllipticCurvePrivateKey) -> tuple[int, int]:
    n = key.public_key().public_numbers()
    return n.x, n.y


def ecdh_x(key: ec.EllipticCurvePrivateKey, pt: tuple[int, int]) -> int:
    peer = ec.EllipticCurvePublicNumbers(pt[0], pt[1], ec.SECP256R1()).public_key()
    return int.from_bytes(key.exchange(ec.ECDH(), peer), "big")


@pytest.fixture
def started() -> TPM:
    tpm = TPM()
    assert rc(tpm.execute(command(0x144, b"\x00\x00"))) == 0
    return tpm


# ---- EC_Ephemeral and ZGen_2Phase ----------------------------------------------------
def test_zgen_2phase_ecdh_gives_both_products(started: TPM) -> None:
    tpm = started
    static_a = p256_key()
    h = load(tpm, key_command(static_a, "decrypt|userwithauth"))
    r = tpm.execute(ec_ephemeral())
    assert rc(r) == 0
    q_eph, end = read_point(r, 10)
    counter = struct.unpack(">H", r[end:end + 2])[0]
    assert q_eph is not None
    static_b, ephemeral_b = p256_key(), p256_key()
    r = tpm.execute(zgen(h, public(static_b), public(ephemeral_b), counter))
    assert rc(r) == 0, hex(rc(r))
    z1, end = read_point(parameters(r), 0)
    z2, _ = read_point(parameters(r), end)
    # Z1 = [dsA]QsB = [dsB]QsA; Z2 = [r]QeB = [deB](Q from EC_Ephemeral).
    assert z1 == mul(static_b.private_numbers().private_value, public(static_a))
    assert z1 is not None and z1[0] == ecdh_x(static_b, public(static_a))
    assert z2 == mul(ephemeral_b.private_numbers().private_value, q_eph)
    assert z2 is not None and z2[0] == ecdh_x(ephemeral_b, q_eph)
    # The ephemeral value is used once.
    again = tpm.execute(zgen(h, public(static_b), public(ephemeral_b), counter))
    assert rc(again) == 0x4C4  # TPM_RC_VALUE, parameter 4


def test_ephemeral_counters_count_up_and_refuse_strangers(started: TPM) -> None:
    tpm = started
    counters = []
    for _ in range(3):
        r = tpm.execute(ec_ephemeral())
        counters.append(struct.unpack(">H", r[-2:])[0])
    assert counters == [0, 1, 2]
    h = load(tpm, key_command(p256_key(), "decrypt|userwithauth"))
    q = public(p256_key())
    assert rc(tpm.execute(zgen(h, q, q, 3))) == 0x4C4  # not issued yet
    assert rc(tpm.execute(zgen(h, q, q, 1 + 128))) == 0x4C4  # the right bit, wrong lap
    assert rc(tpm.execute(zgen(h, q, (1, 2), 1))) == 0x2E7  # ECC_POINT, parameter 2
    assert rc(tpm.execute(zgen(h, q, q, 1))) == 0


# ---- Commit and ECDAA ------------------------------------------------------------------
def test_commit_points_and_ecdaa_signature_agree(started: TPM) -> None:
    tpm = started
    key = p256_key()
    d = key.private_numbers().private_value
    h = load(tpm, key_command(key, "sign|userwithauth", ECDAA))
    s2, p2 = basename_point()
    y2 = p2[1]
    p1 = mul(7, G)
    r = tpm.execute(commit(h, p1, s2, y2.to_bytes(32, "big")))
    assert rc(r) == 0, hex(rc(r))
    body = parameters(r)
    k, at = read_point(body, 0)
    l_, at = read_point(body, at)
    e, at = read_point(body, at)
    counter = struct.unpack(">H", body[at:at + 2])[0]
    assert k == mul(d, p2)
    digest = hashlib.sha256(b"message").digest()
    r = tpm.execute(sign(h, digest, ecdaa_scheme(counter)))
    assert rc(r) == 0, hex(rc(r))
    alg, nonce_k, s_bytes = signature_pair(r)
    assert alg == ECDAA
    s = int.from_bytes(s_bytes, "big")
    t = int.from_bytes(hashlib.sha256(nonce_k + digest).digest(), "big")
    # s = r + T·d, with L = [r]P2 and E = [r]P1 from the commit:
    assert mul(s, p2) == add(l_, mul(t, k))
    assert mul(s, p1) == add(e, mul(t * d, p1))
    # The commitment is used up.
    assert rc(tpm.execute(sign(h, digest, ecdaa_scheme(counter)))) == 0x084  # TPM_RC_VALUE


def test_commit_without_points_gives_r_times_g(started: TPM) -> None:
    tpm = started
    key = p256_key()
    d = key.private_numbers().private_value
    h = load(tpm, key_command(key, "sign|userwithauth", ECDAA))
    r = tpm.execute(commit(h))
    assert rc(r) == 0, hex(rc(r))
    body = parameters(r)
    k, at = read_point(body, 0)
    l_, at = read_point(body, at)
    e, at = read_point(body, at)
    assert k is None and l_ is None and e is not None
    counter = struct.unpack(">H", body[at:at + 2])[0]
    digest = hashlib.sha256(b"m").digest()
    r = tpm.execute(sign(h, digest, ecdaa_scheme(counter)))
    _, nonce_k, s_bytes = signature_pair(r)
    t = int.from_bytes(hashlib.sha256(nonce_k + digest).digest(), "big")
    assert mul(int.from_bytes(s_bytes, "big"), G) == add(e, mul(t, mul(d, G)))


# ---- EC-Schnorr -----------------------------------------------------------------------
def test_schnorr_signature_verifies_independently(started: TPM) -> None:
    tpm = started
    key = p256_key()
    h = load(tpm, key_command(key, "sign|userwithauth", ECSCHNORR))
    digest = hashlib.sha256(b"schnorr").digest()
    r = tpm.execute(sign(h, digest, SCHNORR))
    assert rc(r) == 0, hex(rc(r))
    alg, r_bytes, s_bytes = signature_pair(r)
    assert alg == ECSCHNORR and len(r_bytes) == len(s_bytes) == 32
    rr, s = int.from_bytes(r_bytes, "big"), int.from_bytes(s_bytes, "big")
    big_r = add(mul(s, G), mul(N - rr, public(key)))
    assert big_r is not None
    e = hashlib.sha256(big_r[0].to_bytes(32, "big") + digest).digest()
    assert int.from_bytes(e, "big") == rr
    # TPM2_VerifySignature takes it, and refuses it over another digest.
    sig = parameters(r)
    verify = command(0x177, struct.pack(">I", h) + tpm2b(digest) + sig)
    assert rc(tpm.execute(verify)) == 0
    other = command(0x177, struct.pack(">I", h) + tpm2b(hashlib.sha256(b"x").digest()) + sig)
    assert rc(tpm.execute(other)) == 0x2DB  # TPM_RC_SIGNATURE, parameter 2


# ---- the commit state is TPM Reset data -------------------------------------------------
def _commit_count(tpm: TPM, h: int) -> int:
    r = tpm.execute(commit(h))
    assert rc(r) == 0
    return int(struct.unpack(">H", parameters(r)[-2:])[0])


def test_commitments_survive_snapshot_and_restart_but_not_reset(started: TPM) -> None:
    tpm = started
    key_cmd = key_command(p256_key(), "sign|userwithauth", ECDAA)
    digest = hashlib.sha256(b"d").digest()
    h = load(tpm, key_cmd)
    first, second = _commit_count(tpm, h), _commit_count(tpm, h)
    restored = TPM.restore(tpm.snapshot())
    assert rc(restored.execute(sign(h, digest, ecdaa_scheme(first)))) == 0
    # TPM Restart: Shutdown(STATE) then Startup(CLEAR) keeps the commit state.
    assert rc(restored.execute(command(0x145, b"\x00\x01"))) == 0
    restored.power_cycle()
    assert rc(restored.execute(command(0x144, b"\x00\x00"))) == 0
    h = load(restored, key_cmd)
    assert _commit_count(restored, h) == 2
    assert rc(restored.execute(sign(h, digest, ecdaa_scheme(second)))) == 0
    assert rc(restored.execute(sign(h, digest, ecdaa_scheme(first)))) == 0x084  # used
    # TPM Reset: a new nonce, the count from 0, nothing outstanding.
    assert rc(restored.execute(command(0x145, b"\x00\x00"))) == 0
    restored.power_cycle()
    assert rc(restored.execute(command(0x144, b"\x00\x00"))) == 0
    h = load(restored, key_cmd)
    assert rc(restored.execute(sign(h, digest, ecdaa_scheme(2)))) == 0x084
    assert _commit_count(restored, h) == 0


def test_a_snapshot_without_the_commit_record_restores(started: TPM) -> None:
    tpm = started
    rec = dataclasses.replace(tpm_state.decode(tpm.snapshot()), commitState=())
    restored = TPM.restore(tpm_state.encode(rec))
    assert struct.unpack(">H", restored.execute(ec_ephemeral())[-2:])[0] == 0


# ---- through a TSS (what tpm2_geteccparameters, tpm2_ecephemeral, tpm2_commit and
# tpm2_zgen2phase send) ------------------------------------------------------------------
def test_the_commands_through_esapi(esapi: Any) -> None:
    from tpm2_pytss import ESYS_TR, TPM2_ECC, TPM2B_ECC_POINT, TPMS_ECC_POINT

    detail = esapi.ecc_parameters(TPM2_ECC.NIST_P256)
    assert int.from_bytes(bytes(detail.p), "big") == P
    assert (int.from_bytes(bytes(detail.gX), "big"), int.from_bytes(bytes(detail.gY), "big")) == G
    assert int.from_bytes(bytes(detail.n), "big") == N
    q, counter = esapi.ec_ephemeral(TPM2_ECC.NIST_P256)
    q_eph = (int.from_bytes(bytes(q.point.x), "big"), int.from_bytes(bytes(q.point.y), "big"))
    static_a = p256_key()
    pem = static_a.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    handle = esapi.load_external(TPM2B_PUBLIC.from_pem(pem, objectAttributes=(
        "decrypt|userwithauth")), TPM2B_SENSITIVE.from_pem(pem), ESYS_TR.RH_NULL)
    peer = p256_key()
    qb = TPM2B_ECC_POINT(TPMS_ECC_POINT(x=public(peer)[0].to_bytes(32, "big"),
                                        y=public(peer)[1].to_bytes(32, "big")))
    z1, z2 = esapi.zgen_2_phase(handle, qb, qb, TPM2_ALG.ECDH, counter)
    d_peer = peer.private_numbers().private_value
    assert int.from_bytes(bytes(z1.point.x), "big") == ecdh_x(peer, public(static_a))
    expected = mul(d_peer, q_eph)
    assert expected is not None and int.from_bytes(bytes(z2.point.x), "big") == expected[0]
