"""The vtpm.v1 Manager and Tpm services, on top of the vTPM manager."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.execution import run_command
from domS0.logs import log_request
from tpm_emulator.constants import RC
from tpm_emulator.frame import error_response
from vtpm_manager.errors import InvalidArgument, ManagerError, PermissionDenied
from vtpm_manager.instance import Instance, Lease
from vtpm_manager.manager import VtpmManager

from ..migration.host import MigrationHost
from ..migration.source import MigrationFailed
from ..security.gate import DOMAIN_KEY, GROUP_KEY, Gate, command_code_of
from ..security.hooks import Action, Target
from ..security.principal import Principal, principal_of
from .auth import describe_caller
from .status import abort_on_refusal, status_of

ControlSocketOf = Callable[[Instance], str]


def to_message(instance: Instance, control_socket: str = "") -> pb.Vtpm:
    record = instance.record
    mark = record.migration
    if mark is not None:
        state = pb.VTPM_STATE_MIGRATED if mark.state == "migrated" else pb.VTPM_STATE_MIGRATING
    else:
        state = pb.VTPM_STATE_RUNNING if instance.running else pb.VTPM_STATE_STOPPED
    return pb.Vtpm(
        uuid=record.uuid,
        name=record.name,
        engine=record.engine,
        state=state,
        holder=instance.holder or "",
        metadata=record.metadata,
        created_unix=record.created_unix,
        # A placeholder awaiting QEMU's stream has its socket before it runs.
        control_socket=control_socket
        if instance.running or (mark is not None and mark.state == "incoming") else "",
        migration=pb.MigrationInfo(
            state=mark.state, peer_address=mark.peer_address, peer_host=mark.peer_host,
            generation=mark.generation, migration_id=mark.migration_id)
        if mark is not None else None,
    )


class ManagerServicer(pb_grpc.ManagerServicer):
    def __init__(self, manager: VtpmManager, control_socket_of: ControlSocketOf,
                 gate: Gate, migration: MigrationHost | None = None) -> None:
        self._manager = manager
        self._socket_of = control_socket_of
        self._gate = gate
        self._migration = migration

    def _message(self, instance: Instance) -> pb.Vtpm:
        return to_message(instance, self._socket_of(instance))

    def _logged(self, method: str, context: grpc.ServicerContext, vtpm: str,
                started: float) -> None:
        log_request("api request", started, method=method, vtpm=vtpm,
                    caller=describe_caller(context))

    @abort_on_refusal
    def CreateVtpm(self, request: pb.CreateVtpmRequest,
                   context: grpc.ServicerContext) -> pb.Vtpm:
        started = time.perf_counter()
        try:
            domain = dict(request.metadata).get(DOMAIN_KEY) or request.name
            target = Target(request.name, request.incoming_uuid, domain,
                            dict(request.metadata).get(GROUP_KEY, ""))
            principal = principal_of(context)
            self._gate.check(principal, Action.CREATE, target=target)
            if request.start and not request.incoming_uuid:
                self._gate.check(principal, Action.START, target=target)
            if request.incoming_uuid:
                instance = self._manager.create_placeholder(request.name,
                                                            request.incoming_uuid,
                                                            request.engine)
            else:
                instance = self._manager.create(
                    request.name, request.engine, dict(request.metadata), request.start
                )
            return self._message(instance)
        finally:
            self._logged("CreateVtpm", context, request.name, started)

    @abort_on_refusal
    def GetVtpm(self, request: pb.GetVtpmRequest, context: grpc.ServicerContext) -> pb.Vtpm:
        instance = self._manager.get(request.vtpm)
        self._gate.check_call(context, Action.READ, instance)
        return self._message(instance)

    @abort_on_refusal
    def ListVtpms(self, request: pb.ListVtpmsRequest,
                  context: grpc.ServicerContext) -> pb.ListVtpmsResponse:
        """Every vTPM the caller may read (a domain sees its own)."""
        principal = principal_of(context)
        self._gate.check(principal, Action.READ)
        return pb.ListVtpmsResponse(vtpms=[
            self._message(i) for i in self._manager.list()
            if self._gate.permits(principal, Action.READ, i)])

    def MigrateVtpm(self, request: pb.MigrateVtpmRequest,
                    context: grpc.ServicerContext) -> Iterator[pb.MigrateProgress]:
        started = time.perf_counter()
        try:
            try:
                self._gate.check_call(context, Action.MIGRATE_OUT,
                                      self._manager.get(request.vtpm))
            except ManagerError as exc:
                context.abort(status_of(exc), str(exc))
            if self._migration is None:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              "this DomS0 has no migration identity: configure "
                              "migration_listen, tls_cert, tls_key and tls_ca")
            if not request.destination or ":" not in request.destination:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "destination is the other DomS0's migration listener, HOST:PORT")
            assert self._migration is not None
            try:
                for event in self._migration.migrate(request.vtpm, request.destination):
                    if isinstance(event, tuple):
                        step, message, percent = event
                        yield pb.MigrateProgress(step=step, message=message, percent=percent)
            except ManagerError as exc:
                context.abort(status_of(exc), str(exc))
            except MigrationFailed as exc:
                context.abort(exc.status, f"migration refused or failed, the vTPM stays "
                              f"here: {exc}")
        finally:
            self._logged("MigrateVtpm", context, request.vtpm, started)

    @abort_on_refusal
    def DeleteVtpm(self, request: pb.DeleteVtpmRequest,
                   context: grpc.ServicerContext) -> pb.DeleteVtpmResponse:
        started = time.perf_counter()
        try:
            self._gate.check_call(context, Action.DELETE, self._manager.get(request.vtpm))
            self._manager.delete(request.vtpm)
            return pb.DeleteVtpmResponse()
        finally:
            self._logged("DeleteVtpm", context, request.vtpm, started)

    @abort_on_refusal
    def StartVtpm(self, request: pb.StartVtpmRequest, context: grpc.ServicerContext) -> pb.Vtpm:
        started = time.perf_counter()
        try:
            self._gate.check_call(context, Action.START, self._manager.get(request.vtpm))
            return self._message(self._manager.start(request.vtpm))
        finally:
            self._logged("StartVtpm", context, request.vtpm, started)

    @abort_on_refusal
    def StopVtpm(self, request: pb.StopVtpmRequest, context: grpc.ServicerContext) -> pb.Vtpm:
        started = time.perf_counter()
        try:
            self._gate.check_call(context, Action.STOP, self._manager.get(request.vtpm))
            return self._message(self._manager.stop(request.vtpm))
        finally:
            self._logged("StopVtpm", context, request.vtpm, started)


class TpmServicer(pb_grpc.TpmServicer):
    def __init__(self, manager: VtpmManager, control_socket_of: ControlSocketOf,
                 gate: Gate) -> None:
        self._manager = manager
        self._socket_of = control_socket_of
        self._gate = gate

    @abort_on_refusal
    def Transmit(self, request: pb.TransmitRequest,
                 context: grpc.ServicerContext) -> pb.TransmitResponse:
        instance = self._manager.get(request.vtpm)
        self._gate.check_call(context, Action.TRANSMIT, instance,
                              command_code=command_code_of(request.command),
                              locality=request.locality)
        response = run_command(instance, request.command, request.locality, None,
                               describe_caller(context))
        return pb.TransmitResponse(response=response)

    def Attach(self, requests: Iterator[pb.AttachRequest],
               context: grpc.ServicerContext) -> Iterator[pb.AttachResponse]:
        caller = describe_caller(context)
        try:
            first = next(requests)
        except StopIteration:
            return
        if first.WhichOneof("op") != "attach":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "the first message of an Attach stream must be `attach`")
        lease: Lease | None = None
        principal = principal_of(context)
        try:
            instance = self._manager.get(first.attach.vtpm)
            self._gate.check(principal, Action.ATTACH, instance)
            holder = first.attach.holder or "a gRPC front end"
            lease = instance.attach(f"{holder} ({caller})")
            yield pb.AttachResponse(attached=to_message(instance, self._socket_of(instance)))
            for request in requests:
                yield self._serve(instance, lease, request, caller, principal)
        except ManagerError as exc:
            context.abort(status_of(exc), str(exc))
        finally:
            if lease is not None:
                instance.detach(lease)

    def _serve(self, instance: Instance, lease: Lease, request: pb.AttachRequest,
               caller: str, principal: Principal) -> pb.AttachResponse:
        kind = request.WhichOneof("op")
        if kind == "command":
            command, locality = request.command.command, request.command.locality
            try:
                self._gate.check(principal, Action.TRANSMIT, instance,
                                 command_code=command_code_of(command), locality=locality)
            except PermissionDenied:
                # A TPM front end hears a TPM answer: the command is disabled for it.
                return pb.AttachResponse(response=pb.TransmitResponse(
                    response=error_response(RC.DISABLED)))
            response = run_command(instance, command, locality, lease, caller)
            return pb.AttachResponse(response=pb.TransmitResponse(response=response))
        if kind == "power_cycle":
            instance.power_cycle(lease, request.power_cycle.delete_volatile)
            return pb.AttachResponse(power_cycled=pb.PowerCycleDone())
        raise InvalidArgument("after `attach`, send `command` or `power_cycle` messages")
