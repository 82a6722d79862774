"""NV indices of every kind, their locks and policies."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .runner import (
    RC_S1,
    TPM_NT_BITS,
    TPM_NT_COUNTER,
    TPM_NT_EXTEND,
    TPM_NT_ORDINARY,
    TPM_RC_AUTH_UNAVAILABLE,
    TPM_RC_BAD_AUTH,
    TPM_RC_NV_LOCKED,
    TPM_RC_NV_UNINITIALIZED,
    nv_read,
    nv_type,
    tools_for,
)


def nv_ordinary(tcti: str, work: Path) -> None:
    """An ordinary index: write, read back, read public attributes, an index password,
    partial writes at an offset, undefine."""
    tools = tools_for(tcti, work)
    index = 0x01500101
    tools("tpm2_nvdefine", hex(index), "-C", "o", "-s", "32", "-p", "idxpw",
          "-a", "ownerread|ownerwrite|authread|authwrite|no_da")
    data = os.urandom(32)
    tools("tpm2_nvwrite", hex(index), "-C", "o", "-i", tools.write("data.bin", data))
    assert nv_read(tools, index, 32, "read1.bin") == data
    tools("tpm2_nvwrite", hex(index), "-C", hex(index), "-P", "idxpw", "--offset", "8",
          "-i", tools.write("patch.bin", b"PATCHED!"))
    tools("tpm2_nvread", hex(index), "-C", hex(index), "-P", "idxpw", "-s", "32",
          "-o", "read2.bin")
    assert tools.read("read2.bin") == data[:8] + b"PATCHED!" + data[16:]
    tools.expect_rc(TPM_RC_BAD_AUTH + RC_S1, "tpm2_nvread", hex(index), "-C", hex(index),
                    "-P", "wrong", "-s", "32")
    public = tools("tpm2_nvreadpublic", hex(index))
    assert hex(index) in public and "size: 32" in public and "ownerread" in public
    assert nv_type(tools, index) == TPM_NT_ORDINARY
    tools("tpm2_nvundefine", hex(index), "-C", "o")
    assert hex(index) not in tools("tpm2_nvreadpublic")


def nv_counter(tcti: str, work: Path) -> None:
    """A counter index: unreadable until first incremented, then counts by one."""
    tools = tools_for(tcti, work)
    index = 0x01500102
    tools("tpm2_nvdefine", hex(index), "-C", "o", "-s", "8",
          "-a", "nt=counter|ownerread|ownerwrite|no_da")
    tools.expect_rc(TPM_RC_NV_UNINITIALIZED, "tpm2_nvread", hex(index), "-C", "o", "-s", "8")
    tools("tpm2_nvincrement", hex(index), "-C", "o")
    first = int.from_bytes(nv_read(tools, index, 8, "c1.bin"), "big")
    tools("tpm2_nvincrement", hex(index), "-C", "o")
    tools("tpm2_nvincrement", hex(index), "-C", "o")
    assert int.from_bytes(nv_read(tools, index, 8, "c2.bin"), "big") == first + 2
    assert nv_type(tools, index) == TPM_NT_COUNTER
    tools("tpm2_nvundefine", hex(index), "-C", "o")


def nv_bits(tcti: str, work: Path) -> None:
    """A bit-field index: set bits OR into the value."""
    tools = tools_for(tcti, work)
    index = 0x01500103
    tools("tpm2_nvdefine", hex(index), "-C", "o", "-s", "8",
          "-a", "nt=bits|ownerread|ownerwrite|no_da")
    tools("tpm2_nvsetbits", hex(index), "-C", "o", "-i", "0x5")
    tools("tpm2_nvsetbits", hex(index), "-C", "o", "-i", "0x8000000000000100")
    assert int.from_bytes(nv_read(tools, index, 8, "bits.bin"), "big") == 0x8000000000000105
    assert nv_type(tools, index) == TPM_NT_BITS
    tools("tpm2_nvundefine", hex(index), "-C", "o")


def nv_extend(tcti: str, work: Path) -> None:
    """An extend index: each write hashes into the value like a PCR."""
    tools = tools_for(tcti, work)
    index = 0x01500104
    tools("tpm2_nvdefine", hex(index), "-C", "o", "-s", "32", "-g", "sha256",
          "-a", "nt=extend|ownerread|ownerwrite|no_da")
    tools("tpm2_nvextend", hex(index), "-C", "o", "-i", tools.write("e1.bin", b"first"))
    tools("tpm2_nvextend", hex(index), "-C", "o", "-i", tools.write("e2.bin", b"second"))
    want = hashlib.sha256(hashlib.sha256(bytes(32) + b"first").digest() + b"second").digest()
    assert nv_read(tools, index, 32, "ext.bin") == want
    assert nv_type(tools, index) == TPM_NT_EXTEND
    tools("tpm2_nvundefine", hex(index), "-C", "o")


def nv_locks(tcti: str, work: Path) -> None:
    """Write lock (WRITEDEFINE: until undefined) and read lock (READ_STCLEAR) refuse
    with TPM_RC_NV_LOCKED and show in the index's attributes."""
    tools = tools_for(tcti, work)
    index = 0x01500106
    tools("tpm2_nvdefine", hex(index), "-C", "o", "-s", "16",
          "-a", "ownerread|ownerwrite|writedefine|read_stclear|no_da")
    data = os.urandom(16)
    tools("tpm2_nvwrite", hex(index), "-C", "o", "-i", tools.write("d.bin", data))
    tools("tpm2_nvwritelock", hex(index), "-C", "o")
    tools.expect_rc(TPM_RC_NV_LOCKED, "tpm2_nvwrite", hex(index), "-C", "o", "-i", "d.bin")
    assert nv_read(tools, index, 16, "r.bin") == data
    tools("tpm2_nvreadlock", hex(index), "-C", "o")
    tools.expect_rc(TPM_RC_NV_LOCKED, "tpm2_nvread", hex(index), "-C", "o", "-s", "16")
    attributes = tools("tpm2_nvreadpublic", hex(index))
    assert "writelocked" in attributes and "readlocked" in attributes, attributes
    tools("tpm2_nvundefine", hex(index), "-C", "o")


def nv_policy(tcti: str, work: Path) -> None:
    """An index written only under its policy (PolicyCommandCode(NV_Write) and
    PolicyAuthValue with the index password) and read with its password."""
    tools = tools_for(tcti, work)
    index, data = hex(0x01500109), os.urandom(24)
    tools("tpm2_startauthsession", "-S", "trial.sess")
    tools("tpm2_policycommandcode", "-S", "trial.sess", "TPM2_CC_NV_Write")
    tools("tpm2_policyauthvalue", "-S", "trial.sess", "-L", "write.policy")
    tools("tpm2_flushcontext", "trial.sess")
    tools("tpm2_nvdefine", index, "-C", "o", "-s", "24", "-p", "nvpw", "-L", "write.policy",
          "-a", "policywrite|authread|no_da")
    # Password authorization is not enough for writing (TPMA_NV_AUTHWRITE is clear):
    # the index's authValue is not available for writing.
    tools.expect_rc(TPM_RC_AUTH_UNAVAILABLE, "tpm2_nvwrite", index, "-C", index, "-P", "nvpw",
                    "-i", tools.write("data.bin", data))
    tools("tpm2_startauthsession", "--policy-session", "-S", "w.sess")
    tools("tpm2_policycommandcode", "-S", "w.sess", "TPM2_CC_NV_Write")
    tools("tpm2_policyauthvalue", "-S", "w.sess")
    tools("tpm2_nvwrite", index, "-C", index, "-P", "session:w.sess+nvpw", "-i", "data.bin")
    tools("tpm2_flushcontext", "w.sess")
    tools("tpm2_nvread", index, "-C", index, "-P", "nvpw", "-s", "24", "-o", "back.bin")
    assert tools.read("back.bin") == data
    tools("tpm2_nvundefine", index, "-C", "o")
