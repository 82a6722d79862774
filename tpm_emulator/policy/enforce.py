"""Enforcing a policy session when it authorizes a command (Part 1, 19.7.x; the
reference's CheckPolicyAuthSession): the policyDigest must equal the entity's
authPolicy, and every condition the policy assertions deferred to this moment —
command code, cpHash / nameHash / templateHash, locality, PCR and NV state, expiry,
physical presence — must hold.

``check_policy_session`` raises ``TpmError`` with the bare code; the caller adds the
session number to format-1 codes, as the reference does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..admin import presence
from ..commands import Auth
from ..constants import CC, RC
from ..crypto import equal
from ..errors import TpmError
from ..nv.public import TPMA_NV
from .context import U1

if TYPE_CHECKING:
    from ..session_table import Session
    from ..sessions import Entity
    from ..tpm import TPM

# TPM2_PolicyTemplate binds the template of these commands (Part 3, 23.21).
TEMPLATE_COMMANDS = frozenset({CC.Create, CC.CreatePrimary, CC.CreateLoaded})


@dataclass(frozen=True)
class PolicyFacts:
    """What the policy checks need to know about the command beyond its cpHash: the
    TPM's state, the locality it arrived at, and each authorization's handle and role."""

    tpm: TPM
    locality: int
    handles: tuple[int, ...]  # the handles that need authorization, in session order
    roles: tuple[Auth | None, ...]


def check_policy_session(s: Session, entity: Entity, index: int, cc: int, cp_hash: bytes,
                         names: list[bytes], params: bytes, facts: PolicyFacts | None) -> None:
    """Part 1, 19.7.x: may policy session ``s`` authorize the ``index``-th handle?"""
    p = s.policy
    if cc == CC.PolicySecret and not (p.auth_value_needed or p.password_needed):
        # Part 3, 23.4: a policy session authorizing PolicySecret must carry the
        # entity's authValue, else the secret is never proven.
        raise TpmError(RC.MODE, "PolicySecret needs PolicyAuthValue or PolicyPassword")
    if facts is not None and p.pcr_counter is not None:
        if p.pcr_counter != facts.tpm.reset_data.pcrs.update_counter:
            raise TpmError(RC.PCR_CHANGED, "PCRs changed since TPM2_PolicyPCR")
    if not equal(s.policy_digest, entity.auth_policy):
        raise TpmError(RC.POLICY_FAIL, "policyDigest differs from authPolicy")
    if facts is not None and p.timeout_ms and p.timeout_ms < facts.tpm.time_ms():
        raise TpmError(RC.EXPIRED, "policy authorization has expired")
    if p.command_code:
        if p.command_code != cc:
            raise TpmError(RC.POLICY_CC, "policy is for another command")
    elif facts is not None and facts.roles[index] in (Auth.ADMIN, Auth.DUP):
        # Part 1, 19.7.x: ADMIN and DUP roles need a policy that names the command.
        raise TpmError(RC.POLICY_FAIL, "ADMIN/DUP role without PolicyCommandCode")
    if p.locality:
        _check_locality(p.locality, facts.locality if facts is not None else 0)
    if p.pp_required and not presence.asserted():
        raise TpmError(RC.PP, "physical presence is not asserted")
    if p.u1_kind != U1.NONE and not equal(p.u1, _u1_of_command(s, p.u1_kind, cc, cp_hash,
                                                               names, params)):
        raise TpmError(RC.POLICY_FAIL, "cpHash, nameHash or templateHash differs")
    if p.nv_written is not None:
        _check_nv_written(p.nv_written, facts.handles[index] if facts is not None else 0,
                          facts)


def _check_locality(allowed: int, locality: int) -> None:
    """TPMA_LOCALITY (Part 2, 8.5): bits 0-4 for localities 0-4, or an extended
    locality (32-255) as a value."""
    if allowed < 32:
        ok = locality < 5 and bool(allowed >> locality & 1)
    else:
        ok = locality == allowed
    if not ok:
        raise TpmError(RC.LOCALITY, f"locality {locality} not allowed by the policy")


def _u1_of_command(s: Session, kind: U1, cc: int, cp_hash: bytes, names: list[bytes],
                   params: bytes) -> bytes:
    if kind == U1.CP_HASH:
        return cp_hash
    if kind == U1.NAME_HASH:
        return s.hash.digest(*names)
    # U1.TEMPLATE: the hash of the second parameter's contents (inPublic) of Create,
    # CreatePrimary or CreateLoaded.
    if cc not in TEMPLATE_COMMANDS or len(params) < 2:
        return b""
    (skip,) = struct.unpack_from(">H", params)
    at = 2 + skip
    if len(params) < at + 2:
        return b""
    (size,) = struct.unpack_from(">H", params, at)
    if len(params) < at + 2 + size:
        return b""
    return s.hash.digest(params[at + 2 : at + 2 + size])


def _check_nv_written(required: bool, handle: int, facts: PolicyFacts | None) -> None:
    nv = facts.tpm.perm.nv if facts is not None else None
    if nv is None or handle not in nv:
        raise TpmError(RC.POLICY_FAIL, "PolicyNvWritten on something not an NV index")
    written = nv.public(nv.get(handle)).has(TPMA_NV.WRITTEN)
    if written != required:
        raise TpmError(RC.POLICY_FAIL, "NV index WRITTEN state differs from the policy")
