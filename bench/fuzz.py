"""``bench fuzz``: a million random and mutated commands against the built-in TPM.

Every response is checked (``fuzz_judge.response_problem``): well-formed header,
size field equal to the length, at most the TPM's maximum response size, a response
code Part 2 defines, success responses that parse as the command declares. Besides
that, a finding is: an exception that escaped ``execute``; an internal error that
``execute`` turned into TPM_RC_FAILURE (the emulator logs it — a bug all the same);
a command slower than ``--max-ms``; a command still running after ``--hang-s`` (it is
interrupted with SIGALRM); a ``snapshot``/``restore`` round trip that fails.

One ``TPM()`` takes the commands; every ``--fresh-every`` commands a fresh one replaces
it, Startup'd or (one time in five) not, and every quarter of that the TPM is replaced
by ``TPM.restore(tpm.snapshot())``. ``--jobs`` spreads the commands over processes,
each with its own seed derived from ``--seed``.

``--differential`` sends only valid commands, each to our TPM and to a ``swtpm socket``
(libtpms), and counts response-code mismatches by command code: a report, not a test.
Then it plays ``--scenarios`` scripted scenarios (``fuzz_scenarios``: sessions, policies,
sequences, NV) on both, each from an equal start (TPM2_Clear, everything flushed) with
one client per TPM: the first response-code mismatch of each scenario is counted, and
so is every response HMAC that does not verify (checking the client against libtpms as
much as our TPM).

Figures: commands/s, the response-code histogram (top 20), per-command success counts
for valid commands, the slowest command, findings with the command in hex.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import random
import signal
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tpm_emulator import TPM
from tpm_emulator.constants import CC, MAX_RESPONSE_SIZE

from .fuzz_generate import CommandGen, frame
from .fuzz_judge import HEADER, parse_success, rc_name, response_problem
from .fuzz_scenarios import SCENARIOS, scenario_cleanup
from .fuzz_sessions import SessionScripts
from .stats import emit, format_table
from .tpm_socket import SwtpmSocket

STARTUP_CLEAR = frame(0x8001, 0x144, b"\x00\x00")
RC_RETRY = 0x922
SETTLE_EVERY = 200  # differential: commands between two settles of both TPMs
MAX_FINDINGS = 50


class Hang(BaseException):
    """Raised by SIGALRM inside ``execute``; a BaseException so that ``execute``'s
    catch-all (``except Exception``) lets it through."""


class _Captured(logging.Handler):
    """Collects the tracebacks the emulator logs when it turns an exception into
    TPM_RC_FAILURE."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_emulator_errors() -> Iterator[_Captured]:
    logger = logging.getLogger("tpm_emulator")
    handler = _Captured()
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # a million tracebacks on stderr help no one
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate


def _where(exc_info: Any) -> str:
    """``Type: message @ file:line`` of the innermost frame of a traceback."""
    import traceback

    _, exc, tb = exc_info
    frames = traceback.extract_tb(tb)
    last = frames[-1] if frames else None
    place = f" @ {Path(last.filename).name}:{last.lineno}" if last else ""
    return f"{type(exc).__name__}: {exc}{place}"


@dataclass
class Tally:
    """What one worker saw; tallies of several workers add up."""

    commands: int = 0
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    codes: Counter[int] = field(default_factory=Counter)
    valid_ok: Counter[str] = field(default_factory=Counter)
    valid_all: Counter[str] = field(default_factory=Counter)
    slowest: list[Any] = field(default_factory=lambda: [0, "", ""])  # ns, command, hex
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)
    unmodelled: set[str] = field(default_factory=set)

    def add(self, other: Tally) -> None:
        self.commands += other.commands
        self.seconds = max(self.seconds, other.seconds)
        self.kinds += other.kinds
        self.codes += other.codes
        self.valid_ok += other.valid_ok
        self.valid_all += other.valid_all
        if other.slowest[0] > self.slowest[0]:
            self.slowest = other.slowest
        for key, f in other.findings.items():
            if key in self.findings:
                self.findings[key]["count"] += f["count"]
            elif len(self.findings) < MAX_FINDINGS:
                self.findings[key] = f
        self.unmodelled |= other.unmodelled

    def find(self, kind: str, detail: str, command: bytes, locality: int,
             started: bool) -> None:
        key = f"{kind}: {detail}"
        if key in self.findings:
            self.findings[key]["count"] += 1
        elif len(self.findings) < MAX_FINDINGS:
            self.findings[key] = {
                "kind": kind, "detail": detail, "count": 1, "command": command.hex(),
                "locality": locality, "tpm_started": started,
                "reproduces_alone": _reproduces(kind, command, locality, started),
            }


def _cc_name(command: bytes) -> str:
    if len(command) < HEADER.size:
        return "-"
    cc = HEADER.unpack_from(command)[2]
    try:
        return CC(cc).name
    except ValueError:
        return f"0x{cc:X}"


def _fresh_tpm(started: bool) -> TPM:
    tpm = TPM()
    if started:
        tpm.execute(STARTUP_CLEAR)
    return tpm


def _reproduces(kind: str, command: bytes, locality: int, started: bool) -> bool | None:
    """Whether the command alone, on a fresh TPM in the same started state, shows the
    same kind of problem (None: not checked for this kind)."""
    if kind not in ("internal-error", "malformed-response", "exception"):
        return None
    with captured_emulator_errors() as errors:
        try:
            resp = _fresh_tpm(started).execute(command, locality)
        except Exception:
            return kind == "exception"
    if kind == "internal-error":
        return bool(errors.records)
    return response_problem(command, resp, MAX_RESPONSE_SIZE) is not None


def fuzz(n: int, seed: int, *, fresh_every: int = 20_000, max_ms: float = 1000.0,
         hang_s: float = 10.0) -> Tally:
    """Run ``n`` generated commands against one TPM (renewed every ``fresh_every``)."""
    rng = random.Random(seed)
    gen = CommandGen(rng)
    tally = Tally()
    started = True
    tpm = _fresh_tpm(started)
    max_ns = int(max_ms * 1e6)
    use_alarm = hang_s > 0 and hasattr(signal, "setitimer")

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang()

    old_handler = signal.signal(signal.SIGALRM, on_alarm) if use_alarm else None
    t0 = time.perf_counter()
    try:
        with captured_emulator_errors() as errors:
            for i in range(n):
                if i and i % fresh_every == 0:
                    started = rng.random() < 0.8
                    tpm = _fresh_tpm(started)
                    gen.reset()
                elif i and i % max(1, fresh_every // 4) == 0:
                    try:
                        tpm = TPM.restore(tpm.snapshot())
                    except Exception as e:
                        tally.find("snapshot", f"{type(e).__name__}: {e}", b"", 0, started)
                        tpm = _fresh_tpm(True)
                kind, cmd = gen.next()
                loc = gen.locality()
                tally.kinds[kind] += 1
                try:
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, hang_s)
                    begin = time.perf_counter_ns()
                    resp = tpm.execute(cmd, loc)
                    took = time.perf_counter_ns() - begin
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                except Hang:
                    tally.find("hang", f"{_cc_name(cmd)} still running after {hang_s}s", cmd,
                               loc, started)
                    tpm = _fresh_tpm(True)
                    continue
                except Exception as e:
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                    tally.find("exception", f"{type(e).__name__}: {e}", cmd, loc, started)
                    continue
                started = started or tpm.started
                if errors.records:
                    for rec in errors.records:
                        tally.find("internal-error", _where(rec.exc_info), cmd, loc, started)
                    errors.records.clear()
                problem = response_problem(cmd, resp, MAX_RESPONSE_SIZE)
                if problem is not None:
                    tally.find("malformed-response", f"{_cc_name(cmd)}: {problem}", cmd, loc,
                               started)
                    continue
                rc = HEADER.unpack_from(resp)[2]
                tally.codes[rc] += 1
                if kind in ("valid", "scripted"):
                    name = _cc_name(cmd)
                    tally.valid_all[name] += 1
                    tally.valid_ok[name] += rc == 0
                if rc == 0:
                    gen.learn(cmd, resp)
                    for wrong in gen.scripts.take_problems():
                        tally.find("wrong-answer", wrong, cmd, loc, started)
                if took > tally.slowest[0]:
                    tally.slowest = [took, _cc_name(cmd), cmd[:64].hex()]
                if took > max_ns:
                    tally.find("slow", f"{_cc_name(cmd)} took > {max_ms} ms", cmd, loc,
                               started)
                tally.commands += 1
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
    tally.seconds = time.perf_counter() - t0
    tally.unmodelled = gen.unmodelled
    return tally


def _worker(job: tuple[int, int, dict[str, Any]]) -> Tally:
    n, seed, opts = job
    return fuzz(n, seed, **opts)


def run(n: int, seed: int, jobs: int, **opts: Any) -> Tally:
    """``n`` commands over ``jobs`` processes; worker ``j`` uses seed ``seed * 1000 + j``."""
    if jobs <= 1:
        return fuzz(n, seed * 1000, **opts)
    shares = [n // jobs + (1 if j < n % jobs else 0) for j in range(jobs)]
    work = [(share, seed * 1000 + j, opts) for j, share in enumerate(shares)]
    total = Tally()
    with mp.get_context("spawn").Pool(jobs) as pool:
        for tally in pool.imap_unordered(_worker, work):
            total.add(tally)
    return total


# ---- differential run against swtpm ------------------------------------------------
def differential(n: int, seed: int, scenarios: int = 0) -> dict[str, Any]:
    """Valid commands to our TPM and to swtpm; response-code mismatches by command;
    then ``scenarios`` scripted scenarios on both (``scripted_differential``)."""
    from domS0.harness import SwtpmProcess

    from .fixtures import temp_dir

    rng = random.Random(seed)
    gen = CommandGen(rng, reuse=False)  # our blobs and tickets mean nothing to libtpms
    ours = _fresh_tpm(True)
    sent: Counter[str] = Counter()
    mismatches: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    with temp_dir("bench-fuzz-diff-") as root:
        swtpm = SwtpmProcess(root / "swtpm").start()
        conn = SwtpmSocket(swtpm.port)
        t0 = time.perf_counter()
        try:
            for i in range(n):
                if i % SETTLE_EVERY == 0:
                    # The two TPMs drift apart (an object one holds and the other does
                    # not; a full slot table on one side): start both over often.
                    platform_auth = gen.scripts.entities[0x4000000C].auth
                    settle(ours.execute, platform_auth)
                    settle(conn.execute, platform_auth)
                    gen.reset()
                cmd = gen.valid()
                a = ours.execute(cmd)
                b = conn.execute(cmd)
                for _ in range(3):  # libtpms asks for a retry now and then
                    if HEADER.unpack_from(b)[2] != RC_RETRY:
                        break
                    b = conn.execute(cmd)
                name = _cc_name(cmd)
                sent[name] += 1
                rc_a, rc_b = HEADER.unpack_from(a)[2], HEADER.unpack_from(b)[2]
                if rc_a == 0 and rc_b == 0:  # what only one TPM has is no use to both
                    gen.learn(cmd, a)
                if rc_a != rc_b:
                    mismatches[name] += 1
                    key = f"{name}: ours {rc_name(rc_a)} swtpm {rc_name(rc_b)}"
                    if len(examples.setdefault(key, [])) < 2:
                        examples[key].append(cmd.hex())
            seconds = time.perf_counter() - t0
            platform_auth = gen.scripts.entities[0x4000000C].auth
            settle(ours.execute, platform_auth)
            settle(conn.execute, platform_auth)
            scripted = scripted_differential(ours.execute, conn.execute, scenarios, seed)
        finally:
            conn.close()
            swtpm.stop()
    return {
        "commands": n, "seconds": round(seconds, 1),
        "by_command": {k: {"sent": sent[k], "rc_mismatches": mismatches[k]}
                       for k in sorted(sent)},
        "mismatch_kinds": {k: {"examples": v} for k, v in sorted(examples.items())},
        "scripted": scripted,
    }


# Response fields that depend only on what the client sent, not on a TPM's seeds, keys
# or nonces: the scripted differential run compares them octet for octet.
DETERMINISTIC: dict[int, str] = {
    CC.PolicyGetDigest: "policyDigest", CC.EventSequenceComplete: "results",
    CC.NV_Read: "data", CC.Unseal: "outData", CC.NV_ReadPublic: "nvPublic",
}


def _same_output(cc: int, cmd: bytes, ours: bytes, theirs: bytes) -> bool:
    field_name = DETERMINISTIC.get(cc)
    if field_name is None:
        return True
    a, b = parse_success(cmd, ours), parse_success(cmd, theirs)
    if a is None or b is None or a[2] is None or b[2] is None:  # encrypted: not comparable
        return True
    return bool(getattr(a[2], field_name) == getattr(b[2], field_name))


def settle(execute: Callable[[bytes], bytes], platform_auth: bytes = b"") -> None:
    """An equal start for a scenario: the owner and endorsement hierarchies enabled and
    TPM2_Clear allowed again, then TPM2_Clear (owner and endorsement authValues empty,
    owner NV indices gone, dictionary-attack counter reset) and an empty platformAuth,
    all under the platform hierarchy; every loaded object and session flushed (handles
    from TPM2_GetCapability, Part 3, 30.2)."""
    pw = struct.pack(">IHBH", 0x40000009, 0, 1, len(platform_auth)) + platform_auth
    platform = struct.pack(">II", 0x4000000C, len(pw)) + pw
    for enable in (0x40000001, 0x4000000B, 0x4000000D):  # owner, endorsement, platform NV
        execute(frame(0x8002, CC.HierarchyControl, platform + struct.pack(">IB", enable, 1)))
    execute(frame(0x8002, CC.ClearControl, platform + b"\x00"))
    execute(frame(0x8002, CC.Clear, platform))
    execute(frame(0x8002, CC.HierarchyChangeAuth, platform + b"\x00\x00"))  # platformAuth
    for first in (0x80000000, 0x02000000, 0x03000000):
        resp = execute(frame(0x8001, CC.GetCapability, struct.pack(">III", 1, first, 16)))
        if HEADER.unpack_from(resp)[2] != 0:
            continue
        (count,) = struct.unpack_from(">I", resp, 15)  # after moreData and capability
        for (h,) in struct.iter_unpack(">I", resp[19 : 19 + 4 * count]):
            execute(frame(0x8001, CC.FlushContext, struct.pack(">I", h)))


def scripted_differential(ours: Callable[[bytes], bytes], theirs: Callable[[bytes], bytes],
                          n: int, seed: int) -> dict[str, Any]:
    """``n`` scripted scenarios on two TPMs, each from ``settle``; the first response-code
    mismatch of a scenario ends its comparison (the clients go different ways after it)."""
    a = SessionScripts(random.Random(), SCENARIOS, scenario_cleanup)
    b = SessionScripts(random.Random(), SCENARIOS, scenario_cleanup)
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    examples: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for k in range(n):
        settle(ours)
        settle(theirs)
        scenario_seed = seed * 1_000_000 + k
        ta, tb = a.play(ours, scenario_seed), b.play(theirs, scenario_seed)
        counts["commands"] += len(ta)
        counts["success_ours"] += sum(1 for t in ta if t[1] == 0)
        counts["success_swtpm"] += sum(1 for t in tb if t[1] == 0)
        for who, client in (("ours", a), ("swtpm", b)):
            for wrong in client.take_problems():
                kinds[f"{who}: {wrong}"] += 1
        for (cc_a, rc_a, cmd_a, resp_a), (cc_b, rc_b, _, resp_b) in zip(ta, tb, strict=False):
            if cc_a != cc_b:
                kinds["the clients diverged"] += 1
                break
            key = ""
            if rc_a != rc_b:
                key = f"{_cc_name(cmd_a)}: ours {rc_name(rc_a)} swtpm {rc_name(rc_b)}"
            elif rc_a == 0 and not _same_output(cc_a, cmd_a, resp_a, resp_b):
                key = f"{_cc_name(cmd_a)}: {DETERMINISTIC[cc_a]} differs"
            if key:
                kinds[key] += 1
                examples.setdefault(key, {"scenario_seed": scenario_seed,
                                          "command": cmd_a.hex()})
                break
    return {
        "scenarios": n, "seconds": round(time.perf_counter() - t0, 1), **counts,
        "differences": {k: {"count": v, **examples.get(k, {})}
                        for k, v in kinds.most_common()},
    }


# ---- report --------------------------------------------------------------------------
def report(t: Tally, n: int, seed: int, jobs: int) -> dict[str, Any]:
    total = sum(t.codes.values()) or 1
    return {
        "commands": t.commands, "requested": n, "seed": seed, "jobs": jobs,
        "seconds": round(t.seconds, 1),
        "commands_per_s": round(t.commands / t.seconds, 1) if t.seconds else None,
        "kinds": dict(t.kinds),
        "response_codes_top20": [
            {"rc": f"0x{rc:03X}", "name": rc_name(rc), "count": c,
             "share": round(c / total, 4)} for rc, c in t.codes.most_common(20)],
        "distinct_response_codes": len(t.codes),
        "valid_commands": {k: {"sent": t.valid_all[k], "success": t.valid_ok[k]}
                           for k in sorted(t.valid_all)},
        "slowest": {"ms": round(t.slowest[0] / 1e6, 2), "command": t.slowest[1],
                    "hex_prefix": t.slowest[2]},
        "findings": list(t.findings.values()),
        "unmodelled_wire_rules": sorted(t.unmodelled),
    }


def _table(doc: dict[str, Any]) -> str:
    lines = [
        f"{doc['commands']:,} commands in {doc['seconds']} s "
        f"({doc['commands_per_s']:,} commands/s, {doc['jobs']} job(s), seed {doc['seed']}); "
        f"kinds {doc['kinds']}",
        f"slowest: {doc['slowest']['command']} {doc['slowest']['ms']} ms "
        f"({doc['slowest']['hex_prefix']})", "",
        format_table(["rc", "name", "count", "share"],
                     [(r["rc"], r["name"], r["count"], r["share"])
                      for r in doc["response_codes_top20"]]), "",
        format_table(["valid/scripted command", "sent", "success"],
                     [(k, v["sent"], v["success"]) for k, v in doc["valid_commands"].items()]),
        "",
        f"findings: {len(doc['findings'])}",
    ]
    for f in doc["findings"]:
        lines.append(f"  [{f['kind']}] x{f['count']} {f['detail']}\n"
                     f"    locality {f['locality']}, started {f['tpm_started']}, alone "
                     f"{f['reproduces_alone']}: {f['command'][:400]}")
    if doc["unmodelled_wire_rules"]:
        lines.append(f"unmodelled wire rules: {doc['unmodelled_wire_rules']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.differential:
        doc = differential(args.n, args.seed, args.scenarios)
        rows = [(k, v["sent"], v["rc_mismatches"]) for k, v in doc["by_command"].items()]
        text = format_table(["command", "sent", "rc mismatches"], rows)
        text += "\n" + "\n".join(f"  {k}: {v['examples'][0]}"
                                 for k, v in doc["mismatch_kinds"].items())
        sd = doc["scripted"]
        text += (f"\nscripted: {sd['scenarios']} scenarios, {sd.get('commands', 0)} commands "
                 f"in {sd['seconds']} s; successes ours {sd.get('success_ours', 0)}, swtpm "
                 f"{sd.get('success_swtpm', 0)}\n")
        text += "\n".join(f"  x{v['count']} {k} {v.get('command', '')[:200]}"
                           for k, v in sd["differences"].items())
        emit(text, doc, args.json)
        return 0
    tally = run(args.n, args.seed, args.jobs, fresh_every=args.fresh_every,
                max_ms=args.max_ms, hang_s=args.hang_s)
    doc = report(tally, args.n, args.seed, args.jobs)
    emit(_table(doc), doc, args.json)
    return 1 if tally.findings else 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("fuzz", help="random and mutated commands against the built-in TPM; "
                       "every response checked")
    p.add_argument("--n", type=int, default=1_000_000, help="commands (default 1,000,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--fresh-every", type=int, default=20_000,
                   help="commands between fresh TPMs (default 20,000)")
    p.add_argument("--max-ms", type=float, default=1000.0,
                   help="a command slower than this is a finding (default 1000)")
    p.add_argument("--hang-s", type=float, default=10.0,
                   help="interrupt a command after this many seconds (default 10)")
    p.add_argument("--differential", action="store_true",
                   help="valid commands to our TPM and a swtpm; count rc mismatches")
    p.add_argument("--scenarios", type=int, default=1000,
                   help="with --differential: scripted scenarios to compare (default 1000)")
    p.add_argument("--json", metavar="FILE", help="also write JSON to FILE ('-': stdout)")
    p.set_defaults(func=main)
