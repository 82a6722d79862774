"""Caller authentication: every RPC but health and reflection runs as a principal.

How a caller proves who it is depends on the listener it reached:

- TCP with mutual TLS: its certificate, from DomS0's callers CA, names the principal
  (:mod:`domS0.security.identity`);
- DomS0's Unix socket: the relay (:mod:`domS0.security.unix_relay`) maps the peer's
  uid/gid to a principal and presents a certificate for it on the internal port,
  so this is the certificate case too, with the local peer named in it;
- the ``--insecure-loopback`` TCP listener: a bearer token (``authorization: Bearer
  <token>``) — the administrator's ``STATE_DIR/client.token`` (``admin:local``) or a
  token from ``doms0 issue --token`` (stored only as its SHA-256, in
  ``STATE_DIR/security/tokens.json``).

:class:`AuthInterceptor` binds the principal to each call
(:func:`domS0.security.principal.bind`); a call it cannot authenticate gets
UNAUTHENTICATED with a message that says what to present.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import grpc

from vtpm_manager.durable import atomic_write

from ..security.identity import (
    CallersCA,
    IdentityError,
    UnixPeer,
    principal_from_certificate,
    unix_peer_from_certificate,
)
from ..security.principal import ANONYMOUS, Principal, bind, parse_principal, principal_of

TOKEN_FILE = "client.token"  # noqa: S105 (a file name, not a secret)
TOKENS_FILE: Final = Path("security") / "tokens.json"
TOKENS_VERSION: Final = 1
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                  "/grpc.reflection.v1.ServerReflection/")
CERT_HINT: Final = ("DomS0 requires a client certificate from its callers CA (doms0 issue "
                    "PRINCIPAL; vtpmctl --cert/--key or VTPM_CERT/VTPM_KEY)")


def ensure_token(state_dir: Path) -> str:
    """Return the administrator's client token, creating it on first start."""
    path = state_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_hex(32)
    atomic_write(path, (token + "\n").encode(), mode=0o600)
    return token


def bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):]
    return None


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(state_dir: Path, principal: Principal) -> str:
    """A new bearer token for ``principal`` (insecure loopback listener only). Only its
    SHA-256 is kept; the token itself is returned once, to be written for the caller."""
    path = state_dir / TOKENS_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tokens = _read_tokens(path)
    token = secrets.token_hex(32)
    tokens[_token_digest(token)] = str(principal)
    document = {"version": TOKENS_VERSION, "tokens": tokens}
    atomic_write(path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode(),
                 mode=0o600)
    return token


def _read_tokens(path: Path) -> dict[str, str]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != TOKENS_VERSION \
            or not isinstance(document.get("tokens"), dict):
        raise ValueError(f"{path} is not a version {TOKENS_VERSION} token file")
    return {str(k): str(v) for k, v in document["tokens"].items()}


class IssuedTokens:
    """The tokens ``doms0 issue --token`` made, re-read when the file changes (so a
    token issued while DomS0 serves works at once)."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / TOKENS_FILE
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._tokens: dict[str, Principal] = {}

    def principal_of(self, token: str) -> Principal | None:
        with self._lock:
            self._refresh()
            found = self._tokens.get(_token_digest(token))
        return Principal(found.kind, found.name, "token") if found is not None else None

    def _refresh(self) -> None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            self._stamp, self._tokens = None, {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        tokens: dict[str, Principal] = {}
        try:
            for digest, text in _read_tokens(self._path).items():
                tokens[digest] = parse_principal(text, "token")
        except ValueError:
            tokens = {}          # an unreadable file authenticates nobody
        self._stamp, self._tokens = stamp, tokens


def describe_caller(context: grpc.ServicerContext) -> str:
    """``admin:local@ipv4:127.0.0.1:5123``; a Unix-socket caller is named by its
    credentials (``domain:vm1@unix uid 1000 gid 1000 pid 42``)."""
    principal = principal_of(context)
    where = principal.via if principal.via.startswith("unix") else context.peer()
    return f"{principal}@{where}"


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuthInterceptor(grpc.ServerInterceptor):
    """Bind the caller's principal to every call, or refuse it with UNAUTHENTICATED.

    A call that arrived with a verified client certificate is that certificate's
    principal (nothing else is looked at); otherwise, where ``tokens`` are enabled
    (the insecure loopback listener), its bearer token's principal.
    """

    def __init__(self, ca: CallersCA | None, *, admin_token: str | None = None,
                 token_path: Path | None = None, issued: IssuedTokens | None = None) -> None:
        self._ca = ca
        self._admin_token = admin_token.encode() if admin_token else None
        self._issued = issued
        self._token_hint = (
            f"present the DomS0 client token (file {token_path}) or one from `doms0 issue "
            "--token`; vtpmctl reads it with --token-file or VTPM_TOKEN_FILE")
        self._certs: dict[bytes, tuple[Principal, UnixPeer | None]] = {}
        self._certs_lock = threading.Lock()

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_OPEN_SERVICES):
            return handler
        return _wrapped(handler, self._admit)

    def _admit(self, context: grpc.ServicerContext) -> None:
        try:
            principal = self.authenticate(context)
        except _Refused as refused:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, refused.message)
        bind(context, principal)

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        certs = context.auth_context().get("x509_pem_cert") or []
        if certs:
            return self._from_certificate(certs[0], context.peer())
        if self._admin_token is None and self._issued is None:
            raise _Refused(CERT_HINT)
        presented = bearer(context.invocation_metadata())
        if presented is None:
            raise _Refused(f"no bearer token: {self._token_hint}")
        if self._admin_token is not None and hmac.compare_digest(presented.encode(),
                                                                 self._admin_token):
            return Principal("admin", "local", "token")
        found = self._issued.principal_of(presented) if self._issued is not None else None
        if found is None:
            raise _Refused(f"the bearer token is not DomS0's: {self._token_hint}")
        return found

    def _from_certificate(self, pem: bytes, peer: str) -> Principal:
        with self._certs_lock:
            cached = self._certs.get(pem)
        if cached is None:
            try:
                cached = (principal_from_certificate(pem, self._ca),
                          unix_peer_from_certificate(pem))
            except (IdentityError, ValueError) as exc:
                raise _Refused(f"the client certificate names no principal: {exc}") from None
            with self._certs_lock:
                if len(self._certs) > 4096:
                    self._certs.clear()
                self._certs[pem] = cached
        principal, unix_peer = cached
        if unix_peer is not None:
            # Minted by the relay for a local peer: valid only on the internal socket.
            if not peer.startswith("unix:"):
                raise _Refused("a Unix-socket relay certificate is valid only through "
                               "DomS0's Unix socket")
            if principal == ANONYMOUS:
                raise _Refused(
                    f"uid {unix_peer.uid} (gid {unix_peer.gid}) is not mapped to a principal;"
                    f" add \"uid:{unix_peer.uid}\" = \"domain:NAME\" (or admin:NAME) to "
                    f"unix_principals in DomS0's configuration")
            return Principal(principal.kind, principal.name, str(unix_peer))
        if principal == ANONYMOUS:
            raise _Refused("an anonymous certificate authenticates nobody")
        return principal


def _wrapped(handler: Any, admit: Callable[[grpc.ServicerContext], None]) -> Any:
    """A handler of the same shape as ``handler`` that first runs ``admit``."""
    if handler.request_streaming and handler.response_streaming:
        inner, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        inner, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        inner, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        inner, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler

    def behavior(request: Any, context: grpc.ServicerContext) -> Any:
        admit(context)
        return inner(request, context)

    return make(behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
