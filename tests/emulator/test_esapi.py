"""The emulator under tpm2-pytss ESAPI (which checks response HMACs and nonces)."""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import pytest
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_PT,
    TPM2_SE,
    TPM2B_EVENT,
    TPMA_SESSION,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMT_HA,
    TPMT_SYM_DEF,
    TSS2_Exception,
)

from tpm_emulator import TPM

SYM_NULL = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)


def tpmt_ha(alg: int, digest: bytes) -> Any:
    return TPMT_HA.unmarshal(struct.pack(">H", alg) + digest)[0]


def pcr16(e: Any, bank: str = "sha256") -> bytes:
    _, _, vals = e.pcr_read(TPML_PCR_SELECTION.parse(f"{bank}:16"))
    return bytes(vals.digests[0])


def hmac_session(e: Any, bind: Any = ESYS_TR.NONE, auth_hash: int = TPM2_ALG.SHA256) -> Any:
    s = e.start_auth_session(ESYS_TR.NONE, bind, TPM2_SE.HMAC, SYM_NULL, auth_hash)
    e.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION)
    return s


def test_get_random_is_capped_at_max_digest(esapi: Any) -> None:
    assert len(esapi.get_random(16)) == 16
    assert len(esapi.get_random(200)) == 64  # TPM_PT_MAX_DIGEST: SHA-512


@pytest.mark.parametrize("bank", ["sha1", "sha256", "sha384", "sha512"])
def test_extend_with_password_session(esapi: Any, bank: str) -> None:
    alg = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384,
           "sha512": TPM2_ALG.SHA512}[bank]
    size = hashlib.new(bank).digest_size
    digests = TPML_DIGEST_VALUES([tpmt_ha(alg, b"\x05" * size)])
    esapi.pcr_extend(ESYS_TR.PCR16, digests)
    assert pcr16(esapi, bank) == hashlib.new(bank, bytes(size) + b"\x05" * size).digest()


@pytest.mark.parametrize("auth_hash", [TPM2_ALG.SHA1, TPM2_ALG.SHA256, TPM2_ALG.SHA384,
                                       TPM2_ALG.SHA512])
def test_event_with_hmac_session_like_tpm2_pcrevent(esapi: Any, auth_hash: int) -> None:
    s = hmac_session(esapi, auth_hash=auth_hash)
    esapi.pcr_event(ESYS_TR.PCR16, TPM2B_EVENT(b"one"), session1=s)
    esapi.pcr_event(ESYS_TR.PCR16, TPM2B_EVENT(b"two"), session1=s)  # rolled nonces
    esapi.flush_context(s)
    expect = bytes(32)
    for data in (b"one", b"two"):
        expect = hashlib.sha256(expect + hashlib.sha256(data).digest()).digest()
    assert pcr16(esapi) == expect


def test_session_without_continue_is_flushed(esapi: Any) -> None:
    s = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, SYM_NULL,
                                 TPM2_ALG.SHA256)
    esapi.trsess_set_attributes(s, 0)
    esapi.pcr_reset(ESYS_TR.PCR16, session1=s)
    _more, cap = esapi.get_capability(TPM2_CAP.HANDLES, 0x02000000, 10)
    assert cap.data.handles.count == 0


def test_bound_session(esapi: Any) -> None:
    s = hmac_session(esapi, bind=ESYS_TR.PCR16)
    esapi.pcr_event(ESYS_TR.PCR16, TPM2B_EVENT(b"bound"), session1=s)  # bound entity
    esapi.pcr_event(ESYS_TR.PCR23, TPM2B_EVENT(b"other"), session1=s)  # another entity
    esapi.flush_context(s)


def test_context_save_load_keeps_the_session_working(esapi: Any) -> None:
    s = hmac_session(esapi)
    esapi.pcr_event(ESYS_TR.PCR16, TPM2B_EVENT(b"a"), session1=s)
    for _ in range(3):  # what tpm2-abrmd does around every command
        ctx = esapi.context_save(s)
        s = esapi.context_load(ctx)
        esapi.pcr_event(ESYS_TR.PCR16, TPM2B_EVENT(b"b"), session1=s)
    _more, cap = esapi.get_capability(TPM2_CAP.HANDLES, 0x02000000, 10)
    assert list(cap.data.handles)[: cap.data.handles.count] == [0x02000000]
    esapi.flush_context(s)


def test_wrong_password_is_refused(esapi: Any) -> None:
    esapi.tr_set_auth(ESYS_TR.PCR16, b"nope")
    with pytest.raises(TSS2_Exception) as ei:
        esapi.pcr_reset(ESYS_TR.PCR16)
    assert ei.value.rc & 0xFFFF == 0x9A2


def test_policy_and_trial_sessions_start_and_flush(esapi: Any) -> None:
    for kind in (TPM2_SE.POLICY, TPM2_SE.TRIAL):
        s = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, kind, SYM_NULL,
                                     TPM2_ALG.SHA256)
        esapi.flush_context(s)


def test_hash_ticket_is_hmac_with_the_hierarchy_proof(esapi: Any, tpm: TPM) -> None:
    digest, ticket = esapi.hash(b"abc", TPM2_ALG.SHA256, ESYS_TR.OWNER)
    assert bytes(digest) == hashlib.sha256(b"abc").digest()
    assert ticket.hierarchy == 0x40000001 and ticket.tag == 0x8024
    # HMAC with the context hash (SHA-512, as libtpms) over tag || hashAlg || digest.
    expect = hmac.new(tpm.perm.sh_proof, struct.pack(">HH", 0x8024, TPM2_ALG.SHA256)
                      + bytes(digest), "sha512").digest()
    assert bytes(ticket.digest) == expect
    _, null_ticket = esapi.hash(b"abc", TPM2_ALG.SHA256, ESYS_TR.NULL)
    assert null_ticket.hierarchy == 0x40000007 and len(null_ticket.digest) == 0
    _, gen_ticket = esapi.hash(b"\xffTCGabc", TPM2_ALG.SHA256, ESYS_TR.OWNER)
    assert len(gen_ticket.digest) == 0


def test_capabilities(esapi: Any) -> None:
    _, algs = esapi.get_capability(TPM2_CAP.ALGS, 0, 127)
    assert [a.alg for a in algs.data.algorithms][: algs.data.algorithms.count] == [
        TPM2_ALG.RSA, TPM2_ALG.SHA1, TPM2_ALG.HMAC, TPM2_ALG.AES, TPM2_ALG.MGF1,
        TPM2_ALG.KEYEDHASH, TPM2_ALG.SHA256, TPM2_ALG.SHA384, TPM2_ALG.SHA512,
        TPM2_ALG.RSASSA, TPM2_ALG.RSAES, TPM2_ALG.RSAPSS, TPM2_ALG.OAEP, TPM2_ALG.ECDSA,
        TPM2_ALG.ECDH, TPM2_ALG.ECDAA, TPM2_ALG.ECSCHNORR, TPM2_ALG.KDF1_SP800_56A,
        TPM2_ALG.KDF1_SP800_108, TPM2_ALG.ECC,
        TPM2_ALG.SYMCIPHER, TPM2_ALG.CTR, TPM2_ALG.OFB, TPM2_ALG.CBC, TPM2_ALG.CFB, TPM2_ALG.ECB]
    _, props = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT.FIXED, 127)
    table = {p.property: p.value for p in props.data.tpmProperties}
    assert table[TPM2_PT.MAX_DIGEST] == 64 and table[0x112] == 24  # TPM_PT_PCR_COUNT
    assert table[0x11A] == TPM2_ALG.SHA512  # TPM_PT_CONTEXT_HASH
    _, pcrs = esapi.get_capability(TPM2_CAP.PCRS, 0, 1)
    assert pcrs.data.assignedPCR.count == 4
    _, cmds = esapi.get_capability(TPM2_CAP.COMMANDS, 0, 254)
    attrs = {a & 0xFFFF: a for a in list(cmds.data.command)[: cmds.data.command.count]}
    assert attrs[0x182] == 0x182 | 1 << 22 | 1 << 25  # PCR_Extend: nv, cHandles=1
    assert attrs[0x176] == 0x176 | 2 << 25 | 1 << 28  # StartAuthSession: 2 in, rHandle
    assert attrs[0x161] == 0x161 | 1 << 28  # ContextLoad: rHandle
    assert attrs[0x162] == 0x162 | 1 << 25  # ContextSave: cHandles=1
    assert attrs[0x165] == 0x165  # FlushContext: the handle is a parameter


def test_property_paging_like_tpm2_tools(esapi: Any) -> None:
    seen: list[int] = []
    prop, more = TPM2_PT.FIXED, True
    while more:
        more, data = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, prop, 5)
        batch = [p.property for p in data.data.tpmProperties]
        assert len(batch) <= 5
        seen += batch
        prop = batch[-1] + 1
    assert seen == sorted(set(seen)) and 0x100 in seen and 0x201 in seen


def test_read_clock_and_unimplemented_command(esapi: Any) -> None:
    info = esapi.read_clock()
    assert info.clockInfo.resetCount == 1
    with pytest.raises(TSS2_Exception) as ei:
        esapi.firmware_read(0)  # TPM2_FirmwareRead: not implemented
    assert ei.value.rc & 0xFFF == 0x143


def test_pcr_reset_rules_through_esapi(esapi: Any) -> None:
    esapi.pcr_extend(ESYS_TR.PCR23, TPML_DIGEST_VALUES(
        [tpmt_ha(TPM2_ALG.SHA256, b"\x01" * 32)]))
    esapi.pcr_reset(ESYS_TR.PCR23)
    with pytest.raises(TSS2_Exception) as ei:
        esapi.pcr_reset(ESYS_TR.PCR0)
    assert ei.value.rc & 0xFFF == 0x907
