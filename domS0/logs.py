"""Logging for DomS0: a line per event, as text or as JSON objects.

Each TPM command or API request produces exactly one line with the vTPM, the
caller, what was asked (command code or method), the outcome and the duration.
Command and response bodies never reach a log: they may carry secrets.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

REQUEST_LOGGER = "doms0.request"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_request(event: str, started: float, **fields: Any) -> None:
    """Write the one line for a finished request; ``started`` is a perf_counter()."""
    fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
    logging.getLogger(REQUEST_LOGGER).info(event, extra={"fields": fields})
