"""Policy sessions under tpm2-pytss ESAPI, in process: policy digests (trial sessions)
agree with digests computed here from Part 3's formulas, and a sealed object whose
authPolicy needs them unseals only when every assertion holds."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CC,
    TPM2_EO,
    TPM2_RC,
    TPM2_SE,
    TPM2_ST,
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMA_NV,
    TPML_DIGEST,
    TPML_PCR_SELECTION,
    TPMS_NV_PUBLIC,
    TPMS_SENSITIVE_CREATE,
    TPMS_SIGNATURE_ECC,
    TPMT_PUBLIC,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF,
    TPMT_TK_VERIFIED,
    TPMU_SIGNATURE,
    TSS2_Exception,
)

from tests.emulator.emulator_wire import startup
from tests.emulator.inprocess import esapi_over
from tests.emulator.test_differential_policy import ecc_public
from tpm_emulator import TPM
from tpm_emulator.constants import RH
from tpm_emulator.policy.context import U1, PolicyContext
from tpm_emulator.policy.tickets import verified_ticket

PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
POLICY_ONLY = "fixedtpm|fixedparent|noda"  # no userWithAuth: USER role needs a policy
ZERO = bytes(32)
SIGNING_KEY = ec.derive_private_key(0xC0FFEE, ec.SECP256R1())


class AtLocality:
    """Our TPM as ESAPI sees it, with commands arriving at a chosen locality."""

    def __init__(self, tpm: TPM) -> None:
        self.tpm = tpm
        self.locality = 0

    def execute(self, command: bytes) -> bytes:
        return self.tpm.execute(command, self.locality)


@pytest.fixture
def core() -> AtLocality:
    t = TPM()
    startup(t)
    return AtLocality(t)


@pytest.fixture
def e(core: AtLocality) -> Iterator[Any]:
    with esapi_over(core) as ectx:
        yield ectx


def h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def cc(code: int) -> bytes:
    return struct.pack(">I", code)


def start(e: Any, kind: Any = TPM2_SE.POLICY) -> Any:
    return e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, kind,
                                TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)


def trial(e: Any, steps: Callable[[Any], None]) -> bytes:
    s = start(e, TPM2_SE.TRIAL)
    steps(s)
    digest = bytes(e.policy_get_digest(s))
    e.flush_context(s)
    return digest


def seal(e: Any, policy: bytes, data: bytes = b"the secret", auth: bytes = b"pw",
         attrs: str = POLICY_ONLY) -> Any:
    parent, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(),
                                  TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=PARENT))
    pub = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=attrs)
    pub.publicArea.authPolicy = TPM2B_DIGEST(policy)
    sens = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(
        userAuth=TPM2B_AUTH(auth), data=TPM2B_SENSITIVE_DATA(data)))
    priv, public, *_ = e.create(parent, sens, pub)
    item = e.load(parent, priv, public)
    e.flush_context(parent)
    e.tr_set_auth(item, auth)
    return item


def rc_of(excinfo: Any) -> int:
    return int(excinfo.value.rc)


def unseal_fails(e: Any, item: Any, s: Any) -> int:
    with pytest.raises(TSS2_Exception) as excinfo:
        e.unseal(item, session1=s)
    return rc_of(excinfo)


def pcr_selection() -> Any:
    return TPML_PCR_SELECTION.parse("sha256:7")


def extend_pcr7(e: Any) -> None:
    e.pcr_event(ESYS_TR.PCR7, b"boot event")


# ---- digests of trial sessions ------------------------------------------------------------
def test_trial_digests_follow_part3_formulas(e: Any) -> None:
    extend_pcr7(e)
    _counter, _selection, values = e.pcr_read(pcr_selection())
    pcr7 = bytes(values.digests[0])
    assert pcr7 != ZERO
    selection = struct.pack(">IHB", 1, TPM2_ALG.SHA256, 3) + b"\x80\x00\x00"
    assert trial(e, lambda s: e.policy_pcr(s, None, pcr_selection())) == h(
        ZERO, cc(TPM2_CC.PolicyPCR), selection, h(pcr7))
    av = h(ZERO, cc(TPM2_CC.PolicyAuthValue))
    assert trial(e, lambda s: e.policy_auth_value(s)) == av
    assert trial(e, lambda s: e.policy_password(s)) == av  # same digest by design
    assert trial(e, lambda s: e.policy_command_code(s, TPM2_CC.Unseal)) == h(
        ZERO, cc(TPM2_CC.PolicyCommandCode), cc(TPM2_CC.Unseal))
    assert trial(e, lambda s: e.policy_locality(s, 0x03)) == h(
        ZERO, cc(TPM2_CC.PolicyLocality), b"\x03")
    owner = struct.pack(">I", RH.OWNER)
    assert trial(e, lambda s: e.policy_secret(ESYS_TR.OWNER, s, policy_ref=b"ref")) == h(
        h(ZERO, cc(TPM2_CC.PolicySecret), owner), b"ref")
    assert trial(e, lambda s: e.policy_or(s, TPML_DIGEST([av, ZERO]))) == h(
        ZERO, cc(TPM2_CC.PolicyOR), av, ZERO)
    cp = b"\x07" * 32
    assert trial(e, lambda s: e.policy_cp_hash(s, cp)) == h(ZERO, cc(TPM2_CC.PolicyCpHash), cp)


# ---- enforcement: a sealed object behind a policy ----------------------------------------
def test_policy_pcr_unseals_until_the_pcr_changes(e: Any) -> None:
    policy = trial(e, lambda s: e.policy_pcr(s, None, pcr_selection()))
    item = seal(e, policy)
    s = start(e)
    e.policy_pcr(s, None, pcr_selection())
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    e.policy_pcr(s, None, pcr_selection())  # the used session started over
    extend_pcr7(e)
    assert unseal_fails(e, item, s) == TPM2_RC.PCR_CHANGED
    e.policy_restart(s)
    e.policy_pcr(s, None, pcr_selection())  # now the digest of other PCR values
    assert unseal_fails(e, item, s) == TPM2_RC.POLICY_FAIL + TPM2_RC.S + TPM2_RC.RC1


def test_policy_pcr_refuses_a_wrong_pcr_digest(e: Any) -> None:
    s = start(e)
    with pytest.raises(TSS2_Exception) as excinfo:
        e.policy_pcr(s, b"\x01" * 32, pcr_selection())
    assert rc_of(excinfo) == TPM2_RC.VALUE + TPM2_RC.P + TPM2_RC.RC1


def test_used_policy_session_must_be_satisfied_again(e: Any) -> None:
    item = seal(e, trial(e, lambda s: e.policy_command_code(s, TPM2_CC.Unseal)))
    s = start(e)
    e.policy_command_code(s, TPM2_CC.Unseal)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    assert bytes(e.policy_get_digest(s)) == ZERO
    assert unseal_fails(e, item, s) == TPM2_RC.POLICY_FAIL + TPM2_RC.S + TPM2_RC.RC1


def test_policy_auth_value_keys_the_session_hmac_with_the_auth_value(e: Any) -> None:
    item = seal(e, trial(e, lambda s: e.policy_auth_value(s)))
    s = start(e)
    e.policy_auth_value(s)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    e.policy_auth_value(s)
    e.tr_set_auth(item, b"wrong")
    assert unseal_fails(e, item, s) == TPM2_RC.BAD_AUTH + TPM2_RC.S + TPM2_RC.RC1


def test_policy_password_sends_the_auth_value_in_clear(e: Any) -> None:
    item = seal(e, trial(e, lambda s: e.policy_password(s)))
    s = start(e)
    e.policy_password(s)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    e.policy_password(s)
    e.tr_set_auth(item, b"wrong")
    assert unseal_fails(e, item, s) == TPM2_RC.BAD_AUTH + TPM2_RC.S + TPM2_RC.RC1


def test_policy_command_code_binds_the_command(e: Any) -> None:
    policy = trial(e, lambda s: e.policy_command_code(s, TPM2_CC.ObjectChangeAuth))
    item = seal(e, policy)
    s = start(e)
    e.policy_command_code(s, TPM2_CC.ObjectChangeAuth)
    assert unseal_fails(e, item, s) == TPM2_RC.POLICY_CC + TPM2_RC.S + TPM2_RC.RC1


def test_policy_or_and_restart(e: Any) -> None:
    pcr_branch = trial(e, lambda s: e.policy_pcr(s, b"\x01" * 32, pcr_selection()))
    av_branch = trial(e, lambda s: e.policy_auth_value(s))
    branches = TPML_DIGEST([pcr_branch, av_branch])
    item = seal(e, trial(e, lambda s: (e.policy_auth_value(s), e.policy_or(s, branches))))
    s = start(e)
    e.policy_command_code(s, TPM2_CC.Unseal)  # a branch that is not in the list
    with pytest.raises(TSS2_Exception) as excinfo:
        e.policy_or(s, branches)
    assert rc_of(excinfo) == TPM2_RC.VALUE + TPM2_RC.P + TPM2_RC.RC1
    e.policy_restart(s)
    e.policy_auth_value(s)
    e.policy_or(s, branches)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"


def test_policy_secret_with_owner_auth_and_its_ticket(e: Any) -> None:
    policy = trial(e, lambda s: e.policy_secret(ESYS_TR.OWNER, s, policy_ref=b"r", expiration=0))
    item = seal(e, policy)
    s = start(e)
    timeout, ticket = e.policy_secret(ESYS_TR.OWNER, s, policy_ref=b"r", expiration=0)
    assert timeout.size == 0 and ticket.hierarchy == RH.NULL  # no ticket asked for
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    e.flush_context(s)
    # expiration < 0 asks for a ticket that PolicyTicket redeems later.
    s2 = start(e)
    timeout, ticket = e.policy_secret(ESYS_TR.OWNER, s2, policy_ref=b"r", expiration=-60)
    # An HMAC with the context integrity hash: SHA-512, as in libtpms.
    assert ticket.tag == TPM2_ST.AUTH_SECRET and len(bytes(ticket.digest)) == 64
    e.flush_context(s2)
    s3 = start(e)
    owner_name = struct.pack(">I", RH.OWNER)
    e.policy_ticket(s3, timeout, owner_name, ticket, policy_ref=b"r")
    assert bytes(e.unseal(item, session1=s3)) == b"the secret"
    s4 = start(e)
    with pytest.raises(TSS2_Exception) as excinfo:
        e.policy_ticket(s4, timeout, owner_name, ticket, policy_ref=b"other")
    assert rc_of(excinfo) == TPM2_RC.TICKET + TPM2_RC.P + TPM2_RC.RC5


def test_policy_secret_refuses_a_wrong_owner_password(e: Any) -> None:
    s = start(e)
    e.tr_set_auth(ESYS_TR.OWNER, b"not it")
    with pytest.raises(TSS2_Exception) as excinfo:
        e.policy_secret(ESYS_TR.OWNER, s, expiration=0)
    assert rc_of(excinfo) & 0xBF in (TPM2_RC.AUTH_FAIL, TPM2_RC.BAD_AUTH)


def _external_key(e: Any) -> Any:
    public, _ = TPMT_PUBLIC.unmarshal(ecc_public(SIGNING_KEY))
    return e.load_external(TPM2B_PUBLIC(publicArea=public), hierarchy=ESYS_TR.OWNER)


def _sign(digest: bytes, key: ec.EllipticCurvePrivateKey = SIGNING_KEY) -> Any:
    r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
    ecc = TPMS_SIGNATURE_ECC(hash=TPM2_ALG.SHA256, signatureR=r.to_bytes(32, "big"),
                             signatureS=s.to_bytes(32, "big"))
    return TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA, signature=TPMU_SIGNATURE(ecdsa=ecc))


def test_policy_signed_with_an_external_ecc_key(e: Any) -> None:
    key = _external_key(e)
    dummy = _sign(ZERO)
    policy = trial(e, lambda s: e.policy_signed(key, s, dummy, policy_ref=b"ok", expiration=0))
    item = seal(e, policy)
    s = start(e)
    nonce = bytes(e.trsess_get_nonce_tpm(s))
    a_hash = h(nonce, struct.pack(">i", 0), b"", b"ok")
    e.policy_signed(key, s, _sign(a_hash), nonce_tpm=nonce, policy_ref=b"ok", expiration=0)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    # a signature over another nonce, or by another key, does not verify
    other = ec.derive_private_key(0xBAD, ec.SECP256R1())
    nonce = bytes(e.trsess_get_nonce_tpm(s))
    for sig in (_sign(a_hash), _sign(h(nonce, struct.pack(">i", 0), b"", b"ok"), other)):
        with pytest.raises(TSS2_Exception) as excinfo:
            e.policy_signed(key, s, sig, nonce_tpm=nonce, policy_ref=b"ok", expiration=0)
        assert rc_of(excinfo) == TPM2_RC.SIGNATURE + TPM2_RC.P + TPM2_RC.RC5


def test_policy_authorize_with_a_verified_ticket(core: AtLocality, e: Any) -> None:
    key = _external_key(e)
    key_name = bytes(e.tr_get_name(key))
    ref = b"authority"
    authorized = trial(e, lambda s: e.policy_authorize(
        s, ZERO, key_name, TPMT_TK_VERIFIED(tag=TPM2_ST.VERIFIED, hierarchy=RH.OWNER),
        policy_ref=ref))
    item = seal(e, authorized)
    approved = trial(e, lambda s: e.policy_command_code(s, TPM2_CC.Unseal))
    # What TPM2_VerifySignature returns for the authority's signature over aHash.
    a_hash = h(approved, ref)
    ticket = TPMT_TK_VERIFIED(tag=TPM2_ST.VERIFIED, hierarchy=RH.OWNER,
                              digest=verified_ticket(core.tpm, RH.OWNER, a_hash, key_name))
    s = start(e)
    e.policy_command_code(s, TPM2_CC.Unseal)
    e.policy_authorize(s, approved, key_name, ticket, policy_ref=ref)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    e.policy_command_code(s, TPM2_CC.Unseal)
    forged = TPMT_TK_VERIFIED(tag=TPM2_ST.VERIFIED, hierarchy=RH.OWNER, digest=b"\x00" * 32)
    with pytest.raises(TSS2_Exception) as excinfo:
        e.policy_authorize(s, approved, key_name, forged, policy_ref=ref)
    assert rc_of(excinfo) == TPM2_RC.VALUE + TPM2_RC.P + TPM2_RC.RC4


def test_policy_nv_compares_index_contents(e: Any) -> None:
    attrs = (TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD
             | TPMA_NV.NO_DA)
    public = TPM2B_NV_PUBLIC(TPMS_NV_PUBLIC(
        nvIndex=0x01500010, nameAlg=TPM2_ALG.SHA256, attributes=attrs, dataSize=8))
    nv = e.nv_define_space(b"", public)
    e.nv_write(nv, struct.pack(">Q", 42))
    at_least_40 = struct.pack(">Q", 40)
    policy = trial(e, lambda s: e.policy_nv(ESYS_TR.OWNER, nv, s, at_least_40,
                                            TPM2_EO.UNSIGNED_GE))
    item = seal(e, policy)
    s = start(e)
    e.policy_nv(ESYS_TR.OWNER, nv, s, at_least_40, TPM2_EO.UNSIGNED_GE)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    e.nv_write(nv, struct.pack(">Q", 7))
    with pytest.raises(TSS2_Exception) as excinfo:
        e.policy_nv(ESYS_TR.OWNER, nv, s, at_least_40, TPM2_EO.UNSIGNED_GE)
    assert rc_of(excinfo) == TPM2_RC.POLICY


def test_policy_counter_timer_compares_tpm_time(e: Any) -> None:
    s = start(e)
    e.policy_counter_timer(s, struct.pack(">Q", 0), TPM2_EO.UNSIGNED_GE, 0)  # time ≥ 0
    with pytest.raises(TSS2_Exception) as excinfo:  # time < 0 never holds
        e.policy_counter_timer(s, struct.pack(">Q", 0), TPM2_EO.UNSIGNED_LT, 0)
    assert rc_of(excinfo) == TPM2_RC.POLICY
    with pytest.raises(TSS2_Exception) as excinfo:  # beyond TPMS_TIME_INFO
        e.policy_counter_timer(s, b"\x00" * 8, TPM2_EO.EQ, 20)
    assert rc_of(excinfo) & 0xBF == TPM2_RC.RANGE


def test_policy_locality_is_checked_at_authorization(core: AtLocality, e: Any) -> None:
    item = seal(e, trial(e, lambda s: e.policy_locality(s, 0x08)))  # locality 3 only
    s = start(e)
    e.policy_locality(s, 0x08)
    assert unseal_fails(e, item, s) == TPM2_RC.LOCALITY
    e.policy_restart(s)
    e.policy_locality(s, 0x08)
    core.locality = 3
    assert bytes(e.unseal(item, session1=s)) == b"the secret"


def test_policy_cp_hash_and_name_hash_bind_the_object(e: Any) -> None:
    first = seal(e, ZERO)  # placeholder: only its Name is needed
    name = bytes(e.tr_get_name(first))
    cp = h(cc(TPM2_CC.Unseal), name)
    for assertion, value in ((e.policy_cp_hash, cp), (e.policy_name_hash, h(name))):
        policy = trial(e, lambda s, a=assertion, v=value: a(s, v))
        item = seal(e, policy, data=b"bound")
        s = start(e)
        assertion(s, value)
        # the policy's digest matches, but the command is for another object
        assert unseal_fails(e, item, s) == TPM2_RC.POLICY_FAIL + TPM2_RC.S + TPM2_RC.RC1
        item_name = bytes(e.tr_get_name(item))
        own = h(cc(TPM2_CC.Unseal), item_name) if assertion == e.policy_cp_hash else h(item_name)
        policy_own = trial(e, lambda s, a=assertion, v=own: a(s, v))
        assert policy_own != policy
        e.flush_context(item)


def test_session_context_keeps_policy_state(e: Any) -> None:
    item = seal(e, trial(e, lambda s: e.policy_password(s)))
    s = start(e)
    e.policy_password(s)
    saved = e.context_save(s)
    s = e.context_load(saved)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"


def test_policy_context_encoding_round_trips() -> None:
    ctx = PolicyContext(command_code=0x15E, u1=b"\x01" * 32, u1_kind=U1.NAME_HASH, locality=3,
                        auth_value_needed=True, pp_required=True, pcr_counter=0,
                        nv_written=False, timeout_ms=5, start_ms=7)
    assert PolicyContext.decode(ctx.encode()) == ctx
    assert PolicyContext.decode(b"\x01") == PolicyContext()


def _nv_public(index: int, attrs: Any, size: int, policy: bytes = b"") -> Any:
    return TPM2B_NV_PUBLIC(TPMS_NV_PUBLIC(nvIndex=index, nameAlg=TPM2_ALG.SHA256,
                                          attributes=attrs, authPolicy=policy, dataSize=size))


def test_policy_nv_written_makes_a_write_once_index(e: Any) -> None:
    policy = trial(e, lambda s: (e.policy_nv_written(s, False),
                                 e.policy_command_code(s, TPM2_CC.NV_Write)))
    attrs = TPMA_NV.POLICYWRITE | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA
    nv = e.nv_define_space(b"", _nv_public(0x01500011, attrs, 4, policy))
    s = start(e)
    e.policy_nv_written(s, False)
    e.policy_command_code(s, TPM2_CC.NV_Write)
    e.nv_write(nv, b"once", auth_handle=nv, session1=s)
    e.policy_nv_written(s, False)
    e.policy_command_code(s, TPM2_CC.NV_Write)
    with pytest.raises(TSS2_Exception) as excinfo:
        e.nv_write(nv, b"twice", auth_handle=nv, session1=s)
    assert rc_of(excinfo) == TPM2_RC.POLICY_FAIL + TPM2_RC.S + TPM2_RC.RC1
    assert bytes(e.nv_read(nv, 4)) == b"once"


def test_policy_authorize_nv_takes_the_policy_from_an_index(e: Any) -> None:
    attrs = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA
    nv = e.nv_define_space(b"", _nv_public(0x01500012, attrs, 34))
    approved = trial(e, lambda s: e.policy_command_code(s, TPM2_CC.Unseal))
    e.nv_write(nv, struct.pack(">H", TPM2_ALG.SHA256) + approved, auth_handle=ESYS_TR.OWNER)
    # (after the write: the policy names the index, and WRITTEN is part of its Name)
    item = seal(e, trial(e, lambda s: e.policy_authorize_nv(nv, s, ESYS_TR.OWNER)))
    s = start(e)
    e.policy_command_code(s, TPM2_CC.Unseal)
    e.policy_authorize_nv(nv, s, ESYS_TR.OWNER)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    e.policy_auth_value(s)  # not the policy the index approves
    with pytest.raises(TSS2_Exception) as excinfo:
        e.policy_authorize_nv(nv, s, ESYS_TR.OWNER)
    assert rc_of(excinfo) == TPM2_RC.VALUE


def test_policy_template_binds_what_a_parent_may_create(e: Any) -> None:
    allowed = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=POLICY_ONLY)
    other = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=POLICY_ONLY + "|userwithauth")
    template_hash = h(bytes(allowed.publicArea.marshal()))
    policy = trial(e, lambda s: e.policy_template(s, template_hash))
    parent_template = TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb", objectAttributes=PARENT.replace("|userwithauth", ""))
    parent_template.publicArea.authPolicy = TPM2B_DIGEST(policy)
    parent, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(), parent_template)
    s = start(e)
    e.policy_template(s, template_hash)
    data = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(b"x")))
    e.create(parent, data, allowed, session1=s)
    e.policy_template(s, template_hash)
    with pytest.raises(TSS2_Exception) as excinfo:
        e.create(parent, data, other, session1=s)
    assert rc_of(excinfo) == TPM2_RC.POLICY_FAIL + TPM2_RC.S + TPM2_RC.RC1


def test_policy_physical_presence_never_holds_here(e: Any) -> None:
    item = seal(e, trial(e, lambda s: e.policy_physical_presence(s)))
    s = start(e)
    e.policy_physical_presence(s)
    assert unseal_fails(e, item, s) == TPM2_RC.PP + TPM2_RC.S + TPM2_RC.RC1


def test_policy_secret_expiration_counts_from_the_session_start() -> None:
    now = [1000.0]
    tpm = TPM(clock=lambda: now[0])
    startup(tpm)
    with esapi_over(tpm) as e:
        item = seal(e, trial(e, lambda s: e.policy_secret(ESYS_TR.OWNER, s, expiration=0)))
        for wait, expect in ((5.0, None), (11.0, TPM2_RC.EXPIRED + TPM2_RC.S + TPM2_RC.RC1)):
            s = start(e)
            nonce = bytes(e.trsess_get_nonce_tpm(s))
            e.policy_secret(ESYS_TR.OWNER, s, nonce_tpm=nonce, expiration=10)
            now[0] += wait
            if expect is None:
                assert bytes(e.unseal(item, session1=s)) == b"the secret"
            else:
                assert unseal_fails(e, item, s) == expect
            e.flush_context(s)


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(65537, 2048)


def test_policy_signed_with_rsassa_and_rsapss(e: Any, rsa_key: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import padding

    n = rsa_key.public_key().public_numbers().n.to_bytes(256, "big")
    raw = (struct.pack(">HHIH", TPM2_ALG.RSA, TPM2_ALG.SHA256, (1 << 18) | (1 << 6), 0)
           + struct.pack(">HHHI", TPM2_ALG.NULL, TPM2_ALG.NULL, 2048, 0)
           + struct.pack(">H", 256) + n)
    public, _ = TPMT_PUBLIC.unmarshal(raw)
    key = e.load_external(TPM2B_PUBLIC(publicArea=public), hierarchy=ESYS_TR.OWNER)
    s = start(e)
    schemes = ((TPM2_ALG.RSASSA, padding.PKCS1v15()),
               (TPM2_ALG.RSAPSS, padding.PSS(padding.MGF1(hashes.SHA256()), 32)))
    for alg, pad in schemes:
        nonce = bytes(e.trsess_get_nonce_tpm(s))
        a_hash = h(nonce, struct.pack(">i", 0), b"", b"")
        sig = rsa_key.sign(a_hash, pad, Prehashed(hashes.SHA256()))
        tpmt = TPMT_SIGNATURE.unmarshal(struct.pack(">HHH", alg, TPM2_ALG.SHA256, 256) + sig)[0]
        e.policy_signed(key, s, tpmt, nonce_tpm=nonce, expiration=0)
        bad = TPMT_SIGNATURE.unmarshal(struct.pack(">HHH", alg, TPM2_ALG.SHA256, 256)
                                       + bytes(256))[0]
        with pytest.raises(TSS2_Exception) as excinfo:
            e.policy_signed(key, s, bad, expiration=0)
        assert rc_of(excinfo) == TPM2_RC.SIGNATURE + TPM2_RC.P + TPM2_RC.RC5
    name = bytes(e.tr_get_name(key))
    expect = h(h(h(ZERO, cc(TPM2_CC.PolicySigned), name), b""), cc(TPM2_CC.PolicySigned), name)
    assert bytes(e.policy_get_digest(s)) == h(expect, b"")


def test_policy_signed_ticket_is_redeemed_by_policy_ticket(e: Any) -> None:
    key = _external_key(e)
    key_name = bytes(e.tr_get_name(key))
    policy = trial(e, lambda s: e.policy_signed(key, s, _sign(ZERO), expiration=0))
    item = seal(e, policy)
    s = start(e)
    nonce = bytes(e.trsess_get_nonce_tpm(s))
    a_hash = h(nonce, struct.pack(">i", -60), b"", b"")
    timeout, ticket = e.policy_signed(key, s, _sign(a_hash), nonce_tpm=nonce, expiration=-60)
    assert ticket.tag == TPM2_ST.AUTH_SIGNED and ticket.hierarchy == RH.OWNER
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    e.policy_ticket(s, timeout, key_name, ticket)  # the same session, used again
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    with pytest.raises(TSS2_Exception) as excinfo:  # a ticket names the key it came from
        e.policy_ticket(s, timeout, key_name[:-1] + b"\x00", ticket)
    assert rc_of(excinfo) == TPM2_RC.TICKET + TPM2_RC.P + TPM2_RC.RC5
