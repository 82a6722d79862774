"""What ``bench fuzz`` sends: a command generator driven by the emulator's own
declarations (``fuzz_judge`` checks the answers).

The generator reads the command table (``tpm_emulator.commands.COMMANDS``) and the
codec's wire rules, so a command or structure added there is fuzzed without a change
here. Three kinds of input, mixed:

* ``valid``  — a command from the table: handles its TPMI_ check accepts, an
  authorization area (password sessions, or a loaded session with a made-up HMAC)
  when it takes one, parameters drawn from their wire rules. Values the TPM returned
  earlier under the same wire rule (session handles, saved contexts, tickets …) are
  sent back, so commands that need an earlier command's output are reached too.
* ``scripted`` — the next command of a scripted scenario (``fuzz_sessions`` and
  ``fuzz_scenarios``): real HMAC, policy and trial sessions with parameter encryption
  and audit, sequences, NV indices, context save/load. Values these commands got
  accepted (object templates above all) also seed the wire rules ``valid`` cannot build.
* ``mutated`` — a recent valid command with one to three bit flips, interesting-value
  overwrites, truncations, extensions, deletions, duplications or splices, its size
  field repaired most of the time so the damage reaches the parameter parsers.
* ``random`` — random bytes, half of them behind a well-formed header.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import is_dataclass
from functools import partial
from types import SimpleNamespace
from typing import Annotated, Any, TypeGuard, get_args, get_origin, get_type_hints

from tpm_emulator.codec import Int, ListOf, Raw, Reader, Sized, Struct, Wire, schema
from tpm_emulator.commands import COMMANDS
from tpm_emulator.errors import TpmError
from tpm_emulator.structures import PcrSelect, Selected

from .fuzz_judge import (
    HEADER,
    RS_PW,
    ST_NO_SESSIONS,
    ST_SESSIONS,
    U32,
    parse_command,
    parse_success,
)
from .fuzz_scenarios import SCENARIOS, scenario_cleanup
from .fuzz_sessions import SessionScripts

# ---- generating values for wire rules ----------------------------------------------
INTERESTING_INTS = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
                    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
# The starts of the handle ranges (Part 2, 7.2/7.4) and a few members of each.
HANDLE_POOL = (
    *range(24), 24, 0x00FFFFFF,
    0x01000000, 0x01000001, 0x01C00002, 0x01FFFFFF,
    0x02000000, 0x02000001, 0x02000002, 0x0200003F, 0x02000040,
    0x03000000, 0x03000001, 0x03000002, 0x0300003F, 0x03000040,
    0x40000000, 0x40000001, 0x40000007, 0x40000008, 0x40000009, 0x4000000A,
    0x4000000B, 0x4000000C, 0x4000000D, 0x40000010, 0x40000110, 0x4000011F,
    0x80000000, 0x80000001, 0x80000002, 0x80000003, 0x80FFFFFF,
    0x81000000, 0x81000001, 0x81010001, 0x81800000, 0x81FFFFFF,
    0xFFFFFFFF,
)


class Unmodelled(Exception):
    """A wire rule the generator has no way to produce a value for."""


class ValueGen:
    """Random values for the codec's wire rules, reusing values the TPM returned."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: dict[object, deque[Any]] = {}
        self._mined: dict[int, list[Any]] = {}

    # Values seen in responses are remembered under their wire rule (an ``Annotated``
    # alias shares one rule object) or, for a nested structure, under its class.
    @staticmethod
    def key(wire: Wire) -> object:
        return wire.cls if isinstance(wire, Struct) else wire

    def harvest(self, obj: Any) -> None:
        if not _is_codec_structure(type(obj)):  # a rule's own value class (a scheme)
            return
        for name, wire in schema(type(obj)):
            value = getattr(obj, name)
            self.seen.setdefault(self.key(wire), deque(maxlen=16)).append(value)
            if is_dataclass(value):
                self.harvest(value)
            elif isinstance(value, tuple):
                for v in value:
                    if is_dataclass(v):
                        self.harvest(v)

    def struct(self, cls: type) -> Any:
        values: dict[str, Any] = {}
        fields = schema(cls)
        selectors = {w.selector: w for _, w in fields if isinstance(w, Selected)}
        types = _python_types(cls)
        for name, wire in fields:
            if name in selectors and self.rng.random() < 0.95:
                values[name] = self.rng.choice(sorted(selectors[name].members))
            else:
                values[name] = self.value(wire, values, types[name])
        return cls(**values)

    def value(self, wire: Wire, prior: dict[str, Any], python_type: Any = None) -> Any:
        rng = self.rng
        seen = self.seen.get(self.key(wire))
        if seen and rng.random() < 0.3:
            return rng.choice(seen)
        if isinstance(wire, Int) and type(wire).read is Int.read:
            return self._int(wire)
        if isinstance(wire, Int):  # a TPMI_ type with its own check: find an accepted value
            for _ in range(32):
                v = self._int(wire)
                if _accepts(wire, wire.st.pack(v), prior):
                    return v
            for v in HANDLE_POOL:
                if _accepts(wire, wire.st.pack(v), prior):
                    return v
            return self._int(wire)
        if type(wire) is Sized:
            return rng.randbytes(self._length(wire.min_size, wire.max_size))
        if type(wire) is Raw:
            n = wire.length(prior) if callable(wire.length) else wire.length
            return rng.randbytes(n)
        if type(wire) is ListOf:
            top = min(wire.max_count, 4 if wire.max_count > 16 else wire.max_count)
            n = rng.randint(0, top)
            elem = wire._elem()
            return tuple(self.value(elem, {}) for _ in range(n))
        if type(wire) is Struct:
            return self.struct(wire.cls)
        if type(wire) is Selected:
            from tpm_emulator.codec import wire_for

            return self.value(wire_for(wire.members[prior[wire.selector]]), prior)
        if type(wire) is PcrSelect:
            from tpm_emulator.constants import PCR_SELECT_MAX, PCR_SELECT_MIN

            return rng.randbytes(rng.randint(PCR_SELECT_MIN, PCR_SELECT_MAX))
        return self._unknown(wire, prior, python_type)

    def _unknown(self, wire: Wire, prior: dict[str, Any], python_type: Any) -> Any:
        """A rule declared outside the codec: a value the TPM accepted before (the
        scripted commands supply object templates), else try the codec structure it wraps
        (its annotation's type, or its ``cls``/``inner``/``members``), then mine bytes."""
        seen = self.seen.get(self.key(wire))
        if seen and self.rng.random() < 0.9:
            return self.rng.choice(seen)
        candidates: list[Callable[[], Any]] = []
        for inner in (python_type, getattr(wire, "cls", None)):
            if _is_codec_structure(inner):
                candidates.append(partial(self.struct, inner))
        inner_wire = getattr(wire, "inner", None)
        if isinstance(inner_wire, Wire):
            candidates.append(partial(self.value, inner_wire, prior))
        members = getattr(wire, "members", None)
        if isinstance(members, dict):
            candidates += [partial(self.value, m, prior) for m in members.values()
                           if isinstance(m, Wire)]
        for _ in range(8 if candidates else 0):
            try:
                v = self.rng.choice(candidates)()
                out = bytearray()
                wire.write(out, v, SimpleNamespace(**prior))
                r = Reader(bytes(out))
                if wire.read(r, dict(prior)) == v and not r.remaining():
                    return v
            except (TpmError, Unmodelled, TypeError, AttributeError, KeyError, struct.error):
                continue
        return self._mine(wire, prior)

    def _int(self, wire: Int) -> int:
        rng = self.rng
        if wire.allowed is not None:  # invalid values are the mutations' job
            return rng.choice(_allowed(wire))
        bits = wire.st.size * 8
        r = rng.random()
        if r < 0.4:
            v = rng.choice(INTERESTING_INTS)
        elif r < 0.7 and bits == 32:
            v = rng.choice(HANDLE_POOL)
        elif r < 0.85:
            v = rng.randrange(64)
        else:
            v = rng.getrandbits(bits)
        return v & ((1 << bits) - 1)

    def _length(self, lo: int, hi: int) -> int:
        r = self.rng.random()
        if r < 0.3:
            return lo  # the empty TPM2B is the commonest legal value
        if r < 0.7:
            return self.rng.randint(lo, min(hi, max(lo, 48)))
        if r < 0.8:
            return hi
        return self.rng.randint(lo, hi)

    def _mine(self, wire: Wire, prior: dict[str, Any]) -> Any:
        """An unknown wire rule: read it from random bytes until it accepts some; what
        it accepted is kept, so the search is paid for a few times per rule only."""
        pool = self._mined.setdefault(id(wire), [])
        if len(pool) >= 8 and self.rng.random() < 0.9:
            return self.rng.choice(pool)
        for _ in range(64):
            data = self.rng.randbytes(self.rng.randint(0, 64))
            try:
                v = wire.read(Reader(data), dict(prior))
            except (TpmError, KeyError):
                continue
            if len(pool) < 32:
                pool.append(v)
            return v
        if pool:
            return self.rng.choice(pool)
        raise Unmodelled(type(wire).__name__)


_ALLOWED: dict[int, tuple[int, ...] | range] = {}


def _allowed(wire: Int) -> tuple[int, ...] | range:
    """An Int rule's allowed values in a form ``random.choice`` takes, built once."""
    got = _ALLOWED.get(id(wire))
    if got is None:
        assert wire.allowed is not None
        lo, hi = min(wire.allowed), max(wire.allowed)
        contiguous = len(wire.allowed) == hi - lo + 1
        got = _ALLOWED[id(wire)] = range(lo, hi + 1) if contiguous else tuple(sorted(wire.allowed))
    return got


_CODEC: dict[Any, bool] = {}


def _is_codec_structure(cls: Any) -> TypeGuard[type]:
    got = _CODEC.get(cls)
    if got is None:
        got = isinstance(cls, type) and is_dataclass(cls)
        if got:
            try:
                schema(cls)
            except TypeError:
                got = False
        _CODEC[cls] = got
    return got


_TYPES: dict[type, dict[str, Any]] = {}


def _python_types(cls: type) -> dict[str, Any]:
    """Field name -> the Python type inside its ``Annotated`` (a wrapped structure)."""
    got = _TYPES.get(cls)
    if got is None:
        hints = get_type_hints(cls, include_extras=True)
        got = _TYPES[cls] = {
            name: get_args(hints[name])[0] if get_origin(hints[name]) is Annotated
            else hints[name] for name, _ in schema(cls)}
    return got


def _accepts(wire: Wire, data: bytes, prior: dict[str, Any]) -> bool:
    try:
        wire.read(Reader(data), dict(prior))
    except TpmError:
        return False
    return True


# ---- commands ----------------------------------------------------------------------
def frame(tag: int, cc: int, body: bytes) -> bytes:
    return HEADER.pack(tag, HEADER.size + len(body), cc) + body


class CommandGen:
    """The mix of valid, mutated and random commands (see the module docstring)."""

    MIX = (("valid", 0.30), ("scripted", 0.15), ("mutated", 0.40), ("random", 0.15))

    def __init__(self, rng: random.Random, reuse: bool = True) -> None:
        self.rng = rng
        self.values = ValueGen(rng)
        self.reuse = reuse
        self.table = sorted(COMMANDS.items())
        self.live_handles: deque[int] = deque(maxlen=8)
        self.good_handles: dict[tuple[int, int], deque[int]] = {}  # from successes
        self.corpus: deque[bytes] = deque(maxlen=512)
        self.unmodelled: set[str] = set()
        self.scripts = SessionScripts(rng, SCENARIOS, scenario_cleanup)
        self._accepted = {
            (cc, i): [h for h in HANDLE_POOL if hs.accepts(h)]
            for cc, spec in self.table for i, hs in enumerate(spec.handles)
        }

    def next(self) -> tuple[str, bytes]:
        r = self.rng.random()
        if r < self.MIX[0][1] or not self.corpus:
            cmd = self.valid()
            self.corpus.append(cmd)
            return "valid", cmd
        r -= self.MIX[0][1]
        if r < self.MIX[1][1]:
            cmd = self.scripts.next() or self.valid()
            self.corpus.append(cmd)
            return "scripted", cmd
        if r < self.MIX[1][1] + self.MIX[2][1]:
            return "mutated", self.mutate(self.rng.choice(self.corpus))
        return "random", self.random_bytes()

    def reset(self) -> None:
        """A fresh TPM: the handles and sessions learnt so far mean nothing to it."""
        self.live_handles.clear()
        self.scripts.reset()

    def locality(self) -> int:
        r = self.rng.random()
        if r < 0.85:
            return 0
        if r < 0.98:
            return self.rng.randint(1, 4)
        return self.rng.choice((5, 31, 32, 127, 128, 255, 256, -1))

    # -- valid commands --
    def valid(self, cc: int | None = None) -> bytes:
        rng = self.rng
        if cc is None:
            cc, spec = rng.choice(self.table)
        else:
            spec = COMMANDS[cc]
        handles = b"".join(U32.pack(self._handle(cc, i)) for i in range(len(spec.handles)))
        try:
            params = _marshal(self.values.struct(spec.params))
        except Unmodelled as e:
            self.unmodelled.add(f"{spec.params.__name__}: {e}")
            params = rng.randbytes(rng.randint(0, 32))
        n_auth = spec.auth_handles
        use_sessions = n_auth > 0 or (spec.sessions_allowed and rng.random() < 0.2)
        if n_auth == 0 and rng.random() < 0.03:
            use_sessions = not use_sessions  # the occasional wrong tag
        if not use_sessions:
            return frame(ST_NO_SESSIONS, cc, handles + params)
        n = max(n_auth, 1) + (1 if rng.random() < 0.1 else 0)
        area = b"".join(self._session() for _ in range(n))
        return frame(ST_SESSIONS, cc, handles + U32.pack(len(area)) + area + params)

    def _handle(self, cc: int, i: int) -> int:
        rng = self.rng
        accepted = self._accepted[(cc, i)]
        spec = COMMANDS[cc].handles[i]
        live = [h for h in self.live_handles if spec.accepts(h)]
        if live and rng.random() < 0.5:
            return rng.choice(live)
        good = self.good_handles.get((cc, i))
        if good and rng.random() < 0.5:
            return rng.choice(good)
        if accepted and rng.random() < 0.9:
            return rng.choice(accepted)
        return rng.choice(HANDLE_POOL)

    def _session(self) -> bytes:
        """A TPMS_AUTH_COMMAND (Part 2, 10.13.2): mostly the password session."""
        rng = self.rng
        attrs = rng.choice((0, 1, 1, 1, 0x20, 0x40, 0x61, 0x02, 0x04, 0x18))
        if not self.live_handles or rng.random() < 0.7:
            pw = b"" if rng.random() < 0.8 else rng.randbytes(rng.randint(1, 40))
            nonce = b"" if rng.random() < 0.95 else rng.randbytes(16)
            return struct.pack(">IH", RS_PW, len(nonce)) + nonce + bytes([attrs & 1]) + \
                struct.pack(">H", len(pw)) + pw
        handle = rng.choice(self.live_handles)
        nonce = rng.randbytes(rng.choice((0, 16, 20, 32, 48)))
        hmac = rng.randbytes(rng.choice((0, 20, 32, 48)))
        return struct.pack(">IH", handle, len(nonce)) + nonce + bytes([attrs]) + \
            struct.pack(">H", len(hmac)) + hmac

    def learn(self, command: bytes, response: bytes) -> None:
        """Remember what a successful response returned, for later commands."""
        self.scripts.learn(command, response)
        parsed = parse_success(command, response)
        if parsed is None:
            return
        spec, handle, out = parsed
        if handle is not None:
            self.live_handles.append(handle)
        if self.reuse and out is not None:
            self.values.harvest(out)
        sent = parse_command(command)
        if sent is not None:
            handles, params = sent
            for i, h in enumerate(handles):
                self.good_handles.setdefault((spec.cc, i), deque(maxlen=8)).append(h)
            self.values.harvest(params)
        self.corpus.append(command)

    # -- random and mutated commands --
    def random_bytes(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.randbytes(rng.choice((0, 1, 2, 5, 6, 9, 10, rng.randint(0, 64))))
        tag = rng.choice((ST_NO_SESSIONS, ST_SESSIONS))
        cc = rng.choice(self.table)[0] if rng.random() < 0.8 else rng.getrandbits(32)
        return frame(tag, cc, rng.randbytes(rng.randint(0, 96)))

    def mutate(self, cmd: bytes) -> bytes:
        rng = self.rng
        b = bytearray(cmd)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            rng.choice(_MUTATIONS)(self, b)
        if len(b) >= 6 and rng.random() < 0.75:
            b[2:6] = U32.pack(len(b))
        return bytes(b)

    def _flip(self, b: bytearray) -> None:
        if b:
            for _ in range(self.rng.randint(1, 4)):
                i = self.rng.randrange(len(b) * 8)
                b[i // 8] ^= 1 << (i % 8)

    def _byte(self, b: bytearray) -> None:
        if b:
            b[self.rng.randrange(len(b))] = self.rng.choice((0, 1, 0x7F, 0x80, 0xFF))

    def _int(self, b: bytearray) -> None:
        width = self.rng.choice((2, 4))
        if len(b) >= width:
            i = self.rng.randrange(len(b) - width + 1)
            v = self.rng.choice(INTERESTING_INTS + HANDLE_POOL) & ((1 << 8 * width) - 1)
            b[i : i + width] = v.to_bytes(width, "big")

    def _truncate(self, b: bytearray) -> None:
        del b[self.rng.randint(0, len(b)) :]

    def _extend(self, b: bytearray) -> None:
        b += self.rng.randbytes(self.rng.choice((1, 2, 4, self.rng.randint(1, 64))))

    def _delete(self, b: bytearray) -> None:
        if b:
            i = self.rng.randrange(len(b))
            del b[i : i + self.rng.randint(1, 8)]

    def _duplicate(self, b: bytearray) -> None:
        if b:
            i = self.rng.randrange(len(b))
            b[i:i] = b[i : i + self.rng.randint(1, 16)]

    def _splice(self, b: bytearray) -> None:
        other = self.rng.choice(self.corpus) if self.corpus else b""
        b[self.rng.randint(0, len(b)) :] = other[self.rng.randint(0, len(other)) :]


_MUTATIONS: tuple[Callable[[CommandGen, bytearray], None], ...] = (
    CommandGen._flip, CommandGen._flip, CommandGen._byte, CommandGen._int, CommandGen._int,
    CommandGen._truncate, CommandGen._extend, CommandGen._delete, CommandGen._duplicate,
    CommandGen._splice,
)


def _marshal(obj: Any) -> bytes:
    from tpm_emulator.codec import marshal

    return marshal(obj)
