"""Latency samples, their summaries, and the two output forms (table and JSON)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO


def percentile(sorted_ns: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples, in microseconds."""
    if not sorted_ns:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1000.0


@dataclass(frozen=True)
class Row:
    """One measured (path, command): the JSON schema of ``bench transmit``."""

    path: str
    command: str
    n: int
    p50_us: float
    p99_us: float
    ops_per_s: float

    @classmethod
    def from_samples(cls, path: str, command: str, samples_ns: Sequence[int],
                     wall_s: float) -> Row:
        ordered = sorted(samples_ns)
        return cls(path, command, len(ordered), round(percentile(ordered, 0.50), 1),
                   round(percentile(ordered, 0.99), 1),
                   round(len(ordered) / wall_s, 1) if wall_s > 0 else math.nan)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns left-aligned for text, right-aligned for numbers."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) for r in rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def emit(table: str, document: dict[str, Any], json_target: str | None) -> None:
    """Print the table; write JSON to ``json_target`` (a path, or ``-`` for stdout).

    With ``--json -`` stdout carries only the JSON, so the table goes to stderr.
    """
    table_out: TextIO = sys.stderr if json_target == "-" else sys.stdout
    print(table, file=table_out, flush=True)
    if json_target is None:
        return
    text = json.dumps(document, indent=2) + "\n"
    if json_target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(json_target).write_text(text)
        print(f"JSON written to {json_target}", file=table_out)


def rows_as_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
