"""Policy tickets: TPMT_TK_AUTH (Part 2, 10.7.5) made by TPM2_PolicySigned and
TPM2_PolicySecret and checked by TPM2_PolicyTicket; TPMT_TK_VERIFIED (Part 2, 10.7.4)
made by TPM2_VerifySignature and checked by TPM2_PolicyAuthorize.

A ticket is an HMAC keyed with a hierarchy's proof, so only this TPM can make one and
only until that proof changes. The ticket digests never leave this TPM's own
round trip, so their exact layout is ours (as it is each TPM's); the fields bound are
those Part 2 lists.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from ..codec import Int
from ..constants import RC, RH, ST
from ..crypto import CONTEXT_HASH
from ..structures import TPM2B_DIGEST, TicketTag

if TYPE_CHECKING:
    from ..tpm import TPM

# Part 2, 10.7: the hierarchy of a ticket is TPMI_RH_HIERARCHY+ (NULL allowed).
TPMI_RH_HIERARCHY_NULL = Annotated[
    int, Int("I", (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.NULL), RC.VALUE)]

# In the TPM-specific timeout buffer, the top bit says "expires on TPM Reset/Restart"
# (set when the authorization was not bound to a session's nonceTPM).
EXPIRES_ON_RESET = 1 << 63


@dataclass(frozen=True)
class TPMT_TK_AUTH:
    """Part 2, 10.7.5."""

    tag: Annotated[int, TicketTag(ST.AUTH_SIGNED, ST.AUTH_SECRET)]
    hierarchy: TPMI_RH_HIERARCHY_NULL
    digest: TPM2B_DIGEST


@dataclass(frozen=True)
class TPMT_TK_VERIFIED:
    """Part 2, 10.7.4."""

    tag: Annotated[int, TicketTag(ST.VERIFIED)]
    hierarchy: TPMI_RH_HIERARCHY_NULL
    digest: TPM2B_DIGEST


def verified_ticket(tpm: TPM, hierarchy: int, digest: bytes, key_name: bytes) -> bytes:
    """The digest of a TPMT_TK_VERIFIED (Part 2, 10.7.4):
    HMAC(proof(hierarchy), TPM_ST_VERIFIED || digest || keyName).

    TPM2_VerifySignature produces it for the digest it checked and the Name of the key
    that checked it; TPM2_PolicyAuthorize recomputes it to check a ticket."""
    proof = tpm.hierarchy_proof(hierarchy)
    return CONTEXT_HASH.hmac(proof, struct.pack(">H", ST.VERIFIED), digest, key_name)


def auth_ticket(tpm: TPM, tag: int, hierarchy: int, timeout_ms: int, expires_on_reset: bool,
                cp_hash: bytes, policy_ref: bytes, auth_name: bytes) -> TPMT_TK_AUTH:
    """TPMT_TK_AUTH (Part 2, 10.7.5): HMAC(proof(hierarchy), tag || timeout || cpHashA
    || policyRef || authName). A ticket whose authorization was not bound to a
    nonceTPM also binds the reset and restart counts, so it dies with TPM Time."""
    proof = tpm.hierarchy_proof(hierarchy)
    epoch = b""
    if expires_on_reset:
        epoch = struct.pack(">II", tpm.perm.reset_count, tpm.perm.restart_count)
    mac = CONTEXT_HASH.hmac(proof, struct.pack(">HQ", tag, timeout_ms), epoch,
                            _sized(cp_hash), _sized(policy_ref), _sized(auth_name))
    return TPMT_TK_AUTH(tag, hierarchy, mac)


def null_auth_ticket(tag: int) -> TPMT_TK_AUTH:
    """The NULL ticket returned when no ticket was asked for (Part 3, 23.3/23.4)."""
    return TPMT_TK_AUTH(tag, RH.NULL, b"")


def encode_timeout(timeout_ms: int, expires_on_reset: bool) -> bytes:
    """The TPM-specific TPM2B_TIMEOUT contents: TPM Time of expiry in ms, top bit set
    when the ticket dies with TPM Reset/Restart."""
    return struct.pack(">Q", timeout_ms | (EXPIRES_ON_RESET if expires_on_reset else 0))


def decode_timeout(buffer: bytes) -> tuple[int, bool] | None:
    """(timeout_ms, expires_on_reset) of a timeout buffer, or None if it is not ours."""
    if len(buffer) != 8:
        return None
    (value,) = struct.unpack(">Q", buffer)
    return value & ~EXPIRES_ON_RESET, bool(value & EXPIRES_ON_RESET)


def _sized(b: bytes) -> bytes:
    # Length-prefix the variable fields so that no two field splits HMAC alike.
    return struct.pack(">H", len(b)) + b


__all__ = [
    "TPMT_TK_AUTH",
    "TPMT_TK_VERIFIED",
    "auth_ticket",
    "decode_timeout",
    "encode_timeout",
    "null_auth_ticket",
    "verified_ticket",
]
