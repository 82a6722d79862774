"""TPM2_ECC_Parameters, TPM2_EC_Ephemeral, TPM2_Commit, TPM2_ZGen_2Phase and the ECDAA /
EC-Schnorr signing schemes, differentially against a real swtpm (libtpms): the same
keys (TPM2_LoadExternal of ``cryptography`` keys) and command sequences to both.

The curve details must match octet for octet; commit values are secret and random,
so the rest is compared by response code (refusals must carry the same handle or
parameter number), and EC-Schnorr signatures must verify across the two TPMs.

Known divergences, not compared: libtpms also implements the BN and SM2 curves and the
ECMQV and SM2 key exchanges; we refuse those curves (TPM_RC_CURVE) and schemes
(TPM_RC_SCHEME, parameter 3) while unmarshalling.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from tests.emulator.emulator_wire import command, rc
from tests.emulator.outside_keys import p256_key
from tests.emulator.test_differential_objects import _capability, both, started_pair
from tests.emulator.test_ecc_two_phase import (
    ECDAA,
    ECSCHNORR,
    SCHNORR,
    G,
    basename_point,
    commit,
    ec_ephemeral,
    ecdaa_scheme,
    key_command,
    parameters,
    point,
    public,
    read_point,
    sign,
    tpm2b,
    zgen,
)
from tpm_emulator import TPM

ECC_CCS = (0x178, 0x18E, 0x18B, 0x18D)
OFF_CURVE = (1, 2)


def load_both(ours: TPM, theirs: Any, cmd: bytes) -> int:
    a, b = both(ours, theirs, cmd)
    assert rc(a) == rc(b) == 0, (hex(rc(a)), hex(rc(b)))
    return int(struct.unpack(">I", a[10:14])[0])


def flush(ours: TPM, theirs: Any, h: int) -> None:
    both(ours, theirs, command(0x165, struct.pack(">I", h)))


def check(ours: TPM, theirs: Any, script: dict[str, bytes]) -> None:
    differ = {}
    for name, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[name] = (hex(rc(a)), hex(rc(b)))
    assert not differ, "\n".join(f"{k}: ours {v[0]} libtpms {v[1]}" for k, v in differ.items())


def test_command_attributes_and_algorithms_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cc in ECC_CCS:
        assert _capability(ours, 2, cc, 1)[0] == _capability(theirs, 2, cc, 1)[0], hex(cc)
    for alg in (ECDAA, ECSCHNORR):
        assert _capability(ours, 0, alg, 1)[0] == _capability(theirs, 0, alg, 1)[0], hex(alg)


def test_ecc_parameters_match_libtpms_octet_for_octet(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for curve in (3, 4, 5):
        a, b = both(ours, theirs, command(0x178, struct.pack(">H", curve)))
        assert rc(a) == 0 and a == b, hex(curve)
    for curve in (0, 0x99):  # no such curve: TPM_RC_CURVE, parameter 1
        a, b = both(ours, theirs, command(0x178, struct.pack(">H", curve)))
        assert rc(a) == rc(b) == 0x1E6, hex(curve)
    a, b = both(ours, theirs, ec_ephemeral(0x99))
    assert rc(a) == rc(b) == 0x1E6


def test_commit_refusals_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    daa = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", ECDAA))
    dsa = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", 0x18))
    dh = load_both(ours, theirs, key_command(p256_key(), "decrypt|userwithauth"))
    check(ours, theirs, {
        "no points": commit(daa),
        "P1 = G": commit(daa, G),
        "an empty TPM2B for P1": commit(daa, b"\x00\x00"),
        "P1 off the curve": commit(daa, OFF_CURVE),
        "an ECDSA key": commit(dsa, G),
        "a key without a scheme": commit(dh, G),
        "s2 without y2": commit(daa, G, b"abc"),
        "y2 without s2": commit(daa, G, b"", b"\x01"),
        "(H(s2), y2) off the curve": commit(daa, G, b"abc", b"\x01" * 32),
    })
    flush(ours, theirs, dsa)
    public_only = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", ECDAA,
                                                      private=False))
    check(ours, theirs, {"a public-only key and P1": commit(public_only, G)})


def test_zgen_2phase_refusals_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    dh = load_both(ours, theirs, key_command(p256_key(), "decrypt|userwithauth"))
    dh_own = load_both(ours, theirs, key_command(p256_key(), "decrypt|userwithauth", 0x19))
    daa = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", ECDAA))
    a, b = both(ours, theirs, ec_ephemeral())
    assert rc(a) == rc(b) == 0
    c = int(struct.unpack(">H", a[-2:])[0])
    assert c == int(struct.unpack(">H", b[-2:])[0])
    check(ours, theirs, {
        "the ephemeral key": zgen(dh, G, G, c),
        "used again": zgen(dh, G, G, c),
        "a counter not issued": zgen(dh, G, G, c + 5),
        "a NULL scheme": zgen(dh, G, G, c, 0x10),
        "ECDSA for a scheme": zgen(dh, G, G, c, 0x18),
        "QsB off the curve": zgen(dh, OFF_CURVE, G, c),
        "QeB off the curve": zgen(dh, G, OFF_CURVE, c),
        "an empty QsB": zgen(dh, point(None), G, c),
        "a signing key": zgen(daa, G, G, c),
        "ECMQV on an ECDH key": zgen(dh_own, G, G, c, 0x1D),
    })
    a, b = both(ours, theirs, ec_ephemeral())
    c = int(struct.unpack(">H", a[-2:])[0])
    check(ours, theirs, {
        "a counter a lap ahead": zgen(dh_own, G, G, c + 128),
        "an ECDH key, ECDH": zgen(dh_own, G, G, c),
    })


def test_ecdaa_and_schnorr_signing_refusals_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    daa = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", ECDAA))
    sch = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", ECSCHNORR))
    dsa = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", 0x18))
    digest = hashlib.sha256(b"x").digest()
    a, b = both(ours, theirs, commit(daa, G))
    c = int(struct.unpack(">H", parameters(a)[-2:])[0])
    assert c == int(struct.unpack(">H", parameters(b)[-2:])[0])
    check(ours, theirs, {
        "ECDAA key, NULL scheme": sign(daa, digest, b"\x00\x10"),
        "a count not committed": sign(daa, digest, ecdaa_scheme(c + 3)),
        "another hash": sign(daa, digest, struct.pack(">HHH", ECDAA, 0x0C, c)),
        "ECDAA": sign(daa, digest, ecdaa_scheme(c)),
        "ECDAA again": sign(daa, digest, ecdaa_scheme(c)),
        "Schnorr key, NULL scheme": sign(sch, digest, b"\x00\x10"),
        "ECDSA key, Schnorr": sign(dsa, digest, SCHNORR),
        "ECDSA key, ECDAA": sign(dsa, digest, ecdaa_scheme(0)),
        "Schnorr key, ECDAA": sign(sch, digest, ecdaa_scheme(0)),
        "verify an ECDAA signature": command(0x177, struct.pack(">I", daa) + tpm2b(digest)
                                             + struct.pack(">HH", ECDAA, 0x0B) + tpm2b(b"\x01")
                                             + tpm2b(b"\x01" * 32)),
        "verify Schnorr with r = 0": command(0x177, struct.pack(">I", sch) + tpm2b(digest)
                                             + SCHNORR + tpm2b(b"") + tpm2b(b"\x01" * 32)),
    })


def test_schnorr_signatures_verify_across_the_two_tpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    sch = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", ECSCHNORR))
    digest = hashlib.sha256(b"across").digest()
    a, b = both(ours, theirs, sign(sch, digest, SCHNORR))
    assert rc(a) == rc(b) == 0
    for sig in (parameters(a), parameters(b)):
        good = command(0x177, struct.pack(">I", sch) + tpm2b(digest) + sig)
        bad = command(0x177, struct.pack(">I", sch) + tpm2b(hashlib.sha256(b"-").digest()) + sig)
        for tpm in (ours, theirs):
            assert rc(tpm.execute(good)) == 0
            assert rc(tpm.execute(bad)) == 0x2DB  # TPM_RC_SIGNATURE, parameter 2


def test_the_deterministic_products_equal_libtpms(swtpm: Any) -> None:
    """ZGen_2Phase's Z1 = [dsA]QsB and Commit's K = [d]P2 depend only on the key and
    the caller's points, so both TPMs must give the same octets."""
    ours, theirs = started_pair(swtpm)
    dh = load_both(ours, theirs, key_command(p256_key(), "decrypt|userwithauth"))
    daa = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", ECDAA))
    peer = public(p256_key())
    a, b = both(ours, theirs, ec_ephemeral())
    c = int(struct.unpack(">H", a[-2:])[0])
    a, b = both(ours, theirs, zgen(dh, peer, G, c))
    assert rc(a) == rc(b) == 0
    assert read_point(parameters(a), 0)[0] == read_point(parameters(b), 0)[0]
    s2, p2 = basename_point()
    cmd = commit(daa, G, s2, p2[1].to_bytes(32, "big"))
    a, b = both(ours, theirs, cmd)
    assert rc(a) == rc(b) == 0
    k_ours, k_theirs = read_point(parameters(a), 0)[0], read_point(parameters(b), 0)[0]
    assert k_ours is not None and k_ours == k_theirs


def _attest(response: bytes) -> bytes:
    body = parameters(response)
    return body[2:2 + int(struct.unpack(">H", body[:2])[0])]


def test_anonymous_attestations_name_no_signer_like_libtpms(swtpm: Any) -> None:
    """Quote and Certify with ECDAA: no qualifiedSigner, no extraData, and Certify's
    qualifiedName empty, so nothing in the attestation says which key signed. Clock
    and the obfuscated counters differ between the TPMs; the rest must be equal."""
    ours, theirs = started_pair(swtpm)
    daa = load_both(ours, theirs, key_command(p256_key(), "sign|userwithauth", ECDAA))
    password = struct.pack(">IHBH", 0x40000009, 0, 0, 0)
    nonce = tpm2b(b"verifier nonce")
    attests = []
    for tpm in (ours, theirs):
        counts = []
        for _ in range(2):
            r = answered(tpm, commit(daa, G))
            counts.append(int(struct.unpack(">H", parameters(r)[-2:])[0]))
        quote = command(0x158, struct.pack(">II", daa, len(password)) + password + nonce
                        + ecdaa_scheme(counts[0]) + struct.pack(">I", 0), 0x8002)
        certify = command(0x148, struct.pack(">III", daa, daa, 2 * len(password))
                          + password * 2 + nonce + ecdaa_scheme(counts[1]), 0x8002)
        attests.append([_attest(answered(tpm, c)) for c in (quote, certify)])
    for mine, other in zip(*attests, strict=True):
        header = 6 + 2 + 2  # magic, type, empty qualifiedSigner, empty extraData
        assert mine[:header] == other[:header]
        assert mine[6:header] == b"\x00" * 4
        clock_and_firmware = 17 + 8
        assert mine[header + clock_and_firmware:] == other[header + clock_and_firmware:]
    certified = attests[0][1][10 + 25:]
    assert certified.endswith(b"\x00\x00")  # qualifiedName: empty


def answered(tpm: Any, cmd: bytes) -> bytes:
    """libtpms may answer TPM_RC_RETRY once; a TSS sends the command again."""
    for _ in range(3):
        r = tpm.execute(cmd)
        if rc(r) != 0x922:
            break
    assert rc(r) == 0, hex(rc(r))
    return r


def test_split_max_is_the_commit_array_size_like_libtpms(swtpm: Any) -> None:
    """TPM_PT_SPLIT_MAX: how many TPM2_Commit values may be outstanding (128 in both)."""
    ours, theirs = started_pair(swtpm)
    get = command(0x17A, struct.pack(">III", 6, 0x128, 1))
    mine, other = ours.execute(get), theirs.execute(get)
    assert mine[19:27] == other[19:27] == struct.pack(">II", 0x128, 128)
