"""``python -m bench {transmit,load,manufacture,measure,migrate,fuzz,engine}``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import engine, fuzz, load, manufacture, measure, migrate, transmit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="vtpm-stack benchmarks (figures only).")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    transmit.add_parser(sub)
    load.add_parser(sub)
    manufacture.add_parser(sub)
    measure.add_parser(sub)
    migrate.add_parser(sub)
    fuzz.add_parser(sub)
    engine.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
