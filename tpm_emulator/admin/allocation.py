"""PCR bank allocation across TPM Resets (Part 1, "PCR bank allocation"; Part 3, 22.5).

TPM2_PCR_Allocate does not change the PCRs in use: it records the new allocation in NV,
and the TPM starts using it after the next _TPM_Init (the reference writes the NV copy
of ``gp.pcrAllocated`` and reads it back at power-on). Until then, the TPM refuses
Shutdown(STATE) (Part 3, 9.4: a TPM Resume would bring back PCRs of the old allocation).

We keep the active allocation and the pending one apart and apply the pending one at
the next TPM2_Startup, which is the first command after _TPM_Init that can observe it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from ..codec import ListOf
from ..errors import StateFormatError
from ..pcr import FULL_SELECT, full_allocation
from ..structures import TPMS_PCR_SELECTION

if TYPE_CHECKING:
    from ..tpm import TPM


@dataclass
class PcrAllocation:
    """``active``: what the PCR commands see now; ``pending``: what TPM2_PCR_Allocate
    accepted since the last _TPM_Init (the reference's g_pcrReConfig), if anything."""

    active: dict[int, bytes] = field(default_factory=full_allocation)
    pending: dict[int, bytes] | None = None

    def request(self, allocation: dict[int, bytes]) -> None:
        self.pending = {alg: _normalised(bits) for alg, bits in sorted(allocation.items())}

    def take_effect(self) -> dict[int, bytes]:
        """At Startup after _TPM_Init: the pending allocation, if any, becomes active."""
        if self.pending is not None:
            self.active, self.pending = self.pending, None
        return self.active


def _normalised(bits: bytes) -> bytes:
    """The bitmap padded or cut to the implemented PCRs (22.5 ignores bits beyond)."""
    return bytes(a & b for a, b in zip(bits.ljust(len(FULL_SELECT), b"\x00"), FULL_SELECT,
                                       strict=False))


# ---- snapshot record (a Trailing record of state.StateRecord) --------------------------
_Banks = Annotated[tuple[TPMS_PCR_SELECTION, ...], ListOf(TPMS_PCR_SELECTION, 8)]


@dataclass(frozen=True)
class PcrAllocationRecord:
    active: _Banks
    pending: Annotated[tuple[tuple[TPMS_PCR_SELECTION, ...], ...], ListOf(_Banks, 1)]


def _selections(allocation: dict[int, bytes]) -> tuple[TPMS_PCR_SELECTION, ...]:
    return tuple(TPMS_PCR_SELECTION(alg, bits) for alg, bits in sorted(allocation.items()))


def _allocation(selections: tuple[TPMS_PCR_SELECTION, ...]) -> dict[int, bytes]:
    allocation = {s.hash: _normalised(s.pcrSelect) for s in selections}
    if sorted(allocation) != sorted(full_allocation()) or len(selections) != len(allocation):
        raise StateFormatError("PCR allocation does not list each bank once")
    return allocation


def allocation_record(state: PcrAllocation) -> PcrAllocationRecord:
    pending = () if state.pending is None else (_selections(state.pending),)
    return PcrAllocationRecord(_selections(state.active), pending)


def restore_allocation(tpm: TPM, records: tuple[PcrAllocationRecord, ...]) -> None:
    """Put the allocation back; a blob written before this record restores fully
    allocated, which is what every TPM had then. The reset data's banks (current and
    Shutdown(STATE) copy) take the active allocation."""
    state = PcrAllocation()
    if records:
        rec = records[0]
        state.active = _allocation(rec.active)
        state.pending = _allocation(rec.pending[0]) if rec.pending else None
    tpm.perm.pcr_allocation = state
    for rd in (tpm._rd, tpm.perm.shutdown_state):
        if rd is not None:
            rd.pcrs.allocated = state.active
