"""Attestation: quotes, credential activation, certify, GetTime, NV_Certify and audit sessions."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from .runner import (
    RC_P1,
    SIGN_ATTRIBUTES,
    TPM_RC_INTEGRITY,
    Tools,
    ecdsa_der,
    parse_quote,
    pcr_values,
    public_key,
    tools_for,
)


def quote_checkquote(tcti: str, work: Path) -> None:
    """EK and AK made by the tools; a quote over PCRs 16 and 23 verifies with
    tpm2_checkquote and in Python, and carries the nonce and the PCR digest."""
    tools = tools_for(tcti, work)
    tools("tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub")
    tools("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256",
          "-s", "ecdsa", "-u", "ak.pem", "-f", "pem", "-n", "ak.name")
    tools("tpm2_pcrextend", f"23:sha256={hashlib.sha256(b'quoted').hexdigest()}")
    nonce = os.urandom(16).hex()
    tools("tpm2_quote", "-c", "ak.ctx", "-l", "sha256:16,23", "-q", nonce, "-m", "quote.msg",
          "-s", "quote.sig", "-o", "quote.pcrs", "-g", "sha256")
    tools("tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig",
          "-f", "quote.pcrs", "-g", "sha256", "-q", nonce)

    attest = tools.read("quote.msg")
    extra, pcr_digest = parse_quote(attest)
    assert extra == bytes.fromhex(nonce)
    assert pcr_digest == hashlib.sha256(pcr_values(tools, "sha256:16,23", "now.pcrs")).digest()
    key = public_key(tools.read("ak.pem"))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(ecdsa_der(tools.read("quote.sig")), attest, ec.ECDSA(hashes.SHA256()))

    other = os.urandom(16).hex()
    bad = tools.run("tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig",
                    "-f", "quote.pcrs", "-g", "sha256", "-q", other)
    assert bad.returncode != 0, "checkquote accepted a quote over another nonce"


def credential_activation(tcti: str, work: Path) -> None:
    """makecredential (offline, and on the TPM) to an ECC EK for the AK's name;
    activatecredential with the EK's PolicySecret(endorsement) session recovers it."""
    _activate_credentials(tools_for(tcti, work), "ecc")


def credential_activation_rsa(tcti: str, work: Path) -> None:
    """The same with the RSA-2048 EK (the seed travels OAEP-encrypted with label
    "IDENTITY") and an RSASSA AK."""
    _activate_credentials(tools_for(tcti, work), "rsa")


def _activate_credentials(tools: Tools, alg: str) -> None:
    tools("tpm2_createek", "-c", "ek.ctx", "-G", alg, "-u", "ek.pub")
    tools("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", alg, "-g", "sha256",
          "-s", "ecdsa" if alg == "ecc" else "rsassa", "-u", "ak.pub", "-n", "ak.name")
    name = tools.read("ak.name").hex()
    for mode, tcti_args in (("offline", ("-T", "none")), ("online", ())):
        secret = os.urandom(20)
        tools("tpm2_makecredential", *tcti_args, "-u", "ek.pub", "-s",
              tools.write(f"{mode}.secret", secret), "-n", name, "-o", f"{mode}.cred")
        tools("tpm2_startauthsession", "--policy-session", "-S", "ek.sess")
        tools("tpm2_policysecret", "-S", "ek.sess", "-c", "e")
        tools("tpm2_activatecredential", "-c", "ak.ctx", "-C", "ek.ctx", "-i", f"{mode}.cred",
              "-o", f"{mode}.out", "-P", "session:ek.sess")
        tools("tpm2_flushcontext", "ek.sess")
        assert tools.read(f"{mode}.out") == secret, mode

    # A credential made for another name does not activate for this AK.
    tools("tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s",
          tools.write("x.secret", b"not yours"), "-n", "000b" + "11" * 32, "-o", "x.cred")
    tools("tpm2_startauthsession", "--policy-session", "-S", "x.sess")
    tools("tpm2_policysecret", "-S", "x.sess", "-c", "e")
    # The outer HMAC over the blob binds the name (Part 1, Credential Protection):
    # TPM_RC_INTEGRITY on credentialBlob.
    tools.expect_rc(TPM_RC_INTEGRITY + RC_P1, "tpm2_activatecredential", "-c", "ak.ctx",
                    "-C", "ek.ctx", "-i", "x.cred", "-o", "x.out", "-P", "session:x.sess")
    tools.forget_session("x.sess")


def certify(tcti: str, work: Path) -> None:
    """tpm2_certify: an AK signs an attestation of another key; the attestation
    names that key and verifies with the AK's public key."""
    tools = tools_for(tcti, work)
    primary = tools.primary()
    key = tools.loaded(primary, "key", "-G", "ecc", "-a", SIGN_ATTRIBUTES)
    tools("tpm2_readpublic", "-c", key, "-n", "key.name")
    ak = tools.loaded(primary, "ak", "-G", "ecc256:ecdsa-sha256:null",
                      "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|"
                      "sign|noda")
    ak_public = public_key(tools.pem_public(ak, "ak.pem"))
    tools("tpm2_certify", "-c", key, "-C", ak, "-g", "sha256", "-o", "attest.bin",
          "-s", "attest.sig")
    attest = tools.read("attest.bin")
    magic, kind = struct.unpack_from(">IH", attest)
    assert magic == 0xFF544347 and kind == 0x8017, "not a TPM_ST_ATTEST_CERTIFY"
    assert tools.read("key.name") in attest
    assert isinstance(ak_public, ec.EllipticCurvePublicKey)
    ak_public.verify(ecdsa_der(tools.read("attest.sig")), attest, ec.ECDSA(hashes.SHA256()))


def time_nv_audit_attestation(tcti: str, work: Path) -> None:
    """GetTime, NV_Certify and the digest of an audit session, each signed by a
    restricted ECDSA key: the signatures verify, the NV contents are certified, and
    the session digest is the one computed here from GetRandom's cpHash and rpHash."""
    tools = tools_for(tcti, work)
    primary = tools.primary()
    ak = tools.loaded(primary, "ak", "-G", "ecc256:ecdsa-sha256:null",
                      "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|"
                      "sign|noda")
    ak_public = public_key(tools.pem_public(ak, "ak.pem"))
    assert isinstance(ak_public, ec.EllipticCurvePublicKey)

    def check(attest_file: str, sig_file: str, kind: int) -> bytes:
        attest = tools.read(attest_file)
        magic, got = struct.unpack_from(">IH", attest)
        assert (magic, got) == (0xFF544347, kind), f"{attest_file}: type {got:#x}"
        ak_public.verify(ecdsa_der(tools.read(sig_file)), attest, ec.ECDSA(hashes.SHA256()))
        return attest

    tools("tpm2_gettime", "-c", ak, "-g", "sha256", "--attestation", "time.attest",
          "-o", "time.sig")
    check("time.attest", "time.sig", 0x8019)

    index, contents = hex(0x01500108), os.urandom(16)
    tools("tpm2_nvdefine", index, "-C", "o", "-s", "16", "-a", "ownerread|ownerwrite|no_da")
    tools("tpm2_nvwrite", index, "-C", "o", "-i", tools.write("nv.bin", contents))
    tools("tpm2_nvcertify", "-C", ak, "-c", "o", "-g", "sha256", "--size", "16",
          "--offset", "0", "--attestation", "nv.attest", "-o", "nv.sig", index)
    assert check("nv.attest", "nv.sig", 0x8014).endswith(
        struct.pack(">H", 16) + contents)
    tools("tpm2_nvundefine", index, "-C", "o")

    tools("tpm2_startauthsession", "--audit-session", "-S", "audit.sess")
    random = bytes.fromhex(tools("tpm2_getrandom", "-S", "audit.sess", "--hex", "8").strip())
    tools("tpm2_getsessionauditdigest", "-S", "audit.sess", "-c", ak, "-g", "sha256",
          "-m", "audit.attest", "-s", "audit.sig")
    tools("tpm2_flushcontext", "audit.sess")
    attest = check("audit.attest", "audit.sig", 0x8016)
    # auditDigest = H(0 || cpHash || rpHash) for the one audited command (Part 1,
    # session audit).
    cp = hashlib.sha256(struct.pack(">IH", 0x17B, 8)).digest()
    rp = hashlib.sha256(struct.pack(">IIH", 0, 0x17B, 8) + random).digest()
    assert attest.endswith(struct.pack(">H", 32) + hashlib.sha256(bytes(32) + cp + rp).digest())
