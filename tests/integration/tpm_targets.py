"""TPMs for the client acceptance suites: each target is a real process (or several)
answering on a TCTI, started once per test module and stopped afterwards.

* ``emulator`` — ``tpm-emulator socket --tpm2`` standalone (our builtin engine);
* ``swtpm`` — real swtpm/libtpms started the same way, the oracle;
* ``abrmd`` — tpm2-abrmd on a private D-Bus session bus in front of a standalone
  ``tpm-emulator`` (TCTI ``tabrmd:``; clients need ``DBUS_SESSION_BUS_ADDRESS``);
* ``doms0`` — a DomS0 vTPM on the builtin engine behind ``vtpmctl attach``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.harness import AttachProcess, Doms0Process, SwtpmProcess, free_port

READY_TIMEOUT = 60.0


@dataclass
class Target:
    """A running TPM as clients reach it."""

    name: str
    tcti: str
    #: Extra environment the clients need (the D-Bus address for tabrmd).
    env: dict[str, str] = field(default_factory=dict)
    #: DomS0 behind this target, if any (for gRPC clients).
    doms0: Doms0Process | None = None
    vtpm: str = ""


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()}") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def tpm_emulator(folder: Path) -> Iterator[str]:
    """``tpm-emulator socket`` with swtpm's options; yields its swtpm TCTI."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port(2)
    executable = shutil.which("tpm-emulator") or str(Path(sys.executable).parent /
                                                     "tpm-emulator")
    log = folder / "tpm-emulator.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [executable, "socket", "--tpm2", "--server", f"port={port}",
             "--ctrl", f"type=tcp,port={port + 1}", "--flags", "not-need-init,startup-clear",
             "--tpmstate", f"dir={folder / 'state'}"],
            stdout=out, stderr=out)
    try:
        _wait_for_port(port, proc, log)
        yield f"swtpm:host=127.0.0.1,port={port}"
    finally:
        _stop(proc)


@contextmanager
def swtpm(folder: Path) -> Iterator[str]:
    process = SwtpmProcess(folder / "state").start()
    try:
        yield process.tcti
    finally:
        process.stop()


@contextmanager
def session_bus() -> Iterator[str]:
    """A private D-Bus session bus; yields its address."""
    proc = subprocess.Popen(
        ["dbus-daemon", "--config-file=/usr/share/dbus-1/session.conf",
         "--print-address=1", "--nofork"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("unix:"), "dbus-daemon printed no address"
        yield address
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def abrmd(folder: Path, backend_tcti: str) -> Iterator[Target]:
    """tpm2-abrmd on its own session bus, in front of ``backend_tcti``."""
    with session_bus() as bus:
        name = f"com.vtpmstack.Suite.T{uuid.uuid4().hex[:12]}"
        env = {"DBUS_SESSION_BUS_ADDRESS": bus}
        tcti = f"tabrmd:bus_type=session,bus_name={name}"
        log = folder / "abrmd.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["tpm2-abrmd", "--session", "--allow-root", f"--dbus-name={name}",
                 f"--tcti={backend_tcti}"],
                env={**os.environ, **env}, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                probe = subprocess.run(["tpm2_getrandom", "--hex", "4"], capture_output=True,
                                       env={**os.environ, **env, "TPM2TOOLS_TCTI": tcti},
                                       timeout=60)
                if probe.returncode == 0:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tpm2-abrmd not serving:\n{log.read_text()}")
                time.sleep(0.2)
            yield Target("abrmd", tcti, env)
        finally:
            _stop(proc)


@contextmanager
def doms0_vtpm(folder: Path, name: str = "suite", attach: bool = True,
               engine: str = "builtin") -> Iterator[Target]:
    """A DomS0 with one started vTPM (builtin engine unless told); with ``attach``,
    reached through ``vtpmctl attach`` (swtpm TCTI), else only through gRPC."""
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        doms0 = Doms0Process(folder / "doms0", engine=engine).start()
        stack.callback(doms0.stop)
        with doms0.channel() as channel:
            pb_grpc.ManagerStub(channel).CreateVtpm(
                pb.CreateVtpmRequest(name=name, engine=engine, start=True))
        tcti = ""
        if attach:
            front = AttachProcess(doms0, name).start()
            stack.callback(front.stop)
            tcti = front.tcti
        yield Target("doms0", tcti, doms0=doms0, vtpm=name)


@contextmanager
def start(name: str, folder: Path) -> Iterator[Target]:
    """The target called ``name`` (see the module docstring), in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == "emulator":
        with tpm_emulator(folder) as tcti:
            yield Target(name, tcti)
    elif name == "swtpm":
        with swtpm(folder) as tcti:
            yield Target(name, tcti)
    elif name == "abrmd":
        with tpm_emulator(folder) as backend, abrmd(folder, backend) as target:
            yield target
    elif name == "doms0":
        with doms0_vtpm(folder) as target:
            yield target
    else:
        raise ValueError(f"unknown target {name!r}")
