"""``bench measure``: image-hashing throughput and memory, ours beside ``openssl dgst``.

On one temporary file of ``--size-mib`` MiB (random bytes, read once first so every
row hashes from the page cache):

- ``openssl dgst -sha256``: wall time of the process (its start-up is ~2 ms);
- ``MultiHash sha256``: :func:`measure.hashing.hash_file` with one bank;
- ``openssl dgst -sha384``: the slowest bank alone, the bound for three banks at once;
- ``MultiHash sha1+sha256+sha384``: the three banks a manifest declares, one read
  (banks hashed on parallel threads, see :mod:`measure.hashing`).

Our rows run in a fresh child interpreter each and time only the hashing (not the
interpreter start); the child also reports its own peak RSS (``ru_maxrss``), and the
RSS rows repeat the three-bank run on a 64 MiB file and on the full file, to show
memory does not grow with the image (1 MiB buffers, nothing held whole).
Each timing is the best of ``--repeat`` runs. Figures only; never pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .fixtures import temp_dir
from .stats import emit, format_table

DEFAULT_SIZE_MIB = 256
GOAL_RATIO = 0.9
SMALL_MIB = 64
_REPO = Path(__file__).resolve().parents[1]

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve (the forking parent's
# peak would show), while VmHWM belongs to the new address space alone.
_CHILD = """
import json, re, sys, time
from measure.hashing import hash_file
banks = tuple(sys.argv[2].split(","))
t0 = time.perf_counter()
mh = hash_file(sys.argv[1], banks)
elapsed = time.perf_counter() - t0
status = open("/proc/self/status").read()
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
print(json.dumps({"seconds": elapsed, "size": mh.size, "maxrss_kib": hwm,
                  "sha256": mh.hexdigests().get("sha256")}))
"""


@dataclass(frozen=True)
class Row:
    """One hashing path (JSON schema of ``bench measure``)."""

    path: str
    size_mib: int
    ms: float
    mib_per_s: float
    vs_openssl: float
    peak_rss_mib: float | None


def _write_random(path: Path, size_mib: int) -> None:
    with path.open("wb") as out:
        for _ in range(size_mib):
            out.write(os.urandom(1 << 20))
    with path.open("rb") as warm:  # into the page cache, so no row pays for the disk
        while warm.read(1 << 24):
            pass


def _ours(path: Path, banks: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{_REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), banks], env=env,
                         capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out))


def _openssl(path: Path, bank: str = "sha256") -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(["openssl", "dgst", f"-{bank}", "-r", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return time.perf_counter() - t0, out.split()[0]


def run(size_mib: int, repeat: int) -> list[Row]:
    if shutil.which("openssl") is None:
        raise SystemExit("bench measure needs openssl: apt-get install openssl")
    with temp_dir("vtpm-bench-measure-") as root:
        big, small = root / "big.bin", root / "small.bin"
        print(f"  writing {size_mib} MiB and {SMALL_MIB} MiB test files ...", file=sys.stderr,
              flush=True)
        _write_random(big, size_mib)
        _write_random(small, SMALL_MIB)
        openssl = [_openssl(big) for _ in range(repeat)]
        best_openssl = min(t for t, _ in openssl)
        best_sha384 = min(_openssl(big, "sha384")[0] for _ in range(repeat))
        one = [_ours(big, "sha256") for _ in range(repeat)]
        three = [_ours(big, "sha1,sha256,sha384") for _ in range(repeat)]
        if one[0]["sha256"] != openssl[0][1]:
            raise SystemExit("MultiHash sha256 disagrees with openssl: not a benchmark, a bug")
        small_three = _ours(small, "sha1,sha256,sha384")

    def row(name: str, mib: int, seconds: float, rss_kib: float | None) -> Row:
        throughput = mib / seconds
        return Row(name, mib, round(seconds * 1000, 1), round(throughput, 1),
                   round(throughput / (size_mib / best_openssl), 2),
                   None if rss_kib is None else round(rss_kib / 1024, 1))

    best_one = min(one, key=lambda r: r["seconds"])
    best_three = min(three, key=lambda r: r["seconds"])
    return [
        row("openssl dgst -sha256", size_mib, best_openssl, None),
        row("openssl dgst -sha384 (3-bank bound)", size_mib, best_sha384, None),
        row("MultiHash sha256", size_mib, best_one["seconds"], best_one["maxrss_kib"]),
        row("MultiHash sha1+sha256+sha384", size_mib, best_three["seconds"],
            best_three["maxrss_kib"]),
        row("MultiHash sha1+sha256+sha384", SMALL_MIB, small_three["seconds"],
            small_three["maxrss_kib"]),
    ]


def main(args: argparse.Namespace) -> int:
    rows = run(args.size_mib, args.repeat)
    table = format_table(("path", "MiB", "ms", "MiB/s", "x openssl", "peak RSS MiB"),
                         [(r.path, r.size_mib, r.ms, r.mib_per_s, r.vs_openssl,
                           r.peak_rss_mib if r.peak_rss_mib is not None else float("nan"))
                          for r in rows])
    ratio = rows[2].vs_openssl
    notes = [f"goal: MultiHash sha256 >= {GOAL_RATIO}x openssl dgst -sha256 "
             f"({'met' if ratio >= GOAL_RATIO else 'NOT met'}: {ratio}x); best of "
             f"{args.repeat}; page-cache warm; {os.cpu_count()} CPUs",
             "peak RSS is the hashing child's VmHWM (interpreter included); equal at "
             f"{SMALL_MIB} and {args.size_mib} MiB means constant memory"]
    document: dict[str, Any] = {"benchmark": "measure", "size_mib": args.size_mib,
                                "goal_ratio": GOAL_RATIO, "rows": [asdict(r) for r in rows]}
    emit(table + "\n" + "\n".join(notes), document, args.json)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("measure", help="image hashing throughput and peak RSS, "
                       "MultiHash vs openssl dgst")
    p.add_argument("--size-mib", type=int, default=DEFAULT_SIZE_MIB,
                   help=f"size of the hashed file (default {DEFAULT_SIZE_MIB})")
    p.add_argument("--repeat", type=int, default=3, help="runs per path, best kept (default 3)")
    p.add_argument("--json", metavar="FILE", help="also write JSON to FILE ('-': stdout)")
    p.set_defaults(func=main)
