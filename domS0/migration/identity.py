"""This host's identity among DomS0 hosts: its certificate and key from the hosts CA,
and the CA certificates it trusts for peers. Both directions of a migration run over
mutual TLS with these, and the source signs its packages with the same key, so a
package is tied to the host the TLS session authenticated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from vtpm_manager.migration.hostcert import (
    host_name_of,
    load_cert_pem,
    load_certs_pem,
    load_key_pem,
)

CONNECT_TIMEOUT = 10.0


class IdentityError(Exception):
    """The TLS material is missing or unusable."""


@dataclass(frozen=True)
class HostIdentity:
    certificate: x509.Certificate
    certificate_pem: bytes
    key: ec.EllipticCurvePrivateKey
    key_pem: bytes
    ca_certificates: tuple[x509.Certificate, ...]
    ca_pem: bytes

    @property
    def host_name(self) -> str:
        return host_name_of(self.certificate)

    @classmethod
    def load(cls, cert: Path, key: Path, ca: Path) -> HostIdentity:
        try:
            cert_pem, key_pem, ca_pem = cert.read_bytes(), key.read_bytes(), ca.read_bytes()
            return cls(load_cert_pem(cert_pem), cert_pem, load_key_pem(key_pem), key_pem,
                       tuple(load_certs_pem(ca_pem)), ca_pem)
        except (OSError, ValueError) as exc:
            raise IdentityError(f"cannot load the host TLS material: {exc}") from None

    def server_credentials(self) -> grpc.ServerCredentials:
        """Serve TLS and require a client certificate from a trusted hosts CA."""
        return grpc.ssl_server_credentials([(self.key_pem, self.certificate_pem)],
                                           root_certificates=self.ca_pem,
                                           require_client_auth=True)

    def channel(self, address: str) -> grpc.Channel:
        """A mutual-TLS channel to a peer's migration listener (``HOST:PORT``)."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem,
            certificate_chain=self.certificate_pem)
        return grpc.secure_channel(address, credentials)


def peer_certificate(context: grpc.ServicerContext) -> x509.Certificate:
    """The client certificate gRPC verified for this call (mutual TLS)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        raise IdentityError("the peer presented no certificate")
    return load_cert_pem(pems[0])
