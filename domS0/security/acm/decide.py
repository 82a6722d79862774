"""sHype decisions: Simple Type Enforcement, the Chinese Wall and policy reload.

The rules are those of Xen's ACM (reference §2.2, §2.3), small enough to restate:

- STE: a domain may share with a resource (or another domain) iff their labels have at
  least one STE type in common — implicit set intersection, no allow rules
  (``have_common_type()``).
- Chinese Wall: of the types in one conflict set, at most one may be running on the
  platform at a time. Xen keeps two reference counts per type (``running_types`` and
  ``conflict_aggregate_set``) and :class:`ChineseWall` keeps the same two.
- Two components at once: the primary decides first, the secondary only if the primary
  permits, and access needs both (:func:`combine`).
- A new policy is accepted only if replaying everything running under it violates
  nothing (``ste_init_state``/``chwall_init_state``; :func:`check_reload`).

Decisions are returned, not enforced: the hooks in DomS0 decide what a denial does and
write the rule string to the audit log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from .policy import UNLABELED, AcmPolicy, SubjectLabel


class AcmStateError(RuntimeError):
    """The Chinese Wall's bookkeeping was misused: a domain stopped that was never
    started, or a running set that already breaks the wall. The caller is at fault, and
    continuing would leave the reference counts wrong, so this raises."""


class Decision(NamedTuple):
    """A decision and the rule that made it, worded for the audit log."""

    permitted: bool
    rule: str


@dataclass(frozen=True)
class RunningDomain:
    """One running domain and one resource it uses, as DomS0 knows them when a new
    policy is proposed. A domain with several resources appears once per resource; an
    empty ``resource`` means "no resource", and only the domain itself is replayed."""

    domain: str
    label: str | None
    resource: str = ""
    resource_label: str | None = None


def _resolve(labels: Mapping[str, object], label: str | None, kind: str,
             policy: AcmPolicy) -> tuple[str | None, str]:
    """The label a decision uses: the given one if defined; for no label,
    ``__UNLABELED__`` if the policy defines it (user.tex §2.4); otherwise None and why."""
    if label is None:
        if UNLABELED in labels:
            return UNLABELED, ""
        return None, (f"{kind} has no label and policy {policy.name!r} defines no "
                      f"{UNLABELED}")
    if label in labels:
        return label, ""
    return None, f"{kind} label {label!r} is not defined in policy {policy.name!r}"


def _share(a: str, a_types: frozenset[str], a_kind: str,
           b: str, b_types: frozenset[str], b_kind: str) -> Decision:
    names = f"{a_kind} label {a!r} and {b_kind} label {b!r}"
    common = sorted(a_types & b_types)
    if common:
        return Decision(True, f"STE: {names} share type(s) {', '.join(common)}")
    return Decision(False, f"STE: {names} share no type")


def ste_permits(policy: AcmPolicy, subject_label: str | None,
                object_label: str | None) -> Decision:
    """May a domain labelled ``subject_label`` use a resource labelled ``object_label``?
    Both labels must exist and share an STE type (user.tex §acmpolicy). A policy without
    an STE component does not mediate sharing, but the labels must still exist."""
    subj, why = _resolve(policy.subject_labels, subject_label, "dom", policy)
    if subj is None:
        return Decision(False, f"STE: {why}")
    obj, why = _resolve(policy.object_labels, object_label, "res", policy)
    if obj is None:
        return Decision(False, f"STE: {why}")
    if not policy.has_ste:
        return Decision(True, f"STE: not part of policy {policy.name!r}")
    return _share(subj, policy.subject_labels[subj].ste, "dom",
                  obj, policy.object_labels[obj], "res")


def ste_permits_domains(policy: AcmPolicy, label_a: str | None,
                        label_b: str | None) -> Decision:
    """May two domains share (event channel, grant)? The same rule as for resources,
    with both labels taken from the subject labels (``pre_eventchannel_*``,
    ``pre_grant_map_ref``)."""
    a, why = _resolve(policy.subject_labels, label_a, "dom", policy)
    if a is None:
        return Decision(False, f"STE: {why}")
    b, why = _resolve(policy.subject_labels, label_b, "peer dom", policy)
    if b is None:
        return Decision(False, f"STE: {why}")
    if not policy.has_ste:
        return Decision(True, f"STE: not part of policy {policy.name!r}")
    return _share(a, policy.subject_labels[a].ste, "dom",
                  b, policy.subject_labels[b].ste, "peer dom")


def combine(primary: Decision, secondary: Decision) -> Decision:
    """Both components must permit; the first denial (primary before secondary) is the
    one reported, as the hooks evaluated them in that order."""
    if not primary.permitted:
        return primary
    if not secondary.permitted:
        return secondary
    return Decision(True, f"{primary.rule}; {secondary.rule}")


class ChineseWall:
    """The Chinese Wall's running state, as ``acm_chinesewall_hooks.c`` kept it.

    ``running_types[t]`` counts running domains whose label includes type ``t``;
    ``conflict_aggregate[t]`` counts running domains that conflict with ``t`` (they hold
    another type of a conflict set containing ``t``). A domain may start iff none of its
    types has a positive aggregate. Saving or migrating a domain away is a stop, resuming
    or migrating in is a start (user.tex).
    """

    def __init__(self, policy: AcmPolicy, running: Iterable[str | None] = ()) -> None:
        """Rebuild the counts for domains already running (e.g. when DomS0 restarts);
        raises :class:`AcmStateError` if they already break the wall."""
        self.policy = policy
        self.running_types: Counter[str] = Counter()
        self.conflict_aggregate: Counter[str] = Counter()
        for label in running:
            decision = self.check_start(label)
            if not decision.permitted:
                raise AcmStateError(f"running domains already violate the policy: "
                                    f"{decision.rule}")
            self.started(label)

    def _label(self, label: str | None) -> tuple[str | None, SubjectLabel | None, str]:
        name, why = _resolve(self.policy.subject_labels, label, "dom", self.policy)
        return name, (self.policy.subject_labels[name] if name else None), why

    def check_start(self, subject_label: str | None) -> Decision:
        """``_chwall_pre_domain_create``'s test: denied if any type of the new domain
        has ``conflict_aggregate > 0``. Changes nothing; call :meth:`started` after."""
        name, sub, why = self._label(subject_label)
        if sub is None:
            return Decision(False, f"ChWall: {why}")
        if not self.policy.has_chwall:
            return Decision(True, f"ChWall: not part of policy {self.policy.name!r}")
        for t in sorted(sub.cw):
            if self.conflict_aggregate[t] <= 0:
                continue
            for cs_name, cs_types in self.policy.conflict_sets:
                if t not in cs_types:
                    continue
                running = sorted(o for o in cs_types - {t} if self.running_types[o] > 0)
                if running:
                    return Decision(False, (
                        f"ChWall: dom label {name!r} type {t!r} conflicts with running "
                        f"type {running[0]!r} (conflict set {cs_name!r})"))
            return Decision(False, f"ChWall: dom label {name!r} type {t!r} conflicts "
                                   "with a running type")
        return Decision(True, f"ChWall: dom label {name!r} conflicts with no running type")

    def started(self, subject_label: str | None) -> None:
        """Commit a start (pre-create's aggregate update plus post-create's running
        count). Does not re-check: call it after :meth:`check_start` permitted."""
        sub = self._require(subject_label)
        for t in sub.cw:
            self.running_types[t] += 1
        for other in self._conflicting_types(sub):
            self.conflict_aggregate[other] += 1

    def stopped(self, subject_label: str | None) -> None:
        """Reverse :meth:`started` (domain destroyed, saved or migrated away)."""
        sub = self._require(subject_label)
        others = self._conflicting_types(sub)
        if any(self.running_types[t] <= 0 for t in sub.cw) \
                or any(self.conflict_aggregate[o] <= 0 for o in others):
            raise AcmStateError(f"ChWall: no running domain with label "
                                f"{subject_label!r} to stop")
        for t in sub.cw:
            self._decrement(self.running_types, t)
        for other in others:
            self._decrement(self.conflict_aggregate, other)

    def _require(self, label: str | None) -> SubjectLabel:
        _, sub, why = self._label(label)
        if sub is None:
            raise AcmStateError(f"ChWall: {why}")
        return sub

    def _conflicting_types(self, sub: SubjectLabel) -> list[str]:
        """For every conflict set sharing a type with the label, the set's *other*
        types — one entry per set, so a type in two such sets counts twice, as in
        Xen's loop over conflict sets."""
        out: list[str] = []
        for _, cs_types in self.policy.conflict_sets:
            if sub.cw & cs_types:
                out.extend(sorted(cs_types - sub.cw))
        return out

    @staticmethod
    def _decrement(counter: Counter[str], key: str) -> None:
        counter[key] -= 1
        if counter[key] == 0:
            del counter[key]


def _conflicts(policy: AcmPolicy, a: str, b: str) -> bool:
    """Do two subject labels hold different types of one conflict set?"""
    a_cw, b_cw = policy.subject_labels[a].cw, policy.subject_labels[b].cw
    return any((a_cw & cs) and (b_cw & cs) and (a_cw & cs) != (b_cw & cs)
               for _, cs in policy.conflict_sets)


def check_reload(new_policy: AcmPolicy, running: Iterable[RunningDomain]) -> list[str]:
    """Replay everything running under ``new_policy`` and list what it would forbid.

    Xen's ``ste_init_state`` "simulate[s] that all running domains are re-started and
    all sharing decisions are replayed", and any violation rejects the new policy. The
    same here: every label must still be defined, every domain must still share an STE
    type with each of its resources, and the running set must not break the Chinese
    Wall. One message per problem; an empty list means the policy may be loaded.
    """
    violations: list[str] = []
    wall = ChineseWall(new_policy)
    placed: dict[str, str] = {}          # domain -> resolved label, in start order
    seen_label: dict[str, str | None] = {}
    for rd in running:
        subj, why = _resolve(new_policy.subject_labels, rd.label, "dom", new_policy)
        first_time = rd.domain not in seen_label
        if first_time:
            seen_label[rd.domain] = rd.label
            if subj is None:
                violations.append(f"domain {rd.domain!r}: {why}")
        elif seen_label[rd.domain] != rd.label:
            violations.append(f"domain {rd.domain!r} is listed with labels "
                              f"{seen_label[rd.domain]!r} and {rd.label!r}")
            continue

        if rd.resource:
            where = f"domain {rd.domain!r} resource {rd.resource!r}"
            obj, why = _resolve(new_policy.object_labels, rd.resource_label, "res",
                                new_policy)
            if obj is None:
                violations.append(f"{where}: {why}")
            elif subj is not None and new_policy.has_ste:
                decision = ste_permits(new_policy, subj, obj)
                if not decision.permitted:
                    violations.append(f"{where}: {decision.rule}")

        if first_time and subj is not None:
            decision = wall.check_start(subj)
            if not decision.permitted:
                beside = [d for d, lab in placed.items() if _conflicts(new_policy, subj, lab)]
                violations.append(f"domain {rd.domain!r} cannot run beside "
                                  f"{', '.join(repr(d) for d in beside)}: {decision.rule}")
            # Counted even when denied, so every later conflicting domain is reported.
            wall.started(subj)
            placed[rd.domain] = subj
    return violations
