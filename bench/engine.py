"""``bench engine``: the builtin TPM's per-command latency beside swtpm, and memory per
idle vTPM.

Commands (hand-built bytes, empty password sessions; see :mod:`bench.engine_latency`):
GetRandom(32), PCR_Extend(sha256), CreatePrimary RSA-2048 and ECC P-256 storage keys in
the owner hierarchy (cold and repeat), Sign over a 32-byte digest with unrestricted
ECDSA P-256 and RSASSA RSA-2048 keys, Quote of SHA-256 PCRs 0-7 with an ECC P-256 AK.

Each runs ``--n`` times (cold CreatePrimary ``--cold-n`` times) after ``--warmup``
untimed runs, on the builtin engine in this process (``TPM().execute``, no IO at all)
and on a ``swtpm socket`` this bench starts (libtpms, one TCP round trip on loopback
per command, which the swtpm figures include). A command the engine answers with
TPM_RC_COMMAND_CODE is reported as not implemented. Figures only; never pass or fail.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from .engine_latency import CASES, OK, BuiltinTarget, Result, SwtpmTarget, run_case
from .idle_memory import builtin_idle, swtpm_idle
from .stats import emit, format_table

DEFAULT_N = 200
DEFAULT_COLD_N = 10
DEFAULT_WARMUP = 10
DEFAULT_IDLE_TPMS = 100
DEFAULT_IDLE_SWTPMS = 4


def latency(n: int, cold_n: int, warmup: int) -> list[Result]:
    """Every case on both engines, case by case (so a load spike on this shared machine
    hits both engines' rows of a command alike)."""
    from .fixtures import PlainSwtpm, temp_dir

    results: list[Result] = []
    with temp_dir("vtpm-bench-engine-") as root:
        swtpm = PlainSwtpm(root / "swtpm")
        try:
            swtpm.start()
            targets = (BuiltinTarget(), SwtpmTarget(swtpm.port))
            for case in CASES:
                print(f"  measuring {case.name} ...", file=sys.stderr, flush=True)
                for target in targets:
                    results.append(run_case(target, case, cold_n if case.cold else n, warmup))
            targets[1].close()
        finally:
            swtpm.stop()
    return results


def swtpm_version() -> str:
    try:
        out = subprocess.run(["swtpm", "--version"], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return "swtpm (version unknown)"
    found = re.search(r"version (\S+?),? ", out)  # "TPM emulator version 0.7.1, ..."
    return f"swtpm {found.group(1)}" if found else "swtpm (version unknown)"


def _table(results: list[Result]) -> str:
    by_key = {(r.command, r.engine): r for r in results}

    def figure(r: Result, value: float | None) -> float:
        return value if r.status == OK and value is not None else math.nan

    rows = []
    for case in CASES:
        mine, ref = by_key[(case.name, "builtin")], by_key[(case.name, "swtpm")]
        ratio = "-"
        if mine.status == ref.status == OK and mine.p50_us is not None and ref.p50_us:
            ratio = f"{mine.p50_us / ref.p50_us:.3g}x"
        notes = "; ".join(f"{r.engine}: {r.status}" for r in (mine, ref) if r.status != OK)
        rows.append((case.name, max(mine.n, ref.n), figure(mine, mine.p50_us),
                     figure(mine, mine.p90_us), figure(ref, ref.p50_us),
                     figure(ref, ref.p90_us), ratio, notes))
    return format_table(("command", "n", "builtin p50 µs", "p90 µs", "swtpm p50 µs",
                         "p90 µs", "builtin/swtpm", "note"), rows)


def _memory_lines(memory: dict[str, Any]) -> list[str]:
    b, s = memory["builtin"], memory["swtpm"]
    return [
        f"memory per idle vTPM (started, ECC P-256 EK loaded): builtin "
        f"{b['rss_kib_per_tpm']} KiB RSS / {b['python_heap_kib_per_tpm']} KiB Python heap "
        f"per extra TPM in one process ({b['count']} held; a Python holding one TPM: "
        f"{b['process_rss_kib_with_one_tpm']:,} KiB RSS; snapshot {b['snapshot_bytes']:,} B)",
        f"  swtpm per process ({s['count']} running): {s['rss_kib_per_process']:,} KiB RSS, "
        f"{s['pss_kib_per_process']:,} KiB PSS, {s['uss_kib_per_process']:,} KiB USS",
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    started = time.monotonic()
    results = latency(args.n, args.cold_n, args.warmup)
    memory = {"builtin": builtin_idle(args.idle_tpms), "swtpm": swtpm_idle(args.idle_swtpms)}
    return {
        "benchmark": "engine", "n": args.n, "cold_n": args.cold_n, "warmup": args.warmup,
        "swtpm_version": swtpm_version(), "cpus": os.cpu_count(),
        "loadavg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.monotonic() - started, 1),
        "rows": [asdict(r) for r in results], "memory": memory,
    }


def main(args: argparse.Namespace) -> int:
    document = run(args)
    results = [Result(**row) for row in document["rows"]]
    notes = [
        "cold: a never-used owner seed per sample (fresh TPM() / swtpm TPM2_Clear, untimed);"
        " repeat: same template again (builtin reuses its cached RSA primes)",
        "builtin in-process, no IO; swtpm over loopback TCP, round trip included (its "
        "GetRandom row is about that round trip alone)",
        f"{document['swtpm_version']}; warm-up {args.warmup}; {document['cpus']} CPUs, "
        f"load average {document['loadavg_1m'][0]} -> {document['loadavg_1m'][1]}; "
        f"run took {document['seconds']} s",
        *_memory_lines(document["memory"]),
    ]
    emit(_table(results) + "\n" + "\n".join(notes), document, args.json)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("engine", help="builtin TPM per-command p50/p90 beside swtpm, "
                       "and memory per idle vTPM")
    p.add_argument("--n", type=int, default=DEFAULT_N,
                   help=f"timed runs per command and engine (default {DEFAULT_N})")
    p.add_argument("--cold-n", type=int, default=DEFAULT_COLD_N,
                   help=f"timed runs of cold CreatePrimary (default {DEFAULT_COLD_N})")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                   help=f"untimed runs first, except cold rows (default {DEFAULT_WARMUP})")
    p.add_argument("--idle-tpms", type=int, default=DEFAULT_IDLE_TPMS,
                   help=f"builtin TPMs held for the memory figure (default {DEFAULT_IDLE_TPMS})")
    p.add_argument("--idle-swtpms", type=int, default=DEFAULT_IDLE_SWTPMS,
                   help=f"swtpm processes for the memory figure (default {DEFAULT_IDLE_SWTPMS})")
    p.add_argument("--json", metavar="FILE", help="also write JSON to FILE ('-': stdout)")
    p.set_defaults(func=main)
