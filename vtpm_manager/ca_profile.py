"""What the vTPM CA's certificates carry: the EK, platform and AK certificate
profiles, the TCG OIDs they use, and the names and DER that go into them.

The content follows the TCG EK Credential Profile for TPM Family 2.0 (sections 3.2
and 3.3) as far as ``cryptography`` can build it. Every function here returns an
unsigned :class:`x509.CertificateBuilder`; :class:`vtpm_manager.ca.VtpmCA` owns the
key that signs it. Import these names from :mod:`vtpm_manager.ca`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

#: RFC 5280 4.1.2.5: "no well-defined expiration date" (what swtpm's ``--days -1`` writes).
NO_EXPIRY: Final = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)

# TCG OIDs (TCG EK Credential Profile 2.x, section 5; TCG Platform Certificate Profile).
OID_TPM_MANUFACTURER: Final = ObjectIdentifier("2.23.133.2.1")
OID_TPM_MODEL: Final = ObjectIdentifier("2.23.133.2.2")
OID_TPM_VERSION: Final = ObjectIdentifier("2.23.133.2.3")
OID_TPM_SPECIFICATION: Final = ObjectIdentifier("2.23.133.2.16")
OID_PLATFORM_MANUFACTURER: Final = ObjectIdentifier("2.23.133.5.1.1")
OID_PLATFORM_MODEL: Final = ObjectIdentifier("2.23.133.5.1.4")
OID_PLATFORM_VERSION: Final = ObjectIdentifier("2.23.133.5.1.5")
OID_KP_EK_CERTIFICATE: Final = ObjectIdentifier("2.23.133.8.1")
OID_KP_PLATFORM_CERTIFICATE: Final = ObjectIdentifier("2.23.133.8.2")
#: tcg-kp-AIKCertificate: TCG's EKU for attestation-key certificates.
OID_KP_AIK_CERTIFICATE: Final = ObjectIdentifier("2.23.133.8.3")
_OID_SUBJECT_DIRECTORY_ATTRIBUTES: Final = ObjectIdentifier("2.5.29.9")
#: Our certificate policy. We own no enterprise arc, so it is a UUID OID (X.667:
#: 2.25.<uuid as integer>), unique without registration. Its notice tells a relying
#: party the truth: the key lives in a virtual TPM, not in a TPM chip.
#: (UUID 7c291ce0-202c-41fe-a9b1-d0419771f1f8)
OID_VTPM_EK_POLICY: Final = ObjectIdentifier("2.25.165037741313063826316693567876606587384")


class CAError(Exception):
    """The CA cannot do what was asked; the message says what to fix."""


@dataclass(frozen=True)
class VtpmIdentity:
    """Who a vTPM is: the names that go into its certificates."""

    uuid: str
    name: str
    host: str


@dataclass(frozen=True)
class TpmInfo:
    """What the TPM says about itself (TPM2_GetCapability, TPM_PT_* fixed properties),
    in the forms the EK Credential Profile wants in the certificate."""

    manufacturer: str = "id:00000000"   # "id:" + TPM_PT_MANUFACTURER as 8 hex digits
    model: str = ""                     # TPM_PT_VENDOR_STRING_1..4
    version: str = "id:00000000"        # "id:" + TPM_PT_FIRMWARE_VERSION_1
    spec_family: str = "2.0"
    spec_level: int = 0
    spec_revision: int = 0


@dataclass(frozen=True)
class PlatformInfo:
    """The platform a platform certificate describes (the domain that owns the vTPM)."""

    manufacturer: str = "vtpm-stack"
    model: str = "DomS0 vTPM"
    version: str = "1"


@dataclass(frozen=True)
class Issuer:
    """What an issued certificate says about the CA: its subject and key identifier."""

    name: x509.Name
    key_identifier: x509.AuthorityKeyIdentifier


EkPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


# -- the three certificate profiles --------------------------------------------------


def ek_certificate_builder(issuer: Issuer, public_key: EkPublicKey, identity: VtpmIdentity,
                           tpm: TpmInfo, not_after: dt.datetime) -> x509.CertificateBuilder:
    """An EK certificate (TCG EK Credential Profile 2.x, 3.2).

    The profile's subject is empty with a critical subjectAltName naming the TPM;
    we follow it. The vTPM's own identity is in the same SAN: a ``urn:uuid:`` URI
    and a directoryName ``CN=<vTPM name>,DC=<host labels>`` (RFC 4519 DC form for
    the DomS0 host), so a verifier can tell which vTPM on which host holds the EK.
    """
    san = x509.SubjectAlternativeName([
        x509.DirectoryName(_tpm_directory_name(tpm)),
        x509.UniformResourceIdentifier(f"urn:uuid:{identity.uuid}"),
        x509.DirectoryName(_vtpm_name(identity)),
    ])
    return (
        end_entity_builder(issuer, public_key, x509.Name([]), not_after)
        .add_extension(san, critical=True)
        .add_extension(x509.ExtendedKeyUsage([OID_KP_EK_CERTIFICATE]), critical=False)
        .add_extension(x509.UnrecognizedExtension(
            _OID_SUBJECT_DIRECTORY_ATTRIBUTES, tpm_specification_attributes(tpm)),
            critical=False)
        .add_extension(_policies(identity), critical=False)
    )


def platform_certificate_builder(issuer: Issuer, ek_public_key: EkPublicKey,
                                 identity: VtpmIdentity, platform: PlatformInfo,
                                 not_after: dt.datetime) -> x509.CertificateBuilder:
    """A platform certificate for the domain that owns the vTPM.

    The TCG Platform Certificate Profile defines an *attribute* certificate
    (RFC 5755) whose holder points at the EK certificate; ``cryptography`` cannot
    build those. Like swtpm, we issue an X.509 public-key certificate instead: it
    binds the platform's name and attributes (TCG platform OIDs in the SAN, EKU
    tcg-kp-PlatformCertificate) to the EK's public key. Tools that expect an
    attribute certificate at 0x01c08000 will not parse it.
    """
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, platform.manufacturer),
        x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
    ])
    san = x509.SubjectAlternativeName([
        x509.DirectoryName(x509.Name([
            x509.RelativeDistinguishedName([
                x509.NameAttribute(OID_PLATFORM_MANUFACTURER, platform.manufacturer),
                x509.NameAttribute(OID_PLATFORM_MODEL, platform.model),
                x509.NameAttribute(OID_PLATFORM_VERSION, platform.version),
            ]),
        ])),
        x509.UniformResourceIdentifier(f"urn:uuid:{identity.uuid}"),
        x509.DirectoryName(_vtpm_name(identity)),
    ])
    return (
        end_entity_builder(issuer, ek_public_key, subject, not_after)
        .add_extension(san, critical=True)
        .add_extension(x509.ExtendedKeyUsage([OID_KP_PLATFORM_CERTIFICATE]),
                       critical=False)
        .add_extension(_policies(identity), critical=False)
    )


def ak_certificate_builder(issuer: Issuer, public_key: EkPublicKey, identity: VtpmIdentity,
                           not_after: dt.datetime) -> x509.CertificateBuilder:
    """An attestation-key certificate (see :meth:`vtpm_manager.ca.VtpmCA.issue_ak_certificate`
    for who may ask for one).

    Unlike an EK certificate the subject is not empty: verifiers (Keylime, openssl
    users) look for the vTPM there, so it is ``DC=<host labels>, O=vtpm-stack,
    CN=<vTPM UUID>``; the SAN repeats the UUID as a ``urn:uuid:`` URI and the vTPM's
    name. digitalSignature only, EKU tcg-kp-AIKCertificate (2.23.133.8.3).
    """
    subject = x509.Name([
        *_host_components(identity.host),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vtpm-stack"),
        x509.NameAttribute(NameOID.COMMON_NAME, identity.uuid),
    ])
    san = x509.SubjectAlternativeName([
        x509.UniformResourceIdentifier(f"urn:uuid:{identity.uuid}"),
        x509.DirectoryName(_vtpm_name(identity)),
    ])
    return (
        end_entity_builder(issuer, public_key, subject, not_after,
                           usage=x509.KeyUsage(
                               digital_signature=True, content_commitment=False,
                               key_encipherment=False, data_encipherment=False,
                               key_agreement=False, key_cert_sign=False, crl_sign=False,
                               encipher_only=False, decipher_only=False))
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([OID_KP_AIK_CERTIFICATE]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                       critical=False)
        .add_extension(_policies(identity), critical=False)
    )


def end_entity_builder(issuer: Issuer, public_key: EkPublicKey, subject: x509.Name,
                       not_after: dt.datetime, *,
                       usage: x509.KeyUsage | None = None) -> x509.CertificateBuilder:
    """What every certificate we issue shares: v3, random serial, our issuer and
    AKI, CA:FALSE, and by default the key usage an EK can have (it cannot sign);
    ``usage`` overrides that for keys that sign (AKs)."""
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CAError(f"cannot certify a {type(public_key).__name__}: EKs are RSA or ECC")
    if usage is None:
        usage = (_key_usage(key_encipherment=True)
                 if isinstance(public_key, rsa.RSAPublicKey)
                 else _key_usage(key_agreement=True))
    return (
        x509.CertificateBuilder()
        .issuer_name(issuer.name)
        .subject_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(issuer.key_identifier, critical=False)
    )


# -- names and extensions ------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _key_usage(*, key_encipherment: bool = False, key_agreement: bool = False,
               key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False,
        key_encipherment=key_encipherment, data_encipherment=False,
        key_agreement=key_agreement, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


def _host_components(host: str) -> list[x509.NameAttribute]:
    """``a.example.org`` as DC=org, DC=example, DC=a (most significant first, RFC 4519)."""
    labels = [label for label in host.split(".") if label]
    if not labels or not host.isascii():
        raise CAError(f"host name {host!r} must be a non-empty ASCII DNS name")
    return [x509.NameAttribute(NameOID.DOMAIN_COMPONENT, label) for label in reversed(labels)]


def _vtpm_name(identity: VtpmIdentity) -> x509.Name:
    return x509.Name([
        *_host_components(identity.host),
        x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
    ])


def _tpm_directory_name(tpm: TpmInfo) -> x509.Name:
    """One RDN holding manufacturer, model and version (EK Credential Profile 3.2.9)."""
    return x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(OID_TPM_MANUFACTURER, tpm.manufacturer),
        x509.NameAttribute(OID_TPM_MODEL, tpm.model or "unknown"),
        x509.NameAttribute(OID_TPM_VERSION, tpm.version),
    ])])


def _policies(identity: VtpmIdentity) -> x509.CertificatePolicies:
    notice = x509.UserNotice(None, f"Key held by virtual TPM {identity.uuid} on DomS0 host "
                                   f"{identity.host}; not a hardware TPM")
    return x509.CertificatePolicies([x509.PolicyInformation(OID_VTPM_EK_POLICY, [notice])])


# -- DER for the one extension cryptography cannot build -----------------------------


def tpm_specification_attributes(tpm: TpmInfo) -> bytes:
    """subjectDirectoryAttributes holding tcg-at-tpmSpecification (EK Credential
    Profile 3.2.11)::

        SEQUENCE OF Attribute { tpmSpecification, SET { SEQUENCE {
            family UTF8String, level INTEGER, revision INTEGER } } }
    """
    spec = _der(0x30, _der(0x0C, tpm.spec_family.encode()) + _der_int(tpm.spec_level)
                + _der_int(tpm.spec_revision))
    attribute = _der(0x30, _der_oid(OID_TPM_SPECIFICATION.dotted_string) + _der(0x31, spec))
    return _der(0x30, attribute)


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _der_int(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative INTEGER not needed here")
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))
