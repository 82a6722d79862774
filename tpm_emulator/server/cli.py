"""``tpm-emulator``: our TPM 2.0 behind the transports TPM clients know.

    tpm-emulator socket --tpm2 --server type=tcp,port=2321 --ctrl type=tcp,port=2322 \\
        --flags not-need-init,startup-clear --tpmstate dir=/var/lib/tpm
    tpm-emulator mssim --port 2321 --tpmstate dir=/var/lib/tpm
    TPM2TOOLS_TCTI="cmd:tpm-emulator stdio --tpmstate dir=/var/lib/tpm" tpm2_getrandom 8

``socket`` is a drop-in for ``swtpm socket --tpm2`` (the ``swtpm:`` TCTI, QEMU-like
clients); ``mssim`` speaks the Microsoft simulator's protocol (the ``mssim:``
TCTI); ``stdio`` serves one ``cmd:`` TCTI context on stdin/stdout.

``socket`` takes the swtpm options that scripts and test harnesses pass. ``--pid``,
``--log file=|fd=`` and ``--daemon`` are honoured; options that do not apply to it
(``--seccomp``, ``--locality``, ``--runas``, ``--chroot``, ``--profile``,
``--migration``, ``--terminate``, ``--log level=``) are accepted and ignored.
Options that would change security (``--key``, ``--migration-key``) are refused
rather than silently ignored: state the caller asked to encrypt must not land on
disk in the clear.
"""

from __future__ import annotations

import argparse
import os
import signal
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import swtpm_ctrl as ctrl
from ..errors import StateFormatError
from .control import PLATFORM_CAPS, ControlSession
from .local import LocalBackend
from .mssim import MssimServer, Platform
from .stdio import private_stdout, serve
from .swtpm_socket import Endpoint, SwtpmSocketServer

CAPS = PLATFORM_CAPS | ctrl.Capability.GET_STATEBLOB | ctrl.Capability.SET_STATEBLOB
IGNORED = ("--seccomp", "--locality", "--runas", "--chroot", "--profile", "--migration")
# swtpm's --flags (swtpm-protocols.md 2.1); startup-* other than none imply not-need-init.
STARTUP_TYPES = {"startup-clear": 0x0000, "startup-state": 0x0001}  # TPM_SU (Part 2, 6.5)
RUNNING_FLAGS = {"not-need-init", *STARTUP_TYPES}
KNOWN_FLAGS = RUNNING_FLAGS | {"startup-none", "startup-deactivated", "disable-auto-shutdown"}
ENDPOINT_EXTRAS = {"mode", "uid", "gid", "disconnect", "terminate"}
TPM2_CC_STARTUP = 0x144


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
    """swtpm's ``--server``/``--ctrl`` value; ``mode``/``uid``/``gid``/``disconnect``/
    ``terminate`` are accepted and ignored (sockets are created owner-only)."""
    options = parse_options(text)
    kind = options.get("type", "tcp")
    for inherited in ("fd", "clientfd"):
        if inherited in options:
            raise UsageError(f"{what} {inherited}=: inherited sockets are not supported; "
                             "pass port= or path=")
    unknown = set(options) - {"type", "port", "bindaddr", "path"} - ENDPOINT_EXTRAS
    if unknown:
        raise UsageError(f"{what}: unknown option(s) {', '.join(sorted(unknown))}")
    if kind == "unixio":
        if not options.get("path"):
            raise UsageError(f"{what} type=unixio needs path=")
        return Endpoint(path=options["path"])
    if kind != "tcp" or not options.get("port", "").isdigit():
        raise UsageError(f"{what} expects type=tcp,port=N[,bindaddr=A] or "
                         "type=unixio,path=P")
    return Endpoint(host=options.get("bindaddr", "127.0.0.1"), port=int(options["port"]))


def state_dir_of(tpmstate: str | None) -> Path | None:
    """``dir=D`` or ``backend-uri=dir://D`` (``mode``, ``lock``, ``backup``, ``fsync``
    are accepted: we always lock, and always fsync)."""
    if tpmstate is None:
        return None
    options = parse_options(tpmstate)
    uri = options.get("backend-uri", "")
    if uri and not uri.startswith("dir://"):
        raise UsageError("--tpmstate backend-uri= supports dir:// only")
    where = options.get("dir") or uri.removeprefix("dir://")
    if not where:
        raise UsageError("--tpmstate expects dir=D")
    path = Path(where)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        # Not mkdir's mode: it is masked by the umask, and tpm2-tools (whose cmd:
        # TCTI starts us) run with umask 0177, which would leave the folder
        # untraversable.
        path.chmod(0o700)
    return path


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tpmstate", help="dir=D: keep the TPM's state in D")
    parser.add_argument("--log", help="file=F or fd=N: write diagnostics there "
                        "(level= is ignored)")


def add_process_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid", help="file=F or fd=N: write our pid there")
    parser.add_argument("-d", "--daemon", action="store_true",
                        help="detach once listening")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tpm-emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)

    sock = sub.add_parser("socket", help="swtpm-compatible data and control sockets")
    sock.add_argument("--tpm2", action="store_true", help="required: only TPM 2.0 exists")
    sock.add_argument("--server", required=True, help="[type=tcp,]port=P[,bindaddr=A] or "
                      "type=unixio,path=P")
    sock.add_argument("--ctrl", help="control channel; default: data port + 1")
    sock.add_argument("--flags", default="", help="not-need-init, startup-clear, ...")
    sock.add_argument("-t", "--terminate", action="store_true", help="accepted and ignored")
    add_common(sock)
    add_process_options(sock)
    for name in IGNORED:
        sock.add_argument(name, help="accepted and ignored")
    for name in ("--key", "--migration-key"):
        sock.add_argument(name, help="refused: state encryption belongs to DomS0")

    mssim = sub.add_parser("mssim", help="Microsoft simulator protocol (mssim: TCTI): "
                           "TPM commands on --port, platform signals on --port + 1")
    mssim.add_argument("--port", type=int, default=2321)
    mssim.add_argument("--bindaddr", default="127.0.0.1")
    add_common(mssim)
    add_process_options(mssim)

    stdio = sub.add_parser("stdio", help="commands on stdin, responses on stdout "
                           "(cmd: TCTI)")
    add_common(stdio)
    return parser


def redirect_log(log: str | None) -> None:
    """``--log file=F|fd=N``: stderr goes there from now on."""
    options = parse_options(log or "")
    if options.get("file"):
        fd = os.open(options["file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    elif options.get("fd", "").isdigit():
        os.dup2(int(options["fd"]), 2)


def check_pid_option(pid: str | None) -> None:
    options = parse_options(pid or "")
    if pid and not (options.get("file") or options.get("fd", "").isdigit()):
        raise UsageError("--pid expects file=F or fd=N")


def write_pid(pid: str | None, value: int) -> None:
    options = parse_options(pid or "")
    if options.get("file"):
        Path(options["file"]).write_text(f"{value}\n")
    elif options.get("fd", "").isdigit():
        fd = int(options["fd"])
        os.write(fd, f"{value}\n".encode())
        os.close(fd)


def detach(pid: str | None, keep_stderr: bool) -> None:
    """--daemon: the parent records the child's pid and returns (we are already
    listening, so the caller may connect at once); the child runs on."""
    child = os.fork()
    if child:
        write_pid(pid, child)
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if keep_stderr else (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def startup_command(startup_type: int) -> bytes:
    return struct.pack(">HIIH", 0x8001, 12, TPM2_CC_STARTUP, startup_type)


def run_socket(args: argparse.Namespace) -> int:
    if args.key or args.migration_key:
        raise UsageError("--key/--migration-key are not supported; run the TPM under "
                         "DomS0 for encrypted state")
    if not args.tpm2:
        raise UsageError("only TPM 2.0 is emulated: pass --tpm2")
    data = endpoint(args.server, "--server")
    control = endpoint(args.ctrl, "--ctrl") if args.ctrl else (
        Endpoint(host=data.host, port=data.port + 1) if not data.path
        else Endpoint(path=data.path + ".ctrl"))
    flags = set(parse_options(args.flags))
    if flags - KNOWN_FLAGS:
        raise UsageError(f"--flags: unknown {', '.join(sorted(flags - KNOWN_FLAGS))}")
    backend = LocalBackend(state_dir_of(args.tpmstate))
    for flag, startup_type in STARTUP_TYPES.items():
        if flag in flags:
            # A new swtpm process is a fresh _TPM_Init followed by TPM2_Startup.
            backend.power_cycle(False)
            response = backend.transmit(startup_command(startup_type), 0)
            rc = struct.unpack_from(">I", response, 6)[0]
            if rc:
                print(f"tpm-emulator: --flags {flag}: TPM2_Startup returned "
                      f"TPM_RC {rc:#x}", file=sys.stderr)
    session = ControlSession(backend, CAPS, "tpm-emulator",
                             halted=not flags & RUNNING_FLAGS)
    server = SwtpmSocketServer(session, data, control)
    where = data.path or f"{data.host}:{server.data_address[1]}"
    announce_and_serve(args, f"serving on {where}", server.serve_forever, server.stop)
    return 0


def run_mssim(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65535:
        raise UsageError("--port expects 1..65534 (the platform port is --port + 1)")
    platform = Platform(LocalBackend(state_dir_of(args.tpmstate)))
    server = MssimServer(platform, args.bindaddr, args.port)
    announce_and_serve(args, f"mssim serving on {args.bindaddr}:{args.port} "
                       f"(platform {args.port + 1})", server.serve_forever, server.stop)
    return 0


def run_stdio(args: argparse.Namespace) -> int:
    out = private_stdout()
    backend = LocalBackend(state_dir_of(args.tpmstate), wait_for_lock=True)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return serve(backend, sys.stdin.fileno(), out)


def announce_and_serve(args: argparse.Namespace, what: str,
                       serve_forever: Callable[[], None], stop: Callable[[], None]) -> None:
    """Listening already: record the pid, say so, detach if asked, serve until told.

    The banner is the readiness signal callers wait for; with --daemon the pid is in
    the --pid file only, since the serving process is the forked child."""
    if args.daemon:
        print(f"tpm-emulator {what}", flush=True)
        detach(args.pid, keep_stderr=bool(parse_options(args.log or "").keys()
                                          & {"file", "fd"}))
    else:
        write_pid(args.pid, os.getpid())
        print(f"tpm-emulator {what} (pid {os.getpid()})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: stop())
    try:
        serve_forever()
    except KeyboardInterrupt:
        stop()


RUNNERS = {"socket": run_socket, "mssim": run_mssim, "stdio": run_stdio}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_pid_option(getattr(args, "pid", None))
        redirect_log(args.log)
        return RUNNERS[args.mode](args)
    except (UsageError, StateFormatError, OSError) as exc:
        print(f"tpm-emulator: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
