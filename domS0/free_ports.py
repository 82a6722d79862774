"""Loopback ports for child servers, claimed so that concurrent callers never share one.

A probe ("bind port 0, close, hand the number on") is not enough when several
processes start servers at once, as parallel test workers do: the kernel may hand
the same just-closed port to two probes, or a client connection may take it as its
local port before the server binds. So ports come from below the kernel's
ephemeral range, where no connection takes a local port, and each one is claimed by
creating a marker file with O_EXCL in a directory every caller on the host shares.
A claim is honoured for CLAIM_SECONDS, ample time for a child to bind; after that
the bind probe alone protects a port that is in use.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from pathlib import Path

#: Below Linux's default ephemeral range (32768-60999) and above well-known services.
PORT_FLOOR = 15000
PORT_CEILING = 32000
CLAIM_SECONDS = 900.0


def claims_dir() -> Path:
    """The host-wide directory of port claims (one empty file per claimed port)."""
    folder = Path(tempfile.gettempdir()) / f"vtpm-stack-ports-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def free_port(span: int = 1) -> int:
    """A port P such that P .. P+span-1 are free on 127.0.0.1 and claimed for us."""
    folder = claims_dir()
    count = PORT_CEILING - PORT_FLOOR - span
    start = secrets.randbelow(count)
    for step in range(count):
        base = PORT_FLOOR + (start + step) % count
        if _claim_all(folder, base, span):
            if all(_port_free(base + i) for i in range(span)):
                return base
    raise RuntimeError(f"no free port range in {PORT_FLOOR}-{PORT_CEILING} on 127.0.0.1")


def _claim_all(folder: Path, base: int, span: int) -> bool:
    """Claim base .. base+span-1, or none of them."""
    taken: list[Path] = []
    for port in range(base, base + span):
        marker = folder / str(port)
        if not _claim(marker):
            for held in taken:
                held.unlink(missing_ok=True)
            return False
        taken.append(marker)
    return True


def _claim(marker: Path) -> bool:
    try:
        age = time.time() - marker.stat().st_mtime
    except FileNotFoundError:
        age = None
    if age is not None:
        if age < CLAIM_SECONDS:
            return False
        marker.unlink(missing_ok=True)
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
