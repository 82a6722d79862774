"""One vTPM out to another DomS0: connect, check the destination's proof, quiesce,
export, transfer, decide, notify.

The steps and what a crash at each leaves (the resolver finishes the job on restart):

1. *connect, attest* — nothing changed anywhere; a refusal names its reason.
2. *quiesce, export* — the engine's latest state is committed and the record stored
   with an ``outgoing`` mark, then the engine stops. Front-end commands wait on the
   vTPM's lock meanwhile, and fail over to the message "being migrated" only after it.
3. *transfer* — the destination stores the package as a pending copy it does not run.
   Killed before the decision: the source still owns the vTPM; on restart it aborts
   (tells the destination to drop its copy) and serves again.
4. *commit* — the decision: the tombstone (``migrated``, no state) is stored. From here
   the destination owns the vTPM. The Commit message only tells it so; if it is lost,
   the destination's resolver asks this host's Status and activates.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from vtpm_manager.manager import VtpmManager
from vtpm_manager.migration.errors import MigrationRefused
from vtpm_manager.migration.hostcert import (
    ak_name_of,
    host_name_of,
    load_cert_pem,
    verify_host_certificate,
)
from vtpm_manager.migration.package import PackageHeader, Payload, key_id, seal_package
from vtpm_manager.migration.proof import DestinationProof, verify_proof
from vtpm_manager.store import MigrationMark

from ..api.vtpm.v1 import vtpm_pb2 as pb
from ..api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from ..security.gate import target_of
from ..security.groups import Group
from ..security.setup import Security
from .artifacts import Artifacts
from .failpoints import reach
from .identity import HostIdentity

log = logging.getLogger("doms0.migration")

Report = Callable[[str, str, int], None]
RPC_TIMEOUT = 60.0


class MigrationFailed(Exception):
    """A migration did not happen; the vTPM is live on the source. ``status`` is the
    gRPC code to answer with."""

    def __init__(self, message: str, status: grpc.StatusCode) -> None:
        super().__init__(message)
        self.status = status


def migrate_out(manager: VtpmManager, ref: str, destination: str, identity: HostIdentity,
                artifacts: Artifacts, allowed_code: Collection[bytes], security: Security,
                source_address: str, report: Report) -> MigrationMark:
    """Move ``ref`` to the DomS0 whose migration listener is ``destination``; returns
    the tombstone. Raises :class:`MigrationFailed` (the vTPM stays live here) or
    ManagerError for a vTPM that cannot migrate."""
    instance = manager.get(ref)
    instance.refuse_if_marked()
    record = instance.record
    generation = record.migrations + 1
    report("connect", f"connecting to {destination}", 5)
    with identity.channel(destination) as channel:
        stub = pb_grpc.MigrationStub(channel)
        nonce = secrets.token_bytes(32)
        target = target_of(instance)
        hello: pb.HelloResponse = _call(stub.Hello, pb.HelloRequest(
            source_nonce=nonce, vtpm_uuid=record.uuid, generation=generation,
            vtpm_name=record.name, domain=target.domain, group=target.group), destination)
        report("attest", f"checking the host TPM proof of {hello.host_name}", 20)
        group = security.groups.get(target.group) if target.group else None
        if target.group and group is None:
            raise MigrationFailed(f"vTPM {record.name} is in group {target.group}, unknown "
                                  "here", grpc.StatusCode.FAILED_PRECONDITION)
        dest_key, dest_host = _check_destination(hello, nonce, identity, allowed_code,
                                                 security.policy_digest, group)
        reach("source-after-hello")
        migration_id = secrets.token_bytes(16)
        mark = MigrationMark("outgoing", migration_id.hex(), destination, dest_host,
                             generation)
        ref_msg = pb.MigrationRef(migration_id=migration_id, vtpm_uuid=record.uuid)
        with instance.exclusive(f"migration to {dest_host}", force=True):
            report("quiesce", "committing the vTPM's state and stopping it", 40)
            record = instance.mark_outgoing(mark)
            reach("source-after-outgoing")
            try:
                report("export", "encrypting the state to the destination", 55)
                header = PackageHeader(
                    migration_id=migration_id, vtpm_uuid=record.uuid, vtpm_name=record.name,
                    engine=record.engine, generation=generation,
                    source_host=identity.host_name, destination_host=dest_host,
                    destination_nonce=hello.session, destination_key_id=key_id(dest_key),
                    created=time.time())
                payload = Payload(record.state or b"", {
                    "created_unix": record.created_unix, "metadata": record.metadata,
                    "running": record.running, "source_address": source_address},
                    artifacts.export(record.uuid))
                package = seal_package(header, payload, dest_key, identity.key)
                report("transfer", f"sending {len(package)} bytes to {dest_host}", 70)
                _call(stub.Transfer, pb.TransferRequest(session=hello.session,
                                                        package=package), destination)
                reach("source-after-transfer")
            except BaseException as exc:
                _undo(stub, ref_msg, destination)
                instance.remark(None)
                log.warning("migration of %s to %s failed before the decision (%s); it "
                            "stays live here", record.name, dest_host, exc)
                raise
            report("commit", "recording the tombstone: the destination owns the vTPM", 85)
            tombstone = replace(mark, state="migrated")
            instance.remark(tombstone, drop_state=True, migrations=generation)
            reach("source-after-tombstone")
        try:
            _call(stub.Commit, ref_msg, destination)
        except MigrationFailed as exc:
            log.warning("commit of migration %s not delivered (%s); %s will ask for it",
                        migration_id.hex(), exc, dest_host)
        artifacts.forget(record.uuid)
    report("done", f"vTPM {record.name} is live on {dest_host} ({destination})", 100)
    log.info("vTPM %s (%s) migrated to %s (%s), migration %d", record.name, record.uuid,
             dest_host, destination, generation)
    return tombstone


def _check_destination(hello: pb.HelloResponse, nonce: bytes, identity: HostIdentity,
                       allowed_code: Collection[bytes], policy_digest: bytes,
                       group: Group | None) -> tuple[ec.EllipticCurvePublicKey, str]:
    """The destination's certificate and proof: its host AK, its DomS0 code (approved
    here), its access-control policy (the same as ours), and for a vTPM in an approval
    group, its measurement on the group's latest list."""
    try:
        cert = load_cert_pem(hello.host_certificate_pem.encode())
        verify_host_certificate(cert, identity.ca_certificates)
        ak = ak_name_of(cert)
        if ak is None:
            raise MigrationFailed(
                f"the certificate of {hello.host_name} names no host AK: the hosts CA must "
                "certify the destination's TPM", grpc.StatusCode.PERMISSION_DENIED)
        proof = DestinationProof.decode(hello.proof)
        key = verify_proof(proof, source_nonce=nonce, trusted_ak_name=ak,
                           allowed_code_digests=allowed_code,
                           expected_policy_digest=policy_digest)
        if group is not None and not group.approves(
                (proof.claim.code_digest, proof.claim.digest())):
            raise MigrationFailed(
                f"destination refused: its DomS0 measurement is not on group {group.name}'s "
                f"approval list (sequence {group.sequence})", grpc.StatusCode.PERMISSION_DENIED)
    except MigrationRefused as exc:
        raise MigrationFailed(f"destination refused: {exc}",
                              grpc.StatusCode.PERMISSION_DENIED) from None
    except ValueError as exc:
        raise MigrationFailed(f"destination refused: bad certificate ({exc})",
                              grpc.StatusCode.PERMISSION_DENIED) from None
    return key, host_name_of(cert)


def _call(method: Callable[..., Any], request: object, destination: str) -> Any:
    try:
        return method(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNAVAILABLE
        details = exc.details() if hasattr(exc, "details") else str(exc)
        raise MigrationFailed(f"{destination}: {details}",
                              code if code != grpc.StatusCode.UNKNOWN
                              else grpc.StatusCode.UNAVAILABLE) from None


def _undo(stub: pb_grpc.MigrationStub, ref: pb.MigrationRef, destination: str) -> None:
    """Tell the destination to drop a pending copy it may hold (best effort: if this
    does not arrive, the destination asks Status and hears "aborted")."""
    try:
        stub.Abort(ref, timeout=10)
    except grpc.RpcError as exc:
        log.info("abort not delivered to %s (%s); it will ask", destination,
                 exc.details() if hasattr(exc, "details") else exc)

