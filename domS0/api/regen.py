"""Regenerate the committed Python code for ``proto/vtpm/v1/*.proto``.

The generated gRPC module imports its message module by the proto package path
(``from vtpm.v1 import vtpm_pb2``); the import name ``vtpm`` is not ours to take at
top level, so the one import line is rewritten to a relative one.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT_DIR = Path(__file__).resolve().parent / "vtpm" / "v1"
_ABSOLUTE_IMPORT = re.compile(r"^from vtpm\.v1 import (\w+_pb2) as", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (grpcio-tools) for every .proto file into ``out_dir``."""
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}", *sources]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on " + ", ".join(sources))
        written = []
        for path in sorted((Path(tmp) / "vtpm" / "v1").glob("*_pb2*.py*")):
            text = _ABSOLUTE_IMPORT.sub(r"from . import \1 as", path.read_text())
            target = out_dir / path.name
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
