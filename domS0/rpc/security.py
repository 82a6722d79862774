"""The vtpm.v1 Security service: the ACM policy, labels and approval groups.

Each call passes its own hook first — policy_load, label_change, or read — so with the
dummy module only administrators change anything. A change drops every cached
decision (and a policy load reorders the modules when its primary component differs).
"""

from __future__ import annotations

import time

import grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.logs import log_request
from vtpm_manager.errors import InvalidArgument

from ..security.acm.policy import describe
from ..security.groups import ApprovalList, Group, fingerprint
from ..security.hooks import Action
from ..security.setup import Security
from ..security.store import LABEL_KINDS
from .auth import describe_caller
from .status import abort_on_refusal


def _group_message(group: Group) -> pb.GroupInfo:
    return pb.GroupInfo(name=group.name, sequence=group.sequence,
                        measurements=[m.hex() for m in group.measurements],
                        approval_key_fingerprint=fingerprint(group.key_pem))


class SecurityServicer(pb_grpc.SecurityServicer):
    def __init__(self, security: Security) -> None:
        self._security = security
        self._gate = security.gate

    def _policy_info(self) -> pb.PolicyInfo:
        acm, server = self._security.acm, self._gate.server
        info = pb.PolicyInfo(loaded=acm.policy is not None,
                             modules=", ".join(m.name for m in server.modules),
                             permissive=server.permissive, digest=acm.digest.hex())
        if acm.policy is not None:
            info.name, info.version = acm.policy.name, acm.policy.version
            info.summary = describe(acm.policy)
        return info

    def _logged(self, method: str, context: grpc.ServicerContext, started: float,
                **fields: str) -> None:
        log_request("api request", started, method=method, caller=describe_caller(context),
                    **fields)

    @abort_on_refusal
    def LoadPolicy(self, request: pb.LoadPolicyRequest, context: grpc.ServicerContext
                   ) -> pb.PolicyInfo:
        started = time.perf_counter()
        name = ""
        try:
            self._gate.check_call(context, Action.POLICY_LOAD)
            name = self._security.acm.load(request.compiled).name
            self._security.rebuild()
            return self._policy_info()
        finally:
            self._logged("LoadPolicy", context, started, policy=name)

    @abort_on_refusal
    def GetPolicy(self, request: pb.GetPolicyRequest, context: grpc.ServicerContext
                  ) -> pb.PolicyInfo:
        self._gate.check_call(context, Action.READ)
        return self._policy_info()

    @abort_on_refusal
    def SetLabel(self, request: pb.SetLabelRequest, context: grpc.ServicerContext
                 ) -> pb.LabelsResponse:
        started = time.perf_counter()
        try:
            self._gate.check_call(context, Action.LABEL_CHANGE)
            if request.kind not in LABEL_KINDS or not request.name:
                raise InvalidArgument("a label goes on `dom NAME` (a domain) or `res NAME` "
                                      "(a vTPM)")
            policy = self._security.acm.policy
            if request.label and policy is not None:
                known = policy.subject_labels if request.kind == "dom" \
                    else policy.object_labels
                if request.label not in known:
                    raise InvalidArgument(
                        f"policy {policy.name} has no {request.kind} label "
                        f"{request.label!r}; it has: {', '.join(sorted(known)) or 'none'}")
            self._security.acm.labels.set(request.kind, request.name, request.label or None)
            self._gate.server.invalidate()
            return self._labels()
        finally:
            self._logged("SetLabel", context, started, kind=request.kind, name=request.name,
                         label=request.label)

    @abort_on_refusal
    def ListLabels(self, request: pb.ListLabelsRequest, context: grpc.ServicerContext
                   ) -> pb.LabelsResponse:
        self._gate.check_call(context, Action.READ)
        return self._labels()

    def _labels(self) -> pb.LabelsResponse:
        labels = self._security.acm.labels.all()
        return pb.LabelsResponse(labels=[pb.Label(kind=kind, name=name, label=label)
                                         for kind in LABEL_KINDS
                                         for name, label in sorted(labels[kind].items())])

    @abort_on_refusal
    def CreateGroup(self, request: pb.CreateGroupRequest, context: grpc.ServicerContext
                    ) -> pb.GroupInfo:
        started = time.perf_counter()
        try:
            self._gate.check_call(context, Action.POLICY_LOAD)
            group = self._security.groups.create(request.name,
                                                 request.approval_public_key_pem)
            self._gate.server.invalidate()
            return _group_message(group)
        finally:
            self._logged("CreateGroup", context, started, group=request.name)

    @abort_on_refusal
    def LoadApprovalList(self, request: pb.LoadApprovalListRequest,
                         context: grpc.ServicerContext) -> pb.GroupInfo:
        started = time.perf_counter()
        try:
            self._gate.check_call(context, Action.POLICY_LOAD)
            group = self._security.groups.load_list(ApprovalList.from_json(request.list_json))
            self._gate.server.invalidate()
            return _group_message(group)
        finally:
            self._logged("LoadApprovalList", context, started)

    @abort_on_refusal
    def ListGroups(self, request: pb.ListGroupsRequest, context: grpc.ServicerContext
                   ) -> pb.ListGroupsResponse:
        self._gate.check_call(context, Action.READ)
        return pb.ListGroupsResponse(groups=[_group_message(g)
                                             for g in self._security.groups.all()])
