"""``bench transmit``: one client, one command at a time, through every path.

Paths, each measured for TPM2_GetRandom(32) and TPM2_PCR_Extend(16, SHA-256,
password session), all in one run:

========================  ==========================================================
``inproc-builtin``        ``BuiltinEngine.execute`` with raw bytes, in this process
``inproc-swtpm``          ``SwtpmEngine.execute`` (swtpm over a Unix socket), extra
``grpc-floor``            gRPC health check to the same DomS0: no TPM work, extra
``grpc-transmit-*``       gRPC ``Tpm.Transmit`` to a DomS0 vTPM on that engine
``esapi-grpctcti-*``      tpm2-pytss ESAPI over ``GrpcTcti`` (gRPC Attach), extra
``esapi-attach-*``        ESAPI → ``swtpm:`` TCTI → ``vtpmctl attach`` → gRPC Attach
``esapi-swtpm-plain``     ESAPI → ``swtpm:`` TCTI → a plain ``swtpm socket``
========================  ==========================================================

The in-process and gRPC rows send hand-built bytes; the ESAPI rows pay for
tpm2-pytss (marshalling, and the swtpm TCTI's own exchanges) as a real client does.
A row is a single client in a closed loop, so ops/s is 1 / mean latency.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.harness import AttachProcess, Doms0Process

from .fixtures import (
    RPC_TIMEOUT,
    PlainSwtpm,
    builtin_unavailable,
    create_started_vtpm,
    running_doms0,
    temp_dir,
)
from .stats import Row, emit, format_table, rows_as_json
from .tpm_commands import COMMANDS, EXTEND_DIGEST, check_success, startup_clear

DEFAULT_N = 2000
DEFAULT_WARMUP = 200

#: One benchmark operation: run the command once, raise if it did not succeed.
Op = Callable[[], object]


@dataclass(frozen=True)
class Route:
    """A way to reach a TPM: its row name and an operation per command name."""

    name: str
    ops: dict[str, Op]


def measure(route: Route, n: int, warmup: int) -> list[Row]:
    """Warm each command up, then time ``n`` sequential calls of it."""
    rows = []
    for command, op in route.ops.items():
        for _ in range(warmup):
            op()
        samples = [0] * n
        clock = time.perf_counter_ns
        wall_start = clock()
        for i in range(n):
            t0 = clock()
            op()
            samples[i] = clock() - t0
        wall = (clock() - wall_start) / 1e9
        rows.append(Row.from_samples(route.name, command, samples, wall))
    return rows


# -- the paths ------------------------------------------------------------------------

def raw_ops(execute: Callable[[bytes], bytes], where: str) -> dict[str, Op]:
    """Ops that send the prebuilt command bytes through ``execute``."""

    def op_for(name: str, command: bytes) -> Op:
        return lambda: check_success(execute(command), f"{name} via {where}")

    return {name: op_for(name, command) for name, command in COMMANDS.items()}


@contextlib.contextmanager
def inproc_engine(engine_name: str, run_dir: Path) -> Iterator[Route]:
    """An engine object in this process, fresh and started up."""
    from vtpm_manager.engines import make_engine

    engine = make_engine(engine_name, run_dir)
    try:
        engine.start(None)
        check_success(engine.execute(startup_clear(), 0), "TPM2_Startup")
        yield Route(f"inproc-{engine_name}", raw_ops(lambda c: engine.execute(c, 0),
                                                      f"{engine_name} in-process"))
    finally:
        engine.stop()


@contextlib.contextmanager
def grpc_transmit(doms0: Doms0Process, uuid: str, engine_name: str) -> Iterator[Route]:
    channel = doms0.channel()
    try:
        stub = pb_grpc.TpmStub(channel)

        def execute(command: bytes) -> bytes:
            request = pb.TransmitRequest(vtpm=uuid, command=command)
            return bytes(stub.Transmit(request, timeout=RPC_TIMEOUT).response)

        yield Route(f"grpc-transmit-{engine_name}", raw_ops(execute, "gRPC Transmit"))
    finally:
        channel.close()


@contextlib.contextmanager
def grpc_floor(doms0: Doms0Process) -> Iterator[Route]:
    """A gRPC unary call that does no TPM work at all (health check): the floor under
    every ``grpc-transmit-*`` row, from the same client to the same server."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = doms0.channel()
    try:
        check = health_pb2_grpc.HealthStub(channel).Check
        request = health_pb2.HealthCheckRequest(service="")
        yield Route("grpc-floor", {"Health.Check (no TPM)":
                                   lambda: check(request, timeout=RPC_TIMEOUT)})
    finally:
        channel.close()


def esapi_ops(esapi: Any) -> dict[str, Op]:
    from tpm2_pytss import ESYS_TR, TPM2_ALG, TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

    digests = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256,
                                                   digest=TPMU_HA(sha256=EXTEND_DIGEST))])
    names = list(COMMANDS)
    return {
        names[0]: lambda: esapi.get_random(32),
        names[1]: lambda: esapi.pcr_extend(ESYS_TR.PCR16, digests),
    }


@contextlib.contextmanager
def esapi_over_swtpm_tcti(name: str, conf: str) -> Iterator[Route]:
    """tpm2-pytss ESAPI on the ``swtpm:`` TCTI at ``conf``."""
    from tpm2_pytss import ESAPI, TCTILdr

    tcti = TCTILdr("swtpm", conf)
    try:
        esapi = ESAPI(tcti)
        try:
            yield Route(name, esapi_ops(esapi))
        finally:
            esapi.close()
    finally:
        tcti.close()


@contextlib.contextmanager
def esapi_over_grpc_tcti(doms0: Doms0Process, uuid: str, engine_name: str) -> Iterator[Route]:
    from tpm2_pytss import ESAPI

    from domS0.client.tcti import GrpcTcti

    tcti = GrpcTcti(doms0.address, uuid, doms0.token)
    try:
        esapi = ESAPI(tcti)
        try:
            yield Route(f"esapi-grpctcti-{engine_name}", esapi_ops(esapi))
        finally:
            esapi.close()
    finally:
        tcti.finalize()


@contextlib.contextmanager
def esapi_attach(doms0: Doms0Process, uuid: str, engine_name: str) -> Iterator[Route]:
    attach = AttachProcess(doms0, uuid)
    try:
        attach.start()
        conf = attach.tcti.removeprefix("swtpm:")
        with esapi_over_swtpm_tcti(f"esapi-attach-{engine_name}", conf) as path:
            yield path
    finally:
        attach.stop()


@contextlib.contextmanager
def esapi_plain_swtpm(root: Path) -> Iterator[Route]:
    swtpm = PlainSwtpm(root / "swtpm-plain")
    try:
        swtpm.start()
        with esapi_over_swtpm_tcti("esapi-swtpm-plain", swtpm.tcti_conf) as path:
            yield path
    finally:
        swtpm.stop()


# -- the run --------------------------------------------------------------------------

def run(n: int, warmup: int, doms0_log_level: str) -> tuple[list[Row], dict[str, str]]:
    """Measure every path that can run here; returns rows and {path: why skipped}."""
    engines = ["builtin", "swtpm"]
    skipped: dict[str, str] = {}
    reason = builtin_unavailable()
    if reason is not None:
        engines.remove("builtin")
        for path in ("inproc-builtin", "grpc-transmit-builtin", "esapi-grpctcti-builtin",
                     "esapi-attach-builtin"):
            skipped[path] = reason
    rows: list[Row] = []

    def take(context: contextlib.AbstractContextManager[Route]) -> None:
        with context as route:
            print(f"  measuring {route.name} ...", file=sys.stderr, flush=True)
            rows.extend(measure(route, n, warmup))

    with temp_dir("vtpm-bench-transmit-") as root:
        for engine in engines:
            take(inproc_engine(engine, root / f"inproc-{engine}"))
        with running_doms0(root, "swtpm", doms0_log_level) as doms0:
            with doms0.channel() as channel:
                uuids = {e: create_started_vtpm(channel, f"bench-{e}", e) for e in engines}
            take(grpc_floor(doms0))
            for engine in engines:
                take(grpc_transmit(doms0, uuids[engine], engine))
            for engine in engines:
                take(esapi_over_grpc_tcti(doms0, uuids[engine], engine))
            for engine in engines:
                take(esapi_attach(doms0, uuids[engine], engine))
        take(esapi_plain_swtpm(root))
    return rows, skipped


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rows, skipped = run(args.n, args.warmup, args.doms0_log_level)
    elapsed = time.monotonic() - started
    table = format_table(
        ("path", "command", "n", "p50 µs", "p99 µs", "ops/s"),
        [(r.path, r.command, r.n, r.p50_us, r.p99_us, r.ops_per_s) for r in rows],
    )
    notes = [f"skipped {path}: {why}" for path, why in skipped.items()]
    notes.append(f"single client, sequential; warm-up {args.warmup} per command; "
                 f"DomS0 log level {args.doms0_log_level}; run took {elapsed:.1f} s")
    document = {"benchmark": "transmit", "warmup": args.warmup,
                "doms0_log_level": args.doms0_log_level, "rows": rows_as_json(rows),
                "skipped": skipped}
    emit(table + "\n" + "\n".join(notes), document, args.json)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("transmit", help="latency and ops/s of one client through each path")
    p.add_argument("--n", type=int, default=DEFAULT_N, help="timed calls per command and "
                   f"path (default {DEFAULT_N})")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                   help=f"untimed calls first (default {DEFAULT_WARMUP})")
    p.add_argument("--doms0-log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="DomS0's --log-level (INFO logs a line per command, as deployed)")
    p.add_argument("--json", metavar="FILE", help="also write JSON to FILE ('-': stdout)")
    p.set_defaults(func=main)
