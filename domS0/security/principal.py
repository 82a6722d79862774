"""Principals: who a caller is, as authentication established it.

- ``admin:NAME`` — an operator; the ``dummy`` module lets administrators do everything;
- ``domain:NAME`` — a domain (VM) or its builder; it may use only its own vTPM(s);
- ``peer:HOST`` — another DomS0 host (migration);
- ``anonymous`` — nothing authenticated it; refused with UNAUTHENTICATED.

The authentication layer (TLS certificates, tokens on an insecure loopback listener,
Unix socket peer credentials) binds one principal to each call with :func:`bind`;
servicers read it with :func:`principal_of`. gRPC's context objects take no
attributes, so the binding is kept here by the context's identity and dropped when
the call ends.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Final

import grpc

KINDS: Final = ("admin", "domain", "peer")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")


@dataclass(frozen=True)
class Principal:
    kind: str
    name: str
    via: str = ""          # how it was authenticated: "tls", "token", "unix uid 1000", …

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.kind != "anonymous" else "anonymous"

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


ANONYMOUS: Final = Principal("anonymous", "", "")


def parse_principal(text: str, via: str = "") -> Principal:
    """``admin:alice``, ``domain:vm1``, ``peer:host-b``; ValueError otherwise."""
    kind, sep, name = text.partition(":")
    if not sep or kind not in KINDS or not _NAME.fullmatch(name):
        raise ValueError(f"not a principal: {text!r} (use admin:NAME, domain:NAME or "
                         "peer:HOST; names of letters, digits and _ . @ -)")
    return Principal(kind, name, via)


_bound: dict[int, Principal] = {}
_lock = threading.Lock()


def bind(context: grpc.ServicerContext, principal: Principal) -> None:
    key = id(context)
    with _lock:
        _bound[key] = principal

    def forget() -> None:
        with _lock:
            if _bound.get(key) is principal:
                del _bound[key]

    context.add_callback(forget)


def principal_of(context: grpc.ServicerContext) -> Principal:
    """The caller of this call (``ANONYMOUS`` if authentication bound none)."""
    with _lock:
        return _bound.get(id(context), ANONYMOUS)
