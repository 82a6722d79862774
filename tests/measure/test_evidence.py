"""Evidence bundles from a real swtpm: tpm2-tools reads our files, we read tpm2-tools'.

The helpers here (a swtpm with ESAPI, an AK, a quote, a throwaway PKI) also serve
test_verify.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss import (
    ESAPI,
    TPM2B_DATA,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMT_HA,
    TPMT_SIG_SCHEME,
    TPMU_HA,
    TCTILdr,
)
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT

from domS0.harness import SwtpmProcess
from measure import evidence as ev
from measure.eventlog import EventLog, EventType, LogEvent, encode
from tests.conftest import TOOLS, require_tool

TOOLS.setdefault("tpm2_checkquote", "tpm2-tools")
TOOLS.setdefault("tpm2_quote", "tpm2-tools")
TOOLS.setdefault("tpm2_createprimary", "tpm2-tools")

LOG_BANKS = ("sha1", "sha256", "sha384")
_ALG = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384}
AK_TEMPLATES = {
    "rsa": "rsa2048:rsassa-sha256:null",
    "ecc": "ecc256:ecdsa-sha256:null",
}
AK_ATTRIBUTES = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM
                 | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
                 | TPMA_OBJECT.USERWITHAUTH)
VTPM_UUID = "6f1c2a9e-3b7d-4c55-9a0e-2d5f8b7c1e42"
CMDLINE = b"console=ttyS0 root=/dev/vda1"


def boot_events() -> list[LogEvent]:
    """A measured domain launch, GRUB-style: cmdline on PCR 8, kernel and initrd on 9."""
    return [
        *(LogEvent.measure(pcr, EventType.EV_SEPARATOR, bytes(4), LOG_BANKS)
          for pcr in range(8)),
        LogEvent.measure(8, EventType.EV_IPL, b"kernel_cmdline: " + CMDLINE + b"\0",
                         LOG_BANKS, CMDLINE),
        LogEvent.measure(9, EventType.EV_IPL, b"/boot/vmlinuz\0", LOG_BANKS, b"kernel"),
        LogEvent.measure(9, EventType.EV_IPL, b"/boot/initrd.img\0", LOG_BANKS, b"initrd"),
    ]


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[SwtpmProcess]:
    require_tool("swtpm")
    process = SwtpmProcess(tmp_path / "swtpm").start()
    yield process
    process.stop()


def connect(process: SwtpmProcess) -> ESAPI:
    return ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={process.port}"))


def extend_events(esapi: ESAPI, events: list[LogEvent]) -> None:
    """What the domain builder does: extend every measuring event into every bank."""
    for event in events:
        if event.event_type == EventType.EV_NO_ACTION:
            continue
        has = [TPMT_HA(hashAlg=_ALG[bank], digest=TPMU_HA(**{bank: digest}))
               for bank, digest in event.digests.items()]
        esapi.pcr_extend(ESYS_TR.parse(f"PCR{event.pcr}"), TPML_DIGEST_VALUES(has))


def read_values(esapi: ESAPI, selection: ev.PcrSelection) -> dict[str, dict[int, bytes]]:
    values: dict[str, dict[int, bytes]] = {}
    for bank, pcrs in selection:
        for pcr in pcrs:
            _, _, digests = esapi.pcr_read(f"{bank}:{pcr}")
            values.setdefault(bank, {})[pcr] = bytes(digests[0])
    return values


@dataclass
class Pki:
    """A throwaway vTPM CA with EK and AK certificates naming the same vTPM."""

    ca_pem: bytes
    chain: tuple[bytes, ...]


def make_pki(ak_pem: bytes, name: str = "test vTPM CA") -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ek_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])

    def issue(subject: x509.Name, public_key: object, ca: bool = False) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                   .public_key(public_key)  # type: ignore[arg-type]
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"urn:uuid:{VTPM_UUID}")]), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca = issue(ca_name, ca_key.public_key(), ca=True)
    ak = issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AK")]),
               serialization.load_pem_public_key(ak_pem))
    ek = issue(x509.Name([]), ek_key.public_key())
    return Pki(ca.public_bytes(pem), (ak.public_bytes(pem), ek.public_bytes(pem)))


@dataclass
class Quoted:
    evidence: ev.Evidence
    events: list[LogEvent]
    ca_pem: bytes


def quote_swtpm(process: SwtpmProcess, kind: str, nonce: bytes,
                selection_text: str = "sha256:0-9") -> Quoted:
    """Extend the boot events, make an AK, quote, and wrap it all as evidence."""
    events = boot_events()
    selection = ev.parse_pcr_selection(selection_text)
    with connect(process) as esapi:
        extend_events(esapi, events)
        template = TPM2B_PUBLIC.parse(AK_TEMPLATES[kind], objectAttributes=AK_ATTRIBUTES)
        ak, ak_public, *_ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template,
                                                 ESYS_TR.ENDORSEMENT)
        attest, signature = esapi.quote(
            ak, TPML_PCR_SELECTION.parse(selection_text.replace("0-9", "0,1,2,3,4,5,6,7,8,9")),
            TPM2B_DATA(nonce), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
        values = read_values(esapi, selection)
        esapi.flush_context(ak)
    ak_pem = bytes(ak_public.to_pem())
    pki = make_pki(ak_pem)
    evidence = ev.Evidence(
        vtpm_uuid=VTPM_UUID, nonce=nonce, selection=selection,
        attest=attest.marshal()[2:], signature=signature.marshal(), pcr_values=values,
        ak_public_pem=ak_pem, certificates=pki.chain,
        eventlog=encode(EventLog(LOG_BANKS).append(*events)))
    return Quoted(evidence, events, pki.ca_pem)


def checkquote(directory: Path, nonce_hex: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("tpm2_checkquote"), "-u", str(directory / "ak.pub.pem"),
         "-m", str(directory / "quote.msg"), "-s", str(directory / "quote.sig"),
         "-f", str(directory / "quote.pcrs"), "-g", "sha256", "-q", nonce_hex],
        capture_output=True, text=True, timeout=30)


# -- tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(AK_TEMPLATES))
def test_tpm2_checkquote_accepts_our_bundle(swtpm: SwtpmProcess, tmp_path: Path,
                                            kind: str) -> None:
    nonce = bytes.fromhex("5eed0fca11ab1e")
    quoted = quote_swtpm(swtpm, kind, nonce, "sha256:0-9+sha1:8,9")
    out = tmp_path / "bundle"
    ev.write(quoted.evidence, out)
    result = checkquote(out, nonce.hex())
    assert result.returncode == 0, result.stderr
    assert checkquote(out, "00" + nonce.hex()[2:]).returncode != 0


def test_bundle_round_trips_and_reports_clock(swtpm: SwtpmProcess, tmp_path: Path) -> None:
    quoted = quote_swtpm(swtpm, "rsa", b"\x01\x02\x03\x04")
    ev.write(quoted.evidence, tmp_path / "b")
    loaded = ev.load(tmp_path / "b")
    assert loaded == quoted.evidence
    assert ev.load(tmp_path / "b" / "evidence.json") == loaded
    doc = quoted.evidence.to_json()
    assert doc["version"] == ev.EVIDENCE_VERSION and doc["format"] == ev.EVIDENCE_FORMAT
    attest = loaded.quote
    assert (attest.magic, attest.type) == (0xFF544347, 0x8018)
    assert attest.extra_data == b"\x01\x02\x03\x04"
    assert attest.selection == (("sha256", tuple(range(10))),)
    assert doc["clock_info"]["reset_count"] == attest.reset_count
    assert doc["clock_info"]["clock"] == attest.clock > 0


def test_edited_copy_or_unknown_version_is_refused(swtpm: SwtpmProcess,
                                                  tmp_path: Path) -> None:
    quoted = quote_swtpm(swtpm, "ecc", b"n")
    path = ev.write(quoted.evidence, tmp_path / "b")
    (tmp_path / "b" / "quote.sig").write_bytes(
        quoted.evidence.signature[:-1] + bytes([quoted.evidence.signature[-1] ^ 1]))
    with pytest.raises(ev.EvidenceError, match=r"quote\.sig differs"):
        ev.load(tmp_path / "b")
    ev.write(replace(quoted.evidence, version=2), tmp_path / "c")
    with pytest.raises(ev.EvidenceError, match="version 2"):
        ev.load(tmp_path / "c")
    assert path.name == "evidence.json"


def test_pcrs_file_is_byte_identical_to_tpm2_quote_output(swtpm: SwtpmProcess,
                                                          tmp_path: Path) -> None:
    """tpm2_quote -o on the same PCRs writes exactly the bytes we write (13 values over
    two banks: two TPML_DIGEST chunks)."""
    text = "sha256:0,1,2,3,4,5,6,7,8,9+sha1:8,9,16"
    selection = ev.parse_pcr_selection(text)
    with connect(swtpm) as esapi:
        extend_events(esapi, boot_events())
        values = read_values(esapi, selection)
    ctx = tmp_path / "ak.ctx"
    tcti = ["-T", swtpm.tcti]
    subprocess.run([require_tool("tpm2_createprimary"), *tcti, "-C", "e", "-c", str(ctx),
                    "-G", AK_TEMPLATES["rsa"], "-a",
                    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"],
                   check=True, capture_output=True, timeout=60)
    theirs = tmp_path / "quote.pcrs"
    subprocess.run([require_tool("tpm2_quote"), *tcti, "-c", str(ctx), "-l", text,
                    "-q", "abcd", "-m", str(tmp_path / "m"), "-s", str(tmp_path / "s"),
                    "-o", str(theirs)], check=True, capture_output=True, timeout=60)
    ours = ev.encode_pcrs_file(selection, values)
    assert len(ours) == 132 + 4 + 2 * 532
    assert ours == theirs.read_bytes()
    assert ev.decode_pcrs_file(theirs.read_bytes()) == (selection, values)


def test_pcr_selection_syntax() -> None:
    assert ev.parse_pcr_selection("sha256:0-3,7") == (("sha256", (0, 1, 2, 3, 7)),)
    assert ev.parse_pcr_selection("sha1:9+sha256:0") == (("sha1", (9,)), ("sha256", (0,)))
    for bad in ("sha256", "md5:1", "sha256:24", "sha256:x", "sha1:1+sha1:2"):
        with pytest.raises(ev.EvidenceError):
            ev.parse_pcr_selection(bad)


def test_malformed_structures_are_typed_errors() -> None:
    with pytest.raises(ev.EvidenceError):
        ev.Attest.parse(struct.pack(">IH", 0xFF544347, 0x8018) + b"\x00")
    with pytest.raises(ev.EvidenceError):
        ev.TpmSignature.parse(struct.pack(">HHH", 0x0014, 0x000B, 10) + b"short")
    with pytest.raises(ev.EvidenceError):
        ev.TpmSignature.parse(struct.pack(">HH", 0x0001, 0x000B))
    with pytest.raises(ev.EvidenceError):
        ev.decode_pcrs_file(bytes(100))
    digest = hashlib.sha256(b"x").digest()
    good = ev.encode_pcrs_file((("sha256", (1,)),), {"sha256": {1: digest}})
    with pytest.raises(ev.EvidenceError):
        ev.decode_pcrs_file(good + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_evidence_error(blob: bytes) -> None:
    for parser in (ev.Attest.parse, ev.TpmSignature.parse, ev.decode_pcrs_file):
        try:
            parser(blob)
        except ev.EvidenceError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10))
def test_malformed_evidence_json_is_an_evidence_error(junk: object) -> None:
    docs = [junk, {"format": ev.EVIDENCE_FORMAT, "version": 1, "pcrs": junk,
                   "quote": junk, "vtpm_uuid": "u", "nonce": "00"}]
    for doc in docs:
        with pytest.raises(ev.EvidenceError):
            ev.Evidence.from_json(doc, b"")  # type: ignore[arg-type]
