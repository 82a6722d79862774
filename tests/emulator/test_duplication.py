"""CreateLoaded and duplication (Duplicate, Rewrap, Import) under tpm2-pytss ESAPI.

Duplicable objects carry the authPolicy of TPM2_PolicyCommandCode(TPM_CC_Duplicate),
computed here; the DUP role needs a policy that names the command (Part 1, 19.7)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CC,
    TPM2_RC,
    TPM2_RH,
    TPM2_SE,
    TPM2_ST,
    TPM2B_AUTH,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPM2B_TEMPLATE,
    TPMS_SENSITIVE_CREATE,
    TPMT_SENSITIVE,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMT_SYM_DEF_OBJECT,
    TPMT_TK_HASHCHECK,
    TSS2_Exception,
)
from tpm2_pytss.utils import unwrap, wrap

from tests.emulator.inprocess import esapi_over
from tests.emulator.outside_keys import p256_key
from tests.test_import_blob import BOOT, SECRET, boot, ek_public, make_blob, predicted
from tpm_emulator import TPM
from vtpm_manager.sealing.importblob import import_and_unseal

PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
SEALED = "userwithauth|noda"  # duplicable: fixedTPM and fixedParent clear
SIGNER = "sensitivedataorigin|userwithauth|sign|noda"
# policyDigest' = H(policyDigest || TPM_CC_PolicyCommandCode || code): Part 3,
# TPM2_PolicyCommandCode
DUP_POLICY = hashlib.sha256(bytes(32) + struct.pack(">II", 0x16C, 0x14B)).digest()
NO_SYM = TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL)
AES128 = TPMT_SYM_DEF_OBJECT.parse("aes128cfb")

# Response codes with their parameter/handle numbers, as libtpms numbers them.
ATTRIBUTES_H1, HIERARCHY_H2, TYPE_H1 = 0x182, 0x285, 0x18A
SYMMETRIC_P2, SIZE_P1, ATTRIBUTES_P1, ATTRIBUTES_P2 = 0x2D6, 0x1D5, 0x1C2, 0x2C2
INTEGRITY_P3, SIZE_P3, INSUFFICIENT_P3, ATTRIBUTES_P4 = 0x3DF, 0x3D5, 0x3DA, 0x4C2


def template(alg: str, attrs: str, policy: bytes | None = DUP_POLICY) -> Any:
    pub = TPM2B_PUBLIC.parse(alg, objectAttributes=attrs)
    if policy is not None:
        pub.publicArea.authPolicy = TPM2B_DIGEST(policy)
    return pub


def sensitive(data: bytes = b"", auth: bytes = b"") -> Any:
    return TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(
        userAuth=TPM2B_AUTH(auth), data=TPM2B_SENSITIVE_DATA(data)))


@pytest.fixture
def e(tpm: TPM) -> Iterator[Any]:
    with esapi_over(tpm) as ectx:
        yield ectx


def primary(e: Any, hierarchy: Any = ESYS_TR.OWNER, alg: str = "ecc256:aes128cfb") -> Any:
    handle, *_ = e.create_primary(sensitive(), TPM2B_PUBLIC.parse(alg, objectAttributes=PARENT),
                                  hierarchy)
    return handle


def policy_session(e: Any) -> Any:
    session = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                   TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
    e.policy_command_code(session, TPM2_CC.Duplicate)
    return session


def duplicate(e: Any, obj: Any, new_parent: Any, key: bytes = b"",
              sym: Any = NO_SYM) -> tuple[bytes, Any, Any]:
    key_out, dup, seed = e.duplicate(obj, new_parent, TPM2B_DATA(key), sym,
                                     session1=policy_session(e))
    return bytes(key_out), dup, seed


def sign_and_verify(e: Any, handle: Any, public: Any) -> None:
    """Sign with the loaded key and check the signature with ``cryptography``."""
    digest = hashlib.sha256(b"signed by a moved key").digest()
    scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
    scheme.details.any.hashAlg = TPM2_ALG.SHA256
    sig = e.sign(handle, digest, scheme,
                 TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL))
    r = int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big")
    s = int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big")
    point = public.publicArea.unique.ecc
    key = ec.EllipticCurvePublicNumbers(int.from_bytes(bytes(point.x), "big"),
                                        int.from_bytes(bytes(point.y), "big"),
                                        ec.SECP256R1()).public_key()
    key.verify(encode_dss_signature(r, s), b"signed by a moved key",
               ec.ECDSA(hashes.SHA256()))


def name_of(e: Any, handle: Any) -> bytes:
    _pub, name, _qn = e.read_public(handle)
    return bytes(name)


# ---- CreateLoaded ------------------------------------------------------------------------
@pytest.mark.parametrize("hierarchy", [ESYS_TR.OWNER, ESYS_TR.ENDORSEMENT, ESYS_TR.NULL])
def test_create_loaded_primary_is_create_primary(e: Any, hierarchy: Any) -> None:
    pub = TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=PARENT)
    h1, expected, *_ = e.create_primary(sensitive(), pub, hierarchy)
    h2, private, loaded = e.create_loaded(hierarchy, sensitive(),
                                          TPM2B_TEMPLATE(pub.publicArea.marshal()))
    assert bytes(private) == b""  # a primary has no blob
    assert bytes(loaded.marshal()) == bytes(expected.marshal())
    assert name_of(e, h2) == name_of(e, h1)


def test_create_loaded_child_loads_again_from_its_private(e: Any) -> None:
    parent = primary(e)
    sealed = template("keyedhash", "fixedtpm|fixedparent|userwithauth|noda", None)
    handle, private, public = e.create_loaded(
        parent, sensitive(b"kept inside", b"pw"), TPM2B_TEMPLATE(sealed.publicArea.marshal()))
    e.tr_set_auth(handle, b"pw")
    assert bytes(e.unseal(handle)) == b"kept inside"
    name = name_of(e, handle)
    e.flush_context(handle)
    again = e.load(parent, private, public)
    e.tr_set_auth(again, b"pw")
    assert bytes(e.unseal(again)) == b"kept inside"
    assert name_of(e, again) == name


def test_create_loaded_refuses_a_signing_key_as_parent(e: Any) -> None:
    signer, *_ = e.create_primary(sensitive(), TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha256", objectAttributes="fixedtpm|fixedparent|sensitivedataorigin"
        "|userwithauth|sign"))
    sealed = template("keyedhash", "fixedtpm|fixedparent|userwithauth", None)
    with pytest.raises(TSS2_Exception) as err:
        e.create_loaded(signer, sensitive(b"x"), TPM2B_TEMPLATE(sealed.publicArea.marshal()))
    assert err.value.rc == TYPE_H1


# ---- Duplicate and Import ------------------------------------------------------------------
@pytest.mark.parametrize("inner", ["none", "tpm key", "caller key"])
@pytest.mark.parametrize("outer", [True, False])
def test_duplicate_then_import_a_sealed_object(e: Any, inner: str, outer: bool) -> None:
    source, target = primary(e), primary(e, ESYS_TR.ENDORSEMENT)
    private, public, *_ = e.create(source, sensitive(b"travelling secret"),
                                   template("keyedhash", SEALED))
    obj = e.load(source, private, public)
    name = name_of(e, obj)
    sym = NO_SYM if inner == "none" else AES128
    key_in = b"k" * 16 if inner == "caller key" else b""
    key_out, dup, seed = duplicate(e, obj, target if outer else ESYS_TR.NULL, key_in, sym)
    assert (len(key_out) == 16) == (inner == "tpm key")
    assert (bytes(seed) != b"") == outer
    e.flush_context(obj)
    new_private = e.import_(target, key_in or key_out, public, dup, seed, sym)
    moved = e.load(target, new_private, public)
    assert name_of(e, moved) == name
    assert bytes(e.unseal(moved)) == b"travelling secret"


def test_duplicate_an_ecc_key_to_another_parent(e: Any) -> None:
    source, target = primary(e), primary(e, ESYS_TR.ENDORSEMENT, "rsa2048:aes128cfb")
    private, public, *_ = e.create(source, sensitive(), template("ecc256:ecdsa-sha256",
                                                                 SIGNER))
    obj = e.load(source, private, public)
    name = name_of(e, obj)
    key, dup, seed = duplicate(e, obj, target, sym=AES128)
    e.flush_context(obj)
    moved = e.load(target, e.import_(target, key, public, dup, seed, AES128), public)
    assert name_of(e, moved) == name
    sign_and_verify(e, moved, public)


def test_import_a_key_wrapped_outside_the_tpm(e: Any) -> None:
    target = primary(e)
    target_public, *_ = e.read_public(target)
    pem = p256_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    public = TPM2B_PUBLIC.from_pem(pem, objectAttributes="userwithauth|sign|noda")
    sens = TPM2B_SENSITIVE(TPMT_SENSITIVE.from_pem(pem))
    for sym in (NO_SYM, AES128):
        key, dup, seed = wrap(target_public.publicArea, public, sens,
                              symdef=sym if sym is AES128 else None)
        handle = e.load(target, e.import_(target, key, public, dup, seed, sym), public)
        assert name_of(e, handle) == bytes(public.get_name())
        sign_and_verify(e, handle, public)
        e.flush_context(handle)


def test_rewrap_moves_a_duplicate_out_of_its_outer_wrapper(e: Any) -> None:
    source, middle = primary(e), primary(e, ESYS_TR.ENDORSEMENT)
    private, public, *_ = e.create(source, sensitive(b"rewrapped"),
                                   template("keyedhash", SEALED))
    obj = e.load(source, private, public)
    name = name_of(e, obj)
    _key, dup, seed = duplicate(e, obj, middle)
    e.flush_context(obj)
    bare, no_seed = e.rewrap(middle, ESYS_TR.NULL, dup, name, seed)
    assert bytes(no_seed) == b""
    moved = e.load(source, e.import_(source, b"", public, bare, no_seed, NO_SYM), public)
    assert bytes(e.unseal(moved)) == b"rewrapped"


# ---- refusals ------------------------------------------------------------------------------
def test_a_fixed_parent_object_is_not_duplicated(e: Any) -> None:
    source = primary(e)
    private, public, *_ = e.create(source, sensitive(b"stays"),
                                   template("keyedhash", "fixedtpm|fixedparent|userwithauth"))
    obj = e.load(source, private, public)
    with pytest.raises(TSS2_Exception) as err:
        duplicate(e, obj, source)
    assert err.value.rc == ATTRIBUTES_H1


def test_duplicate_needs_a_policy_session(e: Any) -> None:
    source = primary(e)
    private, public, *_ = e.create(source, sensitive(b"x"), template("keyedhash", SEALED))
    obj = e.load(source, private, public)
    with pytest.raises(TSS2_Exception) as err:
        e.duplicate(obj, source, TPM2B_DATA(), NO_SYM, session1=ESYS_TR.PASSWORD)
    assert err.value.error == TPM2_RC.AUTH_TYPE


def test_encrypted_duplication_needs_both_wrappers(e: Any) -> None:
    source = primary(e)
    private, public, *_ = e.create(source, sensitive(b"x"),
                                   template("keyedhash", SEALED + "|encryptedduplication"))
    obj = e.load(source, private, public)
    with pytest.raises(TSS2_Exception) as err:
        duplicate(e, obj, source)
    assert err.value.rc == SYMMETRIC_P2
    with pytest.raises(TSS2_Exception) as err:
        duplicate(e, obj, ESYS_TR.NULL, sym=AES128)
    assert err.value.rc == HIERARCHY_H2
    key, dup, seed = duplicate(e, obj, source, sym=AES128)
    with pytest.raises(TSS2_Exception) as err:  # the inner wrapper is not optional
        e.import_(source, b"", public, dup, seed, NO_SYM)
    assert err.value.rc == ATTRIBUTES_P1
    with pytest.raises(TSS2_Exception) as err:  # nor is the outer one
        e.import_(source, key, public, dup, TPM2B_ENCRYPTED_SECRET(), AES128)
    assert err.value.rc == ATTRIBUTES_P4
    e.flush_context(obj)
    assert bytes(e.import_(source, key, public, dup, seed, AES128))


def test_import_checks_the_blob_and_the_arguments(e: Any) -> None:
    source = primary(e)
    private, public, *_ = e.create(source, sensitive(b"x"), template("keyedhash", SEALED))
    obj = e.load(source, private, public)
    key, dup, seed = duplicate(e, obj, source, sym=AES128)
    e.flush_context(obj)
    blob = bytearray(bytes(dup))
    blob[-1] ^= 1
    with pytest.raises(TSS2_Exception) as err:
        e.import_(source, key, public, TPM2B_PRIVATE(bytes(blob)), seed, AES128)
    assert err.value.rc == INTEGRITY_P3
    with pytest.raises(TSS2_Exception) as err:  # the wrong inner key: its integrity is noise
        e.import_(source, bytes(16), public, dup, seed, AES128)
    assert err.value.rc in (INTEGRITY_P3, SIZE_P3, INSUFFICIENT_P3)
    with pytest.raises(TSS2_Exception) as err:
        e.import_(source, key[:8], public, dup, seed, AES128)
    assert err.value.rc == SIZE_P1
    fixed = template("keyedhash", "fixedtpm|fixedparent|userwithauth")
    with pytest.raises(TSS2_Exception) as err:
        e.import_(source, key, fixed, dup, seed, AES128)
    assert err.value.rc == ATTRIBUTES_P2


def test_policy_duplication_select_picks_the_new_parent(e: Any) -> None:
    source, chosen, other = primary(e), primary(e, ESYS_TR.ENDORSEMENT), ESYS_TR.NULL
    chosen_name = name_of(e, chosen)
    # PolicyDuplicationSelect without the object: H(0 || CC || newParentName || NO).
    policy = hashlib.sha256(bytes(32) + struct.pack(">I", 0x188) + chosen_name
                            + b"\x00").digest()
    private, public, *_ = e.create(source, sensitive(b"to one parent only"),
                                   template("keyedhash", SEALED, policy))
    obj = e.load(source, private, public)

    def select(new_parent_name: bytes) -> Any:
        session = e.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                       TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
        e.policy_duplication_select(session, name_of(e, obj), new_parent_name, False)
        return session

    with pytest.raises(TSS2_Exception) as err:  # the policy names another parent
        e.duplicate(obj, other, TPM2B_DATA(), NO_SYM, session1=select(chosen_name))
    assert err.value.error == TPM2_RC.POLICY_FAIL
    _key, dup, seed = e.duplicate(obj, chosen, TPM2B_DATA(), NO_SYM,
                                  session1=select(chosen_name))
    e.flush_context(obj)
    moved = e.load(chosen, e.import_(chosen, b"", public, dup, seed, NO_SYM), public)
    assert bytes(e.unseal(moved)) == b"to one parent only"


def test_create_loaded_derives_the_same_key_again(e: Any) -> None:
    # A derivation parent: restricted keyedHash decryption key, XOR/SHA-256/SP800-108.
    parent_public = TPM2B_PUBLIC.parse("xor:sha256", objectAttributes="restricted|decrypt"
                                       "|userwithauth|noda")
    parent_public.publicArea.parameters.keyedHashDetail.scheme.details.exclusiveOr.kdf = (
        TPM2_ALG.KDF1_SP800_108)
    parent, *_ = e.create_primary(sensitive(b"a secret to derive from"), parent_public)
    signer = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256",
                                objectAttributes="fixedparent|userwithauth|sign|noda")
    head = bytes(signer.publicArea.marshal())[:-4]  # without the (empty) ECC unique

    def derive(label: bytes, context: bytes) -> tuple[bytes, bytes]:
        # The unique field of the template is a TPMS_DERIVE: TPM2B label, TPM2B context.
        unique = struct.pack(">H", len(label)) + label + struct.pack(">H", len(context)) + context
        handle, private, _public = e.create_loaded(
            parent, sensitive(), TPM2B_TEMPLATE(head + unique))
        name = name_of(e, handle)
        e.flush_context(handle)
        return bytes(private), name

    first = derive(b"label", b"one")
    assert first[0] == b""  # a derived object is derived again, never loaded from a blob
    assert derive(b"label", b"one") == first
    assert derive(b"label", b"two") != first


@pytest.mark.parametrize("kind", ["ecc-nist-p256", "rsa2048"])
def test_an_offline_import_blob_unseals_under_the_ek(tpm: TPM, kind: str) -> None:
    """The product's offline sealing (vtpm_manager/sealing/importblob.py, written against
    swtpm) builds the duplicate in software from the EK public alone; the builtin TPM
    imports, loads and unseals it under the EK in the sealed PCR state."""
    blob = make_blob(ek_public(tpm.execute, kind), predicted(BOOT))
    boot(tpm.execute, BOOT)
    assert import_and_unseal(tpm.execute, blob) == SECRET


@pytest.mark.parametrize("inner", [False, True])
def test_a_duplicate_opens_with_tpm2_pytss_unwrap(e: Any, inner: bool) -> None:
    """Duplicate to a parent whose private key lives outside the TPM (its public loaded
    with LoadExternal), then open the blob with tpm2-pytss's own ``unwrap``."""
    pem = p256_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    outside_public = TPM2B_PUBLIC.from_pem(
        pem, objectAttributes="userwithauth|restricted|decrypt|noda", symmetric=AES128)
    outside_private = TPMT_SENSITIVE.from_pem(pem)
    new_parent = e.load_external(outside_public, None, ESYS_TR.NULL)
    source = primary(e)
    private, public, *_ = e.create(source, sensitive(b"leaves the TPM", b"pw"),
                                   template("keyedhash", SEALED))
    obj = e.load(source, private, public)
    sym = AES128 if inner else NO_SYM
    key, dup, seed = duplicate(e, obj, new_parent, sym=sym)
    opened = unwrap(outside_public.publicArea, outside_private, public, dup, seed,
                    key or None, sym if inner else None)
    assert bytes(opened.sensitiveArea.sensitive.bits) == b"leaves the TPM"
    assert bytes(opened.sensitiveArea.authValue).rstrip(b"\x00") == b"pw"
