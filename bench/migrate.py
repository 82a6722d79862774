"""``bench migrate``: how long a vTPM migration between two DomS0s on loopback takes.

Two DomS0 hosts, each with its own swtpm as host TPM and a certificate from one hosts
CA (:class:`domS0.harness.MigrationNode`). Rows:

- ``one``: one ``MigrateVtpm`` call, end to end as the operator sees it — mutual TLS
  connect, the destination's host-TPM quote and its check, quiesce and export, ECDH +
  AES-GCM package, transfer, durable pending copy, tombstone, commit and activation.
  The same vTPM goes back and forth, ``--n`` times.
- ``batch``: ``--batch`` vTPMs migrated one after another (as ``vtpmctl migrate --all``
  does); the figure is the wall time for all of them, and per vTPM.

Figures only; nothing here passes or fails on time. Goal: p50 of ``one`` <= 100 ms.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.client.channel import open_channel
from domS0.harness import Doms0Process, MigrationNode, create_hosts_ca

from .fixtures import temp_dir
from .stats import emit, format_table, percentile

GOAL_MS = 100.0


def _migrate(doms0: Doms0Process, name: str, destination: str) -> int:
    """One migration; returns its duration in ns."""
    with open_channel(doms0.address, doms0.token) as channel:
        stub = pb_grpc.ManagerStub(channel)
        started = time.perf_counter_ns()
        for _ in stub.MigrateVtpm(pb.MigrateVtpmRequest(vtpm=name, destination=destination),
                                  timeout=120):
            pass
        return time.perf_counter_ns() - started


def _create(doms0: Doms0Process, names: list[str], engine: str) -> None:
    with open_channel(doms0.address, doms0.token) as channel:
        stub = pb_grpc.ManagerStub(channel)
        for name in names:
            stub.CreateVtpm(pb.CreateVtpmRequest(name=name, engine=engine, start=True),
                            timeout=120)


def run(n: int, batch: int, engine: str) -> dict[str, Any]:
    with temp_dir("bench-migrate-") as root:
        ca = create_hosts_ca(root / "ca")
        a = MigrationNode(root / "a", "bench-a", ca, engine=engine)
        b = MigrationNode(root / "b", "bench-b", ca, engine=engine)
        try:
            doms0_a, doms0_b = a.provision().start(), b.provision().start()
            _create(doms0_a, ["one"], engine)
            samples = []
            hosts = [(doms0_a, b), (doms0_b, a)]
            for i in range(n):
                source, target = hosts[i % 2]
                samples.append(_migrate(source, "one", target.migration_address))
            names = [f"batch-{i:03d}" for i in range(batch)]
            _create(doms0_a, names, engine)
            started = time.perf_counter_ns()
            for name in names:
                _migrate(doms0_a, name, b.migration_address)
            batch_ns = time.perf_counter_ns() - started
        finally:
            a.stop()
            b.stop()
    ordered = sorted(samples)
    return {"engine": engine, "one": {
        "n": n, "p50_ms": round(percentile(ordered, 0.5) / 1000, 1),
        "p99_ms": round(percentile(ordered, 0.99) / 1000, 1),
        "min_ms": round(ordered[0] / 1e6, 1)},
        "batch": {"vtpms": batch, "total_s": round(batch_ns / 1e9, 2),
                  "per_vtpm_ms": round(batch_ns / max(batch, 1) / 1e6, 1)},
        "goal_p50_ms": GOAL_MS}


def main(args: argparse.Namespace) -> int:
    try:
        result = run(args.n, args.batch, args.engine)
    except (grpc.RpcError, RuntimeError) as exc:
        print(f"bench migrate: {exc}")
        return 1
    one, batch = result["one"], result["batch"]
    table = format_table(
        ("what", "n", "p50 ms", "p99 ms", "total s", "per vTPM ms"),
        [("one migration", one["n"], one["p50_ms"], one["p99_ms"], "", ""),
         (f"batch of {batch['vtpms']}", batch["vtpms"], "", "", batch["total_s"],
          batch["per_vtpm_ms"])])
    emit(table + f"\n(engine {result['engine']}; goal: p50 <= {GOAL_MS:.0f} ms)", result,
         args.json)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("migrate", help="vTPM migration latency and a batch between two "
                       "DomS0 hosts on loopback")
    p.add_argument("--n", type=int, default=20, help="single migrations (default 20)")
    p.add_argument("--batch", type=int, default=100, help="vTPMs in the batch (default 100)")
    p.add_argument("--engine", choices=("builtin", "swtpm"), default="builtin")
    p.add_argument("--json", metavar="FILE", help="also write JSON to FILE ('-': stdout)")
    p.set_defaults(func=main)
