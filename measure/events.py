"""Measurement events: what gets extended into a PCR and logged, and its replay.

An :class:`Event` is exactly one ``TCG_PCR_EVENT2`` of the crypto-agile log (TCG PC
Client Platform Firmware Profile, §10.2.2) minus its framing: PCR index, event type,
one digest per bank, event data. The finalizer extends ``digests`` into ``pcr`` with
TPM2_PCR_Extend and hands the same value to the event-log writer, so what is logged
is what was extended.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import eventlog
from .hashing import DIGEST_SIZES, TPM_ALG_IDS

# TCG PC Client PFP, Table 9 "Events" (the ones our measurements use).
EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_EVENT_TAG = 0x00000006
EV_IPL = 0x0000000D
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003

EVENT_TYPE_NAMES: Mapping[int, str] = {
    EV_NO_ACTION: "EV_NO_ACTION", EV_SEPARATOR: "EV_SEPARATOR", EV_EVENT_TAG: "EV_EVENT_TAG",
    EV_IPL: "EV_IPL", EV_EFI_BOOT_SERVICES_APPLICATION: "EV_EFI_BOOT_SERVICES_APPLICATION",
}
EVENT_TYPES_BY_NAME: Mapping[str, int] = {name: v for v, name in EVENT_TYPE_NAMES.items()}

PCR_COUNT = 24


@dataclass(frozen=True)
class Event:
    """One extend-and-log step. Validated on construction: a PCR the TPM has, a known
    bank, a digest of that bank's size."""

    pcr: int
    event_type: int
    digests: dict[str, bytes]
    data: bytes
    # What was measured ("kernel", "initrd", ...): not logged, not compared; lets a
    # verifier that finds a mismatch name the item (``measure.verify`` reads it).
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.pcr, bool) or not isinstance(self.pcr, int) \
                or not 0 <= self.pcr < PCR_COUNT:
            raise ValueError(f"PCR index must be 0..{PCR_COUNT - 1}, got {self.pcr!r}")
        if not isinstance(self.event_type, int) or not 0 <= self.event_type <= 0xFFFFFFFF:
            raise ValueError(f"event type must be a UINT32, got {self.event_type!r}")
        if not self.digests:
            raise ValueError("an event needs at least one digest")
        for bank, digest in self.digests.items():
            if bank not in TPM_ALG_IDS:
                raise ValueError(f"unknown PCR bank {bank!r}")
            if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZES[bank]:
                raise ValueError(f"{bank} digest must be {DIGEST_SIZES[bank]} bytes")
        if not isinstance(self.data, bytes):
            raise ValueError("event data must be bytes")

    @property
    def type_name(self) -> str:
        return EVENT_TYPE_NAMES.get(self.event_type, f"{self.event_type:#010x}")


def replay(events: Iterable[Event], banks: Iterable[str]) -> dict[str, dict[int, bytes]]:
    """The PCR values the events leave, per bank, for every PCR they touch.

    The event log's replay is the one rule for this (``EV_NO_ACTION`` skipped, DRTM
    PCRs starting at all ones), so prediction and verification cannot disagree.
    """
    try:
        return eventlog.replay(
            [eventlog.LogEvent(e.pcr, e.event_type, e.digests, e.data) for e in events],
            banks)
    except eventlog.EventLogError as exc:
        raise ValueError(str(exc)) from None
