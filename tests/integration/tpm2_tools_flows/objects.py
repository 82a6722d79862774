"""Keys and their commands: primaries, hash/HMAC, symmetric and RSA encryption,
signatures, ECDH, import and duplication."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from .runner import (
    RC_P2,
    SEAL_ATTRIBUTES,
    SIGN_ATTRIBUTES,
    TPM_RC_SIGNATURE,
    public_key,
    tools_for,
)


def primary_keys(tcti: str, work: Path) -> None:
    """The tools' default primary (RSA-2048 storage key) and an ECC one: the same
    template gives the same key every time (derived from the hierarchy seed), a
    different unique field another key; a secret sealed under the RSA primary
    unseals after the primary is made again."""
    tools = tools_for(tcti, work)
    secret = os.urandom(16)
    for alg in ("rsa", "ecc"):
        for attempt in ("a", "b"):
            tools("tpm2_createprimary", "-C", "o", "-G", alg, "-c", f"{alg}{attempt}.ctx",
                  "-o", f"{alg}{attempt}.pem")
        assert tools.read(f"{alg}a.pem") == tools.read(f"{alg}b.pem"), alg
        # TPMU_PUBLIC_ID as the tools read it (host byte order): TPM2B_PUBLIC_KEY_RSA,
        # or a TPMS_ECC_POINT (x, y).
        unique = struct.pack("<H", 11) + b"another key"
        tools.write("unique.bin", unique if alg == "rsa" else unique + struct.pack("<H", 0))
        tools("tpm2_createprimary", "-C", "o", "-G", alg, "-u", "unique.bin",
              "-c", f"{alg}u.ctx", "-o", f"{alg}u.pem")
        assert tools.read(f"{alg}u.pem") != tools.read(f"{alg}a.pem"), alg
    tools("tpm2_create", "-C", "rsaa.ctx", "-a", SEAL_ATTRIBUTES, "-i",
          tools.write("secret.bin", secret), "-u", "sealed.pub", "-r", "sealed.priv")
    tools("tpm2_load", "-C", "rsab.ctx", "-u", "sealed.pub", "-r", "sealed.priv",
          "-c", "sealed.ctx")
    tools("tpm2_unseal", "-c", "sealed.ctx", "-o", "out.bin")
    assert tools.read("out.bin") == secret


def hash_and_hmac(tcti: str, work: Path) -> None:
    """TPM2_Hash matches hashlib; an imported HMAC key gives the HMAC Python computes."""
    tools = tools_for(tcti, work)
    data = os.urandom(300)
    tools.write("data.bin", data)
    out = tools("tpm2_hash", "-C", "o", "-g", "sha256", "--hex", "-t", "ticket.bin", "data.bin")
    assert out.strip().lower() == hashlib.sha256(data).hexdigest()
    out = tools("tpm2_hash", "-C", "o", "-g", "sha384", "--hex", "data.bin")
    assert out.strip().lower() == hashlib.sha384(data).hexdigest()

    key = os.urandom(32)
    primary = tools.primary()
    tools("tpm2_import", "-C", primary, "-G", "hmac", "-g", "sha256",
          "-i", tools.write("hmac.key", key), "-u", "hmac.pub", "-r", "hmac.priv")
    tools("tpm2_load", "-C", primary, "-u", "hmac.pub", "-r", "hmac.priv", "-c", "hmac.ctx")
    out = tools("tpm2_hmac", "-c", "hmac.ctx", "-g", "sha256", "--hex", "data.bin")
    assert out.strip().lower() == hmac.new(key, data, hashlib.sha256).hexdigest()
    # A generated HMAC key gives a stable answer.
    generated = tools.loaded(primary, "gen", "-G", "hmac")
    a = tools("tpm2_hmac", "-c", generated, "--hex", "data.bin")
    b = tools("tpm2_hmac", "-c", generated, "--hex", "data.bin")
    assert a == b and len(a.strip()) == 64


def encrypt_decrypt(tcti: str, work: Path) -> None:
    """AES-128-CFB: a generated key round-trips; an imported key (mode TPM_ALG_NULL in
    its public area, so the command picks CFB) matches `cryptography`."""
    tools = tools_for(tcti, work)
    key, iv, plain = os.urandom(16), os.urandom(16), os.urandom(100)
    tools.write("iv.bin", iv)
    tools.write("plain.bin", plain)
    primary = tools.primary()

    generated = tools.loaded(primary, "gen", "-G", "aes128cfb")
    tools("tpm2_encryptdecrypt", "-c", generated, "-t", "iv.bin", "-o", "g.ct", "plain.bin")
    assert tools.read("g.ct") != plain
    tools("tpm2_encryptdecrypt", "-d", "-c", generated, "-t", "iv.bin", "-o", "g.pt", "g.ct")
    assert tools.read("g.pt") == plain

    tools("tpm2_import", "-C", primary, "-G", "aes", "-i", tools.write("aes.key", key),
          "-u", "aes.pub", "-r", "aes.priv")
    tools("tpm2_load", "-C", primary, "-u", "aes.pub", "-r", "aes.priv", "-c", "aes.ctx")
    tools("tpm2_encryptdecrypt", "-c", "aes.ctx", "-G", "cfb", "-t", "iv.bin", "-o", "ct.bin",
          "plain.bin")
    encryptor = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    assert tools.read("ct.bin") == encryptor.update(plain) + encryptor.finalize()
    tools("tpm2_encryptdecrypt", "-d", "-c", "aes.ctx", "-G", "cfb", "-t", "iv.bin",
          "-o", "back.bin", "ct.bin")
    assert tools.read("back.bin") == plain


def rsa_encrypt_decrypt(tcti: str, work: Path) -> None:
    """An RSA-2048 key decrypts what the TPM and `cryptography` encrypt (RSAES-PKCS1 and
    OAEP-SHA256)."""
    tools = tools_for(tcti, work)
    primary = tools.primary()
    key = tools.loaded(primary, "rsa", "-G", "rsa2048",
                       "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt")
    public = public_key(tools.pem_public(key, "rsa.pem"))
    assert isinstance(public, rsa.RSAPublicKey)
    message = tools.write("msg.bin", b"for the RSA key only")

    tools("tpm2_rsaencrypt", "-c", key, "-s", "oaep", "-o", "tpm.ct", message)
    tools("tpm2_rsadecrypt", "-c", key, "-s", "oaep", "-o", "tpm.pt", "tpm.ct")
    assert tools.read("tpm.pt") == b"for the RSA key only"

    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    tools.write("oaep.ct", public.encrypt(b"oaep from python", oaep))
    tools("tpm2_rsadecrypt", "-c", key, "-s", "oaep", "-o", "oaep.pt", "oaep.ct")
    assert tools.read("oaep.pt") == b"oaep from python"

    tools.write("pkcs1.ct", public.encrypt(b"pkcs1 from python", padding.PKCS1v15()))
    tools("tpm2_rsadecrypt", "-c", key, "-s", "rsaes", "-o", "pkcs1.pt", "pkcs1.ct")
    assert tools.read("pkcs1.pt") == b"pkcs1 from python"


def sign_verify(tcti: str, work: Path) -> None:
    """ECDSA and RSASSA signatures verify in `cryptography` and on the TPM
    (tpm2_verifysignature), and a different message is refused by the TPM."""
    tools = tools_for(tcti, work)
    primary = tools.primary()
    message = tools.write("msg.bin", b"a message to sign")
    tools.write("other.bin", b"another message")
    for alg in ("ecc", "rsa2048"):
        key = tools.loaded(primary, alg, "-G", alg, "-a", SIGN_ATTRIBUTES)
        public = public_key(tools.pem_public(key, f"{alg}.pem"))
        tools("tpm2_sign", "-c", key, "-g", "sha256", "-f", "plain", "-o", f"{alg}.plain",
              message)
        signature = tools.read(f"{alg}.plain")
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, b"a message to sign", ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(signature, b"a message to sign", padding.PKCS1v15(), hashes.SHA256())
        tools("tpm2_sign", "-c", key, "-g", "sha256", "-o", f"{alg}.sig", message)
        tools("tpm2_verifysignature", "-c", key, "-g", "sha256", "-m", message,
              "-s", f"{alg}.sig", "-t", f"{alg}.ticket")
        tools.expect_rc(TPM_RC_SIGNATURE + RC_P2, "tpm2_verifysignature", "-c", key,
                        "-g", "sha256", "-m", "other.bin", "-s", f"{alg}.sig")


def ecdh(tcti: str, work: Path) -> None:
    """ECDH_KeyGen and ECDH_ZGen agree with each other, and ZGen agrees with
    `cryptography` for a point made in Python."""
    tools = tools_for(tcti, work)
    primary = tools.primary()
    key = tools.loaded(primary, "dh", "-G", "ecc256:ecdh-sha256",
                       "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt|noda")
    tools("tpm2_ecdhkeygen", "-c", key, "-u", "ephemeral.point", "-o", "z1.point")
    tools("tpm2_ecdhzgen", "-c", key, "-u", "ephemeral.point", "-o", "z2.point")
    assert tools.read("z1.point") == tools.read("z2.point")

    tpm_public = public_key(tools.pem_public(key, "dh.pem"))
    assert isinstance(tpm_public, ec.EllipticCurvePublicKey)
    mine = ec.generate_private_key(ec.SECP256R1())
    numbers = mine.public_key().public_numbers()
    x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
    point = struct.pack(">H", 32) + x + struct.pack(">H", 32) + y
    tools.write("mine.point", struct.pack(">H", len(point)) + point)
    tools("tpm2_ecdhzgen", "-c", key, "-u", "mine.point", "-o", "z3.point")
    z = tools.read("z3.point")
    shared = mine.exchange(ec.ECDH(), tpm_public)
    assert z[2:][:2] == struct.pack(">H", 32) and z[4:36] == shared


def duplicate_import(tcti: str, work: Path) -> None:
    """A key whose policy allows TPM2_Duplicate is duplicated to a new parent (known
    by its public part only) twice — with only the outer wrapper, and with an AES-128
    inner wrapper the TPM generates — imported under it, and signs what the
    original's public key verifies."""
    tools = tools_for(tcti, work)
    primary = tools.primary()
    tools("tpm2_startauthsession", "-S", "trial.sess")
    tools("tpm2_policycommandcode", "-S", "trial.sess", "-L", "dup.policy", "TPM2_CC_Duplicate")
    tools("tpm2_flushcontext", "trial.sess")
    key = tools.loaded(primary, "key", "-G", "ecc", "-L", "dup.policy",
                       "-a", "sensitivedataorigin|userwithauth|sign")
    public = public_key(tools.pem_public(key, "key.pem"))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    tools("tpm2_create", "-C", primary, "-G", "ecc", "-u", "parent.pub", "-r", "parent.priv",
          "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt")
    tools("tpm2_loadexternal", "-C", "o", "-u", "parent.pub", "-c", "parent_public.ctx")

    for wrapper, inner_out, inner_in in (("null", (), ()),
                                         ("aes", ("-o", "inner.key"), ("-k", "inner.key"))):
        tools("tpm2_startauthsession", "--policy-session", "-S", "dup.sess")
        tools("tpm2_policycommandcode", "-S", "dup.sess", "TPM2_CC_Duplicate")
        tools("tpm2_duplicate", "-C", "parent_public.ctx", "-c", key, "-G", wrapper,
              *inner_out, "-p", "session:dup.sess", "-r", f"{wrapper}.dup",
              "-s", f"{wrapper}.seed")
        tools("tpm2_flushcontext", "dup.sess")

        tools("tpm2_load", "-C", primary, "-u", "parent.pub", "-r", "parent.priv",
              "-c", "parent.ctx")
        tools("tpm2_import", "-C", "parent.ctx", "-u", "key.pub", "-i", f"{wrapper}.dup",
              "-s", f"{wrapper}.seed", *inner_in, "-r", f"{wrapper}.priv")
        tools("tpm2_load", "-C", "parent.ctx", "-u", "key.pub", "-r", f"{wrapper}.priv",
              "-c", "imported.ctx")
        message = f"signed by the duplicate ({wrapper} inner wrapper)".encode()
        tools("tpm2_sign", "-c", "imported.ctx", "-g", "sha256", "-f", "plain",
              "-o", f"{wrapper}.sig", tools.write("msg.bin", message))
        public.verify(tools.read(f"{wrapper}.sig"), message, ec.ECDSA(hashes.SHA256()))


def import_external_key(tcti: str, work: Path) -> None:
    """Keys made outside the TPM are imported (the tools wrap them to the parent's
    ECC public key): a P-256 key signs what its own public key verifies, an RSA-2048
    key signs (RSASSA) and decrypts (OAEP) for its own public key."""
    tools = tools_for(tcti, work)
    primary = tools.primary()
    ecc_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for alg, private in (("ecc", ecc_key), ("rsa", rsa_key)):
        tools.write(f"{alg}.pem", private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        tools("tpm2_import", "-C", primary, "-G", alg, "-i", f"{alg}.pem", "-u", f"{alg}.pub",
              "-r", f"{alg}.priv")
        tools("tpm2_load", "-C", primary, "-u", f"{alg}.pub", "-r", f"{alg}.priv",
              "-c", f"{alg}.ctx")
        tools("tpm2_sign", "-c", f"{alg}.ctx", "-g", "sha256", "-f", "plain", "-o", f"{alg}.sig",
              tools.write("msg.bin", b"imported key"))
    ecc_key.public_key().verify(tools.read("ecc.sig"), b"imported key",
                                ec.ECDSA(hashes.SHA256()))
    rsa_key.public_key().verify(tools.read("rsa.sig"), b"imported key", padding.PKCS1v15(),
                                hashes.SHA256())
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    tools.write("ct.bin", rsa_key.public_key().encrypt(b"to the imported key", oaep))
    tools("tpm2_rsadecrypt", "-c", "rsa.ctx", "-s", "oaep", "-o", "pt.bin", "ct.bin")
    assert tools.read("pt.bin") == b"to the imported key"
