"""Malformed input gets a TPM error or an actionable gRPC status; DomS0 keeps serving."""

from __future__ import annotations

import socket
import struct

import grpc
import pytest

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from tests import tpm2

TPM_RC_COMMAND_SIZE = 0x142
TPM_RC_COMMAND_CODE = 0x143
TPM_RC_INSUFFICIENT = 0x09A

MALFORMED = {
    "empty": b"",
    "nine bytes": tpm2.get_random(8)[:9],
    "size field larger": struct.pack(">HII", 0x8001, 64, 0x17B) + b"\x00\x08",
    "size field smaller": struct.pack(">HII", 0x8001, 10, 0x17B) + b"\x00\x08",
    "unknown command code": tpm2.command(0x20001FFF),
    "one MiB": struct.pack(">HII", 0x8001, 1 << 20, 0x17B) + bytes((1 << 20) - 10),
}


def is_error_response(response: bytes) -> int:
    rc = tpm2.rc_of(response)
    assert rc != 0, "a malformed command must not succeed"
    return rc


def test_malformed_over_grpc(tpm, vtpm: pb.Vtpm) -> None:
    assert tpm2.rc_of(tpm.Transmit(pb.TransmitRequest(
        vtpm=vtpm.name, command=tpm2.startup_clear())).response) == 0
    codes = {}
    for label, command in MALFORMED.items():
        response = tpm.Transmit(pb.TransmitRequest(vtpm=vtpm.name, command=command)).response
        codes[label] = is_error_response(bytes(response))
    assert codes["size field larger"] == TPM_RC_COMMAND_SIZE
    assert codes["size field smaller"] == TPM_RC_COMMAND_SIZE
    assert codes["one MiB"] == TPM_RC_COMMAND_SIZE
    assert codes["unknown command code"] == TPM_RC_COMMAND_CODE
    # ... and the vTPM still serves.
    assert tpm2.rc_of(tpm.Transmit(pb.TransmitRequest(
        vtpm=vtpm.name, command=tpm2.get_random(8))).response) == 0


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        response = b""
        while len(response) < 10 or len(response) < struct.unpack(">I", response[2:6])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
        return response


def test_malformed_over_the_swtpm_socket(vtpm: pb.Vtpm, attach) -> None:
    front = attach(vtpm.name)
    assert tpm2.rc_of(exchange(front.port, tpm2.startup_clear())) == 0
    for label, command in MALFORMED.items():
        if not command:
            continue  # on a stream socket an empty command is just a closed connection
        response = exchange(front.port, command)
        assert is_error_response(response), label
    assert tpm2.rc_of(exchange(front.port, tpm2.get_random(8))) == 0


@pytest.mark.parametrize(("call", "code", "hint"), [
    (lambda m, t: m.CreateVtpm(pb.CreateVtpmRequest(name="bad name!")),
     grpc.StatusCode.INVALID_ARGUMENT, "characters"),
    (lambda m, t: m.CreateVtpm(pb.CreateVtpmRequest(name="x", engine="qemu")),
     grpc.StatusCode.INVALID_ARGUMENT, "builtin"),
    (lambda m, t: m.GetVtpm(pb.GetVtpmRequest(vtpm="")),
     grpc.StatusCode.INVALID_ARGUMENT, "name the vTPM"),
    (lambda m, t: m.GetVtpm(pb.GetVtpmRequest(vtpm="nope")),
     grpc.StatusCode.NOT_FOUND, "vtpmctl list"),
    (lambda m, t: m.DeleteVtpm(pb.DeleteVtpmRequest(vtpm="nope")),
     grpc.StatusCode.NOT_FOUND, "vtpmctl list"),
    (lambda m, t: t.Transmit(pb.TransmitRequest(vtpm="vm1", command=tpm2.get_random(1),
                                                locality=9)),
     grpc.StatusCode.INVALID_ARGUMENT, "0 to 4"),
    (lambda m, t: m.CreateVtpm(pb.CreateVtpmRequest(name="vm1")),
     grpc.StatusCode.ALREADY_EXISTS, "exists"),
])
def test_bad_arguments_get_actionable_status(manager, tpm, vtpm, call, code, hint) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(manager, tpm)
    assert info.value.code() == code
    assert hint in info.value.details()


def test_stopped_and_held_vtpms_are_preconditions(manager, tpm, vtpm, attach) -> None:
    manager.StopVtpm(pb.StopVtpmRequest(vtpm=vtpm.name))
    with pytest.raises(grpc.RpcError) as info:
        tpm.Transmit(pb.TransmitRequest(vtpm=vtpm.name, command=tpm2.get_random(8)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "vtpmctl start" in info.value.details()

    manager.StartVtpm(pb.StartVtpmRequest(vtpm=vtpm.name))
    attach(vtpm.name)
    with pytest.raises(grpc.RpcError) as info:
        tpm.Transmit(pb.TransmitRequest(vtpm=vtpm.name, command=tpm2.get_random(8)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "held by vtpmctl attach" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        manager.DeleteVtpm(pb.DeleteVtpmRequest(vtpm=vtpm.name))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_callers_without_the_token_are_refused(doms0, vtpm) -> None:
    with grpc.insecure_channel(doms0.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.ManagerStub(channel).ListVtpms(pb.ListVtpmsRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "client.token" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.TpmStub(channel).Transmit(pb.TransmitRequest(
                vtpm=vtpm.name, command=tpm2.get_random(8)), metadata=[
                    ("authorization", "Bearer " + "0" * 64)])
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
