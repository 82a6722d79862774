"""Engines: the TPM 2.0 implementations a vTPM can run on.

``make_engine(name, run_dir, options)`` builds one. ``options`` are DomS0 settings
an engine needs and cannot guess, passed explicitly rather than read from the
environment so that two DomS0s in one process tree cannot leak into each other:

- ``host_tcti`` (passthrough): the host TPM's tpm2-tss TCTI, e.g.
  ``device:/dev/tpmrm0`` or ``tabrmd:``; without it the engine is unavailable.
- ``host_pcrs`` (passthrough): the PCRs the host measures into, e.g. ``0-15``
  (the default); a passthrough vTPM may not extend or reset them.

A manager gets a factory with the options bound: ``engine_factory(options)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

from ..engine import Engine
from ..errors import FailedPrecondition, InvalidArgument

ENGINE_NAMES = ("builtin", "swtpm", "passthrough")
OPTION_NAMES = frozenset({"host_tcti", "host_pcrs"})


def make_engine(name: str, run_dir: Path, options: Mapping[str, str] | None = None) -> Engine:
    """Build an engine by name; ``run_dir`` is private scratch space for it."""
    options = options or {}
    unknown = set(options) - OPTION_NAMES
    if unknown:
        raise InvalidArgument(
            f"unknown engine option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(OPTION_NAMES))}"
        )
    if name == "builtin":
        from .builtin import BuiltinEngine

        return BuiltinEngine()
    if name == "swtpm":
        from .swtpm import SwtpmEngine

        return SwtpmEngine(run_dir)
    if name == "passthrough":
        return _passthrough(options)
    raise InvalidArgument(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}")


def engine_factory(options: Mapping[str, str]) -> partial[Engine]:
    """``make_engine`` with ``options`` bound: what ``VtpmManager(factory=...)`` takes."""
    return partial(make_engine, options=dict(options))


def cannot_migrate(name: str) -> str | None:
    """Why a vTPM on engine ``name`` can never hand its state out, or None.

    The manager asks before an explicit export or import of state (migration, QEMU
    state blobs); its own commits go on, since the engine exports a marker for them.
    """
    if name == "passthrough":
        from .passthrough import NOT_MIGRATABLE

        return NOT_MIGRATABLE
    return None


def _passthrough(options: Mapping[str, str]) -> Engine:
    from .passthrough import DEFAULT_HOST_PCRS, PassthroughEngine, parse_pcr_set

    host_tcti = options.get("host_tcti", "")
    if not host_tcti:
        raise FailedPrecondition(
            "this DomS0 has no host TPM for passthrough vTPMs; start it with "
            "--passthrough-tcti device:/dev/tpmrm0 (or tabrmd:)"
        )
    try:
        pcrs = parse_pcr_set(options["host_pcrs"]) if "host_pcrs" in options \
            else DEFAULT_HOST_PCRS
        return PassthroughEngine(host_tcti, pcrs)
    except ValueError as exc:
        raise InvalidArgument(f"passthrough engine: {exc}") from exc
