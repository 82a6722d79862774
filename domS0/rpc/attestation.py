"""The vtpm.v1 Attestation service: Build, Predict, Quote, GetEventLog, GetCertificates,
Seal, Unseal.

A separate service rather than more Manager methods: it is data paths 2 and 3 (a
builder and a verifier's agent are its callers, not the operator managing vTPMs),
and a deployment can grant or route it on its own. Every call passes the same token
interceptor as the other services (it is installed server-wide).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.attestor import Attestor
from domS0.finalizer import BuildSpec, Finalizer, measure_images, parse_config
from domS0.imagestore import ImageStore, ImageTooLarge, ImageWriter, StoredImage
from domS0.logs import log_request
from domS0.sealer import Sealer
from vtpm_manager.attestation.quote import parse_selection
from vtpm_manager.errors import InvalidArgument, NotFound
from vtpm_manager.manager import VtpmManager
from vtpm_manager.sealing import (
    AuthorizedPolicy,
    AuthRefused,
    ImportRefused,
    LockedOut,
    PcrPolicy,
    PcrValues,
    PolicyRefused,
    SealingError,
    SealPolicy,
)
from vtpm_manager.sealing.policy import load_public_key_pem

from ..security.gate import Gate, target_of
from ..security.hooks import Action, Target
from ..security.principal import principal_of
from .auth import describe_caller
from .servicers import ControlSocketOf, to_message
from .status import abort_on_refusal

_KINDS = {pb.IMAGE_KIND_KERNEL: "kernel", pb.IMAGE_KIND_INITRD: "initrd"}


@dataclass
class _Upload:
    """A Build/Predict stream taken apart: its header and the images it stored."""

    header: pb.BuildHeader
    images: dict[str, StoredImage] = field(default_factory=dict)


def receive(requests: Iterator[pb.BuildRequest], store: ImageStore) -> _Upload:
    """Read the header, then stream each image's chunks into the store."""
    first = next(requests, None)
    if first is None or first.WhichOneof("part") != "header":
        raise InvalidArgument("the first message of a Build stream must be `header`")
    writers: dict[str, ImageWriter] = {}
    try:
        for request in requests:
            if request.WhichOneof("part") != "chunk":
                raise InvalidArgument("after `header`, send only `chunk` messages")
            kind = _KINDS.get(request.chunk.kind)
            if kind is None:
                raise InvalidArgument("each chunk needs kind KERNEL or INITRD")
            writer = writers.get(kind) or writers.setdefault(kind, store.writer())
            try:
                writer.write(request.chunk.data)
            except ImageTooLarge as exc:
                raise InvalidArgument(f"{kind}: {exc}") from None
        if "kernel" not in writers:
            raise InvalidArgument("no kernel was sent; stream it as KERNEL chunks")
        return _Upload(first.header, {kind: w.commit() for kind, w in writers.items()})
    finally:
        for writer in writers.values():
            writer.abort()


def _deep_message(deep: Mapping[str, Any] | None) -> pb.DeepQuote | None:
    if deep is None:
        return None
    return pb.DeepQuote(
        encoded=base64.b64decode(deep["encoded"]),
        host_ak_public_pem=deep["host_ak_public_pem"],
        ek_name=bytes.fromhex(deep["ek_name"]), policy_digest=bytes.fromhex(deep["policy_digest"]),
        host_pcr_selection=deep["host_pcr_selection"], measure_pcr=deep["measure_pcr"] or 0)


def seal_policy(request: pb.SealRequest) -> SealPolicy:
    """The request's policy; InvalidArgument for a missing or malformed one."""
    kind = request.WhichOneof("policy")
    try:
        if kind == "current":
            return PcrPolicy(parse_selection(request.current.pcr_selection))
        if kind == "predicted":
            values: PcrValues = {}
            for item in request.predicted.values:
                values.setdefault(item.bank, {})[item.pcr] = item.value
            return PcrPolicy(parse_selection(request.predicted.pcr_selection), values)
        if kind == "authorized":
            return AuthorizedPolicy(load_public_key_pem(
                request.authorized.approval_public_key_pem), request.authorized.revocable)
    except (ValueError, KeyError) as exc:
        raise InvalidArgument(f"bad {kind} policy: {exc}") from None
    raise InvalidArgument("give a policy: current, predicted or authorized")


def sealing_status(exc: SealingError) -> tuple[grpc.StatusCode, str]:
    """The status a sealing refusal maps onto; the message names the differing PCRs."""
    if isinstance(exc, PolicyRefused):
        if exc.differing:
            verb = "differs" if len(exc.differing) == 1 else "differ"
            return (grpc.StatusCode.FAILED_PRECONDITION,
                    f"policy refused: {', '.join(exc.differing)} {verb} from the sealed "
                    f"(or signed) state ({exc})")
        return grpc.StatusCode.FAILED_PRECONDITION, f"policy refused: {exc}"
    if isinstance(exc, LockedOut):
        return (grpc.StatusCode.FAILED_PRECONDITION,
                f"locked out (dictionary-attack protection): {exc}")
    if isinstance(exc, ImportRefused):
        return (grpc.StatusCode.FAILED_PRECONDITION,
                f"this blob was made for another vTPM's EK: {exc}")
    if isinstance(exc, AuthRefused):
        return grpc.StatusCode.PERMISSION_DENIED, f"auth refused: {exc}"
    return grpc.StatusCode.FAILED_PRECONDITION, f"sealing failed: {exc}"


class AttestationServicer(pb_grpc.AttestationServicer):
    def __init__(self, finalizer: Finalizer, attestor: Attestor, images: ImageStore,
                 control_socket_of: ControlSocketOf, manager: VtpmManager, gate: Gate,
                 sealer: Sealer | None = None) -> None:
        self._finalizer = finalizer
        self._attestor = attestor
        self._images = images
        self._socket_of = control_socket_of
        self._manager = manager
        self._gate = gate
        self._sealer = sealer

    def _check(self, context: grpc.ServicerContext, action: Action, ref: str) -> None:
        """The hook for ``action`` on vTPM ``ref`` (one a build may still create is
        judged as the domain of the same name)."""
        try:
            target = target_of(self._manager.get(ref))
        except NotFound:
            target = Target(ref, "", ref)
        self._gate.check(principal_of(context), action, target=target)

    def _require_sealer(self) -> Sealer:
        if self._sealer is None:
            raise InvalidArgument("this DomS0 does not seal")
        return self._sealer

    @abort_on_refusal
    def Seal(self, request: pb.SealRequest, context: grpc.ServicerContext) -> pb.SealResponse:
        started = time.perf_counter()
        try:     # the secret and auth value are never logged
            self._check(context, Action.SEAL, request.vtpm)
            blob = self._require_sealer().seal(
                request.vtpm, request.secret, seal_policy(request),
                request.auth if request.HasField("auth") else None)
        except SealingError as exc:
            context.abort(*sealing_status(exc))
        finally:
            log_request("api request", started, method="Seal", vtpm=request.vtpm,
                        policy=request.WhichOneof("policy") or "",
                        caller=describe_caller(context))
        return pb.SealResponse(blob_json=blob.to_json())

    @abort_on_refusal
    def Unseal(self, request: pb.UnsealRequest, context: grpc.ServicerContext
               ) -> pb.UnsealResponse:
        started = time.perf_counter()
        try:
            self._check(context, Action.UNSEAL, request.vtpm)
            secret = self._require_sealer().unseal(
                request.vtpm, request.blob_json, request.signed_policy_json,
                request.auth if request.HasField("auth") else None)
        except SealingError as exc:
            context.abort(*sealing_status(exc))
        finally:
            log_request("api request", started, method="Unseal", vtpm=request.vtpm,
                        caller=describe_caller(context))
        return pb.UnsealResponse(secret=secret)

    @abort_on_refusal
    def Build(self, request_iterator: Iterator[pb.BuildRequest],
              context: grpc.ServicerContext) -> pb.BuildResponse:
        started = time.perf_counter()
        upload = receive(request_iterator, self._images)
        header = upload.header
        try:
            if not header.vtpm:
                raise InvalidArgument("the header must name the vTPM (`vtpm`)")
            self._check(context, Action.BUILD, header.vtpm)
            spec = BuildSpec(header.vtpm, header.cmdline, parse_config(header.launch_config_json),
                             header.force, header.create_if_missing, header.engine)
            result = self._finalizer.build(spec, upload.images["kernel"],
                                           upload.images.get("initrd"))
            return pb.BuildResponse(
                manifest_json=result.manifest.dumps(), event_log=result.eventlog,
                qemu_args=list(result.qemu_args), enrollment=result.enrollment,
                vtpm=to_message(result.instance, self._socket_of(result.instance)))
        finally:
            log_request("api request", started, method="Build", vtpm=header.vtpm,
                        caller=describe_caller(context))

    @abort_on_refusal
    def Predict(self, request_iterator: Iterator[pb.BuildRequest],
                context: grpc.ServicerContext) -> pb.PredictResponse:
        self._gate.check(principal_of(context), Action.READ)   # no vTPM: any caller
        upload = receive(request_iterator, self._images)
        manifest = measure_images(upload.images["kernel"], upload.images.get("initrd"),
                                  upload.header.cmdline,
                                  parse_config(upload.header.launch_config_json))
        return pb.PredictResponse(manifest_json=manifest.dumps())

    @abort_on_refusal
    def Quote(self, request: pb.QuoteRequest, context: grpc.ServicerContext
              ) -> pb.QuoteResponse:
        started = time.perf_counter()
        try:
            self._check(context, Action.QUOTE, request.vtpm)
            evidence = self._attestor.quote(request.vtpm, request.nonce,
                                            request.pcr_selection, deep=request.deep)
        finally:
            log_request("api request", started, method="Quote", vtpm=request.vtpm,
                        caller=describe_caller(context))
        selection = "+".join(f"{bank}:{','.join(map(str, pcrs))}"
                             for bank, pcrs in evidence.selection)
        return pb.QuoteResponse(
            vtpm_uuid=evidence.vtpm_uuid, nonce=evidence.nonce, pcr_selection=selection,
            attest=evidence.attest, signature=evidence.signature,
            pcrs=[pb.PcrValue(bank=bank, pcr=pcr, value=evidence.pcr_values[bank][pcr])
                  for bank, pcrs in evidence.selection for pcr in pcrs],
            ak_public_pem=evidence.ak_public_pem.decode(),
            certificates=[pem.decode() for pem in evidence.certificates],
            event_log=evidence.eventlog, deep_quote=_deep_message(evidence.deep_quote))

    @abort_on_refusal
    def GetEventLog(self, request: pb.GetEventLogRequest, context: grpc.ServicerContext
                    ) -> pb.GetEventLogResponse:
        self._check(context, Action.READ, request.vtpm)
        return pb.GetEventLogResponse(event_log=self._attestor.eventlog(request.vtpm))

    @abort_on_refusal
    def GetCertificates(self, request: pb.GetCertificatesRequest,
                        context: grpc.ServicerContext) -> pb.GetCertificatesResponse:
        self._check(context, Action.READ, request.vtpm)
        certs = self._attestor.certificates(request.vtpm)
        return pb.GetCertificatesResponse(
            ek_certificates=[pem.decode() for pem in certs.ek_certificates],
            ak_certificate=certs.ak_certificate.decode(),
            ak_public_pem=certs.ak_public_pem.decode(),
            ca_certificate=certs.ca_certificate.decode())
