"""Mandatory access control against real DomS0 processes: every RPC checks its hook;
a domain touches only its own vTPM; sHype STE and Chinese Wall under a loaded policy,
across migration too; a policy reload that would break what runs is refused; the
permissive mode; approval lists only ever move forward. Denials are audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domS0.harness import Doms0Process, MigrationNode, create_hosts_ca
from tests.conftest import DomS0Factory, only_on

POLICY = Path(__file__).parent.parent / "fixtures" / "acm" / "rivals.xml"
GET_RANDOM = "80010000000c0000017b0008"
STARTUP = "80010000000c000001440000"


def vtpmctl(doms0: Doms0Process, *args: str | Path, token: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **doms0.env()}
    if token is not None:
        env["VTPM_TOKEN_FILE"] = str(token)
    return subprocess.run([sys.executable, "-m", "domS0.cli.vtpmctl", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=120)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def denied(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PERMISSION_DENIED" in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def audit(doms0: Doms0Process) -> list[dict[str, object]]:
    path = doms0.state_dir / "security" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] \
        if path.exists() else []


def domain_token(doms0: Doms0Process, name: str, tmp_path: Path) -> Path:
    return doms0.issue(f"domain:{name}", tmp_path / name, token=True) / "token"


def test_a_domain_touches_only_its_own_vtpm(start_doms0: DomS0Factory, engine: str,
                                            tmp_path: Path) -> None:
    doms0 = start_doms0(engine)
    for name in ("vm1", "vm2"):
        ok(vtpmctl(doms0, "create", name, "--engine", engine))
        ok(vtpmctl(doms0, "transmit", name, STARTUP))
    vm1 = domain_token(doms0, "vm1", tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"vm2's disk key")
    blob = tmp_path / "vm2.blob"
    ok(vtpmctl(doms0, "seal", "vm2", "--in", secret, "--out", blob, "--policy",
               "current:sha256:0"))

    # Its own vTPM: yes; the listing shows it alone.
    ok(vtpmctl(doms0, "transmit", "vm1", GET_RANDOM, token=vm1))
    listed = json.loads(ok(vtpmctl(doms0, "list", "--json", token=vm1)))
    assert [v["name"] for v in listed] == ["vm1"]
    # Every RPC on another domain's vTPM: refused, each with its own audit line.
    attempts: list[tuple[str, ...]] = [
        ("show", "vm2"), ("transmit", "vm2", GET_RANDOM), ("stop", "vm2"),
        ("start", "vm2"), ("delete", "vm2"), ("certs", "vm2", "--out", str(tmp_path / "c")),
        ("eventlog", "vm2", "--out", str(tmp_path / "e")),
        ("quote", "vm2", "--nonce", "00ff", "--out", str(tmp_path / "q")),
        ("seal", "vm2", "--in", str(secret), "--out", str(tmp_path / "b2"), "--policy",
         "current:sha256:0"),
        ("unseal", "vm2", "--in", str(blob)),
        ("migrate", "vm2", "--to", "127.0.0.1:1"),
    ]
    for args in attempts:
        denied(vtpmctl(doms0, *args, token=vm1), "domain:vm1", "vm2")
    # The attach front end, too.
    attach = vtpmctl(doms0, "attach", "vm2", "--swtpm", f"unix:{tmp_path / 'vm2.sock'}",
                     token=vm1)
    denied(attach, "domain:vm1")
    # Administrative operations on its own vTPM are not a domain's either.
    denied(vtpmctl(doms0, "delete", "vm1", token=vm1), "may not delete")
    denied(vtpmctl(doms0, "policy", "load", POLICY, token=vm1), "may not policy_load")
    denied(vtpmctl(doms0, "label", "add", "dom-A", "dom", "vm1", token=vm1))

    entries = [e for e in audit(doms0) if e["subject"] == "domain:vm1"]
    actions = {str(e["action"]) for e in entries if e.get("object") == "vm2"}
    assert {"read", "transmit", "stop", "start", "delete", "quote", "seal", "unseal",
            "migrate_out", "attach"} <= actions, actions
    assert all(e["decision"] == "deny" and e["enforced"] for e in entries)
    # Nothing was done to vm2.
    assert json.loads(ok(vtpmctl(doms0, "show", "vm2", "--json")))["state"] == \
        "VTPM_STATE_RUNNING"
    # No credential at all: UNAUTHENTICATED.
    missing = vtpmctl(doms0, "list", token=tmp_path / "no-such-token")
    assert missing.returncode != 0
    empty = tmp_path / "empty-token"
    empty.write_text("not-a-token\n")
    refused = vtpmctl(doms0, "list", token=empty)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr


def test_simple_type_enforcement_follows_the_labels(start_doms0: DomS0Factory,
                                                    tmp_path: Path) -> None:
    doms0 = start_doms0("builtin", extra_args=("--security-modules", "acm,dummy"))
    ok(vtpmctl(doms0, "policy", "make", POLICY, "--out", tmp_path / "rivals.acm"))
    ok(vtpmctl(doms0, "policy", "load", tmp_path / "rivals.acm"))
    shown = ok(vtpmctl(doms0, "policy", "show"))
    assert "hooks-test" in shown and "acm:chwall" in shown
    ok(vtpmctl(doms0, "label", "add", "dom-A", "dom", "vm1"))
    ok(vtpmctl(doms0, "label", "add", "res-B", "res", "vm1"))   # vm1's vTPM: only type B
    ok(vtpmctl(doms0, "create", "vm1"))
    vm1 = domain_token(doms0, "vm1", tmp_path)
    denied(vtpmctl(doms0, "transmit", "vm1", STARTUP, token=vm1), "share no type")
    ok(vtpmctl(doms0, "label", "add", "res-A", "res", "vm1"))    # now they share A
    ok(vtpmctl(doms0, "transmit", "vm1", STARTUP, token=vm1))
    labels = ok(vtpmctl(doms0, "label", "list"))
    assert "res  vm1" in labels and "res-A" in labels
    bad = vtpmctl(doms0, "label", "add", "no-such-label", "res", "vm1")
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr


def test_chinese_wall_and_a_reload_that_would_break_it(start_doms0: DomS0Factory,
                                                       tmp_path: Path) -> None:
    doms0 = start_doms0("builtin", extra_args=("--security-modules", "acm,dummy"))
    ok(vtpmctl(doms0, "policy", "load", POLICY))
    for name, label in (("vm1", "A"), ("vm2", "B")):
        ok(vtpmctl(doms0, "label", "add", f"dom-{label}", "dom", name))
        ok(vtpmctl(doms0, "label", "add", f"res-{label}", "res", name))
    ok(vtpmctl(doms0, "create", "vm1"))                          # A runs
    denied(vtpmctl(doms0, "create", "vm2"), "chwall")           # B may not start beside it
    ok(vtpmctl(doms0, "create", "vm2", "--stopped"))
    denied(vtpmctl(doms0, "start", "vm2"), "rivals")
    ok(vtpmctl(doms0, "stop", "vm1"))
    ok(vtpmctl(doms0, "start", "vm2"))
    denied(vtpmctl(doms0, "start", "vm1"), "chwall")
    # A policy in which vm2's running labels no longer share a type is refused.
    stricter = POLICY.read_text().replace(
        "<Name>res-B</Name>\n        <SimpleTypeEnforcementTypes><Type>B</Type>",
        "<Name>res-B</Name>\n        <SimpleTypeEnforcementTypes><Type>A</Type>")
    assert stricter != POLICY.read_text()
    (tmp_path / "stricter.xml").write_text(stricter)
    refused = vtpmctl(doms0, "policy", "load", tmp_path / "stricter.xml")
    assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr
    assert "would break what runs" in refused.stderr and "vm2" in refused.stderr
    assert "hooks-test" in ok(vtpmctl(doms0, "policy", "show"))


def test_permissive_mode_logs_the_denial_and_lets_it_through(start_doms0: DomS0Factory,
                                                             tmp_path: Path) -> None:
    doms0 = start_doms0("builtin", extra_args=("--permissive",))
    ok(vtpmctl(doms0, "create", "vm2"))
    vm1 = domain_token(doms0, "vm1", tmp_path)
    ok(vtpmctl(doms0, "transmit", "vm2", STARTUP, token=vm1))
    [entry] = [e for e in audit(doms0) if e["subject"] == "domain:vm1"]
    assert entry["decision"] == "deny" and entry["enforced"] is False
    assert entry["action"] == "transmit" and entry["object"] == "vm2"
    assert entry["command_code"] == "0x00000144"
    assert "PERMISSIVE" in doms0.log()


def test_an_older_approval_list_is_refused(start_doms0: DomS0Factory,
                                           tmp_path: Path) -> None:
    doms0 = start_doms0("builtin")
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = tmp_path / "approval.pem", tmp_path / "approval.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    measured = subprocess.run([sys.executable, "-m", "domS0.cli.doms0", "hosts", "measure"],
                              capture_output=True, text=True, check=True).stdout
    code = measured.split("code:")[1].split()[0]
    ok(vtpmctl(doms0, "group", "create", "tenant", "--key", public))
    # A vTPM of the group does not start before the group approves this DomS0.
    denied(vtpmctl(doms0, "create", "vm1", "--meta", "group=tenant"), "approval list")
    for sequence, measurement in ((2, code), (1, code), (2, "00" * 32)):
        ok(vtpmctl(doms0, "group", "sign", "--key", private, "--group", "tenant",
                   "--sequence", str(sequence), "--measurement", measurement, "--out",
                   tmp_path / f"list-{sequence}-{measurement[:4]}.json"))
    ok(vtpmctl(doms0, "group", "load", tmp_path / f"list-2-{code[:4]}.json"))
    ok(vtpmctl(doms0, "create", "vm1", "--meta", "group=tenant"))
    for stale in (f"list-1-{code[:4]}.json", "list-2-0000.json"):
        refused = vtpmctl(doms0, "group", "load", tmp_path / stale)
        assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr
        assert "not newer than the stored list 2" in refused.stderr
    assert "list 2" in ok(vtpmctl(doms0, "group", "list"))


# The refusal is the policy's, before any TPM state moves; test_migration.py moves
# vTPMs of both engines.
@only_on("builtin")
def test_migrating_next_to_a_rival_is_refused(engine: str, tmp_path: Path) -> None:
    ca = create_hosts_ca(tmp_path / "ca")
    args = ("--security-modules", "acm,dummy")
    nodes = [MigrationNode(tmp_path / n, n, ca, engine=engine, extra_args=args)
             for n in ("host-a", "host-b")]
    try:
        a, b = (node.provision().start() for node in nodes)
        for doms0 in (a, b):
            ok(vtpmctl(doms0, "policy", "load", POLICY))
            for name, label in (("vm1", "A"), ("vm2", "B")):
                ok(vtpmctl(doms0, "label", "add", f"dom-{label}", "dom", name))
                ok(vtpmctl(doms0, "label", "add", f"res-{label}", "res", name))
        ok(vtpmctl(a, "create", "vm1", "--engine", engine))
        ok(vtpmctl(b, "create", "vm2", "--engine", engine))         # vm1's rival runs on B
        refused = vtpmctl(a, "migrate", "vm1", "--to", nodes[1].migration_address)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "PERMISSION_DENIED" in refused.stderr and "chwall" in refused.stderr
        assert json.loads(ok(vtpmctl(a, "show", "vm1", "--json")))["state"] == \
            "VTPM_STATE_RUNNING"
        ok(vtpmctl(a, "transmit", "vm1", STARTUP))
        assert any(e["action"] == "migrate_in" and e["decision"] == "deny"
                   for e in audit(b))
        # With the rival stopped, the same migration goes through.
        ok(vtpmctl(b, "stop", "vm2"))
        ok(vtpmctl(a, "migrate", "vm1", "--to", nodes[1].migration_address))
        assert json.loads(ok(vtpmctl(b, "show", "vm1", "--json")))["state"] == \
            "VTPM_STATE_RUNNING"
    finally:
        for node in nodes:
            node.stop()
