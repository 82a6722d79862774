"""NV indices, differentially: the same raw command sequences to a real swtpm (libtpms)
and to our TPM; response codes, NV contents, public areas and Names must agree."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest

from tests.emulator.emulator_wire import RH_OWNER, SHA1, SHA256, command, rc, with_pw
from tests.emulator.test_differential_swtpm import started_pair

RH_PLATFORM = 0x4000000C
CC_DEFINE, CC_UNDEFINE, CC_UNDEFINE_SPECIAL = 0x12A, 0x122, 0x11F
CC_WRITE, CC_INCREMENT, CC_EXTEND, CC_SETBITS = 0x137, 0x134, 0x136, 0x135
CC_WRITELOCK, CC_GLOBALLOCK, CC_READ, CC_READLOCK = 0x138, 0x132, 0x14E, 0x14F
CC_READPUBLIC, CC_CHANGEAUTH, CC_GETCAP = 0x169, 0x13B, 0x17A

# TPMA_NV bits (Part 2, 13.4)
PPWRITE, OWNERWRITE, AUTHWRITE, POLICYWRITE = 1, 2, 4, 8
COUNTER, BITS, EXTEND, PIN_FAIL = 0x10, 0x20, 0x40, 0x80
POLICY_DELETE, WRITEALL, WRITEDEFINE = 1 << 10, 1 << 12, 1 << 13
WRITE_STCLEAR, GLOBALLOCK = 1 << 14, 1 << 15
PPREAD, OWNERREAD, AUTHREAD, POLICYREAD = 1 << 16, 1 << 17, 1 << 18, 1 << 19
NO_DA, ORDERLY, CLEAR_STCLEAR = 1 << 25, 1 << 26, 1 << 27
WRITTEN, PLATFORMCREATE, READ_STCLEAR = 1 << 29, 1 << 30, 1 << 31
OWNER_RW = OWNERWRITE | OWNERREAD | AUTHWRITE | AUTHREAD | NO_DA


def public(index: int, attrs: int, size: int, alg: int = SHA256, policy: bytes = b"") -> bytes:
    body = struct.pack(">IHIH", index, alg, attrs, len(policy)) + policy
    body += struct.pack(">H", size)
    return struct.pack(">H", len(body)) + body


def define(index: int, attrs: int, size: int, auth: bytes = b"", hierarchy: int = RH_OWNER,
           alg: int = SHA256, policy: bytes = b"") -> bytes:
    params = struct.pack(">H", len(auth)) + auth + public(index, attrs, size, alg, policy)
    return with_pw(CC_DEFINE, struct.pack(">I", hierarchy), params)


def two(auth: int, index: int) -> bytes:
    return struct.pack(">II", auth, index)


def write(index: int, data: bytes, offset: int = 0, auth: int | None = None,
          password: bytes = b"") -> bytes:
    params = struct.pack(">H", len(data)) + data + struct.pack(">H", offset)
    return with_pw(CC_WRITE, two(auth or index, index), params, password)


def read(index: int, size: int, offset: int = 0, auth: int | None = None,
         password: bytes = b"") -> bytes:
    return with_pw(CC_READ, two(auth or index, index), struct.pack(">HH", size, offset),
                   password)


def simple(cc: int, index: int, auth: int | None = None, params: bytes = b"",
           password: bytes = b"") -> bytes:
    return with_pw(cc, two(auth or index, index), params, password)


def read_public(index: int) -> bytes:
    return command(CC_READPUBLIC, struct.pack(">I", index))


def undefine(index: int, hierarchy: int = RH_OWNER) -> bytes:
    return with_pw(CC_UNDEFINE, two(hierarchy, index), b"")


def run(ours: Any, theirs: Any, script: list[bytes]) -> list[int]:
    """Send each command to both; the codes must match. Returns them."""
    codes = []
    for n, cmd in enumerate(script):
        a, b = ours.execute(cmd), theirs.execute(cmd)
        assert rc(a) == rc(b), f"step {n}: ours 0x{rc(a):03X}, libtpms 0x{rc(b):03X}"
        if rc(a) == 0 and cmd[6:10] in (struct.pack(">I", CC_READ),
                                         struct.pack(">I", CC_READPUBLIC)):
            assert a == b, f"step {n}: responses differ"
        codes.append(rc(a))
    return codes


def test_ordinary_index_write_read_and_name(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    idx = 0x01500001
    codes = run(ours, theirs, [
        define(idx, OWNER_RW, 32, b"secret"),
        read_public(idx),
        read(idx, 4, password=b"secret"),          # NV_UNINITIALIZED
        write(idx, b"abcd", 4, password=b"secret"),
        read_public(idx),                          # WRITTEN is set: a new Name
        read(idx, 32, password=b"secret"),         # unwritten octets as libtpms has them
        read(idx, 8, 30, password=b"secret"),      # NV_RANGE
        read(idx, 1, 33, password=b"secret"),      # offset beyond: VALUE on P2
        write(idx, b"x" * 33, password=b"secret"),  # NV_RANGE
        write(idx, b"x", 33, password=b"secret"),  # VALUE on P2
        write(idx, b"x", password=b"wrong"),       # BAD_AUTH (NO_DA)
        read(idx, 4, auth=RH_OWNER),
        write(idx, b"owner", 0, auth=RH_OWNER),
        read(idx, 8, auth=RH_OWNER),
        write(idx, b"p", auth=RH_PLATFORM),        # NV_AUTHORIZATION: no PPWRITE
        define(idx, OWNER_RW, 32),                 # NV_DEFINED
        undefine(idx, RH_PLATFORM),
        read_public(idx),                          # HANDLE
    ])
    assert codes[2] == 0x14A and codes[8] == 0x146 and codes[14] == 0x149
    assert codes[15] == 0x14C and codes[-1] == 0x18B


def test_writeall_and_attribute_refusals(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    run(ours, theirs, [
        define(0x01500002, OWNER_RW | WRITEALL, 16),
        write(0x01500002, b"half"),                # NV_RANGE: WRITEALL
        write(0x01500002, b"h" * 16),
        define(0x01500003, OWNER_RW | WRITEALL, 2000),          # SIZE: WRITEALL > buffer
        define(0x01500003, OWNERREAD | NO_DA, 8),               # no way to write
        define(0x01500003, OWNERWRITE | NO_DA, 8),              # no way to read
        define(0x01500003, OWNER_RW | WRITTEN, 8),              # state bits
        define(0x01500003, OWNER_RW | PLATFORMCREATE, 8),       # owner + PLATFORMCREATE
        define(0x01500003, OWNER_RW, 8, hierarchy=RH_PLATFORM),  # platform w/o it
        define(0x01500003, OWNER_RW | COUNTER, 4),               # counter of 4 octets
        define(0x01500003, OWNER_RW | EXTEND, 20),               # sha256 extend of 20
        define(0x01500003, OWNER_RW | COUNTER | CLEAR_STCLEAR, 8),
        define(0x01500003, OWNER_RW | 0x30, 8),                  # TPM_NT 3: undefined
        define(0x01500003, OWNER_RW | 0x100, 8),                 # reserved bit
        define(0x01500003, OWNER_RW, 8, auth=b"a" * 33),         # auth > nameAlg
        define(0x01500003, OWNER_RW, 8, policy=b"p" * 20),       # policy size
        define(0x01500003, OWNER_RW, 4096),                      # dataSize > max
        define(0x02000000, OWNER_RW, 8),                         # not an NV handle
        define(0x01500003, OWNER_RW | POLICY_DELETE, 8),         # POLICY_DELETE by owner
        define(0x01500003, OWNER_RW, 8, alg=SHA1),
        read_public(0x01500003),
    ])


def test_counter_bits_and_extend(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    ctr_a, ctr_b, bits, ext = 0x01500010, 0x01500011, 0x01500012, 0x01500013
    run(ours, theirs, [
        define(ctr_a, OWNER_RW | COUNTER, 8),
        read(ctr_a, 8),                             # NV_UNINITIALIZED
        simple(CC_INCREMENT, ctr_a),
        simple(CC_INCREMENT, ctr_a),
        simple(CC_INCREMENT, ctr_a),
        read(ctr_a, 8),
        write(ctr_a, b"\x00" * 8),                  # ATTRIBUTES: NV_Write to a counter
        simple(CC_SETBITS, ctr_a, params=struct.pack(">Q", 1)),   # ATTRIBUTES on H2
        define(ctr_b, OWNER_RW | COUNTER, 8),
        simple(CC_INCREMENT, ctr_b),                # starts above the largest counter
        read(ctr_b, 8),
        undefine(ctr_a),
        undefine(ctr_b),
        define(ctr_b, OWNER_RW | COUNTER, 8),
        simple(CC_INCREMENT, ctr_b),                # still above every counter there was
        read(ctr_b, 8),
        read_public(ctr_b),
        define(bits, OWNER_RW | BITS, 8),
        simple(CC_SETBITS, bits, params=struct.pack(">Q", 0x11)),
        simple(CC_SETBITS, bits, params=struct.pack(">Q", 0x0100)),
        read(bits, 8),
        simple(CC_INCREMENT, bits),                 # ATTRIBUTES
        define(ext, OWNER_RW | EXTEND, 32),
        simple(CC_EXTEND, ext, params=struct.pack(">H", 5) + b"event"),
        simple(CC_EXTEND, ext, params=struct.pack(">H", 3) + b"two"),
        read(ext, 32),
        read_public(ext),
        define(0x01500014, OWNER_RW | EXTEND, 20, alg=SHA1),
        simple(CC_EXTEND, 0x01500014, params=struct.pack(">H", 1) + b"x"),
        read(0x01500014, 20),
    ])


def test_locks(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    wd, ws, rs, gl = 0x01500020, 0x01500021, 0x01500022, 0x01500023
    run(ours, theirs, [
        define(wd, OWNER_RW | WRITEDEFINE, 8),
        define(ws, OWNER_RW | WRITE_STCLEAR, 8),
        define(rs, OWNER_RW | READ_STCLEAR, 8),
        define(gl, OWNER_RW | GLOBALLOCK, 8),
        simple(CC_WRITELOCK, rs),                   # ATTRIBUTES: cannot be write-locked
        write(wd, b"12345678"),
        simple(CC_WRITELOCK, wd),
        simple(CC_WRITELOCK, wd),                   # already locked: success
        write(wd, b"x"),                            # NV_LOCKED
        read_public(wd),
        simple(CC_WRITELOCK, ws, auth=RH_OWNER),
        write(ws, b"x", auth=RH_OWNER),             # NV_LOCKED
        simple(CC_READLOCK, wd),                    # ATTRIBUTES: no READ_STCLEAR
        simple(CC_READLOCK, rs),                    # unwritten may be read-locked
        read(rs, 1),                                # NV_LOCKED
        simple(CC_READLOCK, rs),                    # already: success
        write(rs, b"r"),
        read_public(rs),
        with_pw(CC_GLOBALLOCK, struct.pack(">I", RH_OWNER), b""),
        write(gl, b"g"),                            # NV_LOCKED
        read_public(gl),
        write(ws, b"g"),                            # still NV_LOCKED
    ])


def test_platform_indices_as_manufacturing_writes_them(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    ek = 0x01C00002
    attrs = (PLATFORMCREATE | AUTHREAD | OWNERREAD | PPREAD | PPWRITE | NO_DA | WRITEDEFINE)
    cert = bytes(range(256)) * 4
    run(ours, theirs, [
        define(ek, attrs, 1200, hierarchy=RH_PLATFORM),
        write(ek, cert, 0, auth=RH_PLATFORM),
        write(ek, b"tail" * 44, 1024, auth=RH_PLATFORM),
        simple(CC_WRITELOCK, ek, auth=RH_PLATFORM),
        write(ek, b"x", auth=RH_PLATFORM),          # NV_LOCKED
        read(ek, 1024, auth=RH_OWNER),
        read(ek, 176, 1024, auth=RH_OWNER),
        read(ek, 1025, auth=RH_OWNER),              # VALUE on P1: more than a read
        read_public(ek),
        undefine(ek),                               # NV_AUTHORIZATION: owner, platform's
        with_pw(CC_UNDEFINE_SPECIAL, two(ek, RH_PLATFORM), b""),  # ATTRIBUTES / AUTH_TYPE
        undefine(ek, RH_PLATFORM),
    ])


def test_change_auth_needs_a_policy_session(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    idx = 0x01500030
    run(ours, theirs, [
        define(idx, OWNER_RW, 8, b"old"),
        with_pw(CC_CHANGEAUTH, struct.pack(">I", idx), struct.pack(">H", 3) + b"new", b"old"),
        write(idx, b"1", password=b"old"),
    ])


@pytest.mark.parametrize("prop", [0x116, 0x117, 0x12C])
def test_nv_limits_reported_alike(swtpm: Any, prop: int) -> None:
    ours, theirs = started_pair(swtpm)
    cap = command(CC_GETCAP, struct.pack(">III", 6, prop, 1))
    assert ours.execute(cap) == theirs.execute(cap)


def test_nv_command_attributes_match(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cc in (CC_DEFINE, CC_UNDEFINE, CC_UNDEFINE_SPECIAL, CC_WRITE, CC_INCREMENT, CC_EXTEND,
               CC_SETBITS, CC_WRITELOCK, CC_GLOBALLOCK, CC_READ, CC_READLOCK, CC_READPUBLIC,
               CC_CHANGEAUTH):
        cap = command(CC_GETCAP, struct.pack(">III", 2, cc, 1))
        a, b = ours.execute(cap), theirs.execute(cap)
        assert a[-4:] == b[-4:], f"TPMA_CC of 0x{cc:X}: ours {a[-4:].hex()}, libtpms {b[-4:].hex()}"


def test_handle_listing(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    run(ours, theirs, [define(0x01500041, OWNER_RW, 8), define(0x01500040, OWNER_RW | COUNTER, 8)])
    cap = command(CC_GETCAP, struct.pack(">III", 1, 0x01000000, 16))
    assert ours.execute(cap) == theirs.execute(cap)


def _power_cycle(ours: Any, theirs: Any) -> None:
    """_TPM_Init on both: ours directly, swtpm through its control channel (CMD_INIT)."""
    ours.power_cycle()
    with socket.create_connection(("127.0.0.1", theirs.port + 1), timeout=10) as s:
        s.sendall(struct.pack(">II", 2, 0))
        assert s.recv(4) == bytes(4)


@pytest.mark.parametrize("su", [0, 1], ids=["Shutdown-Startup(CLEAR)", "Shutdown-Startup(STATE)"])
def test_stclear_locks_across_startup(swtpm: Any, su: int) -> None:
    ours, theirs = started_pair(swtpm)
    ws, rs, cs, wd, gl = 0x01500050, 0x01500051, 0x01500052, 0x01500053, 0x01500054
    both = 0x01500055  # WRITEDEFINE and WRITE_STCLEAR: the lock ends at Reset/Restart
    run(ours, theirs, [
        define(both, OWNER_RW | WRITEDEFINE | WRITE_STCLEAR | GLOBALLOCK, 4),
        define(0x01500056, OWNER_RW | WRITEDEFINE | GLOBALLOCK, 4),  # locked for good
        simple(CC_WRITELOCK, both),
        define(ws, OWNER_RW | WRITE_STCLEAR, 4),
        define(rs, OWNER_RW | READ_STCLEAR, 4),
        define(cs, OWNER_RW | CLEAR_STCLEAR, 4),
        define(wd, OWNER_RW | WRITEDEFINE, 4),
        define(gl, OWNER_RW | GLOBALLOCK, 4),
        *(write(i, b"data") for i in (ws, rs, cs, wd, gl)),
        simple(CC_WRITELOCK, ws), simple(CC_READLOCK, rs), simple(CC_WRITELOCK, wd),
        with_pw(CC_GLOBALLOCK, struct.pack(">I", RH_OWNER), b""),
        command(0x145, struct.pack(">H", su)),
    ])
    _power_cycle(ours, theirs)
    run(ours, theirs, [
        command(0x144, struct.pack(">H", su)),
        *(read_public(i) for i in (ws, rs, cs, wd, gl, both, 0x01500056)),
        *(write(i, b"next") for i in (ws, cs, wd, gl, both)),
        *(read(i, 4) for i in (ws, rs, cs, wd, gl)),
    ])
