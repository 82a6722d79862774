"""Opening an authenticated channel to DomS0."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import grpc

DEFAULT_SERVER = "127.0.0.1:7340"
DEFAULT_TOKEN_FILE = Path("/var/lib/doms0/client.token")


class CredentialError(Exception):
    """No usable client token; the message says where one is looked for."""


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


def open_channel(server: str, token: str) -> grpc.Channel:
    """An insecure (loopback or Unix socket) channel that presents ``token``."""
    channel = grpc.insecure_channel(server)
    return grpc.intercept_channel(channel, _BearerInterceptor(token))
