"""Caller authentication: every RPC but health and reflection presents the token.

DomS0 keeps a random client token in ``STATE_DIR/client.token`` (mode 0600). A
caller sends it as ``authorization: Bearer <token>`` metadata; the server compares
it in constant time. Reading that file is what makes a local administrator; mutual
TLS identities come with the access-control policy.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from vtpm_manager.durable import atomic_write

TOKEN_FILE = "client.token"  # noqa: S105 (a file name, not a secret)
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                  "/grpc.reflection.v1.ServerReflection/")


def ensure_token(state_dir: Path) -> str:
    """Return the client token, creating it on first start."""
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


def caller_id(token: str | None) -> str:
    """A stable, non-secret name for a caller's credential, for logs."""
    if not token:
        return "anonymous"
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def describe_caller(context: grpc.ServicerContext) -> str:
    return f"{caller_id(bearer(context.invocation_metadata()))}@{context.peer()}"


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuse every call without the right token with UNAUTHENTICATED."""

    def __init__(self, token: str, token_path: Path) -> None:
        self._token = token.encode()
        self._hint = (
            f"present the DomS0 client token (file {token_path}); vtpmctl reads it with "
            "--token-file or VTPM_TOKEN_FILE"
        )

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_OPEN_SERVICES):
            return handler
        presented = bearer(handler_call_details.invocation_metadata)
        if presented is not None and hmac.compare_digest(presented.encode(), self._token):
            return handler
        return _refusing(handler, self._hint)


def _refusing(handler: Any, message: str) -> Any:
    """A handler of the same shape as ``handler`` that aborts UNAUTHENTICATED."""

    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(abort, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
