"""Opening an authenticated channel to DomS0.

Three ways, matching DomS0's listeners: mutual TLS with a client certificate from
``doms0 issue`` (``--cert/--key/--ca``, or VTPM_CERT/VTPM_KEY/VTPM_CA); a bearer
token on DomS0's ``--insecure-loopback`` listener; nothing at all on its Unix
socket, where the kernel tells DomS0 who connected.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc

DEFAULT_SERVER = "127.0.0.1:7340"
DEFAULT_TOKEN_FILE = Path("/var/lib/doms0/client.token")
PROBE_TIMEOUT = 3.0


class CredentialError(Exception):
    """No usable client credential; the message says where one is looked for."""


def default_server() -> str:
    return os.environ.get("VTPM_SERVER") or DEFAULT_SERVER


def load_token(token_file: str | None = None) -> str:
    """The client token: ``token_file``, else $VTPM_TOKEN, $VTPM_TOKEN_FILE, the default."""
    if token_file is None and os.environ.get("VTPM_TOKEN"):
        return os.environ["VTPM_TOKEN"].strip()
    path = Path(token_file or os.environ.get("VTPM_TOKEN_FILE") or DEFAULT_TOKEN_FILE)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CredentialError(
            f"cannot read the DomS0 client token {path} ({exc.strerror}); pass --token-file "
            "or set VTPM_TOKEN_FILE to STATE_DIR/client.token"
        ) from exc
    if not token:
        raise CredentialError(f"the DomS0 client token file {path} is empty")
    return token


@dataclass(frozen=True)
class ClientTls:
    """A client certificate and key from DomS0's callers CA, and that CA."""

    cert: Path
    key: Path
    ca: Path
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    @classmethod
    def load(cls, cert: str | Path, key: str | Path, ca: str | Path | None = None
             ) -> ClientTls:
        """``ca`` defaults to the ``ca.pem`` beside the certificate (doms0 issue puts
        one there)."""
        cert, key = Path(cert), Path(key)
        ca_path = Path(ca) if ca else cert.parent / "ca.pem"
        pems: list[bytes] = []
        for what, path in (("client certificate", cert), ("client key", key),
                           ("DomS0 CA certificate", ca_path)):
            try:
                pems.append(path.read_bytes())
            except OSError as exc:
                raise CredentialError(f"cannot read the {what} {path} ({exc.strerror})"
                                      ) from None
        return cls(cert, key, ca_path, *pems)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem,
                                            private_key=self.key_pem,
                                            certificate_chain=self.cert_pem)


def load_tls(cert: str | None = None, key: str | None = None,
             ca: str | None = None) -> ClientTls | None:
    """The client certificate the options or $VTPM_CERT/$VTPM_KEY/$VTPM_CA name, if any."""
    cert = cert or os.environ.get("VTPM_CERT") or None
    key = key or os.environ.get("VTPM_KEY") or None
    ca = ca or os.environ.get("VTPM_CA") or None
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise CredentialError("a client certificate needs both --cert and --key (or "
                              "VTPM_CERT and VTPM_KEY)")
    return ClientTls.load(cert, key, ca)


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> _CallDetails:
        metadata = [*list(details.metadata or ()), self._header]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call


def open_channel(server: str, token: str | None = None, *,
                 tls: ClientTls | None = None) -> grpc.Channel:
    """A channel to DomS0 at ``server`` (HOST:PORT or unix:PATH).

    With ``tls``: mutual TLS (TCP only; a Unix socket needs no credential). Otherwise
    plain, presenting ``token`` if given (the insecure loopback listener needs one).
    """
    if tls is not None and not server.startswith("unix:"):
        return grpc.secure_channel(server, tls.credentials())
    channel = grpc.insecure_channel(server)
    if token is None:
        return channel
    return grpc.intercept_channel(channel, _BearerInterceptor(token))


def connect(server: str, token_file: str | None = None, cert: str | None = None,
            key: str | None = None, ca: str | None = None) -> grpc.Channel:
    """vtpmctl's channel: a client certificate if one is given (options or
    environment), else nothing for a Unix socket, else a bearer token. A TCP DomS0
    that wants a certificate when none is given is a CredentialError naming it."""
    tls = load_tls(cert, key, ca)
    if tls is not None or server.startswith("unix:"):
        return open_channel(server, tls=tls)
    try:
        token = load_token(token_file)
    except CredentialError:
        if speaks_tls(server):
            raise CredentialError(certificate_required(server)) from None
        raise
    return open_channel(server, token)


def certificate_required(server: str) -> str:
    return (f"UNAUTHENTICATED: DomS0 at {server} requires a client certificate "
            "(vtpmctl --cert/--key or VTPM_CERT/VTPM_KEY)")


def _host_port(server: str) -> tuple[str, int] | None:
    if server.startswith("unix:"):
        return None
    target = server.removeprefix("dns:").removeprefix("ipv4:").removeprefix("ipv6:")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def speaks_tls(server: str) -> bool:
    """Whether a TCP ``server`` answers a TLS ClientHello (so a plain-text gRPC call
    failing there means: present a certificate). Never authenticates anything."""
    target = _host_port(server)
    if target is None:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE     # a probe: nothing is sent or trusted
    try:
        with socket.create_connection(target, timeout=PROBE_TIMEOUT) as raw, \
                context.wrap_socket(raw) as tls:
            tls.version()
        return True
    except ssl.SSLError as exc:
        # A TLS 1.2 server refusing us mid-handshake still spoke TLS.
        return "alert" in str(exc).lower()
    except OSError:
        return False


def certificate_refusal(server: str, tls: ClientTls) -> str | None:
    """Why a TLS DomS0 refuses ``tls``'s certificate (its alert), or None if it does
    not (or cannot be reached): run after a failed connection, for a precise message."""
    target = _host_port(server)
    if target is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE     # we only want the server's verdict on us
    context.set_alpn_protocols(["h2"])
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        return f"unusable client certificate or key: {exc}"
    closed = ("it closed the connection after the TLS handshake: the certificate is not "
              "from its callers CA, or has expired")
    try:
        with socket.create_connection(target, timeout=PROBE_TIMEOUT) as raw, \
                context.wrap_socket(raw, suppress_ragged_eofs=False) as conn:
            # TLS 1.3: the server judges our certificate after the handshake; a
            # refusal arrives with the first read (gRPC closes without an alert),
            # an acceptance as the server's HTTP/2 SETTINGS.
            conn.settimeout(1.0)
            try:
                return None if conn.recv(1) else closed
            except TimeoutError:
                return None
    except ssl.SSLEOFError:
        return closed
    except ssl.SSLError as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        return str(reason).replace("_", " ").lower()
    except OSError:
        return None
