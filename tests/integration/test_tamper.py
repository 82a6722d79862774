"""A tampered state record is refused by name; every other vTPM still serves."""

from __future__ import annotations

import hashlib

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from tests import tpm2


def test_tampered_record_is_refused_by_name(start_doms0, engine: str) -> None:
    doms0 = start_doms0(engine)
    with doms0.channel() as channel:
        manager, tpm = pb_grpc.ManagerStub(channel), pb_grpc.TpmStub(channel)
        good = manager.CreateVtpm(pb.CreateVtpmRequest(name="good", engine=engine, start=True))
        bad = manager.CreateVtpm(pb.CreateVtpmRequest(name="bad", engine=engine, start=True))
        for name in ("good", "bad"):
            tpm.Transmit(pb.TransmitRequest(vtpm=name, command=tpm2.startup_clear()))
            tpm.Transmit(pb.TransmitRequest(vtpm=name,
                                            command=tpm2.pcr_extend_sha256(16, b"\5" * 32)))
    assert doms0.stop() == 0

    record = doms0.state_dir / "vtpms" / f"{bad.uuid}.vtpm"
    blob = bytearray(record.read_bytes())
    blob[-40] ^= 0x10  # one bit inside the sealed state
    record.write_bytes(bytes(blob))

    restarted = start_doms0(engine, state_dir=doms0.state_dir)
    log = restarted.log()
    assert f"state record of vTPM bad ({bad.uuid})" in log
    assert "authentication failed" in log
    assert record.exists(), "a refused record is kept for inspection, never deleted"
    with restarted.channel() as channel:
        manager, tpm = pb_grpc.ManagerStub(channel), pb_grpc.TpmStub(channel)
        names = [v.name for v in manager.ListVtpms(pb.ListVtpmsRequest()).vtpms]
        assert names == ["good"]
        read = tpm.Transmit(pb.TransmitRequest(vtpm=good.uuid,
                                               command=tpm2.pcr_read_sha256(16))).response
        assert tpm2.pcr_value_from_read(bytes(read)) == \
            hashlib.sha256(bytes(32) + b"\5" * 32).digest()
