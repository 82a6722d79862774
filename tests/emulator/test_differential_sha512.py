"""Differential tests of SHA-512 against a real swtpm (libtpms), whose four default PCR
banks (SHA-1, SHA-256, SHA-384, SHA-512), TPM_PT_MAX_DIGEST of 64 and SHA-512 context
hash we now share: PCR values, capabilities, Hash/HMAC/sequence results, Names, size
limits of 64-octet digests, the command audit run that starts with SHA-512, ticket and
context-blob sizes, and ESAPI sessions with SHA-512 as authHash on both TPMs."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMA_NV,
    TPMA_OBJECT,
    TPMA_SESSION,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMS_NV_PUBLIC,
    TPMS_SENSITIVE_CREATE,
    TPMT_SYM_DEF,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

from tests.emulator.emulator_wire import (
    SHA1,
    SHA256,
    SHA384,
    SHA512,
    command,
    get_capability,
    pcr_event,
    pcr_extend,
    pcr_reset,
    rc,
    with_pw,
)
from tests.emulator.inprocess import esapi_over
from tests.emulator.test_differential_attest import attest_of, privacy, set_audit
from tests.emulator.test_differential_keys import handle_of, load_both, symmetric_key
from tests.emulator.test_differential_nv import OWNER_RW, define
from tests.emulator.test_differential_objects import both, create_primary, started_pair, template
from tpm_emulator import TPM

BANKS = (SHA1, SHA256, SHA384, SHA512)
OWNER, PLATFORM, NULL_H = 0x40000001, 0x4000000C, 0x40000007
PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def selection(*banks: tuple[int, list[int]]) -> bytes:
    """TPML_PCR_SELECTION with sizeofSelect 3."""
    out = struct.pack(">I", len(banks))
    for alg, pcrs in banks:
        bits = bytearray(3)
        for p in pcrs:
            bits[p // 8] |= 1 << (p % 8)
        out += struct.pack(">HB", alg, 3) + bytes(bits)
    return out


def pcr_read(*banks: tuple[int, list[int]]) -> bytes:
    return command(0x17E, selection(*banks))


def same(ours: TPM, theirs: Any, cmd: bytes, skip: int = 10) -> bytes:
    """Send to both; the responses must agree from octet ``skip`` on. Returns ours."""
    a, b = both(ours, theirs, cmd)
    assert rc(a) == rc(b) == 0, (hex(rc(a)), hex(rc(b)))
    assert a[skip:] == b[skip:], (a[skip:].hex(), b[skip:].hex())
    return a


def codes(ours: TPM, theirs: Any, script: dict[str, bytes]) -> dict[str, tuple[str, str]]:
    """The commands whose response codes differ. An object a command loads is flushed
    again, so that every command finds free object slots."""
    differ = {}
    for name, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[name] = (hex(rc(a)), hex(rc(b)))
        for response, tpm in ((a, ours), (b, theirs)):
            if rc(response) == 0 and response[10:11] == b"\x80":  # a transient handle
                tpm.execute(command(0x165, response[10:14]))
    return differ


# ---- PCR banks -----------------------------------------------------------------------------
def test_sha512_bank_values_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    script = [
        pcr_extend(0, {SHA512: b"\x01" * 64}),
        pcr_extend(7, {SHA1: b"\x02" * 20, SHA256: b"\x03" * 32, SHA384: b"\x04" * 48,
                       SHA512: b"\x05" * 64}),
        pcr_event(7, b"grub.cfg"),
        pcr_event(16, b"debug"),
        pcr_extend(16, {SHA512: b"\x06" * 64}),
        pcr_extend(23, {SHA512: b"\x07" * 64}),
        pcr_reset(23),
    ]
    for cmd in script:
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b) == 0
        if cmd[6:10] == b"\x00\x00\x01\x3c":  # PCR_Event: the same four digests back
            assert a[10:] == b[10:]
    for group in (range(0, 8), range(8, 16), range(16, 24)):
        same(ours, theirs, pcr_read((SHA512, list(group))), skip=14)  # after the counter
    # Four banks in one read: eight digests at most, the rest cleared from the selection.
    same(ours, theirs, pcr_read(*((alg, [0, 7, 16]) for alg in BANKS)), skip=14)
    same(ours, theirs, pcr_read((SHA512, [17]), (SHA384, [17]), (SHA512, [18])), skip=14)


def test_event_sequence_reports_all_four_banks_like_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    start = command(0x186, tpm2b(b"") + struct.pack(">H", 0x0010))  # HashSequenceStart(NULL)
    seq = load_both_handle(ours, theirs, start)
    area = struct.pack(">IHBH", 0x40000009, 0, 1, 0)
    auth2 = struct.pack(">I", 2 * len(area)) + 2 * area
    complete = command(0x185, struct.pack(">II", 16, seq) + auth2 + tpm2b(b"event data"),
                       0x8002)
    response = same(ours, theirs, complete)
    assert struct.unpack_from(">I", response, 14)[0] == 4
    same(ours, theirs, pcr_read((SHA512, [16])), skip=14)


def load_both_handle(ours: TPM, theirs: Any, cmd: bytes) -> int:
    handle = handle_of(ours.execute(cmd))
    assert handle_of(theirs.execute(cmd)) == handle
    return handle


def test_malformed_sha512_extends_get_the_same_code(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)

    def extend_raw(body: bytes) -> bytes:
        return with_pw(0x182, struct.pack(">I", 16), body)

    assert codes(ours, theirs, {
        "sha512 digest of 48 octets": extend_raw(struct.pack(">IH", 1, SHA512) + bytes(48)),
        "sha512 twice": extend_raw(struct.pack(">IH", 2, SHA512) + bytes(64)
                                   + struct.pack(">H", SHA512) + bytes(64)),
        "five digests": extend_raw(struct.pack(">I", 5) + b"".join(
            struct.pack(">H", a) + bytes(n) for a, n in
            ((SHA1, 20), (SHA256, 32), (SHA384, 48), (SHA512, 64), (SHA512, 64)))),
        "sha512 extend of PCR 17 at locality 0": pcr_extend(17, {SHA512: bytes(64)}),
        "read of an unknown bank": pcr_read((SHA512, [0]), (0x0099, [0])),
        "read of five banks": pcr_read(*((alg, [0]) for alg in (*BANKS, SHA512))),
    }) == {}


# ---- what the TPM reports ------------------------------------------------------------------
def test_capabilities_report_sha512_like_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cmd in (get_capability(5, 0, 8),  # TPM_CAP_PCRS: four full banks
                get_capability(0, SHA512, 1),  # TPM_CAP_ALGS: SHA-512 is a hash
                get_capability(6, 0x120, 1),  # TPM_PT_MAX_DIGEST
                get_capability(6, 0x11A, 1)):  # TPM_PT_CONTEXT_HASH
        same(ours, theirs, cmd)
    a, b = both(ours, theirs, command(0x17B, struct.pack(">H", 100)))  # GetRandom
    assert struct.unpack_from(">H", a, 10) == struct.unpack_from(">H", b, 10) == (64,)


# ---- Hash, HMAC and sequences --------------------------------------------------------------
def test_hash_hmac_and_sequences_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    data = bytes(range(256)) * 3
    for chunk in (b"", b"abc", data[:1024 - 2 - 2 - 4 - 2]):
        same(ours, theirs, command(0x17D, tpm2b(chunk) + struct.pack(">HI", SHA512, NULL_H)))
    key = hashlib.sha512(b"hmac key").digest()
    handle = load_both(ours, theirs, symmetric_key(key, "hmac:sha512", "userwithauth|sign"))
    for alg in (SHA512, 0x0010):  # the key's own hash, or NULL for the key's scheme
        same(ours, theirs, with_pw(0x155, struct.pack(">I", handle),
                                   tpm2b(data) + struct.pack(">H", alg)))
    for alg in (SHA1, SHA256):  # not the key's scheme hash
        a, b = both(ours, theirs, with_pw(0x155, struct.pack(">I", handle),
                                          tpm2b(data) + struct.pack(">H", alg)))
        assert rc(a) == rc(b) != 0
    # A SHA-512 hash sequence and HMAC sequence: the same digests, NULL tickets.
    starts = {
        "hash": command(0x186, tpm2b(b"") + struct.pack(">H", SHA512)),
        "hmac": with_pw(0x15B, struct.pack(">I", handle), tpm2b(b"") + struct.pack(">H", SHA512)),
    }
    for start in starts.values():
        seq = load_both_handle(ours, theirs, start)
        same(ours, theirs, with_pw(0x15C, struct.pack(">I", seq), tpm2b(data[:300])))
        same(ours, theirs, with_pw(0x13E, struct.pack(">I", seq),
                                   tpm2b(data[300:]) + struct.pack(">I", NULL_H)))


def test_tickets_and_context_blobs_have_sha512_sizes_like_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for alg in (SHA1, SHA256, SHA512):  # hashcheck tickets: the context hash's size
        a, b = both(ours, theirs, command(0x17D, tpm2b(b"abcdefgh")
                                          + struct.pack(">HI", alg, OWNER)))
        n = struct.unpack_from(">H", a, 10)[0]
        assert a[10:12 + n + 6] == b[10:12 + n + 6]  # digest, tag and hierarchy
        assert struct.unpack_from(">H", a, 12 + n + 6) == \
            struct.unpack_from(">H", b, 12 + n + 6) == (64,)
    start = command(0x176, struct.pack(">IIH", NULL_H, NULL_H, 16) + b"n" * 16
                    + b"\x00\x00\x00\x00\x10" + struct.pack(">H", SHA512))
    session = load_both_handle(ours, theirs, start)
    a, b = both(ours, theirs, command(0x162, struct.pack(">I", session)))
    assert rc(a) == rc(b) == 0
    assert a[10:26] == b[10:26]  # sequence, handle, hierarchy
    assert struct.unpack_from(">H", a, 28) == struct.unpack_from(">H", b, 28) == (64,)


# ---- Names and digest sizes ----------------------------------------------------------------
def ecc_public_sha512(key: ec.EllipticCurvePrivateKey, policy: bytes = b"") -> bytes:
    """TPMT_PUBLIC of a P-256 ECDSA-SHA512 verification key with nameAlg SHA-512."""
    n = key.public_key().public_numbers()
    return (struct.pack(">HHI", 0x23, SHA512, (1 << 18) | (1 << 6)) + tpm2b(policy)
            + struct.pack(">HHHHH", 0x10, 0x18, SHA512, 0x0003, 0x10)
            + tpm2b(n.x.to_bytes(32, "big")) + tpm2b(n.y.to_bytes(32, "big")))


def test_sha512_names_and_digest_sizes_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    key = ec.derive_private_key(0x5123, ec.SECP256R1())
    load = command(0x167, tpm2b(b"") + tpm2b(ecc_public_sha512(key)) + struct.pack(">I", OWNER))
    same(ours, theirs, load)  # the same handle and SHA-512 Name
    same(ours, theirs, define(0x01500512, OWNER_RW, 8, b"a" * 64, alg=SHA512,
                              policy=b"p" * 64))
    same(ours, theirs, command(0x169, struct.pack(">I", 0x01500512)))  # NV_ReadPublic

    def change_auth(size: int) -> bytes:
        return with_pw(0x129, struct.pack(">I", OWNER), tpm2b(b"o" * size))

    def policy_pcr(size: int) -> bytes:
        return command(0x17F, struct.pack(">I", 0x03000000) + tpm2b(b"d" * size)
                       + selection((SHA512, [0])))

    def primary_policy(size: int) -> bytes:
        return with_pw(0x12E, struct.pack(">I", OWNER),
                       tpm2b(b"s" * size) + struct.pack(">H", SHA512))

    def pcr_policy(size: int) -> bytes:
        return with_pw(0x12C, struct.pack(">I", PLATFORM),
                       tpm2b(b"s" * size) + struct.pack(">HI", SHA512, 20))

    sha512_template = template("ecc256:aes128cfb", PARENT)
    sha512_template = sha512_template[:2] + struct.pack(">H", SHA512) + sha512_template[4:]

    def with_policy(size: int) -> bytes:
        t = sha512_template
        return t[:8] + tpm2b(b"x" * size) + t[10:]

    differ = codes(ours, theirs, {
        "NV authPolicy of 32 for SHA-512": define(0x01500513, OWNER_RW, 8, alg=SHA512,
                                                  policy=b"p" * 32),
        "NV authPolicy of 65": define(0x01500514, OWNER_RW, 8, alg=SHA512, policy=b"p" * 65),
        "NV auth of 65": define(0x01500515, OWNER_RW, 8, b"a" * 65, alg=SHA512),
        "LoadExternal authPolicy of 48": command(0x167, tpm2b(b"") + tpm2b(
            ecc_public_sha512(key, b"q" * 48)) + struct.pack(">I", OWNER)),
        "CreatePrimary nameAlg SHA-512": create_primary(sha512_template),
        "CreatePrimary authPolicy of 32": create_primary(with_policy(32)),
        "CreatePrimary authPolicy of 64": create_primary(with_policy(64)),
        "CreatePrimary authPolicy of 65": create_primary(with_policy(65)),
        "trial session": command(0x176, struct.pack(">IIH", NULL_H, NULL_H, 64) + b"n" * 64
                                 + b"\x00\x00\x03\x00\x10" + struct.pack(">H", SHA512)),
        "PolicyPCR digest of 64": policy_pcr(64),
        "PolicyPCR digest of 65": policy_pcr(65),
        "SetPrimaryPolicy of 64 with SHA-512": primary_policy(64),
        "SetPrimaryPolicy of 32 with SHA-512": primary_policy(32),
        "PCR_SetAuthPolicy with SHA-512": pcr_policy(64),
        "PCR_SetAuthPolicy of 48 with SHA-512": pcr_policy(48),
        "HierarchyChangeAuth of 65": change_auth(65),
        "HierarchyChangeAuth of 64": change_auth(64),  # last: the owner's auth changes
    })
    assert differ == {}


# ---- command audit starts with SHA-512 -----------------------------------------------------
def test_first_command_audit_run_with_sha512_matches_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cmd in (set_audit(0x0010, (0x17E,)), pcr_read((SHA512, [0, 16])),
                pcr_read((SHA256, [1]))):
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b) == 0
    reports = both(ours, theirs, privacy(0x133, NULL_H))
    mine, libtpms = (TPMS_ATTEST.unmarshal(attest_of(r))[0].attested.commandAudit
                     for r in reports)
    assert mine.digestAlg == libtpms.digestAlg == SHA512
    assert mine.auditCounter == libtpms.auditCounter
    assert bytes(mine.auditDigest) == bytes(libtpms.auditDigest) != b""
    assert bytes(mine.commandDigest) == bytes(libtpms.commandDigest)


# ---- sessions with SHA-512, through ESAPI on both ------------------------------------------
AES128 = TPMT_SYM_DEF(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128),
                      mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB))


def _session_flow(core: Any) -> tuple[bytes, bytes]:
    """A salted, bound SHA-512 HMAC session with AES parameter encryption writing and
    reading a SHA-512 NV index; then a SHA-512 policy (PolicyPCR on the SHA-512 bank
    and PolicyAuthValue) unsealing an object with a SHA-512 nameAlg. Returns the policy
    digest and the unsealed data."""
    with esapi_over(core) as e:
        parent, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
            "ecc256:aes128cfb", objectAttributes=PARENT, nameAlg="sha512"))
        index = e.nv_define_space(TPM2B_AUTH(b"nv auth"), TPM2B_NV_PUBLIC(
            nvPublic=TPMS_NV_PUBLIC(nvIndex=0x01500600, nameAlg=TPM2_ALG.SHA512,
                                    attributes=TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE
                                    | TPMA_NV.NO_DA, dataSize=12)))
        e.tr_set_auth(index, b"nv auth")
        s = e.start_auth_session(parent, index, TPM2_SE.HMAC, AES128, TPM2_ALG.SHA512)
        e.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.DECRYPT
                                | TPMA_SESSION.ENCRYPT)
        e.nv_write(index, b"hello sha512", 0, session1=s)
        assert bytes(e.nv_read(index, 12, 0, session1=s)) == b"hello sha512"
        e.flush_context(s)

        pcrs = TPML_PCR_SELECTION.parse("sha512:16")
        trial = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL,
                                     TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA512)
        e.policy_pcr(trial, TPM2B_DIGEST(), pcrs)
        e.policy_auth_value(trial)
        policy = bytes(e.policy_get_digest(trial))
        e.flush_context(trial)
        sealed = TPM2B_PUBLIC.parse("keyedhash", objectAttributes="fixedtpm|fixedparent|noda",
                                    nameAlg="sha512")
        sealed.publicArea.authPolicy = TPM2B_DIGEST(policy)
        private, public, *_ = e.create(parent, TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(
            userAuth=TPM2B_AUTH(b"pw"), data=TPM2B_SENSITIVE_DATA(b"sealed"))), sealed)
        item = e.load(parent, private, public)
        e.tr_set_auth(item, b"pw")
        s = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                 TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA512)
        e.policy_pcr(s, TPM2B_DIGEST(), pcrs)
        e.policy_auth_value(s)
        return policy, bytes(e.unseal(item, session1=s))


def test_sha512_sessions_work_alike_on_both(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cmd in (pcr_extend(16, {SHA512: b"\x16" * 64}),):
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b) == 0
    mine, libtpms = _session_flow(ours), _session_flow(theirs)
    assert mine == libtpms and len(mine[0]) == 64 and mine[1] == b"sealed"


# ---- RSA-1024 with SHA-512: less room than a digest-sized PSS salt -------------------------
def test_rsa1024_pss_sha512_signatures_cross_verify(swtpm: Any) -> None:
    """64 octets of SHA-512 leave room for a salt of 62 in a 1024-bit PSS encoding (not 64):
    both TPMs sign, and each accepts the other's signature; OAEP-SHA-512 cannot fit at
    all, a failure libtpms reports as TPM_RC_FAILURE."""
    ours, theirs = started_pair(swtpm)
    key = rsa.generate_private_key(65537, 1024)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    attrs = TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.DECRYPT
    public = bytes(TPM2B_PUBLIC.from_pem(pem, objectAttributes=attrs).marshal())
    sensitive = bytes(TPM2B_SENSITIVE.from_pem(pem).marshal())
    handle = load_both_handle(ours, theirs, command(0x167, sensitive + public
                                                    + struct.pack(">I", NULL_H)))
    digest = hashlib.sha512(b"signed with PSS").digest()
    pss512 = struct.pack(">HH", 0x0016, SHA512)
    sign = with_pw(0x15D, struct.pack(">I", handle), tpm2b(digest) + pss512
                   + struct.pack(">HIH", 0x8024, NULL_H, 0))
    signatures = []
    for response in both(ours, theirs, sign):
        assert rc(response) == 0
        size = struct.unpack_from(">H", response, 18)[0]
        signatures.append(response[14 : 20 + size])  # TPMT_SIGNATURE, before the auth area
    for signature in signatures:
        assert signature[:4] == pss512
        verify = command(0x177, struct.pack(">I", handle) + tpm2b(digest) + signature)
        for tpm in (ours, theirs):
            assert rc(tpm.execute(verify)) == 0
    oaep512 = command(0x174, struct.pack(">I", handle) + tpm2b(b"m")
                      + struct.pack(">HH", 0x0017, SHA512) + tpm2b(b""))
    a, b = both(ours, theirs, oaep512)
    assert rc(a) == rc(b) == 0x101
