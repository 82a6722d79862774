"""A vTPM migrated inside QEMU's own migration stream: the source's control socket
hands out its state blobs (QEMU's pre_save), a placeholder on the destination takes
them (post_load), and the destination claims the vTPM from the source at CMD_INIT.
The QEMU side is replayed with the control-socket client of test_qemu_control."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from domS0.harness import Doms0Process, MigrationNode, create_hosts_ca
from tests import tpm2
from tests.conftest import only_on
from tests.integration.test_qemu_control import QemuClient, qemu_startup
from tpm_emulator import swtpm_ctrl as ctrl

BLOB_TYPES = (ctrl.BlobType.PERMANENT, ctrl.BlobType.VOLATILE, ctrl.BlobType.SAVESTATE)
Nodes = Callable[..., tuple[MigrationNode, Doms0Process]]


@pytest.fixture
def nodes(tmp_path: Path, engine: str) -> Iterator[Nodes]:
    """Provisioned and started hosts whose vTPMs run on ``engine``."""
    ca = create_hosts_ca(tmp_path / "ca")
    started: list[MigrationNode] = []

    def make(name: str, key: bytes = b"k" * 32) -> tuple[MigrationNode, Doms0Process]:
        key_file = tmp_path / f"{name}.qemu-key"
        key_file.write_bytes(key)
        node = MigrationNode(tmp_path / name, name, ca, engine=engine,
                             extra_args=("--qemu-migration-key", str(key_file)))
        started.append(node)
        return node, node.provision().start()

    try:
        yield make
    finally:
        for node in started:
            node.stop()


def vtpmctl(doms0: Doms0Process, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "domS0.cli.vtpmctl", *args],
                          env={**os.environ, **doms0.env()}, capture_output=True,
                          text=True, timeout=60)


def show(doms0: Doms0Process, name: str) -> dict[str, object]:
    done = vtpmctl(doms0, "show", name, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def running_guest(doms0: Doms0Process) -> tuple[QemuClient, bytes, str]:
    """dom1 on ``doms0`` driven by a QEMU-style client: started, PCR 16 extended."""
    created = vtpmctl(doms0, "create", "dom1", "--engine", doms0.engine, "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    qemu = QemuClient(info["control_socket"])
    qemu_startup(qemu)
    assert tpm2.rc_of(qemu.tpm(tpm2.startup_clear())) == 0
    assert tpm2.rc_of(qemu.tpm(tpm2.pcr_extend_sha256(16, b"\x42" * 32))) == 0
    value = tpm2.pcr_value_from_read(qemu.tpm(tpm2.pcr_read_sha256(16)))
    return qemu, value, info["uuid"]


def pre_save(qemu: QemuClient) -> dict[int, ctrl.StateBlobResponse]:
    blobs = {}
    for blob_type in BLOB_TYPES:
        reply = qemu.call(ctrl.GetStateBlob(blob_type=blob_type,
                                            flags=ctrl.StateFlag.DECRYPTED))
        assert isinstance(reply, ctrl.StateBlobResponse)
        blobs[blob_type] = reply
    assert blobs[ctrl.BlobType.PERMANENT].result == 0
    return blobs


def incoming(doms0: Doms0Process, uuid: str) -> QemuClient:
    """The destination QEMU in RUN_STATE_INMIGRATE: data fd, probe, caps, stop."""
    done = vtpmctl(doms0, "create", "dom1", "--engine", doms0.engine, "--incoming", uuid,
                   "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["state"] == "VTPM_STATE_MIGRATING" and info["control_socket"]
    qemu = QemuClient(info["control_socket"])
    assert qemu.set_datafd() == ctrl.Result.SUCCESS
    assert qemu.tpm(tpm2.command(0x181))[:2] == b"\x80\x01"   # the probe gets an answer
    assert qemu.call(ctrl.Stop()).result == 0
    return qemu


def post_load(qemu: QemuClient, blobs: dict[int, ctrl.StateBlobResponse]) -> int:
    """SET_STATEBLOB for each non-empty blob, then INIT; returns INIT's result."""
    for blob_type, reply in blobs.items():
        if reply.result == 0 and reply.blob:
            result = qemu.call(ctrl.SetStateBlob(blob_type=blob_type, data=reply.blob,
                                                 flags=reply.flags)).result
            if result != 0:
                return int(result)
    return int(qemu.call(ctrl.Init(ctrl.InitFlag.DELETE_VOLATILE)).result)


def test_the_vtpm_moves_in_qemus_stream_and_runs_once(nodes: Nodes) -> None:
    _a, da = nodes("host-a")
    _b, db = nodes("host-b")
    source, value, uuid = running_guest(da)
    blobs = pre_save(source)
    assert show(da, "dom1")["state"] == "VTPM_STATE_MIGRATING"
    assert tpm2.rc_of(source.tpm(tpm2.get_random(8))) != 0     # frozen meanwhile
    # A second pre_save cannot hand the vTPM out twice.
    again = source.call(ctrl.GetStateBlob(blob_type=ctrl.BlobType.PERMANENT, flags=0))
    assert again.result != 0

    destination = incoming(db, uuid)
    assert post_load(destination, blobs) == 0
    # The guest continues where it was: same PCR, no new TPM2_Startup needed.
    assert tpm2.pcr_value_from_read(destination.tpm(tpm2.pcr_read_sha256(16))) == value
    assert tpm2.rc_of(destination.tpm(tpm2.startup_clear())) == 0x100
    assert show(db, "dom1")["state"] == "VTPM_STATE_RUNNING"
    moved = show(da, "dom1")
    assert moved["state"] == "VTPM_STATE_MIGRATED"
    assert dict(moved["migration"])["peer_host"] == "host-b"   # type: ignore[call-overload]
    refused = vtpmctl(da, "transmit", "dom1", "80010000000c0000017b0008")
    assert refused.returncode == 1 and "migrated to host-b" in refused.stderr
    # QEMU on the source resuming now (a late fall-back) does not revive it.
    assert source.call(ctrl.LockStorage(0)).result == 0
    assert show(da, "dom1")["state"] == "VTPM_STATE_MIGRATED"
    source.close()
    destination.close()


def test_a_fallback_keeps_the_vtpm_on_the_source(nodes: Nodes) -> None:
    _a, da = nodes("host-a")
    _b, db = nodes("host-b")
    source, value, uuid = running_guest(da)
    blobs = pre_save(source)
    # The migration failed; QEMU resumes the VM on the source.
    assert source.call(ctrl.LockStorage(300)).result == 0
    assert show(da, "dom1")["state"] == "VTPM_STATE_RUNNING"
    assert tpm2.pcr_value_from_read(source.tpm(tpm2.pcr_read_sha256(16))) == value
    # A destination that got the stream anyway cannot claim it: INIT fails, it never runs.
    destination = incoming(db, uuid)
    assert post_load(destination, blobs) != 0
    assert show(db, "dom1")["state"] != "VTPM_STATE_RUNNING"
    assert tpm2.rc_of(source.tpm(tpm2.get_random(8))) == 0
    source.close()
    destination.close()


# The envelope (key, signature, UUID) is refused before any engine sees the blob; the
# tests above carry both engines' blobs.
@only_on("builtin")
@pytest.mark.parametrize("fault", ["another key", "altered", "another vTPM"])
def test_a_blob_that_does_not_belong_is_refused(nodes: Nodes, fault: str) -> None:
    _a, da = nodes("host-a")
    _b, db = nodes("host-b", key=b"x" * 32 if fault == "another key" else b"k" * 32)
    source, _value, uuid = running_guest(da)
    blobs = pre_save(source)
    permanent = blobs[ctrl.BlobType.PERMANENT]
    if fault == "altered":
        data = bytearray(permanent.blob)
        data[len(data) // 2] ^= 1
        blobs[ctrl.BlobType.PERMANENT] = ctrl.StateBlobResponse(
            blob=bytes(data), flags=permanent.flags, totlength=len(data))
    if fault == "another vTPM":
        uuid = "00000000-0000-4000-8000-000000000001"
    destination = incoming(db, uuid)
    assert post_load(destination, blobs) != 0
    assert show(db, "dom1")["state"] == "VTPM_STATE_MIGRATING"   # still waiting
    assert source.call(ctrl.LockStorage(0)).result == 0            # the VM resumes on A
    assert show(da, "dom1")["state"] == "VTPM_STATE_RUNNING"
    source.close()
    destination.close()
