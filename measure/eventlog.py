"""TCG PC Client crypto-agile event logs: write, parse (strictly, bounded) and replay.

Layout (TCG PC Client Platform Firmware Profile 2.0, section 10; all little-endian):

* the first record is a SHA-1-format ``TCG_PCClientPCREvent`` (PCR 0, ``EV_NO_ACTION``,
  20 zero bytes) whose data is ``TCG_EfiSpecIDEvent`` "Spec ID Event03" declaring the
  banks the log carries and each bank's digest size (section 10.4.5.1);
* every following record is a ``TCG_PCR_EVENT2`` with a ``TPML_DIGEST_VALUES`` holding
  one digest for every declared bank (section 10.2.2).

The parser reads a log that came from someone else (a guest, a verifier's upload), so it
never trusts a length before checking it against the bytes that are actually there and
against fixed limits: a hostile log cannot make us allocate more than it is long, nor loop
longer than it has events. Every problem is an :class:`EventLogError` subclass.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "BANKS", "EventLog", "EventLogError", "EventLogTooLarge", "EventType", "LogEvent",
    "MalformedEventLog", "MissingDigest", "TruncatedEventLog", "UndeclaredBank",
    "UnsupportedBank", "encode", "event_type_name", "parse", "replay", "reset_value",
]

# TPM_ALG_ID values and digest sizes (TPM 2.0 Part 2, 6.3) for the banks we replay.
BANKS: Mapping[str, tuple[int, int]] = MappingProxyType({
    "sha1": (0x0004, 20),
    "sha256": (0x000B, 32),
    "sha384": (0x000C, 48),
    "sha512": (0x000D, 64),
})
_BANK_BY_ID: Mapping[int, str] = MappingProxyType({alg: name for name, (alg, _) in BANKS.items()})

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
PCR_COUNT = 24

# Bounds for hostile input. Real firmware logs are tens of KiB; the largest single event
# is an EFI variable (a db/dbx signature list, well under 1 MiB).
MAX_LOG_BYTES = 16 * 1024 * 1024
MAX_EVENT_DATA = 1024 * 1024
MAX_ALGORITHMS = 8       # TCG_EfiSpecIdEvent.numberOfAlgorithms (HASH_COUNT is far lower)
MAX_DIGEST_SIZE = 64     # TPMU_HA's largest member (SHA-512 / SHA3-512)


class EventType(enum.IntEnum):
    """Event types (PC Client PFP 2.0, table 9 and 10)."""

    EV_PREBOOT_CERT = 0x0
    EV_POST_CODE = 0x1
    EV_UNUSED = 0x2
    EV_NO_ACTION = 0x3
    EV_SEPARATOR = 0x4
    EV_ACTION = 0x5
    EV_EVENT_TAG = 0x6
    EV_S_CRTM_CONTENTS = 0x7
    EV_S_CRTM_VERSION = 0x8
    EV_CPU_MICROCODE = 0x9
    EV_PLATFORM_CONFIG_FLAGS = 0xA
    EV_TABLE_OF_DEVICES = 0xB
    EV_COMPACT_HASH = 0xC
    EV_IPL = 0xD
    EV_IPL_PARTITION_DATA = 0xE
    EV_NONHOST_CODE = 0xF
    EV_NONHOST_CONFIG = 0x10
    EV_NONHOST_INFO = 0x11
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x12
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0


def event_type_name(event_type: int) -> str:
    """The spec's name for an event type, or its hex code if the spec has none."""
    try:
        return EventType(event_type).name
    except ValueError:
        return f"0x{event_type:08x}"


class EventLogError(ValueError):
    """A log we cannot accept; the subclass says why."""


class TruncatedEventLog(EventLogError):
    """The log ends inside a record."""


class MalformedEventLog(EventLogError):
    """A field holds a value the format forbids (bad header, bad PCR index, ...)."""


class EventLogTooLarge(EventLogError):
    """A size field or the log itself exceeds our bounds."""


class UndeclaredBank(EventLogError):
    """An event carries a digest for a bank the Spec ID header does not declare."""


class MissingDigest(EventLogError):
    """An event lacks the digest of a declared bank (or carries one twice)."""


class UnsupportedBank(EventLogError):
    """Asked to hash or replay a bank we do not implement."""


def _check_bank(bank: str) -> int:
    """The digest size of a bank we can compute, or :class:`UnsupportedBank`."""
    if bank not in BANKS:
        raise UnsupportedBank(f"unsupported PCR bank {bank!r} (have {', '.join(BANKS)})")
    return BANKS[bank][1]


@dataclass(frozen=True)
class LogEvent:
    """One measurement: the PCR, the event type, one digest per bank, the event data.

    The prediction module's ``Event`` has the same field names, so predicted and logged
    events compare field by field.
    """

    pcr: int
    event_type: int
    digests: Mapping[str, bytes]
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.pcr < PCR_COUNT:
            raise MalformedEventLog(f"PCR index {self.pcr} outside 0..{PCR_COUNT - 1}")
        if not 0 <= self.event_type <= 0xFFFFFFFF:
            raise MalformedEventLog(f"event type {self.event_type} is not a UINT32")
        if len(self.data) > MAX_EVENT_DATA:
            raise EventLogTooLarge(f"event data of {len(self.data)} bytes > {MAX_EVENT_DATA}")
        for bank, digest in self.digests.items():
            size = BANKS[bank][1] if bank in BANKS else len(digest)
            if len(digest) != size:
                raise MalformedEventLog(f"{bank} digest of {len(digest)} bytes, need {size}")
        # Frozen, so copy the mapping: a caller's later edits must not change the event.
        object.__setattr__(self, "digests", MappingProxyType(dict(self.digests)))
        object.__setattr__(self, "data", bytes(self.data))

    @classmethod
    def measure(cls, pcr: int, event_type: int, data: bytes, banks: Iterable[str],
                payload: bytes | None = None) -> LogEvent:
        """An event whose digests hash ``payload`` (default: the event data itself).

        GRUB and the kernel hash something other than what they log (the command line
        without its ``kernel_cmdline:`` prefix, the initrd bytes behind a tag), hence the
        separate payload.
        """
        measured = data if payload is None else payload
        digests = {}
        for bank in banks:
            _check_bank(bank)
            digests[bank] = hashlib.new(bank, measured).digest()
        return cls(pcr, event_type, digests, data)

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)


@dataclass(frozen=True)
class EventLog:
    """A crypto-agile log: the banks its header declares (in header order) and its events.

    ``sizes`` holds the header's digest size for every bank, including any bank we cannot
    hash ourselves (it is still needed to step over its digests).
    """

    banks: tuple[str, ...]
    events: tuple[LogEvent, ...] = ()
    sizes: Mapping[str, int] = field(default_factory=dict)
    platform_class: int = 0
    uintn_size: int = 2
    vendor_info: bytes = b""

    def __post_init__(self) -> None:
        if not self.banks or len(self.banks) > MAX_ALGORITHMS:
            raise MalformedEventLog(f"a log declares 1..{MAX_ALGORITHMS} banks")
        if len(set(self.banks)) != len(self.banks):
            raise MalformedEventLog(f"bank declared twice in {self.banks}")
        sizes = dict(self.sizes)
        for bank in self.banks:
            if bank not in sizes:
                sizes[bank] = _check_bank(bank)
        object.__setattr__(self, "sizes", MappingProxyType(sizes))
        object.__setattr__(self, "events", tuple(self.events))
        if len(self.vendor_info) > 0xFF:
            raise MalformedEventLog("vendorInfo is at most 255 bytes")

    def append(self, *events: LogEvent) -> EventLog:
        """A new log with ``events`` added (logs are values; builders keep the latest)."""
        return EventLog(self.banks, self.events + events, self.sizes, self.platform_class,
                        self.uintn_size, self.vendor_info)


# -- writing -------------------------------------------------------------------------


def _spec_id_event(log: EventLog) -> bytes:
    """TCG_EfiSpecIDEvent (PFP 2.0, 10.4.5.1): version 2.0, errata 0."""
    body = bytearray(SPEC_ID_SIGNATURE)
    body += struct.pack("<IBBBBI", log.platform_class, 0, 2, 0, log.uintn_size, len(log.banks))
    for bank in log.banks:
        body += struct.pack("<HH", _alg_id(bank), log.sizes[bank])
    body += struct.pack("<B", len(log.vendor_info)) + log.vendor_info
    return bytes(body)


def _alg_id(bank: str) -> int:
    if bank in BANKS:
        return BANKS[bank][0]
    if bank.startswith("0x"):
        return int(bank, 16)
    raise UnsupportedBank(f"unknown bank {bank!r}")


def encode(log: EventLog) -> bytes:
    """The log's bytes: the SHA-1-format header, then one TCG_PCR_EVENT2 per event with
    the digests in the header's bank order (as firmware writes them)."""
    spec = _spec_id_event(log)
    out = bytearray(struct.pack("<II", 0, EventType.EV_NO_ACTION) + bytes(20))
    out += struct.pack("<I", len(spec)) + spec
    for event in log.events:
        missing = [bank for bank in log.banks if bank not in event.digests]
        extra = [bank for bank in event.digests if bank not in log.banks]
        if missing or extra:
            raise MissingDigest(
                f"event on PCR {event.pcr} ({event.type_name}) has banks "
                f"{sorted(event.digests)}, the log declares {list(log.banks)}")
        out += struct.pack("<III", event.pcr, event.event_type, len(log.banks))
        for bank in log.banks:
            out += struct.pack("<H", _alg_id(bank)) + event.digests[bank]
        out += struct.pack("<I", len(event.data)) + event.data
    return bytes(out)


# -- parsing -------------------------------------------------------------------------


class _Reader:
    """A cursor over the log that raises :class:`TruncatedEventLog` instead of reading
    past the end; ``take`` never allocates more than the bytes that exist."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise TruncatedEventLog(
                f"log ends inside {what} at offset {self.offset} "
                f"(need {n} bytes, {self.remaining()} left)")
        chunk = bytes(self.data[self.offset:self.offset + n])
        self.offset += n
        return chunk

    def u8(self, what: str) -> int:
        return int(self.take(1, what)[0])

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


def _parse_spec_id(data: bytes) -> EventLog:
    reader = _Reader(data)
    if reader.take(16, "Spec ID signature") != SPEC_ID_SIGNATURE:
        raise MalformedEventLog("first event is not a \"Spec ID Event03\" header "
                                "(SHA-1-only logs are not supported)")
    platform_class = reader.u32("platformClass")
    minor, major = reader.u8("specVersionMinor"), reader.u8("specVersionMajor")
    reader.u8("specErrata")
    uintn_size = reader.u8("uintnSize")
    if (major, minor) != (2, 0):
        raise MalformedEventLog(f"Spec ID version {major}.{minor}, need 2.0")
    count = reader.u32("numberOfAlgorithms")
    if not 1 <= count <= MAX_ALGORITHMS:
        raise MalformedEventLog(f"numberOfAlgorithms {count} outside 1..{MAX_ALGORITHMS}")
    banks: list[str] = []
    sizes: dict[str, int] = {}
    for _ in range(count):
        alg, size = reader.u16("algorithmId"), reader.u16("digestSize")
        bank = _BANK_BY_ID.get(alg, f"0x{alg:04x}")
        if bank in sizes:
            raise MalformedEventLog(f"bank {bank} declared twice")
        if bank in BANKS and BANKS[bank][1] != size:
            raise MalformedEventLog(f"{bank} declared with digest size {size}")
        if not 1 <= size <= MAX_DIGEST_SIZE:
            raise MalformedEventLog(f"digest size {size} for {bank}")
        banks.append(bank)
        sizes[bank] = size
    vendor_size = reader.u8("vendorInfoSize")
    vendor_info = reader.take(vendor_size, "vendorInfo")
    if reader.remaining():
        # go-eventlog insists on this too: trailing bytes mean we misread the header.
        raise MalformedEventLog(f"{reader.remaining()} bytes after the Spec ID vendorInfo")
    return EventLog(tuple(banks), (), sizes, platform_class, uintn_size, vendor_info)


def _event_data(reader: _Reader, where: str) -> bytes:
    size = reader.u32(f"eventSize of {where}")
    if size > MAX_EVENT_DATA:
        raise EventLogTooLarge(f"{where}: event size {size} > {MAX_EVENT_DATA}")
    return reader.take(size, f"event data of {where}")


def _pcr_index(value: int, where: str) -> int:
    if value >= PCR_COUNT:
        raise MalformedEventLog(f"{where}: PCR index {value} outside 0..{PCR_COUNT - 1}")
    return value


def parse(blob: bytes, *, max_bytes: int = MAX_LOG_BYTES) -> EventLog:
    """Parse a crypto-agile log. Strict: every event has exactly one digest per declared
    bank, sizes are bounded, nothing trails the last event."""
    if len(blob) > max_bytes:
        raise EventLogTooLarge(f"log of {len(blob)} bytes > {max_bytes}")
    reader = _Reader(blob)
    pcr = reader.u32("header pcrIndex")
    event_type = reader.u32("header eventType")
    digest = reader.take(20, "header digest")
    if event_type != EventType.EV_NO_ACTION or pcr != 0 or any(digest):
        raise MalformedEventLog("first event must be PCR 0 EV_NO_ACTION with a zero digest")
    header = _parse_spec_id(_event_data(reader, "the Spec ID event"))
    events: list[LogEvent] = []
    while reader.remaining():
        where = f"event {len(events) + 1} at offset {reader.offset}"
        pcr = _pcr_index(reader.u32(f"pcrIndex of {where}"), where)
        event_type = reader.u32(f"eventType of {where}")
        count = reader.u32(f"digest count of {where}")
        if count != len(header.banks):
            raise MissingDigest(f"{where}: {count} digests, the header declares "
                                f"{len(header.banks)} banks")
        digests: dict[str, bytes] = {}
        for _ in range(count):
            alg = reader.u16(f"hashAlg of {where}")
            bank = _BANK_BY_ID.get(alg, f"0x{alg:04x}")
            if bank not in header.sizes:
                raise UndeclaredBank(f"{where}: digest for bank {bank} the header "
                                     f"does not declare ({', '.join(header.banks)})")
            if bank in digests:
                raise MissingDigest(f"{where}: two {bank} digests")
            digests[bank] = reader.take(header.sizes[bank], f"{bank} digest of {where}")
        data = _event_data(reader, where)
        events.append(LogEvent(pcr, event_type, digests, data))
    return header.append(*events)


# -- replay --------------------------------------------------------------------------


def reset_value(bank: str, pcr: int) -> bytes:
    """A PCR's value after TPM2_Startup(CLEAR) (PC Client PTP, PCR attributes):
    PCRs 17-22 are DRTM PCRs and reset to all ones; the rest reset to zero."""
    size = _check_bank(bank)
    _pcr_index(pcr, "reset value")
    return b"\xff" * size if 17 <= pcr <= 22 else bytes(size)


def _startup_locality(event: LogEvent) -> int | None:
    """The locality of a PCR 0 StartupLocality EV_NO_ACTION event (PFP 2.0, 10.4.5.3)."""
    if (event.pcr == 0 and event.event_type == EventType.EV_NO_ACTION
            and len(event.data) == 17 and event.data[:16] == STARTUP_LOCALITY_SIGNATURE):
        return event.data[16]
    return None


def replay(log: EventLog | Sequence[LogEvent], banks: Iterable[str]
           ) -> dict[str, dict[int, bytes]]:
    """The PCR values the log's events produce, ``{bank: {pcr: value}}``, for the PCRs
    at least one event extends (as ``tpm2_eventlog`` prints them).

    ``EV_NO_ACTION`` events are informational and never extended (PFP 2.0, 10.4.5);
    a StartupLocality event sets PCR 0's initial value to ``00..0L``.
    """
    events = log.events if isinstance(log, EventLog) else tuple(log)
    result: dict[str, dict[int, bytes]] = {}
    for bank in banks:
        size = _check_bank(bank)
        values: dict[int, bytes] = {}
        pcr0_start = bytes(size)
        for event in events:
            locality = _startup_locality(event)
            if locality is not None:
                pcr0_start = bytes(size - 1) + bytes([locality])
                continue
            if event.event_type == EventType.EV_NO_ACTION:
                continue
            if bank not in event.digests:
                raise MissingDigest(f"event on PCR {event.pcr} ({event.type_name}) "
                                    f"has no {bank} digest")
            start = pcr0_start if event.pcr == 0 else reset_value(bank, event.pcr)
            old = values.get(event.pcr, start)
            values[event.pcr] = hashlib.new(bank, old + event.digests[bank]).digest()
        result[bank] = values
    return result
