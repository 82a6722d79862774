"""DomS0's boot sequence and its orderly stop.

Boot: take the state folder's lock (one DomS0 per folder, or vTPMs would be
cloned), open the root of trust, load every vTPM record (refusing tampered ones by
name), open the per-vTPM control sockets, then serve gRPC. SIGTERM or SIGINT: stop
accepting, let in-flight commands finish, commit every vTPM, exit 0.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

from grpc_health.v1 import health_pb2

from vtpm_manager.durable import atomic_write
from vtpm_manager.kek import load_development_kek
from vtpm_manager.manager import VtpmManager
from vtpm_manager.store import StateStore

from .config import Settings
from .frontends.control_sockets import ControlSockets
from .rpc.auth import TOKEN_FILE, ensure_token
from .rpc.server import build_server

log = logging.getLogger("doms0")

LOCK_FILE = "doms0.lock"
LISTEN_FILE = "doms0.listen"
KEK_FILE = "kek.dev"
RECORDS_DIR = "vtpms"


class StartupError(Exception):
    """DomS0 cannot start; the message says why and what to do."""


def _lock_state_dir(state_dir: Path) -> int:
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(
            f"another DomS0 is serving {state_dir}; stop it first (one DomS0 per state dir)"
        ) from None
    return fd


def serve(settings: Settings) -> int:
    """Run DomS0 until SIGTERM/SIGINT; returns the process exit code."""
    state_dir = settings.state_dir
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_fd = _lock_state_dir(state_dir)
    own_run_root = settings.run_dir is None
    run_root = settings.run_dir or Path(tempfile.mkdtemp(prefix="doms0-"))
    run_root.mkdir(mode=0o700, parents=True, exist_ok=True)

    kek = load_development_kek(state_dir / KEK_FILE)
    manager = VtpmManager(StateStore(state_dir / RECORDS_DIR, kek), run_root,
                          settings.default_engine)
    failures = manager.load()
    log.info("loaded %d vTPM(s), refused %d", len(manager.list()), len(failures))

    sockets = ControlSockets(manager, run_root)
    token = ensure_token(state_dir)
    server, health, port = build_server(
        manager, settings.listen, token, state_dir / TOKEN_FILE, sockets.path_of
    )
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sockets.open_all()
    server.start()
    address = settings.listen if settings.listen.startswith("unix:") else \
        f"{settings.listen.rsplit(':', 1)[0]}:{port}"
    atomic_write(state_dir / LISTEN_FILE, (address + "\n").encode(), mode=0o644)
    log.info("DomS0 serving on %s (state %s, run dir %s)", address, state_dir, run_root)
    try:
        stopping.wait()
    finally:
        health.enter_graceful_shutdown()
        for name in ("",):
            health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        server.stop(settings.grace_seconds).wait()
        sockets.close_all()
        manager.shutdown()
        (state_dir / LISTEN_FILE).unlink(missing_ok=True)
        if own_run_root:
            shutil.rmtree(run_root, ignore_errors=True)
        os.close(lock_fd)
        log.info("DomS0 stopped")
    return 0
