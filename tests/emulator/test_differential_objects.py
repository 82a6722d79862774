"""Differential tests of the object commands against a real swtpm (libtpms): the same
templates and the same misuse must earn the same response codes; TPM_CAP_COMMANDS and
the handle-count properties must match. Key bytes differ (other seeds) and are not
compared."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from tpm2_pytss import TPM2B_PUBLIC

from tests.emulator.emulator_wire import command, get_capability, rc, with_pw
from tpm_emulator import TPM

OWNER, ENDORSEMENT, PLATFORM, NULL_H = 0x40000001, 0x4000000B, 0x4000000C, 0x40000007
PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
SIGNER = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"
RESTRICTED_SIGNER = SIGNER + "|restricted"
DECRYPTER = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt"
EMPTY_SENSITIVE = b"\x00\x04\x00\x00\x00\x00"


def template(alg: str, attrs: str = PARENT) -> bytes:
    return bytes(TPM2B_PUBLIC.parse(alg, objectAttributes=attrs).publicArea.marshal())


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def create_primary(pub: bytes, sens: bytes = EMPTY_SENSITIVE, hierarchy: int = OWNER) -> bytes:
    return with_pw(0x131, struct.pack(">I", hierarchy),
                   sens + tpm2b(pub) + b"\x00\x00" + b"\x00\x00\x00\x00")


def create(parent: int, pub: bytes, sens: bytes = EMPTY_SENSITIVE) -> bytes:
    return with_pw(0x153, struct.pack(">I", parent),
                   sens + tpm2b(pub) + b"\x00\x00" + b"\x00\x00\x00\x00")


def flush(handle: int) -> bytes:
    return command(0x165, struct.pack(">I", handle))


BASE = template("ecc256:aes128cfb")
RSA = template("rsa2048:aes128cfb")


def _attrs(pub: bytes, set_bits: int) -> bytes:
    (a,) = struct.unpack(">I", pub[4:8])
    return pub[:4] + struct.pack(">I", a | set_bits) + pub[8:]


TEMPLATES: dict[str, bytes] = {
    "ecc storage parent": BASE,
    "rsa storage parent": RSA,
    "sign+decrypt with a symmetric": template(
        "ecc256:aes128cfb", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt|sign"),
    "restricted signer without scheme": template("ecc256:null:null", RESTRICTED_SIGNER),
    "restricted ecdsa signer": template(
        "ecc256:ecdsa-sha256:null", RESTRICTED_SIGNER),
    "p384 signer": template("ecc384:ecdsa-sha384:null", SIGNER),
    "p521 parent": BASE.replace(b"\x00\x03\x00\x10\x00\x00", b"\x00\x05\x00\x10\x00\x00"),
    "parent without symmetric": template("ecc256:null:null"),
    "parent in OFB mode": template("ecc256:aes128ofb"),
    "fixedTPM without fixedParent": template(
        "ecc256:aes128cfb", "fixedtpm|sensitivedataorigin|userwithauth|restricted|decrypt"),
    "asymmetric without sensitiveDataOrigin": template(
        "ecc256:aes128cfb", "fixedtpm|fixedparent|userwithauth|restricted|decrypt"),
    "restricted sign and decrypt": template("ecc256:aes128cfb", PARENT + "|sign"),
    "asymmetric neither sign nor decrypt": template(
        "ecc256:null:null", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth"),
    "sealed data from the TPM": template(
        "keyedhash", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth"),
    "hmac key": template("hmac", SIGNER),
    "symcipher": template(
        "aes128cfb", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt|sign"),
    "rsa1024 signer": template("rsa1024:rsassa-sha256:null", SIGNER),
    "rsa oaep decrypter": template("rsa2048:oaep-sha256:null", DECRYPTER),
    "encryptedDuplication with fixedTPM": template("ecc256:aes128cfb",
                                                   PARENT + "|encryptedduplication"),
    "unknown type": b"\x00\x99" + BASE[2:],
    "nameAlg NULL": BASE[:2] + b"\x00\x10" + BASE[4:],
    "reserved attribute bit 0": _attrs(BASE, 1),
    "x509sign bit": _attrs(BASE, 1 << 19),
    "reserved attribute bit 31": _attrs(BASE, 1 << 31),
    "authPolicy of the wrong size": BASE[:8] + b"\x00\x05abcde" + BASE[10:],
    "truncated public area": BASE[:-3],
    "trailing octet": BASE + b"\x00",
    "unknown curve": BASE.replace(b"\x00\x03\x00\x10\x00\x00", b"\x00\x77\x00\x10\x00\x00"),
    "unknown symmetric": BASE.replace(b"\x00\x06\x00\x80\x00\x43", b"\x00\x07\x00\x80\x00\x43"),
    "AES with 129 bits": BASE.replace(b"\x00\x06\x00\x80\x00\x43", b"\x00\x06\x00\x81\x00\x43"),
    "parent in ECB mode": BASE.replace(b"\x00\x06\x00\x80\x00\x43", b"\x00\x06\x00\x80\x00\x44"),
    "parent with mode NULL": BASE.replace(b"\x00\x06\x00\x80\x00\x43",
                                          b"\x00\x06\x00\x80\x00\x10"),
    "ecc with a KDF": BASE.replace(b"\x00\x03\x00\x10\x00\x00",
                                   b"\x00\x03\x00\x20\x00\x0b\x00\x00"),
    "ecc scheme HMAC": BASE.replace(b"\x00\x43\x00\x10\x00\x03",
                                    b"\x00\x43\x00\x05\x00\x0b\x00\x03"),
    "ecc scheme with unknown hash": BASE.replace(b"\x00\x43\x00\x10\x00\x03",
                                                 b"\x00\x43\x00\x18\x00\x99\x00\x03"),
    "ecc unique of 80 octets": BASE[:-4] + b"\x00\x50" + b"\x00" * 0x50 + b"\x00\x00",
    "ecc unique of 81 octets": BASE[:-4] + b"\x00\x51" + b"\x00" * 0x51 + b"\x00\x00",
    "rsa 1000 bits": RSA.replace(b"\x08\x00\x00\x00\x00\x00", b"\x03\xe8\x00\x00\x00\x00"),
    "rsa 4096 bits": RSA.replace(b"\x08\x00\x00\x00\x00\x00", b"\x10\x00\x00\x00\x00\x00"),
    "rsa exponent 3": RSA.replace(b"\x08\x00\x00\x00\x00\x00", b"\x08\x00\x00\x00\x00\x03"),
    "rsa even exponent": RSA.replace(b"\x08\x00\x00\x00\x00\x00", b"\x08\x00\x00\x01\x00\x00"),
    "rsa parent with ECDSA": RSA.replace(b"\x00\x43\x00\x10\x08\x00",
                                         b"\x00\x43\x00\x18\x00\x0b\x08\x00"),
}

SEALED = template("keyedhash", "fixedtpm|fixedparent|userwithauth")
SENSITIVE_CASES: dict[str, tuple[bytes, bytes]] = {
    "sealed data": (SEALED, b"\x00\x08\x00\x00\x00\x04data"),
    "sealed nothing": (SEALED, EMPTY_SENSITIVE),
    "userAuth longer than nameAlg": (SEALED, b"\x00\x2a\x00\x22" + b"a" * 34 + b"\x00\x04data"),
    "data for an asymmetric key": (BASE, b"\x00\x08\x00\x00\x00\x04data"),
    "empty TPM2B_SENSITIVE_CREATE": (BASE, b"\x00\x00"),
    "AES key of the wrong size": (
        template("aes128cfb", "fixedtpm|fixedparent|userwithauth|decrypt"),
        b"\x00\x08\x00\x00\x00\x04data"),
}


def started_pair(swtpm: Any) -> tuple[TPM, Any]:
    ours = TPM()
    start = command(0x144, b"\x00\x00")
    assert rc(ours.execute(start)) == rc(swtpm.execute(start)) == 0
    return ours, swtpm


TPM_RC_RETRY = 0x922


def both(ours: TPM, theirs: Any, cmd: bytes) -> tuple[bytes, bytes]:
    """One command to each TPM. libtpms answers TPM_RC_RETRY to some commands the first
    time (a TSS resends them, as we do here); we never do."""
    mine, other = ours.execute(cmd), theirs.execute(cmd)
    for _ in range(3):
        if rc(other) != TPM_RC_RETRY:
            break
        other = theirs.execute(cmd)
    return mine, other


def test_create_primary_template_checks_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    cases = [(n, create_primary(t)) for n, t in TEMPLATES.items()]
    cases += [(n, create_primary(t, s)) for n, (t, s) in SENSITIVE_CASES.items()]
    differ = {}
    for name, cmd in cases:
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[name] = (hex(rc(a)), hex(rc(b)))
        for tpm in (ours, theirs):
            tpm.execute(flush(0x80000000))
    assert differ == {}


def _handle(response: bytes) -> int:
    assert rc(response) == 0, hex(rc(response))
    return int(struct.unpack(">I", response[10:14])[0])


def test_create_load_and_unseal_misuse_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for tpm in (ours, theirs):
        assert _handle(tpm.execute(create_primary(BASE))) == 0x80000000
        assert _handle(tpm.execute(create_primary(template("ecc256:ecdsa-sha256", SIGNER)))) \
            == 0x80000001
    script = {
        "Create under a signing key": create(0x80000001, SEALED, b"\x00\x08\x00\x00\x00\x04data"),
        "Create under a missing parent": create(0x80000002, SEALED),
        "Create with sensitiveDataOrigin and data": create(
            0x80000000, template("keyedhash", "fixedtpm|fixedparent|sensitivedataorigin"),
            b"\x00\x08\x00\x00\x00\x04data"),
        "Create a fixedTPM child without fixedParent": create(
            0x80000000, template("ecc256:null:null", "fixedtpm|sensitivedataorigin|sign")),
        "ReadPublic of an empty slot": command(0x173, struct.pack(">I", 0x80000002)),
        "ReadPublic of a missing persistent": command(0x173, struct.pack(">I", 0x81000005)),
        "Unseal a key": with_pw(0x15E, struct.pack(">I", 0x80000001), b""),
        "Load under a signing key": with_pw(0x157, struct.pack(">I", 0x80000001),
                                           tpm2b(b"\x00\x20" + bytes(40)) + tpm2b(SEALED)),
        "Load a private of garbage": with_pw(0x157, struct.pack(">I", 0x80000000),
                                             tpm2b(b"\x00\x20" + bytes(40)) + tpm2b(SEALED)),
        "Load an empty private": with_pw(0x157, struct.pack(">I", 0x80000000),
                                         b"\x00\x00" + tpm2b(SEALED)),
        "EvictControl into the platform range": with_pw(
            0x120, struct.pack(">II", OWNER, 0x80000000), struct.pack(">I", 0x81800000)),
        "EvictControl to a transient handle": with_pw(
            0x120, struct.pack(">II", OWNER, 0x80000000), struct.pack(">I", 0x80000003)),
        "EvictControl by the platform": with_pw(
            0x120, struct.pack(">II", PLATFORM, 0x80000000), struct.pack(">I", 0x81800000)),
        "LoadExternal with sensitive outside NULL": command(
            0x167, tpm2b(b"\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00") + tpm2b(SEALED)
            + struct.pack(">I", OWNER)),
        "FlushContext of a persistent handle": flush(0x81000000),
        "FlushContext of an empty slot": flush(0x80000002),
    }
    differ = {}
    for name, cmd in script.items():
        a, b = both(ours, theirs, cmd)
        if rc(a) != rc(b):
            differ[name] = (hex(rc(a)), hex(rc(b)))
    assert differ == {}


def test_persistence_codes_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for tpm in (ours, theirs):
        assert _handle(tpm.execute(create_primary(BASE))) == 0x80000000
    evict = with_pw(0x120, struct.pack(">II", OWNER, 0x80000000), struct.pack(">I", 0x81000001))
    steps = [
        evict,
        evict,  # the persistent handle is taken
        command(0x173, struct.pack(">I", 0x81000001)),
        with_pw(0x120, struct.pack(">II", OWNER, 0x81000001), struct.pack(">I", 0x81000002)),
        with_pw(0x120, struct.pack(">II", OWNER, 0x81000001), struct.pack(">I", 0x81000001)),
        command(0x173, struct.pack(">I", 0x81000001)),
    ]
    for i, cmd in enumerate(steps):
        a, b = both(ours, theirs, cmd)
        assert rc(a) == rc(b), (i, hex(rc(a)), hex(rc(b)))


def _capability(tpm: Any, cap: int, prop: int, count: int) -> list[tuple[int, int]]:
    r = tpm.execute(get_capability(cap, prop, count))
    assert rc(r) == 0
    (n,) = struct.unpack(">I", r[15:19])
    width = 8 if cap == 6 else 4
    out = []
    for i in range(n):
        chunk = r[19 + width * i: 19 + width * (i + 1)]
        if width == 8:
            out.append(struct.unpack(">II", chunk))
        else:
            out.append((struct.unpack(">I", chunk)[0], 0))
    return out


OBJECT_CCS = (0x120, 0x131, 0x150, 0x153, 0x157, 0x15E, 0x161, 0x162, 0x165, 0x167, 0x173)


@pytest.mark.parametrize("cc", OBJECT_CCS)
def test_command_attributes_match_libtpms(swtpm: Any, cc: int) -> None:
    ours, theirs = started_pair(swtpm)
    assert _capability(ours, 2, cc, 1)[0] == _capability(theirs, 2, cc, 1)[0]


def test_object_handle_properties_match_libtpms(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)
    for tpm in (ours, theirs):
        _handle(tpm.execute(create_primary(BASE)))
    for prop in (0x10E, 0x10F, 0x207, 0x208):  # HR_TRANSIENT_MIN/PERSISTENT_MIN, counts
        assert _capability(ours, 6, prop, 1)[0] == _capability(theirs, 6, prop, 1)[0]
    assert _capability(ours, 1, 0x80000000, 10) == _capability(theirs, 1, 0x80000000, 10)


def test_listed_algorithms_have_libtpms_properties(swtpm: Any) -> None:
    ours, theirs = started_pair(swtpm)

    def algs(tpm: Any) -> dict[int, int]:
        r = tpm.execute(get_capability(0, 0, 127))
        (n,) = struct.unpack(">I", r[15:19])
        return dict(struct.unpack(">HI", r[19 + 6 * i: 25 + 6 * i]) for i in range(n))

    mine, libtpms = algs(ours), algs(theirs)
    assert {a: libtpms.get(a) for a in mine} == mine
