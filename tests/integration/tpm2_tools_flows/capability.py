"""What the TPM says it can do: every command and algorithm the other flows use is
advertised (clients such as FAPI and tpm2_getcap-driven scripts decide by it)."""

from __future__ import annotations

from pathlib import Path

from .runner import tools_for

# The TPM2_CC_* the flows of this package send, as tpm2_getcap names them.
COMMANDS_USED = frozenset(f"TPM2_CC_{name}" for name in (
    "ActivateCredential", "Certify", "Clear", "ClearControl", "ContextLoad", "ContextSave",
    "Create", "CreatePrimary", "DictionaryAttackLockReset", "DictionaryAttackParameters",
    "Duplicate", "ECDH_KeyGen", "ECDH_ZGen", "EncryptDecrypt2", "EvictControl",
    "FlushContext", "GetCapability", "GetRandom", "GetSessionAuditDigest", "GetTime", "HMAC",
    "Hash", "HierarchyChangeAuth", "HierarchyControl", "Import", "Load", "LoadExternal",
    "MakeCredential", "NV_Certify", "NV_DefineSpace", "NV_Extend", "NV_Increment", "NV_Read",
    "NV_ReadLock", "NV_ReadPublic", "NV_SetBits", "NV_UndefineSpace", "NV_Write",
    "NV_WriteLock", "ObjectChangeAuth", "PCR_Extend", "PCR_Read", "PCR_Reset",
    "PolicyAuthValue", "PolicyAuthorize", "PolicyCommandCode", "PolicyGetDigest", "PolicyNV",
    "PolicyOR", "PolicyPCR", "PolicyPassword", "PolicySecret", "PolicySigned", "Quote",
    "RSA_Decrypt", "RSA_Encrypt", "ReadPublic", "Sign", "StartAuthSession", "Startup",
    "Unseal", "VerifySignature",
))
# The algorithms the flows make the TPM use, named as tpm2_getcap names them: the KDFs
# (KDFa for every session and protected object, KDFe for ECC salts and seeds) and MGF1
# (OAEP) included — TPM_CAP_ALGS lists the implemented algorithms (Part 2, TPM_CAP).
ALGORITHMS_USED = ("rsa", "ecc", "keyedhash", "symcipher", "aes", "cfb", "sha1", "sha256",
                   "sha384", "hmac", "rsassa", "rsaes", "oaep", "ecdsa", "ecdh", "mgf1",
                   "kdf1_sp800_108", "kdf1_sp800_56a")


def capabilities(tcti: str, work: Path) -> None:
    """tpm2_getcap lists the commands, algorithms, curve and PCR banks the flows use."""
    tools = tools_for(tcti, work)
    advertised = {line.rstrip(":") for line in tools("tpm2_getcap", "commands").splitlines()
                  if line.startswith("TPM2_CC_")}
    assert not COMMANDS_USED - advertised, sorted(COMMANDS_USED - advertised)
    algorithms = {line.rstrip(":") for line in tools("tpm2_getcap", "algorithms").splitlines()
                  if line and not line.startswith(" ")}
    missing = [alg for alg in ALGORITHMS_USED if alg not in algorithms]
    assert not missing, missing
    assert "TPM2_ECC_NIST_P256" in tools("tpm2_getcap", "ecc-curves")
    banks = tools("tpm2_getcap", "pcrs")
    assert "sha256" in banks and "sha1" in banks, banks
