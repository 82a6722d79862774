"""PIN Pass and PIN Fail indices: an NV index whose authValue is a PIN and whose data
counts how often that PIN was used (Part 1, clause 37, the TPM_NT_PIN_PASS and
TPM_NT_PIN_FAIL indices; Part 2, 13.2 and 13.3).

The data of such an index is a TPMS_NV_PIN_COUNTER_PARAMETERS: pinCount, then pinLimit.
Whoever may write the index (owner, platform or a policy: never the PIN itself) sets
both with TPM2_NV_Write; the TPM changes pinCount on its own whenever the index's
authValue is used to authorize a "read" of it (TPM2_NV_Read, TPM2_PolicySecret, …):

* PIN Fail: every failed try counts, a success starts the count over. The index must be
  TPMA_NV_NO_DA, so the PIN has its own limit instead of the TPM's lockout.
* PIN Pass: every successful use counts; failures count only for dictionary-attack
  protection (unless the index is NO_DA).

Either way the authValue is available only while the index is written and
pinCount < pinLimit; after that, TPM_RC_AUTH_UNAVAILABLE until someone allowed to write
the index lowers pinCount or raises pinLimit. The limit bars only password and HMAC
authorizations: a policy session (POLICYREAD and an authPolicy) is still accepted, and
when its policy used the authValue (PolicyAuthValue, PolicyPassword) that use counts
too. The reference does all this in IsAuthValueAvailable and at the end of
CheckAuthSession; so does libtpms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..codec import UINT32, marshal, unmarshal
from ..constants import RC, RC_FMT1, RC_N_SHIFT, RC_P, RC_S, SE
from ..errors import TpmError, base_code
from ..session_table import Session
from ..sessions import Entity, is_bound_to
from .public import TPM_NT, TPMA_NV, TPMS_NV_PUBLIC

if TYPE_CHECKING:
    from .store import NvIndex, NvStore

PIN_TYPES = frozenset({TPM_NT.PIN_FAIL, TPM_NT.PIN_PASS})

# Attributes a PIN index may not have (NvDefineSpace in the reference and libtpms): the
# PIN cannot write its own index (its authValue is no use before the index is written,
# and a PIN that could reset its own count would defeat it), and the index stays
# writable so that the count can be reset: no write-once lock, no global lock.
_REFUSED = TPMA_NV.AUTHWRITE | TPMA_NV.GLOBALLOCK | TPMA_NV.WRITEDEFINE

_U32_MAX = 0xFFFFFFFF
# What a wrong password or HMAC earns (CheckPWAuthSession / CheckSessionHMAC).
_WRONG_AUTH_VALUE = (RC.AUTH_FAIL, RC.BAD_AUTH)


@dataclass(frozen=True)
class TPMS_NV_PIN_COUNTER_PARAMETERS:
    """Part 2, 13.3: the eight octets of a PIN index."""

    pinCount: UINT32
    pinLimit: UINT32


def is_pin_index(public: TPMS_NV_PUBLIC) -> bool:
    return public.nt in PIN_TYPES


def define_refused(public: TPMS_NV_PUBLIC) -> bool:
    """Whether NV_DefineSpace refuses a PIN index's attributes (TPM_RC_ATTRIBUTES on
    publicInfo): PIN Fail needs NO_DA; neither may have AUTHWRITE, GLOBALLOCK or
    WRITEDEFINE."""
    if public.nt == TPM_NT.PIN_FAIL and not public.has(TPMA_NV.NO_DA):
        return True
    return is_pin_index(public) and bool(public.attributes & _REFUSED)


def parameters(index: NvIndex) -> TPMS_NV_PIN_COUNTER_PARAMETERS:
    return unmarshal(TPMS_NV_PIN_COUNTER_PARAMETERS, bytes(index.data[:8]))


def auth_value_available(index: NvIndex) -> bool:
    """IsAuthValueAvailable for a "read" of a PIN index: no AUTHREAD needed, but the
    index must hold a count, and the count must be under its limit."""
    if not index.has(TPMA_NV.WRITTEN):
        return False
    pin = parameters(index)
    return pin.pinCount < pin.pinLimit


def record_use(index: NvIndex, succeeded: bool) -> None:
    """Count one use of a written PIN index's authValue (the end of the reference's
    CheckAuthSession). pinCount is a UINT32 and wraps as one; the index's attributes,
    and so its Name, do not change."""
    if not is_pin_index(index.public) or not index.has(TPMA_NV.WRITTEN):
        return
    pin = parameters(index)
    if index.public.nt == TPM_NT.PIN_FAIL:
        count = 0 if succeeded else (pin.pinCount + 1) & _U32_MAX
    elif succeeded:
        count = (pin.pinCount + 1) & _U32_MAX
    else:
        return
    index.data[:8] = marshal(TPMS_NV_PIN_COUNTER_PARAMETERS(count, pin.pinLimit))


def uses_auth_value(s: Session | None, entity: Entity) -> bool:
    """Whether an authorization uses the entity's authValue (the reference's authUsed):
    a password always; an HMAC session unless bound to the entity (its authValue is then
    only in sessionKey); a policy session after PolicyAuthValue or PolicyPassword."""
    if s is None:
        return True
    if s.kind == SE.HMAC:
        return not is_bound_to(s, entity)
    return s.policy.auth_value_needed or s.policy.password_needed


@contextmanager
def pin_counting(store: NvStore, handles: Sequence[int], entities: Sequence[Entity],
                 sessions: Sequence[Session | None]) -> Iterator[Callable[[int], None]]:
    """Wrap the authorization checks of one command and count each use of a PIN index's
    authValue once its check is over: the checks run in session order and stop at the
    first failure, so every authorization before the one that failed passed. The
    function given marks the authorization about to be checked (``authorize``'s
    ``before_each``). Only a wrong authValue (TPM_RC_AUTH_FAIL or TPM_RC_BAD_AUTH on
    that very session) counts as a failed try; a refusal before the authValue was
    compared (lockout, a policy that does not hold, an unavailable authValue) does not
    count at all."""
    current = -1

    def reached(i: int) -> None:
        nonlocal current
        current = i

    def record(i: int, succeeded: bool) -> None:
        if i >= len(handles) or handles[i] not in store:
            return
        if uses_auth_value(sessions[i], entities[i]):
            record_use(store.get(handles[i]), succeeded)

    try:
        yield reached
    except TpmError as e:
        n = _session_number(e.rc)
        if n > current + 1:  # a session past the last authorization failed: all passed
            passed, failed = current + 1, None
        elif current >= 0 and n == current + 1 and base_code(e.rc) in _WRONG_AUTH_VALUE:
            passed, failed = current, current
        else:  # refused before its authValue was compared
            passed, failed = max(0, current), None
        for i in range(passed):
            record(i, True)
        if failed is not None:
            record(failed, False)
        raise
    for i in range(len(entities)):
        record(i, True)


def _session_number(rc: int) -> int:
    """The session a format-1 response code names (Part 2, 6.6.3), else 0."""
    if rc & RC_FMT1 and rc & RC_S and not rc & RC_P:
        return (rc >> RC_N_SHIFT) & 0x7
    return 0
