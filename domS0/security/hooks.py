"""One enforcement point per operation, one decision function behind it (XSM's split).

Servicers and front ends build a :class:`Request` — who (a principal), what (an
:class:`Action`), on which vTPM, and for TPM commands the command code and locality —
and call :meth:`SecurityServer.check`. The configured modules decide in order
(primary, then secondary); all must permit, the first denial wins, as sHype combined
its two policies. Decisions of modules that say they are cacheable are cached by the
whole request and the cache is dropped whenever the policy or a label changes
(:meth:`SecurityServer.invalidate`); decisions that depend on what is running (Chinese
Wall) are not cached. Denials go to the audit log; in permissive mode they are logged
and let through.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from vtpm_manager.errors import PermissionDenied

from .audit import AuditLog
from .principal import Principal

log = logging.getLogger("doms0.security")
CACHE_SIZE = 4096


class Action(StrEnum):
    CREATE = "create"
    DELETE = "delete"
    START = "start"
    STOP = "stop"
    READ = "read"              # get, list, certificates, event log
    ATTACH = "attach"
    TRANSMIT = "transmit"
    BUILD = "build"
    QUOTE = "quote"
    SEAL = "seal"
    UNSEAL = "unseal"
    MIGRATE_OUT = "migrate_out"
    MIGRATE_IN = "migrate_in"
    POLICY_LOAD = "policy_load"
    LABEL_CHANGE = "label_change"


#: Operations on the host rather than on one vTPM's use.
ADMINISTRATIVE = frozenset({Action.DELETE, Action.MIGRATE_OUT, Action.POLICY_LOAD,
                            Action.LABEL_CHANGE})


@dataclass(frozen=True)
class Target:
    """The vTPM a request is about: its name, UUID and the domain it belongs to."""

    name: str
    uuid: str = ""
    domain: str = ""
    group: str = ""            # its approval group, if any


@dataclass(frozen=True)
class Request:
    subject: Principal
    action: Action
    target: Target | None = None
    command_code: int | None = None
    locality: int | None = None

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"subject": str(self.subject), "via": self.subject.via,
                                  "action": str(self.action)}
        if self.target is not None:
            out["object"] = self.target.name
            out["uuid"] = self.target.uuid
            out["domain"] = self.target.domain
        if self.command_code is not None:
            out["command_code"] = f"0x{self.command_code:08x}"
        if self.locality is not None:
            out["locality"] = self.locality
        return out


@dataclass(frozen=True)
class Decision:
    permitted: bool
    module: str
    rule: str


class SecurityModule(Protocol):
    name: str
    #: False when a decision depends on changing state (what runs), not only on the
    #: request, the policy and the labels.
    cacheable: bool

    def decide(self, request: Request) -> Decision: ...


class SecurityServer:
    def __init__(self, modules: list[SecurityModule], audit: AuditLog, *,
                 permissive: bool = False, audit_permits: bool = False) -> None:
        if not modules:
            raise ValueError("at least one security module")
        self.modules = modules
        self.audit = audit
        self.permissive = permissive
        self.audit_permits = audit_permits
        self._cache: dict[tuple[str, Request], Decision] = {}
        self._lock = threading.Lock()
        self.stats = {"decisions": 0, "cache_hits": 0, "denials": 0}

    def decide(self, request: Request) -> Decision:
        """Every module's verdict in order; the first denial, or the last permit."""
        decision = Decision(True, "none", "no module")
        for module in self.modules:
            decision = self._module_decision(module, request)
            if not decision.permitted:
                break
        return decision

    def check(self, request: Request) -> Decision:
        """Decide, audit, and raise PermissionDenied for an enforced denial."""
        decision = self.decide(request)
        with self._lock:
            self.stats["decisions"] += 1
            if not decision.permitted:
                self.stats["denials"] += 1
        if not decision.permitted or self.audit_permits:
            self.audit.write({**request.describe(), "decision":
                              "permit" if decision.permitted else "deny",
                              "module": decision.module, "rule": decision.rule,
                              "enforced": not self.permissive})
        if not decision.permitted:
            what = f"{request.action}" + (f" on vTPM {request.target.name}"
                                           if request.target else "")
            if self.permissive:
                log.warning("permissive: would deny %s to %s (%s: %s)", what,
                            request.subject, decision.module, decision.rule)
                return decision
            raise PermissionDenied(f"{request.subject} may not {what}: {decision.module}: "
                                   f"{decision.rule}")
        return decision

    def invalidate(self) -> None:
        """The policy or a label changed: no cached decision stands."""
        with self._lock:
            self._cache.clear()

    def replace_modules(self, modules: list[SecurityModule]) -> None:
        """A new policy may reorder its components (primary first)."""
        with self._lock:
            self.modules = modules
            self._cache.clear()

    def _module_decision(self, module: SecurityModule, request: Request) -> Decision:
        if not module.cacheable:
            return module.decide(request)
        key = (module.name, request)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self.stats["cache_hits"] += 1
                return cached
        decision = module.decide(request)
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = decision
        return decision
