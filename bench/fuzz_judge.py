"""How ``bench fuzz`` judges an answer, independently of the emulator's own checks:
the response header, the response code against the set Part 2 defines (6.6.3, copied
here rather than taken from the emulator's tables), and a success response's handle,
parameter and authorization areas parsed as the command's declaration says.
"""

from __future__ import annotations

import struct
from typing import Any

from tpm_emulator.codec import Reader, Sized, schema
from tpm_emulator.commands import COMMANDS, Command
from tpm_emulator.errors import TpmError

from .fuzz_sessions import ATTR_ENCRYPT, split_command

HEADER = struct.Struct(">HII")
U32 = struct.Struct(">I")
ST_RSP_COMMAND, ST_NO_SESSIONS, ST_SESSIONS = 0x00C4, 0x8001, 0x8002
RS_PW = 0x40000009
RC_BAD_TAG = 0x01E

# ---- Part 2, 6.6.3: every response code a TPM 2.0 may return -------------------------
_FMT0 = (0x000, 0x001, 0x003, 0x00B, 0x019, 0x020, 0x021, 0x024, 0x025, 0x026, 0x027,
         0x028, 0x02D, 0x02E, 0x02F, 0x030, 0x031, 0x042, 0x043, 0x044, 0x045, 0x046,
         0x047, 0x048, 0x049, 0x04A, 0x04B, 0x04C, 0x050, 0x051, 0x052, 0x053, 0x054,
         0x055)  # + RC_VER1 (0x100)
_FMT1 = (0x001, 0x002, 0x003, 0x004, 0x005, 0x007, 0x008, 0x009, 0x00A, 0x00B, 0x00C,
         0x00D, 0x00E, 0x00F, 0x010, 0x012, 0x015, 0x016, 0x017, 0x018, 0x01A, 0x01B,
         0x01C, 0x01D, 0x01F, 0x020, 0x021, 0x022, 0x023, 0x024, 0x025, 0x026, 0x027)
_WARN = (0x001, 0x002, 0x003, 0x004, 0x005, 0x006, 0x007, 0x008, 0x009, 0x00A,
         *range(0x010, 0x017), *range(0x018, 0x01F), 0x020, 0x021, 0x022, 0x023)


def _defined_codes() -> frozenset[int]:
    codes = {0, RC_BAD_TAG}  # TPM_RC_SUCCESS; TPM_RC_BAD_TAG (the TPM 1.2 code)
    codes |= {0x100 | e for e in _FMT0}
    codes |= {0x900 | e for e in _WARN}
    for e in _FMT1:
        base = 0x080 | e
        codes.add(base)
        codes |= {base | 0x040 | (n << 8) for n in range(1, 16)}  # parameter 1..15
        codes |= {base | (n << 8) for n in range(1, 8)}  # handle 1..7
        codes |= {base | 0x800 | (n << 8) for n in range(1, 8)}  # session 1..7
    return frozenset(codes)


PART2_CODES = _defined_codes()


def rc_name(rc: int) -> str:
    """A readable name for a response code, using the emulator's names when it has one."""
    from tpm_emulator.constants import RC

    if rc & 0x080:
        base, where = rc & 0x0BF, ""
        if rc & 0x040:
            where = f"+P{(rc >> 8) & 0xF}"
        elif rc & 0xF00:
            where = f"+{'S' if rc & 0x800 else 'H'}{(rc >> 8) & 0x7}"
    else:
        base, where = rc, ""
    try:
        return f"{RC(base).name}{where}"
    except ValueError:
        return f"0x{rc:03X}"


# ---- judging responses -------------------------------------------------------------
def response_problem(command: bytes, response: object, max_size: int) -> str | None:
    """What is wrong with ``response`` as the answer to ``command`` (None: nothing).

    Part 3, 5.x / Part 1, 18.x: a header of tag, size and code; the size is the whole
    response; an error response is the bare header; TPM_RC_BAD_TAG is answered with the
    TPM 1.2 tag; a success answers with the command's tag, and its handle, parameter
    area and authorization area parse as the command's response declares.
    """
    if not isinstance(response, bytes):
        return f"response is {type(response).__name__}, not bytes"
    if len(response) < HEADER.size:
        return f"response of {len(response)} octets"
    tag, size, rc = HEADER.unpack_from(response)
    if size != len(response):
        return f"size field {size} != length {len(response)}"
    if len(response) > max_size:
        return f"response of {len(response)} octets > max {max_size}"
    if rc not in PART2_CODES:
        return f"response code 0x{rc:X} is not defined in Part 2"
    if rc == RC_BAD_TAG:
        return None if tag == ST_RSP_COMMAND and size == HEADER.size else "bad BAD_TAG form"
    if tag not in (ST_NO_SESSIONS, ST_SESSIONS):
        return f"tag 0x{tag:04X}"
    if rc != 0:
        if tag != ST_NO_SESSIONS or size != HEADER.size:
            return f"error response with tag 0x{tag:04X} and {size} octets"
        return None
    try:
        if parse_success(command, response) is None:
            return "success response to a command that is not in the table"
    except (TpmError, struct.error, ValueError) as e:
        return f"success response does not parse: {e}"
    return None


def parse_success(command: bytes, response: bytes) -> tuple[Command, int | None, Any] | None:
    """(command spec, response handle, response parameters) of a success response, or
    None when it is not one; raises TpmError/ValueError when it does not parse. The
    parameters are None when the first one came encrypted."""
    if len(response) < HEADER.size or len(command) < HEADER.size:
        return None
    rtag, _, rc = HEADER.unpack_from(response)
    ctag, _, cc = HEADER.unpack_from(command)
    spec = COMMANDS.get(cc)
    if rc != 0 or spec is None:
        return None
    if rtag != ctag:
        raise ValueError(f"response tag 0x{rtag:04X} to a command tagged 0x{ctag:04X}")
    r = Reader(response, HEADER.size)
    fields = schema(spec.response)
    values: dict[str, Any] = {}
    handle = None
    if spec.response_handle:
        name, wire = fields[0]
        handle = values[name] = wire.read(r, values)
        fields = fields[1:]
    end = len(response)
    if rtag == ST_SESSIONS:
        end = r.pos + 4 + r.unpack(U32)
        if end > len(response):
            raise ValueError("parameterSize runs past the response")
    # Part 1, 21: with an ``encrypt`` session the first parameter is a TPM2B whose
    # octets are ciphertext; only its size can be checked.
    encrypted = rtag == ST_SESSIONS and any(
        a & ATTR_ENCRYPT for _, a in split_command(command, len(spec.handles))[2])
    for i, (name, wire) in enumerate(fields):
        values[name] = _CIPHERTEXT.read(r, values) if encrypted and i == 0 else \
            wire.read(r, values)
    if r.pos != end:
        raise ValueError(f"parameters end at {r.pos}, parameterSize says {end}")
    if rtag == ST_SESSIONS:
        n = 0
        while r.remaining():  # TPMS_AUTH_RESPONSE: nonce, attributes, hmac
            r.take(r.unpack(_U16))
            r.take(1)
            r.take(r.unpack(_U16))
            n += 1
        expected = command_sessions(command, spec)
        if expected is not None and n != expected:
            raise ValueError(f"{n} response sessions for {expected} command sessions")
    return spec, handle, None if encrypted else spec.response(**values)


_U16 = struct.Struct(">H")
_CIPHERTEXT = Sized(0xFFFF)


def command_sessions(command: bytes, spec: Command) -> int | None:
    """How many sessions the command's authorization area holds (None: unparseable)."""
    r = Reader(command, HEADER.size + 4 * len(spec.handles))
    try:
        size = r.unpack(U32)
        end = r.pos + size
        n = 0
        while r.pos < end:
            r.take(4)
            r.take(r.unpack(_U16))
            r.take(1)
            r.take(r.unpack(_U16))
            n += 1
    except TpmError:
        return None
    return n


def parse_command(command: bytes) -> tuple[tuple[int, ...], Any] | None:
    """(handles, parameters) of a command in the table, or None if it does not parse."""
    _, _, cc = HEADER.unpack_from(command)
    spec = COMMANDS.get(cc)
    if spec is None:
        return None
    r = Reader(command, HEADER.size)
    try:
        handles = tuple(r.unpack(U32) for _ in spec.handles)
        if HEADER.unpack_from(command)[0] == ST_SESSIONS:
            r.take(r.unpack(U32))
        values: dict[str, Any] = {}
        for name, wire in schema(spec.params):
            values[name] = wire.read(r, values)
    except TpmError:
        return None
    return (handles, spec.params(**values)) if not r.remaining() else None
