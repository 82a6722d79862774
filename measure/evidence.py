"""The evidence bundle ``vtpmctl quote`` writes, and the TPM structures inside it.

A bundle is a directory:

* ``evidence.json`` — versioned, self-contained: vTPM UUID, nonce, PCR selection, the
  quote (TPMS_ATTEST and TPMT_SIGNATURE, base64), the PCR values quoted, AK public key
  PEM, the AK/EK certificate chain PEMs, the quote's clock fields (for reporting only; the
  signed copy is inside the attest) and an optional deep quote;
* tpm2-tools-compatible copies so ``tpm2_checkquote -u ak.pub.pem -m quote.msg
  -s quote.sig -f quote.pcrs -q NONCE`` works without our code: ``quote.msg`` (marshalled
  TPMS_ATTEST, as ``tpm2_quote -m``), ``quote.sig`` (marshalled TPMT_SIGNATURE, as
  ``tpm2_quote -s``), ``quote.pcrs`` (tpm2-tools "serialized" PCR file, as
  ``tpm2_quote -o``), ``ak.pub.pem``;
* ``eventlog.bin`` — the TCG crypto-agile event log.

Nothing in a bundle is trusted: the verifier checks it all against the signature, the CA
and the nonce. Loading only refuses bundles we cannot read or whose copies disagree.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measure.eventlog import BANKS

__all__ = [
    "EVIDENCE_FORMAT", "EVIDENCE_VERSION", "Attest", "Evidence", "EvidenceError",
    "PcrSelection", "TpmSignature", "decode_pcrs_file", "encode_pcrs_file",
    "format_pcr_selection", "load", "parse_pcr_selection", "write",
]

EVIDENCE_FORMAT = "vtpm-stack.evidence"
EVIDENCE_VERSION = 1

TPM_GENERATED_VALUE = 0xFF544347   # Part 2, 6.2
TPM_ST_ATTEST_QUOTE = 0x8018       # Part 2, 6.9
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_ECDSA = 0x0018
_HASH_BY_ID = {alg: name for name, (alg, _) in BANKS.items()}

# tpm2-tools' C layout of its "serialized" PCR file (lib/pcr.c pcr_fwrite_serialized).
_MAX_BANKS = 16              # TPM2_NUM_PCR_BANKS: TPML_PCR_SELECTION.pcrSelections[16]
_SELECT_MAX = 4              # TPM2_PCR_SELECT_MAX: pcrSelect[4]
_SELECTION_STRUCT = 8        # u16 hash, u8 sizeofSelect, u8[4], 1 pad byte
_DIGESTS_PER_LIST = 8        # TPML_DIGEST.digests[8]
_DIGEST_STRUCT = 66          # TPM2B_DIGEST: u16 size, u8 buffer[64]
_LIST_STRUCT = 4 + _DIGESTS_PER_LIST * _DIGEST_STRUCT           # 532
_SELECTION_LIST_STRUCT = 4 + _MAX_BANKS * _SELECTION_STRUCT     # 132
_MAX_LISTS = 32              # tpm2_pcrs.pcr_values[TPM2_MAX_PCRS]

#: ``(("sha256", (0, 1, 2)), ...)``: banks in order, each with its ascending PCRs.
PcrSelection = tuple[tuple[str, tuple[int, ...]], ...]


class EvidenceError(ValueError):
    """A bundle or structure we cannot read (malformed, inconsistent, unknown version)."""


# -- PCR selections ------------------------------------------------------------------


def parse_pcr_selection(text: str) -> PcrSelection:
    """``sha256:0-23`` or tpm2-tools' ``sha1:0,1+sha256:0,4-7`` into a selection."""
    result: list[tuple[str, tuple[int, ...]]] = []
    for part in text.replace(" ", "").split("+"):
        bank, sep, pcrs_text = part.partition(":")
        if not sep or bank not in BANKS:
            raise EvidenceError(f"PCR selection {part!r}: need BANK:PCRS with a bank of "
                                f"{', '.join(BANKS)}")
        pcrs: set[int] = set()
        for item in pcrs_text.split(","):
            low, dash, high = item.partition("-")
            try:
                first, last = int(low), int(high if dash else low)
            except ValueError:
                raise EvidenceError(f"PCR selection {part!r}: {item!r} is not a PCR") from None
            if not 0 <= first <= last < 24:
                raise EvidenceError(f"PCR selection {part!r}: {item!r} outside 0..23")
            pcrs.update(range(first, last + 1))
        result.append((bank, tuple(sorted(pcrs))))
    return _check_selection(tuple(result))


def format_pcr_selection(selection: PcrSelection) -> str:
    """The tpm2-tools spelling, ``sha256:0,1,2+sha1:7``."""
    return "+".join(f"{bank}:{','.join(map(str, pcrs))}" for bank, pcrs in selection)


def _check_selection(selection: PcrSelection) -> PcrSelection:
    banks = [bank for bank, _ in selection]
    if len(set(banks)) != len(banks) or len(banks) > _MAX_BANKS:
        raise EvidenceError(f"PCR selection names a bank twice or too many banks: {banks}")
    for bank, pcrs in selection:
        if bank not in BANKS or any(not 0 <= p < 8 * _SELECT_MAX for p in pcrs):
            raise EvidenceError(f"bad PCR selection {bank}:{pcrs}")
        if list(pcrs) != sorted(set(pcrs)):
            raise EvidenceError(f"PCR selection {bank}:{pcrs} is not ascending")
    return selection


def _select_bits(pcrs: tuple[int, ...], size: int) -> bytes:
    bits = bytearray(size)
    for pcr in pcrs:
        bits[pcr // 8] |= 1 << (pcr % 8)
    return bytes(bits)


def _bits_to_pcrs(bits: bytes) -> tuple[int, ...]:
    return tuple(i for i in range(8 * len(bits)) if bits[i // 8] & (1 << (i % 8)))


# -- TPM structures (big-endian, Part 2) ---------------------------------------------


class _Cursor:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.offset, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise EvidenceError(f"{self.what} is truncated at byte {self.offset}")
        chunk = self.data[self.offset:self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(">" + fmt, self.take(struct.calcsize(">" + fmt)))

    def tpm2b(self) -> bytes:
        (size,) = self.unpack("H")
        return self.take(size)

    def end(self) -> None:
        if self.offset != len(self.data):
            raise EvidenceError(f"{self.what} has {len(self.data) - self.offset} trailing bytes")


def _hash_name(alg: int, what: str) -> str:
    if alg not in _HASH_BY_ID:
        raise EvidenceError(f"{what}: unsupported hash algorithm 0x{alg:04x}")
    return _HASH_BY_ID[alg]


@dataclass(frozen=True)
class Attest:
    """TPMS_ATTEST (Part 2, 10.12.12) with the TPMS_QUOTE_INFO arm (10.12.1).

    Magic and type are kept as read, not enforced, so the verifier can say which is wrong.
    """

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selection: PcrSelection = ()
    pcr_digest: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> Attest:
        c = _Cursor(data, "TPMS_ATTEST")
        magic, type_ = c.unpack("IH")
        signer, extra = c.tpm2b(), c.tpm2b()
        clock, reset, restart, safe, firmware = c.unpack("QIIBQ")
        selection: PcrSelection = ()
        digest = b""
        if type_ == TPM_ST_ATTEST_QUOTE:
            (count,) = c.unpack("I")
            if count > _MAX_BANKS:
                raise EvidenceError(f"TPMS_ATTEST: {count} PCR banks selected")
            banks = []
            for _ in range(count):
                alg, size = c.unpack("HB")
                banks.append((_hash_name(alg, "TPMS_ATTEST"), _bits_to_pcrs(c.take(size))))
            selection = tuple(banks)
            digest = c.tpm2b()
        c.end()
        return cls(magic, type_, signer, extra, clock, reset, restart, bool(safe), firmware,
                   selection, digest)


@dataclass(frozen=True)
class TpmSignature:
    """TPMT_SIGNATURE (Part 2, 11.3.4) for RSASSA, RSAPSS and ECDSA."""

    sig_alg: int
    hash_alg: str
    signature: bytes = b""        # RSA
    r: bytes = b""                # ECDSA
    s: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> TpmSignature:
        c = _Cursor(data, "TPMT_SIGNATURE")
        sig_alg, hash_alg = c.unpack("HH")
        name = _hash_name(hash_alg, "TPMT_SIGNATURE")
        if sig_alg in (TPM_ALG_RSASSA, TPM_ALG_RSAPSS):
            result = cls(sig_alg, name, signature=c.tpm2b())
        elif sig_alg == TPM_ALG_ECDSA:
            r = c.tpm2b()
            result = cls(sig_alg, name, r=r, s=c.tpm2b())
        else:
            raise EvidenceError(f"TPMT_SIGNATURE: unsupported scheme 0x{sig_alg:04x}")
        c.end()
        return result


# -- tpm2-tools' serialized PCR file -------------------------------------------------


def encode_pcrs_file(selection: PcrSelection, values: Mapping[str, Mapping[int, bytes]],
                     size_of_select: int = 3) -> bytes:
    """The file ``tpm2_quote -o`` writes (tpm2-tools lib/pcr.c, pcr_fwrite_serialized).

    It is tpm2-tools' in-memory C structs, little-endian, padding zeroed:
    ``TPML_PCR_SELECTION`` (u32 count + 16 x {u16 hash, u8 sizeofSelect, u8 pcrSelect[4],
    pad}) = 132 bytes, then u32 N, then N x ``TPML_DIGEST`` (u32 count + 8 x {u16 size,
    u8 buffer[64]}) = 532 bytes each. The digests run in selection order (bank by bank,
    ascending PCR), 8 per TPML_DIGEST, as successive TPM2_PCR_Read calls return them.
    """
    _check_selection(selection)
    out = bytearray(struct.pack("<I", len(selection)))
    for bank, pcrs in selection:
        bits = _select_bits(pcrs, _SELECT_MAX)
        out += struct.pack("<HB", BANKS[bank][0], size_of_select) + bits + b"\x00"
    out += bytes(_SELECTION_LIST_STRUCT - len(out))
    digests = []
    for bank, pcrs in selection:
        for pcr in pcrs:
            try:
                digests.append(values[bank][pcr])
            except KeyError:
                raise EvidenceError(f"no {bank} value for PCR {pcr}") from None
    lists = [digests[i:i + _DIGESTS_PER_LIST] for i in range(0, len(digests), 8)]
    if len(lists) > _MAX_LISTS:
        raise EvidenceError("too many PCR values for a tpm2-tools PCR file")
    out += struct.pack("<I", len(lists))
    for chunk in lists:
        body = struct.pack("<I", len(chunk))
        for digest in chunk:
            body += struct.pack("<H", len(digest)) + digest.ljust(64, b"\x00")
        out += body.ljust(_LIST_STRUCT, b"\x00")
    return bytes(out)


def decode_pcrs_file(data: bytes) -> tuple[PcrSelection, dict[str, dict[int, bytes]]]:
    """Read a tpm2-tools serialized PCR file back into a selection and its values."""
    if len(data) < _SELECTION_LIST_STRUCT + 4:
        raise EvidenceError("PCR file is shorter than its fixed header")
    (count,) = struct.unpack_from("<I", data, 0)
    if count > _MAX_BANKS:
        raise EvidenceError(f"PCR file selects {count} banks")
    selection = []
    for i in range(count):
        alg, size = struct.unpack_from("<HB", data, 4 + i * _SELECTION_STRUCT)
        if size > _SELECT_MAX:
            raise EvidenceError(f"PCR file: sizeofSelect {size}")
        start = 4 + i * _SELECTION_STRUCT + 3
        selection.append((_hash_name(alg, "PCR file"), _bits_to_pcrs(data[start:start + size])))
    (lists,) = struct.unpack_from("<I", data, _SELECTION_LIST_STRUCT)
    if lists > _MAX_LISTS or len(data) != _SELECTION_LIST_STRUCT + 4 + lists * _LIST_STRUCT:
        raise EvidenceError(f"PCR file of {len(data)} bytes does not hold {lists} digest lists")
    digests: list[bytes] = []
    for i in range(lists):
        base = _SELECTION_LIST_STRUCT + 4 + i * _LIST_STRUCT
        (n,) = struct.unpack_from("<I", data, base)
        if n > _DIGESTS_PER_LIST:
            raise EvidenceError(f"PCR file: TPML_DIGEST count {n}")
        for j in range(n):
            at = base + 4 + j * _DIGEST_STRUCT
            (size,) = struct.unpack_from("<H", data, at)
            if size > 64:
                raise EvidenceError(f"PCR file: digest size {size}")
            digests.append(data[at + 2:at + 2 + size])
    values: dict[str, dict[int, bytes]] = {}
    it = iter(digests)
    for bank, pcrs in selection:
        for pcr in pcrs:
            digest = next(it, None)
            if digest is None or len(digest) != BANKS[bank][1]:
                raise EvidenceError(f"PCR file: no proper {bank} value for PCR {pcr}")
            values.setdefault(bank, {})[pcr] = digest
    if next(it, None) is not None:
        raise EvidenceError("PCR file holds more values than its selection")
    return _check_selection(tuple(selection)), values


# -- the bundle ----------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What a verifier needs: the signed quote, the PCR values, keys, certificates, log."""

    vtpm_uuid: str
    nonce: bytes
    selection: PcrSelection
    attest: bytes                         # marshalled TPMS_ATTEST
    signature: bytes                      # marshalled TPMT_SIGNATURE
    pcr_values: Mapping[str, Mapping[int, bytes]]
    ak_public_pem: bytes
    certificates: tuple[bytes, ...]       # PEMs: AK certificate first, then EK, then more
    eventlog: bytes
    deep_quote: Mapping[str, Any] | None = None
    version: int = field(default=EVIDENCE_VERSION)

    @property
    def quote(self) -> Attest:
        """The parsed TPMS_ATTEST (untrusted until the verifier checks its signature)."""
        return Attest.parse(self.attest)

    def pcrs_file(self) -> bytes:
        """``quote.pcrs`` in tpm2-tools' serialized format."""
        return encode_pcrs_file(self.selection, self.pcr_values)

    def to_json(self) -> dict[str, Any]:
        quote = self.quote
        return {
            "format": EVIDENCE_FORMAT,
            "version": self.version,
            "vtpm_uuid": self.vtpm_uuid,
            "nonce": self.nonce.hex(),
            "pcr_selection": format_pcr_selection(self.selection),
            "quote": {
                "attest": base64.b64encode(self.attest).decode(),
                "signature": base64.b64encode(self.signature).decode(),
            },
            "pcrs": {bank: {str(pcr): value.hex() for pcr, value in sorted(values.items())}
                     for bank, values in self.pcr_values.items()},
            "ak_public_pem": self.ak_public_pem.decode(),
            "certificates": [pem.decode() for pem in self.certificates],
            "eventlog": "eventlog.bin",
            "clock_info": {  # reporting only: the signed values are inside "attest"
                "clock": quote.clock, "reset_count": quote.reset_count,
                "restart_count": quote.restart_count, "safe": quote.safe,
                "firmware_version": f"{quote.firmware_version:016x}",
            },
            "deep_quote": dict(self.deep_quote) if self.deep_quote is not None else None,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], eventlog: bytes) -> Evidence:
        if not isinstance(doc, Mapping) or doc.get("format") != EVIDENCE_FORMAT:
            raise EvidenceError(f"not a {EVIDENCE_FORMAT} document")
        version = doc.get("version")
        if type(version) is not int or version != EVIDENCE_VERSION:
            raise EvidenceError(f"evidence version {version!r} is not supported "
                                f"(this verifier reads version {EVIDENCE_VERSION})")
        try:
            pcr_values = {bank: {int(pcr): bytes.fromhex(value) for pcr, value in v.items()}
                          for bank, v in doc["pcrs"].items()}
            return cls(
                vtpm_uuid=str(doc["vtpm_uuid"]),
                nonce=bytes.fromhex(doc["nonce"]),
                selection=parse_pcr_selection(doc["pcr_selection"]),
                attest=base64.b64decode(doc["quote"]["attest"], validate=True),
                signature=base64.b64decode(doc["quote"]["signature"], validate=True),
                pcr_values=pcr_values,
                ak_public_pem=doc["ak_public_pem"].encode(),
                certificates=tuple(pem.encode() for pem in doc["certificates"]),
                eventlog=eventlog,
                deep_quote=doc.get("deep_quote"),
            )
        except (KeyError, TypeError, AttributeError, ValueError, binascii.Error) as exc:
            if isinstance(exc, EvidenceError):
                raise
            raise EvidenceError(f"evidence.json: missing or malformed field ({exc})") from None


def _files(evidence: Evidence) -> dict[str, bytes]:
    return {
        "quote.msg": evidence.attest,
        "quote.sig": evidence.signature,
        "quote.pcrs": evidence.pcrs_file(),
        "ak.pub.pem": evidence.ak_public_pem,
        "eventlog.bin": evidence.eventlog,
    }


def write(evidence: Evidence, directory: Path) -> Path:
    """Write the bundle into ``directory`` (created if needed); returns evidence.json."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in _files(evidence).items():
        (directory / name).write_bytes(data)
    target = directory / "evidence.json"
    target.write_text(json.dumps(evidence.to_json(), indent=2) + "\n")
    return target


def load(path: Path) -> Evidence:
    """Load a bundle from its directory or its evidence.json.

    The tpm2-tools copies are checked against evidence.json, so both verifiers (ours and
    ``tpm2_checkquote``) see the same quote; ``eventlog.bin`` exists only as a file.
    """
    directory = path if path.is_dir() else path.parent
    try:
        doc = json.loads((directory / "evidence.json").read_text())
        eventlog = (directory / "eventlog.bin").read_bytes()
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"cannot read evidence in {directory}: {exc}") from None
    evidence = Evidence.from_json(doc, eventlog)
    for name, data in _files(evidence).items():
        copy = directory / name
        if copy.exists() and copy.read_bytes() != data:
            raise EvidenceError(f"{copy} differs from evidence.json: the bundle was edited "
                                "or torn")
    return evidence
