"""The vTPM certificate authority: DomS0's CA key, its certificate, and the EK and
platform certificates it issues to every vTPM it manufactures.

Files, in ``STATE/ca/``:

- ``ca.key.sealed`` — the CA's private key (PKCS#8 DER) sealed under DomS0's KEK
  (``magic | u16 version | KeyEncryptionKey.wrap(key, owner)``). The KEK's AES-GCM
  tag covers it, so a flipped bit, or a file sealed by another DomS0's KEK, is
  refused by name (:class:`CAKeyTampered`), never misread.
- ``ca.pem`` — the CA certificate: self-signed when first created, or the one an
  operator's CA signed from :meth:`VtpmCA.csr` and that :meth:`VtpmCA.import_certificate`
  accepted because it matches the key. It is public: at load it must match the key,
  and a self-signed one must verify; beyond that its authority comes from the
  relying party's trust store, not from this file.
- ``ca-chain.pem`` — optional: the operator's intermediates and root, as given.

The key is ECDSA P-384 by default: signatures are ~100 bytes (an RSA-3072 one is
384), so EK certificates stay small in the vTPM's NV; signing costs ~1 ms where
RSA-3072 costs several; and P-384 (~192-bit) is at least as strong as the EKs it
vouches for (RSA-2048, P-256). ``key_type="rsa-3072"`` exists for relying parties
that only accept RSA-signed EK certificates.

What the certificates carry follows the TCG EK Credential Profile for TPM Family 2.0
(sections 3.2 and 3.3) as far as ``cryptography`` can build it; :mod:`vtpm_manager.ca_profile`
builds them (its public names are importable from here too) and
:mod:`vtpm_manager.manufacture` puts them into the vTPM's NV.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ca_profile import (
    NO_EXPIRY,
    OID_KP_AIK_CERTIFICATE,
    OID_KP_EK_CERTIFICATE,
    OID_KP_PLATFORM_CERTIFICATE,
    OID_PLATFORM_MANUFACTURER,
    OID_PLATFORM_MODEL,
    OID_PLATFORM_VERSION,
    OID_TPM_MANUFACTURER,
    OID_TPM_MODEL,
    OID_TPM_SPECIFICATION,
    OID_TPM_VERSION,
    OID_VTPM_EK_POLICY,
    CAError,
    EkPublicKey,
    Issuer,
    PlatformInfo,
    TpmInfo,
    VtpmIdentity,
    _der_int,  # noqa: F401  (tests reach the DER helpers through this module)
    _host_components,
    _key_usage,
    _now,
    ak_certificate_builder,
    ek_certificate_builder,
    platform_certificate_builder,
    tpm_specification_attributes,
)
from .durable import atomic_write
from .kek import KeyEncryptionKey, KeyUnwrapError

log = logging.getLogger(__name__)

# The certificate profile's names are part of this module's interface.
__all__ = [
    "CA_DIR",
    "CERT_FILE",
    "CHAIN_FILE",
    "KEY_FILE",
    "KEY_TYPES",
    "NO_EXPIRY",
    "OID_KP_AIK_CERTIFICATE",
    "OID_KP_EK_CERTIFICATE",
    "OID_KP_PLATFORM_CERTIFICATE",
    "OID_PLATFORM_MANUFACTURER",
    "OID_PLATFORM_MODEL",
    "OID_PLATFORM_VERSION",
    "OID_TPM_MANUFACTURER",
    "OID_TPM_MODEL",
    "OID_TPM_SPECIFICATION",
    "OID_TPM_VERSION",
    "OID_VTPM_EK_POLICY",
    "CACertificateMismatch",
    "CAError",
    "CAKeyTampered",
    "EkPublicKey",
    "PlatformInfo",
    "PrivateKey",
    "TpmInfo",
    "VtpmCA",
    "VtpmIdentity",
    "tpm_specification_attributes",
]

CA_DIR: Final = "ca"
KEY_FILE: Final = "ca.key.sealed"
CERT_FILE: Final = "ca.pem"
CHAIN_FILE: Final = "ca-chain.pem"

_KEY_MAGIC: Final = b"VTPMCAK\x00"
_KEY_VERSION: Final = 1
_KEY_PREFIX: Final = struct.Struct(">8sH")
#: Bound into the KEK's associated data: a sealed CA key opens only as a CA key.
_KEY_OWNER: Final = "vtpm-ca private key v1"

KEY_TYPES: Final = ("ecdsa-p384", "rsa-3072")

class CAKeyTampered(CAError):
    """``ca.key.sealed`` failed authentication (altered, truncated, or another KEK's)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"vTPM CA key {path} refused: {reason}")
        self.path = path


class CACertificateMismatch(CAError):
    """A CA certificate does not belong to the CA key, or cannot sign certificates."""


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class VtpmCA:
    """DomS0's vTPM CA. Open it with :meth:`open`; it is safe to share between threads
    (issuing only reads the key and certificate)."""

    def __init__(self, folder: Path, key: PrivateKey, certificate: x509.Certificate) -> None:
        self.folder = folder
        self._key = key
        self._certificate = certificate

    # -- opening and creating --------------------------------------------------------

    @classmethod
    def open(
        cls,
        state_dir: Path,
        kek: KeyEncryptionKey,
        host: str,
        *,
        create: bool = True,
        key_type: str = "ecdsa-p384",
    ) -> VtpmCA:
        """Load the CA from ``state_dir/ca``; with ``create``, make key and self-signed
        certificate on first use. ``host`` names this DomS0 in a new CA's subject."""
        folder = state_dir / CA_DIR
        key_path, cert_path = folder / KEY_FILE, folder / CERT_FILE
        if not key_path.exists():
            if cert_path.exists():
                raise CAError(
                    f"{cert_path} exists but its key {key_path} is missing; restore the "
                    "key from backup, or remove the certificate to create a new CA"
                )
            if not create:
                raise CAError(f"no vTPM CA in {folder}; run DomS0 once to create one")
            return cls._create(folder, kek, host, key_type)
        key = _unseal_key(key_path, kek)
        if not cert_path.exists():
            log.warning("vTPM CA certificate %s is missing; issuing a new self-signed one "
                        "(import the operator-signed certificate again if you had one)",
                        cert_path)
            certificate = _self_signed(key, _ca_subject(host))
            atomic_write(cert_path, certificate.public_bytes(serialization.Encoding.PEM),
                         mode=0o644)
        else:
            certificate = _load_first_certificate(cert_path.read_bytes(), str(cert_path))
        _check_matches(certificate, key, str(cert_path))
        return cls(folder, key, certificate)

    @classmethod
    def _create(cls, folder: Path, kek: KeyEncryptionKey, host: str, key_type: str) -> VtpmCA:
        if key_type not in KEY_TYPES:
            raise CAError(f"unknown CA key type {key_type!r}; choose one of: "
                          f"{', '.join(KEY_TYPES)}")
        key: PrivateKey
        if key_type == "rsa-3072":
            key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        else:
            key = ec.generate_private_key(ec.SECP384R1())
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _seal_key(folder / KEY_FILE, key, kek)
        certificate = _self_signed(key, _ca_subject(host))
        atomic_write(folder / CERT_FILE, certificate.public_bytes(serialization.Encoding.PEM),
                     mode=0o644)
        log.info("created vTPM CA %s (%s) in %s", certificate.subject.rfc4514_string(),
                 key_type, folder)
        return cls(folder, key, certificate)

    # -- the CA's own certificate ----------------------------------------------------

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    def certificate_pem(self) -> bytes:
        """The CA certificate (what ``openssl verify -CAfile`` needs, when self-signed)."""
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self) -> bytes:
        """The operator's chain above this CA as imported (empty when self-signed)."""
        path = self.folder / CHAIN_FILE
        return path.read_bytes() if path.exists() else b""

    def csr(self) -> bytes:
        """A PEM CSR for an operator's CA to sign: same subject, asking for a CA that
        may sign end-entity certificates only (pathlen 0)."""
        builder = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(self._certificate.subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
        )
        request = builder.sign(self._key, _hash_for(self._key))
        return request.public_bytes(serialization.Encoding.PEM)

    def import_certificate(self, pem: bytes) -> None:
        """Replace the CA certificate by ``pem``'s first certificate (signed by an
        operator's CA from :meth:`csr`); any further certificates are kept as the chain.

        Refused (:class:`CACertificateMismatch`) unless it certifies this CA's key and
        may sign certificates; the old certificate stays in place then.
        """
        certificates = _load_certificates(pem, "the imported PEM")
        leaf, chain = certificates[0], certificates[1:]
        _check_matches(leaf, self._key, "the imported certificate")
        atomic_write(self.folder / CERT_FILE, leaf.public_bytes(serialization.Encoding.PEM),
                     mode=0o644)
        chain_path = self.folder / CHAIN_FILE
        if chain:
            atomic_write(chain_path, b"".join(c.public_bytes(serialization.Encoding.PEM)
                                              for c in chain), mode=0o644)
        else:
            chain_path.unlink(missing_ok=True)
        self._certificate = leaf
        log.info("vTPM CA certificate replaced: %s issued by %s",
                 leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string())

    # -- issuing ---------------------------------------------------------------------

    def issue_ek_certificate(
        self,
        public_key: EkPublicKey,
        identity: VtpmIdentity,
        tpm: TpmInfo,
        *,
        not_after: dt.datetime = NO_EXPIRY,
    ) -> x509.Certificate:
        """An EK certificate (TCG EK Credential Profile 2.x, 3.2), as
        :func:`~vtpm_manager.ca_profile.ek_certificate_builder` describes it."""
        builder = ek_certificate_builder(self._issuer(), public_key, identity, tpm, not_after)
        return builder.sign(self._key, _hash_for(self._key))

    def issue_platform_certificate(
        self,
        ek_public_key: EkPublicKey,
        identity: VtpmIdentity,
        platform: PlatformInfo | None = None,
        *,
        not_after: dt.datetime = NO_EXPIRY,
    ) -> x509.Certificate:
        """A platform certificate for the domain that owns the vTPM: an X.509
        public-key certificate, not the TCG attribute certificate
        (:func:`~vtpm_manager.ca_profile.platform_certificate_builder` says why)."""
        platform = platform or PlatformInfo()
        builder = platform_certificate_builder(self._issuer(), ek_public_key, identity,
                                               platform, not_after)
        return builder.sign(self._key, _hash_for(self._key))

    def issue_ak_certificate(
        self,
        public_key: EkPublicKey,
        identity: VtpmIdentity,
        *,
        not_after: dt.datetime = NO_EXPIRY,
    ) -> x509.Certificate:
        """An attestation-key certificate, for a key the caller has proven to be a
        restricted signing key on the same vTPM as a certified EK (MakeCredential /
        ActivateCredential, :mod:`vtpm_manager.attestation.enroll`); the CA itself
        cannot check that, so only enrollment should call this. What it carries:
        :func:`~vtpm_manager.ca_profile.ak_certificate_builder`.
        """
        builder = ak_certificate_builder(self._issuer(), public_key, identity, not_after)
        return builder.sign(self._key, _hash_for(self._key))

    def _issuer(self) -> Issuer:
        return Issuer(self._certificate.subject, self._authority_key_identifier())

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self._certificate.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# -- the sealed key ------------------------------------------------------------------


def _seal_key(path: Path, key: PrivateKey, kek: KeyEncryptionKey) -> None:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    blob = _KEY_PREFIX.pack(_KEY_MAGIC, _KEY_VERSION) + kek.wrap(der, _KEY_OWNER)
    atomic_write(path, blob, mode=0o600)


def _unseal_key(path: Path, kek: KeyEncryptionKey) -> PrivateKey:
    blob = path.read_bytes()
    if len(blob) < _KEY_PREFIX.size:
        raise CAKeyTampered(path, "truncated")
    magic, version = _KEY_PREFIX.unpack_from(blob)
    if magic != _KEY_MAGIC:
        raise CAKeyTampered(path, "not a sealed vTPM CA key (bad magic)")
    if version != _KEY_VERSION:
        raise CAKeyTampered(path, f"format version {version}; this DomS0 reads version "
                                  f"{_KEY_VERSION}")
    try:
        der = kek.unwrap(blob[_KEY_PREFIX.size:], _KEY_OWNER)
    except KeyUnwrapError:
        raise CAKeyTampered(path, "authentication failed: altered, or sealed under another "
                                  "DomS0's key-encryption key") from None
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAKeyTampered(path, f"holds a {type(key).__name__}, not an ECDSA or RSA key")
    return key


# -- certificate helpers -------------------------------------------------------------


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _ca_key_usage() -> x509.KeyUsage:
    return _key_usage(key_cert_sign=True, crl_sign=True)


def _ca_subject(host: str) -> x509.Name:
    return x509.Name([
        *_host_components(host),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vtpm-stack"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"DomS0 vTPM CA {host}"),
    ])


def _self_signed(key: PrivateKey, subject: x509.Name) -> x509.Certificate:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .issuer_name(subject)
        .subject_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(NO_EXPIRY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _hash_for(key))
    )


def _load_certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CACertificateMismatch(f"{what} is not a PEM certificate ({exc})") from exc
    if not certificates:
        raise CACertificateMismatch(f"{what} holds no certificate")
    return certificates


def _load_first_certificate(pem: bytes, what: str) -> x509.Certificate:
    return _load_certificates(pem, what)[0]


def _check_matches(certificate: x509.Certificate, key: PrivateKey, what: str) -> None:
    """Refuse a certificate for another key, or one that may not sign certificates."""
    def spki(public: object) -> bytes:
        assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        return public.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    if certificate.issuer == certificate.subject:
        # Self-signed: its own signature is the only integrity check a PEM file has.
        try:
            certificate.verify_directly_issued_by(certificate)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise CACertificateMismatch(f"{what} is altered: its self-signature does not "
                                        "verify") from exc
    if spki(certificate.public_key()) != spki(key.public_key()):
        raise CACertificateMismatch(
            f"{what} certifies another key than this DomS0's vTPM CA key; sign the CSR "
            "from `doms0 ca csr` and import that certificate"
        )
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound as exc:
        raise CACertificateMismatch(f"{what} lacks {exc.oid._name}; it must be a CA "
                                    "certificate (CA:TRUE, keyCertSign)") from exc
    if not constraints.value.ca or not usage.value.key_cert_sign:
        raise CACertificateMismatch(f"{what} is not a CA certificate (needs CA:TRUE and "
                                    "keyUsage keyCertSign)")
    if _has_restrictive_eku(certificate):
        raise CACertificateMismatch(f"{what} has an extendedKeyUsage that excludes EK "
                                    "certificates; ask for a CA certificate without one")


def _has_restrictive_eku(certificate: x509.Certificate) -> bool:
    """OpenSSL checks a CA's EKU against the leaf's purpose only loosely, but a CA EKU
    without tcg-kp-EKCertificate or anyExtendedKeyUsage is a sign of the wrong template."""
    try:
        eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    allowed = {OID_KP_EK_CERTIFICATE, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    return not allowed & set(eku)
