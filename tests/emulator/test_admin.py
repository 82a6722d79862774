"""Hierarchy administration and dictionary-attack protection of our TPM, driven through
tpm2-pytss ESAPI in process (which checks response HMACs, so a changed authValue must
answer under the new value)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_CC,
    TPM2_CLOCK,
    TPM2_PT,
    TPM2_RC,
    TPM2_SE,
    TPM2B_SENSITIVE_CREATE,
    TPMA_SESSION,
    TPML_PCR_SELECTION,
    TPMS_PCR_SELECTION,
    TPMT_SYM_DEF,
    TSS2_Exception,
)

from tests.emulator.emulator_wire import command, rc, shutdown, startup
from tests.emulator.inprocess import esapi_over
from tests.emulator.test_nv import code, define, refused
from tests.emulator.test_objects import parent_template, primary, sensitive
from tpm_emulator import TPM

SYM_NULL = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
# A sealed data object *without* noDA: its authValue is DA-protected.
SEALED_DA = "fixedtpm|fixedparent|userwithauth"


class FakeClock:
    """Host time for the TPM, advanced by hand so recovery intervals are testable."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def started(clock: Callable[[], float] | None = None) -> TPM:
    t = TPM(clock=clock) if clock is not None else TPM()
    startup(t)
    return t


def props(e: Any) -> dict[int, int]:
    _more, data = e.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT.PERMANENT, 32)
    return {int(p.property): int(p.value) for p in data.data.tpmProperties}


def in_lockout(e: Any) -> bool:
    return bool(props(e)[TPM2_PT.PERMANENT] & (1 << 9))


def sealed_da_object(e: Any, password: bytes) -> Any:
    from tpm2_pytss import TPM2B_PUBLIC

    parent, _ = primary(e)
    tmpl = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=SEALED_DA)
    priv, pub, *_ = e.create(parent, sensitive(password, b"secret"), tmpl)
    item = e.load(parent, priv, pub)
    e.flush_context(parent)
    return item


def unseal_with(e: Any, item: Any, password: bytes) -> int:
    e.tr_set_auth(item, password)
    try:
        e.unseal(item)
    except TSS2_Exception as exc:
        return code(exc)
    return 0


def hmac_session(e: Any) -> Any:
    s = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, SYM_NULL,
                             TPM2_ALG.SHA256)
    e.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION)
    return s


# ---- hierarchy authValues --------------------------------------------------------------
def test_owner_auth_change_old_fails_new_works(esapi: Any) -> None:
    s = hmac_session(esapi)
    # over an HMAC session: the response is HMACed with the *new* ownerAuth
    esapi.hierarchy_change_auth(ESYS_TR.OWNER, b"new owner", session1=s)
    esapi.tr_set_auth(ESYS_TR.OWNER, b"")
    assert refused(esapi.create_primary, TPM2B_SENSITIVE_CREATE(),
                   parent_template()) == TPM2_RC.BAD_AUTH  # owner is DA-exempt
    esapi.tr_set_auth(ESYS_TR.OWNER, b"new owner")
    handle, *_ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), parent_template(),
                                      session1=s)
    esapi.flush_context(handle)
    assert props(esapi)[TPM2_PT.PERMANENT] & 1  # ownerAuthSet
    esapi.hierarchy_change_auth(ESYS_TR.OWNER, b"")
    assert not props(esapi)[TPM2_PT.PERMANENT] & 1


def test_owner_policy_authorizes_create_primary(esapi: Any) -> None:
    trial = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, SYM_NULL,
                                     TPM2_ALG.SHA256)
    esapi.policy_command_code(trial, TPM2_CC.CreatePrimary)
    digest = esapi.policy_get_digest(trial)
    esapi.flush_context(trial)
    esapi.hierarchy_change_auth(ESYS_TR.OWNER, b"unguessable")
    esapi.set_primary_policy(ESYS_TR.OWNER, digest, TPM2_ALG.SHA256)
    policy = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, SYM_NULL,
                                      TPM2_ALG.SHA256)
    esapi.policy_command_code(policy, TPM2_CC.CreatePrimary)
    handle, *_ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), parent_template(),
                                      session1=policy)
    esapi.flush_context(handle)
    esapi.set_primary_policy(ESYS_TR.OWNER, b"", TPM2_ALG.NULL)
    again = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, SYM_NULL,
                                     TPM2_ALG.SHA256)
    esapi.policy_command_code(again, TPM2_CC.CreatePrimary)
    assert refused(esapi.create_primary, TPM2B_SENSITIVE_CREATE(), parent_template(),
                   session1=again) == TPM2_RC.AUTH_UNAVAILABLE


# ---- dictionary-attack protection ------------------------------------------------------
def test_lockout_after_max_tries_and_lock_reset() -> None:
    tpm = started()
    with esapi_over(tpm) as e:
        e.dictionary_attack_parameters(3, 1000, 1000)
        item = sealed_da_object(e, b"right")
        for _ in range(3):
            assert unseal_with(e, item, b"wrong") == TPM2_RC.AUTH_FAIL
        assert in_lockout(e) and props(e)[TPM2_PT.LOCKOUT_COUNTER] == 3
        assert unseal_with(e, item, b"right") == TPM2_RC.LOCKOUT
        e.dictionary_attack_lock_reset()
        assert not in_lockout(e)
        assert unseal_with(e, item, b"right") == 0


def test_failures_heal_after_recovery_time_and_clock_set_does_not_hasten_it() -> None:
    clock = FakeClock()
    tpm = started(clock)
    with esapi_over(tpm) as e:
        e.dictionary_attack_parameters(2, 10, 1000)
        item = sealed_da_object(e, b"right")
        assert unseal_with(e, item, b"wrong") == TPM2_RC.AUTH_FAIL
        assert unseal_with(e, item, b"wrong") == TPM2_RC.AUTH_FAIL
        e.clock_set(e.read_clock().clockInfo.clock + 3_600_000)
        assert unseal_with(e, item, b"right") == TPM2_RC.LOCKOUT
        clock.now += 9.5
        assert props(e)[TPM2_PT.LOCKOUT_COUNTER] == 2
        clock.now += 0.5  # one recoveryTime since the last failure: one failure forgiven
        assert props(e)[TPM2_PT.LOCKOUT_COUNTER] == 1
        assert unseal_with(e, item, b"right") == 0
        clock.now += 10
        assert props(e)[TPM2_PT.LOCKOUT_COUNTER] == 0


def test_lockout_auth_failure_locks_lockout_auth_only() -> None:
    clock = FakeClock()
    tpm = started(clock)
    with esapi_over(tpm) as e:
        e.hierarchy_change_auth(ESYS_TR.LOCKOUT, b"lock")
        e.tr_set_auth(ESYS_TR.LOCKOUT, b"guess")
        assert refused(e.dictionary_attack_lock_reset) == TPM2_RC.AUTH_FAIL
        e.tr_set_auth(ESYS_TR.LOCKOUT, b"lock")
        assert refused(e.dictionary_attack_lock_reset) == TPM2_RC.LOCKOUT
        assert props(e)[TPM2_PT.LOCKOUT_COUNTER] == 0  # not a failedTries failure
        item = sealed_da_object(e, b"right")
        assert unseal_with(e, item, b"right") == 0  # other entities are unaffected
        clock.now += 1000  # lockoutRecovery
        e.dictionary_attack_lock_reset()


def test_power_loss_after_da_use_counts_a_failure() -> None:
    tpm = started()
    with esapi_over(tpm) as e:
        item = sealed_da_object(e, b"right")
        assert unseal_with(e, item, b"right") == 0
    tpm.power_cycle()  # no TPM2_Shutdown: the use might have been an unrecorded failure
    startup(tpm)
    orderly = started()
    with esapi_over(orderly) as e:
        item = sealed_da_object(e, b"right")
        assert unseal_with(e, item, b"right") == 0
    shutdown(orderly)
    orderly.power_cycle()
    startup(orderly)
    for t, expected in ((tpm, 1), (orderly, 0)):
        with esapi_over(t) as e:
            assert props(e)[TPM2_PT.LOCKOUT_COUNTER] == expected


# ---- TPM2_Clear and ClearControl ---------------------------------------------------------
def test_clear_wipes_the_owner_and_changes_the_storage_primary() -> None:
    tpm = started()
    with esapi_over(tpm) as e:
        srk, srk_before = primary(e)
        e.evict_control(ESYS_TR.OWNER, srk, 0x81000001)
        e.flush_context(srk)
        ek, ek_before = primary(e, hierarchy=ESYS_TR.ENDORSEMENT)
        e.flush_context(ek)
        define(e, 0x01500001)
        e.hierarchy_change_auth(ESYS_TR.OWNER, b"owner")
        e.hierarchy_change_auth(ESYS_TR.LOCKOUT, b"lock")
        e.dictionary_attack_parameters(5, 60, 60)
        e.clear(ESYS_TR.LOCKOUT)
        e.tr_set_auth(ESYS_TR.OWNER, b"")
        _srk, srk_after = primary(e)
        _ek, ek_after = primary(e, hierarchy=ESYS_TR.ENDORSEMENT)
        p = props(e)
    assert srk_after != srk_before and ek_after == ek_before  # new SPS, same EPS
    assert tpm.handles_of_type(0x81) == [] and tpm.handles_of_type(0x01) == []
    assert p[TPM2_PT.PERMANENT] & 0x7 == 0  # no owner, endorsement or lockout auth
    assert p[TPM2_PT.MAX_AUTH_FAIL] == 3 and p[TPM2_PT.LOCKOUT_INTERVAL] == 1000


def test_clear_control_prevents_clear(esapi: Any) -> None:
    esapi.clear_control(ESYS_TR.LOCKOUT, True)
    assert props(esapi)[TPM2_PT.PERMANENT] & (1 << 8)
    assert refused(esapi.clear, ESYS_TR.LOCKOUT) == TPM2_RC.DISABLED
    assert refused(esapi.clear_control, ESYS_TR.LOCKOUT, False) == TPM2_RC.AUTH_FAIL
    esapi.clear_control(ESYS_TR.PLATFORM, False)
    esapi.clear(ESYS_TR.PLATFORM)


# ---- HierarchyControl, seeds ---------------------------------------------------------------
def test_disabled_endorsement_refuses_ek_creation_until_startup_clear() -> None:
    tpm = started()
    with esapi_over(tpm) as e:
        e.hierarchy_control(ESYS_TR.ENDORSEMENT, ESYS_TR.ENDORSEMENT, False)
        assert props(e)[TPM2_PT.STARTUP_CLEAR] & 0xF == 0b1011
        assert refused(primary, e, hierarchy=ESYS_TR.ENDORSEMENT) == TPM2_RC.HIERARCHY
        assert refused(e.hierarchy_control, ESYS_TR.OWNER, ESYS_TR.ENDORSEMENT,
                       True) == TPM2_RC.AUTH_TYPE
    shutdown(tpm, 1)  # TPM Resume keeps it disabled ...
    tpm.power_cycle()
    startup(tpm, 1)
    with esapi_over(tpm) as e:
        assert refused(primary, e, hierarchy=ESYS_TR.ENDORSEMENT) == TPM2_RC.HIERARCHY
    tpm.power_cycle()  # ... Startup(CLEAR) enables it again
    startup(tpm)
    with esapi_over(tpm) as e:
        ek, _ = primary(e, hierarchy=ESYS_TR.ENDORSEMENT)
        e.flush_context(ek)


def test_disabling_a_hierarchy_flushes_its_objects(esapi: Any) -> None:
    srk, _ = primary(esapi)
    ek, _ = primary(esapi, hierarchy=ESYS_TR.ENDORSEMENT)
    esapi.hierarchy_control(ESYS_TR.OWNER, ESYS_TR.OWNER, False)
    _more, data = esapi.get_capability(TPM2_CAP.HANDLES, 0x80000000, 8)
    assert list(data.data.handles) == [0x80000001]  # only the EK is left
    esapi.hierarchy_control(ESYS_TR.PLATFORM, ESYS_TR.OWNER, True)
    del srk, ek


def test_change_eps_and_pps_renew_those_primaries(esapi: Any) -> None:
    ek, ek1 = primary(esapi, hierarchy=ESYS_TR.ENDORSEMENT)
    pk, pk1 = primary(esapi, hierarchy=ESYS_TR.PLATFORM)
    srk, srk1 = primary(esapi)
    esapi.hierarchy_change_auth(ESYS_TR.ENDORSEMENT, b"endorsement")
    esapi.change_eps()
    esapi.tr_set_auth(ESYS_TR.ENDORSEMENT, b"")  # ChangeEPS emptied endorsementAuth
    esapi.change_pps()
    _more, data = esapi.get_capability(TPM2_CAP.HANDLES, 0x80000000, 8)
    assert list(data.data.handles) == [0x80000002]  # EK and platform primary flushed
    _ek, ek2 = primary(esapi, hierarchy=ESYS_TR.ENDORSEMENT)
    _pk, pk2 = primary(esapi, hierarchy=ESYS_TR.PLATFORM)
    esapi.flush_context(srk)
    _srk, srk2 = primary(esapi)
    assert ek2 != ek1 and pk2 != pk1 and srk2 == srk1
    del ek, pk


# ---- Clock ---------------------------------------------------------------------------------
def test_clock_set_moves_forward_only(esapi: Any) -> None:
    now = esapi.read_clock().clockInfo.clock
    esapi.clock_set(now + 10_000_000)
    assert esapi.read_clock().clockInfo.clock >= now + 10_000_000
    assert refused(esapi.clock_set, now) == TPM2_RC.VALUE
    esapi.clock_rate_adjust(TPM2_CLOCK.COARSE_SLOWER)  # accepted: our Clock is the host's


# ---- PCR administration --------------------------------------------------------------------
def test_pcr_allocate_answers_and_refuses_losing_the_rtm_pcrs(esapi: Any) -> None:
    none = TPMS_PCR_SELECTION(hash=TPM2_ALG.SHA384, sizeofSelect=3, pcrSelect=bytes(3))
    ok, max_pcr, needed, available = esapi.pcr_allocate(TPML_PCR_SELECTION(
        [TPMS_PCR_SELECTION.parse("sha256:all"), TPMS_PCR_SELECTION.parse("sha1:0,17"), none]))
    # The banks not listed keep their (full) allocation; PCR_Allocate never shrinks
    # the banks in use now, it only answers what the next TPM Reset would get.
    assert (ok, max_pcr, needed, available) == (True, 24, 24 * (32 + 64) + 2 * 20, 24 * 164)
    no_drtm = TPML_PCR_SELECTION.parse("sha256:0,1,2+sha1:0+sha384:0+sha512:0")
    assert refused(esapi.pcr_allocate, no_drtm) == TPM2_RC.PCR


def test_pcr_auth_value_group(tpm: TPM) -> None:
    with esapi_over(tpm) as e:
        e.pcr_set_auth_value(ESYS_TR.PCR20, b"pcr secret")
        assert refused(e.pcr_set_auth_value, ESYS_TR.PCR16, b"x") == TPM2_RC.VALUE
    # PCR 20 now needs the group's authValue (checked before its locality rule).
    extend = command(0x182, struct.pack(">II", 20, 9) + struct.pack(">IHBH", 0x40000009, 0, 1, 0)
                     + struct.pack(">I", 0), 0x8002)
    assert rc(tpm.execute(extend)) == 0x9A2
    assert rc(tpm.execute(extend, 2)) == 0x9A2


# ---- snapshot / restore --------------------------------------------------------------------
def test_admin_state_survives_snapshot_and_resume() -> None:
    tpm = started()
    with esapi_over(tpm) as e:
        e.hierarchy_change_auth(ESYS_TR.OWNER, b"owner")
        e.hierarchy_change_auth(ESYS_TR.PLATFORM, b"platform")
        e.set_primary_policy(ESYS_TR.ENDORSEMENT, b"e" * 32, TPM2_ALG.SHA256)
        e.dictionary_attack_parameters(7, 11, 13)
        e.clear_control(ESYS_TR.LOCKOUT, True)
        e.hierarchy_control(ESYS_TR.ENDORSEMENT, ESYS_TR.ENDORSEMENT, False)
        item = sealed_da_object(e, b"right")
        assert unseal_with(e, item, b"wrong") == TPM2_RC.AUTH_FAIL
        before = props(e)
    restored = TPM.restore(tpm.snapshot())
    with esapi_over(restored) as e:
        assert props(e) == before
        e.tr_set_auth(ESYS_TR.OWNER, b"owner")
        handle, _ = primary(e)
        e.flush_context(handle)
        e.tr_set_auth(ESYS_TR.PLATFORM, b"platform")
        e.clear_control(ESYS_TR.PLATFORM, False)
    shutdown(restored, 1)
    resumed = TPM.restore(restored.snapshot())
    resumed.power_cycle()
    startup(resumed, 1)
    with esapi_over(resumed) as e:
        assert props(e)[TPM2_PT.STARTUP_CLEAR] & 0xF == 0b1011  # still no endorsement
        e.tr_set_auth(ESYS_TR.PLATFORM, b"platform")  # platformAuth kept by Resume
        e.hierarchy_control(ESYS_TR.PLATFORM, ESYS_TR.ENDORSEMENT, True)
        assert props(e)[TPM2_PT.LOCKOUT_COUNTER] == 1


def test_blob_without_admin_record_restores_with_defaults(tpm: TPM) -> None:
    from tpm_emulator.state import decode, encode

    rec = decode(tpm.snapshot())
    older = encode(type(rec)(**{**rec.__dict__, "adminState": ()}))
    restored = TPM.restore(older)
    with esapi_over(restored) as e:
        p = props(e)
    assert p[TPM2_PT.PERMANENT] == 1 << 10 and p[TPM2_PT.MAX_AUTH_FAIL] == 3
    assert p[TPM2_PT.STARTUP_CLEAR] & 0xF == 0xF


def test_nv_index_of_disabled_owner_is_hidden(esapi: Any) -> None:
    nv = define(esapi, 0x01500002, size=8)
    esapi.nv_write(nv, b"12345678")
    esapi.hierarchy_control(ESYS_TR.OWNER, ESYS_TR.OWNER, False)
    assert refused(esapi.nv_read, nv, 8) == TPM2_RC.HANDLE
    esapi.hierarchy_control(ESYS_TR.PLATFORM, ESYS_TR.OWNER, True)
    assert bytes(esapi.nv_read(nv, 8)) == b"12345678"


def test_hmac_session_failures_count_and_lockout_refuses_sessions_too() -> None:
    tpm = started()
    with esapi_over(tpm) as e:
        e.dictionary_attack_parameters(1, 1000, 1000)
        item = sealed_da_object(e, b"right")
        s = hmac_session(e)
        e.tr_set_auth(item, b"wrong")
        assert refused(e.unseal, item, session1=s) == TPM2_RC.AUTH_FAIL
        assert props(e)[TPM2_PT.LOCKOUT_COUNTER] == 1 and in_lockout(e)
        e.tr_set_auth(item, b"right")
        assert refused(e.unseal, item, session1=s) == TPM2_RC.LOCKOUT
