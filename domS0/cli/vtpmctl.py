"""vtpmctl: the command-line client of DomS0.

Every failure is one line on stderr and a non-zero exit: 1 for a refusal by DomS0
or a bad argument, 2 for bad usage, 3 when DomS0 cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf import json_format

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.client.channel import (
    CredentialError,
    certificate_refusal,
    certificate_required,
    connect,
    default_server,
    load_tls,
    speaks_tls,
)

from . import measured, migrate, sealing, security
from .errors import EXIT_REFUSED, EXIT_UNREACHABLE, RPC_TIMEOUT, CliError


def _vtpm_dict(vtpm: pb.Vtpm) -> dict[str, Any]:
    return json_format.MessageToDict(vtpm, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _state(vtpm: pb.Vtpm) -> str:
    return pb.VtpmState.Name(vtpm.state).removeprefix("VTPM_STATE_").lower()


def _print_vtpm(vtpm: pb.Vtpm, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_vtpm_dict(vtpm), indent=2, sort_keys=True))
        return
    print(f"name:           {vtpm.name}")
    print(f"uuid:           {vtpm.uuid}")
    print(f"engine:         {vtpm.engine}")
    print(f"state:          {_state(vtpm)}")
    print(f"holder:         {vtpm.holder or '-'}")
    print(f"control socket: {vtpm.control_socket or '-'}")
    for key, value in sorted(vtpm.metadata.items()):
        print(f"metadata:       {key}={value}")
    if vtpm.HasField("migration"):
        m = vtpm.migration
        where = {"migrated": "moved to", "outgoing": "being migrated to",
                 "incoming": "arriving from"}.get(m.state, m.state)
        print(f"migration:      {where} {m.peer_host} ({m.peer_address}), migration "
              f"{m.generation}")


def _parse_metadata(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--meta expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def cmd_create(args: argparse.Namespace, channel: grpc.Channel) -> None:
    stub = pb_grpc.ManagerStub(channel)
    vtpm = stub.CreateVtpm(pb.CreateVtpmRequest(
        name=args.name, engine=args.engine or "", metadata=_parse_metadata(args.meta),
        start=not args.stopped and not args.incoming, incoming_uuid=args.incoming or ""),
        timeout=RPC_TIMEOUT)
    _print_vtpm(vtpm, args.json)


def cmd_list(args: argparse.Namespace, channel: grpc.Channel) -> None:
    vtpms = pb_grpc.ManagerStub(channel).ListVtpms(pb.ListVtpmsRequest(),
                                                  timeout=RPC_TIMEOUT).vtpms
    if args.json:
        print(json.dumps([_vtpm_dict(v) for v in vtpms], indent=2, sort_keys=True))
        return
    print(f"{'NAME':<24} {'UUID':<36} {'ENGINE':<8} {'STATE':<8} HOLDER")
    for v in vtpms:
        print(f"{v.name:<24} {v.uuid:<36} {v.engine:<8} {_state(v):<8} {v.holder or '-'}")


def cmd_show(args: argparse.Namespace, channel: grpc.Channel) -> None:
    vtpm = pb_grpc.ManagerStub(channel).GetVtpm(pb.GetVtpmRequest(vtpm=args.name),
                                               timeout=RPC_TIMEOUT)
    _print_vtpm(vtpm, args.json)


def cmd_delete(args: argparse.Namespace, channel: grpc.Channel) -> None:
    pb_grpc.ManagerStub(channel).DeleteVtpm(pb.DeleteVtpmRequest(vtpm=args.name),
                                           timeout=RPC_TIMEOUT)
    print(f"deleted {args.name}")


def cmd_start_or_stop(args: argparse.Namespace, channel: grpc.Channel) -> None:
    stub = pb_grpc.ManagerStub(channel)
    if args.command == "start":
        vtpm = stub.StartVtpm(pb.StartVtpmRequest(vtpm=args.name), timeout=RPC_TIMEOUT)
    else:
        vtpm = stub.StopVtpm(pb.StopVtpmRequest(vtpm=args.name), timeout=RPC_TIMEOUT)
    _print_vtpm(vtpm, args.json)


def cmd_transmit(args: argparse.Namespace, channel: grpc.Channel) -> None:
    text = "".join(args.hex).replace(" ", "")
    if text == "-":
        text = "".join(sys.stdin.read().split())
    try:
        command = bytes.fromhex(text)
    except ValueError:
        raise CliError("the command must be hexadecimal, e.g. 80010000000c000001430000 "
                       "... (spaces allowed)") from None
    response = pb_grpc.TpmStub(channel).Transmit(
        pb.TransmitRequest(vtpm=args.name, command=command, locality=args.locality),
        timeout=RPC_TIMEOUT)
    print(response.response.hex())


def cmd_attach(args: argparse.Namespace, channel: grpc.Channel) -> None:
    from domS0.client.attach import AttachLink, LinkError
    from domS0.frontends.swtpm_socket import attach_server, parse_swtpm_address

    try:
        data, control = parse_swtpm_address(args.swtpm)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    link = AttachLink(channel, args.name, f"vtpmctl attach pid {os.getpid()} on {args.swtpm}")
    try:
        link.open()
    except LinkError as exc:
        raise CliError(str(exc), EXIT_UNREACHABLE if exc.code ==
                       grpc.StatusCode.UNAVAILABLE else EXIT_REFUSED) from None
    try:
        front = attach_server(link, data, control, args.name)
    except OSError as exc:
        link.close()
        raise CliError(str(exc)) from None
    if data.path:
        where = (f"swtpm data {data.path}, control {control.path}; "
                 f"TPM2TOOLS_TCTI=swtpm:path={data.path}")
    else:
        host, port = front.data_address
        where = (f"swtpm data {host}:{port}, control {host}:{port + 1}; "
                 f"TPM2TOOLS_TCTI=swtpm:host={host},port={port}")
    print(f"attached {args.name}: {where}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: front.stop())
    try:
        front.serve_forever()
    except KeyboardInterrupt:
        front.stop()
    finally:
        link.close()


COMMANDS: dict[str, Callable[[argparse.Namespace, grpc.Channel], None]] = {
    "create": cmd_create, "list": cmd_list, "show": cmd_show, "delete": cmd_delete,
    "start": cmd_start_or_stop, "stop": cmd_start_or_stop, "transmit": cmd_transmit,
    "attach": cmd_attach, "build": measured.cmd_build, "quote": measured.cmd_quote,
    "certs": measured.cmd_certs, "eventlog": measured.cmd_eventlog,
    "seal": sealing.cmd_seal, "unseal": sealing.cmd_unseal, "migrate": migrate.cmd_migrate,
    "label": security.cmd_label, "group": security.cmd_group,
}
#: Commands that never talk to DomS0 (no token, no channel).
LOCAL_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "predict": measured.cmd_predict, "verify": measured.cmd_verify,
    "policy": sealing.cmd_policy,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtpmctl", description="Manage and use vTPMs "
                                     "served by DomS0.")
    parser.add_argument("--server", default=default_server(),
                        help="DomS0 address, HOST:PORT or unix:PATH (default $VTPM_SERVER "
                        "or 127.0.0.1:7340)")
    parser.add_argument("--cert", help="client certificate from `doms0 issue` for a "
                        "mutual-TLS DomS0 (default $VTPM_CERT)")
    parser.add_argument("--key", help="its private key (default $VTPM_KEY)")
    parser.add_argument("--ca", help="DomS0's callers CA certificate (default $VTPM_CA, "
                        "else ca.pem beside --cert)")
    parser.add_argument("--token-file", help="client token for an --insecure-loopback "
                        "DomS0 (default $VTPM_TOKEN_FILE or /var/lib/doms0/client.token)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, with_name: bool = True,
            with_json: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        if with_name:
            p.add_argument("name", help="vTPM name or UUID")
        if with_json:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    p = add("create", "create a vTPM (started unless --stopped)")
    p.add_argument("--engine", choices=("builtin", "swtpm", "passthrough"),
                   help="default: DomS0's; passthrough needs doms0 serve --passthrough-tcti")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stopped", action="store_true", help="create without starting")
    p.add_argument("--incoming", metavar="UUID", help="no new TPM: a placeholder for the "
                   "vTPM with this UUID arriving in QEMU's migration stream")
    add("list", "list vTPMs", with_name=False)
    add("show", "show one vTPM")
    add("delete", "delete a vTPM and its state", with_json=False)
    add("start", "start a vTPM")
    add("stop", "stop a vTPM (state is kept)")
    p = add("transmit", "send one TPM command (hex) and print the response (hex)",
            with_json=False)
    p.add_argument("hex", nargs="+", help="command bytes in hex, or - for stdin")
    p.add_argument("--locality", type=int, default=0, choices=range(5))
    p = add("attach", "serve a vTPM on swtpm-compatible TCP sockets", with_json=False)
    p.add_argument("--swtpm", required=True, metavar="HOST:PORT|unix:PATH",
                   help="data port (control on PORT+1), or a Unix socket PATH (control "
                   "on PATH.ctrl, mode 0600)")
    measured.add_parsers(sub)
    sealing.add_parsers(sub)
    migrate.add_parser(sub)
    security.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "seal" and args.ek:      # offline: an import blob, no DomS0
        try:
            return sealing.cmd_seal_offline(args)
        except CliError as exc:
            print(f"vtpmctl: {exc}", file=sys.stderr)
            return exc.code
    local = LOCAL_COMMANDS.get(args.command)
    if args.command == "group" and args.group_command == "sign":
        local = security.cmd_group_sign          # signing needs only the private key
    if local is not None:
        try:
            return local(args)
        except CliError as exc:
            print(f"vtpmctl: {exc}", file=sys.stderr)
            return exc.code
    try:
        channel = connect(args.server, args.token_file, args.cert, args.key, args.ca)
        try:
            COMMANDS[args.command](args, channel)
        finally:
            channel.close()
        return 0
    except CredentialError as exc:
        print(f"vtpmctl: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except CliError as exc:
        print(f"vtpmctl: {exc}", file=sys.stderr)
        return exc.code
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            refused = _tls_refusal(args)
            if refused:
                print(f"vtpmctl: {refused}", file=sys.stderr)
                return EXIT_REFUSED
            print(f"vtpmctl: cannot reach DomS0 at {args.server}: {details}", file=sys.stderr)
            return EXIT_UNREACHABLE
        name = code.name if code else "ERROR"
        print(f"vtpmctl: {name}: {details}", file=sys.stderr)
        return EXIT_REFUSED


def _tls_refusal(args: argparse.Namespace) -> str | None:
    """When a call could not get through: was it DomS0's TLS refusing us (no
    certificate, or one it does not accept) rather than DomS0 being away?"""
    if args.server.startswith("unix:"):
        return None
    try:
        tls = load_tls(args.cert, args.key, args.ca)
    except CredentialError:
        return None
    if tls is None:
        return certificate_required(args.server) if speaks_tls(args.server) else None
    reason = certificate_refusal(args.server, tls)
    if reason is None:
        return None
    return (f"UNAUTHENTICATED: DomS0 at {args.server} refused the client certificate "
            f"{tls.cert} ({reason}); use one from `doms0 issue` on that DomS0")


if __name__ == "__main__":
    sys.exit(main())
