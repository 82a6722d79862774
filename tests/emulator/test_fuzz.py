"""Whatever bytes arrive, the TPM answers with a well-formed response and never raises."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpm_emulator import TPM
from tpm_emulator.commands import COMMANDS

_TPM = TPM()
_TPM.execute(struct.pack(">HIIH", 0x8001, 12, 0x144, 0))


def well_formed(resp: bytes) -> None:
    assert isinstance(resp, bytes) and len(resp) >= 10
    tag, size, code = struct.unpack_from(">HII", resp)
    assert size == len(resp)
    assert tag in (0x8001, 0x8002, 0x00C4)
    if code != 0:
        assert len(resp) == 10
    assert resp  # and, implicitly: no exception


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes(data: bytes) -> None:
    well_formed(_TPM.execute(data))


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(sorted(COMMANDS)), st.sampled_from([0x8001, 0x8002]),
       st.binary(max_size=120), st.integers(0, 4))
def test_random_bodies_for_every_command(cc: int, tag: int, body: bytes, loc: int) -> None:
    cmd = struct.pack(">HII", tag, 10 + len(body), cc) + body
    well_formed(_TPM.execute(cmd, loc))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_password_sessions_with_random_parameters(params: bytes) -> None:
    auth = struct.pack(">IHBH", 0x40000009, 0, 1, 0)
    for cc, handle in ((0x182, 16), (0x13C, 23), (0x13D, 16)):
        body = struct.pack(">II", handle, len(auth)) + auth + params
        well_formed(_TPM.execute(struct.pack(">HII", 0x8002, 10 + len(body), cc) + body))


def test_generated_commands_get_well_formed_answers() -> None:
    """20,000 commands from ``bench fuzz``'s generator (valid, mutated and random, a
    fresh TPM every 5,000), fixed seed: no escaped exception, no internal error turned
    into TPM_RC_FAILURE, no malformed response, no hang, snapshot/restore survives.
    ``python -m bench fuzz`` runs the same with a million."""
    from bench.fuzz import fuzz

    tally = fuzz(20_000, seed=20_260_101, fresh_every=5_000, max_ms=2_000.0)
    assert tally.commands + sum(f["count"] for f in tally.findings.values()) == 20_000
    assert not tally.findings, "\n".join(
        f"[{f['kind']}] {f['detail']}: locality {f['locality']}, {f['command']}"
        for f in tally.findings.values())
    assert tally.codes[0] > 1_000  # valid commands do get through


def test_scripted_sessions_reach_policies_sequences_and_nv() -> None:
    """``bench fuzz``'s scripted client (real HMAC, policy and trial sessions, parameter
    encryption, audit, sequences, NV, context save/load) gets past authorization: the
    commands behind each kind of session succeed, and every response HMAC and returned
    hash-sequence digest it checks is right."""
    import random
    from collections import Counter

    from bench.fuzz import settle
    from bench.fuzz_scenarios import SCENARIOS, scenario_cleanup
    from bench.fuzz_sessions import SessionScripts
    from tpm_emulator.constants import CC

    tpm = TPM()
    tpm.execute(struct.pack(">HIIH", 0x8001, 12, 0x144, 0))
    client = SessionScripts(random.Random(), SCENARIOS, scenario_cleanup)
    ok: Counter[int] = Counter()
    for seed in range(200):
        settle(tpm.execute)  # empty hierarchy authValues, nothing loaded: as the client thinks
        for cc, code, _, _ in client.play(tpm.execute, seed):
            ok[cc] += code == 0
        assert client.take_problems() == [], seed
    for cc in (CC.StartAuthSession, CC.CreatePrimary, CC.Create, CC.Load, CC.Unseal, CC.HMAC,
               CC.Sign, CC.VerifySignature, CC.PolicyAuthValue, CC.PolicyPassword,
               CC.PolicyCommandCode, CC.PolicySecret, CC.PolicyOR, CC.PolicyGetDigest,
               CC.ContextSave, CC.ContextLoad, CC.SequenceUpdate, CC.SequenceComplete,
               CC.NV_DefineSpace, CC.NV_Write, CC.NV_Read, CC.GetSessionAuditDigest,
               CC.LoadExternal, CC.HierarchyChangeAuth):
        assert ok[cc] > 0, CC(cc).name
