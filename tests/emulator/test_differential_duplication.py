"""Differential tests of CreateLoaded, Duplicate, Rewrap and Import against a real
swtpm (libtpms). Keys differ between the two TPMs (other seeds), so each TPM gets
blobs made for its own parent and the comparison is of response codes, output sizes
and the Names of what was imported; the cross tests move an object from one TPM into
the other in both directions."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from tpm2_pytss import TPM2B_DIGEST, TPM2B_PUBLIC, TPM2B_SENSITIVE, TPMT_PUBLIC, TPMT_SENSITIVE
from tpm2_pytss.utils import wrap

from tests.emulator.emulator_wire import RH_NULL, RH_OWNER, SESSIONS, command, rc, with_pw
from tests.emulator.outside_keys import p256_key
from tests.emulator.test_differential_objects import both, started_pair
from tpm_emulator import TPM

PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
SIGNER = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign|noda"
SEALED = "userwithauth|noda"
SYM_NULL = b"\x00\x10"
AES128 = struct.pack(">HHH", 0x0006, 128, 0x0043)
CC_DUPLICATE, CC_REWRAP, CC_IMPORT, CC_CREATE_LOADED = 0x14B, 0x152, 0x156, 0x191
EMPTY_SENSITIVE = b"\x00\x04\x00\x00\x00\x00"


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


# PolicyCommandCode(TPM_CC_Duplicate): the DUP role needs a policy naming the command.
DUP_POLICY = hashlib.sha256(bytes(32) + struct.pack(">II", 0x16C, CC_DUPLICATE)).digest()


def template(alg: str, attrs: str, policy: bytes | None = DUP_POLICY) -> bytes:
    pub = TPM2B_PUBLIC.parse(alg, objectAttributes=attrs)
    if policy is not None:
        pub.publicArea.authPolicy = TPM2B_DIGEST(policy)
    return bytes(pub.publicArea.marshal())


def sensitive_create(data: bytes = b"") -> bytes:
    return tpm2b(tpm2b(b"") + tpm2b(data))


def ok(response: bytes) -> bytes:
    assert rc(response) == 0, hex(rc(response))
    return response


def create_primary(tpm: Any, pub: bytes, hierarchy: int = RH_OWNER) -> tuple[int, bytes, bytes]:
    """(handle, TPMT_PUBLIC, name) of a new primary."""
    r = ok(tpm.execute(with_pw(0x131, struct.pack(">I", hierarchy),
                               EMPTY_SENSITIVE + tpm2b(pub) + b"\x00\x00" + bytes(4))))
    handle = struct.unpack(">I", r[10:14])[0]
    (n,) = struct.unpack(">H", r[18:20])
    public = r[20 : 20 + n]
    return handle, public, name_of(public)


def name_of(public: bytes) -> bytes:
    return b"\x00\x0b" + hashlib.sha256(public).digest()


def create_and_load(tpm: Any, parent: int, pub: bytes, data: bytes) -> tuple[int, bytes, bytes]:
    """(handle, TPMT_PUBLIC, name) of a new child, loaded."""
    r = ok(tpm.execute(with_pw(0x153, struct.pack(">I", parent),
                               sensitive_create(data) + tpm2b(pub) + b"\x00\x00" + bytes(4))))
    o = 14
    (n,) = struct.unpack_from(">H", r, o)
    private = r[o + 2 : o + 2 + n]
    o += 2 + n
    (n,) = struct.unpack_from(">H", r, o)
    public = r[o + 2 : o + 2 + n]
    return load(tpm, parent, private, public), public, name_of(public)


def load(tpm: Any, parent: int, private: bytes, public: bytes) -> int:
    r = ok(tpm.execute(with_pw(0x157, struct.pack(">I", parent), tpm2b(private) + tpm2b(public))))
    return int(struct.unpack(">I", r[10:14])[0])


def flush(tpm: Any, handle: int) -> None:
    tpm.execute(command(0x165, struct.pack(">I", handle)))


def unseal(tpm: Any, handle: int) -> bytes:
    r = ok(tpm.execute(with_pw(0x15E, struct.pack(">I", handle), b"")))
    (n,) = struct.unpack_from(">H", r, 14)
    return bytes(r[16 : 16 + n])


def read_name(tpm: Any, handle: int) -> bytes:
    r = ok(tpm.execute(command(0x173, struct.pack(">I", handle))))
    (n,) = struct.unpack_from(">H", r, 10)
    (m,) = struct.unpack_from(">H", r, 12 + n)
    return bytes(r[14 + n : 14 + n + m])


def import_(parent: int, key: bytes, public: bytes, dup: bytes, seed: bytes,
            sym: bytes) -> bytes:
    return with_pw(CC_IMPORT, struct.pack(">I", parent),
                   tpm2b(key) + tpm2b(public) + tpm2b(dup) + tpm2b(seed) + sym)


def out_private(response: bytes) -> bytes:
    (n,) = struct.unpack_from(">H", response, 14)
    return response[16 : 16 + n]


def tpm2b_fields(response: bytes, count: int) -> list[bytes]:
    """The first ``count`` TPM2B response parameters (after the parameterSize)."""
    out, o = [], 14
    for _ in range(count):
        (n,) = struct.unpack_from(">H", response, o)
        out.append(response[o + 2 : o + 2 + n])
        o += 2 + n
    return out


# ---- an outside key, wrapped for each TPM's own parent -------------------------------------
_PEM = p256_key().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption())
_OTHER_PEM = p256_key().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption())


def outside_key(attrs: str = "userwithauth|sign|noda", pem: bytes = _PEM) -> tuple[Any, Any]:
    public = TPM2B_PUBLIC.from_pem(pem, objectAttributes=attrs)
    return public, TPM2B_SENSITIVE(TPMT_SENSITIVE.from_pem(pem))


Case = Callable[[bytes], tuple[bytes, bytes, bytes, bytes, bytes]]


def wrapped(parent_public: bytes, inner: bool = False, attrs: str = "userwithauth|sign|noda"
            ) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """(encryptionKey, objectPublic, duplicate, inSymSeed, symmetricAlg) for Import."""
    public, sens = outside_key(attrs)
    parent, _ = TPMT_PUBLIC.unmarshal(parent_public)
    from tpm2_pytss import TPMT_SYM_DEF_OBJECT

    symdef = TPMT_SYM_DEF_OBJECT.parse("aes128cfb") if inner else None
    key, dup, seed = wrap(parent, public, sens, symdef=symdef)
    return (bytes(key), bytes(public.publicArea.marshal()), bytes(dup), bytes(seed),
            AES128 if inner else SYM_NULL)


def _flip(blob: bytes, at: int) -> bytes:
    b = bytearray(blob)
    b[at] ^= 0x01
    return bytes(b)


def _bare(attrs: str = "userwithauth|sign|noda", pem: bytes = _PEM,
          seed_value: bytes | None = None) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """A duplicate with neither wrapper: the TPM2B_SENSITIVE itself."""
    public, sens = outside_key(attrs, pem)
    if seed_value is not None:
        sens.sensitiveArea.seedValue = TPM2B_DIGEST(seed_value)
    return b"", bytes(public.publicArea.marshal()), bytes(sens.marshal()), b"", SYM_NULL


def _replace(t: tuple[bytes, bytes, bytes, bytes, bytes], i: int, v: bytes
             ) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    items = list(t)
    items[i] = v
    return items[0], items[1], items[2], items[3], items[4]


def _other_public() -> bytes:
    public, _ = outside_key(pem=_OTHER_PEM)
    return bytes(public.publicArea.marshal())


def _encrypted_dup_public(t: tuple[bytes, ...]) -> bytes:
    public, _ = outside_key("userwithauth|sign|noda|encryptedduplication")
    return bytes(public.publicArea.marshal())


IMPORT_CASES: dict[str, Case] = {
    "outer only": lambda p: wrapped(p),
    "outer and inner": lambda p: wrapped(p, inner=True),
    "no wrapper": lambda p: _bare(),
    "flipped ciphertext": lambda p: _replace(w := wrapped(p), 2, _flip(w[2], -1)),
    "flipped outer HMAC": lambda p: _replace(w := wrapped(p), 2, _flip(w[2], 5)),
    "flipped inner ciphertext": lambda p: _replace(w := wrapped(p, True), 2, _flip(w[2], -1)),
    "integrity of 0xFFFF octets": lambda p: _replace(w := wrapped(p), 2, b"\xff\xff" + w[2][2:]),
    "integrity of 64 octets": lambda p: _replace(w := wrapped(p), 2, b"\x00\x40" + w[2][2:]),
    "one-octet duplicate": lambda p: _replace(wrapped(p), 2, b"\x00"),
    "empty duplicate without seed": lambda p: _replace(_bare(), 2, b""),
    "another key's public": lambda p: _replace(wrapped(p), 1, _other_public()),
    "fixedParent public": lambda p: wrapped(p, attrs="fixedparent|userwithauth|sign|noda"),
    "fixedTPM public": lambda p: wrapped(p, attrs="fixedtpm|userwithauth|sign|noda"),
    "key without an algorithm": lambda p: _replace(wrapped(p), 0, bytes(16)),
    "short inner key": lambda p: _replace(w := wrapped(p, True), 0, w[0][:8]),
    "no inner key": lambda p: _replace(wrapped(p, True), 0, b""),
    "encryptedDuplication without inner": lambda p: _replace(
        w := wrapped(p), 1, _encrypted_dup_public(w)),
    "encryptedDuplication without outer": lambda p: _replace(
        _replace(w := wrapped(p, True), 3, b""), 1, _encrypted_dup_public(w)),
    "seed of garbage": lambda p: _replace(wrapped(p), 3, os.urandom(68)),
    "seed of 3 octets": lambda p: _replace(wrapped(p), 3, b"\x00\x01\x02"),
    "seed of 256 octets of garbage": lambda p: _replace(wrapped(p), 3, os.urandom(256)),
    "seed of 256 zero octets": lambda p: _replace(wrapped(p), 3, bytes(256)),
    "seed point off the curve": lambda p: _replace(
        wrapped(p), 3, tpm2b(b"\x01" * 32) + tpm2b(b"\x02" * 32)),
    "bare sensitive of another key": lambda p: _replace(_bare(), 1, _other_public()),
    "bare sensitive with a long seedValue": lambda p: _bare(seed_value=b"s" * 48),
}


@pytest.mark.parametrize("parent_alg", ["ecc256:aes128cfb", "rsa2048:aes256cfb"])
def test_import_matches_libtpms(swtpm: Any, parent_alg: str) -> None:
    ours, theirs = started_pair(swtpm)
    parents = {id(t): create_primary(t, template(parent_alg, PARENT, None))
               for t in (ours, theirs)}
    differ: dict[str, tuple[str, str]] = {}
    for label, case in IMPORT_CASES.items():
        results = []
        for t in (ours, theirs):
            handle, public, _ = parents[id(t)]
            args = case(public)
            r = t.execute(import_(handle, *args))
            name = b""
            if rc(r) == 0:
                loaded = load(t, handle, out_private(r), args[1])
                name = read_name(t, loaded)
                flush(t, loaded)
            results.append((hex(rc(r)), name))
        if results[0] != results[1]:
            differ[label] = (results[0][0], results[1][0])
    assert differ == {}


SYMMETRIC_PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"


def test_import_under_other_kinds_of_key_matches_libtpms(swtpm: Any) -> None:
    """A signing key is no parent; a symmetric restricted decryption key is one, but
    cannot take an outer wrapper."""
    ours, theirs = started_pair(swtpm)
    for t in (ours, theirs):
        create_primary(t, template("ecc256:ecdsa-sha256", SIGNER, None))
        create_primary(t, template("aes128cfb", SYMMETRIC_PARENT, None))
    script = {
        "under a signing key": import_(0x80000000, *_bare()),
        "under a symmetric key, no wrapper": import_(0x80000001, *_bare()),
        "under a symmetric key, with a seed": import_(
            0x80000001, *_replace(_bare(), 3, bytes(68))),
        "CreateLoaded under a symmetric key": create_loaded(
            0x80000001, template("keyedhash", "fixedtpm|fixedparent|userwithauth", None),
            sensitive_create(b"d")),
    }
    codes = {}
    for label, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        codes[label] = (hex(rc(a)), hex(rc(b)))
        for t, r in ((ours, a), (theirs, b)):
            if rc(r) == 0 and label.startswith("CreateLoaded"):
                flush(t, struct.unpack(">I", r[10:14])[0])
    assert {k: v for k, v in codes.items() if v[0] != v[1]} == {}
    assert codes["under a signing key"][0] != "0x0"
    assert codes["under a symmetric key, no wrapper"][0] == "0x0"


# ---- Duplicate with a policy session ---------------------------------------------------------
def start_policy(tpm: Any) -> tuple[int, bytes]:
    r = ok(tpm.execute(command(0x176, struct.pack(">II", RH_NULL, RH_NULL) + tpm2b(bytes(16))
                               + b"\x00\x00" + b"\x01" + SYM_NULL + b"\x00\x0b")))
    handle = struct.unpack(">I", r[10:14])[0]
    (n,) = struct.unpack(">H", r[14:16])
    return handle, r[16 : 16 + n]


def with_policy(tpm: Any, cc: int, handles: list[int], names: list[bytes],
                params: bytes) -> bytes:
    """A command authorized by a fresh policy session (unbound, unsalted: the HMAC key
    is empty) after TPM2_PolicyCommandCode(cc)."""
    session, nonce_tpm = start_policy(tpm)
    ok(tpm.execute(command(0x16C, struct.pack(">II", session, cc))))
    nonce = os.urandom(16)
    cp = hashlib.sha256(struct.pack(">I", cc) + b"".join(names) + params).digest()
    mac = hmac.new(b"", cp + nonce + nonce_tpm + b"\x00", "sha256").digest()
    auth = struct.pack(">I", session) + tpm2b(nonce) + b"\x00" + tpm2b(mac)
    body = b"".join(struct.pack(">I", h) for h in handles)
    body += struct.pack(">I", len(auth)) + auth + params
    r = tpm.execute(command(cc, body, SESSIONS))
    flush(tpm, session)
    return r


def duplicate(tpm: Any, obj: tuple[int, bytes, bytes], parent: tuple[int, bytes, bytes] | None,
              key: bytes = b"", sym: bytes = SYM_NULL) -> bytes:
    parent_handle, parent_name = (RH_NULL, struct.pack(">I", RH_NULL)) if parent is None \
        else (parent[0], parent[2])
    return with_policy(tpm, CC_DUPLICATE, [obj[0], parent_handle], [obj[2], parent_name],
                       tpm2b(key) + sym)


DUPLICATE_CASES: dict[str, tuple[str, bool, bytes, bytes]] = {
    # name: (object attributes, to the new parent?, encryptionKeyIn, symmetricAlg)
    "outer only": (SEALED, True, b"", SYM_NULL),
    "no wrapper": (SEALED, False, b"", SYM_NULL),
    "inner with the TPM's key": (SEALED, False, b"", AES128),
    "inner with the caller's key": (SEALED, True, b"k" * 16, AES128),
    "short inner key": (SEALED, True, b"k" * 8, AES128),
    "key without an algorithm": (SEALED, True, b"k" * 16, SYM_NULL),
    "fixedParent object": ("fixedtpm|fixedparent|userwithauth|noda", True, b"", SYM_NULL),
    "encryptedDuplication without inner": (SEALED + "|encryptedduplication", True, b"",
                                           SYM_NULL),
    "encryptedDuplication to NULL": (SEALED + "|encryptedduplication", False, b"", AES128),
}


def test_duplicate_matches_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    parents = {id(t): create_primary(t, template("ecc256:aes128cfb", PARENT, None))
               for t in (ours, theirs)}
    differ: dict[str, Any] = {}
    for label, (attrs, to_parent, key, sym) in DUPLICATE_CASES.items():
        results = []
        for t in (ours, theirs):
            parent = parents[id(t)]
            obj = create_and_load(t, parent[0], template("keyedhash", attrs), b"data")
            r = duplicate(t, obj, parent if to_parent else None, key, sym)
            sizes: tuple[int, ...] = ()
            if rc(r) == 0:
                key_out, dup, seed = tpm2b_fields(r, 3)
                sizes = (len(key_out), len(dup), len(seed))
                r2 = t.execute(import_(parent[0], key or key_out, obj[1], dup, seed, sym))
                sizes += (rc(r2),)
            flush(t, obj[0])
            results.append((hex(rc(r)), sizes))
        if results[0] != results[1]:
            differ[label] = results
    assert differ == {}


def test_duplicate_refusals_on_handles_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    differ: dict[str, Any] = {}
    for t in (ours, theirs):
        parent = create_primary(t, template("ecc256:aes128cfb", PARENT, None))
        signer = create_primary(t, template("ecc256:ecdsa-sha256", SIGNER, None))
        obj = create_and_load(t, parent[0], template("keyedhash", SEALED), b"data")
        results = {
            "new parent is a signing key": duplicate(t, obj, signer),
            "password instead of a policy": t.execute(with_pw(
                CC_DUPLICATE, struct.pack(">II", obj[0], parent[0]), tpm2b(b"") + SYM_NULL)),
            "Rewrap seed without an old parent": t.execute(with_pw(
                CC_REWRAP, struct.pack(">II", RH_NULL, parent[0]),
                tpm2b(b"x") + tpm2b(obj[2]) + tpm2b(b"seed"))),
            "Rewrap from a signing key": t.execute(with_pw(
                CC_REWRAP, struct.pack(">II", signer[0], parent[0]),
                tpm2b(b"x") + tpm2b(obj[2]) + tpm2b(b"seed"))),
            "Rewrap with a bad seed": t.execute(with_pw(
                CC_REWRAP, struct.pack(">II", parent[0], RH_NULL),
                tpm2b(b"x") + tpm2b(obj[2]) + tpm2b(b"seed"))),
        }
        for label, r in results.items():
            differ.setdefault(label, []).append(hex(rc(r)))
    assert {k: v for k, v in differ.items() if v[0] != v[1]} == {}


def rewrap(old: int, new: int, dup: bytes, name: bytes, seed: bytes) -> bytes:
    return with_pw(CC_REWRAP, struct.pack(">II", old, new), tpm2b(dup) + tpm2b(name)
                   + tpm2b(seed))


def test_rewrap_matches_libtpms(swtpm: Any) -> None:
    """Duplicate to P1, Rewrap P1 -> P2, Import under P2; Rewrap P2 -> NULL and NULL -> P1;
    each step's code and output sizes, and what the imported object unseals."""
    ours, theirs = started_pair(swtpm)
    results: dict[int, list[Any]] = {}
    for t in (ours, theirs):
        steps: list[Any] = []
        p1 = create_primary(t, template("ecc256:aes128cfb", PARENT, None))
        p2 = create_primary(t, template("ecc256:aes256cfb", PARENT, None), 0x4000000B)
        obj = create_and_load(t, p1[0], template("keyedhash", SEALED), b"rewrapped")
        _key, dup, seed = tpm2b_fields(ok(duplicate(t, obj, p1)), 3)
        flush(t, obj[0])
        for old, new in ((p1, p2), (p2, None), (None, p1)):
            r = t.execute(rewrap(old[0] if old else RH_NULL, new[0] if new else RH_NULL, dup,
                                 obj[2], seed))
            steps.append(hex(rc(r)))
            dup, seed = tpm2b_fields(ok(r), 2)
            steps.append((len(dup), len(seed)))
            target = new or p1
            private = out_private(ok(t.execute(import_(target[0], b"", obj[1], dup, seed,
                                                       SYM_NULL))))
            moved = load(t, target[0], private, obj[1])
            steps.append(unseal(t, moved))
            flush(t, moved)
        steps.append(hex(rc(t.execute(rewrap(p1[0], p2[0], dup, obj[2][:-1] + b"x", seed)))))
        results[id(t)] = steps
    assert results[id(ours)] == results[id(theirs)]


@pytest.mark.parametrize("inner", [False, True])
@pytest.mark.parametrize("direction", ["ours to libtpms", "libtpms to ours"])
def test_an_object_moves_between_the_two_tpms(swtpm: Any, direction: str, inner: bool) -> None:
    ours, theirs = started_pair(swtpm)
    source, target = (ours, theirs) if direction == "ours to libtpms" else (theirs, ours)
    src_parent = create_primary(source, template("ecc256:aes128cfb", PARENT, None))
    dst_parent = create_primary(target, template("rsa2048:aes128cfb", PARENT, None))
    attrs = SEALED + ("|encryptedduplication" if inner else "")
    obj = create_and_load(source, src_parent[0], template("keyedhash", attrs), b"moved")
    # The source TPM knows the target's parent by its public area only.
    r = ok(source.execute(command(0x167, b"\x00\x00" + tpm2b(dst_parent[1])
                                  + struct.pack(">I", RH_NULL))))
    remote = (struct.unpack(">I", r[10:14])[0], dst_parent[1], dst_parent[2])
    sym = AES128 if inner else SYM_NULL
    key_out, dup, seed = tpm2b_fields(ok(duplicate(source, obj, remote, b"", sym)), 3)
    private = out_private(ok(target.execute(import_(dst_parent[0], key_out, obj[1], dup, seed,
                                                    sym))))
    moved = load(target, dst_parent[0], private, obj[1])
    assert unseal(target, moved) == b"moved"


# ---- CreateLoaded ------------------------------------------------------------------------------
def create_loaded(parent: int, pub: bytes, sens: bytes = EMPTY_SENSITIVE) -> bytes:
    return with_pw(CC_CREATE_LOADED, struct.pack(">I", parent), sens + tpm2b(pub))


def test_create_loaded_codes_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    storage = template("ecc256:aes128cfb", PARENT, None)
    sealed = template("keyedhash", "fixedtpm|fixedparent|userwithauth|noda", None)
    script = {
        "primary under owner": create_loaded(RH_OWNER, storage),
        "primary under NULL": create_loaded(RH_NULL, storage),
        "child under a primary": create_loaded(0x80000000, sealed, sensitive_create(b"d")),
        "child without data": create_loaded(0x80000000, sealed),
        "child under a missing parent": create_loaded(0x80000002, sealed),
        "child under a signing key": create_loaded(0x80000001, sealed, sensitive_create(b"d")),
        "lockout hierarchy": create_loaded(0x4000000A, storage),
        "empty template": create_loaded(RH_OWNER, b""),
        "truncated template": create_loaded(RH_OWNER, storage[:-3]),
        "trailing octet": create_loaded(RH_OWNER, storage + b"\x00"),
        "unknown type": create_loaded(RH_OWNER, b"\x00\x99" + storage[2:]),
        "nameAlg NULL": create_loaded(RH_OWNER, storage[:2] + b"\x00\x10" + storage[4:]),
        "userAuth too long": create_loaded(
            0x80000000, sealed, tpm2b(tpm2b(b"a" * 40) + tpm2b(b"d"))),
        "fixedParent storage child with another symmetric": create_loaded(
            0x80000000, template("ecc256:aes256cfb", PARENT, None)),
        "fixedParent storage child with another nameAlg": create_loaded(
            0x80000000, template("ecc256:aes128cfb", PARENT, None)[:2] + b"\x00\x0c"
            + template("ecc256:aes128cfb", PARENT, None)[4:]),
        "duplicable storage child with another symmetric": create_loaded(
            0x80000000, template("ecc256:aes256cfb", "sensitivedataorigin|userwithauth"
                                 "|restricted|decrypt|noda", None)),
    }
    for t in (ours, theirs):
        ok(t.execute(create_primary_cmd(storage)))
        ok(t.execute(create_primary_cmd(template("ecc256:ecdsa-sha256", SIGNER, None))))
    differ = {}
    for label, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[label] = (hex(rc(a)), hex(rc(b)))
        for t, r in ((ours, a), (theirs, b)):
            if rc(r) == 0:
                flush(t, struct.unpack(">I", r[10:14])[0])
    assert differ == {}


def create_primary_cmd(pub: bytes, data: bytes = b"") -> bytes:
    return with_pw(0x131, struct.pack(">I", RH_OWNER),
                   sensitive_create(data) + tpm2b(pub) + b"\x00\x00" + bytes(4))


def test_create_loaded_primary_has_the_libtpms_shape(swtpm: Any) -> None:
    """Same template, same response layout: an empty private, the public area, the name."""
    ours, theirs = started_pair(swtpm)
    storage = template("ecc256:aes128cfb", PARENT, None)
    a, b = both(ours, theirs, create_loaded(RH_OWNER, storage))
    fields_a, fields_b = tpm2b_fields(ok(a), 3), tpm2b_fields(ok(b), 3)
    assert [len(f) for f in fields_a] == [len(f) for f in fields_b]
    assert fields_a[0] == fields_b[0] == b""


def _capability(tpm: TPM | Any, cc: int) -> int:
    r = tpm.execute(command(0x17A, struct.pack(">III", 2, cc, 1)))
    assert rc(r) == 0
    return int(struct.unpack(">I", r[19:23])[0])


@pytest.mark.parametrize("cc", [CC_DUPLICATE, CC_REWRAP, CC_IMPORT, CC_CREATE_LOADED])
def test_command_attributes_match_libtpms(swtpm: Any, cc: int) -> None:
    ours, theirs = started_pair(swtpm)
    assert _capability(ours, cc) == _capability(theirs, cc)


# ---- derived objects (CreateLoaded under a derivation parent) ----------------------------------
# A keyedHash restricted decryption key, XOR with SHA-256 and KDF1_SP800_108: a derivation
# parent. Its secret is given, so both TPMs hold the same one and must derive the same keys.
_DERIVATION_ATTRS = (1 << 16) | (1 << 17) | (1 << 6) | (1 << 10)  # restricted|decrypt|uwa|noDA
DERIVATION_PARENT = (struct.pack(">HHI", 0x0008, 0x000B, _DERIVATION_ATTRS) + b"\x00\x00"
                     + struct.pack(">HHH", 0x000A, 0x000B, 0x0022) + b"\x00\x00")
DERIVED_SIGNER = "fixedparent|userwithauth|sign|noda"


def derived_template(alg: str, attrs: str, label: bytes, context: bytes) -> bytes:
    """A template whose unique field is replaced by TPMS_DERIVE(label, context)."""
    pub = TPM2B_PUBLIC.parse(alg, objectAttributes=attrs).publicArea
    head = bytes(pub.marshal())
    # The unique field is last: for ECC two empty TPM2Bs, for keyedHash one.
    cut = 4 if alg.startswith("ecc") else 2
    return head[:-cut] + tpm2b(label) + tpm2b(context)


DERIVED = {
    "ecc signer": derived_template("ecc256:ecdsa-sha256", DERIVED_SIGNER, b"label", b"ctx"),
    "ecc signer, other context": derived_template("ecc256:ecdsa-sha256", DERIVED_SIGNER,
                                                  b"label", b"ctx2"),
    "ecc signer, empty label": derived_template("ecc256:ecdsa-sha256", DERIVED_SIGNER, b"",
                                                b"ctx"),
    "ecc p384 decrypter": derived_template("ecc384:ecdh-sha384",
                                           "fixedparent|userwithauth|decrypt|noda", b"l", b"c"),
    "ecc storage key": derived_template("ecc256:aes128cfb", "fixedparent|userwithauth"
                                        "|restricted|decrypt|noda", b"storage", b""),
    "hmac key": derived_template("hmac", DERIVED_SIGNER, b"mac", b"key"),
}
DERIVED_REFUSED = {
    "rsa": derived_template("rsa2048:rsassa-sha256", DERIVED_SIGNER, b"l", b"c"),
    "sensitiveDataOrigin": derived_template("ecc256:ecdsa-sha256",
                                            DERIVED_SIGNER + "|sensitivedataorigin", b"l", b"c"),
    "not fixedParent": derived_template("ecc256:ecdsa-sha256", "userwithauth|sign", b"l", b"c"),
    "fixedTPM": derived_template("ecc256:ecdsa-sha256", "fixedtpm|" + DERIVED_SIGNER, b"l", b"c"),
    "label of 33 octets": derived_template("ecc256:ecdsa-sha256", DERIVED_SIGNER, b"l" * 33,
                                           b"c"),
    "trailing octet": derived_template("ecc256:ecdsa-sha256", DERIVED_SIGNER, b"l", b"c")
    + b"\x00",
    "ordinary ECC unique": template("ecc256:ecdsa-sha256", DERIVED_SIGNER, None),
}


def test_derived_objects_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for t in (ours, theirs):
        r = ok(t.execute(create_primary_cmd(DERIVATION_PARENT, b"derivation secret")))
        assert struct.unpack(">I", r[10:14])[0] == 0x80000000
    publics, differ = {}, {}
    cases = [(k, create_loaded(0x80000000, v)) for k, v in DERIVED.items()]
    cases.append(("label and context from the sensitive data", create_loaded(
        0x80000000, derived_template("ecc256:ecdsa-sha256", DERIVED_SIGNER, b"", b""),
        sensitive_create(tpm2b(b"label") + tpm2b(b"ctx")))))
    cases += [(k, create_loaded(0x80000000, v)) for k, v in DERIVED_REFUSED.items()]
    cases.append(("malformed TPMS_DERIVE in the data", create_loaded(
        0x80000000, derived_template("ecc256:ecdsa-sha256", DERIVED_SIGNER, b"", b""),
        sensitive_create(b"\x00\x05ab"))))
    for label, cmd in cases:
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[label] = (hex(rc(a)), hex(rc(b)))
        elif rc(a) == 0:
            fa, fb = tpm2b_fields(a, 3), tpm2b_fields(b, 3)
            assert fa[0] == fb[0] == b"", label  # nothing to load later: derive again
            if fa[1] != fb[1]:
                differ[label] = ("public areas differ", "")
            publics[label] = fa[1]
            for t, r in ((ours, a), (theirs, b)):
                flush(t, struct.unpack(">I", r[10:14])[0])
    assert differ == {}
    assert publics["ecc signer"] == publics["label and context from the sensitive data"]
    assert publics["ecc signer"] != publics["ecc signer, other context"]
