"""Per-command latency of one TPM: the cases ``bench engine`` times, and the loop.

A *target* is a TPM reached with raw bytes: the builtin engine in this process
(``tpm_emulator.TPM().execute``) or a ``swtpm socket`` over TCP (libtpms, the
reference). A *case* is one command with what it needs first (a primary key made
untimed) and what follows each sample (flushing the object a CreatePrimary made).

CreatePrimary is timed twice. *Cold*: the owner hierarchy is new before every sample
(a fresh ``TPM()`` for the builtin engine, TPM2_Clear for swtpm, both untimed), so the
key is derived from a seed never used before. *Repeat*: the same template on the same
TPM again; the builtin engine then finds the RSA primes in its derivation cache
(``tpm_emulator.objects.derive``) while libtpms searches for them every time. The
search is deterministic per seed, so libtpms's RSA repeat row is one seed's cost (it
swings between runs, 18 ms or 105 ms on the same machine); its cold row, a median over
``--cold-n`` seeds, is the steadier figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import key_commands as k
from .stats import percentile
from .tpm_commands import check_success, get_random, pcr_extend, response_code, startup_clear
from .tpm_socket import SwtpmSocket

OK = "ok"
NOT_IMPLEMENTED = "not implemented"


class Target(Protocol):
    """A TPM the cases run on."""

    name: str

    def execute(self, command: bytes) -> bytes: ...

    def fresh(self) -> None:
        """Give the owner hierarchy a seed it never used (untimed)."""


class BuiltinTarget:
    """Our engine in this process; ``fresh`` replaces it with a new, started TPM."""

    name = "builtin"

    def __init__(self) -> None:
        from tpm_emulator import TPM

        self._factory = TPM
        self.fresh()

    def fresh(self) -> None:
        self.tpm = self._factory()
        check_success(self.tpm.execute(startup_clear()), "TPM2_Startup on builtin")

    def execute(self, command: bytes) -> bytes:
        return self.tpm.execute(command)


class SwtpmTarget:
    """A started ``swtpm socket`` (libtpms); ``fresh`` is TPM2_Clear, a new owner seed."""

    name = "swtpm"

    def __init__(self, port: int) -> None:
        self.conn = SwtpmSocket(port)

    def fresh(self) -> None:
        check_success(self.conn.execute(k.clear()), "TPM2_Clear on swtpm")

    def execute(self, command: bytes) -> bytes:
        return self.conn.execute(command)

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class Case:
    """One benchmarked command: ``command`` builds its bytes from the handle of the
    ``key`` primary made first (0 when there is none)."""

    name: str
    command: Callable[[int], bytes]
    key: bytes | None = None
    cold: bool = False
    creates: bool = False


def _primary(name: str, template: bytes, cold: bool) -> Case:
    label = "cold" if cold else "repeat"
    return Case(f"CreatePrimary {name} ({label})", lambda _: k.create_primary(template),
                cold=cold, creates=True)


CASES: tuple[Case, ...] = (
    Case("GetRandom(32)", lambda _: get_random(32)),
    Case("PCR_Extend(16,sha256,pw)", lambda _: pcr_extend()),
    _primary("RSA-2048", k.RSA_2048_STORAGE, cold=True),
    _primary("RSA-2048", k.RSA_2048_STORAGE, cold=False),
    _primary("ECC P-256", k.ECC_P256_STORAGE, cold=True),
    _primary("ECC P-256", k.ECC_P256_STORAGE, cold=False),
    Case("Sign ECDSA P-256/SHA-256", k.sign, key=k.ECC_P256_ECDSA),
    Case("Sign RSASSA RSA-2048/SHA-256", k.sign, key=k.RSA_2048_RSASSA),
    Case("Quote ECC P-256 AK, sha256 PCRs 0-7", k.quote, key=k.ECC_P256_AK),
)


@dataclass(frozen=True)
class Result:
    """One (command, engine) row of ``bench engine`` (its JSON schema)."""

    command: str
    engine: str
    status: str
    n: int
    p50_us: float | None
    p90_us: float | None

    @classmethod
    def timed(cls, case: Case, engine: str, samples_ns: list[int]) -> Result:
        ordered = sorted(samples_ns)
        return cls(case.name, engine, OK, len(ordered), round(percentile(ordered, 0.5), 1),
                   round(percentile(ordered, 0.9), 1))

    @classmethod
    def untimed(cls, case: Case, engine: str, status: str) -> Result:
        return cls(case.name, engine, status, 0, None, None)


class _Refused(Exception):
    """The target answered a case's command with an error: the row has no figures."""

    def __init__(self, rc: int, what: str) -> None:
        status = NOT_IMPLEMENTED if rc == k.TPM_RC_COMMAND_CODE else f"{what} rc 0x{rc:03x}"
        super().__init__(status)
        self.status = status


def _succeeded(response: bytes, what: str) -> bytes:
    rc = response_code(response)
    if rc != 0:
        raise _Refused(rc, what)
    return response


def run_case(target: Target, case: Case, n: int, warmup: int) -> Result:
    """Time ``n`` runs of ``case`` on ``target``; a refusal or an exception becomes the
    row's status instead of figures, so one missing command never stops the run."""
    try:
        return Result.timed(case, target.name, _samples(target, case, n, warmup))
    except _Refused as refused:
        return Result.untimed(case, target.name, refused.status)
    except Exception as exc:  # an engine under construction may raise: a status, not a crash
        return Result.untimed(case, target.name, f"error: {type(exc).__name__}: {exc}")


def _samples(target: Target, case: Case, n: int, warmup: int) -> list[int]:
    handle = 0
    if case.key is not None:
        made = _succeeded(target.execute(k.create_primary(case.key)), "key CreatePrimary")
        handle = k.created_handle(made)
    command = case.command(handle)
    clock = time.perf_counter_ns
    samples: list[int] = []
    try:
        for i in range((0 if case.cold else warmup) + n):
            if case.cold:
                target.fresh()
            t0 = clock()
            response = target.execute(command)
            took = clock() - t0
            _succeeded(response, "command")
            if case.creates:
                target.execute(k.flush_context(k.created_handle(response)))
            if case.cold or i >= warmup:
                samples.append(took)
    finally:
        if handle:
            target.execute(k.flush_context(handle))
    return samples
