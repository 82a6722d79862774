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

from domS0.client.channel import ClientTls, open_channel
from domS0.free_ports import free_port

READY_TIMEOUT = 30.0


class Doms0Process:
    """One ``doms0 serve`` child process.

    By default it serves plain TCP (``--insecure-loopback``) and callers present the
    administrator's token; with ``tls=True`` it serves mutual TLS, and the harness
    issues an ``admin:harness`` client certificate (``doms0 issue``) for
    :meth:`channel` and :meth:`env`."""

    def __init__(self, state_dir: Path, *, engine: str = "builtin",
                 extra_args: tuple[str, ...] = (), log_format: str = "text",
                 tls: bool = False, unix_socket: Path | None = None) -> None:
        self.state_dir = state_dir
        #: Serve on this Unix socket (peer credentials) instead of loopback TCP.
        self.unix_socket = unix_socket
        self.engine = engine
        self.extra_args = extra_args
        self.log_format = log_format
        self.tls = tls
        #: Where the harness's admin client certificate goes (tls=True).
        self.client_dir = state_dir.parent / f"{state_dir.name}.client"
        self.log_path = state_dir.parent / f"{state_dir.name}.doms0.log"
        # Sockets need short paths (108 bytes), so the run dir sits in /tmp; it is
        # made here and removed by stop(), so even a killed DomS0 leaves nothing.
        self.run_dir: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        #: Extra environment for the DomS0 process (e.g. DOMS0_FAILPOINT in tests).
        self.extra_env: dict[str, str] = {}

    @property
    def address(self) -> str:
        if self.unix_socket is not None:
            return f"unix:{self.unix_socket}"
        return f"127.0.0.1:{self.port}"

    @property
    def _uses_tls(self) -> bool:
        return self.tls and self.unix_socket is None

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
             *(() if self.tls or self.unix_socket else ("--insecure-loopback",)),
             *self.extra_args],
            stdout=log, stderr=log, env={**os.environ, **self.extra_env},
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
            if (self.state_dir / "doms0.listen").exists():
                if self._uses_tls and not (self.client_dir / "client.pem").exists():
                    self.issue("admin:harness", self.client_dir)
                if self._healthy():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"doms0 not serving after {READY_TIMEOUT} s:\n{self.log()}")

    def issue(self, principal: str, out: Path, token: bool = False) -> Path:
        """``doms0 issue PRINCIPAL`` for this DomS0's state dir; returns ``out``."""
        _doms0("issue", principal, "--state-dir", str(self.state_dir), "--out", str(out),
               *(("--token",) if token else ()))
        return out

    @property
    def client_tls(self) -> ClientTls | None:
        if not self._uses_tls:
            return None
        return ClientTls.load(self.client_dir / "client.pem", self.client_dir / "client.key",
                              self.client_dir / "ca.pem")

    def _healthy(self) -> bool:
        tls = self.client_tls
        with (grpc.secure_channel(self.address, tls.credentials()) if tls is not None
              else grpc.insecure_channel(self.address)) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def channel(self) -> grpc.Channel:
        if self.unix_socket is not None:
            return open_channel(self.address)
        if self.tls:
            return open_channel(self.address, tls=self.client_tls)
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
        if self.unix_socket is not None:
            return {**os.environ, "VTPM_SERVER": self.address}
        if self.tls:
            return {**os.environ, "VTPM_SERVER": self.address,
                    "VTPM_CERT": str(self.client_dir / "client.pem"),
                    "VTPM_KEY": str(self.client_dir / "client.key"),
                    "VTPM_CA": str(self.client_dir / "ca.pem")}
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
        # free_port's ports are free only when probed: with tests running in parallel
        # another process may take one before vtpmctl binds it, so try fresh ports.
        for _ in range(5):
            self.port = 0 if self.unix_path else free_port(2)
            address = f"unix:{self.unix_path}" if self.unix_path else f"127.0.0.1:{self.port}"
            log_path = self.doms0.state_dir.parent / f"attach-{self.vtpm}-{self.port}.log"
            with log_path.open("a") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "domS0.cli.vtpmctl", "attach", self.vtpm,
                     "--swtpm", address],
                    stdout=subprocess.PIPE, stderr=log, text=True, env=self.doms0.env(),
                )
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if line.startswith("attached"):
                return self
            self.proc.wait(10)
            failure = line + log_path.read_text()
            if self.unix_path or "Address already in use" not in failure:
                break
        raise RuntimeError(f"vtpmctl attach failed: {failure}")

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


class MigrationNode:
    """One DomS0 host able to migrate: its own swtpm as host TPM, a provisioned root
    (``doms0 init``), a certificate from a shared hosts CA naming its host AK, and a
    DomS0 serving a migration listener on a port that stays the same across restarts
    (peers remember it)."""

    def __init__(self, folder: Path, name: str, ca_dir: Path, *, engine: str = "builtin",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.folder, self.name, self.ca_dir = folder, name, ca_dir
        self.tpm = SwtpmProcess(folder / "host-tpm")
        self.state_dir = folder / "state"
        self.measurement_log = folder / "run" / "measurements.log"
        self.tls_dir = folder / "tls"
        self.migration_port = 0
        self.engine = engine
        self.extra_args = extra_args
        self.doms0: Doms0Process | None = None

    @property
    def migration_address(self) -> str:
        return f"127.0.0.1:{self.migration_port}"

    def common(self) -> tuple[str, ...]:
        return ("--state-dir", str(self.state_dir), "--root-tpm", self.tpm.tcti,
                "--measurement-log", str(self.measurement_log))

    def provision(self) -> MigrationNode:
        """Host TPM up, root provisioned, host certificate issued."""
        self.tpm.start()
        _doms0("init", *self.common())
        _doms0("hosts", "issue", "--ca", str(self.ca_dir), "--name", self.name,
               "--out", str(self.tls_dir), "--host-tpm", self.tpm.tcti)
        self.migration_port = free_port()
        return self

    def serve_args(self) -> tuple[str, ...]:
        return ("--root-tpm", self.tpm.tcti, "--measurement-log", str(self.measurement_log),
                "--migration-listen", self.migration_address,
                "--tls-cert", str(self.tls_dir / "host.pem"),
                "--tls-key", str(self.tls_dir / "host.key"),
                "--tls-ca", str(self.ca_dir / "ca.pem"), *self.extra_args)

    def start(self, failpoint: str = "") -> Doms0Process:
        """Start (or restart) DomS0; ``failpoint`` names a
        :mod:`domS0.migration.failpoints` point at which it kills itself."""
        if self.doms0 is None:
            self.doms0 = Doms0Process(self.state_dir, engine=self.engine,
                                      extra_args=self.serve_args())
        self.doms0.extra_env = {"DOMS0_FAILPOINT": failpoint} if failpoint else {}
        return self.doms0.start()

    def stop(self) -> None:
        if self.doms0 is not None:
            self.doms0.stop()
        self.tpm.stop()


def create_hosts_ca(folder: Path) -> Path:
    _doms0("hosts", "ca", "--out", str(folder))
    return folder


def _doms0(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "domS0.cli.doms0", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TSS2_LOG": "all+NONE"})
    if done.returncode != 0:
        raise RuntimeError(f"doms0 {' '.join(args)} exited {done.returncode}: "
                           f"{done.stderr.strip()}")
    return done.stdout
