"""Key and crypto commands, differentially: the same raw command sequences to a real swtpm
(libtpms) and to our TPM. Keys are loaded on both with TPM2_LoadExternal from the same
``cryptography`` keys, so every deterministic output (AES modes with their ivOut, HMAC,
hash sequences, raw RSA, RSASSA and HMAC signatures, the ECDH point, activated
credentials) must match octet for octet; randomised outputs and hierarchy-keyed tickets
are compared by response code and shape; misuse must earn the same response code.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss import TPM2_ALG, TPM2B_NAME, TPM2B_PUBLIC, TPM2B_SENSITIVE

from tests.emulator.emulator_wire import command, rc, with_pw
from tests.emulator.outside_keys import p256_key
from tests.emulator.test_differential_objects import _capability, both, started_pair
from tpm_emulator import TPM

NULL_H, OWNER = 0x40000007, 0x40000001
CFB, OFB, CBC, CTR, ECB, NULL = 0x43, 0x41, 0x42, 0x40, 0x44, 0x10
SHA1, SHA256, SHA384, SHA512 = 0x04, 0x0B, 0x0C, 0x0D


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def handle_of(response: bytes) -> int:
    assert rc(response) == 0, hex(rc(response))
    return int(struct.unpack(">I", response[10:14])[0])


def load_external(pub: Any, sens: Any, hierarchy: int = NULL_H) -> bytes:
    private = bytes(sens.marshal()) if sens is not None else b"\x00\x00"
    return command(0x167, private + bytes(pub.marshal()) + struct.pack(">I", hierarchy))


def symmetric_key(key: bytes, alg: str, attrs: str) -> bytes:
    seed = hashlib.sha256(b"seed" + key).digest()  # fixed, so both TPMs get one Name
    pub = TPM2B_PUBLIC.parse(alg, objectAttributes=attrs)
    sens = TPM2B_SENSITIVE()
    sens.sensitiveArea.sensitiveType = pub.publicArea.type
    sens.sensitiveArea.seedValue = seed
    if pub.publicArea.type == TPM2_ALG.SYMCIPHER:
        sens.sensitiveArea.sensitive.sym = key
    else:
        sens.sensitiveArea.sensitive.bits = key
    pub.publicArea.unique.sym = hashlib.sha256(seed + key).digest()
    return load_external(pub, sens)


def pem_key(key: Any, attrs: str, private: bool = True, hierarchy: int = NULL_H) -> bytes:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = TPM2B_PUBLIC.from_pem(pem, objectAttributes=attrs)
    return load_external(pub, TPM2B_SENSITIVE.from_pem(pem) if private else None, hierarchy)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def run(ours: TPM, theirs: Any, script: dict[str, bytes], exact: bool) -> dict[str, Any]:
    """Each command to both; differences in code (and, if ``exact``, in the whole
    response) are collected."""
    differ: dict[str, Any] = {}
    for name, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b) or (exact and a != b):
            differ[name] = (hex(rc(a)), hex(rc(b)), a[10:].hex()[:80], b[10:].hex()[:80])
    return differ


def retried(tpm: Any, cmd: bytes) -> bytes:
    """One command; libtpms's TPM_RC_RETRY is answered by sending it again, as a TSS does."""
    r = tpm.execute(cmd)
    for _ in range(3):
        if rc(r) != 0x922:
            break
        r = tpm.execute(cmd)
    return r


def check(ours: TPM, theirs: Any, script: dict[str, bytes], exact: bool) -> None:
    differ = run(ours, theirs, script, exact)
    assert not differ, "\n".join(f"{k}: ours {v[0]} libtpms {v[1]}" for k, v in differ.items())


def load_both(ours: TPM, theirs: Any, cmd: bytes) -> int:
    h = handle_of(ours.execute(cmd))
    assert handle_of(theirs.execute(cmd)) == h
    return h


KEY_CCS = (0x174, 0x159, 0x163, 0x154, 0x164, 0x193, 0x155, 0x186, 0x15B, 0x15C, 0x13E,
           0x185, 0x168, 0x147, 0x18A, 0x15D, 0x177)


def test_command_attributes_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cc in KEY_CCS:
        assert _capability(ours, 2, cc, 1)[0] == _capability(theirs, 2, cc, 1)[0], hex(cc)


# ---- EncryptDecrypt ---------------------------------------------------------------------
def ed(h: int, decrypt: int, mode: int, iv: bytes, data: bytes) -> bytes:
    return with_pw(0x164, struct.pack(">I", h),
                   struct.pack(">BH", decrypt, mode) + tpm2b(iv) + tpm2b(data))


def ed2(h: int, decrypt: int, mode: int, iv: bytes, data: bytes) -> bytes:
    return with_pw(0x193, struct.pack(">I", h),
                   tpm2b(data) + struct.pack(">BH", decrypt, mode) + tpm2b(iv))


def test_encrypt_decrypt_outputs_and_codes_match(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    key = bytes(range(16))
    h = load_both(ours, theirs, symmetric_key(key, "aes128", "userwithauth|decrypt|sign"))
    cbc = load_both(ours, theirs, symmetric_key(key[::-1], "aes128cbc", "userwithauth|decrypt"))
    iv = bytes(range(100, 116))
    data = bytes(range(40))  # two blocks and a partial one
    script: dict[str, bytes] = {}
    for mode in (CFB, OFB, CTR, CBC, ECB):
        body = data[:32] if mode in (CBC, ECB) else data
        v = b"" if mode == ECB else iv
        for dec in (0, 1):
            script[f"mode {mode:#x} decrypt {dec}"] = ed(h, dec, mode, v, body)
            script[f"mode {mode:#x} decrypt {dec} (2)"] = ed2(h, dec, mode, v, body)
    script["no data"] = ed2(h, 0, CFB, iv, b"")
    script["the key's own mode"] = ed2(cbc, 1, NULL, iv, data[:32])
    check(ours, theirs, script, exact=True)
    refusals = {
        "no mode anywhere": ed2(h, 0, NULL, iv, data),
        "another mode than the key's": ed(cbc, 1, OFB, iv, data[:16]),
        "encrypt with a decrypt-only key": ed2(cbc, 0, CBC, iv, data[:16]),
        "short IV": ed2(h, 0, CFB, iv[:8], data),
        "IV with ECB": ed(h, 0, ECB, iv, data[:16]),
        "CBC partial block": ed2(h, 0, CBC, iv, data),
        "ECB partial block (1)": ed(h, 0, ECB, b"", data),
        "unknown mode": ed2(h, 0, 0x99, iv, data),
        "decrypt flag 2": ed(h, 2, CFB, iv, data),
        "IV of 17": ed2(h, 0, CFB, iv + b"x", data),
        "not a symmetric key": ed2(0x80000003, 0, CFB, iv, data),
    }
    check(ours, theirs, refusals, exact=False)


# ---- HMAC and sequences ---------------------------------------------------------------------
def two_pw(cc: int, handles: bytes, params: bytes) -> bytes:
    pw = struct.pack(">IHBH", 0x40000009, 0, 1, 0)
    return command(cc, handles + struct.pack(">I", 2 * len(pw)) + pw + pw + params, 0x8002)


def hash_start(auth: bytes, alg: int) -> bytes:
    return command(0x186, tpm2b(auth) + struct.pack(">H", alg))


def seq_update(h: int, data: bytes) -> bytes:
    return with_pw(0x15C, struct.pack(">I", h), tpm2b(data))


def seq_complete(h: int, data: bytes, hierarchy: int = NULL_H) -> bytes:
    return with_pw(0x13E, struct.pack(">I", h), tpm2b(data) + struct.pack(">I", hierarchy))


def ticket_of(response: bytes) -> tuple[bytes, int, int]:
    """(result, ticket hierarchy, ticket digest size) of a SequenceComplete response.
    The ticket HMAC itself is keyed with a proof, so only its size is compared (both
    TPMs make it with the context hash, SHA-512, whatever the sequence hash)."""
    o = 14
    (n,) = struct.unpack_from(">H", response, o)
    result = response[o + 2 : o + 2 + n]
    _tag, hierarchy, size = struct.unpack_from(">HIH", response, o + 2 + n)
    return result, hierarchy, size


def test_hmac_and_sequences_match(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    key = hashlib.sha256(b"hmac key").digest()
    h = load_both(ours, theirs, symmetric_key(key, "hmac", "userwithauth|sign"))
    data = bytes(range(256)) * 3
    hmac_cmd = {
        f"HMAC {alg:#x}": with_pw(0x155, struct.pack(">I", h), tpm2b(data) + struct.pack(">H", alg))
        for alg in (SHA256, NULL, SHA1)
    }
    check(ours, theirs, hmac_cmd, exact=True)

    for tpm in (ours, theirs):  # an HMAC sequence: same result, NULL ticket
        seq = handle_of(tpm.execute(with_pw(0x15B, struct.pack(">I", h),
                                            tpm2b(b"") + struct.pack(">H", SHA256))))
        assert seq == 0x80000001
        assert rc(tpm.execute(seq_update(seq, data[:500]))) == 0
    check(ours, theirs, {"HMAC complete": seq_complete(0x80000001, data[500:], OWNER)},
               exact=True)

    cases = {  # first blocks decide whether the hash earns a ticket
        "plain": [b"hello world", b"!"],
        "short first block": [b"ab", b"cdefgh"],
        "empty first block": [b"", b"abcdefgh"],
        "generated value": [b"\xffTCG" + b"x" * 10, b""],
        "generated value split": [b"\xffT", b"CGxxxxxxxxx"],
        "nothing": [],
    }
    for name, blocks in cases.items():
        for alg in (SHA1, SHA256, SHA384, SHA512):
            outs = []
            for tpm in (ours, theirs):
                seq = handle_of(tpm.execute(hash_start(b"", alg)))
                for b in blocks[:-1]:
                    assert rc(tpm.execute(seq_update(seq, b))) == 0
                outs.append(ticket_of(tpm.execute(seq_complete(seq, (blocks or [b""])[-1],
                                                               OWNER))))
            assert outs[0] == outs[1], (name, alg)

    for tpm in (ours, theirs):  # an event sequence extending PCR 16
        seq = handle_of(tpm.execute(hash_start(b"", NULL)))
        assert rc(tpm.execute(seq_update(seq, b"event "))) == 0
    a, b = both(ours, theirs, two_pw(0x185, struct.pack(">II", 16, 0x80000001),
                                     tpm2b(b"data")))
    assert rc(a) == rc(b) == 0
    assert _digests(a) == _digests(b) and len(_digests(a)) == 4  # every bank
    read = command(0x17E, struct.pack(">IHB", 1, SHA256, 3) + b"\x00\x00\x01")
    assert ours.execute(read)[14:] == theirs.execute(read)[14:]


def _digests(response: bytes) -> dict[int, bytes]:
    sizes = {SHA1: 20, SHA256: 32, SHA384: 48, SHA512: 64}
    o = 14
    (n,) = struct.unpack_from(">I", response, o)
    o += 4
    out = {}
    for _ in range(n):
        (alg,) = struct.unpack_from(">H", response, o)
        out[alg] = response[o + 2 : o + 2 + sizes[alg]]
        o += 2 + sizes[alg]
    return out


def test_sequence_misuse_codes_match(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    key = hashlib.sha256(b"k").digest()
    h = load_both(ours, theirs, symmetric_key(key, "hmac", "userwithauth|sign"))
    for tpm in (ours, theirs):
        assert handle_of(tpm.execute(hash_start(b"", SHA256))) == 0x80000001
        assert handle_of(tpm.execute(hash_start(b"", NULL))) == 0x80000002
    script = {
        "SequenceUpdate on a key": seq_update(h, b"x"),
        "SequenceComplete on a key": seq_complete(h, b"x"),
        "SequenceComplete on an event sequence": seq_complete(0x80000002, b"x"),
        "EventSequenceComplete on a hash sequence": two_pw(
            0x185, struct.pack(">II", 16, 0x80000001), tpm2b(b"")),
        "HashSequenceStart with no slot left": hash_start(b"", SHA1),
        "HashSequenceStart with an unknown hash": hash_start(b"", 0x0099),
        "HMAC_Start on a sequence": with_pw(0x15B, struct.pack(">I", 0x80000001),
                                            tpm2b(b"") + struct.pack(">H", SHA256)),
        "HMAC with another hash than the key's": with_pw(
            0x155, struct.pack(">I", h), tpm2b(b"x") + struct.pack(">H", SHA1)),
        "SequenceComplete to a bad hierarchy": with_pw(
            0x13E, struct.pack(">I", 0x80000001), tpm2b(b"") + struct.pack(">I", 0x40000003)),
        "ReadPublic of a sequence": command(0x173, struct.pack(">I", 0x80000001)),
        "Unseal a sequence": with_pw(0x15E, struct.pack(">I", 0x80000001), b""),
        "Sign with a sequence": with_pw(0x15D, struct.pack(">I", 0x80000001),
                                        tpm2b(bytes(32)) + struct.pack(">HHHIH", 0x14, SHA256,
                                                                       0x8024, NULL_H, 0)),
        "HMAC with a sequence": with_pw(0x155, struct.pack(">I", 0x80000001),
                                        tpm2b(b"x") + struct.pack(">H", SHA256)),
        "EvictControl of a sequence": with_pw(0x120, struct.pack(">II", OWNER, 0x80000001),
                                              struct.pack(">I", 0x81000001)),
    }
    check(ours, theirs, script, exact=False)
    saved = command(0x162, struct.pack(">I", 0x80000001))  # ContextSave: savedHandle
    assert ours.execute(saved)[18:22] == theirs.execute(saved)[18:22] == b"\x80\x00\x00\x01"


# ---- RSA, ECDH, signatures, credentials --------------------------------------------------------
def rsa_encrypt(h: int, message: bytes, scheme: bytes, label: bytes = b"") -> bytes:
    return command(0x174, struct.pack(">I", h) + tpm2b(message) + scheme + tpm2b(label))


def rsa_decrypt(h: int, ct: bytes, scheme: bytes, label: bytes = b"") -> bytes:
    return with_pw(0x159, struct.pack(">I", h), tpm2b(ct) + scheme + tpm2b(label))


def test_rsa_outputs_and_codes_match(swtpm: Any, rsa_key: Any) -> None:
    ours, theirs = started_pair(swtpm)
    h = load_both(ours, theirs, pem_key(rsa_key, "userwithauth|decrypt"))
    signer = load_both(ours, theirs, pem_key(rsa_key, "userwithauth|sign"))
    null, rsaes = struct.pack(">H", NULL), struct.pack(">H", 0x15)
    oaep = struct.pack(">HH", 0x17, SHA256)
    n = rsa_key.public_key().public_numbers().n
    big = (n - 1).to_bytes(256, "big")
    raw_ct = pow(0x1234, 65537, n).to_bytes(256, "big")
    exact = {
        "raw encrypt": rsa_encrypt(h, b"\x12\x34", null),
        "raw encrypt with leading zeros": rsa_encrypt(h, bytes(300)[:256] + b"", null),
        "raw decrypt": rsa_decrypt(h, raw_ct, null),
    }
    check(ours, theirs, exact, exact=True)
    codes = {
        "OAEP encrypt": rsa_encrypt(h, b"m", oaep, b"label\x00"),
        "RSAES encrypt": rsa_encrypt(h, b"m", rsaes),
        "label without NUL": rsa_encrypt(h, b"m", oaep, b"label"),
        "OAEP message too long": rsa_encrypt(h, bytes(250), oaep),
        "RSAES message too long": rsa_encrypt(h, bytes(250), rsaes),
        "raw message of the modulus": rsa_encrypt(h, n.to_bytes(256, "big"), null),
        "raw message longer than the modulus": rsa_encrypt(h, b"\x01" + bytes(256), null),
        "scheme RSASSA": rsa_encrypt(h, b"m", struct.pack(">HH", 0x14, SHA256)),
        "OAEP with an unknown hash": rsa_encrypt(h, b"m", struct.pack(">HH", 0x17, 0x99)),
        "encrypt with a signing key": rsa_encrypt(signer, b"m", null),
        "decrypt short ciphertext": rsa_decrypt(h, raw_ct[1:], null),
        "decrypt value above the modulus": rsa_decrypt(h, b"\xff" * 256, null),
        "OAEP decrypt of garbage": rsa_decrypt(h, big, oaep),
        "RSAES decrypt of garbage": rsa_decrypt(h, big, rsaes),
        "decrypt with a signing key": rsa_decrypt(signer, raw_ct, null),
    }
    check(ours, theirs, codes, exact=False)


def test_ecdh_zgen_point_matches(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    key = p256_key()
    h = load_both(ours, theirs, pem_key(key, "userwithauth|decrypt"))
    signer = load_both(ours, theirs, pem_key(key, "userwithauth|sign"))
    peer = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    good = tpm2b(tpm2b(peer.x.to_bytes(32, "big")) + tpm2b(peer.y.to_bytes(32, "big")))
    off = tpm2b(tpm2b(peer.x.to_bytes(32, "big")) + tpm2b((peer.y ^ 1).to_bytes(32, "big")))

    def zgen(handle: int, p: bytes) -> bytes:
        return with_pw(0x154, struct.pack(">I", handle), p)

    check(ours, theirs, {"ZGen": zgen(h, good)}, exact=True)
    codes = {
        "point off the curve": zgen(h, off),
        "empty point": zgen(h, b"\x00\x00"),
        "ZGen with a signing key": zgen(signer, good),
        "KeyGen": command(0x163, struct.pack(">I", h)),
        "KeyGen on an AES key": command(0x163, struct.pack(">I", 0x80000003)),
    }
    load_both(ours, theirs, symmetric_key(bytes(16), "aes128", "userwithauth|decrypt"))
    check(ours, theirs, codes, exact=False)


def sign(h: int, digest: bytes, scheme: bytes, ticket: bytes | None = None) -> bytes:
    ticket = ticket or struct.pack(">HIH", 0x8024, NULL_H, 0)
    return with_pw(0x15D, struct.pack(">I", h), tpm2b(digest) + scheme + ticket)


def test_signatures_match(swtpm: Any, rsa_key: Any) -> None:
    ours, theirs = started_pair(swtpm)
    h_rsa = load_both(ours, theirs, pem_key(rsa_key, "userwithauth|sign"))
    h_hmac = load_both(ours, theirs, symmetric_key(b"k" * 32, "hmac", "userwithauth|sign"))
    h_ecc = load_both(ours, theirs, pem_key(p256_key(),
                                            "userwithauth|sign", private=False))
    digest = hashlib.sha256(b"to sign").digest()
    rsassa, hmac_s = struct.pack(">HH", 0x14, SHA256), struct.pack(">HH", 0x05, SHA256)
    exact = {
        "RSASSA": sign(h_rsa, digest, rsassa),
        "HMAC": sign(h_hmac, digest, struct.pack(">H", NULL)),
    }
    check(ours, theirs, exact, exact=True)
    sig = ours.execute(sign(h_rsa, digest, rsassa))[10:]
    verify = {
        "verify RSASSA": command(0x177, struct.pack(">I", h_rsa) + tpm2b(digest) + sig),
        "verify another digest": command(0x177, struct.pack(">I", h_rsa)
                                         + tpm2b(hashlib.sha256(b"x").digest()) + sig),
        "verify a truncated signature": command(0x177, struct.pack(">I", h_rsa)
                                                + tpm2b(digest) + sig[:-1]),
        "verify ECDSA with an RSA signature": command(0x177, struct.pack(">I", h_ecc)
                                                      + tpm2b(digest) + sig),
        "verify a NULL signature": command(0x177, struct.pack(">I", h_rsa) + tpm2b(digest)
                                           + struct.pack(">H", NULL)),
        "verify an ECDSA signature of zeros": command(
            0x177, struct.pack(">I", h_ecc) + tpm2b(digest)
            + struct.pack(">HH", 0x18, SHA256) + tpm2b(bytes(32)) + tpm2b(bytes(32))),
    }
    check(ours, theirs, verify, exact=True)
    codes = {
        "PSS": sign(h_rsa, digest, struct.pack(">HH", 0x16, SHA256)),
        "no scheme": sign(h_rsa, digest, struct.pack(">H", NULL)),
        "ECDAA": sign(h_rsa, digest, struct.pack(">HHH", 0x1A, SHA256, 0)),
        "SM2": sign(h_rsa, digest, struct.pack(">HH", 0x1B, SHA256)),
        "unknown scheme": sign(h_rsa, digest, struct.pack(">HH", 0x99, SHA256)),
        "scheme hash unknown": sign(h_rsa, digest, struct.pack(">HH", 0x14, 0x99)),
        "digest of the wrong size": sign(h_rsa, digest[:20], rsassa),
        "HMAC scheme on RSA": sign(h_rsa, digest, hmac_s),
        "ECDSA with a public-only key": sign(h_ecc, digest, struct.pack(">HH", 0x18, SHA256)),
        "bad ticket tag": sign(h_rsa, digest, rsassa, struct.pack(">HIH", 0x8021, NULL_H, 0)),
        "ticket that does not verify": sign(h_rsa, digest, rsassa,
                                            struct.pack(">HIH", 0x8024, OWNER, 32) + bytes(32)),
        "HMAC key with another hash": sign(h_hmac, digest, struct.pack(">HH", 0x05, SHA1)),
    }
    check(ours, theirs, codes, exact=False)


def test_restricted_signing_codes_match(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    template = bytes(TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha256:null", objectAttributes="fixedtpm|fixedparent"
        "|sensitivedataorigin|userwithauth|restricted|sign").marshal())
    ak = load_both(ours, theirs, with_pw(0x131, struct.pack(">I", OWNER),
                                         b"\x00\x04\x00\x00\x00\x00" + template
                                         + b"\x00\x00" + bytes(4)))
    ecdsa, null = struct.pack(">HH", 0x18, SHA256), struct.pack(">H", NULL)

    def hashed(tpm: Any, data: bytes) -> tuple[bytes, bytes]:
        """(digest, TPMT_TK_HASHCHECK octets) from the TPM's own TPM2_Hash."""
        r = tpm.execute(command(0x17D, tpm2b(data) + struct.pack(">HI", SHA256, OWNER)))
        assert rc(r) == 0
        return r[12:44], r[44:]

    for name, data in {"ticketed": b"message", "looks generated": b"\xffTCG message"}.items():
        codes = []
        for tpm in (ours, theirs):
            digest, ticket = hashed(tpm, data)
            for scheme in (ecdsa, null):
                codes.append(rc(retried(tpm, sign(ak, digest, scheme, ticket))))
            codes.append(rc(retried(tpm, sign(ak, digest, null))))  # the NULL ticket
            codes.append(rc(retried(tpm, sign(ak, digest, struct.pack(">HH", 0x18, SHA1),
                                              ticket))))
        assert codes[:4] == codes[4:], (name, [hex(c) for c in codes])


def test_activate_credential_matches(swtpm: Any) -> None:
    from tpm2_pytss.utils import make_credential

    ours, theirs = started_pair(swtpm)
    # libtpms will not load a restricted decryption key from outside, so each TPM makes
    # its own EK (seeds differ) and the caller wraps one credential for each.
    ek_template = bytes(TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb", objectAttributes="fixedtpm|fixedparent|sensitivedataorigin"
        "|userwithauth|restricted|decrypt").marshal())
    create_ek = with_pw(0x131, struct.pack(">I", 0x4000000B),
                        b"\x00\x04\x00\x00\x00\x00" + ek_template + b"\x00\x00" + bytes(4))
    ek = load_both(ours, theirs, create_ek)
    ak = load_both(ours, theirs, pem_key(p256_key(),
                                         "userwithauth|sign"))
    read_ak = command(0x173, struct.pack(">I", ak))
    name = ours.execute(read_ak)
    (size,) = struct.unpack_from(">H", name, 10)
    ak_name = name[14 + size : 14 + size + 34]
    assert theirs.execute(read_ak)[14 + size : 14 + size + 34] == ak_name

    def activate(activate_handle: int, key: int, b: bytes, s: bytes) -> bytes:
        pw = struct.pack(">IHBH", 0x40000009, 0, 1, 0)
        auth = struct.pack(">I", 2 * len(pw)) + pw + pw
        return command(0x147, struct.pack(">II", activate_handle, key) + auth + b + s, 0x8002)

    def script(tpm: Any) -> dict[str, bytes]:
        r = tpm.execute(command(0x173, struct.pack(">I", ek)))
        ek_pub = TPM2B_PUBLIC.unmarshal(r[10:])[0]
        blob, secret = make_credential(ek_pub, b"credential", TPM2B_NAME(ak_name))
        b, s = bytes(blob.marshal()), bytes(secret.marshal())
        return {
            "activate": activate(ak, ek, b, s),
            "activate another object": activate(ek, ek, b, s),
            "tampered blob": activate(ak, ek, b[:-1] + bytes([b[-1] ^ 1]), s),
            "tampered secret point": activate(ak, ek, b, s[:-1] + bytes([s[-1] ^ 1])),
            "key that is not restricted": activate(ak, ak, b, s),
            "empty blob": activate(ak, ek, b"\x00\x00", s),
            "empty secret": activate(ak, ek, b, b"\x00\x00"),
        }

    mine, others = script(ours), script(theirs)
    assert b"\x00\x0acredential" in ours.execute(mine["activate"])
    for name_ in mine:
        a, b = ours.execute(mine[name_]), retried(theirs, others[name_])
        assert (rc(a), a[10:]) == (rc(b), b[10:]), name_
    codes = {
        "MakeCredential": command(0x168, struct.pack(">I", ek) + tpm2b(b"c") + tpm2b(ak_name)),
        "MakeCredential too long": command(0x168, struct.pack(">I", ek) + tpm2b(bytes(33))
                                           + tpm2b(ak_name)),
        "MakeCredential to a signing key": command(0x168, struct.pack(">I", ak) + tpm2b(b"c")
                                                   + tpm2b(ak_name)),
    }
    check(ours, theirs, codes, exact=False)


def test_test_parms_codes_match(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)

    def parms(template: str, attrs: str = "sign") -> bytes:
        """TPMT_PUBLIC_PARMS cut from a template: its type and parameters, without the
        nameAlg, attributes and authPolicy before them or the empty unique after."""
        pub = bytes(TPM2B_PUBLIC.parse(template, objectAttributes=attrs).publicArea.marshal())
        (policy,) = struct.unpack_from(">H", pub, 8)
        empty_unique = 4 if pub[:2] == b"\x00\x23" else 2  # ECC: two empty coordinates
        return pub[:2] + pub[10 + policy : -empty_unique]

    rsa_p, ecc_p = parms("rsa2048:rsassa-sha256:null"), parms("ecc256:ecdsa-sha256:null")
    sym_p = parms("aes128cfb", "decrypt")
    script = {
        "ecc p256": ecc_p,
        "ecc p384 with aes256": parms("ecc384:aes256cfb", "decrypt|restricted"),
        "rsa 2048": rsa_p,
        "hmac": parms("hmac"),
        "aes": sym_p,
        "unknown type": b"\x00\x99" + ecc_p[2:],
        "unknown curve": ecc_p.replace(b"\x00\x03\x00\x10", b"\x00\x77\x00\x10"),
        "rsa 1000 bits": rsa_p.replace(b"\x08\x00", b"\x03\xe8", 1),
        "aes 129 bits": sym_p.replace(b"\x00\x80", b"\x00\x81", 1),
        "unknown mode": sym_p.replace(b"\x00\x43", b"\x00\x49", 1),
        "truncated": ecc_p[:5],
        "trailing octet": ecc_p + b"\x00",
    }
    check(ours, theirs, {k: command(0x18A, v) for k, v in script.items()}, exact=True)


# ---- interoperation: what one TPM makes, the other one takes --------------------------------
def _body(response: bytes, with_sessions: bool = False) -> bytes:
    assert rc(response) == 0, hex(rc(response))
    return response[14:] if with_sessions else response[10:]


def test_outputs_interoperate_with_libtpms(swtpm: Any, rsa_key: Any) -> None:
    ours, theirs = started_pair(swtpm)
    digest = hashlib.sha256(b"signed here, checked there").digest()

    def verified(maker: Any, checker: Any, key: int, scheme: bytes) -> bool:
        sig = _body(retried(maker, sign(key, digest, scheme)), True)[:-5]  # no auth area
        return rc(retried(checker, command(0x177, struct.pack(">I", key)
                                           + tpm2b(digest) + sig))) == 0

    h = load_both(ours, theirs, pem_key(rsa_key, "userwithauth|decrypt"))
    rsa_signer = load_both(ours, theirs, pem_key(rsa_key, "userwithauth|sign"))
    for one, other in ((ours, theirs), (theirs, ours)):
        for scheme, label in ((struct.pack(">HH", 0x17, SHA256), b"label\x00"),
                              (struct.pack(">HH", 0x17, SHA1), b""),
                              (struct.pack(">H", 0x15), b"")):
            ct = _body(retried(one, rsa_encrypt(h, b"across", scheme, label)))
            plain = _body(retried(other, rsa_decrypt(h, ct[2:], scheme, label)), True)
            assert plain[:8] == b"\x00\x06across", scheme
        assert verified(one, other, rsa_signer, struct.pack(">HH", 0x16, SHA256))
    for tpm in (ours, theirs):
        for handle in (h, rsa_signer):
            assert rc(tpm.execute(command(0x165, struct.pack(">I", handle)))) == 0
    signer = load_both(ours, theirs, pem_key(p256_key(),
                                             "userwithauth|sign"))
    ecdh = load_both(ours, theirs, pem_key(p256_key(),
                                           "userwithauth|decrypt"))
    for one, other in ((ours, theirs), (theirs, ours)):
        z_and_pub = _body(retried(one, command(0x163, struct.pack(">I", ecdh))))
        (size,) = struct.unpack_from(">H", z_and_pub)
        z, pub = z_and_pub[: 2 + size], z_and_pub[2 + size :]
        zgen = _body(retried(other, with_pw(0x154, struct.pack(">I", ecdh), pub)), True)
        assert zgen[: len(z)] == z
        assert verified(one, other, signer, struct.pack(">HH", 0x18, SHA256))


def test_credentials_interoperate_with_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    ek_template = bytes(TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb", objectAttributes="fixedtpm|fixedparent|sensitivedataorigin"
        "|userwithauth|restricted|decrypt").marshal())
    create_ek = with_pw(0x131, struct.pack(">I", 0x4000000B),
                        b"\x00\x04\x00\x00\x00\x00" + ek_template + b"\x00\x00" + bytes(4))
    ak_key = pem_key(p256_key(), "userwithauth|sign")
    for maker, activator in ((ours, theirs), (theirs, ours)):
        for tpm in (maker, activator):
            for slot in range(3):
                tpm.execute(command(0x165, struct.pack(">I", 0x80000000 + slot)))
        ek = handle_of(retried(activator, create_ek))
        ak = handle_of(retried(activator, ak_key))
        read = _body(activator.execute(command(0x173, struct.pack(">I", ek))))
        (size,) = struct.unpack_from(">H", read)
        ek_public = read[: 2 + size]
        read_ak = _body(activator.execute(command(0x173, struct.pack(">I", ak))))
        (size,) = struct.unpack_from(">H", read_ak)
        ak_name = read_ak[2 + size + 2 : 2 + size + 2 + 34]
        # The maker holds only the EK's public area (no restricted key with a private
        # part can be loaded from outside).
        ek_there = handle_of(maker.execute(command(0x167, b"\x00\x00" + ek_public
                                                   + struct.pack(">I", OWNER))))
        made = _body(retried(maker, command(0x168, struct.pack(">I", ek_there)
                                            + tpm2b(b"cross-made") + tpm2b(ak_name))))
        pw = struct.pack(">IHBH", 0x40000009, 0, 1, 0)
        activate = command(0x147, struct.pack(">II", ak, ek) + struct.pack(">I", 2 * len(pw))
                           + pw + pw + made, 0x8002)
        assert _body(retried(activator, activate), True)[:12] == b"\x00\x0across-made"
