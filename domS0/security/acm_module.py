"""The ``acm`` module: sHype's two policies behind the hooks.

- **Simple Type Enforcement** mediates a principal's use of a vTPM: the subject's label
  (a domain's ``dom`` label; an administrator's is the policy's bootstrap label, as
  Dom0's was) and the vTPM's ``res`` label must share an STE type. Cacheable: it
  depends on the policy and the labels only.
- **Chinese Wall** mediates running: a vTPM starts (or migrates in) only if its
  domain's Chinese Wall types conflict with no running domain's, counted by running
  types as sHype did. Not cacheable: it depends on what runs.

The policy's primary component decides first; both must permit. With no policy loaded
the module permits everything and says so (sHype's NULL policy). Who may load a policy
or change a label is the ``dummy`` module's business (administrators), not ACM's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from vtpm_manager.errors import FailedPrecondition, InvalidArgument
from vtpm_manager.kek import KeyEncryptionKey

from .acm.decide import ChineseWall, RunningDomain, check_reload, ste_permits
from .acm.policy import AcmPolicy, AcmPolicyError, digest, load_compiled
from .acm.policy import compile as compile_policy
from .hooks import Action, Decision, Request
from .store import Labels, SealedFile

NAME = "acm"
ZERO_DIGEST = bytes(32)
#: Actions that use a vTPM (STE mediates them; starting is the Chinese Wall's, as
#: sHype's domain creation was).
USES = frozenset({Action.READ, Action.ATTACH, Action.TRANSMIT, Action.BUILD, Action.QUOTE,
                  Action.SEAL, Action.UNSEAL})
#: Actions that make a domain run here (Chinese Wall mediates them).
RUNS = frozenset({Action.START, Action.MIGRATE_IN})

#: (vTPM name, its domain) for every running vTPM.
RunningSet = Callable[[], Iterable[tuple[str, str]]]


class AcmState:
    """The active policy (sealed under the KEK in ``policy.sealed``) and the labels."""

    def __init__(self, folder: Path, kek: KeyEncryptionKey, running: RunningSet) -> None:
        self._file = SealedFile(folder / "policy.sealed", kek, "acm-policy")
        self.labels = Labels(folder, kek)
        self._running = running
        self._lock = threading.Lock()
        doc = self._file.load()
        self.policy: AcmPolicy | None = None
        if doc is not None:
            self.policy = load_compiled(bytes.fromhex(doc["compiled"]))

    @property
    def digest(self) -> bytes:
        """The active policy's digest (zeros for none): bound into deep quotes and
        compared between migrating hosts."""
        return digest(self.policy) if self.policy is not None else ZERO_DIGEST

    def running_domains(self) -> list[RunningDomain]:
        return [RunningDomain(domain, self.labels.get("dom", domain), name,
                              self.labels.get("res", name))
                for name, domain in self._running()]

    def load(self, compiled: bytes) -> AcmPolicy:
        """Activate a compiled policy unless it would break what runs (the violations
        are the refusal's message, one per line)."""
        try:
            policy = load_compiled(compiled)
        except AcmPolicyError as exc:
            raise InvalidArgument(f"not a compiled ACM policy: {exc}") from None
        with self._lock:
            violations = check_reload(policy, self.running_domains())
            if violations:
                raise FailedPrecondition(
                    f"policy {policy.name} {policy.version} would break what runs; not "
                    "loaded:\n" + "\n".join(f"- {v}" for v in violations))
            self._file.save({"compiled": compile_policy(policy).hex()})
            self.policy = policy
            return policy

    def subject_label(self, request: Request) -> str | None:
        if request.subject.kind == "domain":
            return self.labels.get("dom", request.subject.name)
        if request.subject.kind == "admin" and self.policy is not None:
            return self.policy.bootstrap
        return None


class SteModule:
    name = f"{NAME}:ste"
    cacheable = True

    def __init__(self, state: AcmState) -> None:
        self.state = state

    def decide(self, request: Request) -> Decision:
        policy = self.state.policy
        if policy is None or not policy.has_ste:
            return Decision(True, self.name, "no STE policy loaded")
        if request.target is None or request.action not in USES:
            return Decision(True, self.name, f"{request.action} is not mediated by STE")
        verdict = ste_permits(policy, self.state.subject_label(request),
                              self.state.labels.get("res", request.target.name))
        return Decision(verdict.permitted, self.name, verdict.rule)


class ChineseWallModule:
    name = f"{NAME}:chwall"
    cacheable = False

    def __init__(self, state: AcmState) -> None:
        self.state = state

    def decide(self, request: Request) -> Decision:
        policy = self.state.policy
        if policy is None or not policy.has_chwall:
            return Decision(True, self.name, "no Chinese Wall policy loaded")
        if request.target is None or request.action not in RUNS:
            return Decision(True, self.name, f"{request.action} is not mediated by the "
                                             "Chinese Wall")
        domain = request.target.domain
        others = [self.state.labels.get("dom", d) for name, d in self.state._running()
                  if name != request.target.name]
        wall = ChineseWall(policy, others)
        verdict = wall.check_start(self.state.labels.get("dom", domain))
        return Decision(verdict.permitted, self.name, f"domain {domain}: {verdict.rule}")


def acm_modules(state: AcmState) -> list[SteModule | ChineseWallModule]:
    """Both components, in the order the loaded policy names (primary first); before
    any policy, Chinese Wall first, as sHype's default CHWALL_AND_STE."""
    ste, wall = SteModule(state), ChineseWallModule(state)
    policy = state.policy
    return [ste, wall] if policy is not None and policy.primary == "ste" else [wall, ste]
