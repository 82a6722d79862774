"""Sealing to policies: PCR, compound, OR, authorized, signed and NV policies."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .runner import (
    RC_P1,
    RC_P4,
    RC_S1,
    TPM_RC_POLICY,
    TPM_RC_POLICY_FAIL,
    TPM_RC_VALUE,
    tools_for,
)


def seal_unseal_pcr_policy(tcti: str, work: Path) -> None:
    """Seal to PCR 16, unseal with ``pcr:`` and with an explicit policy session; an
    extended PCR fails the policy, a reset PCR satisfies it again."""
    tools = tools_for(tcti, work)
    secret = os.urandom(24)
    tools("tpm2_pcrreset", "16")
    primary = tools.primary()
    tools("tpm2_pcrread", "sha256:16", "-o", "pcr16.bin")
    tools("tpm2_createpolicy", "--policy-pcr", "-l", "sha256:16", "-f", "pcr16.bin",
          "-L", "pcr.policy")
    sealed = tools.loaded(primary, "sealed", "-L", "pcr.policy", "-a", "fixedtpm|fixedparent",
                          "-i", tools.write("secret.bin", secret))

    assert tools("tpm2_unseal", "-c", sealed, "-p", "pcr:sha256:16", "-o", "out1.bin") == ""
    assert tools.read("out1.bin") == secret

    tools("tpm2_startauthsession", "--policy-session", "-S", "policy.sess")
    tools("tpm2_policypcr", "-S", "policy.sess", "-l", "sha256:16")
    tools("tpm2_unseal", "-c", sealed, "-p", "session:policy.sess", "-o", "out2.bin")
    tools("tpm2_flushcontext", "policy.sess")
    assert tools.read("out2.bin") == secret

    tools("tpm2_pcrextend", f"16:sha256={hashlib.sha256(b'changed').hexdigest()}")
    tools.expect_rc(TPM_RC_POLICY_FAIL + RC_S1,
                    "tpm2_unseal", "-c", sealed, "-p", "pcr:sha256:16")
    tools("tpm2_pcrreset", "16")
    tools("tpm2_unseal", "-c", sealed, "-p", "pcr:sha256:16", "-o", "out3.bin")
    assert tools.read("out3.bin") == secret


def seal_unseal_compound_policy(tcti: str, work: Path) -> None:
    """PolicyPCR + PolicyPassword built in a trial session; unseal needs both the PCR
    state and the object's password in the policy session."""
    tools = tools_for(tcti, work)
    secret = os.urandom(16)
    primary = tools.primary()
    tools("tpm2_startauthsession", "-S", "trial.sess")
    tools("tpm2_policypcr", "-S", "trial.sess", "-l", "sha256:0,1,2,3")
    tools("tpm2_policypassword", "-S", "trial.sess", "-L", "compound.policy")
    tools("tpm2_flushcontext", "trial.sess")
    sealed = tools.loaded(primary, "sealed", "-L", "compound.policy", "-p", "sealpw",
                          "-a", "fixedtpm|fixedparent|noda", "-i",
                          tools.write("secret.bin", secret))

    tools("tpm2_startauthsession", "--policy-session", "-S", "p.sess")
    tools("tpm2_policypcr", "-S", "p.sess", "-l", "sha256:0,1,2,3")
    tools("tpm2_policypassword", "-S", "p.sess")
    tools("tpm2_unseal", "-c", sealed, "-p", "session:p.sess+sealpw", "-o", "out.bin")
    tools("tpm2_flushcontext", "p.sess")
    assert tools.read("out.bin") == secret

    # Without the password assertion the policy digest differs.
    tools("tpm2_startauthsession", "--policy-session", "-S", "q.sess")
    tools("tpm2_policypcr", "-S", "q.sess", "-l", "sha256:0,1,2,3")
    tools.expect_rc(TPM_RC_POLICY_FAIL + RC_S1,
                    "tpm2_unseal", "-c", sealed, "-p", "session:q.sess+sealpw")
    tools.forget_session("q.sess")


def policy_or(tcti: str, work: Path) -> None:
    """PolicyOR of a PolicyPCR branch and a PolicyPassword branch: either branch
    unseals; a branch outside the OR list fails at TPM2_PolicyOR itself."""
    tools = tools_for(tcti, work)
    secret = os.urandom(16)
    for branch, steps in (("pcr", (("tpm2_policypcr", "-l", "sha256:0,1,2,3"),)),
                          ("pass", (("tpm2_policypassword",),))):
        tools("tpm2_startauthsession", "-S", "trial.sess")
        for tool, *args in steps:
            tools(tool, "-S", "trial.sess", *args, "-L", f"{branch}.policy")
        tools("tpm2_flushcontext", "trial.sess")
    tools("tpm2_startauthsession", "-S", "trial.sess")
    tools("tpm2_policyor", "-S", "trial.sess", "-L", "or.policy",
          "sha256:pass.policy,pcr.policy")
    tools("tpm2_flushcontext", "trial.sess")
    primary = tools.primary()
    sealed = tools.loaded(primary, "sealed", "-L", "or.policy", "-p", "sealpw",
                          "-a", "fixedtpm|fixedparent|noda",
                          "-i", tools.write("secret.bin", secret))
    for branch, (tool, *args), password in (
            ("pcr", ("tpm2_policypcr", "-l", "sha256:0,1,2,3"), ""),
            ("pass", ("tpm2_policypassword",), "+sealpw")):
        tools("tpm2_startauthsession", "--policy-session", "-S", "p.sess")
        tools(tool, "-S", "p.sess", *args)
        tools("tpm2_policyor", "-S", "p.sess", "sha256:pass.policy,pcr.policy")
        tools("tpm2_unseal", "-c", sealed, "-p", f"session:p.sess{password}",
              "-o", f"{branch}.out")
        tools("tpm2_flushcontext", "p.sess")
        assert tools.read(f"{branch}.out") == secret, branch

    # PolicyCommandCode is in neither branch: the session's digest is not in the list.
    # (PolicyAuthValue would be: PolicyPassword extends the digest the same way.)
    tools("tpm2_startauthsession", "--policy-session", "-S", "x.sess")
    tools("tpm2_policycommandcode", "-S", "x.sess", "TPM2_CC_Unseal")
    tools.expect_rc(TPM_RC_VALUE + RC_P1, "tpm2_policyor", "-S", "x.sess",
                    "sha256:pass.policy,pcr.policy")
    tools("tpm2_flushcontext", "x.sess")


def policy_authorize(tcti: str, work: Path) -> None:
    """PolicyAuthorize: the object's policy names a signer (an RSA key made outside
    the TPM, loaded public-only); a PCR policy signed by it and verified by
    tpm2_verifysignature (ticket) unseals, an unsigned one does not."""
    tools = tools_for(tcti, work)
    secret = os.urandom(16)
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tools.write("signer.pem", signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    tools("tpm2_loadexternal", "-G", "rsa", "-C", "o", "-u", "signer.pem", "-c", "signer.ctx",
          "-n", "signer.name")
    tools("tpm2_startauthsession", "-S", "trial.sess")
    tools("tpm2_policyauthorize", "-S", "trial.sess", "-L", "authorized.policy",
          "-n", "signer.name")
    tools("tpm2_flushcontext", "trial.sess")
    tools("tpm2_pcrread", "sha256:0", "-o", "pcr0.bin")
    tools("tpm2_startauthsession", "-S", "trial.sess")
    tools("tpm2_policypcr", "-S", "trial.sess", "-l", "sha256:0", "-f", "pcr0.bin",
          "-L", "pcr.policy")
    tools("tpm2_flushcontext", "trial.sess")
    # The signer approves H(approvedPolicy || policyRef), policyRef empty (Part 3, 23.16).
    tools.write("pcr.sig", signer.sign(tools.read("pcr.policy"), padding.PKCS1v15(),
                                       hashes.SHA256()))
    primary = tools.primary()
    sealed = tools.loaded(primary, "sealed", "-L", "authorized.policy",
                          "-a", "fixedtpm|fixedparent|noda",
                          "-i", tools.write("secret.bin", secret))
    tools("tpm2_verifysignature", "-c", "signer.ctx", "-g", "sha256", "-m", "pcr.policy",
          "-s", "pcr.sig", "-f", "rsassa", "-t", "verified.ticket")
    tools("tpm2_startauthsession", "--policy-session", "-S", "p.sess")
    tools("tpm2_policypcr", "-S", "p.sess", "-l", "sha256:0")
    tools("tpm2_policyauthorize", "-S", "p.sess", "-i", "pcr.policy", "-n", "signer.name",
          "-t", "verified.ticket")
    tools("tpm2_unseal", "-c", sealed, "-p", "session:p.sess", "-o", "out.bin")
    tools("tpm2_flushcontext", "p.sess")
    assert tools.read("out.bin") == secret

    # A policy the signer never approved: its ticket cannot be had, and the ticket for
    # another policy does not match (TPM_RC_VALUE on checkTicket, parameter 4).
    tools("tpm2_startauthsession", "--policy-session", "-S", "x.sess")
    tools("tpm2_policypassword", "-S", "x.sess", "-L", "other.policy")
    tools.expect_rc(TPM_RC_VALUE + RC_P4, "tpm2_policyauthorize", "-S", "x.sess",
                    "-i", "other.policy", "-n", "signer.name", "-t", "verified.ticket")
    tools("tpm2_flushcontext", "x.sess")


def policy_signed_and_nv(tcti: str, work: Path) -> None:
    """PolicySigned (an external RSA key signs H(expiration = 0)) and PolicyNV (an
    index must hold 0x2A) together; after the index changes, PolicyNV refuses with
    TPM_RC_POLICY."""
    tools = tools_for(tcti, work)
    secret, index = os.urandom(16), hex(0x01500107)
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tools.write("signer.pem", signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    # aHash = H(nonceTPM || expiration || cpHashA || policyRef), all empty but the
    # 4-byte expiration (Part 3, 23.3).
    tools.write("signed.sig", signer.sign(bytes(4), padding.PKCS1v15(), hashes.SHA256()))
    tools("tpm2_loadexternal", "-G", "rsa", "-C", "o", "-u", "signer.pem", "-c", "signer.ctx")
    tools("tpm2_nvdefine", index, "-C", "o", "-s", "1", "-a", "ownerread|ownerwrite|no_da")
    tools("tpm2_nvwrite", index, "-C", "o", "-i", tools.write("v.bin", b"\x2a"))

    def satisfy(session: str, out: str = "") -> None:
        tools("tpm2_policysigned", "-S", session, "-g", "sha256", "-s", "signed.sig",
              "-f", "rsassa", "-c", "signer.ctx")
        tools("tpm2_policynv", "-S", session, "-C", "o", "-i", "v.bin", index, "eq",
              *(("-L", out) if out else ()))

    tools("tpm2_startauthsession", "-S", "trial.sess")
    satisfy("trial.sess", "signed_nv.policy")
    tools("tpm2_flushcontext", "trial.sess")
    primary = tools.primary()
    sealed = tools.loaded(primary, "sealed", "-L", "signed_nv.policy",
                          "-a", "fixedtpm|fixedparent|noda",
                          "-i", tools.write("secret.bin", secret))
    tools("tpm2_startauthsession", "--policy-session", "-S", "p.sess")
    satisfy("p.sess")
    tools("tpm2_unseal", "-c", sealed, "-p", "session:p.sess", "-o", "out.bin")
    tools("tpm2_flushcontext", "p.sess")
    assert tools.read("out.bin") == secret

    tools("tpm2_nvwrite", index, "-C", "o", "-i", tools.write("w.bin", b"\x2b"))
    tools("tpm2_startauthsession", "--policy-session", "-S", "x.sess")
    tools.expect_rc(TPM_RC_POLICY, "tpm2_policynv", "-S", "x.sess", "-C", "o", "-i", "v.bin",
                    index, "eq")
    tools("tpm2_flushcontext", "x.sess")
    tools("tpm2_nvundefine", index, "-C", "o")
