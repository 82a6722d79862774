"""Sessions started by the tools: HMAC, salted, bound and policy sessions with
parameter encryption."""

from __future__ import annotations

import os
from pathlib import Path

from .runner import (
    RC_S1,
    SEAL_ATTRIBUTES,
    TPM_RC_BAD_AUTH,
    tools_for,
)


def hmac_session(tcti: str, work: Path) -> None:
    """An unsalted HMAC session started by the tools authorizes unseal twice (nonces
    roll) and refuses a wrong password."""
    tools = tools_for(tcti, work)
    secret = os.urandom(16)
    primary = tools.primary()
    sealed = tools.loaded(primary, "sealed", "-p", "sealpw", "-a", SEAL_ATTRIBUTES,
                          "-i", tools.write("secret.bin", secret))
    tools("tpm2_startauthsession", "--hmac-session", "-S", "hmac.sess")
    for attempt in range(2):
        tools("tpm2_unseal", "-c", sealed, "-p", "session:hmac.sess+sealpw",
              "-o", f"out{attempt}.bin")
        assert tools.read(f"out{attempt}.bin") == secret
    tools.expect_rc(TPM_RC_BAD_AUTH + RC_S1, "tpm2_unseal", "-c", sealed,
                    "-p", "session:hmac.sess+wrong")
    tools.forget_session("hmac.sess")


def salted_encrypted_sessions(tcti: str, work: Path) -> None:
    """Salted sessions with parameter encryption: ``-c key`` (salted and bound,
    encrypt+decrypt on), and ``--tpmkey-context`` with tpm2_sessionconfig turning on
    encrypt/decrypt; used to create and unseal a secret and for GetRandom."""
    tools = tools_for(tcti, work)
    secret = os.urandom(32)
    primary = tools.primary()

    tools("tpm2_startauthsession", "--hmac-session", "-c", primary, "-S", "bound.sess")
    attributes = tools("tpm2_sessionconfig", "bound.sess")
    assert "encrypt" in attributes and "decrypt" in attributes, attributes
    random = tools("tpm2_getrandom", "-S", "bound.sess", "--hex", "16")
    assert len(bytes.fromhex(random.strip())) == 16
    tools("tpm2_create", "-C", primary, "-P", "session:bound.sess", "-p", "sealpw",
          "-a", SEAL_ATTRIBUTES, "-i", tools.write("secret.bin", secret),
          "-u", "sealed.pub", "-r", "sealed.priv")
    # NV data through the encrypting session: as the owner's authorization (-P) and as
    # an extra encryption session beside the tools' own HMAC session (-S).
    index = hex(0x01500110)
    tools("tpm2_nvdefine", index, "-C", "o", "-s", "32", "-a", "ownerread|ownerwrite|no_da")
    tools("tpm2_nvwrite", index, "-C", "o", "-P", "session:bound.sess",
          "-i", tools.write("nv1.bin", secret))
    tools("tpm2_nvread", index, "-C", "o", "-S", "bound.sess", "-s", "32", "-o", "nv1.out")
    assert tools.read("nv1.out") == secret
    tools("tpm2_nvwrite", index, "-C", "o", "-S", "bound.sess",
          "-i", tools.write("nv2.bin", secret[::-1]))
    tools("tpm2_nvread", index, "-C", "o", "-P", "session:bound.sess", "-s", "32",
          "-o", "nv2.out")
    assert tools.read("nv2.out") == secret[::-1]
    tools("tpm2_nvundefine", index, "-C", "o")
    tools("tpm2_flushcontext", "bound.sess")
    tools("tpm2_load", "-C", primary, "-u", "sealed.pub", "-r", "sealed.priv",
          "-c", "sealed.ctx")

    tools("tpm2_startauthsession", "--hmac-session", "--tpmkey-context", primary,
          "-S", "salted.sess")
    before = tools("tpm2_sessionconfig", "salted.sess")
    assert "encrypt" not in before and "decrypt" not in before, before
    tools("tpm2_sessionconfig", "salted.sess", "--enable-encrypt", "--enable-decrypt")
    after = tools("tpm2_sessionconfig", "salted.sess")
    assert "encrypt" in after and "decrypt" in after, after
    tools("tpm2_unseal", "-c", "sealed.ctx", "-p", "session:salted.sess+sealpw",
          "-o", "out.bin")
    assert tools.read("out.bin") == secret
    tools("tpm2_flushcontext", "salted.sess")

    # Bound (not salted) to the sealed object with its password; the response is
    # encrypted with a key derived from that password.
    tools("tpm2_startauthsession", "--hmac-session", "--bind-context", "sealed.ctx",
          "--bind-auth", "sealpw", "-S", "bind.sess")
    tools("tpm2_sessionconfig", "bind.sess", "--enable-encrypt")
    tools("tpm2_unseal", "-c", "sealed.ctx", "-p", "session:bind.sess+sealpw",
          "-o", "bind.out")
    tools("tpm2_flushcontext", "bind.sess")
    assert tools.read("bind.out") == secret

    # A policy session salted and bound to the primary (encryption on) satisfying
    # PolicyCommandCode(Unseal). The object's authValue is empty: for a policy session
    # the encryption key is sessionKey || authValue even without PolicyAuthValue
    # (Part 1, 21.1 note 1), which ESAPI 3.x ignores for PolicyPassword sessions.
    tools("tpm2_startauthsession", "-S", "trial.sess")
    tools("tpm2_policycommandcode", "-S", "trial.sess", "-L", "cc.policy", "TPM2_CC_Unseal")
    tools("tpm2_flushcontext", "trial.sess")
    tools("tpm2_create", "-C", primary, "-L", "cc.policy", "-a", "fixedtpm|fixedparent|noda",
          "-i", tools.write("s2.bin", secret[::-1]), "-u", "pol.pub", "-r", "pol.priv")
    tools("tpm2_load", "-C", primary, "-u", "pol.pub", "-r", "pol.priv", "-c", "pol.ctx")
    tools("tpm2_startauthsession", "--policy-session", "-c", primary, "-S", "pol.sess")
    tools("tpm2_policycommandcode", "-S", "pol.sess", "TPM2_CC_Unseal")
    tools("tpm2_unseal", "-c", "pol.ctx", "-p", "session:pol.sess", "-o", "pol.out")
    tools("tpm2_flushcontext", "pol.sess")
    assert tools.read("pol.out") == secret[::-1]
