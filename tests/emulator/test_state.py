"""Snapshot/restore and saved session contexts."""

from __future__ import annotations

import struct

import pytest

from tests.emulator.emulator_wire import (
    SHA256,
    command,
    pcr_event,
    pcr_extend,
    pcr_read,
    rc,
    read_one,
    shutdown,
    startup,
)
from tpm_emulator import TPM, StateFormatError
from tpm_emulator.state import MAGIC


def start_session(tpm: TPM) -> int:
    resp = tpm.execute(command(0x176, struct.pack(">IIH", 0x40000007, 0x40000007, 16)
                               + b"n" * 16 + b"\x00\x00" + b"\x00" + b"\x00\x10" + b"\x00\x0b"))
    assert rc(resp) == 0, hex(rc(resp))
    return int.from_bytes(resp[10:14], "big")


def context_save(tpm: TPM, handle: int) -> bytes:
    resp = tpm.execute(command(0x162, struct.pack(">I", handle)))
    assert rc(resp) == 0, hex(rc(resp))
    return resp[10:]  # the TPMS_CONTEXT


def context_load(tpm: TPM, ctx: bytes) -> bytes:
    return tpm.execute(command(0x161, ctx))


def test_restore_is_exact_and_keeps_serving(tpm: TPM) -> None:
    for i in range(5):
        tpm.execute(pcr_event(i, b"event %d" % i))
    handle = start_session(tpm)
    blob = tpm.snapshot()
    other = TPM.restore(blob)
    assert other.execute(pcr_read(SHA256, list(range(8)))) == tpm.execute(
        pcr_read(SHA256, list(range(8))))
    assert rc(other.execute(pcr_extend(0, {SHA256: bytes(32)}))) == 0  # no Startup needed
    assert rc(other.execute(command(0x165, struct.pack(">I", handle)))) == 0  # session kept
    assert TPM.restore(blob).perm.eps == tpm.perm.eps


def test_snapshot_is_deterministic_for_the_same_state(tpm: TPM) -> None:
    blob = tpm.snapshot()
    again = TPM.restore(blob, clock=lambda: 0.0)
    assert TPM.restore(again.snapshot()).perm == again.perm


def test_restore_of_unstarted_and_shutdown_state() -> None:
    t = TPM()
    startup(t)
    t.execute(pcr_extend(5, {SHA256: b"\x07" * 32}))
    shutdown(t, 1)
    t.power_cycle()
    r = TPM.restore(t.snapshot())
    assert rc(r.execute(pcr_read(SHA256, [5]))) == 0x100  # still waiting for Startup
    startup(r, 1)
    assert read_one(r, SHA256, 5) == read_one(startup_and_return(t), SHA256, 5)


def startup_and_return(t: TPM) -> TPM:
    startup(t, 1)
    return t


@pytest.mark.parametrize("blob", [
    b"", b"garbage", MAGIC, b"\x00" * 100, "not bytes",
])
def test_garbage_is_refused(blob: bytes) -> None:
    with pytest.raises(StateFormatError):
        TPM.restore(blob)


def test_unknown_version_and_corruption_are_refused(tpm: TPM) -> None:
    blob = bytearray(tpm.snapshot())
    future = bytearray(blob)
    future[8:10] = b"\x00\x63"
    with pytest.raises(StateFormatError, match="version 99"):
        TPM.restore(bytes(future))
    blob[40] ^= 1
    with pytest.raises(StateFormatError, match="checksum"):
        TPM.restore(bytes(blob))
    with pytest.raises(ValueError):
        TPM.restore(bytes(blob[:-1]))


def test_context_replay_and_tamper(tpm: TPM) -> None:
    h = start_session(tpm)
    ctx1 = context_save(tpm, h)
    assert rc(context_load(tpm, ctx1)) == 0
    ctx2 = context_save(tpm, h)
    assert rc(context_load(tpm, ctx1)) == 0x1CB  # an old context is no longer valid
    tampered = bytearray(ctx2)
    tampered[-1] ^= 1
    assert rc(context_load(tpm, bytes(tampered))) == 0x1DF  # TPM_RC_INTEGRITY, P1
    assert rc(context_load(tpm, ctx2)) == 0
    assert rc(tpm.execute(command(0x162, struct.pack(">I", 0x02000009)))) == 0x910


def test_saved_session_survives_restart_not_reset() -> None:
    t = TPM()
    startup(t)
    ctx = context_save(t, start_session(t))
    shutdown(t, 1)
    t.power_cycle()
    startup(t, 0)  # TPM Restart
    assert rc(context_load(t, ctx)) == 0
    ctx = context_save(t, 0x02000000)
    t.power_cycle()
    startup(t, 0)  # TPM Reset: nullProof changes
    assert rc(context_load(t, ctx)) == 0x1DF


def test_session_limits(tpm: TPM) -> None:
    for _ in range(3):
        start_session(tpm)
    resp = tpm.execute(command(0x176, struct.pack(">IIH", 0x40000007, 0x40000007, 16)
                               + b"n" * 16 + b"\x00\x00\x00\x00\x10\x00\x0b"))
    assert rc(resp) == 0x903  # TPM_RC_SESSION_MEMORY
    saved = [context_save(tpm, 0x02000000 + i) for i in range(3)]
    assert len(saved) == 3
    listing = tpm.execute(command(0x17A, struct.pack(">III", 1, 0x03000000, 10)))
    assert struct.unpack_from(">I", listing, 15)[0] == 3
