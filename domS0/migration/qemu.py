"""A vTPM inside QEMU's own migration stream, through the per-vTPM control socket.

With a ``qemu_migration_key`` configured, CMD_GET_STATEBLOB hands out the whole vTPM
as a :mod:`vtpm_manager.migration.qemu_blob` (sealed with the shared key, signed by
this host) and CMD_SET_STATEBLOB on another DomS0 takes it. Ownership follows the same
rule as a DomS0-driven migration — the source decides — with QEMU's own signals:

- source, GET_STATEBLOB (QEMU's pre_save, the VM stopped): the state is committed and
  the vTPM marked ``outgoing`` to "the QEMU stream"; it serves nothing meanwhile;
- source, CMD_LOCK_STORAGE (QEMU resumes the VM here: the migration fell back, or it
  was a snapshot): the migration is aborted, the vTPM live here again;
- destination, SET_STATEBLOB into a placeholder (``vtpmctl create NAME --incoming
  UUID``): the blob is checked and stored ``incoming``;
- destination, CMD_INIT (QEMU's post_load): the destination *claims* the vTPM from the
  source's migration listener; the source stores its tombstone and says "committed",
  and only then does the vTPM run here. "aborted" (the VM resumed on the source) fails
  the INIT, so QEMU's incoming migration fails and nothing runs twice.

Without a key, state blobs stay sealed to the vTPM's own data key: save and restore
on the same DomS0 (snapshots), never another host.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import grpc

from vtpm_manager.errors import FailedPrecondition
from vtpm_manager.instance import Instance, Lease
from vtpm_manager.manager import QEMU_PEER
from vtpm_manager.migration.errors import MigrationRefused
from vtpm_manager.migration.package import Payload
from vtpm_manager.migration.qemu_blob import (
    QemuHeader,
    is_qemu_blob,
    open_qemu_blob,
    seal_qemu_blob,
)
from vtpm_manager.store import MigrationMark

from ..api.vtpm.v1 import vtpm_pb2 as pb
from ..api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from ..security.gate import Gate
from ..security.hooks import Action
from ..security.principal import Principal
from .artifacts import Artifacts
from .destination import activate
from .identity import HostIdentity

log = logging.getLogger("doms0.migration")
CLAIM_TIMEOUT = 30.0


@dataclass(frozen=True)
class QemuMigration:
    identity: HostIdentity
    key: bytes
    artifacts: Artifacts
    address: str          # this host's migration listener (the destination claims there)
    gate: Gate

    def export(self, instance: Instance, lease: Lease) -> bytes:
        """The vTPM as a signed, sealed blob; the vTPM is ``outgoing`` from now on."""
        with instance.lock:
            mark = instance.record.migration
            if mark is not None and mark.state == "outgoing" and mark.peer_host == QEMU_PEER:
                raise FailedPrecondition(
                    f"vTPM {instance.record.name} was handed to QEMU's migration stream "
                    "already; resume the VM here (CMD_LOCK_STORAGE) to take it back")
            generation = instance.record.migrations + 1
            migration_id = secrets.token_hex(16)
            record = instance.mark_outgoing(MigrationMark("outgoing", migration_id, "",
                                                          QEMU_PEER, generation))
            header = QemuHeader(migration_id, record.uuid, record.name, record.engine,
                                generation, self.identity.host_name, self.address,
                                time.time())
            payload = Payload(record.state or b"", {
                "created_unix": record.created_unix, "metadata": record.metadata,
                "running": True}, self.artifacts.export(record.uuid))
        log.info("vTPM %s handed to QEMU's migration stream (migration %d, %s)",
                 record.name, generation, migration_id)
        return seal_qemu_blob(header, payload, self.key, self.identity.key,
                              self.identity.certificate)

    def resume_here(self, instance: Instance) -> None:
        """CMD_LOCK_STORAGE on the source: the VM runs here again; if the vTPM was
        handed to QEMU and nobody claimed it, it is live here again."""
        with instance.lock:
            mark = instance.record.migration
            if mark is not None and mark.state == "outgoing" and mark.peer_host == QEMU_PEER:
                instance.remark(None)
                log.info("vTPM %s: the VM resumed here; migration %s aborted",
                         instance.record.name, mark.migration_id)

    def receive(self, instance: Instance, blob: bytes) -> None:
        """SET_STATEBLOB on the destination: check the blob against the placeholder
        and store it ``incoming``."""
        mark = instance.record.migration
        if mark is None or mark.state != "incoming" or mark.peer_host != QEMU_PEER:
            raise FailedPrecondition(
                f"vTPM {instance.record.name} is not waiting for a QEMU migration; create "
                f"the placeholder with: vtpmctl create NAME --incoming UUID")
        if not is_qemu_blob(blob):
            raise FailedPrecondition("this is not a vtpm-stack QEMU migration blob (is "
                                     "the source DomS0 configured with the migration key?)")
        try:
            header, payload = open_qemu_blob(blob, self.key, self.identity.ca_certificates)
        except MigrationRefused as exc:
            raise FailedPrecondition(f"QEMU migration blob refused: {exc}") from None
        record = instance.record
        if header.vtpm_uuid != record.uuid or header.vtpm_name != record.name:
            raise FailedPrecondition(
                f"the blob carries vTPM {header.vtpm_name} ({header.vtpm_uuid}), this "
                f"placeholder is {record.name} ({record.uuid})")
        if header.engine != record.engine:
            raise FailedPrecondition(f"the blob is for the {header.engine} engine, the "
                                     f"placeholder uses {record.engine}")
        if header.generation <= record.migrations:
            raise FailedPrecondition(f"migration {header.generation} of {record.name} is "
                                     f"not newer than {record.migrations}: old or replayed")
        self.artifacts.restore(record.uuid, payload.files)
        metadata = {str(k): str(v) for k, v in dict(payload.record.get("metadata", {})).items()}
        instance.receive_state(
            MigrationMark("incoming", header.migration_id, header.source_address,
                          header.source_host, header.generation),
            payload.state, running=True, metadata=metadata)
        log.info("vTPM %s: state from %s received in QEMU's stream (migration %d), "
                 "pending its claim", record.name, header.source_host, header.generation)

    def claim(self, instance: Instance) -> None:
        """CMD_INIT after SET_STATEBLOB: the source gives the vTPM up, then it runs here."""
        mark = instance.record.migration
        if mark is None or mark.state != "incoming" or not mark.migration_id:
            return
        # migrate_in, as the source host: Chinese Wall against what runs here now.
        self.gate.check(Principal("peer", mark.peer_host, "QEMU migration stream"),
                        Action.MIGRATE_IN, instance)
        ref = pb.MigrationRef(migration_id=bytes.fromhex(mark.migration_id),
                              vtpm_uuid=instance.record.uuid)
        try:
            with self.identity.channel(mark.peer_address) as channel:
                answer = pb_grpc.MigrationStub(channel).Claim(ref, timeout=CLAIM_TIMEOUT)
        except grpc.RpcError as exc:
            raise FailedPrecondition(
                f"the source {mark.peer_host} ({mark.peer_address}) did not give up vTPM "
                f"{instance.record.name}: {exc.details()}") from None
        if answer.state != "committed":
            raise FailedPrecondition(
                f"the source {mark.peer_host} kept vTPM {instance.record.name} "
                f"({answer.state}): the VM resumed there")
        activate(instance, mark)
