"""Hierarchy administration and dictionary-attack protection, differentially: the same
raw command sequences to a real swtpm (libtpms) and to our TPM; response codes and the
TPM_PT_PERMANENT / STARTUP_CLEAR / LOCKOUT_* properties must agree step by step."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest

from tests.emulator.emulator_wire import command, get_capability, rc, with_pw
from tests.emulator.test_differential_objects import (
    BASE,
    EMPTY_SENSITIVE,
    create_primary,
    flush,
)
from tests.emulator.test_differential_swtpm import started_pair

OWNER, NULL, LOCKOUT = 0x40000001, 0x40000007, 0x4000000A
ENDORSEMENT, PLATFORM, PLATFORM_NV = 0x4000000B, 0x4000000C, 0x4000000D
PT_PERMANENT, PT_STARTUP_CLEAR, PT_LOCKOUT_COUNTER = 0x200, 0x201, 0x20E
TPM_RC_RETRY = 0x922

CC_HIERARCHY_CONTROL, CC_CHANGE_EPS, CC_CHANGE_PPS, CC_CLEAR = 0x121, 0x124, 0x125, 0x126
CC_CLEAR_CONTROL, CC_CLOCK_SET, CC_CHANGE_AUTH, CC_PCR_ALLOCATE = 0x127, 0x128, 0x129, 0x12B
CC_PCR_SET_POLICY, CC_SET_PRIMARY_POLICY, CC_CLOCK_RATE = 0x12C, 0x12E, 0x130
CC_DA_RESET, CC_DA_PARAMETERS, CC_PCR_SET_AUTH, CC_EVICT = 0x139, 0x13A, 0x183, 0x120
CC_NV_DEFINE, CC_NV_WRITE, CC_NV_READ, CC_READ_PUBLIC, CC_READ_CLOCK = (
    0x12A, 0x137, 0x14E, 0x173, 0x181)
ADMIN_CCS = (CC_HIERARCHY_CONTROL, CC_CHANGE_EPS, CC_CHANGE_PPS, CC_CLEAR, CC_CLEAR_CONTROL,
             CC_CLOCK_SET, CC_CHANGE_AUTH, CC_PCR_ALLOCATE, CC_PCR_SET_POLICY,
             CC_SET_PRIMARY_POLICY, CC_CLOCK_RATE, CC_DA_RESET, CC_DA_PARAMETERS,
             CC_PCR_SET_AUTH)


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def change_auth(hierarchy: int, new: bytes, password: bytes = b"") -> bytes:
    return with_pw(CC_CHANGE_AUTH, u32(hierarchy), tpm2b(new), password)


def clear(auth: int = PLATFORM, password: bytes = b"") -> bytes:
    return with_pw(CC_CLEAR, u32(auth), b"", password)


def clear_control(auth: int, disable: int, password: bytes = b"") -> bytes:
    return with_pw(CC_CLEAR_CONTROL, u32(auth), bytes([disable]), password)


def hierarchy_control(auth: int, enable: int, state: int, password: bytes = b"") -> bytes:
    return with_pw(CC_HIERARCHY_CONTROL, u32(auth), u32(enable) + bytes([state]), password)


def set_primary_policy(auth: int, policy: bytes, alg: int) -> bytes:
    return with_pw(CC_SET_PRIMARY_POLICY, u32(auth), tpm2b(policy) + struct.pack(">H", alg))


def da_parameters(max_tries: int, recovery: int, lockout_recovery: int,
                  password: bytes = b"") -> bytes:
    return with_pw(CC_DA_PARAMETERS, u32(LOCKOUT), u32(max_tries, recovery, lockout_recovery),
                   password)


def da_reset(password: bytes = b"") -> bytes:
    return with_pw(CC_DA_RESET, u32(LOCKOUT), b"", password)


def clock_set(auth: int, value: int) -> bytes:
    return with_pw(CC_CLOCK_SET, u32(auth), struct.pack(">Q", value))


def clock_rate(auth: int, adjust: int) -> bytes:
    return with_pw(CC_CLOCK_RATE, u32(auth), struct.pack(">b", adjust))


# An owner index without TPMA_NV_NO_DA: its authValue is DA-protected.
DA_INDEX = 0x01500001
DA_INDEX_ATTRS = 0x2 | 0x4 | (1 << 17) | (1 << 18)  # OWNER/AUTH WRITE and READ


def define_da_index(password: bytes = b"pw") -> bytes:
    public = struct.pack(">IHIHH", DA_INDEX, 0x000B, DA_INDEX_ATTRS, 0, 8)
    return with_pw(CC_NV_DEFINE, u32(OWNER), tpm2b(password) + tpm2b(public))


def nv_write(password: bytes, auth: int = DA_INDEX) -> bytes:
    return with_pw(CC_NV_WRITE, u32(auth, DA_INDEX), tpm2b(b"12345678") + b"\x00\x00", password)


def nv_read(password: bytes, auth: int = DA_INDEX) -> bytes:
    return with_pw(CC_NV_READ, u32(auth, DA_INDEX), struct.pack(">HH", 8, 0), password)


def properties(tpm: Any) -> dict[int, int]:
    r = tpm.execute(get_capability(6, PT_PERMANENT, 32))
    assert rc(r) == 0
    (count,) = struct.unpack_from(">I", r, 15)
    pairs = (struct.unpack_from(">II", r, 19 + 8 * i) for i in range(count))
    wanted = (PT_PERMANENT, PT_STARTUP_CLEAR, 0x20E, 0x20F, 0x210, 0x211)
    return {k: v for k, v in pairs if k in wanted}


def send(ours: Any, theirs: Any, cmd: bytes) -> tuple[bytes, bytes]:
    """One command to each. libtpms answers TPM_RC_RETRY to the first DA-protected
    authorization of a power cycle (a TSS resends it, as we do); we never do."""
    mine, other = ours.execute(cmd), theirs.execute(cmd)
    if rc(other) == TPM_RC_RETRY:
        other = theirs.execute(cmd)
    return mine, other


def run(ours: Any, theirs: Any, script: list[bytes]) -> list[int]:
    """Each command to both; codes and the admin properties must match after each."""
    codes = []
    for n, cmd in enumerate(script):
        a, b = send(ours, theirs, cmd)
        assert rc(a) == rc(b), f"step {n}: ours 0x{rc(a):03X}, libtpms 0x{rc(b):03X}"
        props_ours, props_theirs = properties(ours), properties(theirs)
        assert props_ours == props_theirs, f"step {n}: {props_ours} != {props_theirs}"
        codes.append(rc(a))
    return codes


def test_admin_commands_have_libtpms_attributes(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cc in ADMIN_CCS:
        mine, other = (t.execute(get_capability(2, cc, 1)) for t in (ours, theirs))
        assert mine[19:23] == other[19:23], hex(cc)


def test_hierarchy_change_auth_and_clear_control(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    codes = run(ours, theirs, [
        change_auth(OWNER, b"owner"),
        change_auth(OWNER, b"again"),                 # BAD_AUTH: owner is DA-exempt
        change_auth(OWNER, b"owner\x00\x00", b"owner"),  # trailing zeros are dropped
        change_auth(OWNER, b"", b"owner"),
        change_auth(NULL, b"x"),                      # VALUE on H1
        change_auth(ENDORSEMENT, b"e" * 48),
        change_auth(LOCKOUT, b"lock"),
        change_auth(PLATFORM, b"plat"),
        clear_control(LOCKOUT, 0, b"lock"),           # AUTH_FAIL: lockout cannot re-enable
        clear_control(OWNER, 1),                      # VALUE on H1
        clear_control(PLATFORM, 2, b"plat"),          # VALUE on P1
        clear_control(LOCKOUT, 1, b"lock"),
        clear(LOCKOUT, b"lock"),                      # DISABLED
        clear_control(PLATFORM, 0, b"plat"),
        clear(OWNER),                                 # VALUE on H1
        clear(LOCKOUT, b"lock"),
        change_auth(LOCKOUT, b"", b"lock"),           # lockoutAuth was emptied
        change_auth(ENDORSEMENT, b""),
        change_auth(PLATFORM, b"", b"plat"),          # platformAuth survives Clear
    ])
    assert codes[1] == 0x9A2 and codes[4] == 0x184 and codes[8] == 0x08E
    assert codes[12] == 0x120 and codes[16] == 0x98E


def test_dictionary_attack_lockout_and_reset(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    codes = run(ours, theirs, [
        define_da_index(),
        nv_write(b"pw"),
        da_parameters(2, 5, 7),
        nv_read(b"bad"),                              # AUTH_FAIL, failedTries 1
        nv_read(b"bad"),                              # AUTH_FAIL, now in lockout
        nv_read(b"pw"),                               # LOCKOUT, even with the right one
        nv_read(b"", OWNER),                          # owner authorization is exempt
        da_parameters(2, 5, 7),                       # lockoutAuth works in lockout
        da_reset(),
        nv_read(b"pw"),
        da_parameters(0, 5, 7),                       # maxTries 0: always locked out
        nv_read(b"pw"),
        da_parameters(3, 0, 7),                       # recoveryTime 0: nothing counted
        nv_read(b"bad"),
        nv_read(b"pw"),
        da_reset(b"wrong"),                           # lockoutAuth failure: AUTH_FAIL
        da_reset(),                                   # then lockoutAuth is locked out
        clear(LOCKOUT),
    ])
    assert codes[3] == codes[4] == 0x98E and codes[5] == 0x921 and codes[6] == 0
    assert codes[11] == 0x921 and codes[15] == 0x98E and codes[16] == codes[17] == 0x921


def test_hierarchy_control_and_disabled_hierarchies(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    # An owner primary made persistent, and an endorsement primary still loaded.
    for cmd in (create_primary(BASE),
                with_pw(CC_EVICT, u32(OWNER, 0x80000000), u32(0x81000001)),
                flush(0x80000000), create_primary(BASE, hierarchy=ENDORSEMENT)):
        a, b = send(ours, theirs, cmd)
        assert rc(a) == rc(b) == 0
    codes = run(ours, theirs, [
        define_da_index(),
        hierarchy_control(PLATFORM, NULL, 0),         # VALUE on P1
        hierarchy_control(PLATFORM, OWNER, 2),        # VALUE on P2
        hierarchy_control(NULL, OWNER, 0),            # VALUE on H1
        hierarchy_control(LOCKOUT, OWNER, 0),
        hierarchy_control(OWNER, ENDORSEMENT, 0),     # AUTH_TYPE
        hierarchy_control(OWNER, PLATFORM, 0),        # AUTH_TYPE
        hierarchy_control(OWNER, PLATFORM_NV, 0),     # AUTH_TYPE
        hierarchy_control(ENDORSEMENT, ENDORSEMENT, 0),
        command(CC_READ_PUBLIC, u32(0x80000000)),     # the EK primary was flushed
        create_primary(BASE, hierarchy=ENDORSEMENT),  # HIERARCHY on H1
        hierarchy_control(ENDORSEMENT, ENDORSEMENT, 1),  # HIERARCHY: cannot even ask
        set_primary_policy(ENDORSEMENT, b"", 0x0010),
        hierarchy_control(PLATFORM, ENDORSEMENT, 1),
        create_primary(BASE, hierarchy=ENDORSEMENT),
        flush(0x80000000),
        hierarchy_control(OWNER, OWNER, 0),
        command(CC_READ_PUBLIC, u32(0x81000001)),     # HANDLE: hidden with its hierarchy
        nv_read(b"pw"),                               # HANDLE: owner index is hidden
        hierarchy_control(OWNER, OWNER, 1),           # HIERARCHY
        hierarchy_control(PLATFORM, OWNER, 1),
        command(CC_READ_PUBLIC, u32(0x81000001)),
        hierarchy_control(PLATFORM, PLATFORM_NV, 0),
        nv_read(b"pw"),                               # owner indices are unaffected
        hierarchy_control(PLATFORM, PLATFORM, 0),
        clear_control(PLATFORM, 1),                   # HIERARCHY: platform is gone
        with_pw(CC_CHANGE_EPS, u32(PLATFORM), b""),
    ])
    assert codes[5] == 0x124 and codes[10] == 0x185 and codes[17] == 0x18B
    assert codes[18] == 0x18B and codes[25] == 0x185


def test_clear_flushes_owner_and_endorsement_and_resets_clock(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    codes = run(ours, theirs, [
        define_da_index(),
        create_primary(BASE, hierarchy=ENDORSEMENT),
        with_pw(CC_EVICT, u32(OWNER, 0x80000000), u32(0x81010001)),
        create_primary(BASE),
        create_primary(BASE, hierarchy=PLATFORM),
        clock_set(OWNER, 10**9),
        clear(),
        command(CC_READ_PUBLIC, u32(0x81010001)),     # HANDLE: the persistent EK is gone
        command(CC_READ_PUBLIC, u32(0x80000000)),     # REFERENCE_H0: flushed
        command(CC_READ_PUBLIC, u32(0x80000001)),
        command(CC_READ_PUBLIC, u32(0x80000002)),     # the platform primary stays
        nv_read(b"pw"),                               # HANDLE: owner index deleted
    ])
    assert codes[7] == 0x18B and codes[8] == 0x910 and codes[10] == 0 and codes[11] == 0x18B
    for tpm in (ours, theirs):
        r = tpm.execute(command(CC_READ_CLOCK))
        clock, reset_count, restart_count, safe = struct.unpack_from(">QIIB", r, 18)
        assert clock < 10**6 and reset_count == restart_count == 0 and safe == 1


def test_clock_set_and_rate_adjust(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    run(ours, theirs, [
        clock_set(OWNER, 10**9),
        clock_set(OWNER, 0),                          # VALUE on P1: Clock never goes back
        clock_set(OWNER, 10**9 - 1),
        clock_set(ENDORSEMENT, 10**10),               # VALUE on H1
        clock_set(PLATFORM, 0xFFFF000000000001),      # VALUE on P1: too large
        clock_set(PLATFORM, 0xFFFF000000000000),
        clock_rate(OWNER, 4),                         # VALUE on P1
        clock_rate(OWNER, -3),
        clock_rate(PLATFORM, 3),
        clock_rate(OWNER, -4),
    ])
    for tpm in (ours, theirs):
        r = tpm.execute(command(CC_READ_CLOCK))
        assert struct.unpack_from(">Q", r, 18)[0] >= 0xFFFF000000000000


def test_primary_policies_seeds_and_pcr_authorization(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    policy = b"p" * 32
    codes = run(ours, theirs, [
        set_primary_policy(OWNER, b"p" * 20, 0x000B),  # SIZE on P1
        set_primary_policy(OWNER, b"p" * 20, 0x0010),  # SIZE on P1: NULL has no digest
        set_primary_policy(OWNER, policy, 0x0099),     # HASH on P2
        set_primary_policy(NULL, policy, 0x000B),      # VALUE on H1
        set_primary_policy(OWNER, policy, 0x000B),
        set_primary_policy(LOCKOUT, b"q" * 20, 0x0004),
        set_primary_policy(PLATFORM, policy, 0x000B),
        set_primary_policy(OWNER, b"", 0x0010),
        with_pw(CC_PCR_SET_AUTH, u32(16), tpm2b(b"x")),          # VALUE (no group)
        with_pw(CC_PCR_SET_AUTH, u32(20), tpm2b(b"x")),
        with_pw(0x182, u32(20), u32(0)),                          # BAD_AUTH now
        with_pw(CC_PCR_SET_AUTH, u32(21), tpm2b(b"y"), b"x"),     # one group value
        with_pw(CC_PCR_SET_AUTH, u32(22), tpm2b(b"z"), b"y"),
        with_pw(CC_PCR_SET_POLICY, u32(PLATFORM), tpm2b(policy) + b"\x00\x0b" + u32(20)),
        with_pw(CC_PCR_SET_POLICY, u32(PLATFORM), tpm2b(policy) + b"\x00\x0b" + u32(16)),
        with_pw(CC_PCR_SET_POLICY, u32(PLATFORM), tpm2b(b"p" * 20) + b"\x00\x0b" + u32(16)),
        with_pw(CC_PCR_SET_POLICY, u32(PLATFORM), tpm2b(policy) + b"\x00\x0b" + u32(24)),
        with_pw(CC_PCR_SET_POLICY, u32(PLATFORM), tpm2b(b"") + b"\x00\x10" + u32(21)),
        with_pw(CC_PCR_SET_POLICY, u32(OWNER), tpm2b(b"") + b"\x00\x10" + u32(21)),
        with_pw(CC_CHANGE_PPS, u32(OWNER), b""),                  # VALUE on H1
        with_pw(CC_CHANGE_PPS, u32(PLATFORM), b""),
        with_pw(CC_CHANGE_EPS, u32(PLATFORM), b""),
        clear(),
        with_pw(CC_PCR_SET_AUTH, u32(20), tpm2b(b""), b"z"),      # Clear emptied it
    ])
    assert codes[:4] == [0x1D5, 0x1D5, 0x2C3, 0x184] and codes[8] == 0x084
    assert codes[10] == 0x9A2 and codes[14] == 0x3C4 and codes[23] == 0x9A2


def test_pcr_allocate(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    full, none = b"\x03\xff\xff\xff", b"\x03\x00\x00\x00"

    def allocate(*banks: tuple[int, bytes]) -> bytes:
        body = u32(len(banks)) + b"".join(struct.pack(">H", a) + s for a, s in banks)
        return with_pw(CC_PCR_ALLOCATE, u32(PLATFORM), body)

    cases = [
        allocate((0x0004, full), (0x000B, full), (0x000C, full), (0x000D, full)),
        allocate(),
        allocate((0x000B, none), (0x000B, full)),          # the last entry for a bank wins
        allocate((0x0004, none), (0x000B, full), (0x000C, none)),
        allocate((0x0004, none), (0x000B, full), (0x000C, none), (0x000D, none)),
        allocate((0x0004, none), (0x000B, none), (0x000C, none), (0x000D, full)),
        allocate((0x0004, none), (0x000B, b"\x03\xff\xff\x00"), (0x000C, none), (0x000D, none)),
        allocate((0x0010, full)),                          # HASH on P1
        allocate((0x000B, b"\x04\xff\xff\xff\xff")),       # VALUE on P1: sizeofSelect
        with_pw(CC_PCR_ALLOCATE, u32(OWNER), u32(0)),      # VALUE on H1
    ]
    for n, cmd in enumerate(cases):
        a, b = send(ours, theirs, cmd)
        assert rc(a) == rc(b), f"case {n}: ours 0x{rc(a):03X}, libtpms 0x{rc(b):03X}"
        if rc(a) == 0:
            # The same four banks: allocationSuccess, maxPCR, sizeNeeded and
            # sizeAvailable all agree.
            assert a[14:] == b[14:], f"case {n}: ours {a[14:].hex()}, libtpms {b[14:].hex()}"


def test_incremental_self_test_refuses_unknown_algorithms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    codes = run(ours, theirs, [
        command(0x142, u32(0)),
        command(0x142, u32(1) + struct.pack(">H", 0x000B)),
        command(0x142, u32(1) + struct.pack(">H", 0x0099)),  # VALUE on P1
    ])
    assert codes == [0, 0, 0x1C4]


def test_platform_nv_indices_hide_with_ph_enable_nv(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    index = 0x01400001
    attrs = 0x1 | (1 << 16) | (1 << 25) | (1 << 30)  # PPWRITE, PPREAD, NO_DA, PLATFORMCREATE
    public = struct.pack(">IHIHH", index, 0x000B, attrs, 0, 8)
    read = with_pw(CC_NV_READ, u32(PLATFORM, index), struct.pack(">HH", 8, 0))
    codes = run(ours, theirs, [
        with_pw(CC_NV_DEFINE, u32(PLATFORM), tpm2b(b"") + tpm2b(public)),
        with_pw(CC_NV_WRITE, u32(PLATFORM, index), tpm2b(b"platform") + b"\x00\x00"),
        hierarchy_control(PLATFORM, PLATFORM_NV, 0),
        read,                                          # HANDLE on H2: hidden
        hierarchy_control(PLATFORM, PLATFORM_NV, 1),
        read,
        hierarchy_control(PLATFORM, OWNER, 0),
        read,                                          # the owner's switch is not ours
        with_pw(CC_CHANGE_PPS, u32(PLATFORM), b""),
        read,                                          # ChangePPS keeps platform indices
    ])
    assert codes[3] == 0x28B and codes[5] == codes[7] == codes[9] == 0


def test_self_healing_after_recovery_time(swtpm: Any) -> None:
    import time

    ours, theirs = started_pair(swtpm)
    run(ours, theirs, [
        define_da_index(),
        nv_write(b"pw"),
        change_auth(LOCKOUT, b"lock"),
        da_parameters(2, 1, 1, b"lock"),
        nv_read(b"bad"),
        nv_read(b"bad"),
        nv_read(b"pw"),                               # LOCKOUT
        da_reset(b"bad"),                             # lockoutAuth now disabled for 1 s
        da_reset(b"lock"),                            # LOCKOUT
    ])
    time.sleep(1.3)  # one recoveryTime and one lockoutRecovery, not two
    codes = run(ours, theirs, [
        nv_read(b"pw"),                               # one failure forgiven
        da_reset(b"lock"),
    ])
    assert codes == [0, 0]


def _power_cycle(ours: Any, theirs: Any) -> None:
    """_TPM_Init on both: ours directly, swtpm through its control channel (CMD_INIT)."""
    ours.power_cycle()
    with socket.create_connection(("127.0.0.1", theirs.port + 1), timeout=10) as s:
        s.sendall(struct.pack(">II", 2, 0))
        assert s.recv(4) == bytes(4)


@pytest.mark.parametrize("resume", [0, 1], ids=["then-Restart", "then-Resume"])
def test_pcr_allocation_takes_effect_at_the_next_reset(swtpm: Any, resume: int) -> None:
    """PCR_Allocate (sha1 out, sha256 without PCR 23) changes nothing until _TPM_Init,
    refuses Shutdown(STATE) meanwhile, then PCR_Read, TPM_CAP_PCRS, PCR_Extend,
    PCR_Event and PolicyPCR answer byte for byte as libtpms; a second allocation
    made after Shutdown(STATE) applies to the TPM Restart or Resume that follows."""
    ours, theirs = started_pair(swtpm)
    full, none = b"\x03\xff\xff\xff", b"\x03\x00\x00\x00"

    def allocate(*banks: tuple[int, bytes]) -> bytes:
        body = u32(len(banks)) + b"".join(struct.pack(">H", a) + s for a, s in banks)
        return with_pw(CC_PCR_ALLOCATE, u32(PLATFORM), body)

    def same(*cmds: bytes) -> list[int]:
        codes = []
        for n, cmd in enumerate(cmds):
            a, b = send(ours, theirs, cmd)
            assert a == b, f"command {n}: ours {a.hex()}, libtpms {b.hex()}"
            codes.append(rc(a))
        return codes

    startup = lambda su: command(0x144, struct.pack(">H", su))  # noqa: E731
    shutdown = lambda su: command(0x145, struct.pack(">H", su))  # noqa: E731
    pcr_read = command(0x17E, u32(2) + b"\x00\x04\x03\x01\x00\x00"
                       + b"\x00\x0b\x03\x01\x00\xc0")
    pcrs_cap = get_capability(5, 0, 8)
    extend = with_pw(0x182, u32(0), u32(2) + b"\x00\x04" + b"\x11" * 20
                     + b"\x00\x0b" + b"\x22" * 32)
    event = with_pw(0x13C, u32(0), b"\x00\x03abc")

    assert same(allocate((0x0004, none), (0x000B, b"\x03\xff\xff\x7f")),
                pcr_read, pcrs_cap, shutdown(1), shutdown(0)) == [0, 0, 0, 0x1CA, 0]
    _power_cycle(ours, theirs)
    assert same(startup(1), startup(0), pcr_read, pcrs_cap, extend, pcr_read, event,
                pcr_read) == [0x1C4, 0, 0, 0, 0, 0, 0, 0]

    # A trial PolicyPCR over sha1 PCR 0 and sha256 PCR 22, 23: libtpms records the
    # selection with the unallocated PCRs cleared, so the policy digests agree.
    trial = command(0x176, u32(NULL, NULL) + b"\x00\x20" + bytes(32) + b"\x00\x00\x03"
                    + b"\x00\x10\x00\x0b")
    digests = []
    for tpm in (ours, theirs):
        r = tpm.execute(trial)
        assert rc(r) == 0
        session = r[10:14]
        assert rc(tpm.execute(command(0x17F, session + b"\x00\x00" + u32(2)
                                      + b"\x00\x04\x03\x01\x00\x00"
                                      + b"\x00\x0b\x03\x00\x00\xc0"))) == 0
        digests.append(tpm.execute(command(0x189, session)))
        assert rc(tpm.execute(command(0x165, session))) == 0
    assert digests[0] == digests[1] and rc(digests[0]) == 0

    # Creation data over sha1 PCR 0 and twelve sha256 PCRs (22, 23 among them): the
    # selection keeps the allocated ones, with no limit of eight, and so does the digest.
    creation_pcrs = u32(2) + b"\x00\x04\x03\x01\x00\x00" + b"\x00\x0b\x03\xff\x0f\xc0"
    primary = with_pw(0x131, u32(OWNER), EMPTY_SENSITIVE + tpm2b(BASE) + b"\x00\x00"
                      + creation_pcrs)
    creation_data = []
    for tpm in (ours, theirs):
        r = tpm.execute(primary)
        assert rc(r) == 0
        (public_size,) = struct.unpack_from(">H", r, 18)
        (size,) = struct.unpack_from(">H", r, 20 + public_size)
        data = r[22 + public_size: 22 + public_size + size]
        creation_data.append(data[:4 + 2 * 6 + 2 + 32])  # pcrSelect and pcrDigest
        assert rc(tpm.execute(flush(struct.unpack_from(">I", r, 10)[0]))) == 0
    assert creation_data[0] == creation_data[1]

    # PCR_Allocate after Shutdown(STATE) keeps the orderly state: the next Startup is a
    # TPM Restart or Resume, and the new allocation applies to it all the same.
    assert same(extend, shutdown(1), allocate((0x0004, full), (0x000B, full)),
                pcrs_cap) == [0, 0, 0, 0]
    _power_cycle(ours, theirs)
    assert same(startup(resume), pcrs_cap, pcr_read, shutdown(1)) == [0, 0, 0, 0]
