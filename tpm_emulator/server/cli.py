"""``tpm-emulator``: our TPM 2.0 as a drop-in for ``swtpm socket --tpm2``.

    tpm-emulator socket --tpm2 --server type=tcp,port=2321 --ctrl type=tcp,port=2322 \\
        --flags not-need-init,startup-clear --tpmstate dir=/var/lib/tpm

It takes the swtpm options that scripts and test harnesses pass. Options that do not
apply to it (``--seccomp``, ``--log``, ``--locality``, ...) are accepted and ignored;
options that would change security (``--key``, ``--migration-key``) are refused
rather than silently ignored.
"""

from __future__ import annotations

import argparse
import os
import signal
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import swtpm_ctrl as ctrl
from ..errors import StateFormatError
from .control import PLATFORM_CAPS, ControlSession
from .local import LocalBackend
from .swtpm_socket import Endpoint, SwtpmSocketServer

CAPS = PLATFORM_CAPS | ctrl.Capability.GET_STATEBLOB | ctrl.Capability.SET_STATEBLOB
IGNORED = ("--seccomp", "--log", "--locality", "--pid", "--runas", "--chroot", "--profile",
           "--migration")
TPM2_STARTUP_CLEAR = struct.pack(">HIIH", 0x8001, 12, 0x144, 0)


class UsageError(Exception):
    pass


def parse_options(text: str) -> dict[str, str]:
    """``type=tcp,port=2321,bindaddr=127.0.0.1`` -> dict; bare words map to ''."""
    out: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key] = value
    return out


def endpoint(text: str, what: str) -> Endpoint:
    options = parse_options(text)
    kind = options.get("type", "tcp")
    if kind == "unixio":
        if not options.get("path"):
            raise UsageError(f"{what} type=unixio needs path=")
        return Endpoint(path=options["path"])
    if kind != "tcp" or not options.get("port", "").isdigit():
        raise UsageError(f"{what} expects type=tcp,port=N[,bindaddr=A] or "
                         "type=unixio,path=P")
    return Endpoint(host=options.get("bindaddr", "127.0.0.1"), port=int(options["port"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tpm-emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    sock = sub.add_parser("socket", help="swtpm-compatible data and control sockets")
    sock.add_argument("--tpm2", action="store_true", help="accepted; only TPM 2.0 exists")
    sock.add_argument("--server", required=True, help="type=tcp,port=P[,bindaddr=A] or "
                      "type=unixio,path=P")
    sock.add_argument("--ctrl", help="control channel; default: data port + 1")
    sock.add_argument("--flags", default="", help="not-need-init, startup-clear, ...")
    sock.add_argument("--tpmstate", help="dir=D: keep the TPM's state in D")
    sock.add_argument("--terminate", action="store_true", help="accepted and ignored")
    sock.add_argument("-d", "--daemon", action="store_true", help="not supported; "
                      "run it under a supervisor")
    for name in IGNORED:
        sock.add_argument(name, help="accepted and ignored")
    for name in ("--key", "--migration-key"):
        sock.add_argument(name, help="refused: state encryption belongs to DomS0")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.key or args.migration_key:
            raise UsageError("--key/--migration-key are not supported; run the TPM under "
                             "DomS0 for encrypted state")
        if args.daemon:
            raise UsageError("--daemon is not supported; run it under a supervisor")
        data = endpoint(args.server, "--server")
        control = endpoint(args.ctrl, "--ctrl") if args.ctrl else (
            Endpoint(host=data.host, port=data.port + 1) if not data.path
            else Endpoint(path=data.path + ".ctrl"))
        flags = set(parse_options(args.flags))
        state = parse_options(args.tpmstate or "")
        state_dir = Path(state["dir"]) if state.get("dir") else None
        if args.tpmstate and state_dir is None:
            raise UsageError("--tpmstate expects dir=D")
        if state_dir is not None:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        backend = LocalBackend(state_dir)
    except (UsageError, StateFormatError, OSError) as exc:
        print(f"tpm-emulator: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1

    running = bool(flags & {"not-need-init", "startup-clear", "startup-state"})
    if "startup-clear" in flags:
        backend.transmit(TPM2_STARTUP_CLEAR, 0)
    session = ControlSession(backend, CAPS, "tpm-emulator", halted=not running)
    try:
        server = SwtpmSocketServer(session, data, control)
    except OSError as exc:
        print(f"tpm-emulator: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    where = data.path or f"{data.host}:{server.data_address[1]}"
    print(f"tpm-emulator serving on {where} (pid {os.getpid()})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
