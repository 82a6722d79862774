"""PassthroughEngine against a real swtpm standing in for the host TPM.

The host swtpm runs like a host's TPM after boot (started, TPM2_Startup done), and
the engine reaches it through tpm2-tss's swtpm TCTI, loaded by tpm2-pytss, as it
would reach ``device:/dev/tpmrm0``. Refusals are checked both by their response
code and by the host's state staying as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tpm2_pytss import TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_SU
from tpm2_pytss.types import TPML_PCR_SELECTION

from domS0.frontends.control_sockets import LocalBackend
from domS0.harness import SwtpmProcess, free_port
from domS0.security.audit import AuditLog
from domS0.security.dummy import DummyModule
from domS0.security.gate import Gate
from domS0.security.hooks import SecurityServer
from tests import tpm2
from tests.conftest import require_tool
from tests.emulator.inprocess import esapi_over
from tpm_emulator.constants import CC, RC
from tpm_emulator.server.control import PLATFORM_CAPS, ControlSession
from tpm_emulator.server.swtpm_socket import Endpoint, SwtpmSocketServer
from vtpm_manager.engine import EngineError
from vtpm_manager.engines import cannot_migrate, engine_factory, make_engine
from vtpm_manager.engines.passthrough import (
    NOT_MIGRATABLE,
    PASSTHROUGH_STATE,
    REFUSED,
    PassthroughEngine,
    PassthroughPolicy,
    parse_pcr_set,
)
from vtpm_manager.errors import FailedPrecondition, InvalidArgument
from vtpm_manager.kek import load_development_kek
from vtpm_manager.manager import VtpmManager
from vtpm_manager.store import StateStore

TPM_RH_OWNER = 0x40000001
Send = Callable[[bytes], bytes]
TPM_RH_LOCKOUT = 0x4000000A


# --------------------------------------------------------------------------------------
# Raw commands beyond tests/tpm2.py
# --------------------------------------------------------------------------------------

def _password_auth() -> bytes:
    session = struct.pack(">IHBH", tpm2.TPM_RS_PW, 0, 0, 0)
    return struct.pack(">I", len(session)) + session


def clear() -> bytes:
    """What ``tpm2_clear`` sends: TPM2_Clear(TPM_RH_LOCKOUT) with an empty password."""
    return tpm2.command(CC.Clear, struct.pack(">I", TPM_RH_LOCKOUT) + _password_auth(),
                        tag=tpm2.ST_SESSIONS)


def pcr_event(pcr: int, data: bytes) -> bytes:
    body = struct.pack(">I", pcr) + _password_auth() + struct.pack(">H", len(data)) + data
    return tpm2.command(CC.PCR_Event, body, tag=tpm2.ST_SESSIONS)


def pcr_reset(pcr: int) -> bytes:
    return tpm2.command(CC.PCR_Reset, struct.pack(">I", pcr) + _password_auth(),
                        tag=tpm2.ST_SESSIONS)


def create_primary_ecc() -> bytes:
    """An ECC P-256 storage primary under the owner hierarchy: derived from the owner
    seed, so its public key changes exactly when TPM2_Clear took effect."""
    public = struct.pack(
        ">HHIH" "HHH" "HHH" "HH",
        0x0023, tpm2.ALG_SHA256, 0x00030072, 0,
        0x0006, 128, 0x0043,
        0x0010, 0x0003, 0x0010,
        0, 0,
    )  # fmt: skip
    body = struct.pack(">I", TPM_RH_OWNER) + _password_auth()
    body += struct.pack(">HHH", 4, 0, 0) + struct.pack(">H", len(public)) + public
    body += struct.pack(">HI", 0, 0)
    return tpm2.command(CC.CreatePrimary, body, tag=tpm2.ST_SESSIONS)


def flush(handle: int) -> bytes:
    return tpm2.command(CC.FlushContext, struct.pack(">I", handle))


def owner_primary(send: Send) -> bytes:
    """The owner SRK's public area; flushed again so transient slots stay free."""
    response = send(create_primary_ecc())
    assert tpm2.rc_of(response) == 0
    handle = struct.unpack_from(">I", response, 10)[0]
    (size,) = struct.unpack_from(">H", response, 18)
    public = response[20: 20 + size]
    assert tpm2.rc_of(send(flush(handle))) == 0
    return public


# --------------------------------------------------------------------------------------
# A host TPM
# --------------------------------------------------------------------------------------

class HostTpm:
    """swtpm on loopback, already started, as a host's TPM is after boot."""

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def direct(self, command: bytes) -> bytes:
        """Bypass the engine (the host's own access), e.g. to prove a refusal mattered."""
        tcti = TCTILdr.parse(self.tcti)
        try:
            tcti.transmit(command)
            return tcti.receive(4096, 30_000)
        finally:
            tcti.close()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[HostTpm]:
    require_tool("swtpm")
    process = SwtpmProcess(tmp_path / "host-tpm").start()
    try:
        yield HostTpm(process.port)
    finally:
        process.stop()


@pytest.fixture
def engine(host: HostTpm) -> Iterator[PassthroughEngine]:
    passthrough = PassthroughEngine(host.tcti)
    passthrough.start(None)
    yield passthrough
    passthrough.stop()


def pcr16(send: Send) -> bytes:
    return tpm2.pcr_value_from_read(send(tpm2.pcr_read_sha256(16)))


# --------------------------------------------------------------------------------------
# The policy alone
# --------------------------------------------------------------------------------------

def test_policy_table_names_the_shared_state_commands() -> None:
    policy = PassthroughPolicy()
    for cc in (CC.Clear, CC.ClearControl, CC.HierarchyControl, CC.HierarchyChangeAuth,
               CC.ChangeEPS, CC.ChangePPS, CC.SetPrimaryPolicy, CC.DictionaryAttackLockReset,
               CC.DictionaryAttackParameters, CC.PCR_Allocate, CC.PCR_SetAuthPolicy,
               CC.PCR_SetAuthValue, CC.NV_GlobalWriteLock, CC.NV_DefineSpace,
               CC.NV_Write, CC.EvictControl, CC.Shutdown, CC.Startup, CC.FieldUpgradeStart,
               CC.ClockSet, CC.ClockRateAdjust):
        refusal = policy.check(tpm2.command(cc), 0)
        assert refusal is not None, cc.name
    assert REFUSED[CC.Clear].rc == RC.DISABLED
    assert REFUSED[CC.Startup].rc == RC.INITIALIZE
    assert REFUSED[CC.HierarchyChangeAuth].rc == RC.COMMAND_CODE
    for cc in (CC.GetRandom, CC.PCR_Read, CC.CreatePrimary, CC.Quote, CC.NV_Read,
               CC.StartAuthSession, CC.FlushContext, CC.GetCapability):
        assert policy.check(tpm2.command(cc), 0) is None, cc.name
    vendor = tpm2.command(0x2000_0001)
    assert policy.check(vendor, 0) == PassthroughPolicy().check(vendor, 0)
    assert policy.check(vendor, 0) is not None


def test_policy_protects_host_pcrs_by_handle() -> None:
    policy = PassthroughPolicy(parse_pcr_set("0-7,14"))
    for pcr in (0, 7, 14):
        refusal = policy.check(tpm2.pcr_extend_sha256(pcr, bytes(32)), 0)
        assert refusal is not None and refusal.rc == RC.LOCALITY
    for pcr in (8, 13, 15, 16, 23):
        assert policy.check(tpm2.pcr_extend_sha256(pcr, bytes(32)), 0) is None
    assert policy.check(pcr_event(14, b"x"), 0) is not None
    assert policy.check(pcr_reset(7), 0) is not None
    assert policy.check(tpm2.get_random(8), 1) is not None  # another locality


def test_pcr_set_parsing() -> None:
    assert parse_pcr_set("0-15") == frozenset(range(16))
    assert parse_pcr_set(" 0-2, 7 ,23") == frozenset({0, 1, 2, 7, 23})
    assert parse_pcr_set("") == frozenset()
    for bad in ("x", "3-1", "0-"):
        with pytest.raises(ValueError):
            parse_pcr_set(bad)
    with pytest.raises(ValueError, match=r"0\.\.23"):
        PassthroughPolicy(frozenset({24}))


def test_registry_needs_a_host_tcti(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="--passthrough-tcti"):
        make_engine("passthrough", tmp_path)
    with pytest.raises(InvalidArgument, match="unknown engine option"):
        make_engine("builtin", tmp_path, {"host_tcit": "device:/dev/tpmrm0"})
    with pytest.raises(InvalidArgument, match="PCR"):
        make_engine("passthrough", tmp_path, {"host_tcti": "x", "host_pcrs": "nine"})
    built = make_engine("passthrough", tmp_path,
                        {"host_tcti": "device:/dev/tpmrm0", "host_pcrs": "0-7"})
    assert isinstance(built, PassthroughEngine)
    assert built.policy.host_pcrs == frozenset(range(8))
    assert cannot_migrate("passthrough") == NOT_MIGRATABLE
    assert cannot_migrate("builtin") is None and cannot_migrate("swtpm") is None


# --------------------------------------------------------------------------------------
# The engine on a host TPM, raw bytes
# --------------------------------------------------------------------------------------

def test_get_random_and_pcr_read(engine: PassthroughEngine) -> None:
    response = engine.execute(tpm2.get_random(16))
    assert tpm2.rc_of(response) == 0
    assert struct.unpack_from(">H", response, 10)[0] == 16
    assert len(pcr16(engine.execute)) == 32


def test_startup_is_answered_as_a_started_tpm_would(engine: PassthroughEngine) -> None:
    assert tpm2.rc_of(engine.execute(tpm2.startup_clear())) == RC.INITIALIZE
    assert tpm2.rc_of(engine.execute(tpm2.command(CC.Shutdown, b"\0\0"))) == RC.COMMAND_CODE
    assert tpm2.rc_of(engine.execute(tpm2.get_random(4))) == 0  # host still serving


def test_clear_is_refused_and_the_host_keeps_its_owner_seed(
    engine: PassthroughEngine, host: HostTpm
) -> None:
    before = owner_primary(engine.execute)
    assert tpm2.rc_of(engine.execute(clear())) == RC.DISABLED
    assert owner_primary(engine.execute) == before
    # The same bytes straight to the host do clear it: the refusal protected something.
    engine.stop()
    assert tpm2.rc_of(host.direct(clear())) == 0
    assert owner_primary(host.direct) != before


def test_host_pcrs_are_refused_pcr_16_is_extended(engine: PassthroughEngine) -> None:
    digest = hashlib.sha256(b"guest").digest()
    host_values = {pcr: engine.execute(tpm2.pcr_read_sha256(pcr)) for pcr in range(16)}
    for pcr in range(16):
        assert tpm2.rc_of(engine.execute(tpm2.pcr_extend_sha256(pcr, digest))) == RC.LOCALITY
        assert tpm2.rc_of(engine.execute(pcr_event(pcr, b"guest"))) == RC.LOCALITY
        assert tpm2.rc_of(engine.execute(pcr_reset(pcr))) == RC.LOCALITY
    for pcr in range(16):
        assert engine.execute(tpm2.pcr_read_sha256(pcr)) == host_values[pcr]

    old = pcr16(engine.execute)
    assert tpm2.rc_of(engine.execute(tpm2.pcr_extend_sha256(16, digest))) == 0
    assert pcr16(engine.execute) == hashlib.sha256(old + digest).digest()
    assert tpm2.rc_of(engine.execute(pcr_reset(16))) == 0
    assert pcr16(engine.execute) == bytes(32)


def test_other_localities_are_refused(engine: PassthroughEngine) -> None:
    for locality in (1, 3, 4):
        assert tpm2.rc_of(engine.execute(tpm2.get_random(4), locality)) == RC.LOCALITY


def test_state_is_a_marker_and_foreign_state_is_refused(
    engine: PassthroughEngine, host: HostTpm
) -> None:
    assert engine.export_state() == PASSTHROUGH_STATE
    engine.power_cycle()  # the guest's reset reconnects; the host keeps running
    assert tpm2.rc_of(engine.execute(tpm2.get_random(4))) == 0
    other = PassthroughEngine(host.tcti)
    with pytest.raises(EngineError, match="cannot migrate"):
        other.start(b"VTPM-SWTPM\0 some other TPM's state")
    other.start(PASSTHROUGH_STATE)
    other.stop()
    other.stop()


def test_an_unreachable_host_tpm_is_an_engine_error(tmp_path: Path) -> None:
    engine = PassthroughEngine(f"swtpm:host=127.0.0.1,port={free_port(2)}")
    with pytest.raises(EngineError, match="cannot open the host TPM"):
        engine.start(None)


# --------------------------------------------------------------------------------------
# Through the TSS: ESAPI over a PyTCTI on the engine
# --------------------------------------------------------------------------------------

def test_esapi_reads_random_and_pcrs_and_is_refused_clear(engine: PassthroughEngine) -> None:
    with esapi_over(engine) as esapi:
        assert len(bytes(esapi.get_random(12))) == 12
        _, _, values = esapi.pcr_read(TPML_PCR_SELECTION.parse("sha256:0,16"))
        assert len(values) == 2
        with pytest.raises(TSS2_Exception) as refused:
            esapi.clear(ESYS_TR.RH_LOCKOUT)
        assert refused.value.rc == RC.DISABLED
        # tpm2-tss reads TPM_RC_INITIALIZE as "already started": no error, as intended.
        esapi.startup(TPM2_SU.CLEAR)


# --------------------------------------------------------------------------------------
# Through the manager and unmodified tpm2-tools
# --------------------------------------------------------------------------------------

@pytest.fixture
def manager(tmp_path: Path, host: HostTpm) -> Iterator[VtpmManager]:
    store = StateStore(tmp_path / "vtpms", load_development_kek(tmp_path / "kek.dev"))
    manager = VtpmManager(store, tmp_path / "run",
                          factory=engine_factory({"host_tcti": host.tcti}))
    yield manager
    manager.shutdown()


def test_manager_commits_a_marker_and_refuses_migration(manager: VtpmManager) -> None:
    instance = manager.create("dom0", engine="passthrough", start=True)
    record_file = manager.store.path_of(instance.record.uuid)
    written = record_file.stat().st_mtime_ns
    assert instance.record.state == PASSTHROUGH_STATE
    digest = hashlib.sha256(b"guest").digest()
    assert tpm2.rc_of(instance.execute(tpm2.pcr_extend_sha256(16, digest), 0, None)) == 0
    assert record_file.stat().st_mtime_ns == written  # nothing of the host is stored
    with pytest.raises(FailedPrecondition, match=NOT_MIGRATABLE):
        instance.export_state(None)
    with pytest.raises(FailedPrecondition, match=NOT_MIGRATABLE):
        instance.replace_state(None, PASSTHROUGH_STATE)
    assert tpm2.rc_of(instance.execute(tpm2.get_random(4), 0, None)) == 0


def tools(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    require_tool("tpm2_getrandom")
    env = {**os.environ, "TPM2TOOLS_TCTI": f"swtpm:host=127.0.0.1,port={port}"}
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)


def test_tpm2_tools_through_a_swtpm_front_end(manager: VtpmManager, tmp_path: Path) -> None:
    """getrandom and pcrread work; tpm2_clear and an extend of PCR 0 get TPM errors."""
    assert shutil.which("tpm2_clear")
    instance = manager.create("dom0", engine="passthrough", start=True)
    port = free_port(2)
    gate = Gate(SecurityServer([DummyModule()], AuditLog(tmp_path / "audit.log")))
    session = ControlSession(LocalBackend(instance, "test front end", gate), PLATFORM_CAPS,
                             "dom0")
    server = SwtpmSocketServer(session, Endpoint(port=port), Endpoint(port=port + 1))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        random = tools(port, "tpm2_getrandom", "--hex", "16")
        assert random.returncode == 0, random.stderr
        assert len(bytes.fromhex(random.stdout.strip())) == 16
        read = tools(port, "tpm2_pcrread", "sha256:0,16")
        assert read.returncode == 0 and "sha256" in read.stdout, read.stderr

        refused = tools(port, "tpm2_clear")
        assert refused.returncode != 0
        assert "0x120" in refused.stderr, refused.stderr  # TPM_RC_DISABLED
        extend = tools(port, "tpm2_pcrextend", f"0:sha256={'11' * 32}")
        assert extend.returncode != 0 and "0x907" in extend.stderr, extend.stderr
        assert tools(port, "tpm2_pcrextend", f"16:sha256={'11' * 32}").returncode == 0
    finally:
        server.stop()


# --------------------------------------------------------------------------------------
# Behind a resource manager, as in production
# --------------------------------------------------------------------------------------

def test_behind_tpm2_abrmd(host: HostTpm, session_bus: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Through tabrmd: the engine's transient objects are flushed by its power cycle."""
    require_tool("tpm2-abrmd")
    bus_name = f"com.vtpmstack.Passthrough.T{os.getpid()}x{free_port()}"
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": session_bus}
    with (tmp_path / "abrmd.log").open("w") as log:
        abrmd = subprocess.Popen(
            ["tpm2-abrmd", "--session", "--allow-root", f"--dbus-name={bus_name}",
             f"--tcti={host.tcti}"], env=env, stdout=log, stderr=log)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session_bus)  # tcti-tabrmd reads it
    engine = PassthroughEngine(f"tabrmd:bus_type=session,bus_name={bus_name}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                engine.start(None)
                break
            except EngineError:
                assert abrmd.poll() is None, (tmp_path / "abrmd.log").read_text()
                assert time.monotonic() < deadline, "tpm2-abrmd did not come up"
                time.sleep(0.2)
        assert tpm2.rc_of(engine.execute(tpm2.get_random(8))) == 0
        assert tpm2.rc_of(engine.execute(clear())) == RC.DISABLED
        response = engine.execute(create_primary_ecc())
        assert tpm2.rc_of(response) == 0
        handle = struct.unpack_from(">I", response, 10)[0]
        engine.power_cycle()  # a guest reset: the RM flushes the guest's objects
        assert tpm2.rc_of(engine.execute(flush(handle))) != 0
    finally:
        engine.stop()
        abrmd.terminate()
        abrmd.wait(10)


def test_passthrough_vtpm_through_doms0_and_tpm2_tools(host: HostTpm, start_doms0) -> None:
    """End to end: DomS0 serves a passthrough vTPM; tpm2-tools reach it via attach."""
    import os as _os

    from domS0.api.vtpm.v1 import vtpm_pb2 as pb
    from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
    from domS0.harness import AttachProcess

    require_tool("tpm2_getrandom")
    doms0 = start_doms0("builtin", extra_args=("--passthrough-tcti", host.tcti))
    with doms0.channel() as channel:
        vtpm = pb_grpc.ManagerStub(channel).CreateVtpm(
            pb.CreateVtpmRequest(name="privileged", engine="passthrough", start=True))
    assert vtpm.engine == "passthrough"
    front = AttachProcess(doms0, vtpm.name).start()
    try:
        env = {**_os.environ, "TPM2TOOLS_TCTI": front.tcti}

        def tool(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(list(args), env=env, capture_output=True, text=True,
                                  timeout=60)

        assert len(tool("tpm2_getrandom", "--hex", "8").stdout.strip()) == 16
        assert "sha256" in tool("tpm2_pcrread", "sha256:0,16").stdout
        cleared = tool("tpm2_clear", "-c", "p")
        assert cleared.returncode != 0 and "0x120" in cleared.stderr.lower()
    finally:
        front.stop()
