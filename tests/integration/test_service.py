"""DomS0 as a service: health, reflection, logs, config, Unix sockets, concurrency."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.client.channel import open_channel
from domS0.harness import Doms0Process
from tests import tpm2


def test_health_and_reflection_need_no_token(doms0: Doms0Process) -> None:
    with grpc.insecure_channel(doms0.address) as channel:
        for service in ("", "vtpm.v1.Manager", "vtpm.v1.Tpm"):
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in next(answers).list_services_response.service}
        assert {"vtpm.v1.Manager", "vtpm.v1.Tpm", "grpc.health.v1.Health"} <= names


def test_one_json_log_line_per_command(start_doms0, tmp_path: Path) -> None:
    doms0 = start_doms0("builtin", log_format="json")
    with doms0.channel() as channel:
        pb_grpc.ManagerStub(channel).CreateVtpm(pb.CreateVtpmRequest(name="vm", start=True))
        tpm = pb_grpc.TpmStub(channel)
        tpm.Transmit(pb.TransmitRequest(vtpm="vm", command=tpm2.startup_clear()))
        tpm.Transmit(pb.TransmitRequest(vtpm="vm", command=tpm2.get_random(16), locality=2))
    lines = [json.loads(line) for line in doms0.log().splitlines() if line.startswith("{")]
    commands = [e for e in lines if e.get("msg") == "tpm command"]
    assert [e["command"] for e in commands] == ["TPM2_Startup", "TPM2_GetRandom"]
    last = commands[-1]
    assert last["vtpm"] == "vm" and last["rc"] == "0x0" and last["locality"] == 2
    assert last["caller"].startswith("admin:local@ipv4:127.0.0.1:") and last["duration_ms"] >= 0
    assert doms0.token not in doms0.log(), "the client token must never be logged"


def test_commands_to_one_vtpm_are_serialized(doms0: Doms0Process, vtpm: pb.Vtpm) -> None:
    """Many threads extend the same PCR: no extend is lost or torn."""
    with doms0.channel() as channel:
        tpm = pb_grpc.TpmStub(channel)
        tpm.Transmit(pb.TransmitRequest(vtpm=vtpm.name, command=tpm2.startup_clear()))
        digest = hashlib.sha256(b"same").digest()
        extend = tpm2.pcr_extend_sha256(16, digest)

        def one(_: int) -> int:
            response = tpm.Transmit(pb.TransmitRequest(vtpm=vtpm.name, command=extend))
            return tpm2.rc_of(bytes(response.response))

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(one, range(64))) == {0}
        value = bytes(32)
        for _ in range(64):
            value = hashlib.sha256(value + digest).digest()
        read = tpm.Transmit(pb.TransmitRequest(vtpm=vtpm.name, command=tpm2.pcr_read_sha256(16)))
        assert tpm2.pcr_value_from_read(bytes(read.response)) == value


def test_second_attach_is_refused_naming_the_holder(doms0: Doms0Process, vtpm: pb.Vtpm,
                                                    attach) -> None:
    first = attach(vtpm.name)
    second = subprocess.run(
        [sys.executable, "-m", "domS0.cli.vtpmctl", "attach", vtpm.name, "--swtpm",
         "127.0.0.1:0"], env=doms0.env(), capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert "FAILED_PRECONDITION" in second.stderr
    assert f"vtpmctl attach pid {first.proc.pid}" in second.stderr


def test_config_file_and_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "doms0.sock"
    config = tmp_path / "doms0.toml"
    config.write_text(f'[doms0]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'listen = "unix:{socket_path}"\nlog_format = "json"\n')
    log = (tmp_path / "log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "domS0.cli.doms0", "serve", "--config",
                             str(config)], stdout=log, stderr=log)
    try:
        token_file = tmp_path / "state" / "client.token"
        deadline = time.monotonic() + 30
        while not (tmp_path / "state" / "doms0.listen").exists():
            assert proc.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with open_channel(f"unix:{socket_path}", token_file.read_text().strip()) as channel:
            vtpm = pb_grpc.ManagerStub(channel).CreateVtpm(pb.CreateVtpmRequest(name="u"))
            assert vtpm.engine == "builtin" and vtpm.state == pb.VTPM_STATE_STOPPED
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert all(json.loads(line) for line in (tmp_path / "log").read_text().splitlines())


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('listen = "127.0.0.1:1"\nflavour = "vanilla"\n')
    result = subprocess.run([sys.executable, "-m", "domS0.cli.doms0", "serve", "--config",
                             str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"doms0: {config}: unknown settings flavour"


def test_one_doms0_per_state_dir(doms0: Doms0Process) -> None:
    result = subprocess.run([sys.executable, "-m", "domS0.cli.doms0", "serve", "--state-dir",
                             str(doms0.state_dir), "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "another DomS0 is serving" in result.stderr.splitlines()[-1]


