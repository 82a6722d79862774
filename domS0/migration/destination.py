"""The ``Migration`` service on the mutual-TLS listener: this host as a destination
(Hello, Transfer, Commit, Abort) and as a source answering its destinations (Status).

Every call is authenticated by the peer's certificate, which gRPC has already checked
against the hosts CA; a package must be signed by the key of that same certificate,
and Commit/Abort/Status are answered only to the host the migration is with.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from vtpm_manager.errors import ManagerError, PermissionDenied
from vtpm_manager.instance import Instance
from vtpm_manager.manager import VtpmManager
from vtpm_manager.migration.errors import MigrationRefused
from vtpm_manager.migration.hostcert import host_name_of
from vtpm_manager.migration.package import open_package
from vtpm_manager.migration.proof import DestinationProof
from vtpm_manager.store import MigrationMark, Record

from ..api.vtpm.v1 import vtpm_pb2 as pb
from ..api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from ..rpc.status import status_of
from ..security.gate import DOMAIN_KEY, GROUP_KEY, Gate
from ..security.hooks import Action, Target
from ..security.principal import Principal
from .artifacts import Artifacts
from .failpoints import reach
from .identity import HostIdentity, IdentityError, peer_certificate
from .qemu_claim import claim_answer

log = logging.getLogger("doms0.migration")

#: Makes a proof for (migration key, source nonce); None when there is no host TPM.
Prover = Callable[[ec.EllipticCurvePublicKey, bytes], DestinationProof]
SESSION_SECONDS = 120.0
MAX_SESSIONS = 64


@dataclass
class _Session:
    key: ec.EllipticCurvePrivateKey
    source_host: str
    vtpm_uuid: str
    created: float


class MigrationServicer(pb_grpc.MigrationServicer):
    def __init__(self, manager: VtpmManager, identity: HostIdentity, prover: Prover | None,
                 artifacts: Artifacts, gate: Gate) -> None:
        self._manager = manager
        self._identity = identity
        self._prover = prover
        self._artifacts = artifacts
        self._gate = gate
        self._sessions: dict[bytes, _Session] = {}
        self._lock = threading.Lock()

    # -- destination -----------------------------------------------------------------

    def Hello(self, request: pb.HelloRequest, context: grpc.ServicerContext
              ) -> pb.HelloResponse:
        source = _peer_name(context)
        if len(request.source_nonce) != 32:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "source_nonce is 32 bytes")
        if self._prover is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{self._identity.host_name} runs on the software root: without a "
                          "host TPM it cannot prove itself as a migration destination")
        self._refuse_if_here(context, request.vtpm_uuid, request.generation)
        self._check_in(context, source, Target(request.vtpm_name or request.vtpm_uuid,
                                               request.vtpm_uuid,
                                               request.domain or request.vtpm_name,
                                               request.group))
        key = ec.generate_private_key(ec.SECP384R1())
        assert self._prover is not None
        try:
            proof = self._prover(key.public_key(), request.source_nonce)
        except Exception as exc:
            log.error("migration proof failed: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"the host TPM of {self._identity.host_name} could not quote: {exc}")
        session = secrets.token_bytes(32)
        with self._lock:
            self._expire()
            if len(self._sessions) >= MAX_SESSIONS:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              "too many migrations in flight; retry shortly")
            self._sessions[session] = _Session(key, source, request.vtpm_uuid, time.monotonic())
        log.info("migration hello from %s for vTPM %s", source, request.vtpm_uuid)
        return pb.HelloResponse(session=session, proof=proof.encode(),
                                host_name=self._identity.host_name,
                                host_certificate_pem=self._identity.certificate_pem.decode())

    def Transfer(self, request: pb.TransferRequest, context: grpc.ServicerContext
                 ) -> pb.TransferResponse:
        source_cert = _peer_cert(context)
        source = host_name_of(source_cert)
        with self._lock:
            self._expire()
            session = self._sessions.pop(request.session, None)
        if session is None or session.source_host != source:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "unknown, expired or already used migration session: a package is "
                          "accepted once, in the session it was made for (replayed?)")
        assert session is not None
        try:
            header, payload = open_package(
                request.package, session.key, source_cert.public_key(),
                expected_nonce=request.session,
                expected_destination_host=self._identity.host_name,
                expected_source_host=source)
        except MigrationRefused as exc:
            log.warning("migration package from %s refused: %s", source, exc)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"package refused: {exc}")
        if header.vtpm_uuid != session.vtpm_uuid:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          "package refused: it carries another vTPM than the session announced")
        info = payload.record
        metadata = {str(k): str(v) for k, v in dict(info.get("metadata", {})).items()}
        self._check_in(context, source, Target(
            header.vtpm_name, header.vtpm_uuid, metadata.get(DOMAIN_KEY) or header.vtpm_name,
            metadata.get(GROUP_KEY, "")))
        try:
            record = Record(
                uuid=header.vtpm_uuid, name=header.vtpm_name, engine=header.engine,
                created_unix=int(info.get("created_unix", 0)),
                data_key=secrets.token_bytes(32),
                metadata=metadata,
                running=bool(info.get("running", False)), state=payload.state,
                migration=MigrationMark("incoming", header.migration_id.hex(),
                                        str(info.get("source_address", "")), source,
                                        header.generation))
            self._artifacts.restore(record.uuid, payload.files)
            self._manager.adopt_incoming(record)
            reach("destination-after-pending")
        except ManagerError as exc:
            context.abort(status_of(exc), str(exc))
        except (OSError, ValueError, TypeError) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"the destination could not store the vTPM: {exc}")
        log.info("vTPM %s (%s) received from %s (migration %d), pending commit",
                 header.vtpm_name, header.vtpm_uuid, source, header.generation)
        return pb.TransferResponse(vtpm_uuid=header.vtpm_uuid)

    def Commit(self, request: pb.MigrationRef, context: grpc.ServicerContext
               ) -> pb.MigrationStatus:
        instance, mark = self._marked(request, context)
        if mark is None:
            return pb.MigrationStatus(state="active")
        if mark.state != "incoming":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"migration {request.migration_id.hex()} is {mark.state} here")
        activate(instance, mark)
        reach("destination-after-activate")
        return pb.MigrationStatus(state="active")

    def Abort(self, request: pb.MigrationRef, context: grpc.ServicerContext
              ) -> pb.MigrationStatus:
        instance, mark = self._marked(request, context)
        if mark is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "that migration is active here already; it cannot be aborted")
        assert mark is not None
        if mark.state == "incoming":
            discard(self._manager, self._artifacts, instance, mark)
        return pb.MigrationStatus(state="aborted")

    # -- source ----------------------------------------------------------------------

    def Status(self, request: pb.MigrationRef, context: grpc.ServicerContext
               ) -> pb.MigrationStatus:
        peer = _peer_name(context)
        state = "aborted"
        try:
            instance = self._manager.get(request.vtpm_uuid)
        except ManagerError:
            return pb.MigrationStatus(state=state)
        mark = instance.record.migration
        if mark is not None and mark.migration_id == request.migration_id.hex():
            if mark.peer_host != peer:
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"migration {mark.migration_id} is not with {peer}")
            state = {"migrated": "committed", "outgoing": "outgoing",
                     "incoming": "pending"}[mark.state]
        return pb.MigrationStatus(state=state)

    def Claim(self, request: pb.MigrationRef, context: grpc.ServicerContext
              ) -> pb.MigrationStatus:
        peer = _peer_name(context)
        try:
            instance = self._manager.get(request.vtpm_uuid)
        except ManagerError:
            return pb.MigrationStatus(state="aborted")
        state = claim_answer(instance, request.migration_id.hex(), peer)
        if state == "committed":
            self._artifacts.forget(instance.record.uuid)
        return pb.MigrationStatus(state=state)

    # -- helpers ---------------------------------------------------------------------

    def _check_in(self, context: grpc.ServicerContext, source: str, target: Target) -> None:
        """The migrate_in hook, as the source host (Chinese Wall, approval groups)."""
        try:
            self._gate.check(Principal("peer", source, "mutual TLS"), Action.MIGRATE_IN,
                             target=target)
        except PermissionDenied as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{self._identity.host_name} refuses vTPM {target.name}: {exc}")

    def _refuse_if_here(self, context: grpc.ServicerContext, uuid: str, generation: int
                        ) -> None:
        try:
            here = self._manager.get(uuid).record
        except ManagerError:
            return
        if here.migration is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"vTPM {here.name} ({uuid}) is live on {self._identity.host_name} "
                          "already: refusing a second copy")
        assert here.migration is not None
        if here.migration.state != "migrated":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"vTPM {here.name} ({uuid}) is {here.migration.state} on "
                          f"{self._identity.host_name} (migration {here.migration.generation} "
                          f"with {here.migration.peer_host}, undecided); retry once it settles")
        if generation <= here.migration.generation:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"vTPM {here.name} left {self._identity.host_name} at migration "
                          f"{here.migration.generation}; migration {generation} is not newer")

    def _marked(self, request: pb.MigrationRef, context: grpc.ServicerContext
                ) -> tuple[Instance, MigrationMark | None]:
        """The vTPM and its mark, if this call is about its current migration and comes
        from the host that migration is with."""
        peer = _peer_name(context)
        try:
            instance = self._manager.get(request.vtpm_uuid)
        except ManagerError:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"no vTPM {request.vtpm_uuid} on {self._identity.host_name}")
        mark = instance.record.migration
        wanted = request.migration_id.hex()
        if mark is None:
            if instance.record.migrations == 0:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no migration {wanted} here")
            return instance, None
        if mark.migration_id != wanted or mark.peer_host != peer:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"no migration {wanted} with {peer} here")
        return instance, mark

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if now - s.created > SESSION_SECONDS]:
            del self._sessions[key]


def activate(instance: Instance, mark: MigrationMark) -> None:
    """The source decided: the vTPM is live here (started if it was running)."""
    instance.remark(None, migrations=mark.generation)
    log.info("vTPM %s (%s) active here (migration %d from %s)", instance.record.name,
             instance.record.uuid, mark.generation, mark.peer_host)


def discard(manager: VtpmManager, artifacts: Artifacts, instance: Instance,
            mark: MigrationMark) -> None:
    """The source kept the vTPM: drop the pending copy. If this host had a tombstone
    for it before (it left here once), the tombstone comes back, naming the source as
    where the vTPM lives."""
    if instance.record.migrations > 0:
        instance.remark(MigrationMark("migrated", mark.migration_id, mark.peer_address,
                                      mark.peer_host, mark.generation - 1),
                        drop_state=True)
    else:
        manager.delete(instance.record.uuid)
    artifacts.forget(instance.record.uuid)
    log.info("pending vTPM %s (%s) from %s dropped: the source kept it",
             instance.record.name, instance.record.uuid, mark.peer_host)


def _peer_cert(context: grpc.ServicerContext) -> x509.Certificate:
    try:
        return peer_certificate(context)
    except IdentityError as exc:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        raise   # abort raises; this line only tells the type checker


def _peer_name(context: grpc.ServicerContext) -> str:
    return host_name_of(_peer_cert(context))
