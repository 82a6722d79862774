"""Processes and readings the benchmarks share: a plain swtpm, vTPMs in a DomS0,
and what /proc says about a process (RSS, CPU time, children).

Everything here is started by us and stopped by us; callers use the context
managers so a failed run leaves no process and no temp dir behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.harness import Doms0Process, free_port

from .tpm_commands import TPM_RC_INITIALIZE, TPM_RC_SUCCESS, response_code, startup_clear

RPC_TIMEOUT = 30.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def builtin_unavailable() -> str | None:
    """Why the builtin engine cannot run here, or None when it can."""
    try:
        from tpm_emulator import TPM  # noqa: F401
    except ImportError as exc:
        return f"builtin engine unavailable ({exc})"
    return None


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_doms0(root: Path, engine: str, log_level: str = "INFO") -> Iterator[Doms0Process]:
    """A DomS0 whose state and run dirs both live under ``root`` (so cleanup is one
    rmtree: left to itself DomS0 makes a run dir in /tmp and never removes it)."""
    state = root / "state"
    state.mkdir()
    doms0 = Doms0Process(state, engine=engine,
                         extra_args=("--run-dir", str(root / "run"), "--log-level", log_level))
    try:
        doms0.start()
        yield doms0
    finally:
        doms0.stop()


def create_started_vtpm(channel: grpc.Channel, name: str, engine: str) -> str:
    """Create and start vTPM ``name`` on ``engine``, run TPM2_Startup; return its UUID."""
    vtpm = pb_grpc.ManagerStub(channel).CreateVtpm(
        pb.CreateVtpmRequest(name=name, engine=engine, start=True), timeout=RPC_TIMEOUT)
    reply = pb_grpc.TpmStub(channel).Transmit(
        pb.TransmitRequest(vtpm=vtpm.uuid, command=startup_clear()), timeout=RPC_TIMEOUT)
    rc = response_code(reply.response)
    if rc not in (TPM_RC_SUCCESS, TPM_RC_INITIALIZE):
        raise RuntimeError(f"TPM2_Startup on vTPM {name} answered rc 0x{rc:x}")
    return str(vtpm.uuid)


class PlainSwtpm:
    """``swtpm socket --tpm2`` on TCP data port P and control port P+1, already
    started (``--flags not-need-init,startup-clear``): the reference row."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti_conf(self) -> str:
        return f"host=127.0.0.1,port={self.port}"

    def start(self, timeout: float = 10.0) -> PlainSwtpm:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(2)
        log = self.state_dir.parent / "swtpm-plain.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["swtpm", "socket", "--tpm2",
                 "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                 "--flags", "not-need-init,startup-clear",
                 "--tpmstate", f"dir={self.state_dir}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while not _accepts(self.port + 1):
            if self.proc.poll() is not None:
                raise RuntimeError(f"swtpm exited with {self.proc.returncode}: "
                                   f"{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"swtpm did not listen on {self.port + 1} in {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# -- /proc readings ------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (swtpm processes of a DomS0, say)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def thread_count(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
