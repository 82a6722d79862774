"""TPM2_PCR_Allocate takes effect at the next TPM Reset (Part 3, 22.5; Part 1, "PCR bank
allocation"), driven through tpm2-pytss ESAPI in process: the allocation waits for
_TPM_Init, then PCR_Read, PCR_Extend, PCR_Event, TPM_CAP_PCRS and PolicyPCR see only the
allocated PCRs; Shutdown(STATE) is refused while an allocation is pending; snapshots keep
both the active and the pending allocation."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_RC,
    TPM2_SE,
    TPM2_SU,
    TPM2B_DIGEST,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_PCR_SELECTION,
    TPMT_HA,
    TPMT_SYM_DEF,
    TPMU_HA,
    TSS2_Exception,
)

from tests.emulator.emulator_wire import startup
from tests.emulator.inprocess import esapi_over
from tpm_emulator import TPM

BANKS = ("sha1", "sha256", "sha384", "sha512")
NAMES = {int(TPM2_ALG.parse(b)): b for b in BANKS}
ALL = range(24)
WITHOUT_SHA1: dict[str, range] = {"sha1": range(0), "sha256": ALL, "sha384": ALL, "sha512": ALL}


def selection(banks: dict[str, range | set[int]]) -> TPML_PCR_SELECTION:
    """A selection that may hold empty banks (TPML_PCR_SELECTION.parse has no "none")."""
    out = []
    for name, pcrs in banks.items():
        bits = bytearray(3)
        for p in pcrs:
            bits[p // 8] |= 1 << (p % 8)
        out.append(TPMS_PCR_SELECTION(hash=TPM2_ALG.parse(name), sizeofSelect=3,
                                      pcrSelect=bytes(bits)))
    return TPML_PCR_SELECTION(out)


def allocated(esapi: Any) -> dict[str, set[int]]:
    _more, data = esapi.get_capability(TPM2_CAP.PCRS, 0, 1)
    return {NAMES[s.hash]: {p for p in range(24)
                                           if s.pcrSelect[p // 8] >> (p % 8) & 1}
            for s in data.data.assignedPCR}


def read(esapi: Any, spec: str) -> tuple[dict[str, set[int]], list[bytes]]:
    _counter, sel, values = esapi.pcr_read(TPML_PCR_SELECTION.parse(spec))
    got = {NAMES[s.hash]: {p for p in range(8 * s.sizeofSelect)
                                          if s.pcrSelect[p // 8] >> (p % 8) & 1}
           for s in sel}
    return got, [bytes(v) for v in values]


def allocate(esapi: Any, banks: dict[str, range | set[int]]) -> None:
    ok, max_pcr, _needed, _available = esapi.pcr_allocate(selection(banks), ESYS_TR.PLATFORM)
    assert ok and max_pcr == 24


def reset(tpm: TPM, esapi: Any) -> None:
    """Shutdown(CLEAR), _TPM_Init, Startup(CLEAR): a TPM Reset."""
    esapi.shutdown(TPM2_SU.CLEAR)
    tpm.power_cycle()
    esapi.startup(TPM2_SU.CLEAR)


def extend_all(esapi: Any, pcr: int, data: bytes) -> None:
    digests = TPML_DIGEST_VALUES([
        TPMT_HA(hashAlg=TPM2_ALG.parse(b), digest=TPMU_HA(**{b: hashlib.new(b, data).digest()}))
        for b in BANKS])
    esapi.pcr_extend(ESYS_TR.PCR0 + pcr, digests)


def test_allocation_waits_for_the_next_reset(esapi: Any, tpm: TPM) -> None:
    allocate(esapi, WITHOUT_SHA1)
    assert allocated(esapi)["sha1"] == set(range(24))  # nothing changes before _TPM_Init
    assert read(esapi, "sha1:0")[0] == {"sha1": {0}}
    reset(tpm, esapi)
    assert allocated(esapi) == {"sha1": set(), **{b: set(range(24)) for b in BANKS[1:]}}
    sel, values = read(esapi, "sha1:0,1+sha256:0")
    assert sel == {"sha1": set(), "sha256": {0}} and values == [bytes(32)]


def test_unallocated_bank_is_not_extended(esapi: Any, tpm: TPM) -> None:
    allocate(esapi, WITHOUT_SHA1)
    reset(tpm, esapi)
    counter_before = esapi.pcr_read(TPML_PCR_SELECTION.parse("sha256:0"))[0]
    extend_all(esapi, 10, b"measurement")
    # Three banks changed, not four: the pcrUpdateCounter moves once per extended bank.
    assert esapi.pcr_read(TPML_PCR_SELECTION.parse("sha256:0"))[0] == counter_before + 3
    want = hashlib.sha256(bytes(32) + hashlib.sha256(b"measurement").digest()).digest()
    assert read(esapi, "sha256:10")[1] == [want]
    # PCR_Event still answers with a digest for every implemented hash (libtpms does).
    events = esapi.pcr_event(ESYS_TR.PCR0 + 11, b"event")
    assert sorted(NAMES[d.hashAlg] for d in events) == sorted(BANKS)
    assert read(esapi, "sha1:10,11")[1] == []


def test_partial_bank_and_policy_pcr_skip_unallocated_pcrs(esapi: Any, tpm: TPM) -> None:
    allocate(esapi, {"sha256": range(23)})
    reset(tpm, esapi)
    assert allocated(esapi)["sha256"] == set(range(23))
    assert read(esapi, "sha256:22,23")[0] == {"sha256": {22}}

    def trial_policy(spec: str) -> bytes:
        s = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL,
                                     TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
        esapi.policy_pcr(s, TPM2B_DIGEST(), TPML_PCR_SELECTION.parse(spec))
        digest = bytes(esapi.policy_get_digest(s))
        esapi.flush_context(s)
        return digest

    # PCR 23 no longer exists in the bank: the policy records the filtered selection.
    assert trial_policy("sha256:22,23") == trial_policy("sha256:22")


def test_shutdown_state_refused_while_an_allocation_is_pending(esapi: Any, tpm: TPM) -> None:
    esapi.shutdown(TPM2_SU.STATE)  # allowed before any PCR_Allocate
    allocate(esapi, {"sha1": ALL})
    with pytest.raises(TSS2_Exception) as e:
        esapi.shutdown(TPM2_SU.STATE)
    assert e.value.error == TPM2_RC.TYPE and e.value.parameter == 1
    reset(tpm, esapi)
    esapi.shutdown(TPM2_SU.STATE)  # the allocation is in effect: nothing pending


def test_snapshot_keeps_active_and_pending_allocations() -> None:
    def frozen() -> float:  # Clock is in the snapshot: keep it still between the two
        return 0.0

    tpm = TPM()
    startup(tpm)
    with esapi_over(tpm) as esapi:
        allocate(esapi, WITHOUT_SHA1)
        reset(tpm, esapi)
        allocate(esapi, {"sha1": ALL, "sha384": range(0)})  # pending: sha1 back, sha384 out
    restored = TPM.restore(tpm.snapshot(), clock=frozen)
    assert restored.snapshot() == TPM.restore(restored.snapshot(), clock=frozen).snapshot()
    with esapi_over(restored) as esapi:
        assert allocated(esapi)["sha1"] == set() and allocated(esapi)["sha384"] == set(range(24))
        with pytest.raises(TSS2_Exception):
            esapi.shutdown(TPM2_SU.STATE)  # still pending after the restore
        reset(restored, esapi)
        assert allocated(esapi) == {"sha1": set(range(24)), "sha256": set(range(24)),
                                    "sha384": set(), "sha512": set(range(24))}
        assert read(esapi, "sha1:3")[0] == {"sha1": {3}}


def test_old_snapshot_without_the_record_restores_fully_allocated(tpm: TPM) -> None:
    from tpm_emulator import state

    rec = state.decode(tpm.snapshot())
    old = state.encode(state.StateRecord(**{**rec.__dict__, "pcrAllocation": ()}))
    with esapi_over(TPM.restore(old)) as esapi:
        assert allocated(esapi) == {bank: set(ALL) for bank in BANKS}
