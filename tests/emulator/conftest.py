"""Fixtures for the emulator tests: an in-process TPM, ESAPI over a PyTCTI, real swtpm."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from domS0.free_ports import free_port
from tests.emulator.emulator_wire import startup
from tests.emulator.inprocess import esapi_over
from tpm_emulator import TPM


@pytest.fixture
def tpm() -> TPM:
    """A fresh TPM that has received TPM2_Startup(CLEAR)."""
    t = TPM()
    startup(t)
    return t


@pytest.fixture
def esapi(tpm: TPM) -> Iterator[object]:
    with esapi_over(tpm) as ectx:
        yield ectx


class SwtpmProcess:
    """A real swtpm (libtpms) spoken to with raw bytes, one connection per command."""

    def __init__(self, port: int) -> None:
        self.port = port

    def execute(self, command: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(command)
            head = b""
            while len(head) < 10:
                chunk = s.recv(10 - len(head))
                if not chunk:
                    raise ConnectionError("swtpm closed the connection")
                head += chunk
            size = int.from_bytes(head[2:6], "big")
            body = b""
            while len(body) < size - 10:
                chunk = s.recv(size - 10 - len(body))
                if not chunk:
                    raise ConnectionError("swtpm closed the connection")
                body += chunk
        return head + body


@pytest.fixture
def swtpm() -> Iterator[SwtpmProcess]:
    exe = shutil.which("swtpm")
    if exe is None:
        pytest.fail("swtpm is not installed: install the 'swtpm' package (swtpm 0.7+)")
    state = tempfile.mkdtemp(prefix="swtpm-diff-")
    port = free_port(2)
    proc = subprocess.Popen(
        [exe, "socket", "--tpm2",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
         "--flags", "not-need-init", "--tpmstate", f"dir={state}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"swtpm exited at start: {err}")
                time.sleep(0.05)
        else:
            pytest.fail("swtpm did not start listening")
        yield SwtpmProcess(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)
