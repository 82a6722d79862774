"""The last response-code differences the differential fuzzer (``python -m bench fuzz
--differential``) found between our TPM and libtpms on malformed input, each pinned by
raw command bytes sent to both and the code libtpms gives:

* TPM2_LoadExternal checks in libtpms' order: the sensitive union's bound for its type
  while unmarshalling (TPM_RC_SIZE, inPrivate), then ObjectLoad (a seed longer than a
  nameAlg digest before the attributes) and CryptValidateKeys (types, sizes, binding);
  a nameAlg of TPM_ALG_NULL earns what libtpms answers for a bad public area;
* a sequence object under the DUP role wants a policy session (TPM_RC_AUTH_TYPE), and
  TPM2_ObjectChangeAuth refuses it as objectHandle (TYPE, handle 1) before it looks at
  newAuth (SIZE, parameter 1) and only then at the parent (TYPE, handle 2);
* a template or public area with nameAlg TPM_ALG_NULL is TPM_RC_HASH (inPublic) as soon
  as Create, CreatePrimary, Load or Import read it; Load wants a private area before
  it looks at the parent;
* a persistent parent takes an object slot while the command runs, so Load and
  CreateLoaded under it find no slot for the new object when one is left;
* a signing key with no scheme of its own refuses a command scheme of another key
  type as TPM_RC_SCHEME on inScheme, in the attestations as in TPM2_Sign.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from tests.emulator.emulator_wire import RH_NULL, RH_OWNER, command, rc, with_pw
from tests.emulator.outside_keys import p256_key
from tests.emulator.test_differential_duplication import sensitive_create
from tests.emulator.test_differential_objects import both, started_pair, tpm2b
from tests.emulator.test_differential_parity import (
    ecc_public,
    load_external,
    rsa_public,
    template,
)
from tests.emulator.test_ecc_two_phase import key_command, sign
from tests.emulator.test_fuzz_regressions import CREATE_PRIMARY_STORAGE
from tpm_emulator import TPM

SIZE, KEY_SIZE, TYPE, HASH, KEY, BINDING = 0x095, 0x087, 0x08A, 0x083, 0x09C, 0x0A5
ATTRIBUTES, HIERARCHY, AUTH_TYPE, OBJECT_MEMORY = 0x082, 0x085, 0x124, 0x902
RH_ENDORSEMENT = 0x4000000B
RSA, KEYEDHASH, ECC, SYMCIPHER = 0x0001, 0x0008, 0x0023, 0x0025
SHA256, NULL_ALG = 0x000B, 0x0010
CC_CREATE_PRIMARY, CC_CREATE, CC_LOAD, CC_IMPORT = 0x131, 0x153, 0x157, 0x156
CC_DUPLICATE, CC_OBJECT_CHANGE_AUTH, CC_HASH_SEQUENCE_START = 0x14B, 0x150, 0x186
CC_EVICT_CONTROL, CC_CREATE_LOADED, CC_FLUSH = 0x120, 0x191, 0x165
PERSISTENT = 0x81000001


def p(code: int, n: int) -> int:
    """A format-1 code that names parameter ``n``."""
    return code | 0x040 | n << 8


def h(code: int, n: int) -> int:
    """A format-1 code that names handle ``n``."""
    return code | n << 8


def sensitive(kind: int, auth: bytes = b"", seed: bytes = b"", key: bytes = b"") -> bytes:
    """TPM2B_SENSITIVE."""
    return tpm2b(struct.pack(">H", kind) + tpm2b(auth) + tpm2b(seed) + tpm2b(key))


def public(kind: int, name_alg: int, attrs: int, tail: bytes) -> bytes:
    """A TPMT_PUBLIC from its parts: ``tail`` is authPolicy, parameters and unique."""
    return struct.pack(">HHI", kind, name_alg, attrs) + tail


SENSITIVE_DATA_ORIGIN = 0x20
DATA_OBJECT_TAIL = b"\x00\x00" + struct.pack(">H", NULL_ALG) + b"\x00\x00"  # no scheme
DATA_OBJECT = public(KEYEDHASH, SHA256, 0x40, DATA_OBJECT_TAIL)  # userWithAuth
RSA_KEY = rsa_public("userwithauth|decrypt|sign", "rsa2048:null:null")
AES_KEY = template("aes128cfb", "userwithauth|decrypt|sign")
ECC_KEY = ecc_public("userwithauth|decrypt|sign")


def agree(ours: TPM, theirs: Any, cases: dict[str, tuple[bytes, int]]) -> None:
    """Each command to both TPMs: both must answer the expected code."""
    got = {}
    for name, (cmd, _) in cases.items():
        a, b = both(ours, theirs, cmd)
        got[name] = (hex(rc(a)), hex(rc(b)))
        for tpm, r in ((ours, a), (theirs, b)):
            if rc(r) == 0:
                tpm.execute(command(CC_FLUSH, r[10:14]))
    assert got == {name: (hex(code), hex(code)) for name, (_, code) in cases.items()}


# ---- TPM2_LoadExternal ---------------------------------------------------------------
def test_load_external_sensitive_bounds_are_checked_while_unmarshalling(swtpm: Any) -> None:
    """The union member's bound (one RSA prime, an ECC parameter, MAX_SYM_DATA, an AES
    key), before the hierarchy is even read."""
    ours, theirs = started_pair(swtpm)
    agree(ours, theirs, {
        "RSA prime of 193 octets": (
            load_external(RSA_KEY, RH_NULL, sensitive(RSA, key=b"\x80" * 193)), p(SIZE, 1)),
        "RSA prime of 192 octets": (
            load_external(RSA_KEY, RH_NULL, sensitive(RSA, key=b"\x80" * 192)),
            p(KEY_SIZE, 1)),
        "keyedHash key of 129 octets": (
            load_external(DATA_OBJECT, RH_NULL, sensitive(KEYEDHASH, key=b"\x01" * 129)),
            p(SIZE, 1)),
        "AES key of 33 octets": (
            load_external(AES_KEY, RH_NULL, sensitive(SYMCIPHER, key=b"\x01" * 33)),
            p(SIZE, 1)),
        "ECC parameter of 81 octets": (
            load_external(ECC_KEY, RH_NULL, sensitive(ECC, key=b"\x01" * 81)), p(SIZE, 1)),
        "too big, and outside the NULL hierarchy": (
            load_external(DATA_OBJECT, RH_ENDORSEMENT,
                          sensitive(KEYEDHASH, key=b"\x01" * 200)), p(SIZE, 1)),
    })


def test_load_external_key_checks_follow_object_load(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    seed = b"\x07" * 32
    key = b"secret"
    bound = public(KEYEDHASH, SHA256, 0x40, DATA_OBJECT_TAIL[:-2]
                   + tpm2b(hashlib.sha256(seed + key).digest()))
    neither = public(RSA, 0x0004, 0, RSA_KEY[8:])  # SHA-1, neither sign nor decrypt
    agree(ours, theirs, {
        # ObjectLoad: the seed against the nameAlg comes before PublicAttributesValidation.
        "seed longer than SHA-1, bad attributes": (
            load_external(neither, RH_NULL, sensitive(RSA, seed=b"\x01" * 41)),
            p(KEY_SIZE, 1)),
        "bad attributes": (load_external(neither, RH_NULL, sensitive(RSA)), p(ATTRIBUTES, 2)),
        # CryptValidateKeys: the types, the authValue, then each type's key sizes.
        "sensitive of another type": (
            load_external(DATA_OBJECT, RH_NULL, sensitive(RSA, key=b"\x80" * 17)),
            p(TYPE, 1)),
        "authValue longer than the nameAlg": (
            load_external(DATA_OBJECT, RH_NULL, sensitive(KEYEDHASH, auth=b"\x01" * 33)),
            p(SIZE, 1)),
        "data object without a seed": (
            load_external(DATA_OBJECT, RH_NULL, sensitive(KEYEDHASH, key=key)),
            p(KEY_SIZE, 1)),
        "AES key shorter than keyBits": (
            load_external(AES_KEY, RH_NULL, sensitive(SYMCIPHER, key=b"\x01" * 15)),
            p(KEY_SIZE, 1)),
        "ECC private key out of range": (
            load_external(ECC_KEY, RH_NULL, sensitive(ECC, key=b"\xff" * 32)), KEY_SIZE),
        "data object not bound": (
            load_external(bound, RH_NULL, sensitive(KEYEDHASH, seed=seed, key=b"other")),
            BINDING),
        "data object bound": (
            load_external(bound, RH_NULL, sensitive(KEYEDHASH, seed=seed, key=key)), 0),
    })


def test_load_external_without_a_name_alg_is_checked_as_libtpms_checks_it(swtpm: Any) -> None:
    """libtpms loads an external key with nameAlg TPM_ALG_NULL (we refuse one that would
    load: a NULL nameAlg marks our sequence objects), checking its schemes and its key
    sizes as it would any other."""
    ours, theirs = started_pair(swtpm)
    rsa_no_modulus = public(RSA, NULL_ALG, 0x40060, RSA_KEY[8:-258] + b"\x00\x00")
    rsa_bad_scheme = public(RSA, NULL_ALG, 0x000E0,  # adminWithPolicy, no sign/decrypt
                            RSA_KEY[8:-266] + struct.pack(">HH", 0x0014, SHA256)
                            + RSA_KEY[-264:])
    agree(ours, theirs, {
        "public only, no modulus": (load_external(rsa_no_modulus, RH_OWNER), p(KEY, 2)),
        "with a sensitive area, scheme on neither sign nor decrypt": (
            load_external(rsa_bad_scheme, RH_NULL, sensitive(RSA, key=b"\x80" * 128)),
            p(0x092, 2)),
    })


# Commands of the differential fuzzer (seed 7) that showed the differences.
FUZZ_LOAD_EXTERNAL = {
    # A SHA-1 RSA key with a 41-octet seed: KEY_SIZE for inPrivate, not ATTRIBUTES.
    "8001000000a00000016700500008001feb9d1269a673901879c48efb76193864cfe6880444afc937"
    "0f02a45eb2c62f002924ded2e18b80fbb24e0e0e37d29a10c94761a4937967740617de21db228db64d"
    "03916512e5f48ced200000003e000100040000000000000010001508000000007f002828766fab3a92"
    "85d34f16702008b2d9e86178d374364086e46c12e728a7df8237c5a6eccc65a9c62a40000007":
        p(KEY_SIZE, 1),
    # A keyedHash pair without a seed: KEY_SIZE for inPrivate, not BINDING.
    "80010000003900000167000c000800041c9f701300000000001b0008000b0000000000000010000d02"
    "1063714d406b1a859ff6bfa140000007": p(KEY_SIZE, 1),
}


def test_fuzz_load_external_findings(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    agree(ours, theirs, {k[:40]: (bytes.fromhex(k), v) for k, v in FUZZ_LOAD_EXTERNAL.items()})


# ---- sequence objects where an object is expected --------------------------------------
def test_sequence_object_roles(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    start = command(CC_HASH_SEQUENCE_START, tpm2b(b"") + struct.pack(">H", SHA256))
    a, b = both(ours, theirs, start)
    assert rc(a) == rc(b) == 0 and a[10:14] == b[10:14]
    seq = a[10:14]
    a, b = both(ours, theirs, CREATE_PRIMARY_STORAGE)
    assert rc(a) == rc(b) == 0 and a[10:14] == b[10:14]
    key = a[10:14]
    agree(ours, theirs, {
        "Duplicate of a sequence with a password": (
            with_pw(CC_DUPLICATE, seq + struct.pack(">I", RH_NULL),
                    b"\x00\x00" + struct.pack(">H", NULL_ALG)), AUTH_TYPE),
        "ObjectChangeAuth of a sequence": (
            with_pw(CC_OBJECT_CHANGE_AUTH, seq + key, tpm2b(b"")), h(TYPE, 1)),
        "ObjectChangeAuth: newAuth before the parent": (
            with_pw(CC_OBJECT_CHANGE_AUTH, key + key, tpm2b(b"\x01" * 33)), p(SIZE, 1)),
        "ObjectChangeAuth: not the parent": (
            with_pw(CC_OBJECT_CHANGE_AUTH, key + key, tpm2b(b"\x01" * 32)), h(TYPE, 2)),
    })


# ---- a nameAlg of TPM_ALG_NULL where an object needs a Name -----------------------------
def test_null_name_alg_is_refused_while_unmarshalling(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    a, b = both(ours, theirs, command(CC_HASH_SEQUENCE_START,
                                      tpm2b(b"") + struct.pack(">H", SHA256)))
    assert rc(a) == rc(b) == 0 and a[10:14] == b[10:14]
    seq = a[10:14]
    nameless = public(KEYEDHASH, NULL_ALG, 0x40 | 0x1, DATA_OBJECT_TAIL)  # a reserved bit
    with_name = public(KEYEDHASH, SHA256, 0x40 | SENSITIVE_DATA_ORIGIN, DATA_OBJECT_TAIL)
    agree(ours, theirs, {
        # HASH comes before the reserved bit, the attributes and the later parameters.
        "CreatePrimary": (
            with_pw(CC_CREATE_PRIMARY, struct.pack(">I", RH_OWNER),
                    sensitive_create() + tpm2b(nameless) + b"\x00\x00"
                    + struct.pack(">I", 5)), p(HASH, 2)),
        "Create under a sequence": (
            with_pw(CC_CREATE, seq, sensitive_create() + tpm2b(nameless)
                    + b"\x00\x00" + bytes(4)), p(HASH, 2)),
        "Load under a sequence, without a private area": (
            with_pw(CC_LOAD, seq, tpm2b(b"") + tpm2b(nameless)), p(HASH, 2)),
        "Import under a sequence": (
            with_pw(CC_IMPORT, seq, b"\x00\x00" + tpm2b(nameless) + b"\x00\x00" * 2
                    + struct.pack(">H", NULL_ALG)), p(HASH, 2)),
        # Load: a private area at all before the parent.
        "Load without a private area": (
            with_pw(CC_LOAD, seq, tpm2b(b"") + tpm2b(with_name)), p(SIZE, 1)),
        "Load under a sequence, not a parent": (
            with_pw(CC_LOAD, seq, tpm2b(b"\x00" * 8) + tpm2b(with_name)), h(TYPE, 1)),
    })


# ---- object slots -----------------------------------------------------------------------
def test_a_persistent_parent_takes_a_slot(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    child = template("ecc256:ecdsa-sha256",
                     "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign")
    made = []
    for tpm in (ours, theirs):
        r = tpm.execute(CREATE_PRIMARY_STORAGE)
        assert rc(r) == 0
        assert rc(tpm.execute(with_pw(CC_EVICT_CONTROL, struct.pack(">I", RH_OWNER) + r[10:14],
                                      struct.pack(">I", PERSISTENT)))) == 0
        tpm.execute(command(CC_FLUSH, r[10:14]))
        r = tpm.execute(with_pw(CC_CREATE, struct.pack(">I", PERSISTENT),
                                sensitive_create() + tpm2b(child) + b"\x00\x00" + bytes(4)))
        assert rc(r) == 0
        (n,) = struct.unpack_from(">H", r, 14)
        (m,) = struct.unpack_from(">H", r, 16 + n)
        made.append(r[14 : 18 + n + m])  # outPrivate and outPublic, each with its size
    seq = command(CC_HASH_SEQUENCE_START, tpm2b(b"") + struct.pack(">H", SHA256))
    for _ in range(2):  # two of the three slots
        a, b = both(ours, theirs, seq)
        assert rc(a) == rc(b) == 0
    parent = struct.pack(">I", PERSISTENT)
    for tpm, blob in zip((ours, theirs), made, strict=True):
        assert rc(tpm.execute(with_pw(CC_LOAD, parent, blob))) == OBJECT_MEMORY
    agree(ours, theirs, {
        "CreateLoaded under the persistent parent": (
            with_pw(CC_CREATE_LOADED, parent, sensitive_create() + tpm2b(child)),
            OBJECT_MEMORY),
    })
    a, b = both(ours, theirs, seq)  # the last slot
    assert rc(a) == rc(b) == 0
    agree(ours, theirs, {
        # The slot before the template: a bad one still earns OBJECT_MEMORY.
        "CreatePrimary with every slot taken": (
            with_pw(CC_CREATE_PRIMARY, struct.pack(">I", RH_OWNER),
                    sensitive_create() + tpm2b(public(KEYEDHASH, SHA256, 0x40,
                                                      DATA_OBJECT_TAIL))
                    + b"\x00\x00" + bytes(4)), OBJECT_MEMORY),
        "LoadExternal with every slot taken": (
            load_external(DATA_OBJECT, RH_NULL, sensitive(KEYEDHASH, key=b"k")),
            OBJECT_MEMORY),
    })


# ---- dictionary-attack lockout, session by session --------------------------------------
CC_DA_PARAMETERS, CC_UNSEAL, CC_GET_TIME, RH_LOCKOUT = 0x13A, 0x15E, 0x14C, 0x4000000A
BAD_AUTH, AUTH_FAIL, LOCKOUT = 0x0A2, 0x08E, 0x921


def s(code: int, n: int) -> int:
    """A format-1 code that names session ``n``."""
    return code | 0x800 | n << 8


def two_passwords(cc: int, handles: bytes, params: bytes, first: bytes, second: bytes) -> bytes:
    area = b"".join(struct.pack(">IHBH", 0x40000009, 0, 1, len(pw)) + pw
                    for pw in (first, second))
    return command(cc, handles + struct.pack(">I", len(area)) + area + params, 0x8002)


def test_lockout_is_checked_session_by_session(swtpm: Any) -> None:
    """In lockout, a bad password for a DA-exempt first handle is still TPM_RC_BAD_AUTH
    for session 1: the lockout of the second handle is checked only when its turn comes."""
    ours, theirs = started_pair(swtpm)
    seed, key = b"\x07" * 32, b"sealed"
    sealed = public(KEYEDHASH, SHA256, 0x40, DATA_OBJECT_TAIL[:-2]  # not noDA
                    + tpm2b(hashlib.sha256(seed + key).digest()))
    loaded = load_external(sealed, RH_NULL,
                           sensitive(KEYEDHASH, auth=b"pw", seed=seed, key=key))
    a, b = both(ours, theirs, loaded)
    assert rc(a) == rc(b) == 0 and a[10:14] == b[10:14]
    obj = a[10:14]
    agree(ours, theirs, {
        "one try before lockout": (
            with_pw(CC_DA_PARAMETERS, struct.pack(">I", RH_LOCKOUT),
                    struct.pack(">III", 1, 1000, 1000)), 0),
        "a wrong password": (with_pw(CC_UNSEAL, obj, b"", b"wrong"), s(AUTH_FAIL, 1)),
    })
    get_time = b"\x00\x00" + struct.pack(">H", NULL_ALG)
    handles = struct.pack(">I", RH_ENDORSEMENT) + obj
    agree(ours, theirs, {
        "in lockout, a bad first password": (
            two_passwords(CC_GET_TIME, handles, get_time, b"wrong", b"pw"), s(BAD_AUTH, 1)),
        "in lockout, a good first password": (
            two_passwords(CC_GET_TIME, handles, get_time, b"", b"pw"), LOCKOUT),
    })


# ---- NV_DefineSpace: the size of a PIN index before its attributes ------------------------
def test_pin_index_size_is_checked_first(swtpm: Any) -> None:
    """A PIN index's dataSize other than 8 is TPM_RC_SIZE (publicInfo) before anything
    else about it (test_differential_nv_pin.py has the rest of the PIN rules)."""
    ours, theirs = started_pair(swtpm)

    def define(nt: int, attrs: int, size: int) -> bytes:
        nv_public = struct.pack(">IHIHH", 0x01000010, SHA256, attrs | nt << 4, 0, size)
        return with_pw(0x12A, struct.pack(">I", RH_OWNER), tpm2b(b"") + tpm2b(nv_public))

    agree(ours, theirs, {
        "PIN_FAIL of 255 octets (fuzz)": (define(8, 0, 255), p(SIZE, 2)),
        "PIN_PASS of 7 octets": (define(9, 0, 7), p(SIZE, 2)),
        "PIN_FAIL of 8 octets without NO_DA": (define(8, 0, 8), p(ATTRIBUTES, 2)),
    })


def test_a_scheme_of_another_key_type_is_refused_on_in_scheme(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    a, b = both(ours, theirs, key_command(p256_key(), "sign|userwithauth"))
    assert rc(a) == rc(b) == 0
    key = int(struct.unpack(">I", a[10:14])[0])
    digest = hashlib.sha256(b"x").digest()
    for alg in (0x14, 0x16, 0x05):  # RSASSA, RSAPSS, HMAC for an ECC key
        scheme = struct.pack(">HH", alg, 0x0B)
        quote = with_pw(0x158, struct.pack(">I", key), struct.pack(">H", 0) + scheme
                        + struct.pack(">I", 0))
        for cmd in (quote, sign(key, digest, scheme)):
            mine, other = both(ours, theirs, cmd)
            assert rc(mine) == rc(other) == 0x2D2, (hex(alg), hex(rc(mine)), hex(rc(other)))
