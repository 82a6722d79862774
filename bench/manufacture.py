"""``bench manufacture``: time to make a vTPM with RSA and ECC EKs, EK and platform
certificates, persisted — ours beside ``swtpm_setup``, in the same run.

Rows:

- ``ours``: SwtpmEngine.start(None) + :func:`vtpm_manager.manufacture.manufacture`
  (raw TPM commands straight into the engine: Startup, 2 x CreatePrimary, 3
  certificates issued by the vTPM CA, NV define/write/lock, Shutdown) + power cycle +
  export_state + StateStore.save (AES-GCM, fsync) into a temporary store, then stop.
  The ``ours:`` stage rows split that total.
- ``manager.create``: the same through ``VtpmManager.create(manufacturer=
  state_manufacturer(...))``: manufacture on a scratch engine, then the vTPM's first
  record saved once, already manufactured.
- ``swtpm_setup``: ``swtpm_setup --tpm2 --createek --create-ek-cert
  --create-platform-cert --tpm-state DIR --config F`` with a private config and
  ``swtpm_localca`` CA in a temporary folder (its one-time CA creation runs first,
  untimed, as our CA's does). swtpm_setup 0.7.1 makes RSA-2048 and ECC P-384 EKs.

Figures only; nothing here passes or fails on time.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vtpm_manager.ca import VtpmCA, VtpmIdentity
from vtpm_manager.engines.swtpm import SwtpmEngine
from vtpm_manager.kek import KeyEncryptionKey
from vtpm_manager.manager import VtpmManager
from vtpm_manager.manufacture import manufacture, state_manufacturer
from vtpm_manager.store import Record, StateStore

from .fixtures import temp_dir
from .stats import emit, format_table, percentile

DEFAULT_N = 20
HOST = "bench.doms0.invalid"
GOAL_MS = 50.0


@dataclass(frozen=True)
class Row:
    """One measured way to manufacture (JSON schema of ``bench manufacture``)."""

    path: str
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def of(cls, path: str, samples_ns: list[int]) -> Row:
        ordered = sorted(samples_ns)
        mean = sum(ordered) / len(ordered) / 1e6 if ordered else float("nan")
        return cls(path, len(ordered), round(percentile(ordered, 0.5) / 1000, 2),
                   round(percentile(ordered, 0.99) / 1000, 2), round(mean, 2))


def _ours(root: Path, n: int) -> list[Row]:
    """In process: engine + manufacture + persist, with a per-stage split."""
    kek = KeyEncryptionKey(bytes(32), origin="bench")
    ca = VtpmCA.open(root / "state", kek, HOST)
    store = StateStore(root / "store", kek)
    stages: dict[str, list[int]] = {k: [] for k in ("start", "manufacture", "persist",
                                                     "stop")}
    totals: list[int] = []
    for i in range(n):
        vtpm_uuid = str(uuid.uuid4())
        run_dir = root / "run" / vtpm_uuid[:8]
        t0 = time.perf_counter_ns()
        engine = SwtpmEngine(run_dir)
        engine.start(None)
        t1 = time.perf_counter_ns()
        manufacture(engine.execute, ca, VtpmIdentity(vtpm_uuid, f"vm{i}", HOST))
        t2 = time.perf_counter_ns()
        engine.power_cycle(delete_volatile=True)
        store.save(Record(uuid=vtpm_uuid, name=f"vm{i}", engine="swtpm",
                          created_unix=int(time.time()), data_key=bytes(32),
                          state=engine.export_state()))
        t3 = time.perf_counter_ns()
        engine.stop()
        t4 = time.perf_counter_ns()
        for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[name].append(dt)
        totals.append(t3 - t0)
        shutil.rmtree(run_dir, ignore_errors=True)
    rows = [Row.of("ours (start+manufacture+persist)", totals)]
    rows += [Row.of(f"  ours: {name}", samples) for name, samples in stages.items()]
    return rows


def _manager(root: Path, n: int) -> Row:
    kek = KeyEncryptionKey(bytes(32), origin="bench")
    ca = VtpmCA.open(root / "mstate", kek, HOST)
    manager = VtpmManager(StateStore(root / "mstore", kek), root / "mrun", "swtpm",
                          manufacturer=state_manufacturer(ca, HOST))
    samples: list[int] = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        manager.create(f"vm{i}", "swtpm", start=False)
        samples.append(time.perf_counter_ns() - t0)
    manager.shutdown()
    return Row.of("manager.create (manufacturing hook)", samples)


def _swtpm_setup_config(root: Path) -> Path:
    """A private swtpm_setup config and swtpm_localca CA under ``root``."""
    localca = root / "localca"
    localca.mkdir()
    (root / "localca.conf").write_text(
        f"statedir = {localca}\nsigningkey = {localca}/signkey.pem\n"
        f"issuercert = {localca}/issuercert.pem\ncertserial = {localca}/certserial\n")
    (root / "localca.options").write_text(
        "--platform-manufacturer vtpm-stack\n--platform-version 1\n--platform-model bench\n")
    config = root / "swtpm_setup.conf"
    config.write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca') or 'swtpm_localca'}\n"
        f"create_certs_tool_config = {root / 'localca.conf'}\n"
        f"create_certs_tool_options = {root / 'localca.options'}\n"
        "active_pcr_banks = sha256\n")
    return config


def _swtpm_setup(root: Path, n: int) -> Row:
    config = _swtpm_setup_config(root)

    def once(i: int) -> int:
        state = root / f"tpm-{i}"
        state.mkdir()
        argv = ["swtpm_setup", "--tpm2", "--createek", "--create-ek-cert",
                "--create-platform-cert", "--tpm-state", str(state), "--config", str(config),
                "--logfile", str(root / "swtpm_setup.log")]
        t0 = time.perf_counter_ns()
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter_ns() - t0
        if result.returncode != 0:
            log = (root / "swtpm_setup.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"swtpm_setup failed ({result.returncode}): "
                               f"{result.stderr}{log}")
        shutil.rmtree(state, ignore_errors=True)
        return elapsed

    once(-1)  # creates swtpm_localca's root and intermediate CA: one-time, untimed
    return Row.of("swtpm_setup", [once(i) for i in range(n)])


def run(n: int, which: str) -> list[Row]:
    missing = [tool for tool in ("swtpm", "swtpm_setup", "swtpm_localca")
               if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench manufacture needs {', '.join(missing)}: "
                         "apt-get install swtpm swtpm-tools")
    steps: list[tuple[str, Callable[[Path], list[Row]]]] = []
    if which in ("all", "ours"):
        steps.append(("ours", lambda root: _ours(root, n)))
        steps.append(("manager.create", lambda root: [_manager(root, n)]))
    if which in ("all", "swtpm_setup"):
        steps.append(("swtpm_setup", lambda root: [_swtpm_setup(root, n)]))
    rows: list[Row] = []
    with temp_dir("vtpm-bench-manufacture-") as root:
        for name, step in steps:
            print(f"  measuring {name} ...", file=sys.stderr, flush=True)
            folder = root / name.replace(".", "-")
            folder.mkdir()
            rows.extend(step(folder))
    return rows


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rows = run(args.n, args.only)
    elapsed = time.monotonic() - started
    table = format_table(("path", "n", "p50 ms", "p99 ms", "mean ms"),
                         [(r.path, r.n, r.p50_ms, r.p99_ms, r.mean_ms) for r in rows])
    notes = [f"goal: ours p50 <= {GOAL_MS:.0f} ms; sequential, one vTPM at a time; "
             f"run took {elapsed:.1f} s"]
    document: dict[str, Any] = {"benchmark": "manufacture", "n": args.n, "goal_ms": GOAL_MS,
                                "rows": [asdict(r) for r in rows]}
    emit(table + "\n" + "\n".join(notes), document, args.json)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("manufacture", help="time to create a vTPM with EKs and certificates, "
                       "ours vs swtpm_setup")
    p.add_argument("--n", type=int, default=DEFAULT_N,
                   help=f"vTPMs manufactured per path (default {DEFAULT_N})")
    p.add_argument("--only", choices=("all", "ours", "swtpm_setup"), default="all",
                   help="measure only one side (default: all)")
    p.add_argument("--json", metavar="FILE", help="also write JSON to FILE ('-': stdout)")
    p.set_defaults(func=main)
