"""A full disk fails state-changing commands with TPM_RC_NV_UNAVAILABLE and loses nothing.

DomS0's state dir is a small tmpfs of its own (``mount -t tmpfs -o size=…``, so the
test needs root), filled to the last page by a filler file: every write DomS0 then
tries fails with ENOSPC from the real kernel, exactly as on a full disk. No mock of
the store anywhere.

Promise under test (``vtpm_manager.instance``): a state-changing command whose new
state cannot be stored is answered TPM_RC_NV_UNAVAILABLE, the vTPM goes back to its
last committed state, reads keep working, and once space is back it serves again,
with nothing lost across a restart, even one forced by kill -9 while the disk is full.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from tests import tpm2
from tests.conftest import DomS0Factory

TPM_RC_NV_UNAVAILABLE = 0x923
#: Room for the KEK, token, lock and a few records (a swtpm record is about 10 KB).
TMPFS_SIZE = "2m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted on a fresh folder; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root: run the tests as root (CI does)")
    mount_point = tmp_path / "state"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs",
         str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        # start_doms0, requested after this fixture, has stopped DomS0 by now; lazy
        # in case a child still holds a file open.
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system refuses one more byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    os.write(fd, bytes(chunk))
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


def transmit(tpm: pb_grpc.TpmStub, vtpm: str, command: bytes) -> bytes:
    return bytes(tpm.Transmit(pb.TransmitRequest(vtpm=vtpm, command=command)).response)


def pcr16(tpm: pb_grpc.TpmStub, vtpm: str) -> bytes:
    return tpm2.pcr_value_from_read(transmit(tpm, vtpm, tpm2.pcr_read_sha256(16)))


def test_full_disk_answers_nv_unavailable_and_loses_nothing(
    small_disk: Path, start_doms0: DomS0Factory, engine: str
) -> None:
    doms0 = start_doms0(engine, state_dir=small_disk)
    first = hashlib.sha256(b"stored").digest()
    acknowledged = hashlib.sha256(bytes(32) + first).digest()
    with doms0.channel() as channel:
        manager, tpm = pb_grpc.ManagerStub(channel), pb_grpc.TpmStub(channel)
        manager.CreateVtpm(pb.CreateVtpmRequest(name="vm", engine=engine, start=True))
        assert tpm2.rc_of(transmit(tpm, "vm", tpm2.startup_clear())) == 0
        assert tpm2.rc_of(transmit(tpm, "vm", tpm2.pcr_extend_sha256(16, first))) == 0

        filler = fill(small_disk)
        lost = hashlib.sha256(b"never stored").digest()
        for _ in range(3):  # and again: the rolled-back engine keeps working
            response = transmit(tpm, "vm", tpm2.pcr_extend_sha256(16, lost))
            assert tpm2.rc_of(response) == TPM_RC_NV_UNAVAILABLE
            assert response == struct.pack(">HII", tpm2.ST_NO_SESSIONS, 10, TPM_RC_NV_UNAVAILABLE)
            assert pcr16(tpm, "vm") == acknowledged  # reads need no disk
        assert len(bytes(tpm.Transmit(pb.TransmitRequest(
            vtpm="vm", command=tpm2.get_random(8))).response)) == 20

        # Manager operations fail with a message; nothing half-made is left.
        with pytest.raises(grpc.RpcError) as refused:
            manager.CreateVtpm(pb.CreateVtpmRequest(name="vm2", engine=engine))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "No space left" in refused.value.details()
        assert [v.name for v in manager.ListVtpms(pb.ListVtpmsRequest()).vtpms] == ["vm"]

        filler.unlink()
        assert pcr16(tpm, "vm") == acknowledged
        second = hashlib.sha256(b"stored again").digest()
        assert tpm2.rc_of(transmit(tpm, "vm", tpm2.pcr_extend_sha256(16, second))) == 0
        acknowledged = hashlib.sha256(acknowledged + second).digest()
        assert pcr16(tpm, "vm") == acknowledged

        # Full again, then a crash while full: the restart shows the last commit.
        fill(small_disk)
        response = transmit(tpm, "vm", tpm2.pcr_extend_sha256(16, lost))
        assert tpm2.rc_of(response) == TPM_RC_NV_UNAVAILABLE
    doms0.kill()
    (small_disk / "filler").unlink()

    restarted = start_doms0(engine, state_dir=small_disk)
    with restarted.channel() as channel:
        manager, tpm = pb_grpc.ManagerStub(channel), pb_grpc.TpmStub(channel)
        vtpms = manager.ListVtpms(pb.ListVtpmsRequest()).vtpms
        assert [(v.name, v.state) for v in vtpms] == [("vm", pb.VTPM_STATE_RUNNING)]
        assert pcr16(tpm, "vm") == acknowledged
        third = hashlib.sha256(b"after the restart").digest()
        assert tpm2.rc_of(transmit(tpm, "vm", tpm2.pcr_extend_sha256(16, third))) == 0
    leftovers = [p.name for p in (small_disk / "vtpms").iterdir() if ".tmp" in p.name]
    assert leftovers == [], f"partial writes left behind: {leftovers}"
