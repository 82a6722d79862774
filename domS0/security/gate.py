"""The enforcement side: what servicers and front ends call, one line per operation.

A :class:`Gate` turns "this caller wants to do this to that vTPM" into a hook
:class:`~.hooks.Request` — the vTPM's domain is its ``domain`` metadata, else its
name — and asks the security server. Front ends that belong to a domain (the per-vTPM
control socket QEMU uses) check with that domain's principal.
"""

from __future__ import annotations

import grpc

from vtpm_manager.errors import PermissionDenied
from vtpm_manager.instance import Instance

from .hooks import Action, Decision, Request, SecurityServer, Target
from .principal import ANONYMOUS, Principal, principal_of

DOMAIN_KEY = "domain"
GROUP_KEY = "group"


def command_code_of(command: bytes) -> int | None:
    """The command code of a TPM command (None if too short to have one)."""
    return int.from_bytes(command[6:10], "big") if len(command) >= 10 else None


def domain_of(instance: Instance) -> str:
    return instance.record.metadata.get(DOMAIN_KEY) or instance.record.name


def target_of(instance: Instance) -> Target:
    record = instance.record
    return Target(record.name, record.uuid, domain_of(instance),
                  record.metadata.get(GROUP_KEY, ""))


def owner_principal(instance: Instance, via: str) -> Principal:
    """The principal a domain's own front end acts as."""
    return Principal("domain", domain_of(instance), via)


class Gate:
    def __init__(self, server: SecurityServer) -> None:
        self.server = server

    def check(self, principal: Principal, action: Action, instance: Instance | None = None,
              *, command_code: int | None = None, locality: int | None = None,
              target: Target | None = None) -> Decision:
        """Raise PermissionDenied (a ManagerError) for an enforced denial."""
        if principal == ANONYMOUS or principal.kind == "anonymous":
            raise PermissionDenied("unauthenticated callers may do nothing")
        if target is None and instance is not None:
            target = target_of(instance)
        return self.server.check(Request(principal, action, target, command_code,
                                         locality))

    def check_call(self, context: grpc.ServicerContext, action: Action,
                   instance: Instance | None = None, **extra: int | None) -> Principal:
        """The caller of ``context`` checked for ``action``; returns the principal."""
        principal = principal_of(context)
        self.check(principal, action, instance, **extra)  # type: ignore[arg-type]
        return principal

    def permits(self, principal: Principal, action: Action, instance: Instance) -> bool:
        """A decision without audit or enforcement (filtering a listing)."""
        return self.server.decide(Request(principal, action, target_of(instance))).permitted
