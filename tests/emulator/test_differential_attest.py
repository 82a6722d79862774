"""Differential tests of attestation and command audit against a real swtpm (libtpms):
the same misuse earns the same response codes; unsigned attestations agree in every
part that does not depend on the TPM's secrets or its clock (type, signer, extraData,
attested data); the command audit digest agrees octet for octet; TPMA_CC matches."""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import TPM2B_PUBLIC, TPM2B_SENSITIVE, TPMS_ATTEST, TPMT_PUBLIC

from tests.emulator.emulator_wire import command, get_capability, rc, with_pw
from tpm_emulator import TPM
from tpm_emulator.codec import Reader, marshal, unmarshal, unmarshal_from
from tpm_emulator.crypto import HASHES
from tpm_emulator.keys.signing import TPMT_SIGNATURE, verify
from tpm_emulator.objects.public import TPMT_PUBLIC as TPMT_PUBLIC_OURS

OWNER, ENDORSEMENT, NULL_H, PW = 0x40000001, 0x4000000B, 0x40000007, 0x40000009
AK = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
NV = 0x01500020
TPM_RC_RETRY = 0x922
NULL_SCHEME = b"\x00\x10"
ECDSA_SHA256 = b"\x00\x18\x00\x0b"


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def template(alg: str, attrs: str) -> bytes:
    return bytes(TPM2B_PUBLIC.parse(alg, objectAttributes=attrs).publicArea.marshal())


def create_primary(pub: bytes, hierarchy: int = ENDORSEMENT) -> bytes:
    return with_pw(0x131, struct.pack(">I", hierarchy),
                   b"\x00\x04\x00\x00\x00\x00" + tpm2b(pub) + b"\x00\x00" + b"\x00" * 4)


def with_pws(cc: int, handles: tuple[int, ...], n_auth: int, params: bytes) -> bytes:
    """A command with ``n_auth`` empty password sessions."""
    pw = struct.pack(">IHBH", PW, 0, 1, 0)
    body = struct.pack(f">{len(handles)}I", *handles) + struct.pack(">I", n_auth * len(pw))
    return command(cc, body + n_auth * pw + params, 0x8002)


def quote(sign: int, scheme: bytes, data: bytes = b"") -> bytes:
    sel = struct.pack(">IHB", 1, 0x000B, 3) + b"\x01\x00\x00"
    return with_pw(0x158, struct.pack(">I", sign), tpm2b(data) + scheme + sel)


def certify(obj: int, sign: int, scheme: bytes = NULL_SCHEME, data: bytes = b"") -> bytes:
    return with_pws(0x148, (obj, sign), 2, tpm2b(data) + scheme)


def certify_creation(sign: int, obj: int, ticket: bytes) -> bytes:
    return with_pw(0x14A, struct.pack(">II", sign, obj),
                   b"\x00\x00" + tpm2b(bytes(32)) + NULL_SCHEME + ticket)


def privacy(cc: int, sign: int, *more: int, admin: int = ENDORSEMENT,
            data: bytes = b"") -> bytes:
    return with_pws(cc, (admin, sign, *more), 2, tpm2b(data) + NULL_SCHEME)


def nv_certify(sign: int, size: int, offset: int, data: bytes = b"hi") -> bytes:
    return with_pws(0x184, (sign, NV, NV), 2,
                    tpm2b(data) + NULL_SCHEME + struct.pack(">HH", size, offset))


def set_audit(alg: int, set_list: tuple[int, ...] = (), clear_list: tuple[int, ...] = (),
              auth: int = OWNER) -> bytes:
    def tpml(codes: tuple[int, ...]) -> bytes:
        return struct.pack(f">I{len(codes)}I", len(codes), *codes)
    return with_pw(0x140, struct.pack(">I", auth),
                   struct.pack(">H", alg) + tpml(set_list) + tpml(clear_list))


def nv_define(size: int = 8) -> bytes:
    pub = struct.pack(">IHI", NV, 0x000B, 0x00060006) + b"\x00\x00" + struct.pack(">H", size)
    return with_pw(0x12A, struct.pack(">I", OWNER), b"\x00\x00" + tpm2b(pub))


def nv_write(data: bytes) -> bytes:
    return with_pw(0x137, struct.pack(">II", NV, NV), tpm2b(data) + b"\x00\x00")


def start_hmac_session() -> bytes:
    return command(0x176, struct.pack(">II", NULL_H, NULL_H) + tpm2b(bytes(16)) + b"\x00\x00"
                   + b"\x00" + b"\x00\x10" + b"\x00\x0b")


def retrying(theirs: Any, cmd: bytes) -> bytes:
    """libtpms may ask for a retry (TPM_RC_RETRY): a TSS resends, and so do we."""
    other = theirs.execute(cmd)
    for _ in range(3):
        if rc(other) != TPM_RC_RETRY:
            break
        other = theirs.execute(cmd)
    return bytes(other)


def both(ours: TPM, theirs: Any, cmd: bytes) -> tuple[bytes, bytes]:
    """One command to each TPM."""
    return ours.execute(cmd), retrying(theirs, cmd)


def started_pair(swtpm: Any) -> tuple[TPM, Any]:
    ours = TPM()
    start = command(0x144, b"\x00\x00")
    assert rc(ours.execute(start)) == rc(swtpm.execute(start)) == 0
    return ours, swtpm


def setup(ours: TPM, theirs: Any) -> None:
    """Both TPMs get: 0x80000000 an ECDSA AK (endorsement), 0x80000001 a storage key,
    an 8-octet NV index (written), and an HMAC session 0x02000000."""
    for cmd in (create_primary(template("ecc256:ecdsa-sha256:null", AK)),
                create_primary(template("ecc256:aes128cfb", PARENT), OWNER),
                nv_define(), nv_write(b"abcdefgh"), start_hmac_session()):
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b) == 0, (hex(rc(a)), hex(rc(b)))


def attest_of(response: bytes) -> Any:
    assert rc(response) == 0, hex(rc(response))
    (size,) = struct.unpack_from(">H", response, 14)
    return response[16:16 + size]


def test_attestation_refusals_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    setup(ours, theirs)
    script = {
        "Quote unsigned": quote(NULL_H, NULL_SCHEME),
        "Quote unsigned with a scheme": quote(NULL_H, ECDSA_SHA256),
        "Quote with ECDAA": quote(0x80000000, b"\x00\x1a\x00\x0b\x00\x00"),
        "Quote with SM2": quote(0x80000000, b"\x00\x1b\x00\x0b"),
        "Quote with EC-Schnorr": quote(0x80000000, b"\x00\x1c\x00\x0b"),
        "Quote with another hash": quote(0x80000000, b"\x00\x18\x00\x0c"),
        "Quote with RSASSA": quote(0x80000000, b"\x00\x14\x00\x0b"),
        "Quote with an unknown hash": quote(0x80000000, b"\x00\x18\x00\x99"),
        "Quote with HMAC": quote(0x80000000, b"\x00\x05\x00\x0b"),
        "Quote by a storage key": quote(0x80000001, NULL_SCHEME),
        "Quote by an empty slot": quote(0x80000002, NULL_SCHEME),
        "Quote with 66 octets of data": quote(0x80000000, NULL_SCHEME, bytes(66)),
        "Quote with 67 octets of data": quote(0x80000000, NULL_SCHEME, bytes(67)),
        "Certify by a storage key": certify(0x80000000, 0x80000001),
        "Certify with another scheme": certify(0x80000001, 0x80000000, b"\x00\x18\x00\x04"),
        "CertifyCreation with a forged ticket": certify_creation(
            0x80000000, 0x80000001, struct.pack(">HI", 0x8021, OWNER) + tpm2b(bytes(32))),
        "CertifyCreation with a wrong tag": certify_creation(
            0x80000000, 0x80000001, struct.pack(">HI", 0x8024, OWNER) + tpm2b(bytes(32))),
        "GetTime with the owner as privacy admin": privacy(0x14C, NULL_H, admin=OWNER),
        "GetSessionAuditDigest of a plain session": privacy(0x14D, NULL_H, 0x02000000),
        "GetSessionAuditDigest of a policy handle": privacy(0x14D, NULL_H, 0x03000000),
        "GetCommandAuditDigest by a storage key": privacy(0x133, 0x80000001),
        "NV_Certify beyond the index": nv_certify(NULL_H, 4, 6),
        "NV_Certify of 2048 octets": nv_certify(NULL_H, 2048, 0),
        "NV_Certify by a storage key": nv_certify(0x80000001, 2, 0),
        "SetCommandCodeAuditStatus: hash and list": set_audit(0x000C, (0x17E,)),
        "SetCommandCodeAuditStatus: unknown hash": set_audit(0x0099),
        "SetCommandCodeAuditStatus by the endorsement": set_audit(0x0010, auth=ENDORSEMENT),
    }
    differ = {}
    for name, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[name] = (hex(rc(a)), hex(rc(b)))
    assert differ == {}


def _comparable(blob: bytes) -> tuple[bytes, bytes]:
    """What does not depend on the TPM's secrets, Clock or firmware: magic, type,
    qualifiedSigner and extraData, then the attested data. clockInfo (17 octets) and
    firmwareVersion (8) between them are left out: an unsigned attestation obfuscates
    them."""
    head = 6 + 2 + struct.unpack_from(">H", blob, 6)[0]
    head += 2 + struct.unpack_from(">H", blob, head)[0]
    return blob[:head], blob[head + 17 + 8:]


def test_unsigned_nv_certify_matches_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    setup(ours, theirs)
    for size, offset in ((0, 0), (3, 2), (8, 0)):
        a, b = both(ours, theirs, nv_certify(NULL_H, size, offset, b"qualifying"))
        assert _comparable(attest_of(a)) == _comparable(attest_of(b)), (size, offset)


def test_unsigned_certify_of_an_external_key_matches_libtpms(swtpm: Any) -> None:
    """Both TPMs load the same external key (so the same Name and, in the NULL
    hierarchy, the same qualified Name) and certify it without signing."""
    ours, theirs = started_pair(swtpm)
    setup(ours, theirs)
    pem = ec.derive_private_key(12345, ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    sensitive = bytes(TPM2B_SENSITIVE.from_pem(pem).marshal())
    public = bytes(TPMT_PUBLIC.from_pem(pem).marshal())
    load = command(0x167, sensitive + tpm2b(public) + struct.pack(">I", NULL_H))
    a, b = both(ours, theirs, load)
    assert a == b and rc(a) == 0  # the same handle and Name
    a, b = both(ours, theirs, certify(0x80000002, NULL_H, data=b"certify me"))
    mine, libtpms = _comparable(attest_of(a)), _comparable(attest_of(b))
    assert mine[0] == libtpms[0]  # magic, type, signer TPM_RH_NULL, extraData
    # The certified Name. (Its qualified Name is left out: libtpms gives an external
    # object QN = Name, we give it H(hierarchy || Name) — a LoadExternal matter.)
    assert mine[1][:36] == libtpms[1][:36]


def test_command_audit_digest_matches_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    setup(ours, theirs)
    # Both start auditing with SHA-512 (test_differential_sha512 compares that run): move
    # both to SHA-384 and back to SHA-256, so both start from an empty digest.
    steps = [set_audit(0x000C), set_audit(0x000B), set_audit(0x0010, (0x169, 0x17A)),
             command(0x169, struct.pack(">I", NV)),  # NV_ReadPublic: audited
             command(0x17B, b"\x00\x08"),  # GetRandom: not audited
             set_audit(0x0010, (), (0x17A,))]
    for cmd in steps:
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b) == 0
    reports = both(ours, theirs, privacy(0x133, NULL_H))
    mine, libtpms = (TPMS_ATTEST.unmarshal(attest_of(r))[0].attested.commandAudit
                     for r in reports)
    assert (mine.auditCounter, mine.digestAlg) == (libtpms.auditCounter, libtpms.digestAlg)
    assert bytes(mine.auditDigest) == bytes(libtpms.auditDigest) != b""
    assert bytes(mine.commandDigest) == bytes(libtpms.commandDigest)
    # TPM_CAP_AUDIT_COMMANDS and TPM_PT_AUDIT_COUNTER_0/1 report the same.
    for cap in (get_capability(4, 0, 10), get_capability(6, 0x213, 2)):
        a, b = both(ours, theirs, cap)
        assert a[10:] == b[10:]

    # A signed report empties the digest; the next run counts up. NV_Read with a
    # password puts two Names and the read data into cpHash and rpHash.
    read = with_pw(0x14E, struct.pack(">II", NV, NV), struct.pack(">HH", 8, 0))
    steps = [privacy(0x133, 0x80000000), set_audit(0x0010, (0x14E,)), read, read,
             set_audit(0x000C), read]  # a new hash: that change itself is not audited
    for cmd in steps:
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b) == 0
    reports = both(ours, theirs, privacy(0x133, NULL_H))
    mine, libtpms = (TPMS_ATTEST.unmarshal(attest_of(r))[0].attested.commandAudit
                     for r in reports)
    assert (mine.auditCounter, mine.digestAlg) == (libtpms.auditCounter, 0x000C)
    assert mine.auditCounter == 3  # runs: before the signed report, after it, new hash
    assert bytes(mine.auditDigest) == bytes(libtpms.auditDigest) != b""
    assert bytes(mine.commandDigest) == bytes(libtpms.commandDigest)


ATTEST_CCS = (0x133, 0x140, 0x148, 0x14A, 0x14C, 0x14D, 0x158, 0x184)


def _command_attributes(tpm: Any, cc: int) -> int:
    r = tpm.execute(get_capability(2, cc, 1))
    assert rc(r) == 0
    return int(struct.unpack_from(">I", r, 19)[0])


@pytest.mark.parametrize("cc", ATTEST_CCS)
def test_command_attributes_match_libtpms(swtpm: Any, cc: int) -> None:
    ours, theirs = started_pair(swtpm)
    assert hex(_command_attributes(ours, cc)) == hex(_command_attributes(theirs, cc))


# ---- signatures cross-checked: libtpms' verified by us, ours verified by libtpms -----------
RSA_AK = template("rsa2048:rsassa-sha256:null", AK)
PSS_SIGNER = template("rsa2048:null:null",
                      "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign")


def _public_of(response: bytes, offset: int) -> tuple[bytes, TPMT_PUBLIC_OURS]:
    (size,) = struct.unpack_from(">H", response, offset)
    raw = response[offset + 2:offset + 2 + size]
    return raw, unmarshal(TPMT_PUBLIC_OURS, raw)


def _quote_parts(response: bytes) -> tuple[bytes, TPMT_SIGNATURE]:
    blob = attest_of(response)
    r = Reader(response, 16 + len(blob))
    return blob, unmarshal_from(TPMT_SIGNATURE, r)


def _create_and_load(tpm: Any, parent: int, pub: bytes) -> tuple[int, bytes]:
    r = tpm.execute(with_pw(0x153, struct.pack(">I", parent), b"\x00\x04\x00\x00\x00\x00"
                            + tpm2b(pub) + b"\x00\x00" + b"\x00" * 4))
    assert rc(r) == 0, hex(rc(r))
    (psize,) = struct.unpack_from(">H", r, 14)
    private = r[14:16 + psize]
    (qsize,) = struct.unpack_from(">H", r, 16 + psize)
    public = r[16 + psize:18 + psize + qsize]
    loaded = tpm.execute(with_pw(0x157, struct.pack(">I", parent), private + public))
    assert rc(loaded) == 0, hex(rc(loaded))
    return int(struct.unpack_from(">I", loaded, 10)[0]), public[2:]


def test_libtpms_attestation_signatures_verify_here(swtpm: Any) -> None:
    _, theirs = started_pair(swtpm)
    for template_, sch in ((template("ecc256:ecdsa-sha256:null", AK), NULL_SCHEME),
                           (template("ecc384:ecdsa-sha384:null", AK), NULL_SCHEME),
                           (RSA_AK, NULL_SCHEME),
                           (PSS_SIGNER, b"\x00\x16\x00\x0c")):  # RSAPSS, SHA-384
        made = retrying(theirs, create_primary(template_))
        assert rc(made) == 0
        handle = struct.unpack_from(">I", made, 10)[0]
        _, public = _public_of(made, 18)
        blob, sig = _quote_parts(retrying(theirs, quote(handle, sch, b"nonce")))
        assert verify(public, HASHES[sig.hashAlg].digest(blob), sig)
        assert not verify(public, HASHES[sig.hashAlg].digest(blob + b"x"), sig)
        theirs.execute(command(0x165, struct.pack(">I", handle)))


def test_our_attestation_signatures_verify_in_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    made = ours.execute(create_primary(template("ecc256:aes128cfb", PARENT), OWNER))
    assert rc(made) == 0
    for template_, sch in ((template("ecc256:ecdsa-sha256:null", AK), NULL_SCHEME),
                           (RSA_AK, NULL_SCHEME),
                           (PSS_SIGNER, b"\x00\x16\x00\x0b")):  # RSAPSS, SHA-256
        handle, public = _create_and_load(ours, 0x80000000, template_)
        blob, sig = _quote_parts(ours.execute(quote(handle, sch, b"nonce")))
        loaded = retrying(theirs, command(0x167, b"\x00\x00" + tpm2b(public)
                                          + struct.pack(">I", OWNER)))
        assert rc(loaded) == 0, hex(rc(loaded))
        external = struct.unpack_from(">I", loaded, 10)[0]
        digest = HASHES[sig.hashAlg].digest(blob)
        checked = retrying(theirs, command(0x177, struct.pack(">I", external)
                                           + tpm2b(digest) + marshal(sig)))
        assert rc(checked) == 0, hex(rc(checked))
        wrong = retrying(theirs, command(0x177, struct.pack(">I", external)
                                         + tpm2b(bytes(len(digest))) + marshal(sig)))
        assert rc(wrong) == 0x2DB  # TPM_RC_SIGNATURE, parameter 2
        theirs.execute(command(0x165, struct.pack(">I", external)))
        ours.execute(command(0x165, struct.pack(">I", handle)))


# ---- session audit: the digest has no nonces in it, so two TPMs must agree ----------------
def _nv_name(tpm: Any) -> bytes:
    r = retrying(tpm, command(0x169, struct.pack(">I", NV)))
    (psize,) = struct.unpack_from(">H", r, 10)
    (nsize,) = struct.unpack_from(">H", r, 12 + psize)
    return r[14 + psize:14 + psize + nsize]


def _audited_nv_read_public(tpm: Any, session: int, nonce_tpm: bytes,
                            nv_name: bytes) -> bytes:
    """NV_ReadPublic with an unbound, unsalted HMAC session as its audit session (the
    HMAC key is empty); returns the session's next nonceTPM."""
    caller = bytes(range(16))
    attrs = 0x81  # continueSession | audit
    cp = hashlib.sha256(struct.pack(">I", 0x169) + nv_name).digest()
    mac = hmac.new(b"", cp + caller + nonce_tpm + bytes([attrs]), "sha256").digest()
    auth = struct.pack(">I", session) + tpm2b(caller) + bytes([attrs]) + tpm2b(mac)
    r = retrying(tpm, command(0x169, struct.pack(">II", NV, len(auth)) + auth, 0x8002))
    assert rc(r) == 0, hex(rc(r))
    (size,) = struct.unpack_from(">I", r, 10)
    (n,) = struct.unpack_from(">H", r, 14 + size)
    return r[16 + size:16 + size + n]


def test_session_audit_digest_matches_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cmd in (nv_define(), nv_write(b"abcdefgh")):
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b) == 0
    reports = []
    for tpm in (ours, theirs):
        nv_name = _nv_name(tpm)
        started = retrying(tpm, start_hmac_session())
        assert rc(started) == 0
        session = struct.unpack_from(">I", started, 10)[0]
        nonce = started[16:16 + struct.unpack_from(">H", started, 14)[0]]
        for _ in range(2):
            nonce = _audited_nv_read_public(tpm, session, nonce, nv_name)
        # No command without the audit session came between: it is still exclusive.
        report = retrying(tpm, privacy(0x14D, NULL_H, session))
        reports.append(TPMS_ATTEST.unmarshal(attest_of(report))[0].attested.sessionAudit)
    mine, libtpms = reports
    assert bytes(mine.sessionDigest) == bytes(libtpms.sessionDigest) != b""
    assert mine.exclusiveSession == libtpms.exclusiveSession == 1
