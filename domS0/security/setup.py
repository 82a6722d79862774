"""Build the security server a DomS0 runs with, from its settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from vtpm_manager.kek import KeyEncryptionKey
from vtpm_manager.manager import VtpmManager

from .acm_module import AcmState, acm_modules
from .audit import AuditLog
from .dummy import DummyModule
from .gate import Gate, domain_of
from .group_module import GroupModule
from .groups import Groups
from .hooks import SecurityModule, SecurityServer
from .store import SECURITY_DIR

log = logging.getLogger("doms0.security")


@dataclass
class Security:
    """Everything the servicers and front ends need: the gate, the ACM state, groups."""

    gate: Gate
    acm: AcmState
    groups: Groups
    module_names: tuple[str, ...]

    def rebuild(self) -> None:
        """After a policy load: the components in the new policy's order."""
        self.gate.server.replace_modules(self._modules())

    def _modules(self) -> list[SecurityModule]:
        return build_modules(self.module_names, self.acm, self.gate.server.modules[-1])

    @property
    def policy_digest(self) -> bytes:
        return self.acm.digest


def build_modules(names: tuple[str, ...], acm: AcmState, groups: SecurityModule
                  ) -> list[SecurityModule]:
    modules: list[SecurityModule] = []
    for name in names:
        if name == "acm":
            modules += acm_modules(acm)
        else:
            modules.append(DummyModule())
    if "dummy" not in names:
        # ACM mediates sharing and running, not who may administer the host: the
        # ownership rules always stand behind it.
        modules.append(DummyModule())
    return [*modules, groups]


def open_security(state_dir: Path, kek: KeyEncryptionKey, manager: VtpmManager,
                  modules: str, measurements: tuple[bytes, ...], *, permissive: bool,
                  audit_log: Path | None, audit_permits: bool) -> Security:
    folder = state_dir / SECURITY_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def running() -> list[tuple[str, str]]:
        return [(i.record.name, domain_of(i)) for i in manager.list() if i.running]

    acm = AcmState(folder, kek, running)
    groups = Groups(folder, kek)
    names = tuple(modules.split(","))
    group_module = GroupModule(groups, measurements)
    server = SecurityServer(build_modules(names, acm, group_module),
                            AuditLog(audit_log or folder / "audit.log"),
                            permissive=permissive, audit_permits=audit_permits)
    if permissive:
        log.warning("security: PERMISSIVE mode: denials are logged, not enforced")
    log.info("security modules: %s; ACM policy: %s", ", ".join(m.name for m in server.modules),
             f"{acm.policy.name} {acm.policy.version}" if acm.policy else "none")
    return Security(Gate(server), acm, groups, names)
