"""``vtpmctl policy make|load|show``, ``vtpmctl label …``, ``vtpmctl group …``:
the access-control policy, labels and approval groups.

``policy make`` and ``group sign`` run locally (compile an sHype XML policy; sign an
approval list with the group's key); the others ask DomS0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.client.channel import CredentialError, connect
from domS0.security.acm.policy import AcmPolicyError, compile, describe, digest, parse_xml
from domS0.security.groups import sign_list
from domS0.security.store import LABEL_KINDS

from .errors import EXIT_UNREACHABLE, RPC_TIMEOUT, CliError

ACM_POLICY_COMMANDS = ("make", "load", "show")


def add_policy_parsers(policy: Any) -> None:
    """``make``, ``load``, ``show`` beside the sealing ``policy`` subcommands."""
    q = policy.add_parser("make", help="compile an sHype ACM policy (XML) for policy load")
    q.add_argument("file", metavar="POLICY.xml")
    q.add_argument("--out", metavar="POLICY.acm", help="default: POLICY.acm beside it")
    q = policy.add_parser("load", help="load a compiled (or XML) ACM policy into DomS0; "
                          "refused, with the violations, if it breaks what runs")
    q.add_argument("file", metavar="POLICY.acm|POLICY.xml")
    q = policy.add_parser("show", help="the active ACM policy and security modules")
    q.add_argument("--json", action="store_true")


def cmd_acm_policy(args: argparse.Namespace) -> int:
    try:
        return _acm_policy(args)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise CliError(f"cannot reach DomS0 at {args.server}: {details}",
                           EXIT_UNREACHABLE) from None
        raise CliError(f"{code.name if code else 'ERROR'}: {details}") from None


def _acm_policy(args: argparse.Namespace) -> int:
    if args.policy_command == "make":
        policy = _parse(Path(args.file))
        out = Path(args.out) if args.out else Path(args.file).with_suffix(".acm")
        out.write_bytes(compile(policy))
        print(f"compiled policy {policy.name} {policy.version} (digest "
              f"{digest(policy).hex()}) -> {out}")
        print(describe(policy))
        return 0
    stub = pb_grpc.SecurityStub(_channel(args))
    if args.policy_command == "load":
        path = Path(args.file)
        data = _read(path)
        compiled = compile(_parse(path)) if data.lstrip().startswith(b"<") else data
        info = stub.LoadPolicy(pb.LoadPolicyRequest(compiled=compiled), timeout=RPC_TIMEOUT)
        print(f"loaded policy {info.name} {info.version} (digest {info.digest})")
        return 0
    info = stub.GetPolicy(pb.GetPolicyRequest(), timeout=RPC_TIMEOUT)
    if args.json:
        print(json.dumps(json_format.MessageToDict(info, preserving_proto_field_name=True),
                         indent=2, sort_keys=True))
    elif not info.loaded:
        print(f"no ACM policy loaded; modules: {info.modules}"
              f"{' (permissive)' if info.permissive else ''}")
    else:
        print(f"policy {info.name} {info.version}, digest {info.digest}; modules: "
              f"{info.modules}{' (permissive)' if info.permissive else ''}")
        print(info.summary)
    return 0


def cmd_label(args: argparse.Namespace, channel: grpc.Channel) -> None:
    stub = pb_grpc.SecurityStub(channel)
    if args.label_command == "list":
        labels = stub.ListLabels(pb.ListLabelsRequest(), timeout=RPC_TIMEOUT).labels
    else:
        request = pb.SetLabelRequest(kind=args.kind, name=args.name,
                                     label=args.label if args.label_command == "add" else "")
        labels = stub.SetLabel(request, timeout=RPC_TIMEOUT).labels
    if getattr(args, "json", False):
        print(json.dumps([{"kind": lb.kind, "name": lb.name, "label": lb.label}
                          for lb in labels], indent=2))
        return
    for lb in labels:
        print(f"{lb.kind:<4} {lb.name:<24} {lb.label}")


def cmd_group(args: argparse.Namespace, channel: grpc.Channel) -> None:
    stub = pb_grpc.SecurityStub(channel)
    if args.group_command == "create":
        info = stub.CreateGroup(pb.CreateGroupRequest(
            name=args.name, approval_public_key_pem=_read(Path(args.approval_key)).decode()),
            timeout=RPC_TIMEOUT)
        print(f"group {info.name}: approval key {info.approval_key_fingerprint}")
        return
    if args.group_command == "load":
        info = stub.LoadApprovalList(pb.LoadApprovalListRequest(
            list_json=_read(Path(args.file)).decode()), timeout=RPC_TIMEOUT)
        print(f"group {info.name}: approval list {info.sequence} "
              f"({len(info.measurements)} measurement(s))")
        return
    for info in stub.ListGroups(pb.ListGroupsRequest(), timeout=RPC_TIMEOUT).groups:
        print(f"{info.name:<20} list {info.sequence:<4} key {info.approval_key_fingerprint} "
              f"measurements {', '.join(m[:16] + '…' for m in info.measurements) or '-'}")


def cmd_group_sign(args: argparse.Namespace) -> int:
    """Local: sign an approval list with the group's private key."""
    try:
        key = serialization.load_pem_private_key(_read(Path(args.approval_key)), None)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{args.approval_key}: not an unencrypted PEM private key ({exc})"
                       ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CliError(f"{args.approval_key}: approval keys are ECDSA P-256 or P-384")
    try:
        measurements = [bytes.fromhex(m) for m in args.measurement]
    except ValueError:
        raise CliError("--measurement takes a SHA-256 digest in hex (doms0 hosts measure)"
                       ) from None
    if args.sequence < 1 or any(len(m) != 32 for m in measurements):
        raise CliError("--sequence is at least 1; measurements are 64 hex digits")
    signed = sign_list(key, args.group, args.sequence, measurements)
    Path(args.out).write_text(signed.to_json())
    print(f"approval list {args.sequence} for group {args.group} "
          f"({len(measurements)} measurement(s)) -> {args.out}")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("label", help="sHype labels: a domain's (dom) or a vTPM's (res)")
    labels = p.add_subparsers(dest="label_command", required=True)
    q = labels.add_parser("add", help="label a domain or a vTPM")
    q.add_argument("label")
    q.add_argument("kind", choices=LABEL_KINDS)
    q.add_argument("name")
    q = labels.add_parser("rm", help="remove a label")
    q.add_argument("kind", choices=LABEL_KINDS)
    q.add_argument("name")
    q = labels.add_parser("list", help="every label")
    q.add_argument("--json", action="store_true")
    p = sub.add_parser("group", help="approval groups and their signed measurement lists")
    groups = p.add_subparsers(dest="group_command", required=True)
    q = groups.add_parser("create", help="a group bound to an approval public key")
    q.add_argument("name")
    q.add_argument("--key", dest="approval_key", required=True, metavar="APPROVAL_PUB.pem")
    q = groups.add_parser("sign", help="sign an approval list (local, with the private key)")
    q.add_argument("--key", dest="approval_key", required=True, metavar="APPROVAL.pem")
    q.add_argument("--group", required=True)
    q.add_argument("--sequence", required=True, type=int)
    q.add_argument("--measurement", action="append", default=[], metavar="HEX")
    q.add_argument("--out", required=True, metavar="LIST.json")
    q = groups.add_parser("load", help="load a signed approval list (a newer one only)")
    q.add_argument("file", metavar="LIST.json")
    groups.add_parser("list", help="the groups and their latest lists")


def _parse(path: Path) -> Any:
    try:
        return parse_xml(_read(path))
    except AcmPolicyError as exc:
        raise CliError(f"{path}: {exc}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def _channel(args: argparse.Namespace) -> grpc.Channel:
    try:
        return connect(args.server, args.token_file, args.cert, args.key, args.ca)
    except CredentialError as exc:
        raise CliError(str(exc)) from None
