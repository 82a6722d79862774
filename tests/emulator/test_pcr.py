"""PCR banks: known answers from hashlib, locality rules, Shutdown(STATE) resume."""

from __future__ import annotations

import hashlib
import struct

import pytest

from tests.emulator.emulator_wire import (
    NAMES,
    SHA1,
    SHA256,
    SHA384,
    SHA512,
    SIZES,
    command,
    parse_pcr_read,
    pcr_event,
    pcr_extend,
    pcr_read,
    pcr_reset,
    rc,
    read_one,
    shutdown,
    startup,
)
from tpm_emulator import TPM
from tpm_emulator.constants import RC

BANKS = (SHA1, SHA256, SHA384, SHA512)


def extend_ref(old: bytes, alg: int, data: bytes) -> bytes:
    return hashlib.new(NAMES[alg], old + data).digest()


@pytest.mark.parametrize("alg", BANKS)
def test_extend_matches_hashlib(tpm: TPM, alg: int) -> None:
    d1, d2 = bytes([1]) * SIZES[alg], bytes([2]) * SIZES[alg]
    assert rc(tpm.execute(pcr_extend(7, {alg: d1}))) == 0
    assert rc(tpm.execute(pcr_extend(7, {alg: d2}))) == 0
    expect = extend_ref(extend_ref(bytes(SIZES[alg]), alg, d1), alg, d2)
    assert read_one(tpm, alg, 7) == expect
    other = next(a for a in BANKS if a != alg)
    assert read_one(tpm, other, 7) == bytes(SIZES[other])  # other banks untouched


def test_event_extends_every_bank_with_the_data_digest(tpm: TPM) -> None:
    resp = tpm.execute(pcr_event(16, b"kernel"))
    assert rc(resp) == 0
    for alg in BANKS:
        digest = hashlib.new(NAMES[alg], b"kernel").digest()
        assert digest in resp
        assert read_one(tpm, alg, 16) == extend_ref(bytes(SIZES[alg]), alg, digest)


def test_null_pcr_event_extends_nothing(tpm: TPM) -> None:
    before = tpm.execute(pcr_read(SHA256, list(range(8))))
    assert rc(tpm.execute(pcr_event(0x40000007, b"x"))) == 0
    assert rc(tpm.execute(pcr_extend(0x40000007, {SHA256: bytes(32)}))) == 0
    assert tpm.execute(pcr_read(SHA256, list(range(8)))) == before


def test_initial_values_and_drtm_pcrs(tpm: TPM) -> None:
    assert read_one(tpm, SHA256, 0) == bytes(32)
    for p in range(17, 23):
        assert read_one(tpm, SHA256, p) == b"\xff" * 32
    t3 = TPM()
    startup(t3, locality=3)
    assert read_one(t3, SHA256, 0) == bytes(31) + b"\x03"


@pytest.mark.parametrize(("pcr", "locality", "ok"), [
    (16, 0, True), (23, 0, True), (0, 0, False), (15, 0, False), (17, 0, False),
    (17, 4, True), (20, 2, True), (20, 0, False), (16, 3, True), (16, 4, False),
])
def test_reset_rules(tpm: TPM, pcr: int, locality: int, ok: bool) -> None:
    tpm.execute(pcr_extend(pcr, {SHA256: bytes(32)}), 2 if pcr in (20, 21, 22) else locality)
    code = rc(tpm.execute(pcr_reset(pcr), locality))
    assert code == (0 if ok else RC.LOCALITY)
    if ok:
        assert read_one(tpm, SHA256, pcr) == bytes(32)


@pytest.mark.parametrize(("pcr", "locality", "ok"), [
    (0, 0, True), (17, 0, False), (17, 2, True), (21, 2, True), (21, 3, False), (23, 4, True),
])
def test_extend_locality_rules(tpm: TPM, pcr: int, locality: int, ok: bool) -> None:
    code = rc(tpm.execute(pcr_extend(pcr, {SHA256: bytes(32)}), locality))
    assert code == (0 if ok else RC.LOCALITY)


def test_reset_of_null_or_out_of_range_is_handle_value(tpm: TPM) -> None:
    assert rc(tpm.execute(pcr_reset(0x40000007))) == 0x184
    assert rc(tpm.execute(pcr_reset(24))) == 0x184


def test_read_returns_at_most_eight(tpm: TPM) -> None:
    _counter, digests = parse_pcr_read(tpm.execute(pcr_read(SHA256, list(range(24)))))
    assert len(digests) == 8


def test_update_counter_counts_each_bank_and_skips_no_increment_pcrs(tpm: TPM) -> None:
    c0, _ = parse_pcr_read(tpm.execute(pcr_read(SHA256, [0])))
    tpm.execute(pcr_extend(0, {SHA256: bytes(32), SHA1: bytes(20)}))
    c1, _ = parse_pcr_read(tpm.execute(pcr_read(SHA256, [0])))
    tpm.execute(pcr_extend(16, {SHA256: bytes(32)}))
    c2, _ = parse_pcr_read(tpm.execute(pcr_read(SHA256, [0])))
    assert (c1 - c0, c2 - c1) == (2, 0)


def test_bad_password_on_pcr_is_bad_auth_session_1(tpm: TPM) -> None:
    from tests.emulator.emulator_wire import with_pw

    resp = tpm.execute(with_pw(0x182, struct.pack(">I", 16), struct.pack(">I", 0), b"x"))
    assert rc(resp) == 0x9A2


def test_missing_authorization(tpm: TPM) -> None:
    resp = tpm.execute(command(0x182, struct.pack(">II", 16, 0)))
    assert rc(resp) == RC.AUTH_MISSING


def _state_after(kind_shutdown: int | None, kind_startup: int) -> tuple[TPM, int]:
    t = TPM()
    startup(t)
    t.execute(pcr_extend(3, {SHA256: b"\x01" * 32}))
    t.execute(pcr_extend(16, {SHA256: b"\x01" * 32}))
    if kind_shutdown is not None:
        shutdown(t, kind_shutdown)
    t.power_cycle()
    return t, rc(t.execute(command(0x144, struct.pack(">H", kind_startup))))


def test_resume_restores_state_saved_pcrs_only() -> None:
    t, code = _state_after(1, 1)
    assert code == 0
    assert read_one(t, SHA256, 3) == extend_ref(bytes(32), SHA256, b"\x01" * 32)
    assert read_one(t, SHA256, 16) == bytes(32)


@pytest.mark.parametrize(("sd", "su"), [(1, 0), (0, 0), (None, 0)])
def test_restart_and_reset_clear_pcrs(sd: int | None, su: int) -> None:
    t, code = _state_after(sd, su)
    assert code == 0
    assert read_one(t, SHA256, 3) == bytes(32)


@pytest.mark.parametrize("sd", [0, None])
def test_startup_state_needs_shutdown_state(sd: int | None) -> None:
    _, code = _state_after(sd, 1)
    assert code == 0x1C4


def test_delete_volatile_drops_the_saved_state(tpm: TPM) -> None:
    shutdown(tpm, 1)
    tpm.power_cycle(delete_volatile=True)
    assert rc(tpm.execute(command(0x144, b"\x00\x01"))) == 0x1C4


def test_state_change_after_shutdown_voids_it(tpm: TPM) -> None:
    shutdown(tpm, 1)
    tpm.execute(pcr_extend(3, {SHA256: b"\x01" * 32}))
    tpm.power_cycle()
    assert rc(tpm.execute(command(0x144, b"\x00\x01"))) == 0x1C4


def test_restart_and_reset_counts_in_read_clock() -> None:
    t = TPM()
    startup(t)
    shutdown(t, 1)
    t.power_cycle()
    startup(t, 0)  # TPM Restart
    r = t.execute(command(0x181))
    reset_count, restart_count, safe = struct.unpack_from(">IIB", r, 26)
    assert (reset_count, restart_count, safe) == (1, 1, 1)
    t.power_cycle()
    startup(t, 0)  # disorderly TPM Reset
    reset_count, restart_count, safe = struct.unpack_from(">IIB", t.execute(command(0x181)), 26)
    assert (reset_count, restart_count, safe) == (2, 0, 0)
