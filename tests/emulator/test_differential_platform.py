"""Physical presence and the algorithm set, differentially: TPM2_PP_Commands and
TPM2_SetAlgorithmSet sent to a real swtpm (libtpms) and to our TPM; response codes,
TPM_CAP_PP_COMMANDS, TPM_PT_ALGORITHM_SET and TPMA_CC must agree. Neither TPM has a
physical-presence signal, so PP_Commands is refused with TPM_RC_PP before its
authorization is even checked."""

from __future__ import annotations

import struct
from typing import Any

from tests.emulator.emulator_wire import command, get_capability, rc, with_pw
from tests.emulator.test_differential_swtpm import started_pair
from tpm_emulator import TPM

OWNER, PLATFORM, LOCKOUT = 0x40000001, 0x4000000C, 0x4000000A
CC_PP_COMMANDS, CC_SET_ALGORITHM_SET, CC_CHANGE_AUTH, CC_CLEAR = 0x12D, 0x13F, 0x129, 0x126
CAP_COMMANDS, CAP_PP_COMMANDS, CAP_TPM_PROPERTIES = 2, 3, 6
PT_ALGORITHM_SET = 0x20C
TPM_RC_PP_S1 = 0x990


def pp_commands(handle: int, set_list: tuple[int, ...] = (), clear_list: tuple[int, ...] = (),
                password: bytes = b"") -> bytes:
    lists = b"".join(struct.pack(f">I{len(cc)}I", len(cc), *cc) for cc in (set_list, clear_list))
    return with_pw(CC_PP_COMMANDS, struct.pack(">I", handle), lists, password)


def set_algorithm_set(handle: int, value: int, password: bytes = b"") -> bytes:
    return with_pw(CC_SET_ALGORITHM_SET, struct.pack(">I", handle),
                   struct.pack(">I", value), password)


def run(ours: TPM, theirs: Any, script: list[bytes]) -> list[tuple[int, int]]:
    return [(rc(ours.execute(c)), rc(theirs.execute(c))) for c in script]


def algorithm_set(tpm: Any) -> int:
    response = tpm.execute(get_capability(CAP_TPM_PROPERTIES, PT_ALGORITHM_SET, 1))
    prop, value = struct.unpack_from(">II", response, 19)
    assert prop == PT_ALGORITHM_SET
    return int(value)


def test_pp_commands_needs_presence_before_anything_else(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    codes = run(ours, theirs, [
        pp_commands(PLATFORM),
        pp_commands(PLATFORM, set_list=(CC_CLEAR,)),
        pp_commands(PLATFORM, clear_list=(CC_PP_COMMANDS,)),
        pp_commands(PLATFORM, password=b"wrong"),        # PP, not BAD_AUTH
        pp_commands(OWNER),                               # VALUE + H1
        command(CC_PP_COMMANDS, struct.pack(">III", PLATFORM, 0, 0)),  # AUTH_MISSING
    ])
    assert [m for m, _ in codes] == [TPM_RC_PP_S1] * 4 + [0x184, 0x125]
    assert codes == [(o, o) for _, o in codes]


def test_the_pp_list_is_pp_commands_alone(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for prop, count in ((0, 64), (CC_PP_COMMANDS, 1), (CC_PP_COMMANDS + 1, 8)):
        mine, other = (t.execute(get_capability(CAP_PP_COMMANDS, prop, count))
                       for t in (ours, theirs))
        assert mine == other
    listed = ours.execute(get_capability(CAP_PP_COMMANDS, 0, 64))
    assert struct.unpack_from(">II", listed, 15) == (1, CC_PP_COMMANDS)


def test_set_algorithm_set_is_kept_and_reported(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    assert algorithm_set(ours) == algorithm_set(theirs) == 0
    codes = run(ours, theirs, [
        set_algorithm_set(OWNER, 5),                        # VALUE + H1
        set_algorithm_set(PLATFORM, 5, password=b"wrong"),  # BAD_AUTH + S1
        set_algorithm_set(PLATFORM, 5),
    ])
    assert codes == [(0x184, 0x184), (0x9A2, 0x9A2), (0, 0)]
    assert algorithm_set(ours) == algorithm_set(theirs) == 5
    codes = run(ours, theirs, [with_pw(CC_CLEAR, struct.pack(">I", PLATFORM), b"")])
    assert codes == [(0, 0)]
    assert algorithm_set(ours) == algorithm_set(theirs) == 5


def test_the_algorithm_set_survives_a_snapshot() -> None:
    tpm = TPM()
    assert rc(tpm.execute(command(0x144, b"\x00\x00"))) == 0
    assert rc(tpm.execute(set_algorithm_set(PLATFORM, 0xA5A5))) == 0
    restored = TPM.restore(tpm.snapshot())
    assert algorithm_set(restored) == 0xA5A5


def test_tpma_cc_matches_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for cc in (CC_PP_COMMANDS, CC_SET_ALGORITHM_SET):
        mine, other = (t.execute(get_capability(CAP_COMMANDS, cc, 1)) for t in (ours, theirs))
        assert mine[19:23] == other[19:23], hex(cc)
