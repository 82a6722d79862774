"""Salted and bound sessions, parameter encryption and session audit, driven through
tpm2-pytss ESAPI: ESAPI salts, encrypts, decrypts and checks every response HMAC on
its own, so a command that round-trips here agrees with the TSS on the arithmetic.
TPM2_Hash is the probe: its input and output are both encryptable and its answer is
known (hashlib), so a wrong key or IV in either direction shows as a wrong digest."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_RC,
    TPM2_SE,
    TPM2B_AUTH,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMA_OBJECT,
    TPMA_SESSION,
    TPMS_SENSITIVE_CREATE,
    TPMT_SYM_DEF,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
    TSS2_Exception,
)

from tests.emulator.inprocess import esapi_over
from tpm_emulator import TPM

EK_LIKE = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt"
PARENT = EK_LIKE + "|noda"
SEALED = "fixedtpm|fixedparent|userwithauth|noda"
CONT = TPMA_SESSION.CONTINUESESSION
BOTH = CONT | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT
HASHES = {TPM2_ALG.SHA1: "sha1", TPM2_ALG.SHA256: "sha256", TPM2_ALG.SHA384: "sha384",
          TPM2_ALG.SHA512: "sha512"}


def aes(bits: int) -> Any:
    return TPMT_SYM_DEF(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=bits),
                        mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB))


def xor(hash_alg: int = TPM2_ALG.SHA256) -> Any:
    return TPMT_SYM_DEF(algorithm=TPM2_ALG.XOR, keyBits=TPMU_SYM_KEY_BITS(exclusiveOr=hash_alg))


NULL_SYM = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
SYMS = {"aes128": aes(128), "aes256": aes(256), "xor-sha1": xor(TPM2_ALG.SHA1),
        "xor-sha256": xor(), "xor-sha512": xor(TPM2_ALG.SHA512)}


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    key = rsa.generate_private_key(65537, 2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture
def e(tpm: TPM) -> Iterator[Any]:
    with esapi_over(tpm) as ectx:
        yield ectx


def ecc_ek(e: Any) -> Any:
    handle, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(),
                                  TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=EK_LIKE),
                                  ESYS_TR.ENDORSEMENT)
    return handle


def rsa_key(e: Any, pem: bytes) -> Any:
    """An RSA-2048 decrypt key (made by ``cryptography``: Python prime search is slow)."""
    public = TPM2B_PUBLIC.from_pem(pem, objectAttributes=TPMA_OBJECT.DECRYPT
                                   | TPMA_OBJECT.USERWITHAUTH)
    return e.load_external(public, TPM2B_SENSITIVE.from_pem(pem), ESYS_TR.NULL)


def session(e: Any, sym: Any = NULL_SYM, key: Any = ESYS_TR.NONE, bind: Any = ESYS_TR.NONE,
            hash_alg: int = TPM2_ALG.SHA256, attrs: int = BOTH) -> Any:
    s = e.start_auth_session(key, bind, TPM2_SE.HMAC, sym, hash_alg)
    e.trsess_set_attributes(s, attrs)
    return s


def hashed_through(e: Any, data: bytes, **sessions: Any) -> bytes:
    digest, _ticket = e.hash(data, TPM2_ALG.SHA256, ESYS_TR.OWNER, **sessions)
    return bytes(digest)


def sealed(e: Any, parent: Any, auth: bytes, data: bytes, **sessions: Any) -> Any:
    template = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=SEALED)
    create = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(
        userAuth=TPM2B_AUTH(auth), data=TPM2B_SENSITIVE_DATA(data)))
    priv, pub, *_ = e.create(parent, create, template, **sessions)
    item = e.load(parent, priv, pub)
    e.tr_set_auth(item, auth)
    return item


def owner_parent(e: Any) -> Any:
    handle, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(),
                                  TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=PARENT))
    return handle


# ---- salted sessions, every symmetric definition, both directions -----------------------
@pytest.mark.parametrize("sym", SYMS.values(), ids=SYMS.keys())
def test_ecc_salted_session_encrypts_command_and_response(e: Any, sym: Any) -> None:
    s = session(e, sym, key=ecc_ek(e))
    data = b"parameter encryption both ways" * 3
    assert hashed_through(e, data, session1=s) == hashlib.sha256(data).digest()
    # The nonces rolled: a second command with the same session still decrypts right.
    assert hashed_through(e, b"again", session1=s) == hashlib.sha256(b"again").digest()


@pytest.mark.parametrize("hash_alg", list(HASHES), ids=list(HASHES.values()))
def test_rsa_salted_session_with_each_session_hash(e: Any, rsa_pem: bytes,
                                                   hash_alg: int) -> None:
    s = session(e, aes(128), key=rsa_key(e, rsa_pem), hash_alg=hash_alg)
    assert hashed_through(e, b"rsa salt", session1=s) == hashlib.sha256(b"rsa salt").digest()


def test_unsalted_unbound_session_still_encrypts(e: Any) -> None:
    # sessionKey is empty, so the key is public knowledge; the TPM still does it.
    s = session(e, aes(256))
    assert hashed_through(e, b"weak but allowed", session1=s) == \
        hashlib.sha256(b"weak but allowed").digest()


def test_sealing_and_unsealing_through_an_authorizing_encrypted_session(e: Any) -> None:
    parent = owner_parent(e)
    s = session(e, aes(128), key=ecc_ek(e))
    # Create: the sensitive data (first parameter) travels encrypted, with the session
    # authorizing the parent; Unseal: the secret comes back encrypted, the key includes
    # the sealed object's authValue (Part 1, 21.1).
    item = sealed(e, parent, b"pw", b"sealed secret", session1=s)
    assert bytes(e.unseal(item, session1=s)) == b"sealed secret"
    e.tr_set_auth(item, b"wrong")
    with pytest.raises(TSS2_Exception) as err:
        e.unseal(item, session1=s)
    assert err.value.error == TPM2_RC.BAD_AUTH


def test_encryption_session_beside_a_password_and_beside_an_hmac_session(e: Any) -> None:
    parent = owner_parent(e)
    item = sealed(e, parent, b"pw", b"second session")
    ek = ecc_ek(e)
    enc = session(e, xor(), key=ek, attrs=CONT | TPMA_SESSION.ENCRYPT)
    e.flush_context(ek)  # the salt is in the session; the key is no longer needed
    # Password authorization, the response encrypted by a session with no handle.
    assert bytes(e.unseal(item, session1=ESYS_TR.PASSWORD, session2=enc)) == b"second session"
    # An HMAC authorization whose HMAC covers the other session's nonceTPM.
    auth = session(e, attrs=CONT)
    assert bytes(e.unseal(item, session1=auth, session2=enc)) == b"second session"
    # Create: authorized by session 1, sensitive data decrypted by session 2, the new
    # private area encrypted by session 3; session 1's HMAC covers both their nonces.
    dec = session(e, aes(128), attrs=CONT | TPMA_SESSION.DECRYPT)
    three = sealed(e, parent, b"", b"three sessions", session1=auth, session2=dec,
                   session3=enc)
    assert bytes(e.unseal(three)) == b"three sessions"
    # A session that authorizes nothing must decrypt, encrypt or audit.
    with pytest.raises(TSS2_Exception) as err:
        hashed_through(e, b"no role", session1=auth)
    assert err.value.error == TPM2_RC.ATTRIBUTES


def test_bound_session_authorizes_its_entity_without_its_authvalue_in_the_hmac(
        e: Any) -> None:
    parent = owner_parent(e)
    item = sealed(e, parent, b"bind-pw", b"bound")
    s = session(e, bind=item, attrs=CONT)
    assert bytes(e.unseal(item, session1=s)) == b"bound"
    other = sealed(e, parent, b"other-pw", b"not the bind entity")
    assert bytes(e.unseal(other, session1=s)) == b"not the bind entity"


def test_encrypt_needs_a_symmetric_algorithm_and_an_encryptable_command(e: Any) -> None:
    s = session(e, NULL_SYM)
    with pytest.raises(TSS2_Exception) as err:
        e.get_random(8, session1=s)
    assert err.value.error == TPM2_RC.SYMMETRIC
    s = session(e, aes(128), attrs=CONT | TPMA_SESSION.DECRYPT)
    with pytest.raises(TSS2_Exception) as err:
        e.get_random(8, session1=s)  # GetRandom has no command parameter to decrypt
    assert err.value.error == TPM2_RC.ATTRIBUTES


def test_encrypting_session_survives_context_save_and_snapshot(tpm: TPM) -> None:
    with esapi_over(tpm) as e:
        s = session(e, aes(128), key=ecc_ek(e))
        saved = e.context_save(s)
        s = e.context_load(saved)
        assert hashed_through(e, b"reloaded", session1=s) == hashlib.sha256(b"reloaded").digest()
        blob = tpm.snapshot()
        handle = e.tr_get_tpm_handle(s)
    restored = TPM.restore(blob)
    loaded = restored.reset_data.sessions.find_loaded(handle)
    assert loaded is not None and loaded.symmetric.algorithm == TPM2_ALG.AES
    assert loaded.symmetric.keyBits == 128


# ---- session audit -----------------------------------------------------------------------
def _audit_step(digest: bytes, h: str, cc: int, params: bytes, rparams: bytes) -> bytes:
    cp = hashlib.new(h, struct.pack(">I", cc) + params).digest()
    rp = hashlib.new(h, struct.pack(">II", 0, cc) + rparams).digest()
    return hashlib.new(h, digest + cp + rp).digest()


class Recorder:
    """Passes commands to the TPM and keeps the last response (ESAPI does not report the
    attributes a response carries)."""

    def __init__(self, tpm: TPM) -> None:
        self.tpm = tpm
        self.last = b""

    def execute(self, command: bytes) -> bytes:
        self.last = self.tpm.execute(command)
        return self.last

    def exclusive(self) -> bool:
        """auditExclusive in the one response session of a command without a handle."""
        (size,) = struct.unpack_from(">I", self.last, 10)
        at = 14 + size
        (nonce,) = struct.unpack_from(">H", self.last, at)
        return bool(self.last[at + 2 + nonce] & TPMA_SESSION.AUDITEXCLUSIVE)


@pytest.mark.parametrize("hash_alg", [TPM2_ALG.SHA1, TPM2_ALG.SHA384, TPM2_ALG.SHA512],
                         ids=["sha1", "sha384", "sha512"])
def test_audit_session_digest_and_exclusivity(tpm: TPM, hash_alg: int) -> None:
    h = HASHES[hash_alg]
    audit = CONT | TPMA_SESSION.AUDIT
    wire = Recorder(tpm)
    with esapi_over(wire) as e:
        s = session(e, hash_alg=hash_alg, attrs=audit)
        handle = e.tr_get_tpm_handle(s)
        live = tpm.reset_data.sessions.find_loaded(handle)
        assert live is not None and live.audit_digest == b""
        expect = bytes(hashlib.new(h).digest_size)
        for n in (8, 16):
            r = bytes(e.get_random(n, session1=s))
            expect = _audit_step(expect, h, 0x17B, struct.pack(">H", n),
                                 struct.pack(">H", len(r)) + r)
            assert live.audit_digest == expect
            assert wire.exclusive()
            assert tpm.reset_data.sessions.is_exclusive_audit(live)
        e.get_random(4)  # a command without the audit session ends the exclusivity
        r = bytes(e.get_random(4, session1=s))
        expect = _audit_step(expect, h, 0x17B, struct.pack(">H", 4), b"\x00\x04" + r)
        assert live.audit_digest == expect
        assert not wire.exclusive()
        assert not tpm.reset_data.sessions.is_exclusive_audit(live)
        # Insisting on exclusivity now fails; auditReset starts over, exclusive again.
        e.trsess_set_attributes(s, audit | TPMA_SESSION.AUDITEXCLUSIVE)
        with pytest.raises(TSS2_Exception) as err:
            e.get_random(4, session1=s)
        assert err.value.error == TPM2_RC.EXCLUSIVE
        e.trsess_set_attributes(s, audit | TPMA_SESSION.AUDITRESET)
        r = bytes(e.get_random(4, session1=s))
        expect = _audit_step(bytes(len(expect)), h, 0x17B, struct.pack(">H", 4),
                             b"\x00\x04" + r)
        assert live.audit_digest == expect
        assert wire.exclusive()
        assert tpm.reset_data.sessions.is_exclusive_audit(live)
    restored = TPM.restore(tpm.snapshot())
    again = restored.reset_data.sessions.find_loaded(handle)
    assert again is not None and again.audit_digest == expect
    assert restored.reset_data.sessions.is_exclusive_audit(again)


def test_audit_of_an_encrypted_command_hashes_the_ciphertext(e: Any, tpm: TPM) -> None:
    s = session(e, aes(128), key=ecc_ek(e), attrs=BOTH | TPMA_SESSION.AUDIT)
    assert hashed_through(e, b"audited", session1=s) == hashlib.sha256(b"audited").digest()
    live = tpm.reset_data.sessions.find_loaded(e.tr_get_tpm_handle(s))
    assert live is not None and len(live.audit_digest) == 32
    assert live.audit_digest != bytes(32)


def test_policy_session_cannot_audit(e: Any) -> None:
    s = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, NULL_SYM,
                             TPM2_ALG.SHA256)
    e.trsess_set_attributes(s, CONT | TPMA_SESSION.AUDIT)
    with pytest.raises(TSS2_Exception) as err:
        e.get_random(4, session1=s)
    assert err.value.error == TPM2_RC.ATTRIBUTES
