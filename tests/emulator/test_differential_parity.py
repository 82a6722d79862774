"""Object-level parity with libtpms, each rule checked against a real swtpm:

* an external object's qualified Name is its Name, in every hierarchy;
* LoadExternal refuses a restricted key with a sensitive area, a disabled hierarchy,
  and public areas whose schemes do not fit their attributes; an RSAES scheme has no
  hash on the wire; ContextLoad refuses an object of a disabled hierarchy;
* a fixedParent storage key keeps its parent's nameAlg and symmetric definition;
* a SYMCIPHER restricted decryption key is a parent for Create and Load (round trip);
* a caller-chosen restricted keyedHash key cannot be fixed; keyedHash keys are sized by
  their scheme's hash;
* a public-only object cannot be authorized with a policy session;
* pcrUpdateCounter counts the PCRs that Startup resets.

Keys differ between the TPMs (other seeds), so what is compared is response codes,
public areas, Names and output sizes.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import TPM2B_PUBLIC

from tests.emulator.emulator_wire import (
    RH_NULL,
    RH_OWNER,
    SHA256,
    command,
    parse_pcr_read,
    pcr_read,
    rc,
    with_pw,
)
from tests.emulator.test_differential_duplication import (
    CC_DUPLICATE,
    DUP_POLICY,
    SYM_NULL,
    create_primary,
    ok,
    sensitive_create,
    with_policy,
)
from tests.emulator.test_differential_objects import both, started_pair, tpm2b
from tpm_emulator import TPM

ENDORSEMENT, PLATFORM = 0x4000000B, 0x4000000C
PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
SEALED = "fixedtpm|fixedparent|userwithauth|noda"
CC_CREATE, CC_LOAD, CC_UNSEAL, CC_LOAD_EXTERNAL = 0x153, 0x157, 0x15E, 0x167
CC_READ_PUBLIC, CC_CONTEXT_SAVE, CC_CONTEXT_LOAD, CC_FLUSH = 0x173, 0x162, 0x161, 0x165
CC_CREATE_LOADED, CC_HIERARCHY_CONTROL, CC_CREATE_PRIMARY = 0x191, 0x121, 0x131
CC_OBJECT_CHANGE_AUTH = 0x150
ECC_SENSITIVE = 0x0023

P256 = ec.derive_private_key(0x5EED, ec.SECP256R1())


def template(alg: str, attrs: str, policy: bytes = b"") -> bytes:
    pub = TPM2B_PUBLIC.parse(alg, objectAttributes=attrs)
    if policy:
        pub.publicArea.authPolicy = policy
    return bytes(pub.publicArea.marshal())


def ecc_public(attrs: str, alg: str = "ecc256:null:null", policy: bytes = b"") -> bytes:
    """The P-256 key above as a TPMT_PUBLIC with the given attributes."""
    pub = TPM2B_PUBLIC.parse(alg, objectAttributes=attrs)
    if policy:
        pub.publicArea.authPolicy = policy
    nums = P256.public_key().public_numbers()
    pub.publicArea.unique.ecc.x = nums.x.to_bytes(32, "big")
    pub.publicArea.unique.ecc.y = nums.y.to_bytes(32, "big")
    return bytes(pub.publicArea.marshal())


def rsa_public(attrs: str, alg: str) -> bytes:
    """An RSA-2048 public area with a well-formed modulus (top bit set)."""
    pub = TPM2B_PUBLIC.parse(alg, objectAttributes=attrs)
    pub.publicArea.unique.rsa = b"\xc5" * 256
    return bytes(pub.publicArea.marshal())


def ecc_sensitive() -> bytes:
    d = P256.private_numbers().private_value.to_bytes(32, "big")
    return tpm2b(struct.pack(">H", ECC_SENSITIVE) + tpm2b(b"") + tpm2b(b"") + tpm2b(d))


def load_external(public: bytes, hierarchy: int, sensitive: bytes = b"\x00\x00") -> bytes:
    return command(CC_LOAD_EXTERNAL, sensitive + tpm2b(public) + struct.pack(">I", hierarchy))


def create(parent: int, public: bytes, sens: bytes = b"") -> bytes:
    return with_pw(CC_CREATE, struct.pack(">I", parent),
                   sensitive_create(sens) + tpm2b(public) + b"\x00\x00" + bytes(4))


def create_loaded(parent: int, public: bytes) -> bytes:
    return with_pw(CC_CREATE_LOADED, struct.pack(">I", parent),
                   sensitive_create() + tpm2b(public))


def flush(tpm: Any, handle: int) -> None:
    tpm.execute(command(CC_FLUSH, struct.pack(">I", handle)))


def handle_of(response: bytes) -> int:
    return int(struct.unpack(">I", ok(response)[10:14])[0])


def private_and_public(response: bytes) -> tuple[bytes, bytes]:
    """outPrivate and outPublic of a Create response, each with its size field."""
    o = 14
    (n,) = struct.unpack_from(">H", ok(response), o)
    private = response[o : o + 2 + n]
    o += 2 + n
    (m,) = struct.unpack_from(">H", response, o)
    return private, response[o : o + 2 + m]


def codes(ours: TPM, theirs: Any, script: dict[str, bytes]) -> dict[str, tuple[str, str]]:
    """Run each command on both TPMs; the ones whose codes differ. Objects a command
    loads are flushed again."""
    differ = {}
    for label, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[label] = (hex(rc(a)), hex(rc(b)))
        for tpm, r in ((ours, a), (theirs, b)):
            if rc(r) == 0 and struct.unpack(">I", cmd[6:10])[0] in (
                    CC_LOAD_EXTERNAL, CC_CREATE_LOADED, CC_CREATE_PRIMARY):
                flush(tpm, handle_of(r))
    return differ


# ---- 1. LoadExternal: the qualified Name -------------------------------------------------
@pytest.mark.parametrize("hierarchy", [RH_OWNER, ENDORSEMENT, PLATFORM, RH_NULL],
                         ids=["owner", "endorsement", "platform", "null"])
def test_an_external_object_is_its_own_qualified_name(swtpm: Any, hierarchy: int) -> None:
    ours, theirs = started_pair(swtpm)
    public = ecc_public("userwithauth|sign")
    read = command(CC_READ_PUBLIC, struct.pack(">I", 0x80000000))
    for tpm in (ours, theirs):
        assert handle_of(tpm.execute(load_external(public, hierarchy))) == 0x80000000
    mine, libtpms = ours.execute(read), theirs.execute(read)
    assert mine == libtpms
    # outPublic, then name and qualifiedName: the same bytes
    (n,) = struct.unpack_from(">H", mine, 10)
    name_at = 12 + n
    (k,) = struct.unpack_from(">H", mine, name_at)
    name = mine[name_at + 2 : name_at + 2 + k]
    assert mine[name_at + 2 + k :] == tpm2b(name)


# ---- 2 and 7. LoadExternal refusals, RSAES on the wire, disabled hierarchies ---------------
def test_load_external_checks_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    rsaes = bytearray(template("rsa2048:rsaes", "userwithauth|decrypt"))
    script = {
        "restricted decryption key with its private part": load_external(
            ecc_public("userwithauth|restricted|decrypt", "ecc256:aes128cfb"), RH_NULL,
            ecc_sensitive()),
        "restricted signer with its private part": load_external(
            ecc_public("userwithauth|restricted|sign", "ecc256:ecdsa-sha256"), RH_NULL,
            ecc_sensitive()),
        "fixedTPM key with its private part": load_external(
            ecc_public("fixedtpm|fixedparent|userwithauth|sign"), RH_NULL, ecc_sensitive()),
        "unrestricted key with its private part": load_external(
            ecc_public("userwithauth|sign"), RH_NULL, ecc_sensitive()),
        "signer with a decryption scheme, private part": load_external(
            ecc_public("userwithauth|sign", "ecc256:ecdh-sha256"), RH_NULL, ecc_sensitive()),
        "public restricted signer without a scheme": load_external(
            ecc_public("userwithauth|restricted|sign"), RH_OWNER),
        "public sign+decrypt key with a scheme": load_external(
            ecc_public("userwithauth|sign|decrypt").replace(  # scheme NULL -> ECDSA-SHA256
                b"\x00\x10\x00\x10\x00\x03", b"\x00\x10\x00\x18\x00\x0b\x00\x03"),
            RH_OWNER),
        "public signer with a symmetric definition": load_external(
            ecc_public("userwithauth|sign", "ecc256:aes128cfb"), RH_OWNER),
        "public restricted decryption key": load_external(
            ecc_public("userwithauth|restricted|decrypt", "ecc256:aes128cfb"), RH_OWNER),
        # TPMS_ENC_SCHEME_RSAES is empty: no hash follows the scheme (an empty modulus
        # keeps this a wire-level case without an RSA key)
        "RSAES key without a modulus": load_external(bytes(rsaes), RH_NULL),
        "RSAES key": load_external(rsa_public("userwithauth|decrypt", "rsa2048:rsaes"),
                                   RH_NULL),
        "RSA key with exponent 3": load_external(rsa_public(
            "userwithauth|decrypt", "rsa2048:rsaes").replace(b"\x08\x00\x00\x00\x00\x00",
                                                            b"\x08\x00\x00\x00\x00\x03"),
            RH_NULL),
        "ECC point off the curve": load_external(ecc_public("userwithauth|sign")[:-1] + b"\x00",
                                                 RH_NULL),
        "ECC point too short": load_external(
            ecc_public("userwithauth|sign")[:-36] + b"\x00\x01\x07", RH_NULL),
        "sealed data with a short unique": load_external(
            template("keyedhash", "userwithauth"), RH_NULL),
        "RSAES key with a stray hash": load_external(
            bytes(rsaes).replace(b"\x00\x15", b"\x00\x15\x00\x0b", 1), RH_NULL),
    }
    assert codes(ours, theirs, script) == {}


def test_an_external_object_never_persists(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    evict = with_pw(0x120, struct.pack(">II", RH_OWNER, 0x80000000),
                    struct.pack(">I", 0x81000010))
    for hierarchy, sensitive in ((RH_OWNER, b"\x00\x00"), (RH_NULL, ecc_sensitive())):
        for tpm in (ours, theirs):
            handle_of(tpm.execute(load_external(ecc_public("userwithauth|sign"), hierarchy,
                                                sensitive)))
        mine, libtpms = both(ours, theirs, evict)
        assert rc(mine) == rc(libtpms) == 0x282  # TPM_RC_ATTRIBUTES, handle 2
        for tpm in (ours, theirs):
            flush(tpm, 0x80000000)


def hierarchy_control(hierarchy: int, state: int) -> bytes:
    return with_pw(CC_HIERARCHY_CONTROL, struct.pack(">I", PLATFORM),
                   struct.pack(">IB", hierarchy, state))


def test_a_disabled_hierarchy_takes_no_external_or_saved_object(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    public = ecc_public("userwithauth|sign")
    saved = {}
    for tpm in (ours, theirs):
        h = handle_of(tpm.execute(load_external(public, RH_OWNER)))
        saved[id(tpm)] = ok(tpm.execute(command(CC_CONTEXT_SAVE, struct.pack(">I", h))))[10:]
        flush(tpm, h)
        ok(tpm.execute(hierarchy_control(RH_OWNER, 0)))
    mine, libtpms = both(ours, theirs, load_external(public, RH_OWNER))
    assert rc(mine) == rc(libtpms) == 0x3C5  # TPM_RC_HIERARCHY, parameter 3
    mine = ours.execute(command(CC_CONTEXT_LOAD, saved[id(ours)]))
    libtpms = theirs.execute(command(CC_CONTEXT_LOAD, saved[id(theirs)]))
    assert rc(mine) == rc(libtpms) == 0x1C5  # TPM_RC_HIERARCHY, parameter 1
    # the blob's integrity is checked first
    mine = ours.execute(command(CC_CONTEXT_LOAD, saved[id(ours)][:-1] + b"\x00"))
    libtpms = theirs.execute(command(CC_CONTEXT_LOAD, saved[id(theirs)][:-1] + b"\x00"))
    assert rc(mine) == rc(libtpms) == 0x1DF  # TPM_RC_INTEGRITY, parameter 1
    mine, libtpms = both(ours, theirs, load_external(public, ENDORSEMENT))
    assert rc(mine) == rc(libtpms) == 0


def short_x_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key whose x coordinate has a leading zero octet."""
    d = 0x5EED
    while True:
        key = ec.derive_private_key(d, ec.SECP256R1())
        if key.public_key().public_numbers().x >> 248 == 0:
            return key
        d += 1


def test_symmetric_keys_and_short_coordinates_match_libtpms(swtpm: Any) -> None:
    """A symmetric decryption key may leave its mode to the command (NULL); a point given
    with a leading zero dropped still belongs to its private key."""
    ours, theirs = started_pair(swtpm)
    key, seed = b"k" * 16, b"s" * 32
    aes = template("aes128", "userwithauth|decrypt|sign")[:-2] + tpm2b(
        hashlib.sha256(seed + key).digest())
    aes_sensitive = tpm2b(struct.pack(">H", 0x0025) + tpm2b(b"") + tpm2b(seed) + tpm2b(key))
    short = short_x_key()
    nums = short.public_key().public_numbers()
    x = nums.x.to_bytes(32, "big")[1:]
    pub = TPM2B_PUBLIC.parse("ecc256:null:null", objectAttributes="userwithauth|sign")
    pub.publicArea.unique.ecc.x = x
    pub.publicArea.unique.ecc.y = nums.y.to_bytes(32, "big")
    d = short.private_numbers().private_value.to_bytes(32, "big")
    ecc_short = bytes(pub.publicArea.marshal())
    script = {
        "CreatePrimary AES decrypt key, mode NULL": with_pw(
            CC_CREATE_PRIMARY, struct.pack(">I", RH_OWNER), sensitive_create() + tpm2b(template(
                "aes128", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt"))
            + b"\x00\x00" + bytes(4)),
        "LoadExternal AES key, mode NULL": load_external(aes, RH_NULL, aes_sensitive),
        "LoadExternal short x with its private part": load_external(
            ecc_short, RH_NULL,
            tpm2b(struct.pack(">H", ECC_SENSITIVE) + tpm2b(b"") + tpm2b(b"") + tpm2b(d))),
        "LoadExternal short x alone": load_external(ecc_short, RH_NULL),
    }
    differ = codes(ours, theirs, script)
    assert differ == {}
    assert rc(ours.execute(script["LoadExternal short x with its private part"])) == 0


# ---- 3. a fixedParent storage key is like its parent ---------------------------------------
CHILDREN = {
    "aes256 child": template("ecc256:aes256cfb", PARENT),
    "aes128 OFB child": template("ecc256:aes128ofb", PARENT),
    "sha384 child": template("ecc256:aes128cfb", PARENT).replace(b"\x00\x0b", b"\x00\x0c", 1),
    "duplicable aes256 child": template(
        "ecc256:aes256cfb", "sensitivedataorigin|userwithauth|restricted|decrypt|noda"),
    "symmetric aes128 CFB child": template("aes128cfb", PARENT),
    "symmetric aes256 child": template("aes256cfb", PARENT),
    "symmetric sha384 child": template("aes128cfb", PARENT).replace(b"\x00\x0b", b"\x00\x0c", 1),
    "rsa aes128 CFB child": template("rsa2048:aes128cfb", PARENT),
}


def test_a_fixed_storage_child_keeps_its_parents_algorithms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for tpm in (ours, theirs):
        create_primary(tpm, template("ecc256:aes128cfb", PARENT))
    script = {f"Create {k}": create(0x80000000, v) for k, v in CHILDREN.items()
              if not k.startswith("rsa")}  # Python RSA key generation is slow
    script |= {f"CreateLoaded {k}": create_loaded(0x80000000, v) for k, v in CHILDREN.items()
               if not k.startswith("rsa")}
    assert codes(ours, theirs, script) == {}
    mine = ours.execute(script["Create aes256 child"])
    assert rc(mine) == 0x2D6  # TPM_RC_SYMMETRIC, parameter 2


# ---- 4. a symmetric key is a parent ------------------------------------------------------
def test_protected_storage_under_a_symmetric_parent(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    sealed = template("keyedhash", SEALED)
    for tpm in (ours, theirs):
        parent = handle_of(tpm.execute(with_pw(
            0x131, struct.pack(">I", RH_OWNER),
            sensitive_create() + tpm2b(template("aes128cfb", PARENT)) + b"\x00\x00" + bytes(4))))
        private, public = private_and_public(tpm.execute(create(parent, sealed, b"secret")))
        loaded = handle_of(tpm.execute(with_pw(CC_LOAD, struct.pack(">I", parent),
                                               private + public)))
        unsealed = ok(tpm.execute(with_pw(CC_UNSEAL, struct.pack(">I", loaded), b"")))
        assert unsealed[14:22] == tpm2b(b"secret")
        # a new authValue, protected again under the symmetric parent
        changed = ok(tpm.execute(with_pw(CC_OBJECT_CHANGE_AUTH,
                                         struct.pack(">II", loaded, parent), tpm2b(b"new"))))
        flush(tpm, loaded)
        (n,) = struct.unpack_from(">H", changed, 14)
        loaded = handle_of(tpm.execute(with_pw(CC_LOAD, struct.pack(">I", parent),
                                               changed[14 : 16 + n] + public)))
        unsealed = ok(tpm.execute(with_pw(CC_UNSEAL, struct.pack(">I", loaded), b"", b"new")))
        assert unsealed[14:22] == tpm2b(b"secret")
        flush(tpm, loaded)
        # a storage key under it, and a grandchild under that
        private, public = private_and_public(tpm.execute(create(
            parent, template("ecc256:aes128cfb", PARENT.replace("fixedtpm|fixedparent|", "")))))
        child = handle_of(tpm.execute(with_pw(CC_LOAD, struct.pack(">I", parent),
                                              private + public)))
        ok(tpm.execute(create(child, template("keyedhash", "userwithauth|noda"), b"g")))
        # a tampered blob is refused: the integrity check uses the parent's seedValue
        bad = private[:-1] + bytes([private[-1] ^ 1])
        r = tpm.execute(with_pw(CC_LOAD, struct.pack(">I", parent), bad + public))
        assert rc(r) == 0x1DF  # TPM_RC_INTEGRITY, parameter 1


# ---- 5. keyedHash keys ------------------------------------------------------------------
def test_keyed_hash_keys_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for tpm in (ours, theirs):
        create_primary(tpm, template("ecc256:aes128cfb", PARENT))
    signer = "fixedtpm|fixedparent|userwithauth|sign"
    script = {
        "restricted HMAC key from the caller, fixed": create(
            0x80000000, template("hmac", signer + "|restricted"), b"k" * 32),
        "restricted HMAC key from the caller, duplicable": create(
            0x80000000, template("hmac", "userwithauth|sign|restricted"), b"k" * 32),
        "HMAC key of a SHA-256 block": create(0x80000000, template("hmac", signer), b"k" * 64),
        "HMAC key beyond a SHA-256 block": create(
            0x80000000, template("hmac", signer), b"k" * 65),
        "SHA-384 HMAC key beyond a SHA-256 block": create(
            0x80000000, template("hmac:sha384", signer), b"k" * 100),
        "sensitive data beyond 128 octets": create(
            0x80000000, template("hmac:sha384", signer), b"k" * 129),
    }
    assert codes(ours, theirs, script) == {}
    # A TPM-made HMAC key is a digest of the scheme's hash, whatever the nameAlg: a
    # SHA-384 key's private blob is 16 octets longer than a SHA-256 key's, in both TPMs
    # (the blobs themselves differ in layout: libtpms adds an IV and pads authValue).
    made = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"
    sizes = []
    for tpm in (ours, theirs):
        blobs = [private_and_public(tpm.execute(create(0x80000000, template(alg, made))))[0]
                 for alg in ("hmac:sha384", "hmac:sha256")]
        sizes.append(len(blobs[0]) - len(blobs[1]))
    assert sizes == [16, 16]


# ---- 6. a public-only object has no policy to satisfy --------------------------------------
def test_a_public_only_object_refuses_policy_authorization(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    public = ecc_public("userwithauth|sign", policy=DUP_POLICY)
    results = {}
    for tpm in (ours, theirs):
        r = ok(tpm.execute(load_external(public, RH_OWNER)))
        h = handle_of(r)
        (n,) = struct.unpack_from(">H", r, 14)
        name = r[16 : 16 + n]
        results[id(tpm)] = rc(with_policy(tpm, CC_DUPLICATE, [h, RH_NULL],
                                          [name, struct.pack(">I", RH_NULL)],
                                          tpm2b(b"") + SYM_NULL))
    assert results[id(ours)] == results[id(theirs)] == 0x12F  # TPM_RC_AUTH_UNAVAILABLE


# ---- 8. pcrUpdateCounter at Startup ---------------------------------------------------------
def _power_cycle(ours: TPM, theirs: Any) -> None:
    ours.power_cycle()
    with socket.create_connection(("127.0.0.1", theirs.port + 1), timeout=10) as s:
        s.sendall(struct.pack(">II", 2, 0))  # swtpm CMD_INIT
        assert s.recv(4) == bytes(4)


def test_pcr_update_counter_after_each_kind_of_startup(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    read = pcr_read(SHA256, [0])

    def counters() -> tuple[int, int]:
        return parse_pcr_read(ours.execute(read))[0], parse_pcr_read(theirs.execute(read))[0]

    seen = [counters()]
    for shutdown, startup in ((1, 1), (1, 0), (0, 0)):  # Resume, Restart, Reset
        for tpm in (ours, theirs):
            ok(tpm.execute(command(0x145, struct.pack(">H", shutdown))))
        _power_cycle(ours, theirs)
        for tpm in (ours, theirs):
            ok(tpm.execute(command(0x144, struct.pack(">H", startup))))
        seen.append(counters())
    assert [a for a, _ in seen] == [b for _, b in seen]
    assert seen[0][0] == 20  # PCR 0-23 less the no-increment PCRs 16, 21-23
