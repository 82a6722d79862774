"""``tpm-emulator mssim`` and ``tpm-emulator stdio`` serve tpm2-tss's ``mssim:`` and
``cmd:`` TCTIs; ``tpm-emulator socket`` takes the options swtpm's callers pass.

Every test starts real server processes and drives them with tpm2-tools or raw
sockets; the byte-level tests at the end drive the sans-IO reader directly.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from domS0.harness import free_port
from tests import tpm2
from tests.conftest import require_tool
from tpm_emulator.server.mssim import (
    PlatformSignal,
    Port,
    Refused,
    RequestReader,
    SendCommand,
    SessionEnd,
    Signal,
)

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
EMPTY_PCR = bytes(32)
DIGEST = hashlib.sha256(b"mssim and stdio").digest()
EXTENDED = hashlib.sha256(EMPTY_PCR + DIGEST).digest()


def emulator_command() -> list[str]:
    """The console script when installed next to our python, else the module."""
    script = Path(sys.executable).with_name("tpm-emulator")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tpm_emulator.server.cli"]


def tools(tcti: str, *args: str) -> str:
    result = subprocess.run(list(args), env={**ENV, "TPM2TOOLS_TCTI": tcti},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


def pcr16_of(tcti: str) -> bytes:
    out = tools(tcti, "tpm2_pcrread", "sha256:16")
    return bytes.fromhex(out.split("16: 0x")[1].split()[0])


class Process:
    """A server started from the command line; waits for its banner."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*emulator_command(), *args], env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        assert line.startswith("tpm-emulator "), line + self.proc.stderr.read()

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def started() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.stop()


# -- mssim -------------------------------------------------------------------------------

class Mssim:
    def __init__(self, started: list[Process], state: Path) -> None:
        self.port = free_port(2)
        self.process = Process("mssim", "--port", str(self.port), "--tpmstate",
                               f"dir={state}")
        started.append(self.process)

    @property
    def tcti(self) -> str:
        return f"mssim:host=127.0.0.1,port={self.port}"

    def platform(self, *signals: Signal) -> list[bytes]:
        with socket.create_connection(("127.0.0.1", self.port + 1), timeout=10) as sock:
            answers = []
            for code in signals:
                sock.sendall(struct.pack(">I", code))
                answers.append(recv_exactly(sock, 4))
            return answers

    def tpm(self, command: bytes, locality: int = 0) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(struct.pack(">IBI", Signal.SEND_COMMAND, locality, len(command))
                         + command)
            (size,) = struct.unpack(">I", recv_exactly(sock, 4))
            response = recv_exactly(sock, size)
            assert recv_exactly(sock, 4) == bytes(4)  # the interface's trailing ack
            return response


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
    return data


def test_mssim_serves_tpm2_tools_and_power_on_keeps_pcrs(tmp_path: Path,
                                                           started: list[Process]) -> None:
    require_tool("tpm2_getrandom")
    server = Mssim(started, tmp_path / "state")
    tools(server.tcti, "tpm2_startup", "-c")
    assert len(tools(server.tcti, "tpm2_getrandom", "--hex", "8").strip()) == 16
    tools(server.tcti, "tpm2_pcrextend", f"16:sha256={DIGEST.hex()}")
    # Every tool run re-initialises the TCTI, which sends POWER_ON and NV_ON again;
    # so do we, twice more. A powered TPM is not reset by them.
    assert pcr16_of(server.tcti) == EXTENDED
    assert server.platform(Signal.POWER_ON, Signal.NV_ON, Signal.POWER_ON) == [bytes(4)] * 3
    assert pcr16_of(server.tcti) == EXTENDED

    server.process.stop(kill=True)
    again = Mssim(started, tmp_path / "state")
    assert pcr16_of(again.tcti) == EXTENDED, "a restarted server continues its state"


def test_mssim_power_cycle_resets_the_tpm(tmp_path: Path, started: list[Process]) -> None:
    server = Mssim(started, tmp_path / "state")
    assert tpm2.rc_of(server.tpm(tpm2.startup_clear())) == 0
    assert tpm2.rc_of(server.tpm(tpm2.pcr_extend_sha256(16, DIGEST))) == 0

    assert server.platform(Signal.POWER_OFF) == [bytes(4)]
    assert tpm2.rc_of(server.tpm(tpm2.get_random(8))) == 0x101  # TPM_RC_FAILURE: no power
    assert server.platform(Signal.POWER_ON) == [bytes(4)]
    assert tpm2.rc_of(server.tpm(tpm2.get_random(8))) == 0x100  # TPM_RC_INITIALIZE
    assert tpm2.rc_of(server.tpm(tpm2.startup_clear())) == 0
    assert tpm2.pcr_value_from_read(server.tpm(tpm2.pcr_read_sha256(16))) == EMPTY_PCR

    assert tpm2.rc_of(server.tpm(tpm2.pcr_extend_sha256(16, DIGEST))) == 0
    assert server.platform(Signal.RESET) == [bytes(4)]
    assert tpm2.rc_of(server.tpm(tpm2.get_random(8))) == 0x100


def test_mssim_nv_off_refuses_state_changes(tmp_path: Path, started: list[Process]) -> None:
    server = Mssim(started, tmp_path / "state")
    assert tpm2.rc_of(server.tpm(tpm2.startup_clear())) == 0
    assert server.platform(Signal.NV_OFF, Signal.CANCEL_ON, Signal.CANCEL_OFF) == [bytes(4)] * 3
    assert tpm2.rc_of(server.tpm(tpm2.pcr_extend_sha256(16, DIGEST))) == 0x923
    assert tpm2.rc_of(server.tpm(tpm2.pcr_read_sha256(16))) == 0
    assert server.platform(Signal.NV_ON) == [bytes(4)]
    assert tpm2.rc_of(server.tpm(tpm2.pcr_extend_sha256(16, DIGEST))) == 0


def test_mssim_session_end_unknown_codes_and_stop(tmp_path: Path,
                                                  started: list[Process]) -> None:
    server = Mssim(started, tmp_path / "state")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(struct.pack(">I", Signal.SESSION_END))
        assert sock.recv(16) == b"", "SESSION_END closes without an answer"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(struct.pack(">I", Signal.POWER_ON))  # a platform code on the TPM port
        assert recv_exactly(sock, 4) == struct.pack(">I", 1)
        assert sock.recv(16) == b""
    with socket.create_connection(("127.0.0.1", server.port + 1), timeout=10) as sock:
        sock.sendall(struct.pack(">I", 5))  # HASH_START: no H-CRTM here
        assert recv_exactly(sock, 4) == struct.pack(">I", 1)
    assert server.platform(Signal.STOP) == [bytes(4)]
    assert server.process.proc.wait(10) == 0


def test_mssim_answers_split_writes_without_a_delayed_ack_stall(
        tmp_path: Path, started: list[Process]) -> None:
    """The mssim TCTI writes prefix and command separately and leaves Nagle on, so its
    second write waits for our ACK of the first; delayed ACK would cost ~40 ms per
    command (swtpm-protocols.md 1.5). Same pattern here, on one connection."""
    server = Mssim(started, tmp_path / "state")
    command = tpm2.get_random(8)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        start = time.monotonic()
        for _ in range(20):
            sock.sendall(struct.pack(">IBI", Signal.SEND_COMMAND, 0, len(command)))
            sock.sendall(command)
            (size,) = struct.unpack(">I", recv_exactly(sock, 4))
            recv_exactly(sock, size + 4)
        per_command = (time.monotonic() - start) / 20
    assert per_command < 0.02, f"{per_command * 1000:.1f} ms per command"


# -- stdio (cmd: TCTI) -------------------------------------------------------------------

def stdio_tcti(state: Path) -> str:
    command = [*emulator_command(), "stdio", "--tpmstate", f"dir={state}"]
    return "cmd:" + " ".join(shlex.quote(part) for part in command)


def test_stdio_serves_each_cmd_invocation_from_the_state_dir(tmp_path: Path) -> None:
    require_tool("tpm2_getrandom")
    tcti = stdio_tcti(tmp_path / "state")
    tools(tcti, "tpm2_startup", "-c")
    assert len(tools(tcti, "tpm2_getrandom", "--hex", "8").strip()) == 16
    tools(tcti, "tpm2_pcrextend", f"16:sha256={DIGEST.hex()}")
    assert pcr16_of(tcti) == EXTENDED
    tools(tcti, "tpm2_pcrextend", f"16:sha256={DIGEST.hex()}")
    assert pcr16_of(tcti) == hashlib.sha256(EXTENDED + DIGEST).digest()
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_stdio_frames_by_the_header_size(tmp_path: Path) -> None:
    proc = subprocess.Popen([*emulator_command(), "stdio", "--tpmstate",
                             f"dir={tmp_path / 'state'}"], env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    startup = tpm2.startup_clear()
    proc.stdin.write(startup[:3])  # a command split across writes is still one command
    proc.stdin.flush()
    time.sleep(0.1)
    proc.stdin.write(startup[3:] + tpm2.get_random(16))
    proc.stdin.close()
    out = proc.stdout.read()
    assert proc.wait(10) == 0
    first_size = struct.unpack_from(">I", out, 2)[0]
    assert tpm2.rc_of(out[:first_size]) == 0
    random = out[first_size:]
    assert tpm2.rc_of(random) == 0 and len(random) == 10 + 2 + 16
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()


def test_stdio_refuses_an_absurd_size(tmp_path: Path) -> None:
    command = struct.pack(">HII", 0x8001, 1 << 30, 0x17B)
    result = subprocess.run([*emulator_command(), "stdio"], env=ENV, input=command,
                            capture_output=True, timeout=60)
    assert result.returncode == 1
    assert tpm2.rc_of(result.stdout) == 0x142  # TPM_RC_COMMAND_SIZE


# -- socket: the swtpm options callers pass -----------------------------------------------

def test_socket_accepts_swtpm_options_and_starts_up(tmp_path: Path,
                                                    started: list[Process]) -> None:
    require_tool("tpm2_getrandom")
    port = free_port(2)
    pid_file, log_file = tmp_path / "tpm.pid", tmp_path / "tpm.log"
    server = Process(
        "socket", "--tpm2", "--server", f"port={port},bindaddr=127.0.0.1",
        "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
        "--flags", "not-need-init,startup-clear", "--tpmstate", f"dir={tmp_path / 's'},mode=0600",
        "--seccomp", "action=none", "--log", f"file={log_file},level=20",
        "--pid", f"file={pid_file}", "--locality", "reject-locality-4,allow-set-locality",
        "--runas", str(os.getuid()), "--profile", "name=default-v1", "--terminate")
    started.append(server)
    assert int(pid_file.read_text()) == server.proc.pid
    tcti = f"swtpm:host=127.0.0.1,port={port}"
    # startup-clear: the TPM is started already, no tpm2_startup needed.
    assert len(tools(tcti, "tpm2_getrandom", "--hex", "8").strip()) == 16
    tools(tcti, "tpm2_pcrextend", f"16:sha256={DIGEST.hex()}")
    assert pcr16_of(tcti) == EXTENDED

    server.stop(kill=True)
    again = Process("socket", "--tpm2", "--server", f"type=tcp,port={port}",
                    "--flags", "startup-clear", "--tpmstate", f"dir={tmp_path / 's'}")
    started.append(again)
    assert pcr16_of(tcti) == EMPTY_PCR, "startup-clear: _TPM_Init and Startup(CLEAR)"


def test_socket_on_unix_sockets(tmp_path: Path, started: list[Process]) -> None:
    require_tool("tpm2_getrandom")
    path = tmp_path / "tpm.sock"
    started.append(Process(
        "socket", "--tpm2", "--server", f"type=unixio,path={path},mode=0600",
        "--ctrl", f"type=unixio,path={path}.ctrl,mode=0600,terminate",
        "--flags", "startup-clear", "--tpmstate", f"dir={tmp_path / 's'}"))
    assert len(tools(f"swtpm:path={path}", "tpm2_getrandom", "--hex", "8").strip()) == 16


def test_socket_daemon_detaches_and_writes_its_pid(tmp_path: Path) -> None:
    require_tool("tpm2_getrandom")
    port = free_port(2)
    pid_file = tmp_path / "tpm.pid"
    result = subprocess.run(
        [*emulator_command(), "socket", "--tpm2", "--server", f"type=tcp,port={port}",
         "--ctrl", f"type=tcp,port={port + 1}", "--flags", "startup-clear",
         "--tpmstate", f"dir={tmp_path / 's'}", "--pid", f"file={pid_file}", "--daemon"],
        env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pid = int(pid_file.read_text())
    try:
        tools(f"swtpm:host=127.0.0.1,port={port}", "tpm2_getrandom", "--hex", "8")
    finally:
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"daemon {pid} did not exit on SIGTERM")


@pytest.mark.parametrize("args, message", [
    (["--server", "type=tcp,port=1"], "--tpm2"),
    (["--tpm2", "--server", "type=tcp,port=1", "--flags", "no-such-flag"], "no-such-flag"),
    (["--tpm2", "--server", "type=tcp,fd=3"], "fd="),
])
def test_socket_refuses_what_it_cannot_do(args: list[str], message: str) -> None:
    result = subprocess.run([*emulator_command(), "socket", *args], env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr


def test_one_server_per_state_dir(tmp_path: Path, started: list[Process]) -> None:
    first = Mssim(started, tmp_path / "state")
    assert first.process.proc.poll() is None
    port = free_port(2)
    result = subprocess.run(
        [*emulator_command(), "socket", "--tpm2", "--server", f"type=tcp,port={port}",
         "--flags", "not-need-init", "--tpmstate", f"dir={tmp_path / 'state'}"],
        env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "in use" in result.stderr


# -- the mssim reader, byte by byte --------------------------------------------------------

def test_reader_waits_for_whole_requests() -> None:
    reader = RequestReader(Port.TPM)
    command = tpm2.get_random(8)
    wire = struct.pack(">IBI", 8, 3, len(command)) + command + struct.pack(">I", 20)
    requests = [r for byte in wire for r in reader.feed(bytes([byte]))]
    assert requests == [SendCommand(3, command), SessionEnd()]
    assert reader.finished


def test_reader_keeps_ports_apart() -> None:
    assert RequestReader(Port.PLATFORM).feed(struct.pack(">II", 1, 11)) == [
        PlatformSignal(Signal.POWER_ON), PlatformSignal(Signal.NV_ON)]
    refused = RequestReader(Port.PLATFORM).feed(struct.pack(">I", 8))
    assert len(refused) == 1 and isinstance(refused[0], Refused)
    huge = RequestReader(Port.TPM).feed(struct.pack(">IBI", 8, 0, 1 << 20))
    assert len(huge) == 1 and isinstance(huge[0], Refused)
