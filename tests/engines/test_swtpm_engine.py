"""SwtpmEngine against real swtpm processes (swtpm 0.7.1 / libtpms 0.9.2)."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vtpm_manager.engine import EngineError
from vtpm_manager.engines.swtpm import (
    STATE_MAGIC,
    StateFormatError,
    SwtpmEngine,
    SwtpmState,
    pack_state,
    unpack_state,
)

# --------------------------------------------------------------------------------------
# Raw TPM 2.0 commands (Part 3), built by hand so the test depends on no TSS
# --------------------------------------------------------------------------------------

TPM_RC_SUCCESS = 0x000
TPM_RC_INITIALIZE = 0x100  # "TPM not initialized by TPM2_Startup or already initialized"
TPM_RC_LOCALITY = 0x107
PCR = 16
SHA256 = 0x000B


def _command(tag: int, cc: int, body: bytes) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), cc) + body


def _password_session() -> bytes:
    session = struct.pack(">IHBH", 0x40000009, 0, 0, 0)  # TPM_RS_PW, no nonce, no auth
    return struct.pack(">I", len(session)) + session


def startup_clear() -> bytes:
    return _command(0x8001, 0x144, struct.pack(">H", 0x0000))


def get_random(count: int) -> bytes:
    return _command(0x8001, 0x17B, struct.pack(">H", count))


def pcr_extend(pcr: int, digest: bytes) -> bytes:
    body = struct.pack(">I", pcr) + _password_session()
    body += struct.pack(">IH", 1, SHA256) + digest
    return _command(0x8002, 0x182, body)


def pcr_read(pcr: int) -> bytes:
    select = bytearray(3)
    select[pcr // 8] |= 1 << (pcr % 8)
    return _command(0x8001, 0x17E, struct.pack(">IHB", 1, SHA256, 3) + bytes(select))


def create_primary_ecc() -> bytes:
    """An ECC P-256 storage primary under the owner hierarchy: derived from the
    owner seed, so equal public keys mean equal permanent state."""
    public = struct.pack(
        ">HHIH" "HHH" "HHH" "HH",
        0x0023, SHA256, 0x00030072, 0,  # ECC, nameAlg, restricted|decrypt|..., no policy
        0x0006, 128, 0x0043,  # AES-128-CFB for children
        0x0010, 0x0003, 0x0010,  # no scheme, NIST P-256, no KDF
        0, 0,  # empty unique
    )  # fmt: skip
    body = struct.pack(">I", 0x40000001) + _password_session()
    body += struct.pack(">HHH", 4, 0, 0)  # inSensitive: empty auth and data
    body += struct.pack(">H", len(public)) + public
    body += struct.pack(">HI", 0, 0)  # outsideInfo, creationPCR
    return _command(0x8002, 0x131, body)


def rc(response: bytes) -> int:
    _tag, size, code = struct.unpack_from(">HII", response)
    assert size == len(response)
    return code


def pcr_value(engine: SwtpmEngine, pcr: int = PCR, locality: int = 0) -> bytes:
    response = engine.execute(pcr_read(pcr), locality)
    assert rc(response) == TPM_RC_SUCCESS
    return response[-32:]


def primary_public(engine: SwtpmEngine) -> bytes:
    response = engine.execute(create_primary_ecc())
    assert rc(response) == TPM_RC_SUCCESS
    (size,) = struct.unpack_from(">H", response, 18)  # after header, handle, paramSize
    return response[20 : 20 + size]


def extended(old: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(old + digest).digest()


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[list[SwtpmEngine]]:
    """Engines made by a test; each is stopped afterwards, whatever happened."""
    made: list[SwtpmEngine] = []
    yield made
    for engine in made:
        engine.stop()


MakeEngine = Callable[..., SwtpmEngine]


@pytest.fixture
def new_engine(tmp_path: Path, engines: list[SwtpmEngine]) -> MakeEngine:
    def make(name: str = "vtpm", *, timeout: float = 30.0) -> SwtpmEngine:
        engine = SwtpmEngine(tmp_path / name, timeout=timeout)
        engines.append(engine)
        return engine

    return make


@pytest.fixture
def started(new_engine: MakeEngine) -> SwtpmEngine:
    engine = new_engine()
    engine.start(None)
    assert rc(engine.execute(startup_clear())) == TPM_RC_SUCCESS
    return engine


# --------------------------------------------------------------------------------------
# Fresh TPM
# --------------------------------------------------------------------------------------


def test_fresh_tpm_awaits_startup(new_engine: MakeEngine) -> None:
    engine = new_engine()
    engine.start(None)
    assert rc(engine.execute(get_random(8))) == TPM_RC_INITIALIZE
    assert rc(engine.execute(startup_clear())) == TPM_RC_SUCCESS


def test_startup_getrandom_pcr_extend(started: SwtpmEngine) -> None:
    response = started.execute(get_random(16))
    assert rc(response) == TPM_RC_SUCCESS
    (count,) = struct.unpack_from(">H", response, 10)
    assert count == 16 and len(response) == 12 + 16

    digest = hashlib.sha256(b"kernel").digest()
    assert pcr_value(started) == bytes(32)
    assert rc(started.execute(pcr_extend(PCR, digest))) == TPM_RC_SUCCESS
    assert pcr_value(started) == extended(bytes(32), digest)


def test_locality_is_passed_to_swtpm(started: SwtpmEngine) -> None:
    # PCR 16 is resettable... and readable from any locality; these just must work.
    assert pcr_value(started, locality=3) == pcr_value(started, locality=0)
    assert rc(started.execute(get_random(4), locality=4)) == TPM_RC_SUCCESS


def test_bad_locality_is_a_tpm_error_not_an_exception(started: SwtpmEngine) -> None:
    assert rc(started.execute(get_random(4), locality=5)) == TPM_RC_LOCALITY
    assert rc(started.execute(get_random(4), locality=300)) == TPM_RC_LOCALITY
    # The engine is still fine and the previous locality still in force.
    assert rc(started.execute(get_random(4))) == TPM_RC_SUCCESS


def test_malformed_command_gets_a_tpm_response(started: SwtpmEngine) -> None:
    truncated = bytearray(pcr_extend(PCR, bytes(32))[:20])
    truncated[2:6] = struct.pack(">I", len(truncated))
    assert rc(started.execute(bytes(truncated))) != TPM_RC_SUCCESS
    assert rc(started.execute(get_random(4))) == TPM_RC_SUCCESS


def test_scratch_state_on_disk_is_encrypted(started: SwtpmEngine) -> None:
    started.execute(pcr_extend(PCR, bytes(32)))
    permall = started.state_dir / "tpm2-00.permall"
    header = permall.read_bytes()[:10]
    version, _min_version, _hdrsize, flags = struct.unpack_from(">BBHH", header)
    assert version == 2
    assert flags & 0x01, "swtpm's state file must be encrypted with the file key"
    assert stat.S_IMODE(started.run_dir.stat().st_mode) == 0o700


# --------------------------------------------------------------------------------------
# Export and restore
# --------------------------------------------------------------------------------------


def test_restored_tpm_resumes_without_startup(new_engine: MakeEngine) -> None:
    source = new_engine("source")
    source.start(None)
    assert rc(source.execute(startup_clear())) == TPM_RC_SUCCESS
    digest = hashlib.sha256(b"initrd").digest()
    assert rc(source.execute(pcr_extend(PCR, digest))) == TPM_RC_SUCCESS
    pcr_before = pcr_value(source)
    key_before = primary_public(source)
    state = source.export_state()
    source.stop()

    destination = new_engine("destination")
    destination.start(state)
    assert pcr_value(destination) == pcr_before
    assert primary_public(destination) == key_before
    # Already started: a second TPM2_Startup is refused as on real hardware.
    assert rc(destination.execute(startup_clear())) == TPM_RC_INITIALIZE


def test_export_leaves_the_source_running(started: SwtpmEngine) -> None:
    started.execute(pcr_extend(PCR, bytes(32)))
    before = pcr_value(started)
    first = started.export_state()
    assert pcr_value(started) == before
    assert rc(started.execute(get_random(4))) == TPM_RC_SUCCESS
    assert unpack_state(started.export_state()).permanent == unpack_state(first).permanent


def test_restored_unstarted_tpm_still_awaits_startup(new_engine: MakeEngine) -> None:
    source = new_engine("source")
    source.start(None)
    state = source.export_state()
    source.stop()

    destination = new_engine("destination")
    destination.start(state)
    assert rc(destination.execute(get_random(4))) == TPM_RC_INITIALIZE
    assert rc(destination.execute(startup_clear())) == TPM_RC_SUCCESS


def test_restore_chain_survives_several_generations(new_engine: MakeEngine) -> None:
    engine = new_engine("gen0")
    engine.start(None)
    engine.execute(startup_clear())
    expected = bytes(32)
    for generation in range(1, 4):
        digest = hashlib.sha256(bytes([generation])).digest()
        engine.execute(pcr_extend(PCR, digest))
        expected = extended(expected, digest)
        state = engine.export_state()
        engine.stop()
        engine = new_engine(f"gen{generation}")
        engine.start(state)
        assert pcr_value(engine) == expected


def test_state_container_round_trip_and_versioning() -> None:
    state = SwtpmState(permanent=b"p" * 10, volatile=b"v" * 3)
    blob = pack_state(state)
    assert blob.startswith(STATE_MAGIC)
    assert unpack_state(blob) == state

    future = bytearray(blob)
    future[len(STATE_MAGIC) : len(STATE_MAGIC) + 4] = struct.pack(">I", 2)
    with pytest.raises(StateFormatError, match="version 2 is not supported"):
        unpack_state(bytes(future))
    with pytest.raises(StateFormatError, match="wrong magic"):
        unpack_state(b"builtin-engine-state")
    with pytest.raises(StateFormatError, match="truncated"):
        unpack_state(blob[:-1])
    with pytest.raises(StateFormatError, match="trailing"):
        unpack_state(blob + b"\x00")
    with pytest.raises(StateFormatError, match="no permanent blob"):
        SwtpmState(permanent=b"")


def test_bad_state_is_refused_before_swtpm_starts(new_engine: MakeEngine) -> None:
    engine = new_engine()
    with pytest.raises(EngineError, match="not supported") as caught:
        engine.start(STATE_MAGIC + struct.pack(">I", 99))
    assert isinstance(caught.value, ValueError)
    assert engine.pid is None


def test_state_swtpm_rejects_raises_engine_error(new_engine: MakeEngine) -> None:
    engine = new_engine()
    garbage = pack_state(SwtpmState(permanent=b"not a libtpms blob"))
    with pytest.raises(EngineError, match="SET_STATEBLOB"):
        engine.start(garbage)
    assert engine.pid is None


# --------------------------------------------------------------------------------------
# Isolation and power
# --------------------------------------------------------------------------------------


def test_two_engines_are_isolated(new_engine: MakeEngine) -> None:
    first, second = new_engine("first"), new_engine("second")
    for engine in (first, second):
        engine.start(None)
        assert rc(engine.execute(startup_clear())) == TPM_RC_SUCCESS
    first.execute(pcr_extend(PCR, hashlib.sha256(b"only first").digest()))
    assert pcr_value(first) != bytes(32)
    assert pcr_value(second) == bytes(32)
    assert primary_public(first) != primary_public(second)  # distinct seeds
    assert first.pid != second.pid


@pytest.mark.parametrize("delete_volatile", [False, True])
def test_power_cycle_requires_startup_again(started: SwtpmEngine, delete_volatile: bool) -> None:
    started.execute(pcr_extend(PCR, bytes(32)))
    key = primary_public(started)
    started.power_cycle(delete_volatile=delete_volatile)
    assert rc(started.execute(get_random(4))) == TPM_RC_INITIALIZE
    assert rc(started.execute(startup_clear())) == TPM_RC_SUCCESS
    assert pcr_value(started) == bytes(32)  # Startup(CLEAR) reset the PCRs
    assert primary_public(started) == key  # permanent state is untouched


# --------------------------------------------------------------------------------------
# Lifecycle, cleanup and failures
# --------------------------------------------------------------------------------------


def test_stop_leaves_no_process_and_no_sockets(started: SwtpmEngine) -> None:
    pid = started.pid
    assert pid is not None and not process_gone(pid)
    # Both channels are connected before swtpm runs: no socket path, ever.
    assert not started.ctrl_path.exists() and not started.data_path.exists()
    assert [p for p in started.run_dir.iterdir() if p.is_socket()] == []
    started.stop()
    assert process_gone(pid)
    assert started.pid is None
    assert not started.ctrl_path.exists() and not started.data_path.exists()
    assert not started.state_dir.exists()
    started.stop()  # idempotent
    with pytest.raises(EngineError, match="not started"):
        started.execute(get_random(4))


def test_never_started_engine_stops_quietly(tmp_path: Path) -> None:
    SwtpmEngine(tmp_path / "idle").stop()


def test_engine_restarts_after_stop(started: SwtpmEngine) -> None:
    state = started.export_state()
    started.stop()
    started.start(state)
    assert rc(started.execute(get_random(4))) == TPM_RC_SUCCESS


def test_second_start_is_refused(started: SwtpmEngine) -> None:
    with pytest.raises(EngineError, match="already started"):
        started.start(None)


def test_context_manager_stops(tmp_path: Path) -> None:
    with SwtpmEngine(tmp_path / "ctx") as engine:
        engine.start(None)
        pid = engine.pid
    assert pid is not None and process_gone(pid)


def test_missing_binary_names_the_package(tmp_path: Path) -> None:
    engine = SwtpmEngine(tmp_path / "x", swtpm_binary="swtpm-does-not-exist")
    with pytest.raises(EngineError, match="install the Debian package swtpm"):
        engine.start(None)


def test_swtpm_dying_at_startup_shows_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "fake-swtpm"
    fake.write_text("#!/bin/sh\necho 'fake swtpm: libtpms refused to start' >&2\nexit 3\n")
    fake.chmod(0o755)
    engine = SwtpmEngine(tmp_path / "run", swtpm_binary=str(fake))
    with pytest.raises(EngineError, match="libtpms refused to start") as caught:
        engine.start(None)
    assert "status 3" in str(caught.value)
    assert engine.pid is None


def test_swtpm_killed_under_us_raises_and_stays_failed(started: SwtpmEngine) -> None:
    pid = started.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(EngineError, match="swtpm"):
        started.execute(get_random(4))
    with pytest.raises(EngineError, match="must be restarted"):
        started.execute(get_random(4))
    started.stop()
    assert process_gone(pid)


def test_hung_swtpm_times_out(new_engine: MakeEngine) -> None:
    engine = new_engine(timeout=0.2)
    engine.start(None)
    pid = engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(EngineError, match="did not answer"):
            engine.execute(get_random(4))
    finally:
        os.kill(pid, signal.SIGCONT)
    engine.stop()
    assert process_gone(pid)


def test_swtpm_exits_when_its_owner_goes_away(tmp_path: Path) -> None:
    """No leaks even without stop(): closing our connections ends swtpm."""
    engine = SwtpmEngine(tmp_path / "orphan")
    engine.start(None)
    process = engine._process
    assert process is not None
    for sock in (engine._ctrl, engine._data):
        assert sock is not None
        sock.close()
    assert process.wait(timeout=30) is not None
    engine.stop()


_KILLED_RIGHT_AFTER_SPAWN = """
import os, signal, sys
from pathlib import Path
from vtpm_manager.engines.swtpm import SwtpmEngine
engine = SwtpmEngine(Path(sys.argv[1]))
engine._prepare_run_dir()
engine._spawn(engine._find_binary())  # swtpm runs; nothing has talked to it yet
print(engine.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_swtpm_exits_when_its_owner_is_killed_right_after_spawning_it(tmp_path: Path) -> None:
    """The window DomS0 used to leak swtpm in: SIGKILL after Popen, before any
    exchange. Our connections exist before swtpm does, so it still goes."""
    owner = subprocess.run(
        [sys.executable, "-c", _KILLED_RIGHT_AFTER_SPAWN, str(tmp_path / "run")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    pid = int(owner.stdout)
    deadline = time.monotonic() + 10
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if not process_gone(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"swtpm {pid} outlived the process that spawned it")
