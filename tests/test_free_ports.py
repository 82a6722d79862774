"""Port claims: concurrent callers never get the same port, and stale claims expire."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time

import pytest

from domS0 import free_ports
from domS0.free_ports import PORT_CEILING, PORT_FLOOR, claims_dir, free_port


def _ports(count: int) -> list[int]:
    return [free_port(2) for _ in range(count)]


def test_ports_are_below_the_ephemeral_range_and_claimed() -> None:
    port = free_port(2)
    assert PORT_FLOOR <= port and port + 1 < PORT_CEILING
    assert (claims_dir() / str(port)).exists()
    assert (claims_dir() / str(port + 1)).exists()


def test_concurrent_processes_never_share_a_port() -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        batches = pool.map(_ports, [50] * 4)
    spans = [p + i for batch in batches for p in batch for i in range(2)]
    assert len(spans) == len(set(spans)) == 400


def test_a_bound_port_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    (claims_dir() / str(port)).unlink()
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        # Start the scan exactly at the bound, unclaimed port.
        monkeypatch.setattr(free_ports.secrets, "randbelow", lambda _: port - PORT_FLOOR)
        assert free_port() != port


def test_a_stale_claim_is_taken_over_and_a_fresh_one_is_not() -> None:
    port = free_port()
    marker = claims_dir() / str(port)
    assert not free_ports._claim(marker)
    old = time.time() - free_ports.CLAIM_SECONDS - 1
    os.utime(marker, (old, old))
    assert free_ports._claim(marker)
    assert not free_ports._claim(marker)
