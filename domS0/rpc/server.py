"""Assemble DomS0's gRPC server: our three services, health checking, reflection."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from vtpm_manager.manager import VtpmManager

from ..migration.host import MigrationHost
from ..security.setup import Security
from .attestation import AttestationServicer
from .auth import AuthInterceptor
from .security import SecurityServicer
from .servicers import ControlSocketOf, ManagerServicer, TpmServicer

MAX_WORKERS = 256
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class BindError(Exception):
    """The listen address could not be bound."""


def build_server(
    manager: VtpmManager,
    listen: str,
    auth: AuthInterceptor,
    control_socket_of: ControlSocketOf,
    security: Security,
    attestation: AttestationServicer | None = None,
    migration: MigrationHost | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """Create and bind (not start) the server; returns it, its health servicer, the port.

    ``credentials`` (mutual TLS) or none (the insecure loopback listener); ``auth``
    binds each call's principal. Attach streams each hold a worker for their
    lifetime, hence a generous pool.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="grpc"),
        interceptors=[auth],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=None,
    )
    gate = security.gate
    pb_grpc.add_ManagerServicer_to_server(
        ManagerServicer(manager, control_socket_of, gate, migration), server)
    pb_grpc.add_TpmServicer_to_server(TpmServicer(manager, control_socket_of, gate), server)
    pb_grpc.add_SecurityServicer_to_server(SecurityServicer(security), server)
    names = ["Manager", "Tpm", "Security"]
    if attestation is not None:
        pb_grpc.add_AttestationServicer_to_server(attestation, server)
        names.append("Attestation")
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    ours = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for name in names)
    services = (
        *ours,
        health.SERVICE_NAME,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(services, server)
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise BindError(f"cannot listen on {listen}: {exc}") from exc
    if port == 0 and not listen.startswith("unix:"):
        raise BindError(f"cannot listen on {listen} (address in use or not local)")
    for name in (*ours, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port
