"""SHA-512, the fourth implemented hash, in process: its PCR bank, sessions and policies
with SHA-512 as authHash, SHA-512 nameAlg objects and NV indices, Hash/HMAC/sequences
and hashcheck tickets, the SHA-512 context hash, and the state written before SHA-512
existed (three-bank snapshots, SHA-256 context blobs, three-bank event sequences)."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2_ST,
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMA_NV,
    TPMA_SESSION,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMS_NV_PUBLIC,
    TPMS_SENSITIVE_CREATE,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMT_TK_HASHCHECK,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
    TSS2_Exception,
)

from tests.emulator.emulator_wire import (
    SHA1,
    SHA256,
    SHA384,
    SHA512,
    command,
    pcr_event,
    pcr_extend,
    pcr_reset,
    rc,
    read_one,
    shutdown,
    startup,
)
from tests.emulator.inprocess import esapi_over
from tpm_emulator import TPM, StateFormatError
from tpm_emulator import state as snapshot_format
from tpm_emulator.constants import RH
from tpm_emulator.crypto import HASHES, kdfa, open_context
from tpm_emulator.keys.digest_state import DigestState, HmacState
from tpm_emulator.keys.sequence import encode_state, sequence_from_record
from tpm_emulator.objects.store import ObjectRecord

PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
POLICY_ONLY = "fixedtpm|fixedparent|noda"
SIGNER = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign|noda"
CONT = TPMA_SESSION.CONTINUESESSION
NULL_SYM = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
AES128 = TPMT_SYM_DEF(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128),
                      mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB))
XOR512 = TPMT_SYM_DEF(algorithm=TPM2_ALG.XOR,
                      keyBits=TPMU_SYM_KEY_BITS(exclusiveOr=TPM2_ALG.SHA512))
DATA = bytes(range(256)) * 4  # 1024 octets: eight SHA-512 blocks


def h512(*parts: bytes) -> bytes:
    return hashlib.sha512(b"".join(parts)).digest()


def rc_of(e: pytest.ExceptionInfo[TSS2_Exception]) -> int:
    return int(e.value.rc) & 0xFFF


@pytest.fixture
def e(tpm: TPM) -> Iterator[Any]:
    with esapi_over(tpm) as ectx:
        yield ectx


# ---- the resumable digest state ------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 111, 112, 127, 128, 129, 239, 240, 256, 1000])
def test_digest_state_matches_hashlib_across_a_save(size: int) -> None:
    state = DigestState.start(SHA512)
    state.update(DATA[: size // 2])
    resumed = DigestState.from_bytes(state.to_bytes())
    resumed.update(DATA[size // 2 : size])
    assert resumed.digest() == hashlib.sha512(DATA[:size]).digest()


@pytest.mark.parametrize("key_size", [0, 64, 128, 129, 200])  # around the 128-octet block
def test_hmac_state_matches_the_hmac_module(key_size: int) -> None:
    key = DATA[:key_size]
    state = HmacState.start(SHA512, key)
    state.update(b"message")
    assert state.digest() == hmac.new(key, b"message", "sha512").digest()


# ---- the PCR bank --------------------------------------------------------------------------
def test_bank_extend_event_and_reset_match_hashlib(tpm: TPM) -> None:
    digest = b"\x5a" * 64
    assert rc(tpm.execute(pcr_extend(16, {SHA512: digest}))) == 0
    value = h512(bytes(64), digest)
    assert read_one(tpm, SHA512, 16) == value
    assert read_one(tpm, SHA256, 16) == bytes(32)  # the other banks untouched
    response = tpm.execute(pcr_event(16, b"event data"))
    assert rc(response) == 0 and h512(b"event data") in response
    assert read_one(tpm, SHA512, 16) == h512(value, h512(b"event data"))
    assert rc(tpm.execute(pcr_reset(16))) == 0
    assert read_one(tpm, SHA512, 16) == bytes(64)


def test_bank_reset_values_and_startup_locality() -> None:
    t = TPM()
    startup(t, locality=3)
    assert read_one(t, SHA512, 0) == bytes(63) + b"\x03"
    assert [read_one(t, SHA512, p) for p in range(17, 23)] == [b"\xff" * 64] * 6


# ---- Hash, HMAC, sequences and hashcheck tickets -------------------------------------------
def test_hash_and_hash_sequence_give_the_same_digest_and_ticket(e: Any) -> None:
    digest, ticket = e.hash(DATA[:1000], TPM2_ALG.SHA512, ESYS_TR.OWNER)
    assert bytes(digest) == hashlib.sha512(DATA[:1000]).digest()
    assert ticket.tag == TPM2_ST.HASHCHECK and len(ticket.digest) == 64
    seq = e.hash_sequence_start(b"", TPM2_ALG.SHA512)
    for i in range(0, 900, 300):
        e.sequence_update(seq, DATA[i : i + 300])
    again, ticket2 = e.sequence_complete(seq, DATA[900:1000], ESYS_TR.OWNER)
    assert bytes(again) == bytes(digest) and bytes(ticket2.digest) == bytes(ticket.digest)
    # A SHA-256 digest of other octets earns another ticket, of the same size.
    _, other = e.hash(DATA[:1000], TPM2_ALG.SHA256, ESYS_TR.OWNER)
    assert len(other.digest) == 64 and bytes(other.digest) != bytes(ticket.digest)


def test_hmac_and_hmac_sequence_with_a_sha512_key(e: Any) -> None:
    key = DATA[3:67]
    template = TPM2B_PUBLIC.parse("hmac:sha512", objectAttributes="userwithauth|sign",
                                  nameAlg="sha512")
    handle, *_ = e.create_primary(
        TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(key))),
        template)
    expect = hmac.new(key, DATA, "sha512").digest()
    assert bytes(e.hmac(handle, DATA[:1024], TPM2_ALG.SHA512)) == expect
    assert bytes(e.hmac(handle, DATA[:1024], TPM2_ALG.NULL)) == expect  # the key's scheme
    seq = e.hmac_start(handle, b"seq", TPM2_ALG.SHA512)
    e.tr_set_auth(seq, b"seq")
    e.sequence_update(seq, DATA[:500])
    result, ticket = e.sequence_complete(seq, DATA[500:], ESYS_TR.OWNER)
    assert bytes(result) == expect
    assert ticket.hierarchy == RH.NULL and len(ticket.digest) == 0  # no ticket for HMAC


def test_restricted_signer_signs_a_sha512_digest_only_with_its_ticket(e: Any) -> None:
    template = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha512:null",
                                  objectAttributes=SIGNER + "|restricted",
                                  nameAlg="sha512")
    key, public, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(), template)
    digest, ticket = e.hash(b"to be signed", TPM2_ALG.SHA512, ESYS_TR.OWNER)
    null_scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
    sig = e.sign(key, digest, null_scheme, ticket)
    assert sig.signature.ecdsa.hash == TPM2_ALG.SHA512
    point = public.publicArea.unique.ecc
    verifier = ec.EllipticCurvePublicNumbers(int.from_bytes(bytes(point.x), "big"),
                                             int.from_bytes(bytes(point.y), "big"),
                                             ec.SECP256R1()).public_key()
    der = encode_dss_signature(int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big"),
                               int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big"))
    verifier.verify(der, bytes(digest), ec.ECDSA(Prehashed(hashes.SHA512())))
    forged = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=RH.OWNER,
                               digest=TPM2B_DIGEST(bytes(64)))
    with pytest.raises(TSS2_Exception) as err:
        e.sign(key, digest, null_scheme, forged)
    assert rc_of(err) == 0x3E0  # TPM_RC_TICKET, parameter 3


# ---- sessions ------------------------------------------------------------------------------
def nv_index(e: Any, auth: bytes, size: int = 16) -> Any:
    public = TPM2B_NV_PUBLIC(nvPublic=TPMS_NV_PUBLIC(
        nvIndex=0x01500512, nameAlg=TPM2_ALG.SHA512,
        attributes=TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE | TPMA_NV.NO_DA,
        dataSize=size))
    return e.nv_define_space(TPM2B_AUTH(auth), public)


@pytest.mark.parametrize("sym", [NULL_SYM, AES128, XOR512], ids=["plain", "aes128", "xor"])
def test_hmac_session_with_sha512_authorizes_and_encrypts(e: Any, sym: Any) -> None:
    index = nv_index(e, b"nv password")
    e.tr_set_auth(index, b"nv password")
    # A session bound to the index and salted by an ECC key: sessionKey from KDFa(SHA-512).
    salt_key, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(),
                                    TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=PARENT))
    s = e.start_auth_session(salt_key, index, TPM2_SE.HMAC, sym, TPM2_ALG.SHA512)
    attrs = CONT if sym is NULL_SYM else CONT | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT
    e.trsess_set_attributes(s, attrs)
    e.nv_write(index, b"sixteen octets!!", 0, session1=s)
    assert bytes(e.nv_read(index, 16, 0, session1=s)) == b"sixteen octets!!"
    e.tr_set_auth(index, b"wrong")
    plain = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, NULL_SYM,
                                 TPM2_ALG.SHA512)
    with pytest.raises(TSS2_Exception) as err:
        e.nv_read(index, 16, 0, session1=plain)
    assert rc_of(err) == 0x9A2  # TPM_RC_BAD_AUTH (a noDA index), session 1


def test_nonce_caller_up_to_64_octets(tpm: TPM) -> None:
    def start(nonce: bytes) -> int:
        body = (struct.pack(">IIH", RH.NULL, RH.NULL, len(nonce)) + nonce
                + b"\x00\x00\x00\x00\x10" + struct.pack(">H", SHA512))
        return rc(tpm.execute(command(0x176, body)))
    assert start(b"n" * 64) == 0
    assert start(b"n" * 65) == 0x1D5  # TPM_RC_SIZE, parameter 1: larger than any digest


# ---- policy sessions -----------------------------------------------------------------------
def policy_session(e: Any, kind: Any = TPM2_SE.POLICY) -> Any:
    return e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, kind, NULL_SYM, TPM2_ALG.SHA512)


def test_sha512_policy_digest_and_unseal(tpm: TPM, e: Any) -> None:
    tpm.execute(pcr_extend(16, {SHA512: b"\x01" * 64}))
    selection = TPML_PCR_SELECTION.parse("sha512:16")
    trial = policy_session(e, TPM2_SE.TRIAL)
    e.policy_pcr(trial, TPM2B_DIGEST(), selection)
    e.policy_auth_value(trial)
    policy = bytes(e.policy_get_digest(trial))
    e.flush_context(trial)
    # Part 3, 23.7 and 23.18, computed here with SHA-512 throughout.
    pcr_digest = h512(read_one(tpm, SHA512, 16))
    marshalled_selection = struct.pack(">IHB", 1, SHA512, 3) + b"\x00\x00\x01"
    step = h512(bytes(64), struct.pack(">I", 0x17F), marshalled_selection, pcr_digest)
    assert policy == h512(step, struct.pack(">I", 0x16B))

    parent, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb", objectAttributes=PARENT, nameAlg="sha512"))
    template = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=POLICY_ONLY, nameAlg="sha512")
    template.publicArea.authPolicy = TPM2B_DIGEST(policy)
    sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(
        userAuth=TPM2B_AUTH(b"pw"), data=TPM2B_SENSITIVE_DATA(b"the secret")))
    private, public, *_ = e.create(parent, sensitive, template)
    item = e.load(parent, private, public)
    e.tr_set_auth(item, b"pw")

    s = policy_session(e)
    e.policy_pcr(s, TPM2B_DIGEST(), selection)
    e.policy_auth_value(s)
    assert bytes(e.unseal(item, session1=s)) == b"the secret"
    e.flush_context(s)

    tpm.execute(pcr_extend(16, {SHA512: b"\x02" * 64}))  # the PCR moves on
    s = policy_session(e)
    e.policy_pcr(s, TPM2B_DIGEST(), selection)
    e.policy_auth_value(s)
    with pytest.raises(TSS2_Exception) as err:
        e.unseal(item, session1=s)
    assert rc_of(err) == 0x99D  # TPM_RC_POLICY_FAIL, session 1


# ---- SHA-512 Names: objects and NV indices -------------------------------------------------
def test_sha512_name_alg_object_and_its_context(tpm: TPM, e: Any) -> None:
    parent, parent_public, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb", objectAttributes=PARENT, nameAlg="sha512"))
    _, name, _ = e.read_public(parent)
    marshalled = bytes(parent_public.publicArea.marshal())
    assert bytes(name) == struct.pack(">H", SHA512) + h512(marshalled)
    private, public, *_ = e.create(parent, TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha512", objectAttributes=SIGNER, nameAlg="sha512"))
    child = e.load(parent, private, public)
    _, child_name, qualified = e.read_public(child)
    assert len(bytes(child_name)) == len(bytes(qualified)) == 66
    handle = e.tr_get_tpm_handle(child)
    saved = tpm.execute(command(0x162, struct.pack(">I", handle)))
    assert rc(saved) == 0
    assert struct.unpack_from(">H", saved, 28)[0] == 64  # integrity: the context hash, SHA-512
    assert rc(tpm.execute(command(0x165, struct.pack(">I", handle)))) == 0
    loaded = tpm.execute(command(0x161, saved[10:]))
    assert rc(loaded) == 0
    again = tpm.execute(command(0x173, loaded[10:14]))  # ReadPublic
    assert bytes(child_name) in again


def test_sha512_name_alg_nv_index(e: Any) -> None:
    index = nv_index(e, b"")
    public, name = e.nv_read_public(index)
    assert bytes(name) == struct.pack(">H", SHA512) + h512(bytes(public.nvPublic.marshal()))
    e.nv_write(index, b"x" * 16, 0)
    written, name_after = e.nv_read_public(index)
    assert written.nvPublic.attributes & TPMA_NV.WRITTEN and bytes(name_after) != bytes(name)


def test_credential_for_sha512_names_at_the_id_object_size_limit(e: Any) -> None:
    """A SHA-512 EK and a SHA-512 AK: the credential blob carries a 64-octet integrity
    HMAC and a credential of up to 64 octets, the largest TPM2B_ID_OBJECT there is."""
    ek, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb", objectAttributes=PARENT, nameAlg="sha512"), ESYS_TR.ENDORSEMENT)
    ak, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha512:null", objectAttributes=SIGNER + "|restricted", nameAlg="sha512"))
    _, ak_name, _ = e.read_public(ak)
    credential = DATA[:64]
    blob, secret = e.make_credential(ek, TPM2B_DIGEST(credential), ak_name)
    assert len(bytes(blob)) == 2 + 64 + 2 + 64
    assert bytes(e.activate_credential(ak, ek, blob, secret)) == credential


def test_quote_of_the_sha512_bank(tpm: TPM, e: Any) -> None:
    tpm.execute(pcr_extend(16, {SHA512: b"\x09" * 64}))
    ak, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha512:null", objectAttributes=SIGNER + "|restricted", nameAlg="sha512"))
    quoted, signature = e.quote(ak, "sha512:0,16,17", b"nonce",
                                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    info = TPMS_ATTEST.unmarshal(bytes(quoted))[0].attested.quote
    values = b"".join(read_one(tpm, SHA512, p) for p in (0, 16, 17))
    assert bytes(info.pcrDigest) == h512(values)  # the signing scheme's hash: SHA-512
    assert signature.signature.ecdsa.hash == TPM2_ALG.SHA512


# ---- state from before SHA-512 -------------------------------------------------------------
def without_sha512(blob: bytes) -> bytes:
    """The snapshot as a build without SHA-512 wrote it: three PCR banks."""
    record = snapshot_format.decode(blob)

    def strip(rd: snapshot_format.ResetDataRecord) -> snapshot_format.ResetDataRecord:
        return replace(rd, pcrs=tuple(b for b in rd.pcrs if b.alg != SHA512))

    return snapshot_format.encode(replace(
        record, current=tuple(strip(rd) for rd in record.current),
        shutdownState=tuple(strip(rd) for rd in record.shutdownState)))


def test_three_bank_snapshot_restores_with_a_fresh_sha512_bank() -> None:
    t = TPM()
    startup(t)
    t.execute(pcr_extend(0, {SHA256: b"\x01" * 32, SHA512: b"\x01" * 64}))
    t.execute(pcr_extend(23, {SHA384: b"\x02" * 48}))
    old = without_sha512(t.snapshot())
    restored = TPM.restore(old)
    for alg in (SHA1, SHA256, SHA384):
        assert [read_one(restored, alg, p) for p in (0, 17, 23)] == \
            [read_one(t, alg, p) for p in (0, 17, 23)]
    assert read_one(restored, SHA512, 0) == bytes(64)  # reset values, not t's
    assert read_one(restored, SHA512, 17) == b"\xff" * 64
    assert rc(restored.execute(pcr_extend(0, {SHA512: b"\x03" * 64}))) == 0
    assert read_one(restored, SHA512, 0) == h512(bytes(64), b"\x03" * 64)
    # Its own snapshot has all four banks again.
    banks = snapshot_format.decode(restored.snapshot()).current[0].pcrs
    assert [b.alg for b in banks] == [SHA1, SHA256, SHA384, SHA512]


def test_three_bank_snapshot_after_shutdown_state_resumes() -> None:
    t = TPM()
    startup(t)
    t.execute(pcr_extend(3, {SHA256: b"\x01" * 32}))
    shutdown(t, 1)
    restored = TPM.restore(without_sha512(t.snapshot()))
    restored.power_cycle()
    startup(restored, 1)  # TPM Resume: PCR 0-15 come back from the Shutdown(STATE) copy
    assert read_one(restored, SHA256, 3) == hashlib.sha256(bytes(32) + b"\x01" * 32).digest()
    assert read_one(restored, SHA512, 3) == bytes(64)


def test_snapshot_with_other_banks_is_refused() -> None:
    t = TPM()
    startup(t)
    record = snapshot_format.decode(t.snapshot())
    rd = record.current[0]
    two_banks = replace(rd, pcrs=tuple(b for b in rd.pcrs if b.alg in (SHA256, SHA512)))
    with pytest.raises(StateFormatError):
        TPM.restore(snapshot_format.encode(replace(record, current=(two_banks,))))


def test_three_bank_event_sequence_from_an_old_snapshot_completes(tpm: TPM) -> None:
    with esapi_over(tpm) as e:
        seq = e.hash_sequence_start(b"", TPM2_ALG.NULL)
        e.sequence_update(seq, b"event ")
        handle = e.tr_get_tpm_handle(seq)
    record = snapshot_format.decode(tpm.snapshot())
    objects = []
    for obj in record.transientObjects:  # drop the SHA-512 digest from the sequence state
        seq_obj = sequence_from_record(obj.public, obj.sensitive)
        del seq_obj.hashes[SHA512]
        sensitive = replace(obj.sensitive, sensitive=encode_state(seq_obj))
        objects.append(ObjectRecord(obj.version, obj.handle, obj.hierarchy, obj.public,
                                    sensitive, obj.qualifiedName))
    restored = TPM.restore(snapshot_format.encode(replace(record, transientObjects=tuple(objects))))
    body = struct.pack(">II", 16, handle) + struct.pack(">I", 18) + 2 * (
        struct.pack(">IHBH", 0x40000009, 0, 1, 0)) + b"\x00\x04data"
    response = restored.execute(command(0x185, body, 0x8002))
    assert rc(response) == 0
    assert struct.unpack_from(">I", response, 14)[0] == 3  # the three banks it had
    assert read_one(restored, SHA256, 16) == hashlib.sha256(
        bytes(32) + hashlib.sha256(b"event data").digest()).digest()
    assert read_one(restored, SHA512, 16) == bytes(64)  # left alone


def legacy_seal(proof: bytes, sequence: int, handle: int, hierarchy: int,
                plaintext: bytes) -> bytes:
    """contextBlob as sealed before SHA-512 (the context hash was SHA-256), written out
    from Part 1, 30.3 here rather than taken from the emulator."""
    material = kdfa(HASHES[SHA256], proof, b"CONTEXT", struct.pack(">Q", sequence),
                    struct.pack(">I", handle), 256 + 128 + 256)
    key, iv, mac_key = material[:32], material[32:48], material[48:]
    enc = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    ciphertext = enc.update(plaintext) + enc.finalize()
    tag = hmac.new(mac_key, struct.pack(">QII", sequence, handle, hierarchy) + ciphertext,
                   "sha256").digest()
    return struct.pack(">H", len(tag)) + tag + ciphertext


def test_a_context_sealed_with_sha256_still_loads(tpm: TPM) -> None:
    start = command(0x176, struct.pack(">IIH", RH.NULL, RH.NULL, 16) + b"n" * 16
                    + b"\x00\x00\x00\x00\x10" + struct.pack(">H", SHA512))
    session = tpm.execute(start)[10:14]
    saved = tpm.execute(command(0x162, session))
    assert rc(saved) == 0
    sequence, handle, hierarchy, size = struct.unpack_from(">QIIH", saved, 10)
    blob = saved[28 : 28 + size]
    assert struct.unpack_from(">H", blob)[0] == 64
    proof = tpm.hierarchy_proof(hierarchy)
    plaintext = open_context(proof, sequence, handle, hierarchy, blob)
    assert plaintext is not None
    old = legacy_seal(proof, sequence, handle, hierarchy, plaintext)

    def load(context_blob: bytes) -> bytes:
        return tpm.execute(command(0x161, struct.pack(">QIIH", sequence, handle, hierarchy,
                                                      len(context_blob)) + context_blob))
    tampered = old[:-1] + bytes([old[-1] ^ 1])
    assert rc(load(tampered)) == 0x1DF  # TPM_RC_INTEGRITY, parameter 1
    loaded = load(old)
    assert rc(loaded) == 0 and loaded[10:14] == session
