"""TPM2_CertifyX509 (Part 3, 18.8): the certificate assembled from partialCertificate,
addedToCertificate and the signature parses with ``cryptography.x509``, carries the
certified key and verifies under the signing key; the refusals; and against swtpm
(libtpms) the same codes, the same addedToCertificate (its serial number is a digest,
not random) and the same tbsDigest for the same external keys.

The DER here is written and split by the test's own few lines, independent of the
emulator's ``attest/x509.py``."""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_MAX_BUFFER,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPMA_SESSION,
    TPMT_PUBLIC,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

from tests.emulator.emulator_wire import command, rc, startup
from tests.emulator.outside_keys import p256_key
from tests.emulator.test_differential_attest import (
    AK,
    ENDORSEMENT,
    NULL_H,
    NULL_SCHEME,
    OWNER,
    PARENT,
    both,
    create_primary,
    started_pair,
    template,
    tpm2b,
    with_pws,
)
from tpm_emulator import TPM

CC_CERTIFY_X509 = 0x197
ECDSA_SHA256 = b"\x00\x18\x00\x0b"
RSASSA_SHA256 = b"\x00\x14\x00\x0b"
RSAPSS_SHA384 = b"\x00\x16\x00\x0c"
SIGN_KEY = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"


# ---- a little DER, written independently ----------------------------------------------
def tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = bytes([n]) if n < 0x80 else (bytes([0x81, n]) if n < 0x100
                                           else bytes([0x82, n >> 8, n & 0xFF]))
    return bytes([tag]) + length + body


def elements(der: bytes) -> list[bytes]:
    """The whole elements inside one constructed element."""
    def header(o: int) -> tuple[int, int]:
        first = der[o + 1]
        if first < 0x80:
            return 2, first
        k = first & 0x7F
        return 2 + k, int.from_bytes(der[o + 2:o + 2 + k], "big")

    h, n = header(0)
    out, o = [], h
    while o < h + n:
        hh, nn = header(o)
        out.append(der[o:o + hh + nn])
        o += hh + nn
    return out


def name(cn: str) -> bytes:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]).public_bytes()


VALIDITY = tlv(0x30, tlv(0x17, b"250101000000Z") + tlv(0x17, b"350101000000Z"))
OID_KEY_USAGE = bytes.fromhex("0603551d0f")
OID_TPMA_OBJECT = bytes.fromhex("0607678105 0a010101".replace(" ", ""))


def extension(oid: bytes, value: bytes, critical: bool = False) -> bytes:
    return tlv(0x30, oid + (b"\x01\x01\xff" if critical else b"") + tlv(0x04, value))


KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment",
              "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
              "encipher_only", "decipher_only")


def key_usage(**usages: bool) -> bytes:
    flags = dict.fromkeys(KEY_USAGES, False)
    flags.update(usages)
    return extension(OID_KEY_USAGE, x509.KeyUsage(**flags).public_bytes(), critical=True)


SIGN_USAGE = key_usage(digital_signature=True)


def partial(*exts: bytes, signature_alg: bytes = b"", issuer: str = "TPM CA",
            subject: str = "certified key") -> bytes:
    return tlv(0x30, signature_alg + name(issuer) + VALIDITY + name(subject)
               + tlv(0xA3, tlv(0x30, b"".join(exts or (SIGN_USAGE,)))))


# ---- the command ----------------------------------------------------------------------
def certify_x509(obj: int, sign: int, partial_cert: bytes, scheme: bytes = NULL_SCHEME,
                 reserved: bytes = b"") -> bytes:
    return with_pws(CC_CERTIFY_X509, (obj, sign), 2,
                    tpm2b(reserved) + scheme + tpm2b(partial_cert))


def parse_response(response: bytes) -> tuple[bytes, bytes, Any]:
    """(addedToCertificate, tbsDigest, TPMT_SIGNATURE)."""
    assert rc(response) == 0, hex(rc(response))
    o = 14
    (n,) = struct.unpack_from(">H", response, o)
    added = response[o + 2:o + 2 + n]
    o += 2 + n
    (n,) = struct.unpack_from(">H", response, o)
    digest = response[o + 2:o + 2 + n]
    signature, _ = TPMT_SIGNATURE.unmarshal(response[o + 2 + n:])
    return added, digest, signature


def assemble(partial_cert: bytes, added: bytes, signature: Any) -> x509.Certificate:
    """The full certificate, as a caller of CertifyX509 puts it together."""
    mine = elements(partial_cert)
    tpm = elements(added)
    version, serial = tpm[0], tpm[1]
    if len(mine) == 5:  # the caller named the signature algorithm
        sig_alg, (issuer, validity, subject, extensions), spki = mine[0], mine[1:], tpm[2]
    else:
        sig_alg, spki = tpm[2], tpm[3]
        issuer, validity, subject, extensions = mine
    tbs = tlv(0x30, version + serial + sig_alg + issuer + validity + subject + spki
              + extensions)
    if signature.sigAlg == 0x0018:
        ecdsa = signature.signature.ecdsa
        value = encode_dss_signature(int.from_bytes(bytes(ecdsa.signatureR), "big"),
                                     int.from_bytes(bytes(ecdsa.signatureS), "big"))
    else:
        value = bytes(signature.signature.rsassa.sig)
    cert = tlv(0x30, tbs + sig_alg + tlv(0x03, b"\x00" + value))
    return x509.load_der_x509_certificate(cert)


def load_external_command(key: Any, attrs: int = 0x60040) -> bytes:
    """LoadExternal of a cryptography key, private part too, into the NULL hierarchy."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    sensitive = bytes(TPM2B_SENSITIVE.from_pem(pem).marshal())
    public = bytes(TPMT_PUBLIC.from_pem(pem, objectAttributes=attrs).marshal())
    return command(0x167, sensitive + tpm2b(public) + struct.pack(">I", NULL_H))


def load_external(tpm: Any, key: Any, attrs: int = 0x60040) -> int:
    r = tpm.execute(load_external_command(key, attrs))
    assert rc(r) == 0, hex(rc(r))
    return int(struct.unpack_from(">I", r, 10)[0])


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def spki(key: Any) -> bytes:
    return bytes(key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))


# ---- in-process: the certificate is a real one ------------------------------------------
def test_ecdsa_certificate_verifies(tpm: TPM) -> None:
    signer, subject = p256_key(), p256_key()
    sign_h, obj_h = load_external(tpm, signer), load_external(tpm, subject)
    request = partial()
    added, digest, sig = parse_response(
        tpm.execute(certify_x509(obj_h, sign_h, request, ECDSA_SHA256)))
    cert = assemble(request, added, sig)
    assert cert.version is x509.Version.v3
    assert cert.issuer.rfc4514_string() == "CN=TPM CA"
    assert cert.subject.rfc4514_string() == "CN=certified key"
    assert cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert spki(cert) == spki(subject)
    assert hashlib.sha256(cert.tbs_certificate_bytes).digest() == digest
    signer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                               ec.ECDSA(hashes.SHA256()))
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    # The serial is a digest of the request: the same request, the same certificate body.
    again, digest2, _ = parse_response(
        tpm.execute(certify_x509(obj_h, sign_h, request, ECDSA_SHA256)))
    assert (again, digest2) == (added, digest)
    other, _, _ = parse_response(
        tpm.execute(certify_x509(obj_h, sign_h, partial(subject="another"), ECDSA_SHA256)))
    assert elements(other)[1] != elements(added)[1]


def test_rsa_signers_and_an_rsa_subject(tpm: TPM, rsa_key: rsa.RSAPrivateKey) -> None:
    subject = p256_key()
    sign_h = load_external(tpm, rsa_key)
    obj_h = load_external(tpm, subject)
    request = partial()
    cert = assemble(request, *parse_response(
        tpm.execute(certify_x509(obj_h, sign_h, request, RSASSA_SHA256)))[::2])
    rsa_key.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                padding.PKCS1v15(), hashes.SHA256())
    # PSS: the AlgorithmIdentifier names SHA-384, MGF1-SHA-384 and the salt length.
    cert = assemble(request, *parse_response(
        tpm.execute(certify_x509(obj_h, sign_h, request, RSAPSS_SHA384)))[::2])
    assert cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS
    pss = cert.signature_algorithm_parameters
    assert isinstance(pss, padding.PSS)
    rsa_key.public_key().verify(cert.signature, cert.tbs_certificate_bytes, pss,
                                hashes.SHA384())
    # An RSA key certified by an ECC one: the modulus and exponent come out right.
    ecc_h = load_external(tpm, p256_key())
    request = partial(key_usage(digital_signature=True, data_encipherment=True))
    cert = assemble(request, *parse_response(
        tpm.execute(certify_x509(sign_h, ecc_h, request, ECDSA_SHA256)))[::2])
    assert spki(cert) == spki(rsa_key)


def full_length_key(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    """A key whose coordinates take all their octets (see ``outside_keys.p256_key``)."""
    octets = (curve.key_size + 7) // 8
    while True:
        key = ec.generate_private_key(curve)
        n = key.public_key().public_numbers()
        if min(n.x.bit_length(), n.y.bit_length()) > 8 * (octets - 1):
            return key


@pytest.mark.parametrize("curve,scheme,hash_cls", [
    (ec.SECP384R1(), b"\x00\x18\x00\x0c", hashes.SHA384),
    (ec.SECP521R1(), b"\x00\x18\x00\x0d", hashes.SHA512),
    (ec.SECP256R1(), b"\x00\x18\x00\x04", hashes.SHA1),
])
def test_other_curves_and_hashes(tpm: TPM, curve: ec.EllipticCurve, scheme: bytes,
                                 hash_cls: type[hashes.HashAlgorithm]) -> None:
    signer, subject = full_length_key(curve), full_length_key(curve)
    sign_h, obj_h = load_external(tpm, signer), load_external(tpm, subject)
    request = partial()
    added, digest, sig = parse_response(
        tpm.execute(certify_x509(obj_h, sign_h, request, scheme)))
    cert = assemble(request, added, sig)
    assert spki(cert) == spki(subject)
    assert isinstance(cert.signature_hash_algorithm, hash_cls)
    assert hashlib.new(hash_cls().name, cert.tbs_certificate_bytes).digest() == digest
    signer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                               ec.ECDSA(hash_cls()))


def test_caller_named_signature_algorithm_is_kept(tpm: TPM) -> None:
    sign_h, obj_h = load_external(tpm, p256_key()), load_external(tpm, p256_key())
    sig_alg = tlv(0x30, bytes.fromhex("06082a8648ce3d040302"))  # ecdsa-with-SHA256
    request = partial(signature_alg=sig_alg)
    added, digest, sig = parse_response(
        tpm.execute(certify_x509(obj_h, sign_h, request, ECDSA_SHA256)))
    assert len(elements(added)) == 3  # version, serial, SPKI: no algorithm added
    cert = assemble(request, added, sig)
    assert hashlib.sha256(cert.tbs_certificate_bytes).digest() == digest


def test_restricted_signing_key_certifies(tpm: TPM) -> None:
    """The TBSCertificate starts with a SEQUENCE, never TPM_GENERATED_VALUE, so an AK
    may sign it: libtpms does not refuse restricted keys here."""
    r = tpm.execute(create_primary(template("ecc256:ecdsa-sha256:null", AK)))
    assert rc(r) == 0
    ak = int(struct.unpack_from(">I", r, 10)[0])
    (size,) = struct.unpack_from(">H", r, 18)
    ak_public, _ = TPMT_PUBLIC.unmarshal(r[20:20 + size])
    obj_h = load_external(tpm, p256_key())
    request = partial()
    cert = assemble(request, *parse_response(
        tpm.execute(certify_x509(obj_h, ak, request)))[::2])
    point = ak_public.unique.ecc
    ak_key = ec.EllipticCurvePublicNumbers(int.from_bytes(bytes(point.x), "big"),
                                           int.from_bytes(bytes(point.y), "big"),
                                           ec.SECP256R1()).public_key()
    ak_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))


def test_key_usage_must_match_the_object(tpm: TPM) -> None:
    signer = load_external(tpm, p256_key())
    sign_only = load_external(tpm, p256_key(), attrs=0x40040)  # userWithAuth|sign
    both_uses = load_external(tpm, p256_key())  # userWithAuth|sign|decrypt
    cases = {
        (sign_only, key_usage(digital_signature=True, key_cert_sign=True)): 0,
        (sign_only, key_usage(data_encipherment=True)): 0x3C4,  # VALUE on P3: no decrypt
        (sign_only, key_usage(content_commitment=True)): 0x3C4,  # needs fixedTPM
        (both_uses, key_usage(key_encipherment=True, data_encipherment=True)): 0,
        (both_uses, key_usage(key_agreement=True)): 0x3C4,  # needs restricted (libtpms 0.9)
    }
    for (obj, usage), expected in cases.items():
        r = tpm.execute(certify_x509(obj, signer, partial(usage), ECDSA_SHA256))
        assert rc(r) == expected, (usage.hex(), hex(rc(r)))
    # A tpmaObject extension must equal the object's attributes exactly.
    good = extension(OID_TPMA_OBJECT, tlv(0x03, b"\x00" + struct.pack(">I", 0x40040)))
    bad = extension(OID_TPMA_OBJECT, tlv(0x03, b"\x00" + struct.pack(">I", 0x60040)))
    assert rc(tpm.execute(certify_x509(sign_only, signer, partial(good, SIGN_USAGE),
                                       ECDSA_SHA256))) == 0
    assert rc(tpm.execute(certify_x509(sign_only, signer, partial(bad, SIGN_USAGE),
                                       ECDSA_SHA256))) == 0x282  # ATTRIBUTES on H2


def test_unsigned_certificates_are_refused(tpm: TPM) -> None:
    """signHandle is a TPMI_DH_OBJECT without +NULL: an X.509 certificate needs a
    signature. (libtpms 0.9.2 lets TPM_RH_NULL through and then dereferences the
    missing key: swtpm dies. We refuse the handle value instead: VALUE on H2.)"""
    obj_h = load_external(tpm, p256_key())
    assert rc(tpm.execute(certify_x509(obj_h, NULL_H, partial()))) == 0x284


# ---- against libtpms -------------------------------------------------------------------
# libtpms holds three transient objects: each comparison loads the three it needs into
# both TPMs, which then sit at 0x80000000, 0x80000001 and 0x80000002.
H0, H1, H2 = 0x80000000, 0x80000001, 0x80000002


def _objects(rsa_key: rsa.RSAPrivateKey) -> dict[str, bytes]:
    return {
        "AK": create_primary(template("ecc256:ecdsa-sha256:null", AK)),
        "storage": create_primary(template("aes128cfb", PARENT), OWNER),
        "HMAC": create_primary(template("hmac:sha256", SIGN_KEY), ENDORSEMENT),
        "ECC signer": load_external_command(ec.derive_private_key(1001, ec.SECP256R1())),
        "subject": load_external_command(ec.derive_private_key(1002, ec.SECP256R1())),
        "RSA signer": load_external_command(rsa_key),
        "sign-only": load_external_command(ec.derive_private_key(1003, ec.SECP256R1()),
                                           0x40040),
    }


def _load(ours: TPM, theirs: Any, rsa_key: rsa.RSAPrivateKey, *names: str) -> None:
    """Flush what both hold and load ``names`` into both, in this order."""
    for h in (H0, H1, H2):
        both(ours, theirs, command(0x165, struct.pack(">I", h)))
    objects = _objects(rsa_key)
    for i, label in enumerate(names):
        a, b = both(ours, theirs, objects[label])
        assert rc(a) == rc(b) == 0, (label, hex(rc(a)), hex(rc(b)))
        assert struct.unpack_from(">I", a, 10) == struct.unpack_from(">I", b, 10) == (H0 + i,)


def _compare(ours: TPM, theirs: Any, script: dict[str, bytes]) -> dict[str, Any]:
    differ = {}
    for label, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[label] = (hex(rc(a)), hex(rc(b)))
    return differ


def _malformed_requests(subject: int, signer: int) -> dict[str, bytes]:
    good = partial()
    seq = tlv(0x30, b"")
    body = name("a") + VALIDITY + name("b")
    exts = tlv(0xA3, tlv(0x30, SIGN_USAGE))

    def ask(request: bytes) -> bytes:
        return certify_x509(subject, signer, request, ECDSA_SHA256)

    def with_usage(value: bytes) -> bytes:
        return ask(partial(extension(OID_KEY_USAGE, value)))

    def with_tpma(value: bytes) -> bytes:
        return ask(partial(extension(OID_TPMA_OBJECT, value), SIGN_USAGE))

    return {
        "accepted": ask(good),
        "empty": ask(b""),
        "a SET": ask(b"\x31" + good[1:]),
        "trailing octets": ask(good + b"\x00"),
        "short": ask(good[:-1]),
        "indefinite length": ask(b"\x30\x80" + good[2:] + b"\x00\x00"),
        "two sequences": ask(tlv(0x30, seq * 2 + exts)),
        "five sequences": ask(tlv(0x30, seq * 5 + exts)),
        "no extensions": ask(tlv(0x30, body)),
        "extensions twice": ask(tlv(0x30, body + exts + exts)),
        "issuerUniqueID": ask(tlv(0x30, body + tlv(0xA1, b"\x03\x01\x00") + exts)),
        "empty sequences inside": ask(tlv(0x30, seq * 3 + exts)),
        "extensions first": ask(tlv(0x30, exts + body)),
        "a high tag number": ask(tlv(0x30, body + b"\x1f\x01\x00" + exts)),
        "three-octet length": ask(b"\x30\x83\x00" + good[1:]),
        "non-minimal length": ask(b"\x30\x81" + good[1:]),
        "no KeyUsage": ask(partial(extension(bytes.fromhex("0603551d13"),
                                             bytes.fromhex("3000")))),
        "an extension not a SEQUENCE": ask(partial(b"\x04\x00")),
        "extensions not a SEQUENCE": ask(tlv(0x30, body + tlv(0xA3, tlv(0x31, SIGN_USAGE)))),
        "KeyUsage without a BIT STRING": with_usage(b"\x04\x00"),
        "KeyUsage without a value": ask(partial(tlv(0x30, OID_KEY_USAGE))),
        "KeyUsage with reserved bits": with_usage(bytes.fromhex("0303068040")),
        "KeyUsage of 40 bits": with_usage(bytes.fromhex("0306008000000001")),
        "KeyUsage of 5 octets, 32 bits": with_usage(bytes.fromhex("03060000800000ff")),
        "KeyUsage with 8 unused bits": with_usage(bytes.fromhex("03020880")),
        "KeyUsage empty": with_usage(bytes.fromhex("030100")),
        "KeyUsage keyEncipherment": ask(partial(key_usage(key_encipherment=True))),
        "KeyUsage keyAgreement": ask(partial(key_usage(key_agreement=True))),
        "KeyUsage every bit": ask(partial(key_usage(**dict.fromkeys(KEY_USAGES, True)))),
        "KeyUsage nonRepudiation": ask(partial(key_usage(content_commitment=True))),
        "tpmaObject differs": with_tpma(b"\x03\x05\x00" + struct.pack(">I", 0x40040)),
        "tpmaObject equal": with_tpma(b"\x03\x05\x00" + struct.pack(">I", 0x60040)),
        "tpmaObject short": with_tpma(b"\x03\x03\x00\x00\x06"),
        "tpmaObject malformed": with_tpma(b"\x05\x00"),
    }


def test_malformed_requests_are_refused_as_libtpms_does(
        swtpm: Any, rsa_key: rsa.RSAPrivateKey) -> None:
    ours, theirs = started_pair(swtpm)
    _load(ours, theirs, rsa_key, "subject", "ECC signer")
    assert _compare(ours, theirs, _malformed_requests(H0, H1)) == {}


def test_key_and_scheme_refusals_match_libtpms(swtpm: Any, rsa_key: rsa.RSAPrivateKey) -> None:
    ours, theirs = started_pair(swtpm)
    good = partial()
    _load(ours, theirs, rsa_key, "subject", "ECC signer", "storage")
    differ = _compare(ours, theirs, {
        "reserved data": certify_x509(H0, H1, good, ECDSA_SHA256, b"x"),
        "a storage key signs": certify_x509(H0, H2, good),
        "a scheme the key cannot use": certify_x509(H0, H1, good, RSASSA_SHA256),
        "no scheme at all": certify_x509(H0, H1, good),
        "another hash": certify_x509(H0, H1, good, b"\x00\x18\x00\x0c"),
        "a symmetric key certified": certify_x509(H2, H1, good, ECDSA_SHA256),
        "an empty slot certified": certify_x509(0x80000005, H1, good, ECDSA_SHA256),
        "the owner certified": certify_x509(OWNER, H1, good, ECDSA_SHA256),
    })
    _load(ours, theirs, rsa_key, "HMAC", "AK", "sign-only")
    differ |= _compare(ours, theirs, {
        "an HMAC key certified": certify_x509(H0, H1, good),
        "an HMAC key signs, TPM names the algorithm": certify_x509(H2, H0, good),
        "an HMAC key signs a named algorithm": certify_x509(
            H2, H0, partial(signature_alg=tlv(0x30, b""))),
        "the AK signs": certify_x509(H2, H1, good),
        "the AK with another scheme": certify_x509(H2, H1, good, ECDSA_SHA256[:3] + b"\x04"),
        "decrypt usage, sign-only object": certify_x509(
            H2, H1, partial(key_usage(key_agreement=True))),
        "the AK certifies itself": certify_x509(H1, H1, partial(key_usage(
            digital_signature=True, content_commitment=True, key_cert_sign=True))),
    })
    assert differ == {}


@pytest.mark.parametrize("scheme,named", [
    (ECDSA_SHA256, False), (ECDSA_SHA256, True), (RSASSA_SHA256, False),
    (RSAPSS_SHA384, False), (b"\x00\x16\x00\x04", False),
])
def test_added_and_digest_match_libtpms(swtpm: Any, rsa_key: rsa.RSAPrivateKey,
                                        scheme: bytes, named: bool) -> None:
    """The same external keys and request: the same serial number, AlgorithmIdentifier
    and SubjectPublicKeyInfo, octet for octet, and so the same tbsDigest. (The
    signatures themselves differ: ECDSA and PSS are randomized.)"""
    ours, theirs = started_pair(swtpm)
    _load(ours, theirs, rsa_key, "subject", "ECC signer", "RSA signer")
    signer = H1 if scheme == ECDSA_SHA256 else H2
    alg = tlv(0x30, bytes.fromhex("06082a8648ce3d040302")) if named else b""
    request = partial(key_usage(digital_signature=True, data_encipherment=True),
                      signature_alg=alg)
    for subject in (H0, H2):
        a, b = both(ours, theirs, certify_x509(subject, signer, request, scheme))
        mine, libtpms = parse_response(a), parse_response(b)
        assert mine[:2] == libtpms[:2]
        assert mine[2].sigAlg == libtpms[2].sigAlg


def test_command_attributes_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    cap = command(0x17A, struct.pack(">III", 2, CC_CERTIFY_X509, 1))
    a, b = both(ours, theirs, cap)
    assert rc(a) == rc(b) == 0
    assert a[10:] == b[10:]
    assert struct.unpack_from(">I", a, 19)[0] & 0xFFFF == CC_CERTIFY_X509


# ---- a TSS client: ESAPI, with the partial certificate tpm2-tools makes -------------------
def test_esapi_with_an_encrypting_session_and_certutil_partial(
        esapi: Any, tmp_path: Path) -> None:
    """tpm2_certifyX509certutil writes the request (issuer, validity, subject and a
    KeyUsage of digitalSignature|keyCertSign|cRLSign); ESAPI sends it with the signing
    key authorized through an HMAC session that also encrypts the first command and
    response parameters (reserved, addedToCertificate), so ESAPI's view of the command
    (names, cpHash, rpHash, which parameters are encrypted) must agree with ours.
    libtpms 0.9.2 takes the same session for CertifyX509."""
    out = tmp_path / "partial.der"
    subprocess.run(["tpm2_certifyX509certutil", "-o", str(out), "-d", "30",
                    "-i", "C=US;O=org;CN=ca", "-s", "C=US;CN=key"],
                   check=True, capture_output=True, timeout=30)
    request = out.read_bytes()
    signer = esapi.create_primary(None, TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha256:null", objectAttributes=SIGN_KEY))[0]
    subject_key = p256_key()
    pem = subject_key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    subject = esapi.load_external(TPM2B_PUBLIC.from_pem(pem), TPM2B_SENSITIVE.from_pem(pem),
                                  ESYS_TR.NULL)
    session = esapi.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC,
        TPMT_SYM_DEF(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128),
                     mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB)),
        TPM2_ALG.SHA256)
    esapi.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.ENCRYPT
                                | TPMA_SESSION.DECRYPT)
    added, digest, signature = esapi.certify_x509(
        subject, signer, TPM2B_MAX_BUFFER(request),
        session1=ESYS_TR.PASSWORD, session2=session)
    cert = assemble(request, bytes(added), signature)
    assert hashlib.sha256(cert.tbs_certificate_bytes).digest() == bytes(digest)
    assert spki(cert) == spki(subject_key)
    point = esapi.read_public(signer)[0].publicArea.unique.ecc
    signer_key = ec.EllipticCurvePublicNumbers(int.from_bytes(bytes(point.x), "big"),
                                               int.from_bytes(bytes(point.y), "big"),
                                               ec.SECP256R1()).public_key()
    signer_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_cert_sign and usage.crl_sign


# ---- whatever DER arrives, a well-formed answer ------------------------------------------
_FUZZ = TPM()
startup(_FUZZ)
_FUZZ_OBJ, _FUZZ_SIGNER = load_external(_FUZZ, p256_key()), load_external(_FUZZ, p256_key())
_GOOD = partial(extension(OID_TPMA_OBJECT, tlv(0x03, b"\x00" + struct.pack(">I", 0x60040))),
                key_usage(digital_signature=True, data_encipherment=True))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 255)), max_size=4),
       st.integers(0, len(_GOOD)))
def test_mangled_requests_get_clean_answers(edits: list[tuple[int, int]], cut: int) -> None:
    """Octets of a good request overwritten and its tail cut: the answer is a success
    or one of the codes a malformed request earns, never a crash."""
    unchanged = certify_x509(_FUZZ_OBJ, _FUZZ_SIGNER, _GOOD, ECDSA_SHA256)
    assert rc(_FUZZ.execute(unchanged)) == 0
    request = bytearray(_GOOD)
    for at, value in edits:
        request[at] = value
    r = _FUZZ.execute(certify_x509(_FUZZ_OBJ, _FUZZ_SIGNER, bytes(request[:cut]),
                                   ECDSA_SHA256))
    assert rc(r) in (0, 0x3C4, 0x3D5, 0x282), hex(rc(r))
    if rc(r) == 0:
        added, digest, _ = parse_response(r)
        assert len(elements(added)) == 4 and len(digest) == 32
