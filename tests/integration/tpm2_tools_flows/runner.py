"""Running tpm2-tools for the flows: :class:`Tools` (one TCTI, one scratch folder,
transient objects flushed when there is no resource manager), the response codes the
flows expect, and parsers for what the tools print and write."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

# TPM response codes the flows expect (Part 2, 6.6), as tpm2-tools print them: with the
# session, parameter or handle number folded in (RC_S1 = session 1, RC_Pn = parameter n,
# RC_H1 = handle 1).
RC_S1 = 0x900
RC_P1 = 0x140
RC_P2 = 0x240
RC_P4 = 0x440
RC_H1 = 0x100
TPM_RC_DISABLED = 0x120
TPM_RC_HIERARCHY = 0x085
TPM_RC_VALUE = 0x084
TPM_RC_NV_LOCKED = 0x148
TPM_RC_AUTH_UNAVAILABLE = 0x12F
TPM_RC_POLICY = 0x126
TPM_RC_NV_UNINITIALIZED = 0x14A
TPM_RC_AUTH_FAIL = 0x08E
TPM_RC_BAD_AUTH = 0x0A2
TPM_RC_POLICY_FAIL = 0x09D
TPM_RC_SIGNATURE = 0x09B
TPM_RC_INTEGRITY = 0x09F
TPM_RC_LOCKOUT = 0x921
# TPM_NT (Part 2, TPM_NT: the index type in bits 7:4 of TPMA_NV)
TPM_NT_ORDINARY, TPM_NT_COUNTER, TPM_NT_BITS, TPM_NT_EXTEND = 0x0, 0x1, 0x2, 0x4

# Tools that never load an object; any other tool (or any argument naming a ".ctx"
# object context) is followed by a flush of transient objects.
NO_OBJECTS = frozenset({
    "tpm2_startup", "tpm2_getcap", "tpm2_getrandom", "tpm2_pcrread", "tpm2_pcrextend",
    "tpm2_pcrreset", "tpm2_nvdefine", "tpm2_nvundefine", "tpm2_nvwrite", "tpm2_nvread",
    "tpm2_nvreadpublic", "tpm2_nvincrement", "tpm2_nvsetbits", "tpm2_nvextend",
    "tpm2_checkquote", "tpm2_sessionconfig", "tpm2_flushcontext", "tpm2_startauthsession",
    "tpm2_policypcr", "tpm2_policypassword", "tpm2_policyauthvalue",
    "tpm2_policycommandcode", "tpm2_policysecret", "tpm2_createpolicy", "tpm2_hash",
    "tpm2_dictionarylockout", "tpm2_clear", "tpm2_clearcontrol", "tpm2_changeauth",
    "tpm2_makecredential", "tpm2_policyor", "tpm2_policyauthorize", "tpm2_nvwritelock",
    "tpm2_nvreadlock", "tpm2_hierarchycontrol", "tpm2_policynv",
})

ESYS_RC = re.compile(r"ERROR: \w+\((0x[0-9a-fA-F]+)\)")
SEAL_ATTRIBUTES = "fixedtpm|fixedparent|userwithauth|noda"
SIGN_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign|noda"


class ToolFailed(AssertionError):
    """A tool exited non-zero where the flow expected success."""


@dataclass
class Tools:
    """tpm2-tools aimed at one TCTI, with one scratch folder."""

    tcti: str
    work: Path
    #: Flush transient objects after tools that load them (not needed behind an RM).
    flush: bool = True
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, **self.env, "TPM2TOOLS_TCTI": self.tcti}
        result = subprocess.run(list(args), env=env, capture_output=True,
                                cwd=self.work, timeout=120)
        if self.flush and (args[0] not in NO_OBJECTS
                           or any(a.endswith(".ctx") for a in args[1:])):
            flushed = subprocess.run(["tpm2_flushcontext", "-t"], env=env,
                                     capture_output=True, timeout=60)
            assert flushed.returncode == 0, (
                f"tpm2_flushcontext -t after {args[0]}: {flushed.stderr.decode(errors='replace')}")
        return result

    def __call__(self, *args: str) -> str:
        """Run a tool that must succeed; its stdout."""
        result = self.run(*args)
        if result.returncode != 0:
            raise ToolFailed(f"{' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stderr.decode(errors='replace')}")
        return result.stdout.decode(errors="replace")

    def fails(self, *args: str) -> int:
        """Run a tool that must fail; the TPM (or ESAPI) response code it printed."""
        result = self.run(*args)
        stderr = result.stderr.decode(errors="replace")
        assert result.returncode != 0, f"{' '.join(args)} succeeded but should fail"
        codes = ESYS_RC.findall(stderr)
        assert codes, f"{' '.join(args)} failed without a response code:\n{stderr}"
        return int(codes[-1], 16)

    def expect_rc(self, rc: int, *args: str) -> None:
        got = self.fails(*args)
        assert got == rc, f"{' '.join(args)}: response code {got:#x}, expected {rc:#x}"

    def write(self, name: str, data: bytes) -> str:
        (self.work / name).write_bytes(data)
        return name

    def read(self, name: str) -> bytes:
        return (self.work / name).read_bytes()

    def primary(self, name: str = "primary.ctx", hierarchy: str = "o") -> str:
        """An ECC P-256 storage primary key, saved as a context file."""
        self("tpm2_createprimary", "-C", hierarchy, "-G", "ecc", "-g", "sha256", "-c", name)
        return name

    def loaded(self, parent: str, stem: str, *create_args: str) -> str:
        """tpm2_create then tpm2_load under ``parent``; returns the key's context file."""
        self("tpm2_create", "-C", parent, "-u", f"{stem}.pub", "-r", f"{stem}.priv",
             *create_args)
        self("tpm2_load", "-C", parent, "-u", f"{stem}.pub", "-r", f"{stem}.priv",
             "-c", f"{stem}.ctx")
        return f"{stem}.ctx"

    def pem_public(self, context: str, name: str) -> bytes:
        self("tpm2_readpublic", "-c", context, "-f", "pem", "-o", name)
        return self.read(name)

    def forget_session(self, name: str) -> None:
        """End a session whose last use failed: the tool saved no new context, so the
        file is stale. Without an RM the session is still loaded and is flushed by
        handle; tpm2-abrmd still holds the last saved context and flushes it."""
        if self.flush:
            self.run("tpm2_flushcontext", "-l")
        else:
            self.run("tpm2_flushcontext", name)

    def reset_handles(self) -> None:
        """Flush every transient object and session left by an earlier (failed) flow."""
        for kind in ("-t", "-l", "-s"):
            self.run("tpm2_flushcontext", kind)


Flow = Callable[[str, Path], None]


def tools_for(tcti: str, work: Path) -> Tools:
    # Behind tpm2-abrmd the resource manager flushes what each connection loaded.
    return Tools(tcti, work, flush=not tcti.startswith("tabrmd"))


# ---------------------------------------------------------------- helpers for checks


def pcr_values(tools: Tools, selection: str, name: str) -> bytes:
    """The concatenated digests of ``selection`` (tpm2_pcrread -o)."""
    tools("tpm2_pcrread", selection, "-o", name)
    return tools.read(name)


def nv_read(tools: Tools, index: int, size: int, name: str) -> bytes:
    tools("tpm2_nvread", "-C", "o", "-s", str(size), "-o", name, hex(index))
    return tools.read(name)


def nv_type(tools: Tools, index: int) -> int:
    """TPM_NT of an index: bits 7:4 of its TPMA_NV (Part 2), from tpm2_nvreadpublic."""
    lines = tools("tpm2_nvreadpublic", hex(index)).splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "attributes:")
    value = next(line for line in lines[at:] if line.strip().startswith("value:"))
    return (int(value.split(":")[1], 0) >> 4) & 0xF


def parse_quote(attest: bytes) -> tuple[bytes, bytes]:
    """(extraData, pcrDigest) of a TPMS_ATTEST holding a TPMS_QUOTE_INFO (Part 2, TPMS_ATTEST)."""
    magic, kind = struct.unpack_from(">IH", attest)
    assert magic == 0xFF544347 and kind == 0x8018, "not a TPM-generated quote"
    offset = 6
    (size,) = struct.unpack_from(">H", attest, offset)
    offset += 2 + size                                   # qualifiedSigner
    (size,) = struct.unpack_from(">H", attest, offset)
    extra = attest[offset + 2: offset + 2 + size]
    offset += 2 + size + 17 + 8                          # clockInfo, firmwareVersion
    (count,) = struct.unpack_from(">I", attest, offset)
    offset += 4
    for _ in range(count):
        offset += 2
        offset += 1 + attest[offset]
    (size,) = struct.unpack_from(">H", attest, offset)
    return extra, attest[offset + 2: offset + 2 + size]


def ecdsa_der(signature: bytes) -> bytes:
    """A TPMT_SIGNATURE holding TPMS_SIGNATURE_ECDSA (Part 2) as DER."""
    alg, _hash = struct.unpack_from(">HH", signature)
    assert alg == 0x0018, f"signature algorithm {alg:#x} is not ECDSA"
    (size,) = struct.unpack_from(">H", signature, 4)
    r = signature[6: 6 + size]
    (size_s,) = struct.unpack_from(">H", signature, 6 + size)
    s = signature[8 + size: 8 + size + size_s]
    return encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))


def public_key(pem: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey))
    return key


def properties(tools: Tools) -> dict[str, str]:
    """``tpm2_getcap properties-variable``: ``NAME`` -> value, and ``NAME.field`` ->
    value for the bit fields of TPM2_PT_PERMANENT and TPM2_PT_STARTUP_CLEAR."""
    out: dict[str, str] = {}
    group = ""
    for line in tools("tpm2_getcap", "properties-variable").splitlines():
        key, _, value = line.partition(":")
        if line.startswith(" "):
            out[f"{group}.{key.strip()}"] = value.strip()
        else:
            group = key.strip()
            out[group] = value.strip()
    return out
