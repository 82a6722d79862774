"""``python -m bench engine`` with tiny counts: the JSON it writes has one row per
command and engine, every row the engine implements carries figures, and only Sign and
Quote (being written) may still be missing from the builtin engine."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import main
from bench.engine_latency import CASES, NOT_IMPLEMENTED, OK

#: Builtin rows that may still say "not implemented" while those commands are written.
PENDING = ("Sign ", "Quote ")


def test_engine_bench_writes_figures_for_every_implemented_row(tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    assert main(["engine", "--n", "3", "--cold-n", "1", "--warmup", "1",
                 "--idle-tpms", "3", "--idle-swtpms", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())

    assert doc["benchmark"] == "engine"
    rows = {(r["command"], r["engine"]): r for r in doc["rows"]}
    assert set(rows) == {(c.name, e) for c in CASES for e in ("builtin", "swtpm")}
    for case in CASES:
        for engine in ("builtin", "swtpm"):
            row = rows[(case.name, engine)]
            if engine == "builtin" and case.name.startswith(PENDING):
                assert row["status"] in (OK, NOT_IMPLEMENTED), row
            else:
                assert row["status"] == OK, row
            if row["status"] == OK:
                assert row["n"] == (1 if case.cold else 3)
                assert 0 < row["p50_us"] <= row["p90_us"], row
            else:
                assert row["n"] == 0 and row["p50_us"] is None and row["p90_us"] is None

    builtin, swtpm = doc["memory"]["builtin"], doc["memory"]["swtpm"]
    assert builtin["count"] == 3 and swtpm["count"] == 1
    assert builtin["process_rss_kib_with_one_tpm"] > 0 and builtin["snapshot_bytes"] > 0
    assert builtin["python_heap_kib_per_tpm"] > 0
    assert 0 < swtpm["uss_kib_per_process"] <= swtpm["pss_kib_per_process"] \
        <= swtpm["rss_kib_per_process"]
