"""Verify an evidence bundle: certificates, quote signature, nonce, PCRs, event log.

:func:`check` runs every check and returns a :class:`Report` with one line per check
(what the CLI prints); :func:`verify` does the same and raises the first failure's typed
error, because a verification result that can be ignored will be (pyca's rule).

What each check protects against:

* chain — a quote from a key our CA never certified (another host, a software key);
* signature — a forged or altered TPMS_ATTEST;
* magic/type — a signed structure that the TPM did not generate as a quote (the AK is
  restricted, so only TPM-generated data starts with TPM_GENERATED_VALUE);
* nonce — a replayed old quote;
* selection — PCR values relabelled (tpm2-tools 5.4 does not check this);
* PCR digest — a log that does not produce the quoted PCRs;
* events — a log that produces them but measured something other than the manifest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from measure import eventlog
from measure.eventlog import EventLogError, EventType, LogEvent, event_type_name
from measure.evidence import (
    TPM_ALG_ECDSA,
    TPM_ALG_RSAPSS,
    TPM_ALG_RSASSA,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    Attest,
    Evidence,
    EvidenceError,
    PcrSelection,
    TpmSignature,
    format_pcr_selection,
)

__all__ = [
    "ChainInvalid", "CheckLine", "EvidenceMalformed", "ExpectedEvent", "LogEvent", "LogMismatch",
    "NonceMismatch", "QuoteMismatch", "Report", "SignatureInvalid", "VerificationError",
    "check", "describe_event", "verify",
]


class VerificationError(Exception):
    """Evidence failed a check; ``check`` names which."""

    check = "evidence"


class EvidenceMalformed(VerificationError):
    check = "evidence"


class ChainInvalid(VerificationError):
    check = "certificate chain"


class SignatureInvalid(VerificationError):
    check = "quote signature"


class QuoteMismatch(VerificationError):
    """Magic, type, PCR selection or PCR digest is not what it must be."""

    check = "quote"


class NonceMismatch(VerificationError):
    check = "nonce"


class LogMismatch(VerificationError):
    """The event log does not match the expected events; ``item`` names the event."""

    check = "event log"

    def __init__(self, message: str, item: str = "") -> None:
        super().__init__(message)
        self.item = item


class ExpectedEvent(Protocol):
    """What the manifest/prediction gives us per event (``LogEvent`` and the prediction
    module's ``Event`` both fit); a ``description`` attribute, if any, names it."""

    @property
    def pcr(self) -> int: ...
    @property
    def event_type(self) -> int: ...
    @property
    def digests(self) -> Mapping[str, bytes]: ...
    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True)
class CheckLine:
    name: str
    ok: bool
    detail: str
    error: VerificationError | None = None

    def __str__(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


@dataclass
class Report:
    """One line per check, plus the quote's clock fields for monotonicity checks by the
    caller (Keylime rejects resetCount/restartCount going backwards)."""

    lines: list[CheckLine] = field(default_factory=list)
    clock: int | None = None
    reset_count: int | None = None
    restart_count: int | None = None
    safe: bool | None = None
    firmware_version: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.lines) and all(line.ok for line in self.lines)

    @property
    def failures(self) -> list[CheckLine]:
        return [line for line in self.lines if not line.ok]

    def raise_for_failure(self) -> None:
        for line in self.failures:
            assert line.error is not None
            raise line.error

    def __str__(self) -> str:
        return "\n".join(str(line) for line in self.lines)

    def _run(self, name: str, fn: _Check) -> bool:
        try:
            detail = fn()
        except VerificationError as exc:
            self.lines.append(CheckLine(name, False, str(exc), exc))
            return False
        self.lines.append(CheckLine(name, True, detail))
        return True


class _Check(Protocol):
    def __call__(self) -> str: ...


# -- event descriptions --------------------------------------------------------------


def describe_event(event: ExpectedEvent) -> str:
    """A person-readable name for an event: its ``description`` if it has one, else its
    PCR, type and data (EV_IPL strings and tagged-event descriptions decoded)."""
    described = getattr(event, "description", None)
    if described:
        return str(described)
    data = event.data
    text = ""
    if event.event_type == EventType.EV_EVENT_TAG and len(data) >= 8:
        tag = int.from_bytes(data[:4], "little")
        text = f"tag 0x{tag:08x} " + data[8:].rstrip(b"\x00").decode("utf-8", "replace")
    elif event.event_type in (EventType.EV_IPL, EventType.EV_EFI_ACTION, EventType.EV_ACTION):
        if len(data) >= 2 and data[1:2] == b"\x00" and len(data) % 2 == 0:
            text = data.decode("utf-16-le", "replace").rstrip("\x00")
        else:
            text = data.rstrip(b"\x00").decode("utf-8", "replace")
    else:
        text = data[:32].hex() + ("..." if len(data) > 32 else "")
    return f"PCR {event.pcr} {event_type_name(event.event_type)} {text!r}"


# -- the checks ----------------------------------------------------------------------


def _load_certs(pems: Iterable[bytes], what: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for pem in pems:
        try:
            certs.extend(x509.load_pem_x509_certificates(pem))
        except ValueError as exc:
            raise ChainInvalid(f"{what}: not a PEM certificate ({exc})") from None
    return certs


def _uuid_of(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.lower().startswith("urn:uuid:"):
            return uri[len("urn:uuid:"):].lower()
    return None


def _chain_to(cert: x509.Certificate, intermediates: Sequence[x509.Certificate],
              roots: Sequence[x509.Certificate], now: dt.datetime, what: str) -> None:
    """Walk issuer signatures from ``cert`` to one of ``roots`` (at most 8 links)."""
    current = cert
    for _ in range(8):
        if not current.not_valid_before_utc <= now <= current.not_valid_after_utc:
            raise ChainInvalid(f"{what}: {current.subject.rfc4514_string() or 'certificate'} "
                               f"is not valid now")
        for issuer in (*roots, *intermediates):
            if issuer.subject != current.issuer:
                continue
            try:
                current.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                continue
            if issuer in roots:
                return
            current = issuer
            break
        else:
            raise ChainInvalid(f"{what} is not issued by the trusted vTPM CA "
                               f"(issuer {current.issuer.rfc4514_string()})")
    raise ChainInvalid(f"{what}: chain too long")


def _check_chain(evidence: Evidence, ca_pem: bytes, now: dt.datetime) -> str:
    roots = _load_certs([ca_pem], "CA")
    chain = _load_certs(evidence.certificates, "evidence certificates")
    if len(chain) < 2:
        raise ChainInvalid("evidence must carry the AK and EK certificates")
    ak_cert, ek_cert, intermediates = chain[0], chain[1], chain[2:]
    _chain_to(ak_cert, intermediates, roots, now, "AK certificate")
    _chain_to(ek_cert, intermediates, roots, now, "EK certificate")
    ak_key = _ak_public_key(evidence, ChainInvalid)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (ak_cert.public_key().public_bytes(serialization.Encoding.DER, spki)
            != ak_key.public_bytes(serialization.Encoding.DER, spki)):
        raise ChainInvalid("the AK certificate certifies a different key than ak.pub.pem")
    # The AK certificate is bound to the EK's vTPM by the vTPM's urn:uuid in both SANs.
    ek_uuid, ak_uuid = _uuid_of(ek_cert), _uuid_of(ak_cert)
    wanted = evidence.vtpm_uuid.lower()
    for label, found in (("EK", ek_uuid), ("AK", ak_uuid)):
        if found is not None and found != wanted:
            raise ChainInvalid(f"{label} certificate names vTPM {found}, evidence says {wanted}")
    return f"AK -> EK -> CA {roots[0].subject.rfc4514_string()}"


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _ak_public_key(evidence: Evidence,
                   error: type[VerificationError] = SignatureInvalid) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(evidence.ak_public_pem)
    except ValueError as exc:
        raise error(f"AK public key is not PEM: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise error(f"AK public key is a {type(key).__name__}, not RSA or ECC")
    return key


_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _check_signature(evidence: Evidence, sig: TpmSignature) -> str:
    key = _ak_public_key(evidence)
    if sig.hash_alg == "sha1":
        # SHA-1 collisions are practical; a quote signed over SHA-1 proves too little.
        raise SignatureInvalid("the quote is signed with SHA-1; SHA-256 or stronger needed")
    algorithm = _HASHES[sig.hash_alg]()
    try:
        if isinstance(key, rsa.RSAPublicKey) and sig.sig_alg == TPM_ALG_RSASSA:
            key.verify(sig.signature, evidence.attest, padding.PKCS1v15(), algorithm)
            scheme = "RSASSA"
        elif isinstance(key, rsa.RSAPublicKey) and sig.sig_alg == TPM_ALG_RSAPSS:
            pss = padding.PSS(padding.MGF1(algorithm), padding.PSS.AUTO)
            key.verify(sig.signature, evidence.attest, pss, algorithm)
            scheme = "RSAPSS"
        elif isinstance(key, ec.EllipticCurvePublicKey) and sig.sig_alg == TPM_ALG_ECDSA:
            der = encode_dss_signature(int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big"))
            key.verify(der, evidence.attest, ec.ECDSA(algorithm))
            scheme = "ECDSA"
        else:
            raise SignatureInvalid(f"signature scheme 0x{sig.sig_alg:04x} does not fit the "
                                   f"{type(key).__name__} AK")
    except InvalidSignature:
        raise SignatureInvalid("the quote signature does not verify with the AK") from None
    return f"{scheme}/{sig.hash_alg} by the AK"


def _check_magic_type(quote: Attest) -> str:
    if quote.magic != TPM_GENERATED_VALUE:
        raise QuoteMismatch(f"magic 0x{quote.magic:08x} is not TPM_GENERATED_VALUE")
    if quote.type != TPM_ST_ATTEST_QUOTE:
        raise QuoteMismatch(f"type 0x{quote.type:04x} is not TPM_ST_ATTEST_QUOTE")
    return "TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE"


def _check_nonce(quote: Attest, nonce: bytes) -> str:
    if not hmac.compare_digest(quote.extra_data, nonce):
        raise NonceMismatch(f"quote extraData {quote.extra_data.hex()} != nonce {nonce.hex()}")
    return nonce.hex()


def _check_selection(quote: Attest, evidence: Evidence, wanted: PcrSelection) -> str:
    for label, selection in (("requested", wanted), ("in the bundle", evidence.selection)):
        if quote.selection != selection:
            raise QuoteMismatch(f"quote selects {format_pcr_selection(quote.selection)}, "
                                f"{label} {format_pcr_selection(selection)}")
    return format_pcr_selection(quote.selection)


def _check_pcr_digest(quote: Attest, sig: TpmSignature, evidence: Evidence,
                      log: eventlog.EventLog) -> str:
    """pcrDigest = H_sign(PCR values in selection order) (Part 3, 18.4.1), with the values
    replayed from the log; PCRs the log never extends hold their reset value."""
    banks = [bank for bank, _ in quote.selection]
    missing = [bank for bank in banks if bank not in log.banks]
    if missing:
        raise LogMismatch(f"the event log has no {', '.join(missing)} bank", "header")
    try:
        replayed = eventlog.replay(log, banks)
    except EventLogError as exc:
        raise LogMismatch(f"cannot replay the event log: {exc}", "replay") from None
    h = hashlib.new(sig.hash_alg)
    for bank, pcrs in quote.selection:
        for pcr in pcrs:
            h.update(replayed[bank].get(pcr, eventlog.reset_value(bank, pcr)))
    if hmac.compare_digest(h.digest(), quote.pcr_digest):
        return f"{len(log.events)} events replay to the quoted pcrDigest"
    # Say which PCR the log gets wrong, using the values reported beside the quote.
    wrong = [f"{bank} PCR {pcr}" for bank, pcrs in quote.selection for pcr in pcrs
             if replayed[bank].get(pcr, eventlog.reset_value(bank, pcr))
             != evidence.pcr_values.get(bank, {}).get(pcr)]
    raise LogMismatch("the event log does not replay to the quoted pcrDigest"
                      + (f" ({', '.join(wrong)} differ)" if wrong else ""), "replay")


def _check_events(log: eventlog.EventLog, expected: Sequence[ExpectedEvent]) -> str:
    """Every measuring event equals the expected one at its position; EV_NO_ACTION events
    are informational on both sides and skipped."""
    actual = [e for e in log.events if e.event_type != EventType.EV_NO_ACTION]
    wanted = [e for e in expected if e.event_type != EventType.EV_NO_ACTION]
    for index, (got, want) in enumerate(zip(actual, wanted, strict=False), start=1):
        name = describe_event(want)
        if (got.pcr, got.event_type) != (want.pcr, want.event_type):
            raise LogMismatch(f"event {index}: expected {name}, log has "
                              f"{describe_event(got)}", name)
        if got.data != want.data:
            raise LogMismatch(f"event {index}: {name}: the log's event data differs "
                              f"({describe_event(got)})", name)
        for bank, digest in want.digests.items():
            if bank in got.digests and not hmac.compare_digest(got.digests[bank], digest):
                raise LogMismatch(f"event {index}: {name}: {bank} digest "
                                  f"{got.digests[bank].hex()} != expected {digest.hex()}",
                                  name)
        if not set(want.digests) & set(got.digests):
            raise LogMismatch(f"event {index}: {name}: no bank in common", name)
    if len(actual) > len(wanted):
        extra = describe_event(actual[len(wanted)])
        raise LogMismatch(f"the log has {len(actual) - len(wanted)} unexpected event(s), "
                          f"first {extra}", extra)
    if len(actual) < len(wanted):
        lost = describe_event(wanted[len(actual)])
        raise LogMismatch(f"the log lacks {len(wanted) - len(actual)} expected event(s), "
                          f"first {lost}", lost)
    return f"{len(actual)} events match the expected events"


# -- entry points --------------------------------------------------------------------


def check(evidence: Evidence, expected: Sequence[ExpectedEvent], ca_pem: bytes,
          nonce: bytes, *, selection: PcrSelection | None = None,
          now: dt.datetime | None = None) -> Report:
    """Run every check; the report's lines say which passed. ``selection`` is the PCR
    selection the verifier asked for (default: the one the bundle claims)."""
    report = Report()
    now = now or dt.datetime.now(dt.UTC)
    wanted = selection if selection is not None else evidence.selection

    try:
        quote = evidence.quote
        sig = TpmSignature.parse(evidence.signature)
    except EvidenceError as exc:
        report._run("quote structure", _fail(EvidenceMalformed(str(exc))))
        return report
    try:
        log: eventlog.EventLog | None = eventlog.parse(evidence.eventlog)
        log_error = ""
    except EventLogError as exc:
        log, log_error = None, f"{type(exc).__name__}: {exc}"
    report.clock, report.reset_count = quote.clock, quote.reset_count
    report.restart_count, report.safe = quote.restart_count, quote.safe
    report.firmware_version = quote.firmware_version

    report._run("certificate chain", lambda: _check_chain(evidence, ca_pem, now))
    report._run("quote signature", lambda: _check_signature(evidence, sig))
    report._run("magic and type", lambda: _check_magic_type(quote))
    report._run("nonce", lambda: _check_nonce(quote, nonce))
    report._run("PCR selection", lambda: _check_selection(quote, evidence, wanted))
    if log is None:
        error = LogMismatch(f"the event log does not parse: {log_error}", "eventlog.bin")
        report._run("PCR digest", _fail(error))
        report._run("event log", _fail(error))
    else:
        parsed = log
        report._run("PCR digest", lambda: _check_pcr_digest(quote, sig, evidence, parsed))
        report._run("event log", lambda: _check_events(parsed, expected))
    report.lines.append(CheckLine(
        "clock", True, f"clock={quote.clock} resetCount={quote.reset_count} "
        f"restartCount={quote.restart_count} safe={int(quote.safe)}"))
    return report


def _fail(error: VerificationError) -> _Check:
    def run() -> str:
        raise error
    return run


def verify(evidence: Evidence, expected: Sequence[ExpectedEvent], ca_pem: bytes,
           nonce: bytes, *, selection: PcrSelection | None = None,
           now: dt.datetime | None = None) -> Report:
    """Like :func:`check`, but raise the first failed check's typed error."""
    report = check(evidence, expected, ca_pem, nonce, selection=selection, now=now)
    report.raise_for_failure()
    return report

