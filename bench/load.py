"""``bench load``: many vTPMs, many concurrent clients, one DomS0, fixed time.

Setup: start a DomS0, create ``--clients`` vTPMs on ``--engine`` (created and
started concurrently, then TPM2_Startup each), read DomS0's RSS. Then every client
hammers its own vTPM through gRPC ``Tpm.Transmit``, alternating TPM2_GetRandom(32)
and TPM2_PCR_Extend(16), for ``--seconds``; read DomS0's RSS again.

Client side: ``--procs`` worker processes (spawned, so no gRPC state crosses a
fork), each running its share of the clients as threads, each thread with its own
gRPC channel (own TCP connection, as separate guests' front ends would have).
Python threads share one GIL per process, so more processes lower the client-side
ceiling; the CPU-time split in the report says who used the cores.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier as BarrierType
from typing import Any

import grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.client.channel import open_channel

from .fixtures import (
    RPC_TIMEOUT,
    builtin_unavailable,
    children_of,
    cpu_seconds,
    create_started_vtpm,
    rss_kib,
    running_doms0,
    temp_dir,
    thread_count,
)
from .stats import emit, format_table, percentile
from .tpm_commands import COMMANDS, TPM_RC_SUCCESS, response_code

CREATE_WORKERS = 8
_GET_RANDOM, _PCR_EXTEND = COMMANDS
#: What each client sends, in turn: both commands (the default), or only one of them
#: (to tell a read-only command's cost from a state-changing one's).
MIXES: dict[str, tuple[str, ...]] = {
    "both": (_GET_RANDOM, _PCR_EXTEND),
    "get_random": (_GET_RANDOM,),
    "pcr_extend": (_PCR_EXTEND,),
}


@dataclass
class ClientResult:
    """What one worker process saw: latencies of successful ops, per command."""

    latencies_ns: dict[str, list[int]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0
    elapsed_s: float = 0.0


def _client_thread(address: str, token: str, vtpm: str, seconds: float, mix: str,
                   start: threading.Barrier, result: ClientResult, lock: threading.Lock
                   ) -> None:
    """One client: a channel of its own, the ``mix`` commands in turn until time."""
    commands = [(name, COMMANDS[name]) for name in MIXES[mix]]
    latencies: dict[str, list[int]] = {name: [] for name, _ in commands}
    errors: Counter[str] = Counter()
    channel = open_channel(address, token)
    try:
        transmit = pb_grpc.TpmStub(channel).Transmit
        requests = [(name, pb.TransmitRequest(vtpm=vtpm, command=c)) for name, c in commands]
        try:
            grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT)
        except grpc.FutureTimeoutError:
            errors["channel not ready"] += 1
            requests = []  # still meet the others at the barrier, then stop
        start.wait()
        clock = time.perf_counter_ns
        deadline = clock() + int(seconds * 1e9)
        i = 0
        while requests:
            name, request = requests[i % len(requests)]
            i += 1
            t0 = clock()
            if t0 >= deadline:
                break
            try:
                reply = transmit(request, timeout=RPC_TIMEOUT)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                errors[f"grpc {code.name if code else 'error'}"] += 1
                continue
            rc = response_code(reply.response)
            if rc != TPM_RC_SUCCESS:
                errors[f"tpm rc 0x{rc:x}"] += 1
                continue
            latencies[name].append(clock() - t0)
    finally:
        channel.close()
    with lock:
        for name, values in latencies.items():
            result.latencies_ns.setdefault(name, []).extend(values)
        result.errors.update(errors)


def client_process(address: str, token: str, vtpms: Sequence[str], seconds: float,
                   mix: str, barrier: BarrierType) -> ClientResult:
    """A worker process: one thread per vTPM in ``vtpms``; started together."""
    result = ClientResult()
    lock = threading.Lock()
    start = threading.Barrier(len(vtpms) + 1)
    threads = [threading.Thread(target=_client_thread, daemon=True,
                                args=(address, token, v, seconds, mix, start, result, lock))
               for v in vtpms]
    for thread in threads:
        thread.start()
    barrier.wait()  # every process has its channels ready
    cpu0 = _own_cpu()
    t0 = time.monotonic()
    start.wait()
    for thread in threads:
        thread.join()
    result.elapsed_s = time.monotonic() - t0
    result.cpu_s = _own_cpu() - cpu0
    return result


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _split(items: Sequence[str], parts: int) -> list[list[str]]:
    return [list(items[i::parts]) for i in range(parts) if items[i::parts]]


@dataclass
class Snapshot:
    """DomS0 (and its engine children) as /proc shows them at one moment."""

    rss_kib: int
    children_rss_kib: int
    children: int
    threads: int
    cpu_s: float
    children_cpu_s: float

    @classmethod
    def take(cls, pid: int) -> Snapshot:
        kids = children_of(pid)
        return cls(rss_kib(pid), sum(rss_kib(k) for k in kids), len(kids), thread_count(pid),
                   cpu_seconds(pid), sum(cpu_seconds(k) for k in kids))


def run(args: argparse.Namespace) -> dict[str, Any]:
    with temp_dir("vtpm-bench-load-") as root, \
            running_doms0(root, args.engine, args.doms0_log_level) as doms0:
        assert doms0.proc is not None
        pid = doms0.proc.pid
        idle = Snapshot.take(pid)
        names = [f"load-{i:04d}" for i in range(args.clients)]
        print(f"  creating {len(names)} vTPMs on {args.engine} ...", file=sys.stderr,
              flush=True)
        t_create = time.monotonic()
        with doms0.channel() as channel, ThreadPoolExecutor(CREATE_WORKERS) as pool:
            uuids = list(pool.map(
                lambda n: create_started_vtpm(channel, n, args.engine), names))
        create_s = time.monotonic() - t_create
        time.sleep(0.5)  # let allocator and threads settle before the reading
        before = Snapshot.take(pid)

        procs = max(1, min(args.procs, len(uuids)))
        shares = _split(uuids, procs)
        print(f"  {args.clients} clients in {len(shares)} processes for {args.seconds} s ...",
              file=sys.stderr, flush=True)
        ctx = mp.get_context("spawn")
        with ctx.Manager() as sync, ctx.Pool(len(shares)) as pool:
            barrier = sync.Barrier(len(shares) + 1)
            pending = [pool.apply_async(client_process, (doms0.address, doms0.token, share,
                                                         args.seconds, args.mix, barrier))
                       for share in shares]
            barrier.wait(timeout=120)
            mid = Snapshot.take(pid)
            results = [p.get(timeout=args.seconds + 120) for p in pending]
        after = Snapshot.take(pid)
        log_bytes = doms0.log_path.stat().st_size if doms0.log_path.exists() else 0

    return summarize(args, results, create_s, idle, before, mid, after, log_bytes)


def summarize(args: argparse.Namespace, results: Sequence[ClientResult], create_s: float,
              idle: Snapshot, before: Snapshot, mid: Snapshot,
              after: Snapshot, log_bytes: int) -> dict[str, Any]:
    measured = max(max(r.elapsed_s for r in results), 1e-9)
    per_command: dict[str, list[int]] = {}
    errors: Counter[str] = Counter()
    for r in results:
        for name, values in r.latencies_ns.items():
            per_command.setdefault(name, []).extend(values)
        errors.update(r.errors)
    everything = sorted(v for values in per_command.values() for v in values)
    rows = []
    for name, values in [*per_command.items(), ("all", everything)]:
        ordered = sorted(values)
        rows.append({"command": name, "ops": len(ordered),
                     "ops_per_s": round(len(ordered) / measured, 1),
                     "p50_us": round(percentile(ordered, 0.50), 1),
                     "p99_us": round(percentile(ordered, 0.99), 1)})
    doms0_cpu = after.cpu_s - mid.cpu_s
    ops = len(everything)
    return {
        "benchmark": "load",
        "engine": args.engine,
        "clients": args.clients,
        "client_processes": len(results),
        "seconds": args.seconds,
        "mix": args.mix,
        "measured_s": round(measured, 2),
        "doms0_log_level": args.doms0_log_level,
        "create_s": round(create_s, 2),
        "rows": rows,
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "doms0_rss_kib": {"idle": idle.rss_kib, "start": before.rss_kib,
                          "end": after.rss_kib},
        "engine_children": {"count_start": before.children, "count_end": after.children,
                            "rss_kib_start": before.children_rss_kib,
                            "rss_kib_end": after.children_rss_kib},
        "doms0_threads": {"start": before.threads, "end": after.threads},
        "cpu_s": {"doms0": round(doms0_cpu, 2),
                  "engine_children": round(after.children_cpu_s - mid.children_cpu_s, 2),
                  "clients": round(sum(r.cpu_s for r in results), 2),
                  "available": round(measured * (os.cpu_count() or 1), 2)},
        "doms0_cpu_us_per_op": round(doms0_cpu / ops * 1e6, 1) if ops else None,
        "doms0_log_bytes": log_bytes,
    }


def render(doc: dict[str, Any]) -> str:
    table = format_table(("command", "ops", "ops/s", "p50 µs", "p99 µs"),
                         [(r["command"], r["ops"], r["ops_per_s"], r["p50_us"], r["p99_us"])
                          for r in doc["rows"]])
    rss, kids, cpu = doc["doms0_rss_kib"], doc["engine_children"], doc["cpu_s"]
    lines = [
        f"load: {doc['clients']} clients on {doc['clients']} {doc['engine']} vTPMs, "
        f"{doc['client_processes']} client processes x threads, gRPC Transmit "
        f"(mix {doc['mix']}), "
        f"{doc['measured_s']} s (vTPMs created in {doc['create_s']} s)",
        table,
        f"errors: {doc['errors']} {doc['errors_by_kind'] or ''}".rstrip(),
        f"DomS0 RSS: {rss['idle'] / 1024:.1f} MiB idle, {rss['start'] / 1024:.1f} MiB after "
        f"creating the vTPMs, {rss['end'] / 1024:.1f} MiB at the end; threads "
        f"{doc['doms0_threads']['start']} -> {doc['doms0_threads']['end']}",
    ]
    if kids["count_start"] or kids["count_end"]:
        lines.append(f"engine processes: {kids['count_start']} -> {kids['count_end']}, RSS "
                     f"{kids['rss_kib_start'] / 1024:.1f} -> {kids['rss_kib_end'] / 1024:.1f}"
                     " MiB in total")
    lines.append(f"CPU seconds during the run: DomS0 {cpu['doms0']}, engine processes "
                 f"{cpu['engine_children']}, clients {cpu['clients']} "
                 f"(of {cpu['available']} available); DomS0 CPU per op "
                 f"{doc['doms0_cpu_us_per_op']} µs")
    lines.append(f"DomS0 log grew to {doc['doms0_log_bytes'] / 1e6:.1f} MB "
                 f"(log level {doc['doms0_log_level']})")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.engine == "builtin" and (reason := builtin_unavailable()) is not None:
        print(f"bench load: {reason}; try --engine swtpm", file=sys.stderr)
        return 2
    doc = run(args)
    emit(render(doc), doc, args.json)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("load", help="aggregate ops/s of many concurrent clients")
    p.add_argument("--clients", type=int, default=200, help="clients = vTPMs (default 200)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured time (default 10)")
    p.add_argument("--engine", choices=("builtin", "swtpm"), default="builtin")
    p.add_argument("--mix", choices=tuple(MIXES), default="both",
                   help="commands each client sends in turn (default both)")
    p.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                   help="client worker processes (default: one per CPU)")
    p.add_argument("--doms0-log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="DomS0's --log-level (INFO logs a line per command, as deployed)")
    p.add_argument("--json", metavar="FILE", help="also write JSON to FILE ('-': stdout)")
    p.set_defaults(func=main)
