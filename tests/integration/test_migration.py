"""Migrating vTPMs between real DomS0 processes, each with its own swtpm host TPM and a
certificate from a hosts CA, the vTPMs on either engine: the TPM state (PCRs, NV,
persistent keys, EK certificate, sealed secrets, clock) arrives intact; the source keeps
a tombstone naming the new host; unapproved or untrusted destinations are refused and
the vTPM stays live; the destination's Migration service refuses replayed sessions and
second copies."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SU, TPMA_NV
from tpm2_pytss.types import (
    TPM2B_NV_PUBLIC,
    TPML_DIGEST_VALUES,
    TPMS_NV_PUBLIC,
    TPMT_HA,
    TPMU_HA,
)

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.demo import SAMPLE_CMDLINE, write_sample_domain
from domS0.harness import Doms0Process, MigrationNode, create_hosts_ca
from domS0.migration.identity import HostIdentity
from tests.conftest import only_on, require_tool
from tests.integration.test_measured_launch import ok, vtpmctl
from tests.integration.test_sealing_flow import refused
from vtpm_manager.manufacture import esapi_over

SECRET = b"migrating disk key \x00\xff\n"
NV_INDEX = 0x01500020
NV_DATA = b"NV contents that must follow the vTPM"
PERSISTENT = 0x81000010
PCRS = "sha256:0,1,16"
GET_RANDOM_8 = "80010000000c0000017b0008"


@pytest.fixture(scope="module")
def hosts_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("swtpm")
    return create_hosts_ca(tmp_path_factory.mktemp("hosts-ca") / "ca")


Nodes = Callable[..., tuple[MigrationNode, Doms0Process]]


@pytest.fixture
def nodes(tmp_path: Path, hosts_ca: Path, engine: str) -> Iterator[Nodes]:
    """Provision and start migration nodes (own folder each) whose vTPMs run on
    ``engine``; stop them all afterwards."""
    started: list[MigrationNode] = []

    def node(name: str, ca: Path | None = None, extra_args: tuple[str, ...] = ()
             ) -> tuple[MigrationNode, Doms0Process]:
        n = MigrationNode(tmp_path / name, name, ca or hosts_ca, engine=engine,
                          extra_args=extra_args)
        started.append(n)
        n.provision()
        return n, n.start()

    try:
        yield node
    finally:
        for n in started:
            n.stop()


@contextmanager
def esapi(doms0: Doms0Process, name: str) -> Iterator[ESAPI]:
    """ESAPI over DomS0's gRPC Transmit for one vTPM."""
    with doms0.channel() as channel:
        stub = pb_grpc.TpmStub(channel)

        def execute(command: bytes) -> bytes:
            return bytes(stub.Transmit(pb.TransmitRequest(vtpm=name, command=command),
                                       timeout=60).response)

        with esapi_over(execute) as context:
            yield context


def extend(tpm: ESAPI, pcr: ESYS_TR, data: bytes) -> None:
    digest = hashlib.sha256(data).digest()
    tpm.pcr_extend(pcr, TPML_DIGEST_VALUES(
        [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))]))


def pcr_values(tpm: ESAPI) -> list[bytes]:
    _, _, values = tpm.pcr_read(PCRS)
    return [bytes(v) for v in values]


def read_clock(tpm: ESAPI) -> tuple[int, int, int]:
    info = tpm.read_clock()
    return int(info.clockInfo.clock), int(info.clockInfo.resetCount), \
        int(info.clockInfo.restartCount)


def migrate(source: Doms0Process, name: str, destination: MigrationNode
            ) -> subprocess.CompletedProcess[str]:
    return vtpmctl(source, "migrate", name, "--to", destination.migration_address)


def show(doms0: Doms0Process, name: str) -> dict[str, Any]:
    return json.loads(ok(vtpmctl(doms0, "show", name, "--json")))


def assert_tombstone(doms0: Doms0Process, name: str, host: str, generation: int) -> None:
    shown = show(doms0, name)
    assert shown["state"] == "VTPM_STATE_MIGRATED", shown
    assert shown["migration"]["state"] == "migrated", shown
    assert shown["migration"]["peer_host"] == host, shown
    assert int(shown["migration"]["generation"]) == generation, shown
    text = ok(vtpmctl(doms0, "show", name))
    assert "state:          migrated" in text, text
    assert f"moved to {host}" in text, text


def certificates(doms0: Doms0Process, name: str, out: Path) -> dict[str, str]:
    ok(vtpmctl(doms0, "certs", name, "--out", out))
    return {p.name: p.read_text() for p in sorted(out.glob("ek-*.pem"))}


def new_vtpm(doms0: Doms0Process, name: str = "dom1") -> list[bytes]:
    """A vTPM on DomS0's engine, started, with PCRs 0, 1 and 16 extended; returns
    their values."""
    ok(vtpmctl(doms0, "create", name, "--engine", doms0.engine))
    with esapi(doms0, name) as tpm:
        tpm.startup(TPM2_SU.CLEAR)
        extend(tpm, ESYS_TR.PCR0, b"firmware")
        extend(tpm, ESYS_TR.PCR1, b"config")
        extend(tpm, ESYS_TR.PCR16, b"debug")
        return pcr_values(tpm)


def test_tpm_state_sealed_secret_and_ek_follow_the_vtpm(nodes: Nodes, tmp_path: Path
                                                        ) -> None:
    _a, da = nodes("host-a")
    b, db = nodes("host-b")
    pcrs = new_vtpm(da)
    with esapi(da, "dom1") as tpm:
        nv = tpm.nv_define_space(b"", TPM2B_NV_PUBLIC(nvPublic=TPMS_NV_PUBLIC(
            nvIndex=NV_INDEX, nameAlg=TPM2_ALG.SHA256,
            attributes=TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE | TPMA_NV.OWNERREAD
            | TPMA_NV.OWNERWRITE, dataSize=len(NV_DATA))))
        tpm.nv_write(nv, NV_DATA)
        primary, _, _, _, _ = tpm.create_primary(None, "ecc256:aes128cfb")
        persistent = tpm.evict_control(ESYS_TR.OWNER, primary, PERSISTENT)
        _, key_name, _ = tpm.read_public(persistent)
        key_name_before = bytes(key_name)
    (tmp_path / "secret").write_bytes(SECRET)
    blob = tmp_path / "blob.json"
    ok(vtpmctl(da, "seal", "dom1", "--in", tmp_path / "secret", "--out", blob,
               "--policy", "current:sha256:0,1"))
    ek_before = certificates(da, "dom1", tmp_path / "certs-a")
    assert ek_before, "no EK certificate before the migration"

    out = ok(migrate(da, "dom1", b))
    assert "100%" in out and "host-b" in out, out

    with esapi(db, "dom1") as tpm:
        assert pcr_values(tpm) == pcrs
        nv = tpm.tr_from_tpmpublic(NV_INDEX)
        assert bytes(tpm.nv_read(nv, len(NV_DATA))) == NV_DATA
        _, key_name, _ = tpm.read_public(tpm.tr_from_tpmpublic(PERSISTENT))
        assert bytes(key_name) == key_name_before
    assert certificates(db, "dom1", tmp_path / "certs-b") == ek_before
    ok(vtpmctl(db, "unseal", "dom1", "--in", blob, "--out", tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == SECRET
    assert show(db, "dom1")["state"] == "VTPM_STATE_RUNNING"

    # The source keeps only a tombstone that says where the vTPM went.
    assert_tombstone(da, "dom1", "host-b", 1)
    for args in (("transmit", "dom1", GET_RANDOM_8), ("start", "dom1"),
                 ("unseal", "dom1", "--in", blob),
                 ("seal", "dom1", "--in", tmp_path / "secret", "--out", tmp_path / "b2",
                  "--policy", "current:sha256:0,1"),
                 ("quote", "dom1", "--out", tmp_path / "quote"),
                 ("certs", "dom1", "--out", tmp_path / "certs-gone"),
                 ("eventlog", "dom1", "--out", tmp_path / "eventlog")):
        refused(vtpmctl(da, *args), "FAILED_PRECONDITION", "was migrated to host-b")
    assert not (tmp_path / "quote" / "evidence.json").exists()
    assert not (tmp_path / "certs-gone").exists() and not (tmp_path / "b2").exists()


# Three hosts: the TPM state carried is the same as in the test above (both engines).
@only_on("builtin")
def test_round_trip_through_three_hosts_ends_live_on_the_first(nodes: Nodes) -> None:
    a, da = nodes("host-a")
    b, db = nodes("host-b")
    c, dc = nodes("host-c")
    pcrs = new_vtpm(da)
    ok(migrate(da, "dom1", b))
    ok(migrate(db, "dom1", c))
    ok(migrate(dc, "dom1", a))

    shown = show(da, "dom1")
    assert shown["state"] == "VTPM_STATE_RUNNING", shown
    with esapi(da, "dom1") as tpm:
        assert pcr_values(tpm) == pcrs
        extend(tpm, ESYS_TR.PCR16, b"back home")      # live, and still the same TPM
        assert pcr_values(tpm)[:2] == pcrs[:2]
    assert_tombstone(db, "dom1", "host-c", 2)
    assert_tombstone(dc, "dom1", "host-a", 3)
    refused(vtpmctl(db, "transmit", "dom1", GET_RANDOM_8), "FAILED_PRECONDITION", "host-c")
    refused(vtpmctl(dc, "transmit", "dom1", GET_RANDOM_8), "FAILED_PRECONDITION", "host-a")


# Refused before the vTPM is touched: the engine plays no part.
@only_on("builtin")
def test_destination_running_unapproved_code_is_refused(nodes: Nodes) -> None:
    _a, da = nodes("host-a", extra_args=("--allow-code", "00" * 32))
    b, db = nodes("host-b")
    pcrs = new_vtpm(da)
    refused(migrate(da, "dom1", b), "PERMISSION_DENIED", "code measurement", "not approved")
    ok(vtpmctl(da, "transmit", "dom1", GET_RANDOM_8))
    assert show(da, "dom1")["state"] == "VTPM_STATE_RUNNING"
    assert "migration" not in show(da, "dom1") or not show(da, "dom1")["migration"]
    with esapi(da, "dom1") as tpm:
        assert pcr_values(tpm) == pcrs
    refused(vtpmctl(db, "show", "dom1"), "NOT_FOUND")


# Refused in the TLS handshake: the engine plays no part.
@only_on("builtin")
def test_destination_certified_by_another_hosts_ca_is_refused(
        nodes: Nodes, tmp_path: Path) -> None:
    _a, da = nodes("host-a")
    other_ca = create_hosts_ca(tmp_path / "other-ca")
    b, db = nodes("host-b", ca=other_ca)
    new_vtpm(da)
    result = migrate(da, "dom1", b)
    # DomS0 answers UNAVAILABLE (the TLS handshake with B failed): a refusal by DomS0
    # (exit 1) that names the destination, not "cannot reach DomS0" (exit 3).
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot reach DomS0" not in result.stderr
    assert "the vTPM stays here" in result.stderr, result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr \
        or "PERMISSION_DENIED:" in result.stderr, result.stderr
    ok(vtpmctl(da, "transmit", "dom1", GET_RANDOM_8))
    assert show(da, "dom1")["state"] == "VTPM_STATE_RUNNING"
    refused(vtpmctl(db, "show", "dom1"), "NOT_FOUND")


# On swtpm, the quote test below checks the signed clock fields across a migration.
@only_on("builtin")
def test_clock_and_counters_do_not_go_back(nodes: Nodes) -> None:
    _a, da = nodes("host-a")
    b, db = nodes("host-b")
    new_vtpm(da)
    with esapi(da, "dom1") as tpm:
        before = read_clock(tpm)
    ok(migrate(da, "dom1", b))
    with esapi(db, "dom1") as tpm:
        after = read_clock(tpm)
    clock, reset_count, restart_count = after
    assert clock >= before[0], (before, after)
    assert reset_count >= before[1], (before, after)
    assert restart_count >= before[2], (before, after)


def quote_clock(doms0: Doms0Process, out: Path, manifest: Path, ca: Path) -> dict[str, Any]:
    """A fresh quote, verified against the build's manifest; its signed clock fields."""
    nonce = secrets.token_hex(16)
    ok(vtpmctl(doms0, "quote", "dom1", "--nonce", nonce, "--out", out))
    ok(vtpmctl(doms0, "verify", out, "--manifest", manifest, "--ca", ca, "--nonce", nonce))
    evidence = json.loads((out / "evidence.json").read_text())
    return dict(evidence["clock_info"])


def test_a_quote_after_migration_verifies_and_its_clock_does_not_go_back(
        nodes: Nodes, tmp_path: Path) -> None:
    _a, da = nodes("host-a")
    b, db = nodes("host-b")
    kernel, initrd = write_sample_domain(tmp_path / "domain")
    manifest = tmp_path / "manifest.json"
    ok(vtpmctl(da, "build", "dom1", "--kernel", kernel, "--initrd", initrd, "--cmdline",
               SAMPLE_CMDLINE, "--engine", da.engine, "--manifest-out", manifest))
    ok(vtpmctl(da, "certs", "dom1", "--out", tmp_path / "certs"))
    ca = tmp_path / "certs" / "ca.pem"
    before = quote_clock(da, tmp_path / "before", manifest, ca)
    ok(migrate(da, "dom1", b))
    after = quote_clock(db, tmp_path / "after", manifest, ca)
    assert after["clock"] >= before["clock"], (before, after)
    assert after["reset_count"] >= before["reset_count"], (before, after)
    assert after["restart_count"] >= before["restart_count"], (before, after)
    assert after["safe"]


# The Migration service's own checks, before any TPM state is read.
@only_on("builtin")
def test_migration_service_refuses_replays_and_second_copies(nodes: Nodes) -> None:
    a, da = nodes("host-a")
    b, db = nodes("host-b")
    new_vtpm(da)
    ok(migrate(da, "dom1", b))
    ok(migrate(db, "dom1", a))                 # generation 2: live on A again
    ok(vtpmctl(da, "transmit", "dom1", GET_RANDOM_8))
    ok(vtpmctl(db, "create", "dom2", "--engine", db.engine))
    live_on_b = show(db, "dom2")["uuid"]

    # Play host A by hand against B's Migration service, with A's TLS material.
    identity = HostIdentity.load(a.tls_dir / "host.pem", a.tls_dir / "host.key",
                                 a.ca_dir / "ca.pem")
    with identity.channel(b.migration_address) as channel:
        stub = pb_grpc.MigrationStub(channel)
        hello = stub.Hello(pb.HelloRequest(source_nonce=secrets.token_bytes(32),
                                           vtpm_uuid=str(uuid.uuid4()), generation=1),
                           timeout=60)
        assert hello.host_name == "host-b" and len(hello.session) == 32
        transfer = pb.TransferRequest(session=hello.session, package=b"garbage" * 10)
        with pytest.raises(grpc.RpcError) as refusal:
            stub.Transfer(transfer, timeout=60)
        assert refusal.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "package refused" in refusal.value.details()
        with pytest.raises(grpc.RpcError) as replay:
            stub.Transfer(transfer, timeout=60)
        assert replay.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "already used" in replay.value.details()

        with pytest.raises(grpc.RpcError) as second_copy:
            stub.Hello(pb.HelloRequest(source_nonce=secrets.token_bytes(32),
                                       vtpm_uuid=live_on_b, generation=1), timeout=60)
        assert second_copy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "live on host-b" in second_copy.value.details()

        # dom1 left B at migration 2: an old generation for it is no newer.
        dom1 = show(da, "dom1")["uuid"]
        with pytest.raises(grpc.RpcError) as stale:
            stub.Hello(pb.HelloRequest(source_nonce=secrets.token_bytes(32),
                                       vtpm_uuid=dom1, generation=1), timeout=60)
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "is not newer" in stale.value.details()
    assert_tombstone(db, "dom1", "host-a", 2)
