"""Owner administration: persistence, authorization values, dictionary-attack
lockout, hierarchy control and TPM2_Clear."""

from __future__ import annotations

from pathlib import Path

from .runner import (
    RC_H1,
    RC_P1,
    RC_S1,
    SIGN_ATTRIBUTES,
    TPM_RC_AUTH_FAIL,
    TPM_RC_BAD_AUTH,
    TPM_RC_DISABLED,
    TPM_RC_HIERARCHY,
    TPM_RC_INTEGRITY,
    TPM_RC_LOCKOUT,
    properties,
    tools_for,
)


def evictcontrol(tcti: str, work: Path) -> None:
    """A primary made persistent is listed, keeps its name, parents new keys by its
    handle, and is gone after eviction."""
    tools = tools_for(tcti, work)
    handle = "0x81000101"
    primary = tools.primary()
    tools("tpm2_readpublic", "-c", primary, "-n", "transient.name")
    tools("tpm2_evictcontrol", "-C", "o", "-c", primary, handle)
    assert handle in tools("tpm2_getcap", "handles-persistent")
    tools("tpm2_readpublic", "-c", handle, "-n", "persistent.name")
    assert tools.read("persistent.name") == tools.read("transient.name")
    key = tools.loaded(handle, "child", "-G", "ecc", "-a", SIGN_ATTRIBUTES)
    tools("tpm2_sign", "-c", key, "-g", "sha256", "-o", "sig.bin",
          tools.write("msg.bin", b"signed under a persistent parent"))
    tools("tpm2_evictcontrol", "-C", "o", "-c", handle)
    assert handle not in tools("tpm2_getcap", "handles-persistent")


def changeauth(tcti: str, work: Path) -> None:
    """Owner authorization changed and restored; an object's password changed (the
    new private blob takes the new password, the old one is refused)."""
    tools = tools_for(tcti, work)
    tools("tpm2_changeauth", "-c", "o", "ownerpw")
    try:
        tools.expect_rc(TPM_RC_BAD_AUTH + RC_S1, "tpm2_createprimary", "-C", "o", "-G", "ecc",
                        "-c", "denied.ctx")
        tools("tpm2_createprimary", "-C", "o", "-P", "ownerpw", "-G", "ecc", "-c", "p.ctx")
    finally:
        tools("tpm2_changeauth", "-c", "o", "-p", "ownerpw")
    tools.primary("p.ctx")

    key = tools.loaded("p.ctx", "key", "-G", "ecc", "-p", "oldpw", "-a", SIGN_ATTRIBUTES)
    tools("tpm2_changeauth", "-c", key, "-C", "p.ctx", "-p", "oldpw", "-r", "key2.priv",
          "newpw")
    tools("tpm2_load", "-C", "p.ctx", "-u", "key.pub", "-r", "key2.priv", "-c", "key2.ctx")
    msg = tools.write("msg.bin", b"after changeauth")
    tools("tpm2_sign", "-c", "key2.ctx", "-p", "newpw", "-g", "sha256", "-o", "sig", msg)
    tools.expect_rc(TPM_RC_BAD_AUTH + RC_S1, "tpm2_sign", "-c", "key2.ctx", "-p", "oldpw",
                    "-g", "sha256", "-o", "sig", msg)


def dictionary_lockout(tcti: str, work: Path) -> None:
    """Wrong passwords on a DA-protected key count up to maxTries, then the TPM is in
    lockout (even the right password is refused) until the lockout is cleared."""
    tools = tools_for(tcti, work)
    before = properties(tools)
    tools("tpm2_dictionarylockout", "-s", "-n", "2", "-t", "600", "-l", "600")
    try:
        primary = tools.primary()
        key = tools.loaded(primary, "key", "-G", "ecc", "-p", "goodpw",
                           "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign")
        msg = tools.write("msg.bin", b"DA")
        sign = ("tpm2_sign", "-c", key, "-g", "sha256", "-o", "sig", msg)
        tools.expect_rc(TPM_RC_AUTH_FAIL + RC_S1, *sign, "-p", "badpw")
        tools.expect_rc(TPM_RC_AUTH_FAIL + RC_S1, *sign, "-p", "badpw")
        tools.expect_rc(TPM_RC_LOCKOUT, *sign, "-p", "goodpw")
        now = properties(tools)
        assert int(now["TPM2_PT_LOCKOUT_COUNTER"], 0) == 2, now
        assert now.get("TPM2_PT_PERMANENT.inLockout") == "1", now
        tools("tpm2_dictionarylockout", "-c")
        tools(*sign, "-p", "goodpw")
        assert int(properties(tools)["TPM2_PT_LOCKOUT_COUNTER"], 0) == 0
    finally:
        tools("tpm2_dictionarylockout", "-c")
        tools("tpm2_dictionarylockout", "-s",
              "-n", str(int(before["TPM2_PT_MAX_AUTH_FAIL"], 0)),
              "-t", str(int(before["TPM2_PT_LOCKOUT_INTERVAL"], 0)),
              "-l", str(int(before["TPM2_PT_LOCKOUT_RECOVERY"], 0)))


def hierarchy_control(tcti: str, work: Path) -> None:
    """Disabling the storage hierarchy (platform authorization) refuses owner
    CreatePrimary with TPM_RC_HIERARCHY; enabling it again restores it."""
    tools = tools_for(tcti, work)
    tools("tpm2_hierarchycontrol", "-C", "p", "shEnable", "clear")
    try:
        assert properties(tools)["TPM2_PT_STARTUP_CLEAR.shEnable"] == "0"
        tools.expect_rc(TPM_RC_HIERARCHY + RC_H1, "tpm2_createprimary", "-C", "o",
                        "-G", "ecc", "-c", "denied.ctx")
    finally:
        tools("tpm2_hierarchycontrol", "-C", "p", "shEnable", "set")
    assert properties(tools)["TPM2_PT_STARTUP_CLEAR.shEnable"] == "1"
    tools.primary()


def clear(tcti: str, work: Path) -> None:
    """ClearControl disables TPM2_Clear; once re-enabled (platform), Clear with lockout
    authorization removes owner persistent objects and NV indices and resets ownerAuth."""
    tools = tools_for(tcti, work)
    handle, index = "0x81000102", 0x01500105
    tools("tpm2_evictcontrol", "-C", "o", "-c", tools.primary(), handle)
    tools("tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub")
    tools("tpm2_nvdefine", hex(index), "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite")
    tools("tpm2_changeauth", "-c", "o", "ownerpw")
    try:
        assert properties(tools)["TPM2_PT_PERMANENT.ownerAuthSet"] == "1"
        tools("tpm2_clearcontrol", "-C", "l", "s")
        assert properties(tools)["TPM2_PT_PERMANENT.disableClear"] == "1"
        tools.expect_rc(TPM_RC_DISABLED, "tpm2_clear", "-c", "l")
        tools("tpm2_clearcontrol", "-C", "p", "c")
        tools("tpm2_clear", "-c", "l")
    finally:
        # Leave the TPM usable for whatever runs next if Clear did not happen.
        tools.run("tpm2_clearcontrol", "-C", "p", "c")
        tools.run("tpm2_changeauth", "-c", "o", "-p", "ownerpw")
    now = properties(tools)
    assert now["TPM2_PT_PERMANENT.ownerAuthSet"] == "0"
    assert now["TPM2_PT_PERMANENT.disableClear"] == "0"
    assert handle not in tools("tpm2_getcap", "handles-persistent")
    assert hex(index) not in tools("tpm2_nvreadpublic")
    tools.primary("after.ctx")          # ownerAuth is empty again
    # Clear made new proofs: a context saved before no longer loads (its integrity
    # key is derived from them); the EK (endorsement seed kept) is the same key when
    # made again.
    tools.expect_rc(TPM_RC_INTEGRITY + RC_P1, "tpm2_readpublic", "-c", "ek.ctx")
    tools("tpm2_createek", "-c", "ek2.ctx", "-G", "ecc", "-u", "ek2.pub")
    assert tools.read("ek2.pub") == tools.read("ek.pub")
