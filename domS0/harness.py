"""Starting real DomS0 and ``vtpmctl attach`` processes on loopback.

Tests, benchmarks and the demo all need the same thing: a DomS0 process on a free
port, known to be serving, and a clean stop. This module is that, and nothing else.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from domS0.client.channel import open_channel

READY_TIMEOUT = 30.0


def free_port(span: int = 1) -> int:
    """A port P such that P .. P+span-1 are free on 127.0.0.1 right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + span > 65535:
            continue
        if all(_port_free(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free port range on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Doms0Process:
    """One ``doms0 serve`` child process."""

    def __init__(self, state_dir: Path, *, engine: str = "builtin",
                 extra_args: tuple[str, ...] = (), log_format: str = "text") -> None:
        self.state_dir = state_dir
        self.engine = engine
        self.extra_args = extra_args
        self.log_format = log_format
        self.log_path = state_dir.parent / f"{state_dir.name}.doms0.log"
        # Sockets need short paths (108 bytes), so the run dir sits in /tmp; it is
        # made here and removed by stop(), so even a killed DomS0 leaves nothing.
        self.run_dir: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "client.token"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start(self) -> Doms0Process:
        self.port = free_port()
        (self.state_dir / "doms0.listen").unlink(missing_ok=True)
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="doms0-run-"))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "domS0.cli.doms0", "serve", "--state-dir",
             str(self.state_dir), "--listen", self.address, "--default-engine", self.engine,
             "--log-format", self.log_format, "--run-dir", str(self.run_dir),
             *self.extra_args],
            stdout=log, stderr=log,
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"doms0 exited with {self.proc.returncode}:\n{self.log()}")
            if (self.state_dir / "doms0.listen").exists() and self._healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"doms0 not serving after {READY_TIMEOUT} s:\n{self.log()}")

    def _healthy(self) -> bool:
        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def channel(self) -> grpc.Channel:
        return open_channel(self.address, self.token)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing gets to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
        return self.proc.returncode

    def env(self) -> dict[str, str]:
        """Environment for vtpmctl aimed at this DomS0."""
        return {**os.environ, "VTPM_SERVER": self.address,
                "VTPM_TOKEN_FILE": str(self.token_file)}


class AttachProcess:
    """``vtpmctl attach NAME --swtpm 127.0.0.1:PORT`` as a child process."""

    def __init__(self, doms0: Doms0Process, vtpm: str, unix_path: str = "") -> None:
        self.doms0 = doms0
        self.vtpm = vtpm
        self.unix_path = unix_path
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def tcti(self) -> str:
        if self.unix_path:
            return f"swtpm:path={self.unix_path}"
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> AttachProcess:
        self.port = 0 if self.unix_path else free_port(2)
        address = f"unix:{self.unix_path}" if self.unix_path else f"127.0.0.1:{self.port}"
        log_path = self.doms0.state_dir.parent / f"attach-{self.vtpm}-{self.port}.log"
        with log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "domS0.cli.vtpmctl", "attach", self.vtpm, "--swtpm",
                 address],
                stdout=subprocess.PIPE, stderr=log, text=True, env=self.doms0.env(),
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("attached"):
            self.proc.wait(10)
            raise RuntimeError(f"vtpmctl attach failed: {line}{log_path.read_text()}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class SwtpmProcess:
    """A plain ``swtpm socket --tpm2`` on loopback TCP: a stand-in host TPM, or the
    libtpms reference in comparisons. Data on ``port``, control on ``port + 1``."""

    def __init__(self, state_dir: Path, flags: str = "not-need-init,startup-clear") -> None:
        self.state_dir = state_dir
        self.flags = flags
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> SwtpmProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(2)
        log_path = self.state_dir.parent / f"{self.state_dir.name}.swtpm.log"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir}",
                 "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                 "--flags", self.flags],
                stdout=log, stderr=log)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"swtpm did not start: {log_path.read_text()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
