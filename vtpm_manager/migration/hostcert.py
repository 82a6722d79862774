"""Host identities for host-to-host mutual TLS, naming each host's TPM attestation key.

A hosts CA (one per deployment, kept offline or in the operator's hands) issues each
DomS0 host an ECDSA certificate for mTLS. The same certificate names the host TPM's
AK by its TPM Name in a private, non-critical extension, so one trust decision — "this
CA vouches for these hosts" — covers both who the peer is on the wire and which TPM
must sign its migration proof (:func:`.proof.verify_proof` ``trusted_ak_name``).
The extension is non-critical so ordinary TLS stacks, which do not know it, still
accept the certificate; only our verifier reads it.

The source host's package-signing key (:func:`.package.seal_package`) is the private
key of this same certificate, so the destination checks the package against the key
it already authenticated in the TLS handshake.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from .errors import ProofRefused

#: The host AK's TPM Name (nameAlg || H(TPMT_PUBLIC)) as a DER OCTET STRING. An OID of
#: our own without registering an enterprise number: the 2.25 arc takes a UUID as its
#: single component (ITU-T X.667 / RFC 4122), this one generated for vtpm-stack.
AK_NAME_OID: Final = ObjectIdentifier("2.25.262831093016209903052173124963148414201")
CA_DAYS: Final = 3650
HOST_DAYS: Final = 825
#: Issued "from" a little in the past: a peer whose clock runs behind still accepts it.
_BACKDATE: Final = datetime.timedelta(minutes=5)
_CURVES: Final = ("secp256r1", "secp384r1")
_MAX_NAME: Final = 66  # SHA-512 name: 2 + 64 bytes


def create_hosts_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed P-384 CA for host certificates (CA:TRUE, pathlen 0, keyCertSign,
    ten years). The key never needs to be online: hosts get certificates at install."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vtpm-stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = utc_now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, certificate


def issue_host_certificate(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                           host_name: str, public_key: ec.EllipticCurvePublicKey, *,
                           ak_name: bytes | None,
                           addresses: Sequence[str] = ("127.0.0.1",),
                           days: int = HOST_DAYS) -> x509.Certificate:
    """A host's mTLS certificate: CN and DNS SAN ``host_name``, IP SANs ``addresses``,
    serverAuth + clientAuth (every host is both client and server of migration), and
    the host AK's TPM Name when given. The key must be ECDSA P-256 or P-384: it also
    signs migration packages. Default lifetime 825 days (the CA/B ceiling TLS clients
    still honour)."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) \
            or public_key.curve.name not in _CURVES:
        raise ValueError("a host key must be ECDSA P-256 or P-384 (it signs migration "
                         "packages)")
    if not host_name or days <= 0:
        raise ValueError("a host certificate needs a host name and a positive lifetime")
    names: list[x509.GeneralName] = [x509.DNSName(host_name)]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = utc_now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
    )
    if ak_name is not None:
        if not 0 < len(ak_name) <= _MAX_NAME:
            raise ValueError(f"an AK name is 1-{_MAX_NAME} bytes")
        builder = builder.add_extension(
            x509.UnrecognizedExtension(AK_NAME_OID, _der_octet_string(ak_name)),
            critical=False)
    return builder.sign(ca_key, hashes.SHA384())


def host_name_of(cert: x509.Certificate) -> str:
    """The host a certificate was issued to (its one subject CN)."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1 or not isinstance(values[0].value, str) or not values[0].value:
        raise ProofRefused("the host certificate does not name exactly one host (CN)")
    return values[0].value


def ak_name_of(cert: x509.Certificate) -> bytes | None:
    """The host AK's TPM Name the certificate carries, or ``None`` if it names none
    (such a host can be a migration source but never a destination)."""
    try:
        extension = cert.extensions.get_extension_for_oid(AK_NAME_OID)
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise ProofRefused("the host certificate's AK-name extension is malformed")
    return _parse_der_octet_string(value.value)


def verify_host_certificate(cert: x509.Certificate, ca_certs: Sequence[x509.Certificate],
                            *, role: str = "destination",
                            now: datetime.datetime | None = None) -> None:
    """Raise :class:`ProofRefused` unless one of ``ca_certs`` signed ``cert`` and it is
    valid now. ``role`` names the peer in the message ("destination", "source").

    Only direct issuance: host certificates come straight from the hosts CA, so there
    is no chain to build and no intermediate to trust by accident."""
    for ca in ca_certs:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        break
    else:
        raise ProofRefused(f"{role} certificate not issued by a trusted hosts CA")
    moment = now or utc_now()
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise ProofRefused(f"{role} certificate is not valid now (valid "
                           f"{cert.not_valid_before_utc:%Y-%m-%d} to "
                           f"{cert.not_valid_after_utc:%Y-%m-%d})")


# -- PEM forms ------------------------------------------------------------------------

def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: whoever stores it decides how it is protected at rest
    (DomS0 seals it under its KEK; this module writes no files)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key_pem(data: bytes) -> ec.EllipticCurvePrivateKey:
    """An ECDSA P-256/P-384 private key from PEM; ``ValueError`` for anything else."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise ValueError("not an ECDSA P-256 or P-384 private key")
    return key


def load_cert_pem(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def load_certs_pem(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (a trust store of hosts CAs)."""
    return x509.load_pem_x509_certificates(data)


# -- helpers ---------------------------------------------------------------------------

def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def key_usage(*, digital_signature: bool = False,
               key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=key_cert_sign, encipher_only=False, decipher_only=False)


def _der_octet_string(data: bytes) -> bytes:
    """DER OCTET STRING (X.690 8.7, 10.1): short-form length below 128, else 0x81 n."""
    if len(data) < 0x80:
        return b"\x04" + bytes([len(data)]) + data
    if len(data) <= 0xFF:
        return b"\x04\x81" + bytes([len(data)]) + data
    raise ValueError("octet string too long for an AK name")


def _parse_der_octet_string(der: bytes) -> bytes:
    """The inverse of :func:`_der_octet_string`, accepting only its exact (DER) form."""
    if len(der) >= 2 and der[0] == 0x04 and der[1] < 0x80 and len(der) == 2 + der[1]:
        value = der[2:]
    elif len(der) >= 3 and der[:2] == b"\x04\x81" and 0x80 <= der[2] \
            and len(der) == 3 + der[2]:
        value = der[3:]
    else:
        raise ProofRefused("the host certificate's AK-name extension is not a DER OCTET "
                           "STRING")
    if not 0 < len(value) <= _MAX_NAME:
        raise ProofRefused("the host certificate's AK name has an impossible length")
    return value
