"""doms0: run DomS0 (``serve``) and administer its host."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from domS0.config import ConfigError, load_settings
from domS0.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doms0", description="The vTPM security domain.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve vTPMs over gRPC and control sockets")
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument("--state-dir", help="where vTPM records live (default /var/lib/doms0)")
    serve.add_argument("--listen", help="127.0.0.1:PORT or unix:PATH (default "
                       "127.0.0.1:7340)")
    serve.add_argument("--run-dir", help="sockets and engine scratch (default: a new "
                       "temporary folder)")
    serve.add_argument("--default-engine", choices=("builtin", "swtpm"))
    serve.add_argument("--log-format", choices=("text", "json"))
    serve.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    demo = sub.add_parser("demo", help="run a DomS0, measure a sample domain, attest it")
    demo.add_argument("demo_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from domS0.demo import main as demo_main

        return demo_main(args.demo_args)
    if args.command == "serve":
        try:
            settings = load_settings(args.config, {
                "state_dir": args.state_dir, "listen": args.listen, "run_dir": args.run_dir,
                "default_engine": args.default_engine, "log_format": args.log_format,
                "log_level": args.log_level,
            })
        except ConfigError as exc:
            print(f"doms0: {exc}", file=sys.stderr)
            return 2
        setup_logging(settings.log_format, settings.log_level)
        from domS0.daemon import StartupError, serve
        from domS0.rpc.server import BindError

        try:
            return serve(settings)
        except (StartupError, BindError, PermissionError, ValueError) as exc:
            print(f"doms0: {exc}", file=sys.stderr)
            return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
