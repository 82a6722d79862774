"""``vtpmctl migrate``: move vTPMs to another DomS0, with progress.

One vTPM prints its steps; several (or ``--all``) print a progress bar per vTPM and a
summary. A refusal or failure leaves that vTPM live where it was and is reported; the
others go on. Exit 0 only if every vTPM moved.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc

from .errors import EXIT_REFUSED, RPC_TIMEOUT, CliError

MIGRATE_TIMEOUT = 300.0
#: How DomS0 begins every message about a migration that did not happen.
MIGRATION_FAILED = "migration refused or failed"
BAR = 30


def _names(args: argparse.Namespace, stub: pb_grpc.ManagerStub) -> list[str]:
    if args.all:
        listed = stub.ListVtpms(pb.ListVtpmsRequest(), timeout=RPC_TIMEOUT).vtpms
        return [v.name for v in listed if v.state in (pb.VTPM_STATE_RUNNING,
                                                      pb.VTPM_STATE_STOPPED)]
    if not args.names:
        raise CliError("name the vTPMs to migrate, or give --all")
    return list(args.names)


def _bar(index: int, total: int, name: str, percent: int, step: str) -> str:
    done = BAR * percent // 100
    return (f"\r[{index}/{total}] {name:<20.20} [{'#' * done}{'.' * (BAR - done)}] "
            f"{percent:3d}% {step:<9}")


def cmd_migrate(args: argparse.Namespace, channel: grpc.Channel) -> None:
    stub = pb_grpc.ManagerStub(channel)
    names = _names(args, stub)
    batch = len(names) > 1
    failed: list[tuple[str, str]] = []
    for index, name in enumerate(names, 1):
        request = pb.MigrateVtpmRequest(vtpm=name, destination=args.to)
        try:
            for progress in stub.MigrateVtpm(request, timeout=MIGRATE_TIMEOUT):
                _show(progress, index, len(names), name, batch, args.json)
        except grpc.RpcError as exc:
            if not _from_doms0(exc):
                raise                           # DomS0 itself is unreachable: exit 3
            if not batch:
                raise CliError(f"{exc.code().name}: {exc.details()}") from None
            failed.append((name, exc.details() or str(exc.code())))
            print(f"\n{name}: {exc.details()}", file=sys.stderr)
    if batch:
        print(f"\nmigrated {len(names) - len(failed)} of {len(names)} vTPM(s) to {args.to}")
    if failed:
        raise CliError(f"{len(failed)} vTPM(s) not migrated: "
                       f"{', '.join(name for name, _ in failed)}", EXIT_REFUSED)


def _from_doms0(exc: grpc.RpcError) -> bool:
    """True when DomS0 answered (a refusal, or a destination it could not reach), as
    opposed to DomS0 itself being out of reach."""
    return exc.code() != grpc.StatusCode.UNAVAILABLE or \
        MIGRATION_FAILED in (exc.details() or "")


def _show(progress: Any, index: int, total: int, name: str, batch: bool,
          as_json: bool) -> None:
    if as_json:
        print(f'{{"vtpm": "{name}", "step": "{progress.step}", '
              f'"percent": {progress.percent}}}')
    elif batch:
        print(_bar(index, total, name, progress.percent, progress.step), end="", flush=True)
    else:
        print(f"[{progress.percent:3d}%] {progress.step}: {progress.message}", flush=True)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("migrate", help="move vTPMs to another DomS0 (its migration "
                       "listener); the destination proves itself with its host TPM first")
    p.add_argument("names", nargs="*", metavar="NAME", help="vTPM names or UUIDs")
    p.add_argument("--to", required=True, metavar="HOST:PORT",
                   help="the destination DomS0's migration listener")
    p.add_argument("--all", action="store_true", help="every vTPM that is live here")
    p.add_argument("--json", action="store_true", help="one JSON line per step")
