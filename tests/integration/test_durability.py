"""Acknowledged changes survive a crash; an orderly stop commits and exits 0."""

from __future__ import annotations

import hashlib

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from tests import tpm2


def transmit(tpm: pb_grpc.TpmStub, vtpm: str, command: bytes) -> bytes:
    return bytes(tpm.Transmit(pb.TransmitRequest(vtpm=vtpm, command=command)).response)


def test_kill_9_right_after_an_acknowledged_extend(start_doms0, engine: str) -> None:
    doms0 = start_doms0(engine)
    with doms0.channel() as channel:
        manager, tpm = pb_grpc.ManagerStub(channel), pb_grpc.TpmStub(channel)
        manager.CreateVtpm(pb.CreateVtpmRequest(name="vm", engine=engine, start=True))
        assert tpm2.rc_of(transmit(tpm, "vm", tpm2.startup_clear())) == 0
        digest = hashlib.sha256(b"kill me").digest()
        assert tpm2.rc_of(transmit(tpm, "vm", tpm2.pcr_extend_sha256(16, digest))) == 0
    doms0.kill()  # SIGKILL the moment the response is in

    restarted = start_doms0(engine, state_dir=doms0.state_dir)
    with restarted.channel() as channel:
        tpm = pb_grpc.TpmStub(channel)
        value = tpm2.pcr_value_from_read(transmit(tpm, "vm", tpm2.pcr_read_sha256(16)))
    assert value == hashlib.sha256(bytes(32) + digest).digest()


def test_sigterm_commits_and_exits_zero(start_doms0, engine: str) -> None:
    doms0 = start_doms0(engine)
    with doms0.channel() as channel:
        manager, tpm = pb_grpc.ManagerStub(channel), pb_grpc.TpmStub(channel)
        manager.CreateVtpm(pb.CreateVtpmRequest(name="running", engine=engine, start=True))
        manager.CreateVtpm(pb.CreateVtpmRequest(name="parked", engine=engine))
        assert tpm2.rc_of(transmit(tpm, "running", tpm2.startup_clear())) == 0
        assert tpm2.rc_of(transmit(tpm, "running", tpm2.pcr_extend_sha256(23, b"\1" * 32))) \
            == 0
    assert doms0.stop() == 0

    restarted = start_doms0(engine, state_dir=doms0.state_dir)
    with restarted.channel() as channel:
        manager, tpm = pb_grpc.ManagerStub(channel), pb_grpc.TpmStub(channel)
        states = {v.name: v.state for v in manager.ListVtpms(pb.ListVtpmsRequest()).vtpms}
        assert states == {"running": pb.VTPM_STATE_RUNNING, "parked": pb.VTPM_STATE_STOPPED}
        value = tpm2.pcr_value_from_read(transmit(tpm, "running", tpm2.pcr_read_sha256(23)))
        assert value == hashlib.sha256(bytes(32) + b"\1" * 32).digest()


def test_stop_start_delete(manager, tpm, vtpm: pb.Vtpm) -> None:
    assert tpm2.rc_of(transmit(tpm, vtpm.name, tpm2.startup_clear())) == 0
    assert tpm2.rc_of(transmit(tpm, vtpm.name, tpm2.pcr_extend_sha256(16, b"\7" * 32))) == 0
    stopped = manager.StopVtpm(pb.StopVtpmRequest(vtpm=vtpm.name))
    assert stopped.state == pb.VTPM_STATE_STOPPED
    started = manager.StartVtpm(pb.StartVtpmRequest(vtpm=vtpm.uuid))
    assert started.state == pb.VTPM_STATE_RUNNING
    value = tpm2.pcr_value_from_read(transmit(tpm, vtpm.name, tpm2.pcr_read_sha256(16)))
    assert value == hashlib.sha256(bytes(32) + b"\7" * 32).digest()
    manager.DeleteVtpm(pb.DeleteVtpmRequest(vtpm=vtpm.name))
    assert list(manager.ListVtpms(pb.ListVtpmsRequest()).vtpms) == []
