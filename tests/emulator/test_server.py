"""The standalone ``tpm-emulator socket`` is a drop-in for ``swtpm socket --tpm2``."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from domS0.harness import free_port
from tests import tpm2
from tests.conftest import require_tool
from tpm_emulator import swtpm_ctrl as ctrl


class Server:
    def __init__(self, state_dir: Path, flags: str = "not-need-init") -> None:
        self.port = free_port(2)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tpm_emulator.server.cli", "socket", "--tpm2",
             "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
             "--flags", flags, "--tpmstate", f"dir={state_dir}",
             "--seccomp", "action=none", "--log", "level=1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("tpm-emulator serving"), line + self.proc.stderr.read()

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def tools(self, *args: str) -> str:
        result = subprocess.run(list(args), env={**os.environ, "TPM2TOOLS_TCTI": self.tcti},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def control(self, request: ctrl.Request) -> ctrl.Response:
        with socket.create_connection(("127.0.0.1", self.port + 1), timeout=10) as sock:
            sock.sendall(request.encode())
            return ctrl.decode_response(request.command, sock.recv(65536))

    def data(self, command: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(command)
            return sock.recv(65536)

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(10)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def test_tpm2_tools_and_state_across_a_kill(tmp_path: Path, servers: list[Server]) -> None:
    require_tool("tpm2_getrandom")
    server = Server(tmp_path / "state")
    servers.append(server)
    server.tools("tpm2_startup", "-c")
    assert len(server.tools("tpm2_getrandom", "--hex", "12").strip()) == 24
    digest = hashlib.sha256(b"standalone").digest()
    server.tools("tpm2_pcrextend", f"16:sha256={digest.hex()}")
    server.stop(kill=True)

    again = Server(tmp_path / "state")
    servers.append(again)
    want = hashlib.sha256(bytes(32) + digest).hexdigest()
    assert want in again.tools("tpm2_pcrread", "sha256:16").lower()


def test_without_not_need_init_it_waits_for_cmd_init(tmp_path: Path,
                                                     servers: list[Server]) -> None:
    server = Server(tmp_path / "state", flags="")
    servers.append(server)
    assert tpm2.rc_of(server.data(tpm2.startup_clear())) == 0x101
    caps = server.control(ctrl.GetCapability())
    assert isinstance(caps, ctrl.CapabilityResponse) and caps.caps & ctrl.Capability.INIT
    assert server.control(ctrl.Init(0)).result == 0
    assert tpm2.rc_of(server.data(tpm2.startup_clear())) == 0
    assert server.control(ctrl.SetLocality(9)).result == ctrl.Result.BAD_LOCALITY


def test_refuses_options_it_cannot_honour(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tpm_emulator.server.cli", "socket", "--tpm2", "--server",
         "type=tcp,port=1", "--key", "file=/dev/null"], capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 2
    assert "--key" in result.stderr
