"""Memory per idle vTPM: the builtin engine's cost per extra TPM held in one process,
beside the cost of one more ``swtpm`` process.

An idle vTPM here is started (TPM2_Startup) and holds an EK-like primary (ECC P-256,
TCG EK profile template L-2, endorsement hierarchy): what a guest's vTPM looks like
between boots. ECC keeps the setup quick; an RSA EK adds its key objects, a few KiB.

- builtin: a child interpreter (so nothing this process allocated counts) makes one
  TPM first (paying for imports and first-use caches), then ``count`` more; the RSS
  delta over ``count`` is the marginal cost. A second batch under ``tracemalloc`` gives
  the Python-heap bytes alone; the snapshot size is what a TPM writes to disk.
- swtpm: ``count`` processes, each with the EK loaded; per process VmRSS, Pss (shared
  libraries split among the processes mapping them) and USS (private pages: what one
  more process really adds), from ``/proc/PID/smaps_rollup``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from statistics import mean
from typing import Any

from . import key_commands as k
from .tpm_commands import check_success, startup_clear
from .tpm_socket import SwtpmSocket

_REPO = Path(__file__).resolve().parents[1]
_CHILD = "import sys; from bench.idle_memory import builtin_child; builtin_child(int(sys.argv[1]))"


def _idle_builtin_tpm() -> Any:
    from tpm_emulator import TPM

    tpm = TPM()
    check_success(tpm.execute(startup_clear()), "TPM2_Startup")
    check_success(tpm.execute(k.create_primary(k.ECC_P256_EK, k.TPM_RH_ENDORSEMENT)),
                  "EK CreatePrimary")
    return tpm


def builtin_child(count: int) -> None:
    """Run in a fresh interpreter: print the builtin figures as one JSON line. Only
    the engine and the command builders are imported (not gRPC), so the process RSS is
    that of a Python holding one TPM."""
    first = _idle_builtin_tpm()
    gc.collect()
    rss_one = smaps_rollup_kib(os.getpid())["Rss"]
    held = [_idle_builtin_tpm() for _ in range(count)]
    gc.collect()
    rss_delta = smaps_rollup_kib(os.getpid())["Rss"] - rss_one
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    traced = [_idle_builtin_tpm() for _ in range(count)]
    gc.collect()
    heap_delta = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(json.dumps({
        "count": count,
        "process_rss_kib_with_one_tpm": rss_one,
        "rss_kib_per_tpm": round(rss_delta / count, 1),
        "python_heap_kib_per_tpm": round(heap_delta / 1024 / count, 1),
        "snapshot_bytes": len(first.snapshot()),
        "held": len(held) + len(traced) + 1,
    }))


def builtin_idle(count: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{_REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(count)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def smaps_rollup_kib(pid: int) -> dict[str, int]:
    """The ``/proc/PID/smaps_rollup`` totals in KiB, by field name."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name] = int(parts[0])
    return fields


def swtpm_idle(count: int, settle_s: float = 0.2) -> dict[str, Any]:
    from .fixtures import PlainSwtpm, temp_dir  # gRPC and DomS0 imports: not in the child

    with temp_dir("vtpm-bench-idle-") as root:
        procs: list[PlainSwtpm] = []
        try:
            for i in range(count):
                swtpm = PlainSwtpm(root / f"swtpm-{i}")
                procs.append(swtpm)
                swtpm.start()
                with SwtpmSocket(swtpm.port) as conn:
                    check_success(conn.execute(k.create_primary(k.ECC_P256_EK,
                                                                k.TPM_RH_ENDORSEMENT)),
                                  "EK CreatePrimary on swtpm")
            time.sleep(settle_s)
            readings = []
            for swtpm in procs:
                assert swtpm.proc is not None
                rollup = smaps_rollup_kib(swtpm.proc.pid)
                readings.append({"rss": rollup["Rss"], "pss": rollup["Pss"],
                                 "uss": rollup["Private_Clean"] + rollup["Private_Dirty"]})
        finally:
            for swtpm in procs:
                swtpm.stop()
    return {"count": count,
            **{f"{key}_kib_per_process": round(mean(r[key] for r in readings), 1)
               for key in ("rss", "pss", "uss")}}
