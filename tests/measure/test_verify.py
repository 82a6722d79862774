"""The verifier against quotes from a real swtpm: an honest boot passes every check; each
kind of tampering fails exactly the check that guards against it, naming what is wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from domS0.harness import SwtpmProcess
from measure import evidence as ev
from measure.eventlog import EventLog, EventType, LogEvent, encode, parse
from measure.verify import (
    ChainInvalid,
    LogMismatch,
    NonceMismatch,
    QuoteMismatch,
    SignatureInvalid,
    check,
    describe_event,
    verify,
)
from tests.measure.test_evidence import (
    AK_TEMPLATES,
    CMDLINE,
    LOG_BANKS,
    Quoted,
    checkquote,
    make_pki,
    quote_swtpm,
    swtpm,  # noqa: F401  (fixture)
)

NONCE = bytes.fromhex("c0ffee0123456789")


@pytest.fixture(params=sorted(AK_TEMPLATES))
def quoted(request: pytest.FixtureRequest, swtpm: SwtpmProcess) -> Quoted:  # noqa: F811
    return quote_swtpm(swtpm, request.param, NONCE)


def failed(quoted: Quoted, evidence: ev.Evidence | None = None,
           expected: list[LogEvent] | None = None, nonce: bytes = NONCE,
           ca_pem: bytes | None = None, **kwargs: object) -> list[str]:
    report = check(evidence or quoted.evidence,
                   quoted.events if expected is None else expected,
                   ca_pem or quoted.ca_pem, nonce, **kwargs)  # type: ignore[arg-type]
    return [line.name for line in report.failures]


def replaced_event(events: list[LogEvent], index: int, new: LogEvent) -> list[LogEvent]:
    return [new if i == index else e for i, e in enumerate(events)]


def test_honest_quote_passes_every_check(quoted: Quoted, tmp_path: Path) -> None:
    ev.write(quoted.evidence, tmp_path / "b")
    evidence = ev.load(tmp_path / "b")
    report = verify(evidence, quoted.events, quoted.ca_pem, NONCE,
                    selection=ev.parse_pcr_selection("sha256:0-9"))
    assert report.ok
    assert [line.name for line in report.lines] == [
        "certificate chain", "quote signature", "magic and type", "nonce", "PCR selection",
        "PCR digest", "event log", "clock"]
    assert report.clock is not None and report.clock > 0
    assert report.reset_count == evidence.quote.reset_count
    assert report.restart_count == evidence.quote.restart_count
    assert "PASS nonce: c0ffee0123456789" in str(report)
    assert checkquote(tmp_path / "b", NONCE.hex()).returncode == 0


def test_changed_initrd_is_named(quoted: Quoted) -> None:
    """The manifest expects other initrd bytes than the domain booted."""
    expected = replaced_event(quoted.events, 10, LogEvent.measure(
        9, EventType.EV_IPL, b"/boot/initrd.img\0", LOG_BANKS, b"initrd with one byte changed"))
    with pytest.raises(LogMismatch) as info:
        verify(quoted.evidence, expected, quoted.ca_pem, NONCE)
    assert "/boot/initrd.img" in info.value.item
    assert failed(quoted, expected=expected) == ["event log"]


def test_changed_cmdline_is_named(quoted: Quoted) -> None:
    other = CMDLINE + b" init=/bin/sh"
    expected = replaced_event(quoted.events, 8, LogEvent.measure(
        8, EventType.EV_IPL, b"kernel_cmdline: " + other + b"\0", LOG_BANKS, other))
    with pytest.raises(LogMismatch) as info:
        verify(quoted.evidence, expected, quoted.ca_pem, NONCE)
    assert "kernel_cmdline: " + other.decode() in info.value.item


def test_edited_event_data_in_the_log_is_named(quoted: Quoted) -> None:
    """Same digests (so PCRs replay), different description: the event check catches it."""
    log = parse(quoted.evidence.eventlog)
    kernel = log.events[9]
    forged = dataclasses.replace(kernel, data=b"/boot/vmlinuz-trusted\0")
    events = replaced_event(list(log.events), 9, forged)
    evidence = dataclasses.replace(quoted.evidence,
                                   eventlog=encode(EventLog(log.banks, tuple(events))))
    report = check(evidence, quoted.events, quoted.ca_pem, NONCE)
    assert [line.name for line in report.failures] == ["event log"]
    error = report.failures[0].error
    assert isinstance(error, LogMismatch) and "/boot/vmlinuz" in error.item


def test_edited_log_does_not_replay(quoted: Quoted, tmp_path: Path) -> None:
    """An event dropped from eventlog.bin on disk: the replayed PCRs miss the quote."""
    ev.write(quoted.evidence, tmp_path / "b")
    log = parse(quoted.evidence.eventlog)
    (tmp_path / "b" / "eventlog.bin").write_bytes(
        encode(EventLog(log.banks, log.events[:-1])))
    evidence = ev.load(tmp_path / "b")
    with pytest.raises(LogMismatch, match=r"sha256 PCR 9 differ"):
        verify(evidence, evidence_events(evidence), quoted.ca_pem, NONCE)
    assert failed(quoted, evidence) == ["PCR digest", "event log"]


def evidence_events(evidence: ev.Evidence) -> list[LogEvent]:
    return list(parse(evidence.eventlog).events)


def test_garbage_log_fails_the_log_checks(quoted: Quoted) -> None:
    evidence = dataclasses.replace(quoted.evidence, eventlog=b"\x00" * 10)
    assert failed(quoted, evidence) == ["PCR digest", "event log"]


def test_other_nonce_fails(quoted: Quoted) -> None:
    with pytest.raises(NonceMismatch):
        verify(quoted.evidence, quoted.events, quoted.ca_pem, b"\x00" + NONCE[1:])
    assert failed(quoted, nonce=b"replayed") == ["nonce"]


def test_bit_flipped_signature_fails(quoted: Quoted) -> None:
    sig = bytearray(quoted.evidence.signature)
    sig[-1] ^= 0x01
    evidence = dataclasses.replace(quoted.evidence, signature=bytes(sig))
    with pytest.raises(SignatureInvalid):
        verify(evidence, quoted.events, quoted.ca_pem, NONCE)
    assert failed(quoted, evidence) == ["quote signature"]


def test_bit_flipped_attest_fails_the_signature(quoted: Quoted) -> None:
    attest = bytearray(quoted.evidence.attest)
    attest[-1] ^= 0x80   # inside pcrDigest
    evidence = dataclasses.replace(quoted.evidence, attest=bytes(attest))
    assert "quote signature" in failed(quoted, evidence)


def test_chain_from_another_ca_fails(quoted: Quoted) -> None:
    other = make_pki(quoted.evidence.ak_public_pem, name="someone else's CA")
    evidence = dataclasses.replace(quoted.evidence, certificates=other.chain)
    with pytest.raises(ChainInvalid, match="not issued by the trusted vTPM CA"):
        verify(evidence, quoted.events, quoted.ca_pem, NONCE)
    # Same CA name, different key: the signature walk refuses it too.
    impostor = make_pki(quoted.evidence.ak_public_pem)
    evidence = dataclasses.replace(quoted.evidence, certificates=impostor.chain)
    assert failed(quoted, evidence) == ["certificate chain"]


def test_ak_certificate_for_another_key_fails(quoted: Quoted) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    stranger = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pki = make_pki(stranger)
    evidence = dataclasses.replace(quoted.evidence, certificates=pki.chain)
    assert failed(quoted, evidence, ca_pem=pki.ca_pem) == ["certificate chain"]


def test_other_vtpm_uuid_fails_the_chain(quoted: Quoted) -> None:
    evidence = dataclasses.replace(quoted.evidence,
                                   vtpm_uuid="00000000-0000-0000-0000-000000000000")
    assert failed(quoted, evidence) == ["certificate chain"]


def test_requested_selection_must_match(quoted: Quoted) -> None:
    with pytest.raises(QuoteMismatch, match="requested sha256:0,1,2"):
        verify(quoted.evidence, quoted.events, quoted.ca_pem, NONCE,
               selection=ev.parse_pcr_selection("sha256:0-2"))


def test_missing_and_extra_events_are_named(quoted: Quoted) -> None:
    assert failed(quoted, expected=quoted.events[:-1]) == ["event log"]
    extra = [*quoted.events, LogEvent.measure(9, EventType.EV_IPL, b"/boot/extra\0",
                                              LOG_BANKS)]
    report = check(quoted.evidence, extra, quoted.ca_pem, NONCE)
    error = report.failures[0].error
    assert isinstance(error, LogMismatch) and "/boot/extra" in error.item


def test_describe_event_decodes_common_payloads() -> None:
    tag = LogEvent.measure(9, EventType.EV_EVENT_TAG,
                           bytes.fromhex("ec223b8f0d000000") + b"Linux initrd\0", ["sha256"])
    assert describe_event(tag) == "PCR 9 EV_EVENT_TAG 'tag 0x8f3b22ec Linux initrd'"
    utf16 = LogEvent.measure(11, EventType.EV_IPL, ".linux\0".encode("utf-16-le"), ["sha256"])
    assert describe_event(utf16) == "PCR 11 EV_IPL '.linux'"
