"""Bring up migration for a DomS0 that has a migration identity: the mutual-TLS
listener with the Migration service, the host TPM prover, the resolver."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss.TCTILdr import TCTILdr

from vtpm_manager.manager import VtpmManager
from vtpm_manager.migration.proof import DestinationProof, MeasurementClaim, make_proof
from vtpm_manager.root import RootOfTrust, TpmRoot

from .. import selfmeasure
from ..api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from ..security.setup import Security
from .artifacts import Artifacts
from .destination import MigrationServicer, Prover
from .host import MigrationHost
from .identity import HostIdentity
from .resolver import Resolver

log = logging.getLogger("doms0.migration")
MAX_PACKAGE_BYTES = 256 << 20


class MigrationSetupError(Exception):
    """Migration is configured but cannot run (bad TLS material, port taken)."""


@dataclass
class MigrationRuntime:
    host: MigrationHost
    server: grpc.Server
    resolver: Resolver
    port: int
    _stopped: bool = field(default=False)

    def start(self) -> None:
        self.resolver.settle_at_start()
        self.server.start()
        self.resolver.start()

    def stop(self, grace: float) -> None:
        if not self._stopped:
            self._stopped = True
            self.resolver.stop()
            self.server.stop(grace).wait()


def prover_for(root: RootOfTrust, claim: MeasurementClaim, log_path: Path,
               active_policy: Callable[[], bytes]) -> Prover | None:
    """Quote with the host TPM; a software root has nothing to prove with."""
    if not isinstance(root, TpmRoot) or root.measure_pcr is None:
        return None
    tcti, pcr = root.tcti, root.measure_pcr

    def prove(key: ec.EllipticCurvePublicKey, nonce: bytes) -> DestinationProof:
        runtime = selfmeasure.runtime_log(log_path, pcr)
        if runtime is None:
            raise RuntimeError(f"no runtime measurement log at {log_path}")
        return make_proof(TCTILdr.parse(tcti), key, nonce, claim, runtime, active_policy())

    return prove


def start_migration(listen: str, identity: HostIdentity, manager: VtpmManager,
                    root: RootOfTrust, artifacts: Artifacts, claim: MeasurementClaim,
                    log_path: Path, allowed: tuple[str, ...],
                    security: Security) -> MigrationRuntime:
    """Bind the listener (not started yet: :meth:`MigrationRuntime.start`)."""
    allowed_code = frozenset(claim.code_digest if a == "self" else bytes.fromhex(a)
                             for a in allowed)
    servicer = MigrationServicer(
        manager, identity, prover_for(root, claim, log_path, lambda: security.policy_digest),
        artifacts, security.gate)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16,
                                                    thread_name_prefix="migration"),
                         options=[("grpc.max_receive_message_length", MAX_PACKAGE_BYTES),
                                  ("grpc.so_reuseport", 0)])
    pb_grpc.add_MigrationServicer_to_server(servicer, server)
    try:
        port = server.add_secure_port(listen, identity.server_credentials())
    except RuntimeError as exc:
        raise MigrationSetupError(f"cannot listen on {listen}: {exc}") from exc
    if port == 0:
        raise MigrationSetupError(f"cannot listen on {listen}")
    address = f"{listen.rsplit(':', 1)[0]}:{port}"
    host = MigrationHost(manager, identity, artifacts, allowed_code, address, security)
    log.info("migration listener on %s as %s", address, identity.host_name)
    return MigrationRuntime(host, server, Resolver(manager, identity, artifacts), port)
