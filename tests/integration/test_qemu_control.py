"""A QEMU-style client on DomS0's per-vTPM control socket.

It replays what QEMU's tpm_emulator backend sends: CMD_SET_DATAFD with one end of a
socketpair, a TPM2_ReadClock probe on the data fd, CMD_GET_CAPABILITY, CMD_STOP,
CMD_SET_BUFFERSIZE(0), CMD_INIT; then commands on the data fd, locality changes,
and for migration the three state blobs, which are put back on a stopped TPM.
"""

from __future__ import annotations

import socket
import struct

import pytest

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from tests import tpm2
from tpm_emulator import swtpm_ctrl as ctrl


class QemuClient:
    def __init__(self, path: str) -> None:
        self.ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctrl.settimeout(10)
        self.ctrl.connect(path)
        self.data: socket.socket | None = None

    def call(self, request: ctrl.Request, fds: list[int] | None = None) -> ctrl.Response:
        payload = request.encode()
        if fds:
            socket.send_fds(self.ctrl, [payload], fds)
        else:
            self.ctrl.sendall(payload)
        data = b""
        while True:
            data += self.ctrl.recv(65536)
            need = ctrl.response_size(request.command, data)
            if need is not None and len(data) >= need:
                return ctrl.decode_response(request.command, data)

    def set_datafd(self) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        result = self.call(ctrl.SetDataFd(), fds=[theirs.fileno()]).result
        theirs.close()
        ours.settimeout(10)
        self.data = ours
        return int(result)

    def tpm(self, command: bytes) -> bytes:
        assert self.data is not None
        self.data.sendall(command)
        header = b""
        while len(header) < 10:
            header += self.data.recv(10 - len(header))
        size = struct.unpack(">I", header[2:6])[0]
        body = b""
        while len(body) < size - 10:
            body += self.data.recv(size - 10 - len(body))
        return header + body

    def close(self) -> None:
        for sock in (self.ctrl, self.data):
            if sock is not None:
                sock.close()


@pytest.fixture
def qemu(vtpm: pb.Vtpm):
    client = QemuClient(vtpm.control_socket)
    yield client
    client.close()


def qemu_startup(qemu: QemuClient) -> None:
    assert qemu.set_datafd() == ctrl.Result.SUCCESS
    probe = qemu.tpm(tpm2.command(0x181))  # TPM2_ReadClock, as tpm_util_test_tpmdev
    assert probe[:2] == b"\x80\x01"
    caps = qemu.call(ctrl.GetCapability())
    assert isinstance(caps, ctrl.CapabilityResponse)
    assert caps.caps & ctrl.QEMU_REQUIRED_TPM2_CAPS == ctrl.QEMU_REQUIRED_TPM2_CAPS
    for needed in (ctrl.Capability.GET_STATEBLOB, ctrl.Capability.SET_STATEBLOB):
        assert caps.caps & needed  # migration is not blocked
    assert qemu.call(ctrl.Stop()).result == 0
    size = qemu.call(ctrl.SetBufferSize(0))
    assert isinstance(size, ctrl.BufferSizeResponse) and size.buffer_size == 4096
    assert qemu.call(ctrl.Init(0)).result == 0


def test_qemu_startup_commands_and_state_blobs(qemu: QemuClient) -> None:
    qemu_startup(qemu)
    assert tpm2.rc_of(qemu.tpm(tpm2.startup_clear())) == 0
    assert tpm2.rc_of(qemu.tpm(tpm2.pcr_extend_sha256(16, b"\x42" * 32))) == 0
    extended = tpm2.pcr_value_from_read(qemu.tpm(tpm2.pcr_read_sha256(16)))
    assert extended != bytes(32)

    # Runtime: locality changes and the established flag.
    assert qemu.call(ctrl.SetLocality(3)).result == 0
    assert tpm2.rc_of(qemu.tpm(tpm2.get_random(8))) == 0
    assert qemu.call(ctrl.SetLocality(0)).result == 0
    established = qemu.call(ctrl.GetTpmEstablished())
    assert isinstance(established, ctrl.TpmEstablishedResponse)
    assert qemu.call(ctrl.ResetTpmEstablished(0)).result == 0
    assert qemu.call(ctrl.SetLocality(7)).result == ctrl.Result.BAD_LOCALITY

    # pre_save: permanent, volatile, savestate (QEMU asks for decrypted blobs).
    blobs = {}
    for blob_type in (ctrl.BlobType.PERMANENT, ctrl.BlobType.VOLATILE,
                      ctrl.BlobType.SAVESTATE):
        reply = qemu.call(ctrl.GetStateBlob(blob_type=blob_type,
                                            flags=ctrl.StateFlag.DECRYPTED))
        assert isinstance(reply, ctrl.StateBlobResponse)
        blobs[blob_type] = reply
    assert blobs[ctrl.BlobType.PERMANENT].result == 0
    assert len(blobs[ctrl.BlobType.PERMANENT].blob) > 0
    assert blobs[ctrl.BlobType.SAVESTATE].result & ctrl.Result.RETRY  # "no blob"

    # Change the TPM after the save, then put the saved state back (post_load).
    assert tpm2.rc_of(qemu.tpm(tpm2.pcr_extend_sha256(16, b"\x43" * 32))) == 0
    assert qemu.call(ctrl.SetStateBlob(blob_type=ctrl.BlobType.PERMANENT,
                                       data=blobs[ctrl.BlobType.PERMANENT].blob)).result \
        == ctrl.Result.BAD_ORDINAL  # the TPM must be stopped first
    assert qemu.call(ctrl.Stop()).result == 0
    assert tpm2.rc_of(qemu.tpm(tpm2.get_random(8))) == 0x101  # halted
    for blob_type, reply in blobs.items():
        if reply.result == 0 and reply.blob:
            result = qemu.call(ctrl.SetStateBlob(blob_type=blob_type, data=reply.blob,
                                                 flags=reply.flags)).result
            assert result == 0
    assert qemu.call(ctrl.Init(ctrl.InitFlag.DELETE_VOLATILE)).result == 0
    restored = tpm2.pcr_value_from_read(qemu.tpm(tpm2.pcr_read_sha256(16)))
    assert restored == extended
    assert tpm2.rc_of(qemu.tpm(tpm2.startup_clear())) == 0x100  # still started


def test_altered_state_blob_is_refused(qemu: QemuClient) -> None:
    qemu_startup(qemu)
    assert tpm2.rc_of(qemu.tpm(tpm2.startup_clear())) == 0
    reply = qemu.call(ctrl.GetStateBlob(blob_type=ctrl.BlobType.PERMANENT, flags=1))
    assert isinstance(reply, ctrl.StateBlobResponse)
    altered = bytearray(reply.blob)
    altered[len(altered) // 2] ^= 0x01
    assert qemu.call(ctrl.Stop()).result == 0
    result = qemu.call(ctrl.SetStateBlob(blob_type=ctrl.BlobType.PERMANENT,
                                         data=bytes(altered))).result
    assert result == ctrl.Result.FAIL
    assert qemu.call(ctrl.Init(0)).result == 0
    assert tpm2.rc_of(qemu.tpm(tpm2.startup_clear())) == 0


def test_second_front_end_is_refused_while_held(qemu: QemuClient, vtpm: pb.Vtpm,
                                                manager) -> None:
    qemu_startup(qemu)
    held = manager.GetVtpm(pb.GetVtpmRequest(vtpm=vtpm.name))
    assert "control socket client" in held.holder
    other = QemuClient(vtpm.control_socket)
    try:
        assert other.call(ctrl.GetCapability()).result == 0  # harmless queries work
        assert other.call(ctrl.Init(0)).result == ctrl.Result.FAIL
    finally:
        other.close()
    qemu.close()
    # Once QEMU hangs up, the vTPM is free again.
    for _ in range(100):
        if not manager.GetVtpm(pb.GetVtpmRequest(vtpm=vtpm.name)).holder:
            break
        import time
        time.sleep(0.05)
    assert manager.GetVtpm(pb.GetVtpmRequest(vtpm=vtpm.name)).holder == ""
