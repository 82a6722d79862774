"""Rollback protection end to end: a real DomS0 refuses an old copy of one record by
name, and refuses to start on an old copy of its store, naming the folder.

With the development root the counter is ``STATE/counter.dev``, so these tests put
back the records folder (``STATE/vtpms``) and leave the counter where it is, as a
host TPM's NV counter would be; with a TPM root the whole state dir may be copied.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.harness import Doms0Process
from tests import tpm2


def extend(doms0: Doms0Process, names: list[str], byte: int, startup: bool = False) -> None:
    with doms0.channel() as channel:
        tpm = pb_grpc.TpmStub(channel)
        for name in names:
            if startup:
                tpm.Transmit(pb.TransmitRequest(vtpm=name, command=tpm2.startup_clear()))
            tpm.Transmit(pb.TransmitRequest(
                vtpm=name, command=tpm2.pcr_extend_sha256(16, bytes([byte]) * 32)))


def first_life(start_doms0: object) -> tuple[Doms0Process, dict[str, str]]:
    doms0 = start_doms0("builtin")  # type: ignore[operator]
    with doms0.channel() as channel:
        manager = pb_grpc.ManagerStub(channel)
        uuids = {name: manager.CreateVtpm(pb.CreateVtpmRequest(name=name, start=True)).uuid
                 for name in ("old", "other")}
    extend(doms0, list(uuids), 1, startup=True)
    assert (doms0.state_dir / "vtpms" / "MANIFEST").exists(), "the store keeps no MANIFEST"
    assert doms0.stop() == 0
    return doms0, uuids


def test_copied_back_old_record_is_refused_by_name(start_doms0: object) -> None:
    doms0, uuids = first_life(start_doms0)
    record = doms0.state_dir / "vtpms" / f"{uuids['old']}.vtpm"
    old_copy = record.read_bytes()

    second = start_doms0("builtin", state_dir=doms0.state_dir)  # type: ignore[operator]
    extend(second, ["old", "other"], 2)
    assert second.stop() == 0
    record.write_bytes(old_copy)

    third = start_doms0("builtin", state_dir=doms0.state_dir)  # type: ignore[operator]
    log = third.log()
    assert f"state record of vTPM old ({uuids['old']})" in log
    assert "older copy of this record was put back" in log
    with third.channel() as channel:
        listed = pb_grpc.ManagerStub(channel).ListVtpms(pb.ListVtpmsRequest()).vtpms
        assert [v.name for v in listed] == ["other"], "the other vTPM still serves"


def test_old_copy_of_the_store_is_refused_naming_it(start_doms0: object,
                                                     tmp_path: Path) -> None:
    doms0, _ = first_life(start_doms0)
    records = doms0.state_dir / "vtpms"
    backup = tmp_path / "backup"
    shutil.copytree(records, backup)

    second = start_doms0("builtin", state_dir=doms0.state_dir)  # type: ignore[operator]
    extend(second, ["old"], 3)
    assert second.stop() == 0
    shutil.rmtree(records)
    shutil.copytree(backup, records)

    with pytest.raises(RuntimeError, match="exited") as refused:
        start_doms0("builtin", state_dir=doms0.state_dir)  # type: ignore[operator]
    message = str(refused.value)
    assert f"state dir {records} refused" in message
    assert "an older copy of the state was put back" in message
