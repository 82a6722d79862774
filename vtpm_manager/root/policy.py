"""PCR selections and the policy digests DomS0's sealed KEK is bound to, computed offline.

Offline computation lets ``doms0 init`` seal to a policy and ``doms0 policy approve``
sign one without a trial session on the TPM, and lets a refusal say which PCR moved:
the TPM only answers "policy failed". Every rule here is from TPM 2.0 Part 3 (policy
commands) and Part 2 (TPML_PCR_SELECTION); the TPM's own answer is the final judge.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# bank name -> (TPM_ALG_ID, hash constructor), Part 2 §6.3
BANKS: dict[str, tuple[int, Callable[..., hashlib._Hash]]] = {
    "sha1": (0x0004, hashlib.sha1),
    "sha256": (0x000B, hashlib.sha256),
    "sha384": (0x000C, hashlib.sha384),
    "sha512": (0x000D, hashlib.sha512),
}
MAX_PCR = 23  # PC Client platforms have 24 PCRs per bank
TPM_CC_POLICY_PCR = 0x0000017F  # Part 2 §6.5.2
TPM_CC_POLICY_AUTHORIZE = 0x0000016A
POLICY_HASH = hashlib.sha256  # our policy sessions and sealed objects use SHA-256
SELECT_BYTES = 3  # sizeofSelect for 24 PCRs


class SelectionError(ValueError):
    """A PCR selection string is malformed; the message shows the expected form."""


@dataclass(frozen=True)
class PcrSelection:
    """Banks and PCR indices, in the order the TPM digests them.

    Written ``sha256:0,1,2,3,7`` (banks joined by ``+``), as tpm2-tools writes it.
    Indices are kept sorted because PolicyPCR concatenates PCRs in ascending order
    within each bank (Part 3 §23.7, Part 1 §17.6.2 "pcrDigest").
    """

    banks: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def parse(cls, text: str) -> PcrSelection:
        banks: dict[str, set[int]] = {}
        for part in filter(None, (p.strip() for p in text.split("+"))):
            bank, sep, indices = part.partition(":")
            bank = bank.strip().lower()
            if not sep or bank not in BANKS:
                raise SelectionError(
                    f"PCR selection {text!r}: expected BANK:N,N,... with BANK one of "
                    f"{', '.join(BANKS)} (e.g. sha256:0,1,2,3,7)")
            try:
                chosen = {int(i, 0) for i in indices.split(",") if i.strip()}
            except ValueError:
                raise SelectionError(f"PCR selection {text!r}: indices must be numbers") \
                    from None
            if not chosen or any(not 0 <= i <= MAX_PCR for i in chosen):
                raise SelectionError(f"PCR selection {text!r}: indices must be 0..{MAX_PCR}")
            banks.setdefault(bank, set()).update(chosen)
        if not banks:
            raise SelectionError("empty PCR selection; expected e.g. sha256:0,7")
        return cls(tuple((b, tuple(sorted(banks[b]))) for b in BANKS if b in banks))

    def with_pcr(self, bank: str, index: int) -> PcrSelection:
        """This selection plus one PCR (the DomS0 measurement PCR)."""
        return PcrSelection.parse(f"{self}+{bank}:{index}")

    def labels(self) -> list[str]:
        """``bank:index`` for each selected PCR, in digest order."""
        return [f"{bank}:{i}" for bank, indices in self.banks for i in indices]

    def marshal(self) -> bytes:
        """TPML_PCR_SELECTION (Part 2 §10.9.7) as PolicyPCR hashes it."""
        out = struct.pack(">I", len(self.banks))
        for bank, indices in self.banks:
            bitmap = bytearray(SELECT_BYTES)
            for i in indices:
                bitmap[i // 8] |= 1 << (i % 8)
            out += struct.pack(">HB", BANKS[bank][0], SELECT_BYTES) + bytes(bitmap)
        return out

    def __str__(self) -> str:
        return "+".join(f"{b}:{','.join(map(str, idx))}" for b, idx in self.banks)


def bank_size(bank: str) -> int:
    return BANKS[bank][1]().digest_size


def extend(value: bytes, digest: bytes, bank: str = "sha256") -> bytes:
    """PCR_Extend: new = H(old ‖ digest) (Part 1 §17.2)."""
    return BANKS[bank][1](value + digest).digest()


def policy_pcr(selection: PcrSelection, values: Mapping[str, bytes],
               previous: bytes = bytes(32)) -> bytes:
    """policyDigest after TPM2_PolicyPCR with these PCR values (Part 3 §23.7):
    H(previous ‖ TPM_CC_PolicyPCR ‖ pcrs ‖ H(PCR values concatenated))."""
    missing = [label for label in selection.labels() if label not in values]
    if missing:
        raise SelectionError(f"no value for {', '.join(missing)}")
    pcr_digest = POLICY_HASH(b"".join(values[label] for label in selection.labels())).digest()
    return POLICY_HASH(previous + struct.pack(">I", TPM_CC_POLICY_PCR) + selection.marshal()
                       + pcr_digest).digest()


def policy_authorize(key_name: bytes, policy_ref: bytes = b"") -> bytes:
    """The authPolicy that defers to an approval key (Part 3 §23.16): the digest is
    reset, then H(0 ‖ TPM_CC_PolicyAuthorize ‖ keyName), then H(that ‖ policyRef)."""
    first = POLICY_HASH(bytes(32) + struct.pack(">I", TPM_CC_POLICY_AUTHORIZE)
                        + key_name).digest()
    return POLICY_HASH(first + policy_ref).digest()


def approval_hash(approved_policy: bytes, policy_ref: bytes = b"") -> bytes:
    """aHash, what the approval key signs: H(approvedPolicy ‖ policyRef) (Part 3 §23.16)."""
    return POLICY_HASH(approved_policy + policy_ref).digest()


def differing(selection: PcrSelection, expected: Mapping[str, bytes],
              current: Mapping[str, bytes]) -> list[str]:
    """PCR labels whose current value is not the expected one."""
    return [label for label in selection.labels()
            if expected.get(label) != current.get(label)]
