"""Attestation under tpm2-pytss ESAPI, checked independently: TPMS_ATTEST parsed with
tpm2-pytss, signatures verified with ``cryptography`` against the key's public area,
PCR digests recomputed from PCR_Read, and the command audit digest recomputed from the
raw command and response octets."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_RC,
    TPM2_SE,
    TPM2_ST,
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMA_SESSION,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMS_NV_PUBLIC,
    TPMS_SENSITIVE_CREATE,
    TPMT_SIG_SCHEME,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF,
    TPMT_TK_CREATION,
    TSS2_Exception,
)

from tests.emulator.emulator_wire import command, pcr_read, rc, shutdown, startup, with_pw
from tests.emulator.inprocess import esapi_over
from tpm_emulator import TPM

AK = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
SIGNER = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"
PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
HASH: dict[int, Any] = {TPM2_ALG.SHA1: hashes.SHA1, TPM2_ALG.SHA256: hashes.SHA256,
        TPM2_ALG.SHA384: hashes.SHA384}
NULL_SCHEME = TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
OWNER, ENDORSEMENT, RH_NULL = 0x40000001, 0x4000000B, 0x40000007
TPM_GENERATED = 0xFF544347


def rc_of(e: TSS2_Exception) -> int:
    return int(e.rc) & 0xFFF


def scheme(alg: int, h: int) -> Any:
    s = TPMT_SIG_SCHEME(scheme=alg)
    s.details.any.hashAlg = h
    return s


def verify(pub: Any, attest: bytes, sig: Any) -> None:
    """Raise unless ``sig`` is the key's signature over ``attest``."""
    key = serialization.load_pem_public_key(bytes(pub.publicArea.to_pem()))
    if sig.sigAlg == TPM2_ALG.ECDSA:
        s = sig.signature.ecdsa
        h = HASH[s.hash]
        assert isinstance(key, ec.EllipticCurvePublicKey)
        der = encode_dss_signature(int.from_bytes(bytes(s.signatureR), "big"),
                                   int.from_bytes(bytes(s.signatureS), "big"))
        key.verify(der, attest, ec.ECDSA(h()))
        return
    assert isinstance(key, rsa.RSAPublicKey)
    r = sig.signature.rsassa if sig.sigAlg == TPM2_ALG.RSASSA else sig.signature.rsapss
    h = HASH[r.hash]
    pad: padding.AsymmetricPadding = padding.PKCS1v15() if sig.sigAlg == TPM2_ALG.RSASSA \
        else padding.PSS(padding.MGF1(h()), padding.PSS.AUTO)
    key.verify(bytes(r.sig), attest, pad, h())


def parse(blob: Any) -> Any:
    attest, used = TPMS_ATTEST.unmarshal(bytes(blob))
    assert used == len(bytes(blob))
    assert attest.magic == TPM_GENERATED
    return attest


def firmware(tpm: TPM) -> int:
    """TPM_PT_FIRMWARE_VERSION_1 and _2 as the UINT64 a TPMS_ATTEST carries."""
    props = tpm.tpm_properties()
    return (props[0x10B] << 32) | props[0x10C]


def primary(e: Any, alg: str, attrs: str = AK, hierarchy: int = ESYS_TR.ENDORSEMENT) -> Any:
    h, pub, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(),
                                  TPM2B_PUBLIC.parse(alg, objectAttributes=attrs), hierarchy)
    return h, pub


@pytest.fixture(scope="module")
def rsa_ak() -> Iterator[tuple[TPM, Any, Any, Any, Any]]:
    """One RSA-2048 restricted RSASSA key, made once: a child of an ECC storage key in
    the owner hierarchy (children come from the OS RNG: fast)."""
    tpm = TPM()
    startup(tpm)
    with esapi_over(tpm) as e:
        srk, _ = primary(e, "ecc256:aes128cfb", PARENT, ESYS_TR.OWNER)
        priv, pub, *_ = e.create(srk, TPM2B_SENSITIVE_CREATE(),
                                 TPM2B_PUBLIC.parse("rsa2048:rsassa-sha256:null",
                                                    objectAttributes=AK))
        yield tpm, e, srk, e.load(srk, priv, pub), pub


def pcr_values(e: Any, spec: str) -> list[bytes]:
    out: list[bytes] = []
    sel = TPML_PCR_SELECTION.parse(spec)
    while True:  # PCR_Read returns at most eight values at a time
        _, got, vals = e.pcr_read(sel)
        if not vals.digests:
            return out
        out += [bytes(d) for d in vals.digests]
        for i in range(sel.count):
            for j in range(got.pcrSelections[i].sizeofSelect):
                sel.pcrSelections[i].pcrSelect[j] &= ~got.pcrSelections[i].pcrSelect[j]


# ---- Quote ---------------------------------------------------------------------------------
def test_quote_with_an_ecc_ak_signs_the_pcr_digest(esapi: Any, tpm: TPM) -> None:
    e = esapi
    e.pcr_event(ESYS_TR.PCR16, b"measured")
    ak, pub = primary(e, "ecc256:ecdsa-sha256:null")
    spec = "sha256:0,1,2,3,4,5,6,7,8,9,16+sha1:16"
    quoted, sig = e.quote(ak, spec, b"nonce-123", NULL_SCHEME)
    att = parse(quoted)
    assert att.type == TPM2_ST.ATTEST_QUOTE
    assert bytes(att.extraData) == b"nonce-123"
    _, name, qualified = e.read_public(ak)
    assert bytes(att.qualifiedSigner) == bytes(qualified) != bytes(name)
    values = pcr_values(e, spec)
    assert len(values) == 12
    assert bytes(att.attested.quote.pcrDigest) == hashlib.sha256(b"".join(values)).digest()
    assert bytes(att.attested.quote.pcrSelect.marshal()) == \
        bytes(TPML_PCR_SELECTION.parse(spec).marshal())
    # An endorsement-hierarchy key sees the clock in the clear.
    assert att.clockInfo.resetCount == tpm.perm.reset_count
    assert att.firmwareVersion == firmware(tpm)
    assert sig.sigAlg == TPM2_ALG.ECDSA and sig.signature.ecdsa.hash == TPM2_ALG.SHA256
    verify(pub, bytes(quoted), sig)


def test_quote_with_an_rsa_ak_in_the_owner_hierarchy_is_obfuscated(rsa_ak: Any) -> None:
    tpm, e, _, ak, pub = rsa_ak
    quoted, sig = e.quote(ak, "sha384:0,23", b"", NULL_SCHEME)
    att = parse(quoted)
    assert bytes(att.attested.quote.pcrDigest) == \
        hashlib.sha256(b"".join(pcr_values(e, "sha384:0,23"))).digest()
    assert sig.sigAlg == TPM2_ALG.RSASSA
    verify(pub, bytes(quoted), sig)
    # resetCount/restartCount/firmwareVersion carry a per-signer offset, stable per key.
    again = parse(e.quote(ak, "sha1:0", b"", NULL_SCHEME)[0])
    assert (att.clockInfo.resetCount, att.firmwareVersion) != (tpm.perm.reset_count,
                                                                firmware(tpm))
    assert (again.clockInfo.resetCount, again.firmwareVersion) == \
        (att.clockInfo.resetCount, att.firmwareVersion)


def test_unrestricted_rsa_key_quotes_with_the_callers_pss_scheme(rsa_ak: Any) -> None:
    _, e, srk, _, _ = rsa_ak
    priv, pub, *_ = e.create(srk, TPM2B_SENSITIVE_CREATE(),
                             TPM2B_PUBLIC.parse("rsa2048:null:null", objectAttributes=SIGNER))
    key = e.load(srk, priv, pub)
    quoted, sig = e.quote(key, "sha256:0", b"q", scheme(TPM2_ALG.RSAPSS, TPM2_ALG.SHA384))
    assert sig.sigAlg == TPM2_ALG.RSAPSS and sig.signature.rsapss.hash == TPM2_ALG.SHA384
    verify(pub, bytes(quoted), sig)
    with pytest.raises(TSS2_Exception) as err:  # a key without a scheme needs one
        e.quote(key, "sha256:0", b"", NULL_SCHEME)
    assert rc_of(err.value) == 0x2D2  # TPM_RC_SCHEME, parameter 2
    e.flush_context(key)


def test_quote_refusals(esapi: Any) -> None:
    e = esapi
    ak, _ = primary(e, "ecc256:ecdsa-sha256:null")
    decrypter, _ = primary(e, "ecc256:aes128cfb", PARENT)
    cases = {
        0x2D2: (ak, scheme(TPM2_ALG.ECDSA, TPM2_ALG.SHA384)),  # not the AK's hash
        0x19C: (decrypter, NULL_SCHEME),  # TPM_RC_KEY: not a signing key
    }
    for code, (key, s) in cases.items():
        with pytest.raises(TSS2_Exception) as err:
            e.quote(key, "sha256:0", b"", s)
        assert rc_of(err.value) == code
    # An unsigned quote has no scheme hash for the PCR digest: refused, as by libtpms.
    with pytest.raises(TSS2_Exception) as err:
        e.quote(ESYS_TR.RH_NULL, "sha256:0", b"", scheme(TPM2_ALG.ECDSA, TPM2_ALG.SHA256))
    assert rc_of(err.value) == 0x2D2


# ---- Certify, CertifyCreation, GetTime, NV_Certify ----------------------------------------
def test_certify_names_the_object_and_is_signed(esapi: Any) -> None:
    e = esapi
    ak, pub = primary(e, "ecc256:ecdsa-sha256:null")
    obj, _ = primary(e, "ecc256:aes128cfb", PARENT, ESYS_TR.OWNER)
    info, sig = e.certify(obj, ak, b"challenge", NULL_SCHEME)
    att = parse(info)
    _, name, qualified = e.read_public(obj)
    assert att.type == TPM2_ST.ATTEST_CERTIFY
    assert bytes(att.attested.certify.name) == bytes(name)
    assert bytes(att.attested.certify.qualifiedName) == bytes(qualified)
    verify(pub, bytes(info), sig)
    unsigned, nosig = e.certify(obj, ESYS_TR.RH_NULL, b"", NULL_SCHEME)
    assert nosig.sigAlg == TPM2_ALG.NULL
    assert bytes(parse(unsigned).qualifiedSigner) == struct.pack(">I", RH_NULL)


def test_certify_creation_checks_the_ticket(esapi: Any) -> None:
    e = esapi
    ak, pub = primary(e, "ecc256:ecdsa-sha256:null")
    obj, _, _, creation_hash, ticket = e.create_primary(
        TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=PARENT),
        ESYS_TR.OWNER)
    info, sig = e.certify_creation(ak, obj, b"", creation_hash, NULL_SCHEME, ticket)
    att = parse(info)
    _, name, _ = e.read_public(obj)
    assert att.type == TPM2_ST.ATTEST_CREATION
    assert bytes(att.attested.creation.objectName) == bytes(name)
    assert bytes(att.attested.creation.creationHash) == bytes(creation_hash)
    verify(pub, bytes(info), sig)
    forged = TPMT_TK_CREATION(tag=ticket.tag, hierarchy=ticket.hierarchy,
                              digest=bytes(ticket.digest)[:-1] + b"\x00")
    with pytest.raises(TSS2_Exception) as err:
        e.certify_creation(ak, obj, b"", creation_hash, NULL_SCHEME, forged)
    assert rc_of(err.value) == 0x4E0  # TPM_RC_TICKET, parameter 4


def test_get_time_reports_time_and_clock(esapi: Any, tpm: TPM) -> None:
    e = esapi
    ak, pub = primary(e, "ecc256:ecdsa-sha256:null")
    before = e.read_clock()
    info, sig = e.get_time(ak, b"t", NULL_SCHEME)
    att = parse(info)
    verify(pub, bytes(info), sig)
    t = att.attested.time
    assert att.type == TPM2_ST.ATTEST_TIME
    assert t.time.time >= before.time and t.time.clockInfo.clock >= before.clockInfo.clock
    assert t.time.clockInfo.resetCount == tpm.perm.reset_count
    assert t.firmwareVersion == att.firmwareVersion == firmware(tpm)


def nv_index(e: Any, size: int = 16) -> Any:
    pub = TPM2B_NV_PUBLIC(nvPublic=TPMS_NV_PUBLIC(
        nvIndex=0x01500020, nameAlg=TPM2_ALG.SHA256,
        attributes=0x00060006,  # OWNERWRITE|AUTHWRITE|OWNERREAD|AUTHREAD
        dataSize=size))
    return e.nv_define_space(b"", pub)


def test_nv_certify_slice_and_range(esapi: Any) -> None:
    e = esapi
    ak, pub = primary(e, "ecc256:ecdsa-sha256:null")
    nv = nv_index(e)
    with pytest.raises(TSS2_Exception) as err:
        e.nv_certify(ak, nv, b"", NULL_SCHEME, 4, 0, auth_handle=nv)
    assert rc_of(err.value) == TPM2_RC.NV_UNINITIALIZED
    e.nv_write(nv, b"0123456789abcdef")
    info, sig = e.nv_certify(ak, nv, b"x", NULL_SCHEME, 6, 4, auth_handle=nv)
    att = parse(info)
    verify(pub, bytes(info), sig)
    _, nv_name = e.nv_read_public(nv)
    assert att.type == TPM2_ST.ATTEST_NV
    assert bytes(att.attested.nv.indexName) == bytes(nv_name)
    assert (att.attested.nv.offset, bytes(att.attested.nv.nvContents)) == (4, b"456789")
    with pytest.raises(TSS2_Exception) as err:
        e.nv_certify(ak, nv, b"", NULL_SCHEME, 10, 8, auth_handle=nv)
    assert rc_of(err.value) == TPM2_RC.NV_RANGE


def test_nv_certify_of_size_zero_certifies_a_digest_of_the_index(tpm: TPM) -> None:
    with esapi_over(tpm) as e:
        ak, pub = primary(e, "ecc256:ecdsa-sha256:null")
        nv = nv_index(e, 8)
        e.nv_write(nv, b"abcdefgh")
        info, sig = e.nv_certify(ak, nv, b"", NULL_SCHEME, 0, 0, auth_handle=nv)
        _, nv_name = e.nv_read_public(nv)
    blob = bytes(info)
    verify(pub, blob, sig)
    # TPM_ST_ATTEST_NV_DIGEST (Part 2, 1.59) is newer than tpm2-pytss: parse by hand.
    assert struct.unpack_from(">IH", blob) == (TPM_GENERATED, 0x801C)
    name = bytes(nv_name)
    tail = struct.pack(">H", len(name)) + name + b"\x00\x20" + hashlib.sha256(b"abcdefgh").digest()
    assert blob.endswith(tail)


# ---- session audit ---------------------------------------------------------------------------
def test_session_audit_digest_needs_an_audit_session(esapi: Any) -> None:
    e = esapi
    sym = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
    plain = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, sym, TPM2_ALG.SHA256)
    with pytest.raises(TSS2_Exception) as err:
        e.get_session_audit_digest(ESYS_TR.RH_NULL, plain, b"")
    assert rc_of(err.value) == 0x38A  # TPM_RC_TYPE, handle 3
    audit = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, sym, TPM2_ALG.SHA256)
    e.trsess_set_attributes(audit, TPMA_SESSION.AUDIT | TPMA_SESSION.CONTINUESESSION)
    e.get_random(8, session1=audit)
    ak, pub = primary(e, "ecc256:ecdsa-sha256:null")
    info, sig = e.get_session_audit_digest(ak, audit, b"s")
    att = parse(info)
    verify(pub, bytes(info), sig)
    assert att.type == TPM2_ST.ATTEST_SESSION_AUDIT
    assert len(bytes(att.attested.sessionAudit.sessionDigest)) == 32


# ---- command audit, recomputed from the octets on the wire ---------------------------------
class AuditModel:
    """The command audit digest as Part 1, 18.9 defines it."""

    def __init__(self) -> None:
        self.digest = b""
        self.counter = 0
        self.alg = "sha512"  # the audit hash a new TPM starts with, as libtpms

    def h(self, *parts: bytes) -> bytes:
        return hashlib.new(self.alg, b"".join(parts)).digest()

    def extend(self, cc: int, names: list[bytes], params: bytes, rparams: bytes) -> None:
        if not self.digest:
            self.digest = bytes(hashlib.new(self.alg).digest_size)
            self.counter += 1
        cp = self.h(struct.pack(">I", cc), *names, params)
        rp = self.h(struct.pack(">II", 0, cc), rparams)
        self.digest = self.h(self.digest, cp, rp)


def tpml_cc(codes: list[int]) -> bytes:
    return struct.pack(">I", len(codes)) + b"".join(struct.pack(">I", c) for c in codes)


def set_audit(alg: int, set_list: list[int], clear_list: tuple[int, ...] = ()) -> bytes:
    return with_pw(0x140, struct.pack(">I", OWNER),
                   struct.pack(">H", alg) + tpml_cc(set_list) + tpml_cc(list(clear_list)))


def ok(tpm: TPM, cmd: bytes) -> bytes:
    r = tpm.execute(cmd)
    assert rc(r) == 0, hex(rc(r))
    return r


def audit_report(tpm: TPM, sign: int = RH_NULL, data: bytes = b"") -> tuple[Any, bytes]:
    pw = struct.pack(">IHBH", 0x40000009, 0, 1, 0)  # two password sessions
    r = ok(tpm, command(0x133, struct.pack(">III", ENDORSEMENT, sign, 2 * len(pw)) + 2 * pw
                        + struct.pack(">H", len(data)) + data + b"\x00\x10", 0x8002))
    (size,) = struct.unpack_from(">H", r, 14)
    blob = r[16:16 + size]
    return parse(blob), r[16 + size:]


def test_command_audit_digest_recomputed_independently(tpm: TPM) -> None:
    model = AuditModel()
    owner = [struct.pack(">I", OWNER)]
    cmd = set_audit(TPM2_ALG.NULL, [0x17E, 0x145, 0x9999])  # Shutdown and unknown: ignored
    ok(tpm, cmd)
    model.extend(0x140, owner, cmd[-(2 + 4 + 12 + 4):], b"")
    read = pcr_read(TPM2_ALG.SHA256, [0, 16])
    r = ok(tpm, read)
    model.extend(0x17E, [], read[10:], r[10:])
    ok(tpm, command(0x17B, b"\x00\x08"))  # GetRandom is not audited
    att, _ = audit_report(tpm)
    info = att.attested.commandAudit
    assert (info.auditCounter, info.digestAlg) == (1, TPM2_ALG.SHA512)
    assert bytes(info.auditDigest) == model.digest
    assert bytes(info.commandDigest) == hashlib.sha512(struct.pack(">II", 0x140, 0x17E)).digest()

    # A signed report closes the run: the next audited command starts a new one.
    with esapi_over(tpm) as e:
        ak, pub = primary(e, "ecc256:ecdsa-sha256:null")
        info_blob, sig = e.get_command_audit_digest(ak, b"n")
        verify(pub, bytes(info_blob), sig)
        assert parse(info_blob).attested.commandAudit.auditDigest == info.auditDigest
    model.digest = b""
    assert bytes(audit_report(tpm)[0].attested.commandAudit.auditDigest) == b""
    r = ok(tpm, read)
    model.extend(0x17E, [], read[10:], r[10:])
    report = audit_report(tpm)[0].attested.commandAudit
    assert (report.auditCounter, bytes(report.auditDigest)) == (2, model.digest)
    assert tpm.tpm_properties()[0x214] == 2  # TPM_PT_AUDIT_COUNTER_1

    # The hash cannot change together with the list; alone, it restarts the digest and
    # that command itself is not audited.
    assert rc(tpm.execute(set_audit(TPM2_ALG.SHA384, [0x17E]))) == 0x1C4
    ok(tpm, set_audit(TPM2_ALG.SHA384, []))
    model.digest, model.alg = b"", "sha384"
    r = ok(tpm, read)
    model.extend(0x17E, [], read[10:], r[10:])
    report = audit_report(tpm)[0].attested.commandAudit
    assert (report.digestAlg, report.auditCounter) == (TPM2_ALG.SHA384, 3)
    assert bytes(report.auditDigest) == model.digest


def test_command_audit_survives_restart_and_snapshot_but_not_reset(tpm: TPM) -> None:
    ok(tpm, set_audit(TPM2_ALG.NULL, [0x17E]))
    ok(tpm, pcr_read(TPM2_ALG.SHA1, [0]))
    digest = bytes(audit_report(tpm)[0].attested.commandAudit.auditDigest)
    assert digest
    restored = TPM.restore(tpm.snapshot())
    assert bytes(audit_report(restored)[0].attested.commandAudit.auditDigest) == digest
    shutdown(tpm, 1)  # Shutdown(STATE), then Startup(CLEAR): a TPM Restart
    tpm.power_cycle()
    startup(tpm, 0)
    assert bytes(audit_report(tpm)[0].attested.commandAudit.auditDigest) == digest
    shutdown(tpm, 0)  # Shutdown(CLEAR), Startup(CLEAR): a TPM Reset empties it
    tpm.power_cycle()
    startup(tpm, 0)
    report = audit_report(tpm)[0].attested.commandAudit
    assert (bytes(report.auditDigest), report.auditCounter) == (b"", 1)
    # ...but the list of audited commands is permanent.
    assert bytes(report.commandDigest) == hashlib.sha512(struct.pack(">II", 0x140, 0x17E)).digest()


def test_null_signature_round_trips_through_pytss(esapi: Any) -> None:
    _, sig = esapi.get_time(ESYS_TR.RH_NULL, b"", NULL_SCHEME)
    assert sig.sigAlg == TPM2_ALG.NULL
    assert bytes(sig.marshal()) == b"\x00\x10"
    assert TPMT_SIGNATURE.unmarshal(b"\x00\x10")[0].sigAlg == TPM2_ALG.NULL


# ---- a restricted key signs only what the TPM hashed --------------------------------------
def test_restricted_ak_signs_only_digests_with_a_hashcheck_ticket(esapi: Any) -> None:
    e = esapi
    ak, pub = primary(e, "ecc256:ecdsa-sha256:null")
    data = b"an ordinary message"
    digest, ticket = e.hash(data, TPM2_ALG.SHA256, ESYS_TR.ENDORSEMENT)
    sig = e.sign(ak, digest, NULL_SCHEME, ticket)
    verify(pub, data, sig)
    with pytest.raises(TSS2_Exception) as err:  # no ticket
        e.sign(ak, hashlib.sha256(data).digest(), NULL_SCHEME)
    assert rc_of(err.value) == 0x3E0  # TPM_RC_TICKET, parameter 3
    # Data that starts like a TPMS_ATTEST earns no ticket, so it cannot be signed.
    forged = struct.pack(">I", TPM_GENERATED) + b"fake quote"
    digest, ticket = e.hash(forged, TPM2_ALG.SHA256, ESYS_TR.ENDORSEMENT)
    assert bytes(ticket.digest) == b""
    with pytest.raises(TSS2_Exception) as err:
        e.sign(ak, digest, NULL_SCHEME, ticket)
    assert rc_of(err.value) == 0x3E0


def test_a_signed_attestation_after_shutdown_voids_the_orderly_state(tpm: TPM) -> None:
    with esapi_over(tpm) as e:
        ak, _ = primary(e, "ecc256:ecdsa-sha256:null")
        shutdown(tpm, 1)  # Shutdown(STATE)
        e.get_time(ESYS_TR.RH_NULL, b"", NULL_SCHEME)  # unsigned: reveals nothing signed
        assert tpm.perm.shutdown_state is not None
        e.get_time(ak, b"", NULL_SCHEME)  # signed: Clock left the TPM (SignAttestInfo)
    assert tpm.perm.shutdown_state is None
    tpm.power_cycle()
    r = tpm.execute(command(0x144, b"\x00\x01"))  # Startup(STATE) has nothing to resume
    assert rc(r) == 0x1C4


def test_an_hmac_key_attests_with_an_hmac(rsa_ak: Any) -> None:
    _, e, srk, _, _ = rsa_ak
    secret = b"k" * 32
    priv, pub, *_ = e.create(srk, TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=secret)),
                             TPM2B_PUBLIC.parse("hmac:sha256",
                                                objectAttributes="fixedtpm|fixedparent|"
                                                                 "userwithauth|sign"))
    key = e.load(srk, priv, pub)
    info, sig = e.get_time(key, b"hmac", NULL_SCHEME)
    e.flush_context(key)
    assert sig.sigAlg == TPM2_ALG.HMAC
    expect = hmac.new(secret, hashlib.sha256(bytes(info)).digest(), "sha256").digest()
    assert bytes(sig.signature.hmac.digest.sha256) == expect
