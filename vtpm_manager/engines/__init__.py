"""Engines: the TPM 2.0 implementations a vTPM can run on."""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine
from ..errors import InvalidArgument

ENGINE_NAMES = ("builtin", "swtpm")


def make_engine(name: str, run_dir: Path) -> Engine:
    """Build an engine by name; ``run_dir`` is private scratch space for it."""
    if name == "builtin":
        from .builtin import BuiltinEngine

        return BuiltinEngine()
    if name == "swtpm":
        from .swtpm import SwtpmEngine

        return SwtpmEngine(run_dir)
    raise InvalidArgument(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}")
