"""Shared fixtures: real DomS0 processes, real front ends, real tools."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.harness import AttachProcess, Doms0Process

ENGINES = ("builtin", "swtpm")

# tool -> the Debian package that provides it
TOOLS = {
    "swtpm": "swtpm",
    "swtpm_ioctl": "swtpm-tools",
    "tpm2_getrandom": "tpm2-tools",
    "tpm2-abrmd": "tpm2-abrmd",
    "dbus-daemon": "dbus",
}


def require_tool(name: str) -> str:
    """The tool's path, or a failure that says what to install."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {TOOLS.get(name, name)}")
    return path


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The vTPM engine a test runs on: every test that takes it runs on both."""
    if request.param == "swtpm":
        require_tool("swtpm")
    return str(request.param)


def only_on(*engines: str) -> pytest.MarkDecorator:
    """Narrow the ``engine`` fixture to ``engines`` for one test: one that needs an
    engine's internals (swtpm's state blobs), or, since CI has a time budget, a slow
    one whose behaviour another test already checks on the second engine, which then
    runs on the default engine (builtin) only. Each use says why."""
    assert set(engines) <= set(ENGINES), engines
    return pytest.mark.parametrize("engine", engines, indirect=True)


DomS0Factory = Callable[..., Doms0Process]


@contextmanager
def _stopped_afterwards() -> Iterator[list[Any]]:
    """A list for the processes a fixture starts; each is stopped when the block ends."""
    started: list[Any] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def start_doms0(tmp_path: Path) -> Iterator[DomS0Factory]:
    """Start DomS0 processes (each on its own state dir unless given); stop them all."""
    with _stopped_afterwards() as started:

        def start(engine: str = "builtin", state_dir: Path | None = None,
                  **kwargs: object) -> Doms0Process:
            state = state_dir or tmp_path / f"doms0-{len(started)}"
            process = Doms0Process(state, engine=engine, **kwargs).start()  # type: ignore[arg-type]
            started.append(process)
            return process

        yield start


@pytest.fixture
def doms0(start_doms0: DomS0Factory, engine: str) -> Doms0Process:
    return start_doms0(engine)


@pytest.fixture
def manager(doms0: Doms0Process) -> Iterator[pb_grpc.ManagerStub]:
    with doms0.channel() as channel:
        yield pb_grpc.ManagerStub(channel)


@pytest.fixture
def tpm(doms0: Doms0Process) -> Iterator[pb_grpc.TpmStub]:
    with doms0.channel() as channel:
        yield pb_grpc.TpmStub(channel)


@pytest.fixture
def vtpm(manager: pb_grpc.ManagerStub, engine: str) -> pb.Vtpm:
    """A started vTPM on the DomS0 under test."""
    return manager.CreateVtpm(pb.CreateVtpmRequest(name="vm1", engine=engine, start=True))


@pytest.fixture
def attach(doms0: Doms0Process) -> Iterator[Callable[[str], AttachProcess]]:
    """Start ``vtpmctl attach`` front ends; stop them all afterwards."""
    with _stopped_afterwards() as started:

        def start(name: str) -> AttachProcess:
            process = AttachProcess(doms0, name).start()
            started.append(process)
            return process

        yield start


@pytest.fixture
def session_bus() -> Iterator[str]:
    """A private D-Bus session bus (for tpm2-abrmd); returns its address."""
    require_tool("dbus-daemon")
    proc = subprocess.Popen(
        ["dbus-daemon", "--config-file=/usr/share/dbus-1/session.conf",
         "--print-address=1", "--nofork"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    assert address.startswith("unix:"), "dbus-daemon printed no address"
    yield address
    proc.terminate()
    proc.wait(10)
