"""The hooks' decision side without a daemon: the dummy module's ownership rules, the
decision cache and its invalidation, permissive mode and the audit log, approval lists
(signature and sequence), and the ACM modules over a real policy and label store."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domS0.security.acm.policy import compile as compile_policy
from domS0.security.acm.policy import parse_xml
from domS0.security.acm_module import AcmState, acm_modules
from domS0.security.audit import AuditLog
from domS0.security.dummy import DummyModule
from domS0.security.group_module import GroupModule
from domS0.security.groups import ApprovalList, Groups, sign_list
from domS0.security.hooks import Action, Decision, Request, SecurityServer, Target
from domS0.security.principal import Principal
from vtpm_manager.errors import FailedPrecondition, PermissionDenied
from vtpm_manager.kek import KeyEncryptionKey

ADMIN = Principal("admin", "alice", "test")
VM1 = Principal("domain", "vm1", "test")
VM2 = Principal("domain", "vm2", "test")
KEK = KeyEncryptionKey(bytes(range(32)), origin="test")
POLICY = (Path(__file__).parent / "fixtures" / "acm" / "rivals.xml").read_text()


def vtpm(name: str, domain: str = "", group: str = "") -> Target:
    return Target(name, f"uuid-{name}", domain or name, group)


def server(tmp_path: Path, *modules: object, permissive: bool = False) -> SecurityServer:
    return SecurityServer(list(modules) or [DummyModule()],  # type: ignore[arg-type]
                          AuditLog(tmp_path / "audit.log"), permissive=permissive)


def test_dummy_administrators_everything_domains_their_own(tmp_path: Path) -> None:
    hooks = server(tmp_path)
    for action in Action:
        assert hooks.check(Request(ADMIN, action, vtpm("vm1"))).permitted
    assert hooks.check(Request(VM1, Action.TRANSMIT, vtpm("vm1"), 0x17E, 0)).permitted
    assert hooks.check(Request(VM1, Action.QUOTE, vtpm("disk", domain="vm1"))).permitted
    with pytest.raises(PermissionDenied, match="belongs to domain vm2"):
        hooks.check(Request(VM1, Action.TRANSMIT, vtpm("vm2")))
    for action in (Action.DELETE, Action.POLICY_LOAD, Action.LABEL_CHANGE,
                   Action.MIGRATE_OUT):
        with pytest.raises(PermissionDenied, match=f"may not {action}"):
            hooks.check(Request(VM1, action, vtpm("vm1")))
    peer = Principal("peer", "host-b", "test")
    assert hooks.check(Request(peer, Action.MIGRATE_IN, vtpm("vm1"))).permitted
    with pytest.raises(PermissionDenied):
        hooks.check(Request(peer, Action.TRANSMIT, vtpm("vm1")))


def test_denials_are_audited_and_permissive_mode_lets_them_through(tmp_path: Path) -> None:
    enforcing = server(tmp_path)
    with pytest.raises(PermissionDenied):
        enforcing.check(Request(VM1, Action.UNSEAL, vtpm("vm2")))
    [entry] = enforcing.audit.entries()
    assert entry["subject"] == "domain:vm1" and entry["action"] == "unseal"
    assert entry["object"] == "vm2" and entry["decision"] == "deny"
    assert entry["enforced"] is True and "belongs to domain vm2" in str(entry["rule"])
    permissive = server(tmp_path / "p", permissive=True)
    decision = permissive.check(Request(VM1, Action.UNSEAL, vtpm("vm2")))
    assert not decision.permitted          # the same denial, let through
    [entry] = permissive.audit.entries()
    assert entry["decision"] == "deny" and entry["enforced"] is False


class Counting:
    """A module that counts its evaluations and can change its mind."""

    name = "counting"
    cacheable = True

    def __init__(self) -> None:
        self.calls, self.permit = 0, True

    def decide(self, request: Request) -> Decision:
        self.calls += 1
        return Decision(self.permit, self.name, "as told")


def test_decisions_are_cached_until_invalidated(tmp_path: Path) -> None:
    module = Counting()
    hooks = server(tmp_path, module)
    request = Request(VM1, Action.TRANSMIT, vtpm("vm1"), 0x17E, 0)
    for _ in range(3):
        assert hooks.check(request).permitted
    assert module.calls == 1 and hooks.stats["cache_hits"] == 2
    module.permit = False
    assert hooks.check(request).permitted          # still the cached decision
    hooks.invalidate()                              # a policy or label change
    with pytest.raises(PermissionDenied):
        hooks.check(request)
    assert module.calls == 2


def test_primary_denial_wins_over_a_permitting_secondary(tmp_path: Path) -> None:
    first, second = Counting(), DummyModule()
    first.permit = False
    hooks = server(tmp_path, first, second)
    with pytest.raises(PermissionDenied, match="counting: as told"):
        hooks.check(Request(ADMIN, Action.START, vtpm("vm1")))


def approval_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem.decode()


def test_approval_lists_newer_and_signed_only(tmp_path: Path) -> None:
    key, pem = approval_key()
    groups = Groups(tmp_path, KEK)
    groups.create("tenant", pem)
    here, other = b"\x01" * 32, b"\x02" * 32
    module = GroupModule(groups, (here,))
    hooks = server(tmp_path, DummyModule(), module)
    start = Request(ADMIN, Action.START, vtpm("vm1", group="tenant"))
    with pytest.raises(PermissionDenied, match="not on group tenant's approval list"):
        hooks.check(start)
    groups.load_list(ApprovalList.from_json(sign_list(key, "tenant", 2, [here]).to_json()))
    assert hooks.check(start).permitted
    assert hooks.check(Request(ADMIN, Action.START, vtpm("vm2"))).permitted   # no group
    with pytest.raises(FailedPrecondition, match="not newer than the stored list 2"):
        groups.load_list(sign_list(key, "tenant", 1, [here]))
    with pytest.raises(FailedPrecondition, match="not newer"):
        groups.load_list(sign_list(key, "tenant", 2, [other]))
    forged = sign_list(ec.generate_private_key(ec.SECP384R1()), "tenant", 3, [other])
    with pytest.raises(FailedPrecondition, match="not signed by the group's approval key"):
        groups.load_list(forged)
    groups.load_list(sign_list(key, "tenant", 3, [other]))      # this host dropped
    with pytest.raises(PermissionDenied, match="sequence 3"):
        hooks.check(start)
    again = Groups(tmp_path, KEK)                               # sealed, survives restart
    assert again.get("tenant") is not None and again.get("tenant").sequence == 3  # type: ignore[union-attr]
    (tmp_path / "groups.sealed").write_bytes(b"\x00" * 64)
    with pytest.raises(Exception, match="does not open"):
        Groups(tmp_path, KEK)


def test_acm_ste_and_chinese_wall_over_labels(tmp_path: Path) -> None:
    running: list[tuple[str, str]] = []
    state = AcmState(tmp_path, KEK, lambda: list(running))
    state.load(compile_policy(parse_xml(POLICY)))
    hooks = server(tmp_path, *acm_modules(state), DummyModule())
    state.labels.set("dom", "vm1", "dom-A")
    state.labels.set("dom", "vm2", "dom-B")
    state.labels.set("res", "vm2", "res-B")
    state.labels.set("res", "vm1", "res-B")          # vm1's vTPM labelled with type B
    with pytest.raises(PermissionDenied, match="share no type"):
        hooks.check(Request(VM1, Action.TRANSMIT, vtpm("vm1"), 0x17E, 0))
    state.labels.set("res", "vm1", "res-A")
    hooks.invalidate()
    assert hooks.check(Request(VM1, Action.TRANSMIT, vtpm("vm1"), 0x17E, 0)).permitted
    assert hooks.check(Request(ADMIN, Action.READ, vtpm("vm1"))).permitted  # bootstrap
    # Chinese Wall: vm1 (type A) runs, so vm2 (type B, same conflict set) may not start.
    assert hooks.check(Request(ADMIN, Action.START, vtpm("vm1"))).permitted
    running.append(("vm1", "vm1"))
    with pytest.raises(PermissionDenied, match="chwall"):
        hooks.check(Request(ADMIN, Action.START, vtpm("vm2")))
    with pytest.raises(PermissionDenied, match="chwall"):
        hooks.check(Request(Principal("peer", "h", "t"), Action.MIGRATE_IN, vtpm("vm2")))
    running.clear()
    assert hooks.check(Request(ADMIN, Action.START, vtpm("vm2"))).permitted
    # A policy that would break what runs is refused with the violations.
    running.append(("vm1", "vm1"))
    stricter = POLICY.replace("<Name>res-A</Name>\n        <SimpleTypeEnforcementTypes>"
                              "<Type>A</Type>", "<Name>res-A</Name>\n        "
                              "<SimpleTypeEnforcementTypes><Type>B</Type>")
    assert stricter != POLICY
    with pytest.raises(FailedPrecondition, match="would break what runs"):
        state.load(compile_policy(parse_xml(stricter)))
    assert state.policy is not None and state.policy.name == "hooks-test"
