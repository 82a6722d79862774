"""Key and crypto commands of the builtin TPM, driven through tpm2-pytss ESAPI in process
and checked against ``cryptography``, ``hashlib`` and ``hmac`` as independent
implementations: RSA OAEP/RSAES/raw, ECDH, AES modes, HMAC and hash/event sequences,
Sign/VerifySignature, MakeCredential/ActivateCredential, TestParms.

Keys are made by ``cryptography`` and loaded with TPM2_LoadExternal (fast, and the test
knows the private values it needs for independent checks); only the restricted keys
(EK, AK) come from TPM2_CreatePrimary, as ECC P-256 primaries.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_RH,
    TPM2_ST,
    TPM2B_DIGEST,
    TPM2B_ECC_POINT,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPM2B_SENSITIVE_CREATE,
    TPMS_ECC_POINT,
    TPMT_PUBLIC_PARMS,
    TPMT_RSA_DECRYPT,
    TPMT_SIG_SCHEME,
    TPMT_SIGNATURE,
    TPMT_TK_HASHCHECK,
    TSS2_Exception,
)

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB, OFB
except ImportError:  # older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB, OFB

from tests.emulator.emulator_wire import rc, startup, with_pw
from tests.emulator.inprocess import esapi_over
from tests.emulator.outside_keys import p256_key
from tpm_emulator import TPM

SIGNER = "userwithauth|sign"
DECRYPTER = "userwithauth|decrypt"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


# ---- fixtures: one RSA key for the module, fresh TPMs per test --------------------------
@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture
def tpm() -> TPM:
    t = TPM()
    startup(t)
    return t


@pytest.fixture
def esys(tpm: TPM) -> Iterator[Any]:
    with esapi_over(tpm) as ectx:
        yield ectx


def rc_of(excinfo: pytest.ExceptionInfo[TSS2_Exception]) -> int:
    return int(excinfo.value.rc) & 0xFFF


def load_pem(esys: Any, key: Any, attrs: str, scheme: str = "null",
             hierarchy: ESYS_TR = ESYS_TR.NULL, private: bool = True) -> ESYS_TR:
    """LoadExternal of a ``cryptography`` key (public only when ``private`` is False)."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = TPM2B_PUBLIC.from_pem(pem, objectAttributes=attrs)
    if scheme != "null":
        parsed = TPM2B_PUBLIC.parse(
            ("rsa2048:" if isinstance(key, rsa.RSAPrivateKey) else "ecc256:") + scheme,
            objectAttributes=attrs)
        pub.publicArea.parameters.asymDetail.scheme = \
            parsed.publicArea.parameters.asymDetail.scheme
    sens = TPM2B_SENSITIVE.from_pem(pem) if private else None
    return esys.load_external(pub, sens, hierarchy)


def load_symmetric(esys: Any, key: bytes, attrs: str, alg: str,
                   no_scheme: bool = False) -> ESYS_TR:
    """LoadExternal of a SYMCIPHER or KEYEDHASH key with a chosen key value; ``unique``
    binds it as Part 1 requires: H_nameAlg(seedValue || key)."""
    seed = os.urandom(32)
    pub = TPM2B_PUBLIC.parse(alg, objectAttributes=attrs)
    if no_scheme:
        pub.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
    sens = TPM2B_SENSITIVE()
    sens.sensitiveArea.sensitiveType = pub.publicArea.type
    sens.sensitiveArea.seedValue = seed
    if pub.publicArea.type == TPM2_ALG.SYMCIPHER:
        sens.sensitiveArea.sensitive.sym = key
    else:
        sens.sensitiveArea.sensitive.bits = key
    pub.publicArea.unique.sym = hashlib.sha256(seed + key).digest()
    return esys.load_external(pub, sens, ESYS_TR.NULL)


# ---- RSA_Encrypt / RSA_Decrypt ----------------------------------------------------------
def oaep(label: bytes | None) -> padding.OAEP:
    return padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), label)


def test_rsa_oaep_with_label_round_trips_and_interoperates(esys: Any, rsa_key: Any) -> None:
    h = load_pem(esys, rsa_key, DECRYPTER)
    scheme = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.OAEP)
    scheme.details.oaep.hashAlg = TPM2_ALG.SHA256
    label = b"my label\x00"
    ct = esys.rsa_encrypt(h, b"secret message", scheme, label)
    assert rsa_key.decrypt(bytes(ct), oaep(label)) == b"secret message"
    assert bytes(esys.rsa_decrypt(h, ct, scheme, label)) == b"secret message"
    theirs = rsa_key.public_key().encrypt(b"from cryptography", oaep(label))
    assert bytes(esys.rsa_decrypt(h, theirs, scheme, label)) == b"from cryptography"
    with pytest.raises(TSS2_Exception) as e:  # a different label fails the padding check
        esys.rsa_decrypt(h, theirs, scheme, b"other\x00")
    assert rc_of(e) == 0x101  # TPM_RC_FAILURE, as libtpms answers a failed RSA primitive
    with pytest.raises(TSS2_Exception) as e:  # a label must end in NUL
        esys.rsa_decrypt(h, theirs, scheme, b"no nul")
    assert rc_of(e) == 0x3C4


def test_rsaes_and_raw_rsa(esys: Any, rsa_key: Any) -> None:
    h = load_pem(esys, rsa_key, DECRYPTER)
    rsaes = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.RSAES)
    ct = esys.rsa_encrypt(h, b"pkcs1 v1.5", rsaes)
    assert rsa_key.decrypt(bytes(ct), padding.PKCS1v15()) == b"pkcs1 v1.5"
    theirs = rsa_key.public_key().encrypt(b"hello", padding.PKCS1v15())
    assert bytes(esys.rsa_decrypt(h, theirs, rsaes)) == b"hello"
    raw = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.NULL)
    n = rsa_key.public_key().public_numbers().n
    ct = bytes(esys.rsa_encrypt(h, b"\x01\x02\x03", raw))
    assert int.from_bytes(ct, "big") == pow(0x010203, 65537, n) and len(ct) == 256
    assert bytes(esys.rsa_decrypt(h, ct, raw)) == bytes(253) + b"\x01\x02\x03"


def test_rsa_scheme_must_match_the_keys(esys: Any, rsa_key: Any) -> None:
    h = load_pem(esys, rsa_key, DECRYPTER, scheme="oaep-sha256")
    rsaes = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.RSAES)
    with pytest.raises(TSS2_Exception) as e:
        esys.rsa_encrypt(h, b"x", rsaes)
    assert rc_of(e) == 0x2D2  # TPM_RC_SCHEME, parameter 2
    ct = esys.rsa_encrypt(h, b"key's own scheme", TPMT_RSA_DECRYPT(scheme=TPM2_ALG.NULL))
    assert rsa_key.decrypt(bytes(ct), oaep(None)) == b"key's own scheme"
    signer = load_pem(esys, rsa_key, SIGNER)
    with pytest.raises(TSS2_Exception) as e:
        esys.rsa_decrypt(signer, ct, rsaes)
    assert rc_of(e) == 0x182  # TPM_RC_ATTRIBUTES, handle 1


# ---- ECDH --------------------------------------------------------------------------------
def point(x: int, y: int) -> TPM2B_ECC_POINT:
    return TPM2B_ECC_POINT(TPMS_ECC_POINT(x=x.to_bytes(32, "big"), y=y.to_bytes(32, "big")))


def xy(p: Any) -> tuple[int, int]:
    return int.from_bytes(bytes(p.point.x), "big"), int.from_bytes(bytes(p.point.y), "big")


def test_ecdh_zgen_is_the_full_product_point(esys: Any) -> None:
    key = p256_key()
    d = key.private_numbers().private_value
    h = load_pem(esys, key, DECRYPTER)
    for _ in range(3):
        eph = ec.generate_private_key(ec.SECP256R1())
        e = eph.private_numbers().private_value
        q = eph.public_key().public_numbers()
        z = esys.ecdh_zgen(h, point(q.x, q.y))
        expect = ec.derive_private_key(d * e % P256_ORDER, ec.SECP256R1()).public_key()
        assert xy(z) == (expect.public_numbers().x, expect.public_numbers().y)
        assert xy(z)[0] == int.from_bytes(eph.exchange(ec.ECDH(), key.public_key()), "big")
    with pytest.raises(TSS2_Exception) as e_:
        esys.ecdh_zgen(h, point(1, 2))
    assert rc_of(e_) == 0x1E7  # TPM_RC_ECC_POINT, parameter 1


def test_ecdh_keygen_agrees_with_zgen(esys: Any) -> None:
    key = p256_key()
    h = load_pem(esys, key, DECRYPTER)
    z, pub = esys.ecdh_key_gen(h)
    assert xy(esys.ecdh_zgen(h, pub)) == xy(z)
    peer = ec.EllipticCurvePublicNumbers(*xy(pub), ec.SECP256R1()).public_key()
    assert int.from_bytes(key.exchange(ec.ECDH(), peer), "big") == xy(z)[0]


# ---- EncryptDecrypt / EncryptDecrypt2 -----------------------------------------------------
MODES = {
    TPM2_ALG.CBC: lambda iv: modes.CBC(iv),
    TPM2_ALG.CFB: lambda iv: CFB(iv),
    TPM2_ALG.OFB: lambda iv: OFB(iv),
    TPM2_ALG.CTR: lambda iv: modes.CTR(iv),
    TPM2_ALG.ECB: lambda iv: modes.ECB(),
}


@pytest.mark.parametrize("bits", [128, 256])
@pytest.mark.parametrize("mode", list(MODES))
def test_aes_modes_match_cryptography_and_chain(esys: Any, mode: TPM2_ALG, bits: int) -> None:
    key = os.urandom(bits // 8)
    # A key whose mode is TPM_ALG_NULL takes the command's.
    h = load_symmetric(esys, key, "userwithauth|decrypt|sign", f"aes{bits}")
    iv = b"" if mode == TPM2_ALG.ECB else os.urandom(16)
    data = os.urandom(64)
    c: Any = Cipher(algorithms.AES(key), MODES[mode](iv))
    c = c.encryptor()
    expect = c.update(data) + c.finalize()
    out, _ = esys.encrypt_decrypt_2(h, False, mode, iv, data)
    assert bytes(out) == expect
    # Two calls chained through ivOut give the one-call result.
    first, iv_out = esys.encrypt_decrypt(h, False, mode, iv, data[:32])
    second, _ = esys.encrypt_decrypt(h, False, mode, iv_out, data[32:])
    assert bytes(first) + bytes(second) == expect
    back, _ = esys.encrypt_decrypt_2(h, True, mode, iv, expect)
    assert bytes(back) == data


def test_encrypt_decrypt_refusals(esys: Any) -> None:
    h = load_symmetric(esys, os.urandom(16), "userwithauth|decrypt", "aes128cbc")
    with pytest.raises(TSS2_Exception) as e:  # a decrypt-only key cannot encrypt
        esys.encrypt_decrypt_2(h, False, TPM2_ALG.CBC, bytes(16), bytes(16))
    assert rc_of(e) == 0x182
    with pytest.raises(TSS2_Exception) as e:  # another mode than the key's: mode (P3)
        esys.encrypt_decrypt_2(h, True, TPM2_ALG.OFB, bytes(16), bytes(16))
    assert rc_of(e) == 0x3C9
    with pytest.raises(TSS2_Exception) as e:  # CBC needs whole blocks: inData (P1)
        esys.encrypt_decrypt_2(h, True, TPM2_ALG.CBC, bytes(16), bytes(15))
    assert rc_of(e) == 0x1D5
    with pytest.raises(TSS2_Exception) as e:  # the same through EncryptDecrypt: P4
        esys.encrypt_decrypt(h, True, TPM2_ALG.CBC, bytes(16), bytes(15))
    assert rc_of(e) == 0x4D5


# ---- HMAC and sequences --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sha1", "sha256", "sha384", "sha512"])
def test_storable_digest_states_match_hashlib(name: str) -> None:
    """The running hashes a sequence keeps (and saves) give hashlib's digests at every
    padding boundary, also when written out and read back half-way."""
    from tpm_emulator.keys.digest_state import DigestState, HmacState

    alg = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384,
           "sha512": TPM2_ALG.SHA512}[name]
    for size in (0, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 1000):
        data = os.urandom(size)
        state = DigestState.start(alg)
        state.update(data[: size // 3])
        state = DigestState.from_bytes(state.to_bytes())
        state.update(data[size // 3 :])
        assert state.digest() == hashlib.new(name, data).digest(), size
    key = os.urandom(200)  # longer than a block: hashed first (RFC 2104)
    mac = HmacState.start(alg, key)
    mac.update(b"abc" * 100)
    assert mac.digest() == hmac.new(key, b"abc" * 100, name).digest()
    with pytest.raises(ValueError):
        DigestState.from_bytes(DigestState.start(alg).to_bytes() + b"x")


def test_hmac_and_hmac_sequence_match_hmac_module(esys: Any) -> None:
    key = os.urandom(32)
    h = load_symmetric(esys, key, "userwithauth|sign", "hmac")  # scheme HMAC-SHA256
    data = os.urandom(300)
    assert bytes(esys.hmac(h, data, TPM2_ALG.SHA256)) == hmac.new(key, data, "sha256").digest()
    assert bytes(esys.hmac(h, data, TPM2_ALG.NULL)) == hmac.new(key, data, "sha256").digest()
    with pytest.raises(TSS2_Exception) as e:  # not the key's hash: hashAlg (P2)
        esys.hmac(h, data, TPM2_ALG.SHA1)
    assert rc_of(e) == 0x2C4
    esys.flush_context(h)
    # A signing keyedHash key always has an HMAC scheme (libtpms refuses one without,
    # even from LoadExternal): NULL in the command takes the key's hash.
    h = load_symmetric(esys, key, "userwithauth|sign", "hmac:sha384")
    assert bytes(esys.hmac(h, data, TPM2_ALG.NULL)) == hmac.new(key, data, "sha384").digest()
    seq = esys.hmac_start(h, b"seq auth", TPM2_ALG.SHA384)
    esys.tr_set_auth(seq, b"seq auth")
    for i in range(0, 300, 100):
        esys.sequence_update(seq, data[i : i + 100])
    result, ticket = esys.sequence_complete(seq, b"tail", ESYS_TR.OWNER)
    assert bytes(result) == hmac.new(key, data + b"tail", "sha384").digest()
    assert ticket.hierarchy == TPM2_RH.NULL and len(ticket.digest) == 0  # no ticket for HMAC


def test_hash_sequence_digest_and_ticket(esys: Any) -> None:
    data = os.urandom(2500)
    seq = esys.hash_sequence_start(b"", TPM2_ALG.SHA256)
    for i in range(0, 2000, 1000):
        esys.sequence_update(seq, data[i : i + 1000])
    result, ticket = esys.sequence_complete(seq, data[2000:], ESYS_TR.OWNER)
    assert bytes(result) == hashlib.sha256(data).digest()
    assert ticket.tag == TPM2_ST.HASHCHECK and ticket.hierarchy == TPM2_RH.OWNER
    assert len(ticket.digest) == 64  # made with the context hash, SHA-512, as libtpms
    # The same digest from TPM2_Hash earns the same ticket.
    digest, hash_ticket = esys.hash(data[:1000], TPM2_ALG.SHA256, ESYS_TR.OWNER)
    seq = esys.hash_sequence_start(b"", TPM2_ALG.SHA256)
    again, ticket2 = esys.sequence_complete(seq, data[:1000], ESYS_TR.OWNER)
    assert bytes(again) == bytes(digest) and bytes(ticket2.digest) == bytes(hash_ticket.digest)
    # Data that starts like a TPM-made structure gets no ticket.
    seq = esys.hash_sequence_start(b"", TPM2_ALG.SHA1)
    esys.sequence_update(seq, b"\xffTCG" + data[:10])
    result, ticket = esys.sequence_complete(seq, b"", ESYS_TR.OWNER)
    assert bytes(result) == hashlib.sha1(b"\xffTCG" + data[:10]).digest()
    assert ticket.hierarchy == TPM2_RH.NULL and len(ticket.digest) == 0


def test_event_sequence_extends_every_bank(tpm: TPM, esys: Any) -> None:
    seq = esys.hash_sequence_start(b"", TPM2_ALG.NULL)
    esys.sequence_update(seq, b"event ")
    out = esys.event_sequence_complete(ESYS_TR.PCR16, seq, b"data")
    got = {d.hashAlg: bytes(d.marshal())[2:] for d in out}  # TPMT_HA after its alg
    names = {TPM2_ALG.SHA1: "sha1", TPM2_ALG.SHA256: "sha256", TPM2_ALG.SHA384: "sha384",
             TPM2_ALG.SHA512: "sha512"}
    assert got == {alg: hashlib.new(n, b"event data").digest() for alg, n in names.items()}
    _, _, values = esys.pcr_read("sha256:16")
    assert bytes(values[0]) == hashlib.sha256(bytes(32) + got[TPM2_ALG.SHA256]).digest()


def test_sequence_survives_context_save_and_snapshot(tpm: TPM) -> None:
    data = os.urandom(777)
    with esapi_over(tpm) as esys:
        seq = esys.hash_sequence_start(b"pw", TPM2_ALG.SHA384)
        esys.tr_set_auth(seq, b"pw")
        esys.sequence_update(seq, data[:300])
        ctx = esys.context_save(seq)
        esys.flush_context(seq)
        seq = esys.context_load(ctx)
        esys.tr_set_auth(seq, b"pw")
        esys.sequence_update(seq, data[300:500])
        handle = esys.tr_get_tpm_handle(seq)
    restored = TPM.restore(tpm.snapshot())
    # A sequence has no public area for ESAPI to read back: finish it with raw octets.
    r = restored.execute(with_pw(0x13E, struct.pack(">I", handle),
                                 struct.pack(">H", len(data) - 500) + data[500:]
                                 + struct.pack(">I", 0x40000007), b"pw"))
    assert rc(r) == 0, hex(rc(r))
    assert r[16:16 + 48] == hashlib.sha384(data).digest()


def test_sequence_auth_is_checked(esys: Any) -> None:
    seq = esys.hash_sequence_start(b"right", TPM2_ALG.SHA256)
    esys.tr_set_auth(seq, b"wrong")
    with pytest.raises(TSS2_Exception) as e:
        esys.sequence_update(seq, b"x")
    assert rc_of(e) == 0x9A2  # TPM_RC_BAD_AUTH, session 1: sequences are DA-exempt


# ---- Sign and VerifySignature --------------------------------------------------------------
def sig_scheme(alg: TPM2_ALG, hash_alg: TPM2_ALG = TPM2_ALG.SHA256) -> TPMT_SIG_SCHEME:
    s = TPMT_SIG_SCHEME(scheme=alg)
    s.details.any.hashAlg = hash_alg
    return s


def null_ticket() -> TPMT_TK_HASHCHECK:
    return TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)


def test_ecdsa_signatures_both_ways(esys: Any) -> None:
    key = p256_key()
    h = load_pem(esys, key, SIGNER, scheme="ecdsa-sha256")
    digest = hashlib.sha256(b"signed by the TPM").digest()
    sig = esys.sign(h, digest, sig_scheme(TPM2_ALG.NULL), null_ticket())
    assert sig.sigAlg == TPM2_ALG.ECDSA
    der = utils.encode_dss_signature(int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big"),
                                     int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big"))
    key.public_key().verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    # A signature made by cryptography, checked by a public-only key in the owner
    # hierarchy: the TPM answers with a TPMT_TK_VERIFIED for that hierarchy.
    verifier = load_pem(esys, key, SIGNER, hierarchy=ESYS_TR.OWNER, private=False)
    r, s = utils.decode_dss_signature(key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))))
    theirs = TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA)
    theirs.signature.ecdsa.hash = TPM2_ALG.SHA256
    theirs.signature.ecdsa.signatureR = r.to_bytes(32, "big")
    theirs.signature.ecdsa.signatureS = s.to_bytes(32, "big")
    ticket = esys.verify_signature(verifier, digest, theirs)
    assert ticket.tag == TPM2_ST.VERIFIED and ticket.hierarchy == TPM2_RH.OWNER
    assert len(ticket.digest) == 64  # an HMAC with the context hash, SHA-512 as in libtpms
    with pytest.raises(TSS2_Exception) as e:
        esys.verify_signature(verifier, hashlib.sha256(b"other").digest(), theirs)
    assert rc_of(e) == 0x2DB  # TPM_RC_SIGNATURE, parameter 2


@pytest.mark.parametrize("alg", [TPM2_ALG.RSASSA, TPM2_ALG.RSAPSS])
def test_rsa_signatures_both_ways(esys: Any, rsa_key: Any, alg: TPM2_ALG) -> None:
    h = load_pem(esys, rsa_key, SIGNER)  # no scheme of its own: the command names it
    digest = hashlib.sha384(b"rsa").digest()
    sig = esys.sign(h, digest, sig_scheme(alg, TPM2_ALG.SHA384), null_ticket())
    raw = bytes(sig.signature.rsassa.sig if alg == TPM2_ALG.RSASSA else sig.signature.rsapss.sig)
    pad = padding.PKCS1v15() if alg == TPM2_ALG.RSASSA else padding.PSS(
        padding.MGF1(hashes.SHA384()), padding.PSS.DIGEST_LENGTH)
    rsa_key.public_key().verify(raw, digest, pad, utils.Prehashed(hashes.SHA384()))
    theirs_raw = rsa_key.sign(digest, pad, utils.Prehashed(hashes.SHA384()))
    theirs = TPMT_SIGNATURE(sigAlg=alg)
    member = theirs.signature.rsassa if alg == TPM2_ALG.RSASSA else theirs.signature.rsapss
    member.hash = TPM2_ALG.SHA384
    member.sig = theirs_raw
    ticket = esys.verify_signature(h, digest, theirs)
    assert ticket.hierarchy == TPM2_RH.NULL  # a NULL-hierarchy key gives the NULL ticket
    with pytest.raises(TSS2_Exception) as e:  # no scheme anywhere
        esys.sign(h, digest, sig_scheme(TPM2_ALG.NULL), null_ticket())
    assert rc_of(e) == 0x2D2


def test_hmac_signature(esys: Any) -> None:
    key = os.urandom(32)
    h = load_symmetric(esys, key, "userwithauth|sign", "hmac")
    digest = hashlib.sha256(b"mac me").digest()
    sig = esys.sign(h, digest, sig_scheme(TPM2_ALG.NULL), null_ticket())
    assert bytes(sig.signature.hmac.digest.sha256) == hmac.new(key, digest, "sha256").digest()
    esys.verify_signature(h, digest, sig)


def test_restricted_key_signs_only_ticketed_digests(esys: Any) -> None:
    template = TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha256:null",
        objectAttributes="fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign")
    ak, _, _, _, _ = esys.create_primary(TPM2B_SENSITIVE_CREATE(), template)
    data = b"data the TPM hashed itself"
    digest, ticket = esys.hash(data, TPM2_ALG.SHA256, ESYS_TR.OWNER)
    esys.sign(ak, digest, sig_scheme(TPM2_ALG.NULL), ticket)
    seq = esys.hash_sequence_start(b"", TPM2_ALG.SHA256)  # a sequence's ticket serves too
    esys.sequence_update(seq, data[:10])
    seq_digest, seq_ticket = esys.sequence_complete(seq, data[10:], ESYS_TR.OWNER)
    assert bytes(seq_digest) == bytes(digest)
    esys.sign(ak, seq_digest, sig_scheme(TPM2_ALG.NULL), seq_ticket)
    with pytest.raises(TSS2_Exception) as e:  # no ticket
        esys.sign(ak, digest, sig_scheme(TPM2_ALG.NULL), null_ticket())
    assert rc_of(e) == 0x3E0  # TPM_RC_TICKET, parameter 3
    forged, no_ticket = esys.hash(b"\xffTCG" + data, TPM2_ALG.SHA256, ESYS_TR.OWNER)
    assert no_ticket.hierarchy == TPM2_RH.NULL
    with pytest.raises(TSS2_Exception) as e:
        esys.sign(ak, forged, sig_scheme(TPM2_ALG.NULL), no_ticket)
    assert rc_of(e) == 0x3E0


# ---- MakeCredential / ActivateCredential ---------------------------------------------------
RESTRICTED_DECRYPT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt"
RESTRICTED_SIGN = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"


def ek_and_ak(esys: Any) -> tuple[ESYS_TR, Any, ESYS_TR, bytes]:
    ek, ek_pub, _, _, _ = esys.create_primary(
        TPM2B_SENSITIVE_CREATE(),
        TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=RESTRICTED_DECRYPT),
        ESYS_TR.ENDORSEMENT)
    ak, _, _, _, _ = esys.create_primary(
        TPM2B_SENSITIVE_CREATE(),
        TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null", objectAttributes=RESTRICTED_SIGN))
    _, ak_name, _ = esys.read_public(ak)
    return ek, ek_pub, ak, bytes(ak_name)


def test_make_and_activate_credential(esys: Any) -> None:
    ek, _, ak, ak_name = ek_and_ak(esys)
    from tpm2_pytss import TPM2B_NAME

    blob, secret = esys.make_credential(ek, TPM2B_DIGEST(b"the CA's secret"), TPM2B_NAME(ak_name))
    assert bytes(esys.activate_credential(ak, ek, blob, secret)) == b"the CA's secret"
    # Activated for another object (the EK itself), the integrity check fails.
    with pytest.raises(TSS2_Exception) as e:
        esys.activate_credential(ek, ek, blob, secret)
    assert rc_of(e) == 0x1DF  # TPM_RC_INTEGRITY, parameter 1


def test_credential_made_by_tpm2_pytss_utils(esys: Any) -> None:
    from tpm2_pytss import TPM2B_NAME
    from tpm2_pytss.utils import make_credential

    ek, ek_pub, ak, ak_name = ek_and_ak(esys)
    blob, secret = make_credential(ek_pub, b"made off-TPM", TPM2B_NAME(ak_name))
    assert bytes(esys.activate_credential(ak, ek, blob, secret)) == b"made off-TPM"


# ---- TestParms -----------------------------------------------------------------------------
def test_test_parms(esys: Any) -> None:
    ok = TPM2B_PUBLIC.parse("ecc384:ecdsa-sha384", objectAttributes="sign").publicArea
    esys.test_parms(TPMT_PUBLIC_PARMS(type=ok.type, parameters=ok.parameters))
    rsa4096 = TPM2B_PUBLIC.parse("rsa2048", objectAttributes="decrypt").publicArea
    rsa4096.parameters.rsaDetail.keyBits = 4096
    with pytest.raises(TSS2_Exception) as e:
        esys.test_parms(TPMT_PUBLIC_PARMS(type=rsa4096.type, parameters=rsa4096.parameters))
    assert rc_of(e) == 0x1C4  # TPM_RC_VALUE, parameter 1


def test_make_credential_size_rule(esys: Any) -> None:
    ek, _, _, ak_name = ek_and_ak(esys)
    from tpm2_pytss import TPM2B_NAME

    with pytest.raises(TSS2_Exception) as e:  # longer than the EK's nameAlg digest
        esys.make_credential(ek, TPM2B_DIGEST(bytes(48)), TPM2B_NAME(ak_name))
    assert rc_of(e) == 0x1D5
    assert struct.pack(">H", 0x000B) == ak_name[:2]


def test_credential_to_an_rsa_key(esys: Any, rsa_key: Any) -> None:
    """An RSA EK shares the seed by OAEP with the "IDENTITY" label (Part 1, B.10.4)."""
    from cryptography.hazmat.primitives import serialization
    from tpm2_pytss import TPM2B_DATA, TPM2B_NAME, TPMT_SYM_DEF_OBJECT
    from tpm2_pytss.utils import make_credential, wrap

    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    storage = TPM2B_PUBLIC.parse("rsa2048:aes128cfb")  # kept alive: from_pem copies from it
    ek_pub = TPM2B_PUBLIC.from_pem(pem, objectAttributes="userwithauth|restricted|decrypt",
                                   symmetric=storage.publicArea.parameters.rsaDetail.symmetric)
    # A restricted key cannot come in by LoadExternal with its private part (libtpms:
    # TPM_RC_ATTRIBUTES), so the RSA EK is imported under an ECC parent instead.
    ek_sens = TPM2B_SENSITIVE.from_pem(pem)
    ek_sens.sensitiveArea.seedValue = os.urandom(32)  # a parent's seed (Part 1, 23.3)
    parent, parent_pub, _, _, _ = esys.create_primary(
        TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
            "ecc256:aes128cfb", objectAttributes="fixedtpm|fixedparent|sensitivedataorigin"
            "|userwithauth|restricted|decrypt|noda"))
    _, duplicate, seed = wrap(parent_pub.publicArea, ek_pub, ek_sens)
    private = esys.import_(parent, TPM2B_DATA(), ek_pub, duplicate, seed,
                           TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL))
    ek = esys.load(parent, private, ek_pub)
    ak = load_pem(esys, p256_key(), SIGNER)
    _, ak_name, _ = esys.read_public(ak)
    blob, secret = esys.make_credential(ek, TPM2B_DIGEST(b"rsa-wrapped"), ak_name)
    assert bytes(esys.activate_credential(ak, ek, blob, secret)) == b"rsa-wrapped"
    blob, secret = make_credential(ek_pub, b"by pytss", TPM2B_NAME(bytes(ak_name)))
    assert bytes(esys.activate_credential(ak, ek, blob, secret)) == b"by pytss"


def test_verified_ticket_is_accepted_by_policy_authorize(esys: Any) -> None:
    """TPMT_TK_VERIFIED from VerifySignature is what TPM2_PolicyAuthorize checks."""
    from tpm2_pytss import TPM2_SE, TPMT_SYM_DEF

    key = p256_key()
    h = load_pem(esys, key, SIGNER, hierarchy=ESYS_TR.OWNER, private=False)
    _, name, _ = esys.read_public(h)
    session = esys.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                      TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
    approved, ref = bytes(esys.policy_get_digest(session)), b"ref"
    a_hash = hashlib.sha256(approved + ref).digest()
    r, s = utils.decode_dss_signature(key.sign(a_hash, ec.ECDSA(utils.Prehashed(hashes.SHA256()))))
    sig = TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA)
    sig.signature.ecdsa.hash = TPM2_ALG.SHA256
    sig.signature.ecdsa.signatureR = r.to_bytes(32, "big")
    sig.signature.ecdsa.signatureS = s.to_bytes(32, "big")
    ticket = esys.verify_signature(h, a_hash, sig)
    esys.policy_authorize(session, approved, name, ticket, ref)
    step = hashlib.sha256(bytes(32) + struct.pack(">I", 0x16A) + bytes(name)).digest()
    assert bytes(esys.policy_get_digest(session)) == hashlib.sha256(step + ref).digest()
