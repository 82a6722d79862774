"""DomS0's callers CA: the TLS material that turns a gRPC caller into a principal.

``STATE_DIR/tls/`` holds a CA for DomS0's callers (``ca.pem``, ``ca.key`` 0600) and
DomS0's own server certificate from it (``server.pem``, ``server.key`` 0600), all
ECDSA P-384. The server certificate names 127.0.0.1, ::1, localhost and the host
name. A client certificate names one principal twice: as the SAN URI
``urn:vtpm-stack:principal:<kind>:<name>`` (the authoritative one) and as its CN.

Certificates the Unix-socket relay mints in memory for a local peer also carry
``urn:vtpm-stack:unix-peer:<uid>:<gid>:<pid>``, so that the server can say which
local user called (and, for an unmapped one, whom to map).

This module never replaces existing material: a new CA would orphan every client
certificate already issued.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vtpm_manager.durable import atomic_write
from vtpm_manager.migration.hostcert import cert_pem, key_pem, key_usage, utc_now

from .principal import ANONYMOUS, Principal, parse_principal

TLS_DIR: Final = "tls"
CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca.key"
SERVER_CERT: Final = "server.pem"
SERVER_KEY: Final = "server.key"
CLIENT_CERT: Final = "client.pem"
CLIENT_KEY: Final = "client.key"

PRINCIPAL_URI: Final = "urn:vtpm-stack:principal:"
UNIX_PEER_URI: Final = "urn:vtpm-stack:unix-peer:"
ANONYMOUS_URI: Final = PRINCIPAL_URI + "anonymous"

CA_YEARS: Final = 10
SERVER_DAYS: Final = 825
CLIENT_DAYS: Final = 397
_CURVE: Final = ec.SECP384R1


class IdentityError(Exception):
    """TLS material is missing or unusable, or a certificate names no principal."""


@dataclass(frozen=True)
class UnixPeer:
    """The SO_PEERCRED credentials of a caller on DomS0's Unix socket."""

    uid: int
    gid: int
    pid: int

    def __str__(self) -> str:
        return f"unix uid {self.uid} gid {self.gid} pid {self.pid}"


@dataclass(frozen=True)
class CallersCA:
    """The callers CA's certificate and key, loaded from ``STATE_DIR/tls``."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def load(cls, state_dir: Path) -> CallersCA:
        folder = tls_dir(state_dir)
        try:
            cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
            key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), None)
        except FileNotFoundError:
            raise IdentityError(f"no callers CA in {folder}; run `doms0 init --state-dir "
                                f"{state_dir}` (or start doms0 serve once)") from None
        except (OSError, ValueError) as exc:
            raise IdentityError(f"cannot load the callers CA in {folder}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"{folder / CA_KEY} is not an ECDSA key")
        return cls(cert, key)

    def issue(self, principal: Principal, public_key: ec.EllipticCurvePublicKey, *,
              lifetime: datetime.timedelta = datetime.timedelta(days=CLIENT_DAYS),
              unix_peer: UnixPeer | None = None) -> x509.Certificate:
        """A client certificate naming ``principal`` (``ANONYMOUS`` only with a Unix
        peer: the relay's way to say who called without a mapping)."""
        if principal == ANONYMOUS or principal.kind == "anonymous":
            if unix_peer is None:
                raise IdentityError("an anonymous certificate is minted only by the "
                                    "Unix-socket relay")
            uri, common_name = ANONYMOUS_URI, "anonymous"
        else:
            uri, common_name = PRINCIPAL_URI + str(principal), str(principal)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
        if unix_peer is not None:
            names.append(x509.UniformResourceIdentifier(
                f"{UNIX_PEER_URI}{unix_peer.uid}:{unix_peer.gid}:{unix_peer.pid}"))
        now = utc_now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        return builder.sign(self.key, hashes.SHA384())


def tls_dir(state_dir: Path) -> Path:
    return state_dir / TLS_DIR


def ensure_tls(state_dir: Path, host_name: str = "") -> bool:
    """Create the callers CA and the server certificate if absent; never replace
    either. Returns whether anything was created."""
    folder = tls_dir(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = False
    if not (folder / CA_CERT).exists():
        if (folder / CA_KEY).exists():
            raise IdentityError(f"{folder / CA_KEY} exists without {CA_CERT}; restore "
                                f"{CA_CERT} or remove both to start a new callers CA")
        key = ec.generate_private_key(_CURVE())
        cert = _ca_certificate(key, host_name or socket.gethostname())
        atomic_write(folder / CA_KEY, key_pem(key), mode=0o600)
        atomic_write(folder / CA_CERT, cert_pem(cert), mode=0o644)
        created = True
    if not (folder / SERVER_CERT).exists() or not (folder / SERVER_KEY).exists():
        ca = CallersCA.load(state_dir)
        key = ec.generate_private_key(_CURVE())
        cert = _server_certificate(ca, key, host_name)
        atomic_write(folder / SERVER_KEY, key_pem(key), mode=0o600)
        atomic_write(folder / SERVER_CERT, cert_pem(cert), mode=0o644)
        created = True
    return created


@dataclass(frozen=True)
class ServerTls:
    """What DomS0's TLS listeners need: its key and certificate, the callers CA."""

    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    ca: CallersCA

    @classmethod
    def load(cls, state_dir: Path) -> ServerTls:
        folder = tls_dir(state_dir)
        ca = CallersCA.load(state_dir)
        try:
            return cls((folder / SERVER_KEY).read_bytes(), (folder / SERVER_CERT).read_bytes(),
                       ca.pem, ca)
        except OSError as exc:
            raise IdentityError(f"cannot load DomS0's server certificate: {exc}") from None


def issue_client(state_dir: Path, principal: Principal, out_dir: Path) -> tuple[Path, Path]:
    """Issue a client certificate for ``principal`` into ``out_dir``: ``client.pem``,
    ``client.key`` (0600) and a copy of the CA certificate ``ca.pem`` (to verify
    DomS0 with). Returns the certificate's and the key's paths."""
    ca = CallersCA.load(state_dir)
    key = ec.generate_private_key(_CURVE())
    cert = ca.issue(principal, key.public_key())
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / CLIENT_CERT, out_dir / CLIENT_KEY
    atomic_write(key_path, key_pem(key), mode=0o600)
    atomic_write(cert_path, cert_pem(cert), mode=0o644)
    atomic_write(out_dir / CA_CERT, ca.pem, mode=0o644)
    return cert_path, key_path


def principal_from_certificate(cert_pem: bytes | str, ca: CallersCA | None = None,
                               *, via: str = "tls") -> Principal:
    """The principal a client certificate names. gRPC verified the chain already
    (require_client_auth); this still refuses anything but exactly one well-formed
    principal URI whose CN agrees, and checks the issuer's signature when ``ca`` is
    given. An anonymous certificate (from the relay) gives ``ANONYMOUS``."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise IdentityError(f"not a certificate: {exc}") from None
    if ca is not None:
        if cert.issuer != ca.certificate.subject:
            raise IdentityError("the certificate is not from DomS0's callers CA")
        try:
            cert.verify_directly_issued_by(ca.certificate)
        except (ValueError, TypeError, InvalidSignature):
            raise IdentityError("the certificate is not from DomS0's callers CA") from None
    uris = [uri for uri in _san_uris(cert) if uri.startswith(PRINCIPAL_URI)]
    if len(uris) != 1:
        raise IdentityError(f"the certificate names {len(uris)} principals, not one")
    text = uris[0][len(PRINCIPAL_URI):]
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(common) != 1 or common[0].value != text:
        raise IdentityError("the certificate's CN differs from its principal URI")
    if text == "anonymous":
        return ANONYMOUS
    try:
        return parse_principal(text, via)
    except ValueError as exc:
        raise IdentityError(str(exc)) from None


def unix_peer_from_certificate(cert_pem: bytes | str) -> UnixPeer | None:
    """The local peer a relay-minted certificate names, if it names one."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    cert = x509.load_pem_x509_certificate(data)
    for uri in _san_uris(cert):
        if uri.startswith(UNIX_PEER_URI):
            fields = uri[len(UNIX_PEER_URI):].split(":")
            if len(fields) != 3 or not all(f.isdigit() for f in fields):
                raise IdentityError(f"malformed Unix peer URI {uri!r}")
            return UnixPeer(int(fields[0]), int(fields[1]), int(fields[2]))
    return None


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def _ca_certificate(key: ec.EllipticCurvePrivateKey, host: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vtpm-stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"DomS0 callers CA {host}")])
    now = utc_now()
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA384())
    )


def _server_certificate(ca: CallersCA, key: ec.EllipticCurvePrivateKey,
                        host_name: str) -> x509.Certificate:
    hosts = dict.fromkeys(h for h in ("localhost", host_name, socket.gethostname()) if h)
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    now = utc_now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                    host_name or socket.gethostname())]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA384())
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(_CURVE())


def private_dir(path: Path) -> Path:
    """``path`` as a folder only DomS0's user may enter (0700), made if absent."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
