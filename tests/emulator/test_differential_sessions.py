"""Differential tests of session start and session use against a real swtpm (libtpms):
the same raw commands must earn the same response codes. Where a session has an empty
sessionKey (unbound, unsalted) and authorizes nothing, its HMAC is the Empty Buffer, so
these sequences need no client-side cryptography and are deterministic.

Not compared, because libtpms implements more than we do: Camellia and TDES session
ciphers (accepted there, TPM_RC_SYMMETRIC here)."""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

from cryptography.hazmat.decrepit.ciphers.modes import CFB as CFBMode
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from tpm2_pytss import TPM2B_PUBLIC, TPM2B_SENSITIVE, TPMA_OBJECT

from tests.emulator.emulator_wire import command, rc
from tests.emulator.test_differential_objects import (
    ENDORSEMENT,
    SIGNER,
    both,
    create_primary,
    started_pair,
    template,
    tpm2b,
)
from tpm_emulator import TPM

NULL_H = 0x40000007
SHA1, SHA256, SHA384, SHA512 = 0x0004, 0x000B, 0x000C, 0x000D
AES, XOR, CFB = 0x0006, 0x000A, 0x0043
CONT, ENC, DEC, AUDIT = 0x01, 0x40, 0x20, 0x80
AUDIT_EXCLUSIVE, AUDIT_RESET = 0x02, 0x04
SYM_NULL = b"\x00\x10"
AES128 = struct.pack(">HHH", AES, 128, CFB)
EK_LIKE = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt"


def start(sym: bytes = SYM_NULL, nonce: bytes = b"\x11" * 16, salt: bytes = b"",
          se: int = 0, hash_alg: int = SHA256, key: int = NULL_H, bind: int = NULL_H) -> bytes:
    return command(0x176, struct.pack(">II", key, bind) + tpm2b(nonce) + tpm2b(salt)
                   + bytes([se]) + sym + struct.pack(">H", hash_alg))


def session(handle: int, attrs: int, hmac: bytes = b"", nonce: bytes = b"\x22" * 16) -> bytes:
    return struct.pack(">I", handle) + tpm2b(nonce) + bytes([attrs]) + tpm2b(hmac)


def with_sessions(cc: int, handles: bytes, params: bytes, *sessions: bytes) -> bytes:
    area = b"".join(sessions)
    return command(cc, handles + struct.pack(">I", len(area)) + area + params, 0x8002)


def get_random(*sessions: bytes) -> bytes:
    if not sessions:
        return command(0x17B, b"\x00\x08")
    return with_sessions(0x17B, b"", b"\x00\x08", *sessions)


def hash_cmd(data_field: bytes, *sessions: bytes) -> bytes:
    """TPM2_Hash with its first parameter given raw (a TPM2B, or a broken one)."""
    return with_sessions(0x17D, b"", data_field + struct.pack(">HI", SHA256, 0x40000001),
                         *sessions)


def handle_of(response: bytes) -> int:
    assert rc(response) == 0, hex(rc(response))
    return int(struct.unpack(">I", response[10:14])[0])


def compare(ours: TPM, theirs: Any, script: dict[str, bytes]) -> dict[str, tuple[str, str]]:
    differ = {}
    for name, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[name] = (hex(rc(a)), hex(rc(b)))
        for response, tpm in ((a, ours), (b, theirs)):
            if rc(response) == 0 and cmd[6:10] == b"\x00\x00\x01\x76":
                tpm.execute(command(0x165, response[10:14]))  # flush the new session
    return differ


def test_start_auth_session_checks_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    script = {
        "aes128 cfb": start(AES128),
        "aes256 cfb": start(struct.pack(">HHH", AES, 256, CFB)),
        "aes192 (not in libtpms 0.9)": start(struct.pack(">HHH", AES, 192, CFB)),
        "aes with 129 bits": start(struct.pack(">HHH", AES, 129, CFB)),
        "aes ctr": start(struct.pack(">HHH", AES, 128, 0x40)),
        "aes ecb": start(struct.pack(">HHH", AES, 128, 0x44)),
        "aes mode null": start(struct.pack(">HHH", AES, 128, 0x10)),
        "aes unknown mode": start(struct.pack(">HHH", AES, 128, 0x99)),
        "xor sha256": start(struct.pack(">HH", XOR, SHA256)),
        "xor sha1": start(struct.pack(">HH", XOR, SHA1)),
        "xor sha512": start(struct.pack(">HH", XOR, SHA512)),
        "xor null hash": start(struct.pack(">HH", XOR, 0x10)),
        "xor unknown hash": start(struct.pack(">HH", XOR, 0x99)),
        "sm4": start(struct.pack(">HHH", 0x13, 128, CFB)),
        "hmac as a cipher": start(struct.pack(">HH", 0x05, SHA256)),
        "unknown cipher": start(struct.pack(">HHH", 0x99, 128, CFB)),
        "nonce of 15": start(nonce=b"n" * 15),
        "nonce of 33 for sha256": start(nonce=b"n" * 33),
        "nonce of 20 for sha1": start(nonce=b"n" * 20, hash_alg=SHA1),
        "nonce of 21 for sha1": start(nonce=b"n" * 21, hash_alg=SHA1),
        "nonce of 48 for sha384": start(nonce=b"n" * 48, hash_alg=SHA384),
        "nonce of 49 for sha384": start(nonce=b"n" * 49, hash_alg=SHA384),
        "nonce of 64 for sha512": start(nonce=b"n" * 64, hash_alg=SHA512),
        "nonce of 65 for sha512": start(nonce=b"n" * 65, hash_alg=SHA512),
        "nonce of 49 for sha512": start(nonce=b"n" * 49, hash_alg=SHA512),
        "trial session": start(se=3),
        "session type 2": start(se=2),
        "unknown authHash": start(hash_alg=0x99),
        "salt without tpmKey": start(salt=b"x"),
        "tpmKey not loaded": start(key=0x80000000),
        "tpmKey a hierarchy": start(key=0x40000001),
        "bind TPM_RS_PW": start(bind=0x40000009),
        "bind owner": start(bind=0x40000001),
        "bind lockout": start(bind=0x4000000A),
        "bind a PCR": start(bind=0),
        "bind a missing object": start(bind=0x80000000),
    }
    assert compare(ours, theirs, script) == {}


def test_salt_key_checks_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    ecc_point = tpm2b(b"\x01" * 32) + tpm2b(b"\x02" * 32)  # not on P-256
    keys = [
        create_primary(template("ecc256:aes128cfb", EK_LIKE), hierarchy=ENDORSEMENT),
        create_primary(template("ecc256:ecdsa-sha256", SIGNER)),
        create_primary(template("aes128cfb", "fixedtpm|fixedparent|sensitivedataorigin"
                                             "|userwithauth|decrypt|sign")),
    ]
    for tpm in (ours, theirs):
        for i, cmd in enumerate(keys):
            assert handle_of(tpm.execute(cmd)) == 0x80000000 + i
    ek, signer, symcipher = 0x80000000, 0x80000001, 0x80000002
    script = {
        "no salt": start(key=ek),
        "salt that is not a point": start(key=ek, salt=b"garbage"),
        "point not on the curve": start(key=ek, salt=ecc_point),
        "point with a trailing octet": start(key=ek, salt=ecc_point + b"\x00"),
        "signing key": start(key=signer, salt=ecc_point),
        "signing key without salt": start(key=signer),
        "symmetric key": start(key=symcipher, salt=b"\x00\x10" + b"s" * 16),
        "bind to the ek": start(bind=ek),
        "bind to the ek with a bad salt too": start(key=ek, bind=ek, salt=b"\x00"),
    }
    assert compare(ours, theirs, script) == {}
    # An object loaded with its public part only: no salt can be decrypted with it, and
    # no session can be bound to it.
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    public = template("ecc256:null:null", "decrypt|userwithauth")[:-4] + tpm2b(
        point.x.to_bytes(32, "big")) + tpm2b(point.y.to_bytes(32, "big"))
    public_only = command(0x167, b"\x00\x00" + tpm2b(public) + struct.pack(">I", NULL_H))
    for tpm in (ours, theirs):
        tpm.execute(command(0x165, struct.pack(">I", signer)))
        assert handle_of(tpm.execute(public_only)) == signer
    assert compare(ours, theirs, {
        "public-only tpmKey": start(key=signer, salt=ecc_point),
        "public-only bind": start(bind=signer),
    }) == {}


def _start_all(ours: TPM, theirs: Any, **kinds: bytes) -> dict[str, int]:
    handles = {}
    for name, cmd in kinds.items():
        a, b = both(ours, theirs, cmd)
        assert handle_of(a) == handle_of(b)
        handles[name] = handle_of(a)
    return handles


def _flush_all(ours: TPM, theirs: Any, handles: dict[str, int]) -> None:
    for h in handles.values():
        for tpm in (ours, theirs):
            tpm.execute(command(0x165, struct.pack(">I", h)))


def test_session_use_checks_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    h = _start_all(ours, theirs, plain=start(), aes=start(AES128),
                   xor=start(struct.pack(">HH", XOR, SHA1)))
    plain, aes, xor = h["plain"], h["aes"], h["xor"]
    script = {
        "encrypt with symmetric NULL": get_random(session(plain, CONT | ENC)),
        "decrypt on a command without a TPM2B parameter": get_random(session(aes, CONT | DEC)),
        "a session with no role": get_random(session(plain, CONT)),
        "two encrypt sessions": get_random(session(aes, CONT | ENC), session(xor, CONT | ENC)),
        "the same session twice": get_random(session(aes, CONT | ENC), session(aes, CONT)),
        "two audit sessions": get_random(session(plain, CONT | AUDIT),
                                         session(aes, CONT | AUDIT)),
        "policy handle for an hmac session": get_random(
            session(plain + 0x01000000, CONT | AUDIT)),
        "a wrong HMAC on an encrypt session": get_random(session(aes, CONT | ENC, b"h" * 32)),
        "encrypt by a password": with_sessions(
            0x13C, struct.pack(">I", 16), tpm2b(b"event"),
            struct.pack(">IHBH", 0x40000009, 0, CONT | ENC, 0)),
        "a password beside a password-less command": get_random(
            struct.pack(">IHBH", 0x40000009, 0, CONT, 0)),
        "decrypt: no room for the size": hash_cmd(b"\x00", session(aes, CONT | DEC)),
        "decrypt: size past the parameters": hash_cmd(b"\x01\x00abc", session(xor, CONT | DEC)),
        "decrypt and encrypt, aes": hash_cmd(tpm2b(b"data"), session(aes, CONT | DEC | ENC)),
        "decrypt and encrypt, xor": hash_cmd(tpm2b(b"data"), session(xor, CONT | DEC | ENC)),
        "encrypt in the second session": hash_cmd(
            tpm2b(b"data"), session(aes, CONT | DEC), session(xor, CONT | ENC)),
        "audit and flush": get_random(session(plain, AUDIT)),
    }
    assert compare(ours, theirs, script) == {}
    _flush_all(ours, theirs, {"aes": aes, "xor": xor})
    h = _start_all(ours, theirs, policy=start(se=1), trial=start(se=3))
    assert compare(ours, theirs, {
        "audit by a policy session": get_random(session(h["policy"], CONT | AUDIT)),
        "audit by a trial session": get_random(session(h["trial"], CONT | AUDIT)),
        "encrypt by a trial session": get_random(session(h["trial"], CONT | ENC)),
        "trial session with no role": get_random(session(h["trial"], CONT)),
    }) == {}


def _response_attrs(response: bytes) -> int:
    (size,) = struct.unpack_from(">I", response, 10)
    at = 14 + size
    (nonce,) = struct.unpack_from(">H", response, at)
    return response[at + 2 + nonce]


def test_audit_exclusivity_matches_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    a, b = both(ours, theirs, start())
    s = handle_of(a)
    assert s == handle_of(b)
    other_a, other_b = both(ours, theirs, start())
    other = handle_of(other_a)
    assert other == handle_of(other_b)
    steps = [
        ("first audit", get_random(session(s, CONT | AUDIT))),
        ("still exclusive", get_random(session(s, CONT | AUDIT | AUDIT_EXCLUSIVE))),
        ("a command without sessions", get_random()),
        ("no longer exclusive", get_random(session(s, CONT | AUDIT))),
        ("insisting on exclusivity", get_random(session(s, CONT | AUDIT | AUDIT_EXCLUSIVE))),
        ("reset", get_random(session(s, CONT | AUDIT | AUDIT_RESET | AUDIT_EXCLUSIVE))),
        ("another session audits", get_random(session(other, CONT | AUDIT))),
        ("the first again", get_random(session(s, CONT | AUDIT))),
        ("flush of the exclusive one", command(0x165, struct.pack(">I", s))),
    ]
    for name, cmd in steps:
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b), (name, hex(rc(a)), hex(rc(b)))
        if rc(a) == 0 and a[:2] == b"\x80\x02":
            assert _response_attrs(a) == _response_attrs(b), name
            assert len(a) == len(b), name  # nonceTPM as long as nonceCaller, on both


# ---- the arithmetic, checked against libtpms with a client written here ------------------
def _kdfa(key: bytes, label: bytes, u: bytes, v: bytes, bits: int) -> bytes:
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += hmac.new(key, struct.pack(">I", counter) + label + b"\x00" + u + v
                        + struct.pack(">I", bits), "sha256").digest()
        counter += 1
    return out[: bits // 8]


def _tpm2b_at(buf: bytes, at: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">H", buf, at)
    return buf[at + 2: at + 2 + n], at + 2 + n


def _unseal_over_bound_encrypting_session(tpm: Any) -> bytes:
    """Seal under an ECC parent with userAuth "pw", bind an AES-CFB session to the sealed
    object and unseal through it with ``encrypt``. Part 1, 21.1: the response key is
    sessionKey || authValue even though the session is bound to that very object (its
    HMAC key leaves the authValue out). Returns what the client decrypts."""
    parent = create_primary(template("ecc256:aes128cfb", EK_LIKE + "|noda"))
    assert handle_of(tpm.execute(parent)) == 0x80000000
    sealed_pub = template("keyedhash", "fixedtpm|fixedparent|userwithauth|noda")
    sens = tpm2b(tpm2b(b"pw") + tpm2b(b"bound secret"))
    created = tpm.execute(with_sessions(0x153, struct.pack(">I", 0x80000000),
                                        sens + tpm2b(sealed_pub) + b"\x00\x00" + bytes(4),
                                        struct.pack(">IHBH", 0x40000009, 0, CONT, 0)))
    assert rc(created) == 0, hex(rc(created))
    private, at = _tpm2b_at(created, 14)
    public, _ = _tpm2b_at(created, at)
    loaded = tpm.execute(with_sessions(0x157, struct.pack(">I", 0x80000000),
                                       tpm2b(private) + tpm2b(public),
                                       struct.pack(">IHBH", 0x40000009, 0, CONT, 0)))
    item = handle_of(loaded)
    name, _ = _tpm2b_at(loaded, 18)
    caller = bytes(range(32))
    started = tpm.execute(start(AES128, nonce=caller, bind=item))
    handle = handle_of(started)
    nonce_tpm, _ = _tpm2b_at(started, 14)
    session_key = _kdfa(b"pw", b"ATH", nonce_tpm, caller, 256)
    caller2 = bytes(range(100, 132))
    attrs = CONT | ENC
    cp = hashlib.sha256(struct.pack(">I", 0x15E) + name).digest()
    mac = hmac.new(session_key, cp + caller2 + nonce_tpm + bytes([attrs]), "sha256").digest()
    r = tpm.execute(with_sessions(0x15E, struct.pack(">I", item), b"",
                                  session(handle, attrs, mac, caller2)))
    assert rc(r) == 0, hex(rc(r))
    (size,) = struct.unpack_from(">I", r, 10)
    params = r[14: 14 + size]
    new_nonce, at = _tpm2b_at(r, 14 + size)
    rmac, _ = _tpm2b_at(r, at + 1)
    rp = hashlib.sha256(struct.pack(">II", 0, 0x15E) + params).digest()
    assert rmac == hmac.new(session_key, rp + new_nonce + caller2 + bytes([r[at]]),
                            "sha256").digest()
    material = _kdfa(session_key + b"pw", b"CFB", new_nonce, caller2, 256)
    dec = Cipher(algorithms.AES(material[:16]), CFBMode(material[16:])).decryptor()
    secret, _ = _tpm2b_at(params, 0)
    return dec.update(secret) + dec.finalize()


def test_bound_session_encryption_key_matches_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    assert _unseal_over_bound_encrypting_session(theirs) == b"bound secret"
    assert _unseal_over_bound_encrypting_session(ours) == b"bound secret"


def _rsa_key_command(pem: bytes, scheme: int, scheme_hash: int) -> bytes:
    public = TPM2B_PUBLIC.from_pem(pem, objectAttributes=TPMA_OBJECT.DECRYPT
                                   | TPMA_OBJECT.USERWITHAUTH)
    public.publicArea.parameters.rsaDetail.scheme.scheme = scheme
    public.publicArea.parameters.rsaDetail.scheme.details.anySig.hashAlg = scheme_hash
    return command(0x167, bytes(TPM2B_SENSITIVE.from_pem(pem).marshal())
                   + bytes(public.marshal()) + struct.pack(">I", NULL_H))


def test_rsa_salts_match_libtpms(swtpm: Any) -> None:
    """RSA salts are OAEP with the label "SECRET": with nameAlg's hash when the key has
    no scheme, with the scheme's hash when it is OAEP. (An RSAES key, which cannot take
    a salt, is not compared: our TPM2B_PUBLIC reader refuses RSAES without a hash.)"""
    ours, theirs = started_pair(swtpm)
    key = rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    keys = {"no scheme": (0x10, 0), "oaep-sha1": (0x17, SHA1)}
    for tpm in (ours, theirs):
        for i, (scheme, h) in enumerate(keys.values()):
            assert handle_of(tpm.execute(_rsa_key_command(pem, scheme, h))) == 0x80000000 + i

    def oaep(h: Any, salt: bytes) -> bytes:
        return key.public_key().encrypt(salt, padding.OAEP(padding.MGF1(h), h, b"SECRET\x00"))

    seed = bytes(range(32))
    script = {
        "nameAlg OAEP, no scheme": start(key=0x80000000, salt=oaep(hashes.SHA256(), seed)),
        "sha1 OAEP, no scheme": start(key=0x80000000, salt=oaep(hashes.SHA1(), seed)),
        "seed longer than nameAlg": start(key=0x80000000,
                                          salt=oaep(hashes.SHA256(), seed + b"x")),
        "sha1 OAEP, OAEP-sha1 scheme": start(key=0x80000001,
                                             salt=oaep(hashes.SHA1(), seed[:20])),
        "sha256 OAEP, OAEP-sha1 scheme": start(key=0x80000001,
                                               salt=oaep(hashes.SHA256(), seed)),
        "sha1 seed longer than SHA-1": start(key=0x80000001, salt=oaep(hashes.SHA1(), seed)),
        "wrong label": start(key=0x80000000, salt=key.public_key().encrypt(
            seed, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"OTHER\x00"))),
        "garbage": start(key=0x80000000, salt=b"\x01" * 256),
    }
    assert compare(ours, theirs, script) == {}
