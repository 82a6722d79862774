"""The swtpm control-channel codec: byte-exact vectors, round trips, stream parsing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpm_emulator import swtpm_ctrl as c

# --------------------------------------------------------------------------------------
# Numbers match tpm_ioctl.h and the reference document
# --------------------------------------------------------------------------------------


def test_command_codes_cover_0x01_to_0x13() -> None:
    assert [int(cmd) for cmd in c.Command] == list(range(0x01, 0x14))
    assert c.CMD_GET_CAPABILITY == 0x01
    assert c.CMD_GET_STATEBLOB == 0x0C
    assert c.CMD_LOCK_STORAGE == 0x13


def test_result_codes() -> None:
    assert (c.TPM_SUCCESS, c.TPM_BAD_PARAMETER, c.TPM_FAIL, c.TPM_BAD_ORDINAL) == (0, 3, 9, 0x0A)
    assert (c.TPM_SIZE, c.TPM_IOERROR, c.TPM_BAD_LOCALITY, c.TPM_RETRY) == (0x17, 0x1F, 0x3D, 0x800)


def test_capability_bits_swtpm_0_7_reports_0xffff() -> None:
    everything_up_to_send_command_header = c.Capability(0xFFFF)
    assert c.PTM_CAP_INIT in everything_up_to_send_command_header
    assert c.PTM_CAP_SEND_COMMAND_HEADER == 1 << 15
    assert c.PTM_CAP_LOCK_STORAGE not in everything_up_to_send_command_header
    assert c.QEMU_REQUIRED_TPM2_CAPS in everything_up_to_send_command_header


def test_state_and_init_flags() -> None:
    assert c.PTM_INIT_FLAG_DELETE_VOLATILE == 1
    assert (c.PTM_BLOB_TYPE_PERMANENT, c.PTM_BLOB_TYPE_VOLATILE, c.PTM_BLOB_TYPE_SAVESTATE) == (
        1,
        2,
        3,
    )
    assert (c.PTM_STATE_FLAG_DECRYPTED, c.PTM_STATE_FLAG_ENCRYPTED) == (1, 2)
    assert (c.PTM_CONFIG_FLAG_FILE_KEY, c.PTM_CONFIG_FLAG_MIGRATION_KEY) == (1, 2)


# --------------------------------------------------------------------------------------
# Requests: byte-exact encodings
# --------------------------------------------------------------------------------------

REQUEST_VECTORS: list[tuple[c.Request, str]] = [
    (c.GetCapability(), "00000001"),
    (c.Init(), "00000002 00000000"),
    (c.Init(c.PTM_INIT_FLAG_DELETE_VOLATILE), "00000002 00000001"),
    (c.Shutdown(), "00000003"),
    (c.GetTpmEstablished(), "00000004"),
    (c.SetLocality(0), "00000005 00"),
    (c.SetLocality(3), "00000005 03"),
    (c.HashStart(), "00000006"),
    (c.HashData(b"abc"), "00000007 00000003 616263"),
    (c.HashEnd(), "00000008"),
    (c.CancelTpmCmd(), "00000009"),
    (c.StoreVolatile(), "0000000a"),
    (c.ResetTpmEstablished(4), "0000000b 04"),
    (c.GetStateBlob(c.BlobType.VOLATILE), "0000000c 00000001 00000002 00000000"),
    (c.SetStateBlob(c.BlobType.PERMANENT, b"\xaa\xbb"), "0000000d 00000000 00000001 00000002 aabb"),
    (c.Stop(), "0000000e"),
    (c.GetConfig(), "0000000f"),
    (c.SetDataFd(), "00000010"),
    (c.SetBufferSize(4096), "00000011 00001000"),
    (c.GetInfo(c.InfoFlag.TPM_SPECIFICATION, 7), "00000012 0000000000000001 00000007 00000000"),
    (c.LockStorage(300), "00000013 0000012c"),
]


@pytest.mark.parametrize(("request_", "wire"), REQUEST_VECTORS, ids=lambda v: str(v)[:40])
def test_request_encodes_byte_exact(request_: c.Request, wire: str) -> None:
    assert c.encode_request(request_) == bytes.fromhex(wire)


@pytest.mark.parametrize(("request_", "wire"), REQUEST_VECTORS, ids=lambda v: str(v)[:40])
def test_request_parses_back(request_: c.Request, wire: str) -> None:
    data = bytes.fromhex(wire)
    assert c.parse_request(data) == (request_, len(data))


def test_every_command_has_a_request_vector() -> None:
    assert {type(r).command for r, _ in REQUEST_VECTORS} == set(c.Command)


@pytest.mark.parametrize(
    "build",
    [
        lambda: c.SetLocality(256),
        lambda: c.SetLocality(-1),
        lambda: c.Init(1 << 32),
        lambda: c.GetInfo(flags=1 << 64),
        lambda: c.SetStateBlob(1, b"x" * (c.MAX_STATE_BLOB_SIZE + 1)),
        lambda: c.HashData("text"),  # type: ignore[arg-type]
        lambda: c.UnknownCommand(int(c.CMD_INIT)),
    ],
)
def test_requests_validate_on_construction(build: object) -> None:
    with pytest.raises(c.LocalProtocolError):
        build()  # type: ignore[operator]


def test_requests_are_frozen() -> None:
    request = c.SetLocality(1)
    with pytest.raises(AttributeError):
        request.locality = 2  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# Server side: incremental parsing
# --------------------------------------------------------------------------------------


def test_partial_feeds_byte_by_byte() -> None:
    wire = c.SetStateBlob(c.BlobType.VOLATILE, bytes(range(200))).encode()
    parser = c.RequestParser()
    seen: list[c.ParsedRequest] = []
    for i in range(len(wire)):
        seen += parser.feed(wire[i : i + 1])
        if i < len(wire) - 1:
            assert seen == []
    assert seen == [c.SetStateBlob(c.BlobType.VOLATILE, bytes(range(200)))]
    assert parser.pending == 0


def test_hash_data_streams_across_feeds() -> None:
    wire = c.HashData(b"\x01" * 5000).encode()
    parser = c.RequestParser()
    assert parser.feed(wire[:6]) == []
    assert parser.feed(wire[6:3000]) == []
    assert parser.feed(wire[3000:]) == [c.HashData(b"\x01" * 5000)]


def test_qemu_padding_after_set_locality_is_dropped() -> None:
    # QEMU sends sizeof(ptm_loc) = 4 payload bytes; swtpm reads the first one.
    parser = c.RequestParser()
    assert parser.feed(bytes.fromhex("00000005 02000000")) == [c.SetLocality(2)]
    assert parser.pending == 0
    assert parser.feed(c.GetCapability().encode()) == [c.GetCapability()]


def test_keep_trailing_parses_pipelined_requests() -> None:
    parser = c.RequestParser(keep_trailing=True)
    wire = c.Stop().encode() + c.Init(1).encode() + c.GetConfig().encode()[:2]
    assert parser.feed(wire) == [c.Stop(), c.Init(1)]
    assert parser.pending == 2


def test_unknown_command_answers_bad_ordinal_and_drops_its_payload() -> None:
    parser = c.RequestParser()
    (request,) = parser.feed(bytes.fromhex("00000099 deadbeef"))
    assert request == c.UnknownCommand(0x99)
    assert isinstance(request, c.UnknownCommand)
    assert request.result == c.TPM_BAD_ORDINAL
    assert c.error_response(request.result) == bytes.fromhex("0000000a")
    assert parser.pending == 0


def test_oversize_state_blob_is_rejected_and_its_body_skipped() -> None:
    length = c.MAX_STATE_BLOB_SIZE + 1
    header = struct.pack(">IIII", c.CMD_SET_STATEBLOB, 0, 1, length)
    parser = c.RequestParser()
    (rejected,) = parser.feed(header + b"\x00" * 10)
    assert isinstance(rejected, c.RejectedRequest)
    assert rejected.command == c.CMD_SET_STATEBLOB
    assert rejected.result == c.TPM_BAD_PARAMETER
    assert rejected.discarded == length
    assert parser.discarding == length - 10
    # The body keeps streaming in; none of it becomes a request.
    assert parser.feed(b"\x00\x00\x00\x05" * ((length - 10) // 4)) == []
    assert parser.feed(b"\x00" * ((length - 10) % 4)) == []
    assert parser.discarding == 0
    assert parser.feed(c.GetCapability().encode()) == [c.GetCapability()]


def test_state_blob_at_the_limit_is_accepted() -> None:
    blob = b"\x5a" * c.MAX_STATE_BLOB_SIZE
    parser = c.RequestParser()
    assert parser.feed(c.SetStateBlob(1, blob).encode()) == [c.SetStateBlob(1, blob)]


def test_oversize_hash_data_is_rejected() -> None:
    request, consumed = c.parse_request(struct.pack(">II", c.CMD_HASH_DATA, 1 << 30))
    assert isinstance(request, c.RejectedRequest)
    assert request.result == c.TPM_BAD_PARAMETER
    assert consumed == 8


def test_expire_answers_a_half_received_request() -> None:
    parser = c.RequestParser()
    assert parser.expire() is None
    assert parser.feed(bytes.fromhex("00000002 0000")) == []
    rejected = parser.expire()
    assert rejected is not None
    assert (rejected.command, rejected.result) == (c.CMD_INIT, c.TPM_BAD_PARAMETER)
    assert parser.pending == 0
    parser.feed(b"\x00\x00")
    rejected = parser.expire()
    assert rejected is not None and rejected.command is None


def test_parse_request_needs_more() -> None:
    assert c.parse_request(b"") == (None, 0)
    assert c.parse_request(bytes.fromhex("000000")) == (None, 0)
    assert c.parse_request(bytes.fromhex("0000000c 00000001 0000")) == (None, 0)
    assert c.parse_request(bytes.fromhex("0000000d 00000000 00000001 00000004 aa")) == (None, 0)


@given(st.binary(max_size=64), st.lists(st.integers(min_value=1, max_value=8), max_size=20))
def test_parser_never_raises_on_garbage(data: bytes, cuts: list[int]) -> None:
    parser = c.RequestParser(keep_trailing=True)
    pos = 0
    for cut in [*cuts, len(data)]:
        parser.feed(data[pos : pos + cut])
        pos += cut
    parser.expire()


@given(
    st.sampled_from(c.BlobType),
    st.binary(max_size=300),
    st.integers(min_value=0, max_value=0xFFFF_FFFF),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
)
def test_set_stateblob_survives_any_split(
    blob_type: c.BlobType, blob: bytes, flags: int, cuts: list[int]
) -> None:
    request = c.SetStateBlob(blob_type, blob, flags)
    wire = request.encode()
    parser = c.RequestParser()
    out: list[c.ParsedRequest] = []
    pos = 0
    while pos < len(wire):
        step = cuts[len(out) % len(cuts)] if cuts else 1
        out += parser.feed(wire[pos : pos + step])
        pos += step
    assert out == [request]


# --------------------------------------------------------------------------------------
# Responses: byte-exact encodings and decoding
# --------------------------------------------------------------------------------------

RESPONSE_VECTORS: list[tuple[c.Command, c.Response, str]] = [
    (c.CMD_GET_CAPABILITY, c.CapabilityResponse(0xFFFF), "00000000 0000ffff"),
    (c.CMD_INIT, c.ResultResponse(), "00000000"),
    (c.CMD_SET_LOCALITY, c.ResultResponse(c.TPM_BAD_LOCALITY), "0000003d"),
    (c.CMD_GET_TPMESTABLISHED, c.TpmEstablishedResponse(True), "00000000 01 000000"),
    (
        c.CMD_GET_STATEBLOB,
        c.StateBlobResponse(b"\x01\x02\x03", flags=0),
        "00000000 00000000 00000003 00000003 010203",
    ),
    (c.CMD_GET_CONFIG, c.ConfigResponse(3), "00000000 00000003"),
    (
        c.CMD_SET_BUFFERSIZE,
        c.BufferSizeResponse(4096, 2808, 4096),
        "00000000 00001000 00000af8 00001000",
    ),
    (c.CMD_GET_INFO, c.InfoResponse(b"{}\x00"), "00000000 00000003 00000003 7b7d00"),
]


@pytest.mark.parametrize(("command", "response", "wire"), RESPONSE_VECTORS)
def test_response_encodes_and_decodes(command: c.Command, response: c.Response, wire: str) -> None:
    data = bytes.fromhex(wire)
    assert response.encode() == data
    decoded = c.decode_response(command, data)
    assert decoded.encode() == data
    assert c.response_size(command, data) == len(data)


def test_missing_savestate_blob_as_swtpm_0_7_sends_it() -> None:
    # Measured: savestate answered 0x800 with a 16-byte header and no blob.
    data = bytes.fromhex("00000800 00000000 00000000 00000000")
    response = c.decode_response(c.CMD_GET_STATEBLOB, data)
    assert isinstance(response, c.StateBlobResponse)
    assert response.missing and response.blob == b""


def test_bare_failure_decodes_for_any_command() -> None:
    for command in c.Command:
        response = c.decode_response(command, bytes.fromhex("0000000a"))
        assert response.result == c.TPM_BAD_ORDINAL


def test_response_size_is_incremental() -> None:
    full = c.StateBlobResponse(b"x" * 100).encode()
    assert c.response_size(c.CMD_GET_STATEBLOB, full[:3]) is None
    assert c.response_size(c.CMD_GET_STATEBLOB, full[:10]) is None
    assert c.response_size(c.CMD_GET_STATEBLOB, full[:16]) == 116
    assert c.response_size(c.CMD_GET_STATEBLOB, bytes.fromhex("00000009")) == 4


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (c.CMD_INIT, "000000"),
        (c.CMD_GET_CAPABILITY, "00000000 0000"),
        (c.CMD_INIT, "00000000 00"),
        (c.CMD_GET_STATEBLOB, "00000000 00000000 00000005 00000005 0102"),
        (c.CMD_GET_STATEBLOB, "00000000 00000000 00000001 00000002 0102"),
    ],
)
def test_malformed_responses_are_remote_errors(command: c.Command, wire: str) -> None:
    with pytest.raises(c.RemoteProtocolError):
        c.decode_response(command, bytes.fromhex(wire))


def test_capability_response_equals_swtpms_u64() -> None:
    # swtpm writes htobe64(caps); with result 0 that is the same 8 bytes.
    assert c.CapabilityResponse(0xFFFF).encode() == struct.pack(">Q", 0xFFFF)


def test_client_and_server_talk_over_an_in_memory_pipe() -> None:
    """Pair the two halves like h11's tests: client bytes → parser → answer → client."""
    server_blobs = {c.BlobType.PERMANENT: b"perm", c.BlobType.VOLATILE: b"vol"}

    def serve(request: c.ParsedRequest) -> bytes:
        if isinstance(request, c.GetStateBlob):
            blob = server_blobs.get(c.BlobType(request.blob_type))
            if blob is None:
                return c.StateBlobResponse(result=c.TPM_RETRY).encode()
            return c.StateBlobResponse(blob).encode()
        if isinstance(request, c.GetCapability):
            return c.CapabilityResponse(int(c.QEMU_REQUIRED_TPM2_CAPS)).encode()
        if isinstance(request, c.UnknownCommand | c.RejectedRequest):
            return c.error_response(request.result)
        return c.ResultResponse().encode()

    parser = c.RequestParser()
    for request, check in [
        (c.GetCapability(), lambda r: r.caps == c.QEMU_REQUIRED_TPM2_CAPS),
        (c.GetStateBlob(c.BlobType.VOLATILE), lambda r: r.blob == b"vol"),
        (c.GetStateBlob(c.BlobType.SAVESTATE), lambda r: r.missing),
        (c.Init(c.PTM_INIT_FLAG_DELETE_VOLATILE), lambda r: r.result == 0),
    ]:
        (parsed,) = parser.feed(request.encode())
        assert parsed == request
        answer = serve(parsed)
        # A failure may carry the fixed part; response_size gives the minimum then.
        size = c.response_size(request.command, answer)
        assert size is not None and size <= len(answer)
        assert check(c.decode_response(request.command, answer))
