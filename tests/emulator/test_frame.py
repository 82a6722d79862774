"""Framing: the codes a TPM gives before it even looks at the command code."""

from __future__ import annotations

import struct

import pytest

from tpm_emulator import TPM, check_frame, response_code
from tpm_emulator.constants import CC, RC, command_name
from tpm_emulator.errors import base_code, with_handle, with_parameter, with_session

GOOD = struct.pack(">HIIH", 0x8001, 12, 0x17B, 8)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"", RC.INSUFFICIENT),
        (b"\x80", RC.INSUFFICIENT),
        (b"\x80\x01\x00", RC.INSUFFICIENT),
        (b"\x12\x34" + bytes(8), RC.BAD_TAG),
        (struct.pack(">HI", 0x8001, 6), RC.INSUFFICIENT),
        (struct.pack(">HII", 0x8001, 11, 0x17B), RC.COMMAND_SIZE),
        (struct.pack(">HII", 0x8001, 9, 0x17B), RC.COMMAND_SIZE),
        (struct.pack(">HII", 0x8001, 5000, 0x17B) + bytes(4990), RC.COMMAND_SIZE),
    ],
)
def test_bad_frames_get_the_reference_codes(frame: bytes, code: int) -> None:
    resp = check_frame(frame)
    assert resp is not None and len(resp) == 10
    assert response_code(resp) == code
    # TPM_RC_BAD_TAG is answered with the TPM 1.2 tag TPM_ST_RSP_COMMAND (Part 3, 5.2)
    assert resp[:2] == (b"\x00\xc4" if code == RC.BAD_TAG else b"\x80\x01")
    assert TPM().execute(frame) == resp


def test_good_frame_passes() -> None:
    assert check_frame(GOOD) is None


def test_unknown_command_code_and_initialize_order() -> None:
    t = TPM()
    assert response_code(t.execute(struct.pack(">HII", 0x8001, 10, 0x1FF))) == RC.COMMAND_CODE
    # before Startup, a known command is TPM_RC_INITIALIZE
    assert response_code(t.execute(GOOD)) == RC.INITIALIZE


def test_names_and_numbered_codes() -> None:
    assert command_name(CC.PCR_Extend) == "TPM2_PCR_Extend"
    assert command_name(0x20000001) == "0x20000001"
    assert with_parameter(RC.VALUE, 1) == 0x1C4
    assert with_handle(RC.VALUE, 1) == 0x184
    assert with_session(RC.BAD_AUTH, 1) == 0x9A2
    assert base_code(0x9A2) == RC.BAD_AUTH
    assert with_parameter(RC.INITIALIZE, 1) == RC.INITIALIZE  # format-0 takes no number


def test_bad_locality_argument_is_a_response_not_a_raise() -> None:
    assert response_code(TPM().execute(GOOD, locality=999)) == RC.LOCALITY
