"""SIGKILL at each step of a migration, then restarts: the vTPM is live in exactly one
place, with its state intact.

Two DomS0 hosts, A (source) and B (destination). One of them is started with
``DOMS0_FAILPOINT=NAME`` and kills itself at that point of ``vtpmctl migrate``; it is
restarted without the failpoint and the resolvers settle the migration. Then exactly
one of A and B runs the vTPM (the other shows it ``migrated`` or not at all, and
refuses its commands), PCR 16 holds the value extended before the migration, and a
clean restart of both hosts changes nothing.

Which side wins is fixed by the source's decision, the tombstone: a crash before it
leaves the vTPM on A, a crash after it leaves it on B.

Every failpoint runs with builtin vTPMs (the default engine); with swtpm vTPMs, the one
after which the destination must bring the vTPM up from its pending copy (CI time: the
protocol, not the engine, decides at each point, and the engine's part, its state
exported and restored, is the same at each).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.harness import Doms0Process, MigrationNode, create_hosts_ca
from domS0.migration.failpoints import POINTS
from tests import tpm2
from tests.conftest import require_tool

VTPM = "dom1"
PCR = 16
EXTEND_DIGEST = hashlib.sha256(b"migration crash test").digest()
#: PCR 16 after Startup(CLEAR) and one extend.
EXPECTED_PCR = hashlib.sha256(bytes(32) + EXTEND_DIGEST).digest()
#: Failpoints before the source stores its decision leave the vTPM on A; after, on B.
BEFORE_DECISION = ("source-after-hello", "source-after-outgoing",
                   "destination-after-pending", "source-after-transfer")
AFTER_DECISION = ("source-after-tombstone", "destination-after-activate")
#: What the surviving host shows while the killed one is down: a pending copy is not
#: served, and a source that heard the destination fail keeps the vTPM.
SURVIVOR_STATE = {
    "source-after-hello": "not_found",          # B: nothing stored
    "source-after-outgoing": "not_found",       # B: nothing sent
    "destination-after-pending": "running",     # A: Transfer failed, aborted, live
    "source-after-transfer": "migrating",       # B: pending copy, not served
    "source-after-tombstone": "migrating",      # B: pending copy, Commit never came
    "destination-after-activate": "migrated",   # A: tombstone stored
}
SETTLE_SECONDS = 20.0
CTL_TIMEOUT = 60

assert set(BEFORE_DECISION) | set(AFTER_DECISION) == set(POINTS) == set(SURVIVOR_STATE), \
    "a failpoint was added or renamed: classify it here"


#: The failpoint that also runs with swtpm vTPMs: decided, then B activates its copy.
SWTPM_POINTS = ("source-after-tombstone",)
CRASH_CASES = [("builtin", point) for point in POINTS] + \
    [("swtpm", point) for point in SWTPM_POINTS]


@pytest.fixture
def nodes(tmp_path: Path, engine: str) -> Iterator[tuple[MigrationNode, MigrationNode]]:
    """Hosts A and B (host TPMs: swtpm) whose vTPMs run on ``engine``."""
    require_tool("swtpm")
    ca = create_hosts_ca(tmp_path / "ca")
    started: list[MigrationNode] = []
    try:
        for name in ("a", "b"):
            node = MigrationNode(tmp_path / name, f"host-{name}", ca, engine=engine)
            started.append(node)
            node.provision()
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()


# -- talking to a DomS0 ------------------------------------------------------------------

def _doms0(node: MigrationNode) -> Doms0Process:
    assert node.doms0 is not None
    return node.doms0


def vtpmctl(node: MigrationNode, *args: str, timeout: float = CTL_TIMEOUT
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "domS0.cli.vtpmctl", *args],
                          env=_doms0(node).env(), capture_output=True, text=True,
                          timeout=timeout)


def transmit(node: MigrationNode, command: bytes) -> bytes:
    """One TPM command over DomS0's gRPC Transmit (raises grpc.RpcError)."""
    with _doms0(node).channel() as channel:
        reply = pb_grpc.TpmStub(channel).Transmit(
            pb.TransmitRequest(vtpm=VTPM, command=command), timeout=30)
    return bytes(reply.response)


def state_of(node: MigrationNode) -> str:
    """What ``vtpmctl show`` would say (``running``, ``migrated`` ...), or
    ``not_found``; ``unreachable`` while that DomS0 does not answer."""
    try:
        with _doms0(node).channel() as channel:
            vtpm = pb_grpc.ManagerStub(channel).GetVtpm(pb.GetVtpmRequest(vtpm=VTPM),
                                                        timeout=10)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        if code == grpc.StatusCode.NOT_FOUND:
            return "not_found"
        return "unreachable"
    return pb.VtpmState.Name(vtpm.state).removeprefix("VTPM_STATE_").lower()


def cli_state(node: MigrationNode) -> str:
    """``vtpmctl show dom1 --json``: the state, or ``not_found``."""
    done = vtpmctl(node, "show", VTPM, "--json")
    if done.returncode != 0:
        assert "NOT_FOUND" in done.stderr, done.stderr
        return "not_found"
    state = str(json.loads(done.stdout)["state"])
    return state.removeprefix("VTPM_STATE_").lower()


def logs(*nodes: MigrationNode) -> str:
    return "\n".join(f"--- {n.name} ---\n{_doms0(n).log()[-6000:]}" for n in nodes)


# -- the checks ----------------------------------------------------------------------------

def wait_single_copy(a: MigrationNode, b: MigrationNode) -> MigrationNode:
    """Poll until exactly one of A and B runs the vTPM and the other shows it migrated
    or not at all; returns the live one."""
    deadline = time.monotonic() + SETTLE_SECONDS
    states: tuple[str, str] = ("", "")
    while time.monotonic() < deadline:
        states = (state_of(a), state_of(b))
        assert states != ("running", "running"), f"two live copies\n{logs(a, b)}"
        if sorted(states) in (["migrated", "running"], ["not_found", "running"]):
            return a if states[0] == "running" else b
        time.sleep(0.25)
    pytest.fail(f"no single live copy after {SETTLE_SECONDS} s: A {states[0]}, "
                f"B {states[1]}\n{logs(a, b)}")


def check_single_copy(a: MigrationNode, b: MigrationNode, expected: MigrationNode
                      ) -> None:
    live = wait_single_copy(a, b)
    other = b if live is a else a
    assert live is expected, f"the vTPM ended live on {live.name}, not {expected.name}"
    # The same through the CLI, as an operator would see it.
    assert cli_state(live) == "running"
    assert cli_state(other) in ("migrated", "not_found")
    done = vtpmctl(live, "transmit", VTPM, tpm2.pcr_read_sha256(PCR).hex())
    assert done.returncode == 0, done.stderr
    assert tpm2.pcr_value_from_read(bytes.fromhex(done.stdout.strip())) == EXPECTED_PCR, \
        f"PCR {PCR} on {live.name} lost the extend made before the migration"
    done = vtpmctl(other, "transmit", VTPM, tpm2.pcr_read_sha256(PCR).hex())
    assert done.returncode != 0, f"{other.name} still answers: {done.stdout}"
    assert "FAILED_PRECONDITION" in done.stderr or "NOT_FOUND" in done.stderr, done.stderr
    with pytest.raises(grpc.RpcError) as refused:
        transmit(other, tpm2.get_random(8))
    assert refused.value.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                    grpc.StatusCode.NOT_FOUND)


def restart_both(a: MigrationNode, b: MigrationNode) -> None:
    for node in (a, b):
        _doms0(node).stop()         # DomS0 only: the host TPM stays up
    for node in (a, b):
        node.start()


def create_and_extend(a: MigrationNode) -> None:
    done = vtpmctl(a, "create", VTPM, "--engine", a.engine)
    assert done.returncode == 0, done.stderr
    done = vtpmctl(a, "transmit", VTPM, "80010000000c000001440000")    # Startup(CLEAR)
    assert done.returncode == 0, done.stderr
    assert tpm2.rc_of(bytes.fromhex(done.stdout.strip())) == 0
    assert tpm2.rc_of(transmit(a, tpm2.pcr_extend_sha256(PCR, EXTEND_DIGEST))) == 0
    assert tpm2.pcr_value_from_read(transmit(a, tpm2.pcr_read_sha256(PCR))) == EXPECTED_PCR


# -- the tests -----------------------------------------------------------------------------

@pytest.mark.parametrize(("engine", "failpoint"), CRASH_CASES, indirect=["engine"])
def test_crash_at_each_step_leaves_one_live_copy(
        nodes: tuple[MigrationNode, MigrationNode], failpoint: str) -> None:
    a, b = nodes
    victim = a if failpoint.startswith("source-") else b
    for node in (a, b):
        node.start(failpoint=failpoint if node is victim else "")
    create_and_extend(a)

    migrate = vtpmctl(a, "migrate", VTPM, "--to", b.migration_address, timeout=120)
    proc = _doms0(victim).proc
    assert proc is not None
    deadline = time.monotonic() + 30
    while proc.poll() is None:
        assert time.monotonic() < deadline, \
            f"{victim.name} did not die at {failpoint} (migrate exited " \
            f"{migrate.returncode}: {migrate.stderr})\n{logs(a, b)}"
        time.sleep(0.05)
    assert proc.returncode == -9, f"{victim.name} exited {proc.returncode}, not SIGKILL"
    survivor = b if victim is a else a
    assert state_of(survivor) == SURVIVOR_STATE[failpoint], logs(a, b)
    if SURVIVOR_STATE[failpoint] != "running":
        with pytest.raises(grpc.RpcError) as refused:
            transmit(survivor, tpm2.get_random(8))
        assert refused.value.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                        grpc.StatusCode.NOT_FOUND)
    victim.start()

    expected = a if failpoint in BEFORE_DECISION else b
    check_single_copy(a, b, expected)
    restart_both(a, b)
    check_single_copy(a, b, expected)


def test_restart_after_migration_keeps_one_copy(
        nodes: tuple[MigrationNode, MigrationNode]) -> None:
    a, b = nodes
    for node in (a, b):
        node.start()
    create_and_extend(a)
    done = vtpmctl(a, "migrate", VTPM, "--to", b.migration_address, timeout=120)
    assert done.returncode == 0, done.stderr
    check_single_copy(a, b, b)
    for node in (a, b):
        _doms0(node).kill()
    for node in (a, b):
        node.start()
    check_single_copy(a, b, b)
