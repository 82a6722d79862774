"""Findings of ``python -m bench fuzz`` (random, mutated and scripted commands; the
``--differential`` run against libtpms), each pinned by the command bytes that showed it
and the response code libtpms gives for them.

The session findings need a client that computes HMACs over the TPM's nonces; they use
the fuzzer's own client (``bench.fuzz_sessions.SessionScripts``), which checks every
response HMAC and was itself checked against libtpms.
"""

from __future__ import annotations

import random
import struct

import pytest

from bench.fuzz_scenarios import SCENARIOS, scenario_cleanup
from bench.fuzz_sessions import (
    ATTR_AUDIT,
    ATTR_CONTINUE,
    RH_OWNER,
    SessionScripts,
    Step,
    Tracked,
    Use,
    t2b,
    template,
)
from tests.emulator.emulator_wire import rc
from tpm_emulator import TPM
from tpm_emulator.constants import CC, SE

# TPM2_CreatePrimary(owner, empty password) of an ECDSA P-256 key and of a storage key.
CREATE_PRIMARY_ECDSA = bytes.fromhex(
    "80020000004100000131400000010000000940000009000001000000040000000000180023000b00040472"
    "000000100018000b0003001000000000000000000000")
CREATE_PRIMARY_STORAGE = bytes.fromhex(
    "800200000043000001314000000100000009400000090000010000000400000000001a0023000b00030472"
    "000000060080004300100003001000000000000000000000")
# TPM2_StartAuthSession of an unbound, unsalted SHA-256 trial session (0x03000000).
TRIAL_SESSION = bytes.fromhex(
    "80010000002b0000017640000007400000070010000000000000000000000000000000000000030010000b")


def code(tpm: TPM, command: bytes) -> int:
    return rc(tpm.execute(command))


# ---- the authorization area, session by session (reference ParseSessionBuffer) -------
@pytest.mark.parametrize(("name", "command", "expected"), [
    # A password session with a nonce is TPM_RC_NONCE as soon as it is read, before the
    # next session's handle (0x80000000, not a session: TPM_RC_VALUE) is looked at.
    ("password nonce before the next session", bytes.fromhex(
        "80020000005a000001314000000100000022400000090010000000000000000000000000000000000100"
        "0080000000000001000000040000000000180023000b00040472000000100018000b0003001000000000"
        "000000000000"), 0x98F),
    # A spare password session (nothing to authorize) is refused only after the
    # authorizations: the wrong owner password of session 1 is reported first.
    ("wrong password before a spare password", bytes.fromhex(
        "80020000004d000001314000000100000015400000090000010003626164400000090000010000000400"
        "00000000180023000b00040472000000100018000b0003001000000000000000000000"), 0x9A2),
    # ReadClock takes no authorization: the nonce is still checked first (NONCE, not HANDLE).
    ("password nonce on a command without authorizations", bytes.fromhex(
        "800200000027000001810000001940000009001000000000000000000000000000000000010000"),
     0x98F),
    # A fourth session: TPM_RC_SIZE naming session 4, not a bare TPM_RC_AUTHSIZE.
    ("four sessions", bytes.fromhex(
        "800200000032000001810000002440000009000001000040000009000001000040000009000001000040"
        "0000090000010000"), 0xC95),
])
def test_authorization_area_checks_in_the_reference_order(
        tpm: TPM, name: str, command: bytes, expected: int) -> None:
    assert code(tpm, command) == expected, name


# ---- parameters refused while unmarshalling --------------------------------------------
def test_context_load_refuses_a_saved_handle_outside_tpmi_dh_saved(tpm: TPM) -> None:
    # savedHandle 0x80FFFFFF: TPMI_DH_SAVED is a session or 0x80000000-0x80000002.
    command = bytes.fromhex("80010000001c000001610ab660db3bf4733f80ffffff400000010000")
    assert code(tpm, command) == 0x1C4  # TPM_RC_VALUE + parameter 1


def test_a_null_signature_is_a_scheme_error_before_the_key_is_looked_at(tpm: TPM) -> None:
    assert code(tpm, CREATE_PRIMARY_ECDSA) == 0
    verify_null = bytes.fromhex(
        "800100000032000001778000000000200000000000000000000000000000000000000000000000000000"
        "0000000000000010")
    assert code(tpm, verify_null) == 0x2D2  # TPM_RC_SCHEME + parameter 2
    assert code(tpm, TRIAL_SESSION) == 0
    policy_signed_null = bytes.fromhex(
        "80010000001e000001608000000003000000000000000000000000000010")
    assert code(tpm, policy_signed_null) == 0x5D2  # TPM_RC_SCHEME + parameter 5


def test_create_loaded_template_larger_than_a_tpmt_public_is_a_size_error(tpm: TPM) -> None:
    assert code(tpm, CREATE_PRIMARY_STORAGE) == 0
    for size, expected in ((484, 0x2CA), (485, 0x2D5)):  # TYPE+P2 (zeros), then SIZE+P2
        params = t2b(t2b(b"") + t2b(b"")) + t2b(bytes(size))
        area = struct.pack(">IHBH", 0x40000009, 0, 1, 0)
        body = struct.pack(">II", 0x80000000, len(area)) + area + params
        command = struct.pack(">HII", 0x8002, 10 + len(body), 0x191) + body
        assert code(tpm, command) == expected, size


# ---- GetCapability properties libtpms refuses -------------------------------------------
@pytest.mark.parametrize(("capability", "prop"), [
    (5, 1), (5, 0xFFFFFFFF), (9, 0), (10, 0), (10, 0x4000000C), (10, 0x40000120)])
def test_get_capability_refuses_properties_that_select_nothing(
        tpm: TPM, capability: int, prop: int) -> None:
    # TPM_CAP_PCRS takes property 0, TPM_CAP_AUTH_POLICIES a permanent handle, TPM_CAP_ACT
    # one of TPM_RH_ACT_0-F.
    command = struct.pack(">HIIIII", 0x8001, 22, 0x17A, capability, prop, 1)
    assert code(tpm, command) == 0x2C4  # TPM_RC_VALUE + parameter 2


# ---- PolicyCounterTimer: the range checks apply to trial sessions too ------------------
def test_policy_counter_timer_range_checks_on_a_trial_session(tpm: TPM) -> None:
    assert code(tpm, TRIAL_SESSION) == 0
    past_end = bytes.fromhex("80010000001c0000016d030000000008000000000000000000180009")
    offset_past_end = bytes.fromhex("8001000000140000016d030000000000001a0000")
    within = bytes.fromhex("8001000000140000016d03000000000000190000")
    assert code(tpm, past_end) == 0x08D  # TPM_RC_RANGE, bare: operandB and offset together
    assert code(tpm, offset_past_end) == 0x2C4  # TPM_RC_VALUE + parameter 2 (offset)
    assert code(tpm, within) == 0  # an empty operand at the end is in range


# ---- response HMACs keep the key the command used ----------------------------------------
def _run(sc: SessionScripts, tpm: TPM, step: Step) -> object:
    """Drive one client step (a generator of commands) to its result."""
    result = None
    try:
        command = next(step)
        while True:
            response = tpm.execute(command)
            ok = rc(response) == 0
            if ok:
                sc.pending = command
                sc.learn(command, response)
            command = step.send(response if ok else None)
    except StopIteration as stop:
        result = stop.value
    return result


def _bound_session_setup(tpm: TPM) -> tuple[SessionScripts, Tracked]:
    sc = SessionScripts(random.Random(7), SCENARIOS, scenario_cleanup)
    owner = sc.entities[RH_OWNER]
    change = sc.command(CC.HierarchyChangeAuth, [RH_OWNER], t2b(b"\xd2\xb6"),
                        [Use(None, ATTR_CONTINUE, owner)])
    assert code(tpm, change) == 0
    owner.auth = b"\xd2\xb6"
    session = _run(sc, tpm, sc.start_session(SE.HMAC, owner))
    assert isinstance(session, Tracked)
    return sc, session


def test_first_audited_command_of_a_bound_session_answers_under_the_bound_key(
        tpm: TPM) -> None:
    """The first audit use unbinds the session (reference InitAuditSession), but the
    response HMAC of that very command keeps the command's key: sessionKey alone."""
    sc, session = _bound_session_setup(tpm)
    owner = sc.entities[RH_OWNER]
    params = t2b(t2b(b"") + t2b(b"")) + t2b(template("ecdsa")) + t2b(b"") + struct.pack(">I", 0)
    command = sc.command(CC.CreatePrimary, [RH_OWNER], params,
                         [Use(session, ATTR_CONTINUE | ATTR_AUDIT, owner)])
    response = tpm.execute(command)
    assert rc(response) == 0
    sc.pending = command
    sc.learn(command, response)
    assert sc.take_problems() == []
    # From now on the session is unbound: the owner's authValue joins the HMAC key.
    tpm.execute(struct.pack(">HIII", 0x8001, 14, 0x165, struct.unpack_from(">I", response, 10)[0]))
    again = sc.command(CC.CreatePrimary, [RH_OWNER], params,
                       [Use(session, ATTR_CONTINUE, owner)])
    assert code(tpm, again) == 0


def test_hierarchy_change_auth_through_its_bound_session_answers_under_the_bound_key(
        tpm: TPM) -> None:
    sc, session = _bound_session_setup(tpm)
    owner = sc.entities[RH_OWNER]
    use = Use(session, ATTR_CONTINUE, owner, new_auth=b"new")
    command = sc.command(CC.HierarchyChangeAuth, [RH_OWNER], t2b(b"new"), [use])
    response = tpm.execute(command)
    assert rc(response) == 0
    sc.pending = command
    sc.learn(command, response)
    assert sc.take_problems() == []


def test_a_persistent_handle_needs_a_free_object_slot_even_when_missing(tpm: TPM) -> None:
    """Reference ObjectLoadEvict: a persistent object is loaded into a free slot for the
    command, so with the three slots taken a missing one is TPM_RC_OBJECT_MEMORY."""
    read_public_persistent = struct.pack(">HIII", 0x8001, 14, 0x173, 0x81000001)
    assert code(tpm, read_public_persistent) == 0x18B  # TPM_RC_HANDLE + handle 1
    for _ in range(3):
        assert code(tpm, CREATE_PRIMARY_ECDSA) == 0
    assert code(tpm, read_public_persistent) == 0x902  # TPM_RC_OBJECT_MEMORY


def test_the_user_role_without_user_with_auth_has_no_auth_value(tpm: TPM) -> None:
    """libtpms IsAuthValueAvailable: a password for the USER role of an object without
    userWithAuth is TPM_RC_AUTH_UNAVAILABLE (AUTH_TYPE is for roles that require a
    policy session: ADMIN with adminWithPolicy, DUP)."""
    hmac_key = template("hmac", user_with_auth=False)
    create = struct.pack(">II", RH_OWNER, 9) + struct.pack(">IHBH", 0x40000009, 0, 1, 0)
    create += t2b(t2b(b"") + t2b(b"")) + t2b(hmac_key) + t2b(b"") + struct.pack(">I", 0)
    assert code(tpm, struct.pack(">HII", 0x8002, 10 + len(create), 0x131) + create) == 0
    hmac = struct.pack(">II", 0x80000000, 9) + struct.pack(">IHBH", 0x40000009, 0, 1, 0)
    hmac += t2b(b"abc") + struct.pack(">H", 0x0010)
    assert code(tpm, struct.pack(">HII", 0x8002, 10 + len(hmac), 0x155) + hmac) == 0x12F


def test_a_session_handle_naming_the_other_session_type_is_a_handle_error(tpm: TPM) -> None:
    """The slot of 0x03000000 holds an HMAC session (0x02000000): libtpms answers
    TPM_RC_HANDLE for that handle, not TPM_RC_REFERENCE_H0 (no session there)."""
    hmac_session = bytes.fromhex(
        "80010000002b0000017640000007400000070010000000000000000000000000000000000000000010"
        "000b")
    assert code(tpm, hmac_session) == 0
    policy_auth_value = struct.pack(">HIII", 0x8001, 14, 0x16B, 0x03000000)
    assert code(tpm, policy_auth_value) == 0x18B  # TPM_RC_HANDLE + handle 1
    assert code(tpm, struct.pack(">HIII", 0x8001, 14, 0x16B, 0x03000001)) == 0x910


@pytest.mark.parametrize(("tag", "expected"), [
    (0x000D, 0x3C4),  # no TPM_ST at all: TPM_RC_VALUE + parameter 3
    (0x801C, 0x3C4),  # TPM_ST_ATTEST_NV_DIGEST: not a TPM_ST libtpms unmarshals
    (0x8022, 0x3D7),  # TPM_ST_VERIFIED: a TPM_ST, not this ticket's: TPM_RC_TAG + P3
])
def test_a_ticket_tag_is_a_tpm_st_before_it_is_the_tickets(
        tpm: TPM, tag: int, expected: int) -> None:
    assert code(tpm, CREATE_PRIMARY_ECDSA) == 0
    area = struct.pack(">IHBH", 0x40000009, 0, 1, 0)
    params = t2b(bytes(32)) + struct.pack(">H", 0x0010) + struct.pack(">HI", tag, 0x40000007)
    body = struct.pack(">II", 0x80000000, len(area)) + area + params + t2b(b"")
    assert code(tpm, struct.pack(">HII", 0x8002, 10 + len(body), 0x15D) + body) == expected


def test_an_enabled_hierarchy_may_be_set_on_by_its_own_authorization(tpm: TPM) -> None:
    """TPM2_HierarchyControl(endorsement, enable=endorsement, YES): a no-op that libtpms
    allows; only re-enabling a hierarchy that is off needs the platform."""
    command = bytes.fromhex(
        "800200000020000001214000000b000000094000000900000000004000000b01")
    assert code(tpm, command) == 0
