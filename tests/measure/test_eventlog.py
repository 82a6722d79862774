"""TCG crypto-agile event logs: our writer against tpm2_eventlog, our strict parser against
hostile bytes, replay rules."""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from measure.eventlog import (
    EventLog,
    EventLogError,
    EventLogTooLarge,
    EventType,
    LogEvent,
    MalformedEventLog,
    MissingDigest,
    TruncatedEventLog,
    UndeclaredBank,
    encode,
    parse,
    replay,
    reset_value,
)
from tests.conftest import TOOLS, require_tool

BANKS3 = ("sha1", "sha256", "sha384")
TOOLS.setdefault("tpm2_eventlog", "tpm2-tools")


def tagged(tag: int, description: bytes) -> bytes:
    """TCG_PCClientTaggedEvent, as the Linux EFI stub logs its PCR 9 events."""
    return struct.pack("<II", tag, len(description)) + description


def image_load() -> bytes:
    """UEFI_IMAGE_LOAD_EVENT with an end-of-device-path node."""
    device_path = b"\x7f\xff\x04\x00"
    return struct.pack("<QQQQ", 0x7F000000, 0x100000, 0, len(device_path)) + device_path


def boot_events(banks: tuple[str, ...]) -> list[LogEvent]:
    """A small but realistic boot: firmware separators, an EFI application, GRUB-style
    PCR 8/9 events and the kernel's tagged PCR 9 events."""
    cmdline = b"console=ttyS0 root=/dev/vda1"
    events = [
        LogEvent.measure(4, EventType.EV_EFI_ACTION,
                         b"Calling EFI Application from Boot Option", banks),
        *(LogEvent.measure(pcr, EventType.EV_SEPARATOR, bytes(4), banks) for pcr in range(8)),
        LogEvent(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
                 {b: hashlib.new(b, b"pe image").digest() for b in banks}, image_load()),
        LogEvent.measure(8, EventType.EV_IPL, b"kernel_cmdline: " + cmdline + b"\0", banks,
                         cmdline),
        LogEvent.measure(9, EventType.EV_IPL, b"/boot/vmlinuz\0", banks, b"kernel bytes"),
        LogEvent.measure(9, EventType.EV_EVENT_TAG, tagged(0x8F3B22EC, b"Linux initrd\0"),
                         banks, b"initrd bytes"),
        LogEvent.measure(9, EventType.EV_EVENT_TAG,
                         tagged(0x8F3B22ED, b"LOADED_IMAGE::LoadOptions\0"), banks,
                         (cmdline.decode() + "\0").encode("utf-16-le")),
    ]
    return events


def tpm2_eventlog_pcrs(path: Path) -> dict[str, dict[int, bytes]]:
    """Run tpm2_eventlog and read its final ``pcrs:`` section."""
    result = subprocess.run([require_tool("tpm2_eventlog"), str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("\npcrs:\n", 1)[1]
    pcrs: dict[str, dict[int, bytes]] = {}
    bank = ""
    for line in section.splitlines():
        if m := re.fullmatch(r"  (\w+):", line):
            bank = m.group(1)
            pcrs[bank] = {}
        elif m := re.fullmatch(r"\s+(\d+)\s*: 0x([0-9A-Fa-f]+)", line):
            pcrs[bank][int(m.group(1))] = bytes.fromhex(m.group(2))
    return pcrs


def test_tpm2_eventlog_parses_our_three_bank_log_and_agrees_on_every_pcr(
        tmp_path: Path) -> None:
    log = EventLog(BANKS3).append(*boot_events(BANKS3))
    path = tmp_path / "eventlog.bin"
    path.write_bytes(encode(log))
    ours = replay(log, BANKS3)
    assert set(ours["sha256"]) == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
    assert tpm2_eventlog_pcrs(path) == ours


def test_round_trip_keeps_header_and_events() -> None:
    log = EventLog(("sha256", "sha1"), tuple(boot_events(("sha256", "sha1"))),
                   platform_class=0, vendor_info=b"vtpm")
    blob = encode(log)
    again = parse(blob)
    assert again == log
    assert again.banks == ("sha256", "sha1")
    assert encode(again) == blob


def test_digests_are_written_in_header_order() -> None:
    log = EventLog(("sha384", "sha1")).append(
        LogEvent.measure(9, EventType.EV_IPL, b"x\0", ("sha1", "sha384")))
    blob = encode(log)
    header_end = 32 + struct.unpack_from("<I", blob, 28)[0]
    count, first_alg = struct.unpack_from("<IH", blob, header_end + 8)
    assert (count, first_alg) == (2, 0x000C)


def test_event_missing_a_declared_bank_is_refused_when_writing() -> None:
    log = EventLog(BANKS3).append(LogEvent.measure(9, EventType.EV_IPL, b"x", ("sha256",)))
    with pytest.raises(MissingDigest):
        encode(log)


def test_replay_starts_drtm_pcrs_at_all_ones_and_skips_no_action() -> None:
    events = [
        LogEvent.measure(17, EventType.EV_IPL, b"drtm", ("sha256",)),
        LogEvent.measure(9, EventType.EV_NO_ACTION, b"informational", ("sha256",)),
        LogEvent.measure(16, EventType.EV_IPL, b"debug", ("sha256",)),
    ]
    values = replay(events, ["sha256"])["sha256"]
    digest = hashlib.sha256(b"drtm").digest()
    assert values[17] == hashlib.sha256(b"\xff" * 32 + digest).digest()
    assert values[16] == hashlib.sha256(bytes(32) + hashlib.sha256(b"debug").digest()).digest()
    assert 9 not in values
    assert reset_value("sha1", 23) == bytes(20)
    assert reset_value("sha384", 22) == b"\xff" * 48


def test_startup_locality_sets_pcr0_initial_value() -> None:
    locality = LogEvent(0, EventType.EV_NO_ACTION, {"sha256": bytes(32)},
                        b"StartupLocality\x00\x03")
    sep = LogEvent.measure(0, EventType.EV_SEPARATOR, bytes(4), ("sha256",))
    value = replay([locality, sep], ["sha256"])["sha256"][0]
    assert value == hashlib.sha256(bytes(31) + b"\x03" + sep.digests["sha256"]).digest()


# -- strict parsing ------------------------------------------------------------------


def _valid() -> bytes:
    return encode(EventLog(BANKS3).append(*boot_events(BANKS3)))


def test_truncated_log_is_a_typed_error() -> None:
    blob = _valid()
    for cut in (3, 30, 60, len(blob) - 1):
        with pytest.raises(TruncatedEventLog):
            parse(blob[:cut])


def test_digest_for_an_undeclared_bank_is_refused() -> None:
    sha256_only = encode(EventLog(("sha256",)).append(
        LogEvent.measure(9, EventType.EV_IPL, b"x", ("sha256",))))
    header_end = 32 + struct.unpack_from("<I", sha256_only, 28)[0]
    forged = bytearray(sha256_only)
    struct.pack_into("<H", forged, header_end + 12, 0x0004)   # claim it is sha1
    with pytest.raises(UndeclaredBank):
        parse(bytes(forged))


def test_absurd_event_size_fails_without_allocating() -> None:
    blob = bytearray(encode(EventLog(("sha256",)).append(
        LogEvent.measure(9, EventType.EV_IPL, b"x", ("sha256",)))))
    struct.pack_into("<I", blob, len(blob) - 5, 0xFFFFFFF0)
    with pytest.raises(EventLogTooLarge):
        parse(bytes(blob))


def test_header_must_be_spec_id_event03() -> None:
    blob = bytearray(_valid())
    blob[32:48] = b"Spec ID Event02\x00"
    with pytest.raises(MalformedEventLog):
        parse(bytes(blob))


def test_pcr_index_out_of_range_is_refused() -> None:
    blob = bytearray(_valid())
    header_end = 32 + struct.unpack_from("<I", blob, 28)[0]
    struct.pack_into("<I", blob, header_end, 0xFFFFFFFF)
    with pytest.raises(MalformedEventLog):
        parse(bytes(blob))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_our_error(blob: bytes) -> None:
    try:
        parse(blob)
    except EventLogError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_valid_logs_only_ever_raise_our_error(data: st.DataObject) -> None:
    blob = bytearray(_valid())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        log = parse(bytes(blob[:cut]))
    except EventLogError:
        return
    replay(log, [b for b in log.banks if b in ("sha1", "sha256", "sha384", "sha512")])
