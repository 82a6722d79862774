"""PCR banks and the PC-client PCR attribute table.

Which locality may extend or reset which PCR, which PCRs survive Shutdown(STATE), and
which start as all ones is data, read from one table (TCG PC Client Platform TPM
Profile, "PCR attributes"; the values of the reference implementation's PCR.c, with
the PC-client "no increment" set 16, 21-23 that libtpms uses and swtpm shows).
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import IMPLEMENTATION_PCR, PCR_SELECT_MAX, PT_PCR
from .crypto import HASHES

# Locality bit masks: bit n set = locality n allowed.
_ANY = 0b11111
_L0_3 = 0b01111
_L4 = 0b10000


@dataclass(frozen=True)
class PcrAttributes:
    """One row of the attribute table."""

    state_saved: bool  # preserved by Shutdown(STATE)/Startup(STATE) (TPM Resume)
    reset_localities: int  # who may TPM2_PCR_Reset it
    extend_localities: int  # who may extend it
    drtm: bool = False  # starts as all ones; zeroed by a dynamic launch
    no_increment: bool = False  # changes do not bump pcrUpdateCounter


_STATIC_RTM = PcrAttributes(state_saved=True, reset_localities=0, extend_localities=_ANY)

PCR_ATTRIBUTES: tuple[PcrAttributes, ...] = (
    *(_STATIC_RTM,) * 16,  # PCR 0-15: static RTM, never reset by command
    PcrAttributes(False, _L0_3, _ANY, no_increment=True),  # 16: debug
    PcrAttributes(False, _L4, 0b11100, drtm=True),  # 17: locality 4
    PcrAttributes(False, _L4, 0b11100, drtm=True),  # 18: locality 3
    PcrAttributes(False, _L4, 0b01100, drtm=True),  # 19: locality 2
    PcrAttributes(False, 0b10100, 0b01110, drtm=True),  # 20: locality 1
    PcrAttributes(False, 0b10100, 0b00100, drtm=True, no_increment=True),  # 21: dynamic OS
    PcrAttributes(False, 0b10100, 0b00100, drtm=True, no_increment=True),  # 22: dynamic OS
    PcrAttributes(False, _L0_3, _ANY, no_increment=True),  # 23: application specific
)
assert len(PCR_ATTRIBUTES) == IMPLEMENTATION_PCR

# The PCRs whose authValue (TPM2_PCR_SetAuthValue) and authPolicy (TPM2_PCR_SetAuthPolicy)
# can be set: one group of each, PCR 20-22, as in the reference and libtpms.
PCR_AUTH_GROUP = range(20, 23)
PCR_POLICY_GROUP = range(20, 23)


def locality_mask(locality: int) -> int:
    """Bit for a locality in the tables above. Extended localities (32-255) hold no
    PCR rights in the PC-client profile."""
    return 1 << locality if 0 <= locality <= 4 else 0


def may_extend(pcr: int, locality: int) -> bool:
    return bool(PCR_ATTRIBUTES[pcr].extend_localities & locality_mask(locality))


def may_reset(pcr: int, locality: int) -> bool:
    return bool(PCR_ATTRIBUTES[pcr].reset_localities & locality_mask(locality))


def selection_bitmap(pcrs: list[int] | range) -> bytes:
    bits = bytearray(PCR_SELECT_MAX)
    for p in pcrs:
        bits[p // 8] |= 1 << (p % 8)
    return bytes(bits)


def pcr_property_bitmaps() -> dict[int, bytes]:
    """TPM_CAP_PCR_PROPERTIES (Part 2, 6.14) derived from the attribute table."""
    rows = list(enumerate(PCR_ATTRIBUTES))
    props: dict[int, bytes] = {
        PT_PCR.SAVE: selection_bitmap([i for i, a in rows if a.state_saved]),
    }
    for loc in range(5):
        ext = PT_PCR.EXTEND_L0 + 2 * loc
        props[ext] = selection_bitmap([i for i, a in rows if a.extend_localities >> loc & 1])
        props[ext + 1] = selection_bitmap([i for i, a in rows if a.reset_localities >> loc & 1])
    props[PT_PCR.NO_INCREMENT] = selection_bitmap([i for i, a in rows if a.no_increment])
    props[PT_PCR.DRTM_RESET] = selection_bitmap([i for i, a in rows if a.drtm])
    props[PT_PCR.POLICY] = selection_bitmap(PCR_POLICY_GROUP)
    props[PT_PCR.AUTH] = selection_bitmap(PCR_AUTH_GROUP)
    return props


# A bank with every implemented PCR in it: the allocation a TPM leaves the factory with.
FULL_SELECT = bytes([0xFF] * (IMPLEMENTATION_PCR // 8))


def full_allocation() -> dict[int, bytes]:
    return dict.fromkeys(sorted(HASHES), FULL_SELECT)


def _bit(bitmap: bytes, pcr: int) -> bool:
    return pcr // 8 < len(bitmap) and bool(bitmap[pcr // 8] >> (pcr % 8) & 1)


class PcrBanks:
    """One bank per implemented hash, the pcrUpdateCounter, and the active allocation
    (which PCRs of which bank exist until the next TPM Reset, Part 1, "PCR bank
    allocation"). Every bank keeps room for every PCR, as the reference does; a PCR
    outside the allocation is neither extended nor read."""

    __slots__ = ("allocated", "banks", "update_counter")

    def __init__(self) -> None:
        self.banks: dict[int, list[bytes]] = {
            alg: [bytes(h.size)] * IMPLEMENTATION_PCR for alg, h in HASHES.items()
        }
        self.update_counter = 0
        self.allocated: dict[int, bytes] = full_allocation()  # never mutated, only replaced

    def initialise(self, startup_locality: int, keep: PcrBanks | None = None) -> None:
        """PCR values at Startup (Part 1, "TPM Reset/Restart/Resume"): zero, all ones for
        DRTM PCRs, PCR 0 carrying the startup locality in its last octet; with ``keep``
        (TPM Resume) the state-saved PCRs come back from the Shutdown(STATE) copy.
        Every PCR given a fresh value counts as changed once, whatever the number of
        banks (reference PCRStartup), so libtpms reports 20 after a TPM Reset."""
        for i, attrs in enumerate(PCR_ATTRIBUTES):
            if keep is None or not attrs.state_saved:
                self.changed(i)
        for alg, values in self.banks.items():
            size = HASHES[alg].size
            for i, attrs in enumerate(PCR_ATTRIBUTES):
                if keep is not None and attrs.state_saved:
                    values[i] = keep.banks[alg][i]
                elif attrs.drtm:
                    values[i] = b"\xff" * size
                elif i == 0 and 0 < startup_locality <= 4:
                    values[i] = bytes(size - 1) + bytes([startup_locality])
                else:
                    values[i] = bytes(size)

    def copy(self) -> PcrBanks:
        other = PcrBanks()
        other.banks = {alg: list(v) for alg, v in self.banks.items()}
        other.update_counter = self.update_counter
        other.allocated = self.allocated
        return other

    def is_allocated(self, alg: int, pcr: int) -> bool:
        return pcr < IMPLEMENTATION_PCR and _bit(self.allocated.get(alg, b""), pcr)

    def changed(self, pcr: int) -> None:
        if not PCR_ATTRIBUTES[pcr].no_increment:
            self.update_counter = (self.update_counter + 1) & 0xFFFFFFFF

    def extend(self, pcr: int, alg: int, digest: bytes) -> None:
        """PCR[alg][pcr] := H(PCR || digest) (Part 1, 17.2), counting one change per bank."""
        values = self.banks.get(alg)
        if values is None or not self.is_allocated(alg, pcr):
            return  # not allocated: silently skipped, as the reference's PCRExtend does
        values[pcr] = HASHES[alg].digest(values[pcr], digest)
        self.changed(pcr)

    def reset(self, pcr: int) -> None:
        for alg, values in self.banks.items():
            values[pcr] = bytes(HASHES[alg].size)
        self.changed(pcr)

    def read(self, selections: tuple[tuple[int, bytes], ...]
             ) -> tuple[tuple[tuple[int, bytes], ...], list[bytes]]:
        """PCR_Read semantics: at most eight digests, in selection order; bits whose value
        did not fit (or whose PCR is not allocated) are cleared in the returned selection."""
        out_sel: list[tuple[int, bytes]] = []
        digests: list[bytes] = []
        for alg, bitmap in selections:
            values = self.banks.get(alg)
            kept = bytearray(len(bitmap))
            for pcr in range(len(bitmap) * 8):
                if not bitmap[pcr // 8] >> (pcr % 8) & 1:
                    continue
                if values is not None and self.is_allocated(alg, pcr) and len(digests) < 8:
                    digests.append(values[pcr])
                    kept[pcr // 8] |= 1 << (pcr % 8)
            out_sel.append((alg, bytes(kept)))
        return tuple(out_sel), digests


    def select(self, selections: tuple[tuple[int, bytes], ...]
               ) -> tuple[tuple[tuple[int, bytes], ...], list[bytes]]:
        """The reference's FilterPcr + PCRComputeCurrentDigest input, for Quote,
        PolicyPCR and the like: every selected PCR that is allocated, in selection
        order (no limit of eight), and the selection with the other bits cleared."""
        out_sel: list[tuple[int, bytes]] = []
        values: list[bytes] = []
        for alg, bitmap in selections:
            kept = bytearray(len(bitmap))
            for pcr in range(len(bitmap) * 8):
                if _bit(bitmap, pcr) and alg in self.banks and self.is_allocated(alg, pcr):
                    kept[pcr // 8] |= 1 << (pcr % 8)
                    values.append(self.banks[alg][pcr])
            out_sel.append((alg, bytes(kept)))
        return tuple(out_sel), values
