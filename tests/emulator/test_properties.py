"""Every codec structure round-trips, and the codec refuses damaged bytes with TpmError.

The structures are found, not listed: every codec dataclass in the emulator's modules
(``structures``, the Part 3 parameter/response shapes in ``commands``, the snapshot
records in ``state``, and whatever module is added next), every structure the command
table names, and everything nested in those. Hypothesis strategies are built from the
same ``Annotated`` wire rules the codec reads (``Int`` with or without an allowed set,
``Sized``, ``Raw`` with a fixed or sibling-chosen length, ``ListOf``, nested
structures, ``PcrSelect``, ``Selected`` unions). A wire rule this file does not know is
still covered: its values are read from random bytes by the rule itself; if it accepts
too few of them Hypothesis' filter health check fails, which is the cue to add a
strategy to ``_strategy_for_wire``.

Examples per test: ``VTPM_PROPERTY_EXAMPLES`` (default 25, the "ci" profile); set
``VTPM_PROPERTY_EXAMPLES=2000`` for a deep run.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import os
import pkgutil
import random
from functools import cache
from types import SimpleNamespace
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import tpm_emulator
from tpm_emulator import commands, state, structures
from tpm_emulator.codec import (
    Int,
    ListOf,
    Raw,
    Reader,
    Sized,
    Struct,
    Wire,
    marshal,
    schema,
    unmarshal,
    wire_for,
)
from tpm_emulator.constants import PCR_SELECT_MAX, PCR_SELECT_MIN, RC, TPM_ALG
from tpm_emulator.errors import TpmError
from tpm_emulator.structures import PcrSelect, Selected

settings.register_profile(
    "vtpm-properties",
    max_examples=int(os.environ.get("VTPM_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
PROFILE = settings.get_profile("vtpm-properties")


# ---- discovery ---------------------------------------------------------------------
def _is_codec_structure(cls: Any) -> bool:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return False
    try:
        schema(cls)
    except (TypeError, NameError):  # a plain dataclass, not a wire structure
        return False
    return True


def _nested(cls: type) -> list[type]:
    """Codec structures reachable from ``cls`` through its wire rules."""
    out: list[type] = []

    def visit(wire: Wire) -> None:
        if isinstance(wire, Struct):
            out.append(wire.cls)
        elif isinstance(wire, ListOf):
            visit(wire._elem())
        elif isinstance(wire, Selected):
            for member in wire.members.values():
                visit(wire_for(member))

    for _, wire in schema(cls):
        visit(wire)
    return out


def _emulator_modules() -> list[Any]:
    mods = [structures, commands, state]
    for info in pkgutil.walk_packages(tpm_emulator.__path__, "tpm_emulator."):
        try:
            mods.append(importlib.import_module(info.name))
        except Exception:  # a module another change left broken fails its own tests
            continue
    return mods


def discover() -> list[type]:
    """Every codec structure, in a stable order."""
    roots: list[type] = []
    for mod in _emulator_modules():
        roots += [v for v in vars(mod).values()
                  if _is_codec_structure(v) and v.__module__ == mod.__name__]
    for spec in commands.COMMANDS.values():
        roots += [spec.params, spec.response]
    found: dict[type, None] = {}
    while roots:
        cls = roots.pop()
        if cls not in found:
            found[cls] = None
            roots += _nested(cls)
    return sorted(found, key=lambda c: (c.__module__, c.__qualname__))


STRUCTURES = discover()
IDS = [f"{c.__module__.removeprefix('tpm_emulator.')}.{c.__qualname__}" for c in STRUCTURES]


def test_discovery_finds_the_declared_structures() -> None:
    names = set(IDS)
    for expected in ("structures.TPMS_CAPABILITY_DATA", "structures.TPMT_HA",
                     "commands.StartAuthSession_In", "commands.PCR_Read_Out",
                     "state.StateRecord", "state.ResetDataRecord"):
        assert expected in names
    for spec in commands.COMMANDS.values():
        assert spec.params in STRUCTURES and spec.response in STRUCTURES


# ---- strategies from wire rules ------------------------------------------------------
_HANDLE_BASES = (0x00000000, 0x01000000, 0x02000000, 0x03000000, 0x40000000, 0x80000000,
                 0x81000000)


@cache
def _int_strategy(wire: Int) -> st.SearchStrategy[int]:
    top = (1 << (8 * wire.st.size)) - 1
    if wire.allowed is not None:
        lo, hi = min(wire.allowed), max(wire.allowed)
        if len(wire.allowed) == hi - lo + 1:  # a range (a handle type): no list needed
            return st.integers(lo, hi)
        return st.sampled_from(sorted(wire.allowed))
    edges = st.sampled_from(sorted({0, 1, top, top >> 1, (top >> 1) + 1}))
    handles = st.builds(lambda b, o: (b + o) & top, st.sampled_from(_HANDLE_BASES),
                        st.integers(0, 64))
    any_int = st.integers(0, top)
    if wire.st.size == 4:
        return st.one_of(edges, handles, any_int)
    return st.one_of(edges, any_int)


@cache
def _accepted_ints(wire: Int) -> list[int]:
    """Boundary values and handle-range starts that an Int rule with its own check takes."""
    top = (1 << (8 * wire.st.size)) - 1
    probes = {0, 1, top, top >> 1, (top >> 1) + 1, *(1 << b for b in range(8 * wire.st.size))}
    probes |= {(b + o) & top for b in _HANDLE_BASES for o in range(65)}
    return sorted(v for v in probes if _reads_back(wire, v, {}))


def _reads_back(wire: Wire, value: Any, prior: dict[str, Any]) -> bool:
    """Whether ``wire`` accepts the bytes it writes for ``value``."""
    out = bytearray()
    try:
        wire.write(out, value, SimpleNamespace(**prior))  # a union rule looks at siblings
    except Exception:  # a candidate of the wrong shape (another union member's value)
        return False
    r = Reader(bytes(out))
    try:
        back = wire.read(r, dict(prior))
    except TpmError:
        return False
    return not r.remaining() and back == value  # the rule read exactly what it wrote


def _strategy_for_wire(wire: Wire, prior: dict[str, Any],
                       python_type: Any = None) -> st.SearchStrategy[Any]:
    kind = type(wire)
    if isinstance(wire, Int):
        base = _int_strategy(wire)
        if kind.read is Int.read:
            return base
        # A TPMI_ type with its own check (a context handle, TPMA bits): keep a drawn
        # value it accepts, else one of the boundary values it accepts.
        pool = _accepted_ints(wire)

        @st.composite
        def checked(draw: st.DrawFn) -> int:
            v = draw(base)
            if _reads_back(wire, v, prior) or not pool:
                return v
            return draw(st.sampled_from(pool))

        return checked()
    if kind is Sized:
        lo, hi = wire.min_size, wire.max_size
        # The largest size only while it fits Hypothesis' buffer comfortably.
        edges = sorted({lo, hi} if hi <= 1024 else {lo, lo + 1})
        return st.one_of(st.binary(min_size=lo, max_size=min(hi, lo + 64)),
                         st.sampled_from(edges).flatmap(
                             lambda n: st.binary(min_size=n, max_size=n)))
    if kind is Raw:
        n = wire.length(prior) if callable(wire.length) else wire.length
        return st.binary(min_size=n, max_size=n)
    if kind is ListOf:
        cap = wire.max_count if wire.max_count <= 16 else 6
        return st.lists(_strategy_for_wire(wire._elem(), {}), max_size=cap).map(tuple)
    if kind is Struct:
        return strategy_for(wire.cls)
    if kind is Selected:
        return _strategy_for_wire(wire_for(wire.members[prior[wire.selector]]), prior)
    if kind is PcrSelect:
        return st.integers(PCR_SELECT_MIN, PCR_SELECT_MAX).flatmap(
            lambda n: st.binary(min_size=n, max_size=n))
    return _unknown_rule(wire, prior, python_type)


def _unknown_rule(wire: Wire, prior: dict[str, Any], python_type: Any) -> st.SearchStrategy[Any]:
    """A wire rule declared outside the codec: try what it probably wraps (the codec
    structure its annotation names, or its ``cls``/``inner``/``members``), and values
    it reads itself out of token-built bytes; keep only what it reads back. A rule none
    of that satisfies is a gap: the test fails and says where to add a strategy."""
    candidates: list[st.SearchStrategy[Any]] = []
    for inner in (python_type, getattr(wire, "cls", None)):
        if _is_codec_structure(inner):
            candidates.append(strategy_for(inner))
    if isinstance(getattr(wire, "inner", None), Wire):
        candidates.append(_strategy_for_wire(wire.inner, prior))
    members = getattr(wire, "members", None)
    if isinstance(members, dict):
        for m in members.values():
            if isinstance(m, Wire) or _is_codec_structure(m):
                candidates.append(_strategy_for_wire(wire_for(m) if not isinstance(m, Wire)
                                                     else m, prior))

    if not candidates:
        mined = _mined(wire, tuple(sorted((k, repr(v)) for k, v in prior.items())), prior)
        if not mined:
            pytest.fail(f"no strategy for wire rule {type(wire).__qualname__}; add one to "
                        f"test_properties._strategy_for_wire")
        return st.sampled_from(mined)

    @st.composite
    def accepted(draw: st.DrawFn) -> Any:
        for _ in range(8):
            value = draw(st.one_of(candidates))
            if _reads_back(wire, value, prior):
                return value
        reject()

    return accepted()


_MINED: dict[tuple[int, Any], list[Any]] = {}


def _mined(wire: Wire, key: Any, prior: dict[str, Any]) -> list[Any]:
    """Values an unknown rule reads out of 4,000 token-built byte strings (fixed seeds,
    so the outcome does not vary from run to run)."""
    got = _MINED.get((id(wire), key))
    if got is None:
        extra = _tokens_of(wire)
        found: dict[bytes, Any] = {}
        # First every short sequence of the most common u16 fields (an algorithm, a key
        # size, a mode: how the TPMT_SYM_DEF-like rules are laid out), then noise.
        for data in _core_candidates(wire, prior):
            value = _try_read(wire, data, prior)
            if value is not _REFUSED:
                found.setdefault(data, value)
        for seed in range(4000 if len(found) < 8 else 0):
            data = _token_bytes(seed, extra)
            value = _try_read(wire, data, prior)
            if value is not _REFUSED:
                found.setdefault(data, value)
            if len(found) >= 64:
                break
        got = _MINED[(id(wire), key)] = list(found.values())
    return got


_CORE_TOKENS = tuple(int(n).to_bytes(2, "big") for n in (
    TPM_ALG.NULL, TPM_ALG.AES, TPM_ALG.SHA256, TPM_ALG.CFB, TPM_ALG.CTR, TPM_ALG.OFB,
    TPM_ALG.CBC, TPM_ALG.ECB, 128, 192, 256))


_CORE_FOUND: dict[int, list[bytes]] = {}


def _core_candidates(wire: Wire, prior: dict[str, Any]) -> list[bytes]:
    """The core-token sequences this rule ever read (searched once per rule: the
    search is 1,463 reads; each caller re-checks them against its own prior fields)."""
    found = _CORE_FOUND.get(id(wire))
    if found is None:
        found = _CORE_FOUND[id(wire)] = [
            data for data in map(b"".join, itertools.chain.from_iterable(
                itertools.product(_CORE_TOKENS, repeat=n) for n in (1, 2, 3)))
            if _try_read(wire, data, prior) is not _REFUSED][:64]
    return found


def _tokens_of(wire: Wire) -> tuple[bytes, ...]:
    """u16 encodings of the integers a rule object itself holds (its allowed values),
    and of every algorithm identifier and common key size (rules that check against
    module-level tables hold none of their own)."""
    out: set[bytes] = {int(a).to_bytes(2, "big") for a in TPM_ALG}
    out |= {n.to_bytes(2, "big") for n in (128, 192, 256, 1024, 2048, 3072)}
    for v in vars(wire).values():
        for n in (v if isinstance(v, tuple | list | frozenset | set) else (v,)):
            if isinstance(n, int) and 0 <= n <= 0xFFFF:
                out.add(n.to_bytes(2, "big"))
    return tuple(sorted(out))


_REFUSED = object()


def _try_read(wire: Wire, data: bytes, prior: dict[str, Any]) -> Any:
    try:
        return wire.read(Reader(data), dict(prior))
    except TpmError:
        return _REFUSED


@cache
def _tokens() -> tuple[bytes, ...]:
    """Big-endian encodings of every value an ``Int`` rule of a known structure allows,
    plus small numbers: what unknown rules are most likely to want next."""
    found = {n.to_bytes(w, "big") for n in (0, 1, 2, 16, 32, 128, 192, 256) for w in (1, 2, 4)
             if n < 1 << (8 * w)}

    def visit(wire: Wire) -> None:
        if isinstance(wire, Int) and wire.allowed is not None and len(wire.allowed) <= 256:
            found.update(v.to_bytes(wire.st.size, "big") for v in wire.allowed)

    for cls in STRUCTURES:
        for _, wire in schema(cls):
            visit(wire)
            if isinstance(wire, ListOf):
                visit(wire._elem())
    return tuple(sorted(found))


def _token_bytes(seed: int, first: tuple[bytes, ...] = ()) -> bytes:
    rng = random.Random(seed)
    tokens = _tokens() + first + _ALG_TOKENS
    head = rng.choice(first or _ALG_TOKENS) if rng.random() < 0.5 else b""
    return head + b"".join(rng.choice(tokens) if rng.random() < 0.8 else rng.randbytes(2)
                           for _ in range(rng.choice((0, 1, 1, 2, 3, rng.randint(0, 12)))))


_ALG_TOKENS = tuple(int(a).to_bytes(2, "big") for a in TPM_ALG)


@cache
def strategy_for(cls: type) -> st.SearchStrategy[Any]:
    """Values of a codec structure: fields drawn in wire order, so a field whose rule
    depends on an earlier sibling (a digest sized by ``hashAlg``, a union chosen by its
    selector) sees that sibling's value."""
    fields = schema(cls)
    selectors = {w.selector: w for _, w in fields if isinstance(w, Selected)}
    hints = get_type_hints(cls, include_extras=True)
    types = {name: get_args(hints[name])[0] if get_origin(hints[name]) is Annotated
             else hints[name] for name, _ in fields}

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        values: dict[str, Any] = {}
        for name, wire in fields:
            if name in selectors:
                values[name] = draw(st.sampled_from(sorted(selectors[name].members)))
            else:
                values[name] = draw(_strategy_for_wire(wire, values, types[name]))
        return cls(**values)

    return build()


# ---- the properties ------------------------------------------------------------------
def _reads_from_nothing(wire: Wire) -> bool:
    try:
        wire.read(Reader(b""), {})
    except Exception:  # any refusal (or a rule needing siblings) counts
        return False
    return True


@cache
def has_optional_part(cls: type) -> bool:
    """Whether some field reads from no input at all (``state.Trailing``: a record added
    to a format after it shipped). Such a structure has prefixes that parse, and more
    than one encoding of a value, by design."""
    return any(_reads_from_nothing(w) or (isinstance(w, Struct) and has_optional_part(w.cls))
               for _, w in schema(cls))


structure = pytest.mark.parametrize("cls", STRUCTURES, ids=IDS)


@structure
@PROFILE
@given(data=st.data())
def test_unmarshal_inverts_marshal(cls: type, data: st.DataObject) -> None:
    value = data.draw(strategy_for(cls))
    wire = marshal(value)
    back = unmarshal(cls, wire)
    assert back == value
    assert marshal(back) == wire


@structure
@PROFILE
@given(data=st.data())
def test_truncated_encoding_is_insufficient(cls: type, data: st.DataObject) -> None:
    wire = marshal(data.draw(strategy_for(cls)))
    if not wire:
        return  # a structure with no fields has no proper prefix
    cut = data.draw(st.integers(0, len(wire) - 1))
    try:
        unmarshal(cls, wire[:cut])
    except TpmError as e:
        assert e.rc == RC.INSUFFICIENT or has_optional_part(cls), hex(e.rc)
    else:
        assert has_optional_part(cls), f"a {cut}-octet prefix of {len(wire)} parsed"


@structure
@PROFILE
@given(data=st.data(), extra=st.binary(min_size=1, max_size=16))
def test_trailing_octets_are_refused(cls: type, data: st.DataObject, extra: bytes) -> None:
    wire = marshal(data.draw(strategy_for(cls)))
    with pytest.raises(TpmError) as e:
        unmarshal(cls, wire + extra)
    assert e.value.rc == RC.SIZE


@structure
@PROFILE
@given(data=st.data())
def test_arbitrary_bytes_parse_canonically_or_fail_with_tpm_error(
    cls: type, data: st.DataObject
) -> None:
    """Bytes that parse are exactly the encoding of what they parse to (one encoding
    per value); bytes that do not parse fail with TpmError and nothing else. Half the
    inputs are a valid encoding with a few octets changed, to get past the first field."""
    wire = marshal(data.draw(strategy_for(cls)))
    if wire and data.draw(st.booleans()):
        damaged = bytearray(wire)
        for _ in range(data.draw(st.integers(1, 3))):
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(
                st.integers(0, 255))
        blob = bytes(damaged)
    else:
        blob = data.draw(st.binary(max_size=256))
    try:
        value = unmarshal(cls, blob)
    except TpmError:
        return
    if has_optional_part(cls):
        assert unmarshal(cls, marshal(value)) == value
    else:
        assert marshal(value) == blob
