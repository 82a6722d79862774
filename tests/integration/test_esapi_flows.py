"""Acceptance: tpm2-pytss ESAPI flows against our TPM standalone (``tpm-emulator
socket``, reached with the swtpm TCTI through ``TCTILdr``) and as a DomS0 vTPM
(reached over gRPC with ``GrpcTcti``), and against swtpm/libtpms as the oracle.

ESAPI checks the TPM's side of every session: response HMACs, rolled nonces, Names
of returned objects, and it decrypts encrypted response parameters — so a flow that
returns the right secret through an encrypted, salted session has exercised the
whole session machinery. Keys are ECC P-256 (cheap to derive in the builtin engine).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_NT,
    TPM2_RC,
    TPM2_SE,
    TPM2_ST,
    TPM2_SU,
    TPMA_NV,
    TPMA_OBJECT,
    TPMA_SESSION,
)
from tpm2_pytss.types import (
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMS_NV_PUBLIC,
    TPMS_SENSITIVE_CREATE,
    TPMT_HA,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMU_HA,
)
from tpm2_pytss.utils import NoSuchIndex, create_ek_template, make_credential

from domS0.client.tcti import GrpcTcti
from tests.conftest import require_tool
from tests.integration import tpm_targets

TARGETS = ("swtpm", "emulator", "doms0")
AES128CFB = TPMT_SYM_DEF.parse("aes128cfb")
SYM_NULL = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
CONTINUE = TPMA_SESSION.CONTINUESESSION
ENCRYPTING = TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT
# PolicySecret(TPM_RH_ENDORSEMENT) for SHA-256 (TCG EK Credential Profile, default EK templates).
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
SIGNING_KEY = ("ecc256:ecdsa-sha256:null", TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
               | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
               | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.NODA)
STORAGE_KEY = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
               | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT
               | TPMA_OBJECT.NODA)
SEALED = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.USERWITHAUTH
          | TPMA_OBJECT.NODA)


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tpm_targets.Target]:
    name = str(request.param)
    if name == "swtpm":
        require_tool("swtpm")
    folder = tmp_path_factory.mktemp(f"esapi-{name}")
    with (tpm_targets.doms0_vtpm(folder, attach=False) if name == "doms0"
          else tpm_targets.start(name, folder)) as running:
        yield running


@contextmanager
def opened(target: tpm_targets.Target) -> Iterator[ESAPI]:
    """ESAPI on the target. There is no resource manager in between, so every
    transient object and session left behind (by a failing flow too) is flushed
    afterwards with raw FlushContext commands on the same TCTI."""
    if target.doms0 is not None:
        tcti: Any = GrpcTcti(target.doms0.address, target.vtpm, target.doms0.token)
    else:
        tcti = TCTILdr("swtpm", target.tcti.removeprefix("swtpm:"))
    try:
        with ESAPI(tcti) as esapi:
            try:
                esapi.startup(TPM2_SU.CLEAR)
            except TSS2_Exception as error:
                assert error.rc == TPM2_RC.INITIALIZE, error
            yield esapi
    finally:
        flush_everything(tcti)
        if isinstance(tcti, GrpcTcti):
            tcti.close()


def raw(tcti: Any, cc: int, body: bytes) -> bytes:
    """One command without sessions straight through the TCTI."""
    tcti.transmit(struct.pack(">HII", 0x8001, 10 + len(body), cc) + body)
    return bytes(tcti.receive())


def flush_everything(tcti: Any) -> None:
    for first in (0x80000000, 0x02000000, 0x03000000):
        # TPM2_GetCapability(TPM_CAP_HANDLES, first, 64) (Part 3, 30.2)
        response = raw(tcti, 0x17A, struct.pack(">III", 1, first, 64))
        assert struct.unpack_from(">I", response, 6)[0] == 0, response.hex()
        (count,) = struct.unpack_from(">I", response, 15)
        for (handle,) in struct.iter_unpack(">I", response[19:19 + 4 * count]):
            raw(tcti, 0x165, struct.pack(">I", handle))   # TPM2_FlushContext


@pytest.fixture
def esapi(target: tpm_targets.Target) -> Iterator[ESAPI]:
    with opened(target) as e:
        yield e


def primary(esapi: ESAPI, hierarchy: ESYS_TR = ESYS_TR.OWNER) -> ESYS_TR:
    handle, *_ = esapi.create_primary(None, "ecc256:aes128cfb", primary_handle=hierarchy)
    return handle


def sealed_object(secret: bytes, auth: bytes, policy: bytes = b"",
                  attributes: int = SEALED) -> tuple[TPM2B_SENSITIVE_CREATE, TPM2B_PUBLIC]:
    public = TPMT_PUBLIC.parse("keyedhash", objectAttributes=attributes)
    public.authPolicy = TPM2B_DIGEST(policy)
    sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(
        userAuth=TPM2B_AUTH(auth), data=TPM2B_SENSITIVE_DATA(secret)))
    return sensitive, TPM2B_PUBLIC(publicArea=public)


def session(esapi: ESAPI, kind: TPM2_SE, *, tpm_key: ESYS_TR = ESYS_TR.NONE,
            bind: ESYS_TR = ESYS_TR.NONE, attributes: int = CONTINUE,
            symmetric: TPMT_SYM_DEF | None = None,
            auth_hash: TPM2_ALG = TPM2_ALG.SHA256) -> ESYS_TR:
    if symmetric is None:
        encrypting = attributes & (TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT)
        symmetric = AES128CFB if encrypting else SYM_NULL
    handle = esapi.start_auth_session(tpm_key, bind, kind, symmetric, auth_hash)
    esapi.trsess_set_attributes(handle, attributes)
    return handle


def ecdsa_verify(public: TPM2B_PUBLIC, signature: Any, data: bytes) -> None:
    verifier = load_pem_public_key(public.to_pem())
    assert isinstance(verifier, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(bytes(signature.signature.ecdsa.signatureR),
                                              "big"),
                               int.from_bytes(bytes(signature.signature.ecdsa.signatureS),
                                              "big"))
    verifier.verify(der, data, ec.ECDSA(hashes.SHA256()))


# ------------------------------------------------------------------------- the flows


@pytest.mark.parametrize("salt", ["ecc", "rsa"])
def test_salted_and_bound_sessions_with_parameter_encryption(esapi: ESAPI, salt: str) -> None:
    """Create with a salted session (the secret travels encrypted: decrypt), unseal
    with a salted+bound session (the secret comes back encrypted: encrypt), GetRandom
    over an encrypting session. The salt is sent to the ECC P-256 primary (ECDH, KDFe)
    or to an RSA-2048 storage key under it (OAEP with label "SECRET")."""
    secret = os.urandom(32)
    parent = primary(esapi)
    if salt == "rsa":
        private, public, *_ = esapi.create(parent, None, TPM2B_PUBLIC.parse(
            "rsa2048:aes128cfb", objectAttributes=STORAGE_KEY))
        parent = esapi.load(parent, private, public)
    salted = session(esapi, TPM2_SE.HMAC, tpm_key=parent, attributes=ENCRYPTING)
    sensitive, public = sealed_object(secret, b"sealpw")
    private, public_out, *_ = esapi.create(parent, sensitive, public, session1=salted)
    item = esapi.load(parent, private, public_out, session1=salted)
    esapi.tr_set_auth(item, b"sealpw")
    # Bound to the sealed object itself (its authValue is already in the session key)
    # and, unsalted, bound to the parent (the object's authValue is appended to the
    # HMAC key; Part 1, HMAC computation).
    bound = session(esapi, TPM2_SE.HMAC, tpm_key=parent, bind=item, attributes=ENCRYPTING)
    assert bytes(esapi.unseal(item, session1=bound)) == secret
    elsewhere = session(esapi, TPM2_SE.HMAC, bind=parent, attributes=ENCRYPTING)
    assert bytes(esapi.unseal(item, session1=elsewhere)) == secret
    esapi.flush_context(elsewhere)
    assert bytes(esapi.unseal(item, session1=salted)) == secret   # nonces rolled
    random = esapi.get_random(16, session1=salted)
    assert len(bytes(random)) == 16
    # A wrong authValue is refused (the command HMAC does not match).
    esapi.tr_set_auth(item, b"wrong")
    with pytest.raises(TSS2_Exception) as refused:
        esapi.unseal(item, session1=salted)
    assert refused.value.rc == TPM2_RC.BAD_AUTH | TPM2_RC.S | TPM2_RC.RC1
    for handle in (bound, salted):
        esapi.flush_context(handle)


@pytest.mark.parametrize(("symmetric", "auth_hash"), [
    ("aes256cfb", TPM2_ALG.SHA384), ("aes128cfb", TPM2_ALG.SHA1), ("xor", TPM2_ALG.SHA256)])
def test_session_algorithms(esapi: ESAPI, symmetric: str, auth_hash: TPM2_ALG) -> None:
    """Salted sessions with other session hashes and parameter-encryption algorithms
    (AES-256-CFB, and XOR obfuscation keyed by KDFa with the session hash, Part 1,
    XOR parameter obfuscation) carry a secret into Create and back out of Unseal."""
    secret = os.urandom(40)
    parent = primary(esapi)
    sym = TPMT_SYM_DEF.parse(symmetric)
    if symmetric == "xor":
        sym.keyBits.exclusiveOr = auth_hash
    salted = session(esapi, TPM2_SE.HMAC, tpm_key=parent, attributes=ENCRYPTING,
                     symmetric=sym, auth_hash=auth_hash)
    sensitive, public = sealed_object(secret, b"pw")
    private, public_out, *_ = esapi.create(parent, sensitive, public, session1=salted)
    item = esapi.load(parent, private, public_out, session1=salted)
    esapi.tr_set_auth(item, b"pw")
    assert bytes(esapi.unseal(item, session1=salted)) == secret
    esapi.flush_context(salted)


def test_policy_session_pcr_and_auth_value(esapi: ESAPI) -> None:
    """A secret sealed to PolicyPCR(16) + PolicyAuthValue: the trial digest matches
    the one computed here, the real session unseals, and after extending PCR 16 the
    policy fails."""
    esapi.pcr_reset(ESYS_TR.PCR16)
    selection = TPML_PCR_SELECTION.parse("sha256:16")
    _, _, values = esapi.pcr_read(selection)
    pcr_digest = hashlib.sha256(bytes(values[0])).digest()
    want = bytes(32)
    want = hashlib.sha256(want + (0x17F).to_bytes(4, "big") + selection.marshal()
                          + pcr_digest).digest()
    want = hashlib.sha256(want + (0x16B).to_bytes(4, "big")).digest()

    trial = session(esapi, TPM2_SE.TRIAL)
    esapi.policy_pcr(trial, pcr_digest, selection)
    esapi.policy_auth_value(trial)
    assert bytes(esapi.policy_get_digest(trial)) == want
    esapi.flush_context(trial)

    secret = os.urandom(16)
    parent = primary(esapi)
    sensitive, public = sealed_object(secret, b"pw", want, SEALED & ~TPMA_OBJECT.USERWITHAUTH)
    private, public_out, *_ = esapi.create(parent, sensitive, public)
    item = esapi.load(parent, private, public_out)
    esapi.tr_set_auth(item, b"pw")

    policy = session(esapi, TPM2_SE.POLICY)
    esapi.policy_pcr(policy, b"", selection)
    esapi.policy_auth_value(policy)
    assert bytes(esapi.unseal(item, session1=policy)) == secret
    esapi.flush_context(policy)

    esapi.pcr_extend(ESYS_TR.PCR16, TPML_DIGEST_VALUES([TPMT_HA(
        hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=hashlib.sha256(b"x").digest()))]))
    policy = session(esapi, TPM2_SE.POLICY)
    esapi.policy_pcr(policy, b"", selection)
    esapi.policy_auth_value(policy)
    with pytest.raises(TSS2_Exception) as failed:
        esapi.unseal(item, session1=policy)
    assert failed.value.rc == TPM2_RC.POLICY_FAIL | TPM2_RC.S | TPM2_RC.RC1
    esapi.flush_context(policy)


def test_context_save_and_load(esapi: ESAPI) -> None:
    """A key and an HMAC session saved, flushed/evicted from the slots and loaded
    again keep working; the reloaded key's signature verifies."""
    parent = primary(esapi)
    scheme, attributes = SIGNING_KEY
    private, public, *_ = esapi.create(parent, None, TPM2B_PUBLIC.parse(
        scheme, objectAttributes=attributes))
    key = esapi.load(parent, private, public)
    saved_key = esapi.context_save(key)
    esapi.flush_context(key)
    esapi.flush_context(parent)

    hmac_session = session(esapi, TPM2_SE.HMAC)
    saved_session = esapi.context_save(hmac_session)
    _more, data = esapi.get_capability(TPM2_CAP.HANDLES, 0x02000000, 64)
    assert len(list(data.data.handles)) == 0, "a saved session is no longer loaded"

    key = esapi.context_load(saved_key)
    hmac_session = esapi.context_load(saved_session)
    digest = hashlib.sha256(b"after context load").digest()
    signature = esapi.sign(key, digest, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
                           session1=hmac_session)
    ecdsa_verify(public, signature, b"after context load")
    # A saved session loads once: loading it again is a replay, refused as a handle
    # that is not a saved session (TPM_RC_HANDLE on the context, as libtpms).
    with pytest.raises(TSS2_Exception) as replay:
        esapi.context_load(saved_session)
    assert replay.value.rc == TPM2_RC.HANDLE | TPM2_RC.P | TPM2_RC.RC1
    esapi.flush_context(hmac_session)


def _ek_and_ak(esapi: ESAPI) -> tuple[ESYS_TR, TPM2B_PUBLIC, ESYS_TR, TPM2B_PUBLIC]:
    """The TCG ECC P-256 EK and a restricted ECDSA AK under it (the AK's Create and
    Load authorized with PolicySecret(endorsement) sessions, as tpm2_createak does)."""
    def no_nv(_index: int) -> bytes:
        raise NoSuchIndex(_index)

    _nonce, template = create_ek_template("EK-ECC256", no_nv)
    assert bytes(template.publicArea.authPolicy) == EK_POLICY
    ek, ek_public, *_ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
    ak_template = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null", objectAttributes=(
        TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT))
    policy = ek_session(esapi)
    private, ak_public, *_ = esapi.create(ek, None, ak_template, session1=policy)
    esapi.flush_context(policy)
    policy = ek_session(esapi)
    ak = esapi.load(ek, private, ak_public, session1=policy)
    esapi.flush_context(policy)
    return ek, ek_public, ak, ak_public


def ek_session(esapi: ESAPI) -> ESYS_TR:
    policy = session(esapi, TPM2_SE.POLICY)
    esapi.policy_secret(ESYS_TR.ENDORSEMENT, policy)
    assert bytes(esapi.policy_get_digest(policy)) == EK_POLICY
    return policy


def test_credential_activation(esapi: ESAPI) -> None:
    """MakeCredential by the TPM and by tpm2-pytss (offline) for the AK's name;
    ActivateCredential (AK by password, EK by PolicySecret) recovers both."""
    ek, ek_public, ak, _ = _ek_and_ak(esapi)
    name = esapi.tr_get_name(ak)
    for how in ("tpm", "offline"):
        secret = os.urandom(24)
        if how == "tpm":
            blob, encrypted = esapi.make_credential(ek, TPM2B_DIGEST(secret), name)
        else:
            blob, encrypted = make_credential(ek_public, secret, name)
        policy = ek_session(esapi)
        recovered = esapi.activate_credential(ak, ek, blob, encrypted,
                                              session1=ESYS_TR.PASSWORD, session2=policy)
        esapi.flush_context(policy)
        assert bytes(recovered) == secret, how


def test_quote_verified_with_cryptography(esapi: ESAPI) -> None:
    """A quote over PCRs 16 and 23 carries the nonce and the digest of the PCR values
    read back, and its ECDSA signature verifies with the AK's public key."""
    ek, _, ak, ak_public = _ek_and_ak(esapi)
    esapi.flush_context(ek)
    esapi.pcr_extend(ESYS_TR.PCR23, TPML_DIGEST_VALUES([TPMT_HA(
        hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=hashlib.sha256(b"q").digest()))]))
    nonce = os.urandom(20)
    selection = TPML_PCR_SELECTION.parse("sha256:16,23")
    quoted, signature = esapi.quote(ak, selection, nonce,
                                    TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    attest, _ = TPMS_ATTEST.unmarshal(bytes(quoted))
    assert attest.type == TPM2_ST.ATTEST_QUOTE
    assert bytes(attest.extraData) == nonce
    _, _, values = esapi.pcr_read(selection)
    pcrs = b"".join(bytes(v) for v in values)
    assert bytes(attest.attested.quote.pcrDigest) == hashlib.sha256(pcrs).digest()
    ecdsa_verify(ak_public, signature, bytes(quoted))


def test_nv_counter(esapi: ESAPI) -> None:
    """A counter index: NV_Read before the first increment is TPM_RC_NV_UNINITIALIZED,
    then each NV_Increment adds one."""
    index = 0x01500201
    public = TPM2B_NV_PUBLIC(nvPublic=TPMS_NV_PUBLIC(
        nvIndex=index, nameAlg=TPM2_ALG.SHA256, dataSize=8,
        attributes=TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.NO_DA
        | (TPM2_NT.COUNTER << TPMA_NV.TPM2_NT_SHIFT)))
    nv = esapi.nv_define_space(b"", public)
    try:
        with pytest.raises(TSS2_Exception) as uninitialized:
            esapi.nv_read(nv, 8, auth_handle=ESYS_TR.OWNER)
        assert uninitialized.value.rc == TPM2_RC.NV_UNINITIALIZED
        esapi.nv_increment(nv, auth_handle=ESYS_TR.OWNER)
        first = int.from_bytes(bytes(esapi.nv_read(nv, 8, auth_handle=ESYS_TR.OWNER)), "big")
        for _ in range(3):
            esapi.nv_increment(nv, auth_handle=ESYS_TR.OWNER)
        now = int.from_bytes(bytes(esapi.nv_read(nv, 8, auth_handle=ESYS_TR.OWNER)), "big")
        assert now == first + 3
    finally:
        esapi.nv_undefine_space(nv)
