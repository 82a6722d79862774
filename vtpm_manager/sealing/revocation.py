"""The per-vTPM revocation counter that makes old signed policies stop working.

A *revocable* authorized seal trusts a signed PCR policy only while the vTPM's revocation
counter is at most the version the policy was signed for: the approval key signs
``PolicyPCR(state) ∧ PolicyNV(counter ≤ version)`` (:func:`.policy.sign_policy` with a
version). Raising the counter past a version revokes every signature for it and for older
versions, without re-sealing anything.

The counter is an NV index of type TPM_NT_COUNTER (Part 1, 37.2.2; Part 2, 13.4):

- it only goes up (TPM2_NV_Increment), and an index deleted and defined again starts at the
  highest value any counter in the TPM has had, so whoever holds the vTPM — the guest
  included — can revoke more but never un-revoke;
- its auth value is empty and it has AUTHWRITE|AUTHREAD: anyone may read it (PolicyNV
  authorizes with the index itself) and raise it, which is harmless for the same reason;
- NO_DA, so reading it with the empty password never counts towards lockout;
- its Name is part of every signed revocable policy (PolicyNV hashes the index's Name), so
  its public area is fixed here, byte for byte, and an index someone else defined at the
  same handle with other attributes simply never satisfies a signed policy.

This module reads and raises the counter through an ESAPI; the digests are in
:mod:`.policy`. It touches nothing else in the vTPM.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_NT, TPMA_NV
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

from .errors import SealingError

#: The revocation counter's handle: owner range (Part 2, 7.4, TPM_HT_NV_INDEX 0x01), in
#: the block TCG's registry leaves to the TPM owner (0x01000000-0x013FFFFF).
REVOCATION_INDEX: Final = 0x01000F00
#: A counter's data is one UINT64, big-endian (Part 2, 13.4).
COUNTER_SIZE: Final = 8
COUNTER_ATTRIBUTES: Final = (TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA
                             | (TPM2_NT.COUNTER << TPMA_NV.TPM2_NT_SHIFT))
#: Revocation steps the counter one NV_Increment at a time; a typo such as ``--below
#: 100000`` should not turn into a hundred thousand NV writes that cannot be undone.
MAX_RAISE: Final = 1000

_TPM_ALG_SHA256: Final = 0x000B


class NoRevocationCounter(SealingError):
    """The vTPM has no (written) revocation counter: nothing revocable was sealed in it."""


def counter_public(index: int = REVOCATION_INDEX, *, written: bool = True) -> bytes:
    """The marshalled TPMS_NV_PUBLIC of the counter (Part 2, 13.5), as the TPM holds it
    before (``written=False``) or after its first NV_Increment."""
    attributes = int(COUNTER_ATTRIBUTES) | (int(TPMA_NV.WRITTEN) if written else 0)
    return struct.pack(">IHIHH", index, _TPM_ALG_SHA256, attributes, 0, COUNTER_SIZE)


def counter_name(index: int = REVOCATION_INDEX) -> bytes:
    """The index's Name once written (Part 1, 16: nameAlg ‖ H(TPMS_NV_PUBLIC)): the Name
    TPM2_PolicyNV hashes, since it uses the index's current public area."""
    return struct.pack(">H", _TPM_ALG_SHA256) + hashlib.sha256(counter_public(index)).digest()


def _defined(esapi: ESAPI, index: int) -> bool:
    _, data = esapi.get_capability(TPM2_CAP.HANDLES, index, 1)
    return any(int(handle) == index for handle in data.data.handles)


def _counter(esapi: ESAPI, index: int) -> tuple[ESYS_TR, bool]:
    """The index's ESYS_TR and whether it has been written; refuses an index that is not
    our counter (its Name would never match a signed policy)."""
    if not _defined(esapi, index):
        raise NoRevocationCounter(f"no revocable seal in this vTPM (no revocation counter "
                                  f"at {index:#010x})")
    nv = esapi.tr_from_tpmpublic(index)
    public, _ = esapi.nv_read_public(nv)
    written = bool(public.nvPublic.attributes & TPMA_NV.WRITTEN)
    if bytes(public.nvPublic.marshal()) != counter_public(index, written=written):
        esapi.tr_close(nv)
        raise SealingError(f"the NV index at {index:#010x} is not a revocation counter "
                           f"(attributes {int(public.nvPublic.attributes):#010x})")
    return nv, written


def ensure_counter(esapi: ESAPI, index: int = REVOCATION_INDEX) -> int:
    """Define the counter if absent (owner auth, empty) and increment it once if it was
    never written, so PolicyNV can read it; returns its value."""
    try:
        if not _defined(esapi, index):
            template = TPM2B_NV_PUBLIC(nvPublic=TPMS_NV_PUBLIC(
                nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=COUNTER_ATTRIBUTES,
                authPolicy=b"", dataSize=COUNTER_SIZE))
            esapi.tr_close(esapi.nv_define_space(b"", template, ESYS_TR.OWNER))
        nv, written = _counter(esapi, index)
        try:
            if not written:
                esapi.nv_increment(nv)
            return _read(esapi, nv)
        finally:
            esapi.tr_close(nv)
    except TSS2_Exception as exc:
        raise SealingError(f"cannot set up the revocation counter at {index:#010x}: "
                           f"{exc}") from exc


def read_counter(esapi: ESAPI, index: int = REVOCATION_INDEX) -> int:
    """The counter's value; :class:`NoRevocationCounter` if it is absent or never written."""
    try:
        nv, written = _counter(esapi, index)
        try:
            if not written:
                raise NoRevocationCounter(f"the revocation counter at {index:#010x} was "
                                          "never incremented")
            return _read(esapi, nv)
        finally:
            esapi.tr_close(nv)
    except TSS2_Exception as exc:
        raise SealingError(f"cannot read the revocation counter at {index:#010x}: "
                           f"{exc}") from exc


def raise_counter(esapi: ESAPI, at_least: int, index: int = REVOCATION_INDEX) -> int:
    """NV_Increment the counter until it is ``at_least`` (revoking every signed policy for
    a lower version); returns its value, unchanged if it already was. Never lowers it —
    no TPM command can."""
    try:
        nv, written = _counter(esapi, index)
        try:
            if not written:
                raise NoRevocationCounter(f"the revocation counter at {index:#010x} was "
                                          "never incremented")
            value = _read(esapi, nv)
            if at_least - value > MAX_RAISE:
                raise SealingError(f"the revocation counter is {value}; raising it to "
                                   f"{at_least} takes more than {MAX_RAISE} increments, "
                                   "which cannot be undone — raise it in smaller steps")
            while value < at_least:
                esapi.nv_increment(nv)
                value = _read(esapi, nv)      # another holder may raise it meanwhile
            return value
        finally:
            esapi.tr_close(nv)
    except TSS2_Exception as exc:
        raise SealingError(f"cannot raise the revocation counter at {index:#010x}: "
                           f"{exc}") from exc


def _read(esapi: ESAPI, nv: ESYS_TR) -> int:
    return int(struct.unpack(">Q", bytes(esapi.nv_read(nv, COUNTER_SIZE, 0)))[0])
