"""TPM2_Quote with the enrolled AK, the PCR values it covers, and their checking.

A quote signs a TPMS_ATTEST (Part 2, 10.12.12) holding the verifier's nonce
(extraData), the TPM's clock/resetCount/restartCount and a digest of the selected
PCRs. The values themselves come from TPM2_PCR_Read, which returns at most 8 PCRs
per call (Part 3, 22.4), so we read until the selection is exhausted. A PCR can
change between TPM2_Quote and TPM2_PCR_Read (the guest is running); we then check
the values against the quoted digest and quote again (a few times) rather than
hand out values that do not match what was signed.

Outputs are the bytes tpm2-tools writes: ``quote.msg`` = marshalled TPMS_ATTEST,
``quote.sig`` = marshalled TPMT_SIGNATURE, ``quote.pcrs`` = tpm2-tools' "serialized"
PCR file (written by ``measure.evidence``, where the file formats live).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import TPM2_ALG, TPM2_ST
from tpm2_pytss.types import TPM2B_DATA, TPML_PCR_SELECTION, TPMS_ATTEST, TPMS_PCR_SELECTION

from ..manufacture import Execute, esapi_over, public_key_of
from .credential import parse_public
from .errors import QuoteError, QuoteMismatch
from .keys import AttestationKey, load_ak

#: TPM_GENERATED_VALUE (Part 2, 6.2): only the TPM writes this into a TPMS_ATTEST.
TPM_GENERATED_VALUE: Final = 0xFF544347
#: PCR banks by the names tpm2-tools uses, with TPM_ALG_ID and digest size.
BANKS: Final[dict[str, tuple[int, int]]] = {
    "sha1": (int(TPM2_ALG.SHA1), 20),
    "sha256": (int(TPM2_ALG.SHA256), 32),
    "sha384": (int(TPM2_ALG.SHA384), 48),
    "sha512": (int(TPM2_ALG.SHA512), 64),
}
_BANK_NAMES: Final = {alg: name for name, (alg, _) in BANKS.items()}
_HASHES: Final[dict[int, type[hashes.HashAlgorithm]]] = {
    int(TPM2_ALG.SHA1): hashes.SHA1, int(TPM2_ALG.SHA256): hashes.SHA256,
    int(TPM2_ALG.SHA384): hashes.SHA384, int(TPM2_ALG.SHA512): hashes.SHA512,
}
PCR_COUNT: Final = 24
_ATTEMPTS: Final = 3

#: ((bank name, (pcr, ...)), ...) in quote order: banks as given, PCRs ascending.
Selection = tuple[tuple[str, tuple[int, ...]], ...]


def parse_selection(text: str) -> Selection:
    """``"sha256:0-23"``, ``"sha1,sha256:0,4,5"``, ``"sha1:0+sha256:4-7"`` (tpm2-tools
    style, plus ranges). A bank given twice is refused rather than merged."""
    banks: list[tuple[str, tuple[int, ...]]] = []
    for group in filter(None, text.replace(" ", "").split("+")):
        names, sep, pcr_list = group.partition(":")
        if not sep or not pcr_list:
            raise ValueError(f"PCR selection {group!r} needs 'bank:pcrs', e.g. sha256:0-7")
        pcrs: set[int] = set()
        for item in pcr_list.split(","):
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
            if match is None:
                raise ValueError(f"bad PCR {item!r} in {group!r}")
            low, high = int(match[1]), int(match[2] or match[1])
            if not 0 <= low <= high < PCR_COUNT:
                raise ValueError(f"PCR {item!r} is outside 0-{PCR_COUNT - 1}")
            pcrs.update(range(low, high + 1))
        for name in names.split(","):
            if name not in BANKS:
                raise ValueError(f"unknown PCR bank {name!r}; one of {', '.join(BANKS)}")
            if any(name == seen for seen, _ in banks):
                raise ValueError(f"PCR bank {name} given twice")
            banks.append((name, tuple(sorted(pcrs))))
    if not banks:
        raise ValueError("empty PCR selection")
    return tuple(banks)


def format_selection(selection: Selection) -> str:
    return "+".join(f"{bank}:{','.join(map(str, pcrs))}" for bank, pcrs in selection)


def to_tpml(selection: Selection) -> TPML_PCR_SELECTION:
    entries = []
    for bank, pcrs in selection:
        bitmap = bytearray(3)
        for pcr in pcrs:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        entries.append(TPMS_PCR_SELECTION(hash=BANKS[bank][0], sizeofSelect=3,
                                          pcrSelect=bytes(bitmap)))
    return TPML_PCR_SELECTION(entries)


@dataclass(frozen=True)
class QuoteResult:
    """A quote and what a verifier needs beside it."""

    attest: bytes                      # marshalled TPMS_ATTEST (quote.msg)
    signature: bytes                   # marshalled TPMT_SIGNATURE (quote.sig)
    selection: Selection
    pcrs: tuple[tuple[str, int, bytes], ...]  # (bank, pcr, value) in quote order
    nonce: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int

    def pcr_values(self) -> dict[str, dict[int, bytes]]:
        out: dict[str, dict[int, bytes]] = {}
        for bank, pcr, value in self.pcrs:
            out.setdefault(bank, {})[pcr] = value
        return out


def quote(execute: Execute, ak: AttestationKey, nonce: bytes, selection: str) -> QuoteResult:
    """Quote ``selection`` on the vTPM behind ``execute`` with the enrolled AK."""
    with esapi_over(execute) as esapi, load_ak(esapi, ak) as handle:
        return quote_with(esapi, handle, nonce, parse_selection(selection))


def quote_with(esapi: ESAPI, key: object, nonce: bytes, selection: Selection) -> QuoteResult:
    """TPM2_Quote with a loaded key (any ESAPI: a vTPM or the host TPM), then the
    PCR values, retried while a PCR moves between the two."""
    if len(nonce) > 64:
        raise ValueError("a nonce (TPM2B_DATA) holds at most 64 bytes")
    for _ in range(_ATTEMPTS):
        attest, signature = esapi.quote(key, to_tpml(selection), TPM2B_DATA(nonce))
        info = parse_attest(bytes(attest.marshal())[2:])
        pcrs = read_pcrs(esapi, selection)
        hash_alg = signature_hash_alg(bytes(signature.marshal()))
        if pcr_digest(hash_alg, (v for _, _, v in pcrs)) == info.pcr_digest:
            return QuoteResult(
                attest=info.raw, signature=bytes(signature.marshal()), selection=selection,
                pcrs=pcrs, nonce=nonce, clock=info.clock, reset_count=info.reset_count,
                restart_count=info.restart_count, safe=info.safe,
                firmware_version=info.firmware_version)
    raise QuoteError(f"PCRs kept changing between TPM2_Quote and TPM2_PCR_Read "
                     f"({_ATTEMPTS} attempts); quote again later")


def read_pcrs(esapi: ESAPI, selection: Selection) -> tuple[tuple[str, int, bytes], ...]:
    """Every selected PCR, by as many TPM2_PCR_Read calls as it takes."""
    values: dict[tuple[str, int], bytes] = {}
    wanted = [(bank, pcr) for bank, pcrs in selection for pcr in pcrs]
    while missing := [key for key in wanted if key not in values]:
        ask: dict[str, list[int]] = {}
        for bank, pcr in missing:
            ask.setdefault(bank, []).append(pcr)
        request: Selection = tuple((bank, tuple(p)) for bank, p in ask.items())
        _, got, digests = esapi.pcr_read(to_tpml(request))
        got_keys = [(_BANK_NAMES[int(s.hash)], pcr) for s in got
                    for pcr in _selected(bytes(s.pcrSelect)[: s.sizeofSelect])]
        if not got_keys:
            raise QuoteError("TPM2_PCR_Read returned no PCRs for "
                             f"{format_selection(request)}: is that bank allocated?")
        for key, digest in zip(got_keys, digests, strict=True):
            values[key] = bytes(digest)
    return tuple((bank, pcr, values[bank, pcr]) for bank, pcr in wanted)


def _selected(bitmap: bytes) -> list[int]:
    return [i * 8 + bit for i, byte in enumerate(bitmap) for bit in range(8)
            if byte >> bit & 1]


def pcr_digest(hash_alg: int, values: Iterable[bytes]) -> bytes:
    """H(PCR values concatenated in selection order) (Part 3, 18.4, pcrDigest)."""
    h = hashlib.new(_BANK_NAMES[hash_alg])
    for value in values:
        h.update(value)
    return h.digest()


# -- parsing and verifying -----------------------------------------------------------

@dataclass(frozen=True)
class AttestInfo:
    """The fields of a quote's TPMS_ATTEST a verifier uses."""

    raw: bytes
    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selection: Selection
    pcr_digest: bytes


def parse_attest(data: bytes) -> AttestInfo:
    """Parse a marshalled TPMS_ATTEST of type quote; anything else is a QuoteMismatch."""
    try:
        info, used = TPMS_ATTEST.unmarshal(data)
    except Exception as exc:
        raise QuoteMismatch(f"not a TPMS_ATTEST: {exc}") from exc
    if used != len(data):
        raise QuoteMismatch(f"{len(data) - used} trailing bytes after the TPMS_ATTEST")
    if info.magic != TPM_GENERATED_VALUE:
        raise QuoteMismatch("TPMS_ATTEST magic is not TPM_GENERATED_VALUE: not signed over "
                            "TPM-generated data")
    if info.type != TPM2_ST.ATTEST_QUOTE:
        raise QuoteMismatch(f"TPMS_ATTEST type 0x{int(info.type):04x} is not a quote")
    quote_info = info.attested.quote
    selection = tuple(
        (_BANK_NAMES[int(s.hash)], tuple(_selected(bytes(s.pcrSelect)[: s.sizeofSelect])))
        for s in quote_info.pcrSelect)
    clock = info.clockInfo
    return AttestInfo(
        raw=data, magic=int(info.magic), type=int(info.type),
        qualified_signer=bytes(info.qualifiedSigner), extra_data=bytes(info.extraData),
        clock=int(clock.clock), reset_count=int(clock.resetCount),
        restart_count=int(clock.restartCount), safe=bool(clock.safe),
        firmware_version=int(info.firmwareVersion), selection=selection,
        pcr_digest=bytes(quote_info.pcrDigest))


def signature_hash_alg(signature: bytes) -> int:
    """The hashAlg of a marshalled TPMT_SIGNATURE: the signing scheme's hash, which is
    also the one pcrDigest is computed with (Part 3, 18.4.1)."""
    if len(signature) < 4:
        raise QuoteMismatch("TPMT_SIGNATURE truncated")
    (hash_alg,) = struct.unpack_from(">H", signature, 2)
    if hash_alg not in _BANK_NAMES:
        raise QuoteMismatch(f"unsupported signature hash 0x{hash_alg:04x}")
    return int(hash_alg)


def verify_signature(public: bytes, message: bytes, signature: bytes) -> None:
    """Check a marshalled TPMT_SIGNATURE (RSASSA or ECDSA, Part 2, 11.3.4) over
    ``message`` with the key in a marshalled TPM2B_PUBLIC; raises QuoteMismatch."""
    key = public_key_of(parse_public(public))
    if len(signature) < 4:
        raise QuoteMismatch("TPMT_SIGNATURE truncated")
    sig_alg, hash_alg = struct.unpack_from(">HH", signature)
    algorithm = _HASHES.get(hash_alg)
    if algorithm is None:
        raise QuoteMismatch(f"unsupported signature hash 0x{hash_alg:04x}")
    fields, offset = [], 4
    while offset < len(signature):
        if offset + 2 > len(signature):
            raise QuoteMismatch("TPMT_SIGNATURE truncated")
        (n,) = struct.unpack_from(">H", signature, offset)
        if offset + 2 + n > len(signature):
            raise QuoteMismatch("TPMT_SIGNATURE truncated")
        fields.append(signature[offset + 2 : offset + 2 + n])
        offset += 2 + n
    try:
        if sig_alg == TPM2_ALG.RSASSA and isinstance(key, rsa.RSAPublicKey) and len(fields) == 1:
            key.verify(fields[0], message, padding.PKCS1v15(), algorithm())
        elif sig_alg == TPM2_ALG.ECDSA and isinstance(key, ec.EllipticCurvePublicKey) \
                and len(fields) == 2:
            der = encode_dss_signature(int.from_bytes(fields[0], "big"),
                                       int.from_bytes(fields[1], "big"))
            key.verify(der, message, ec.ECDSA(algorithm()))
        else:
            raise QuoteMismatch(f"signature scheme 0x{sig_alg:04x} does not fit the key "
                                "(we accept RSASSA for RSA, ECDSA for ECC)")
    except InvalidSignature as exc:
        raise QuoteMismatch("the quote's signature does not verify with the AK") from exc


def verify_quote(ak_public: bytes, attest: bytes, signature: bytes, nonce: bytes,
                 pcrs: Iterable[tuple[str, int, bytes]] | None = None) -> AttestInfo:
    """Signature, magic/type, nonce and (if values are given) the PCR selection and
    digest. Returns the parsed quote; raises :class:`QuoteMismatch` naming the check.

    This is the TPM-side check; replaying an event log against the values is
    ``measure``'s job."""
    verify_signature(ak_public, attest, signature)
    info = parse_attest(attest)
    if info.extra_data != nonce:
        raise QuoteMismatch("the quote does not carry the verifier's nonce")
    if pcrs is not None:
        given = list(pcrs)
        order = [(bank, pcr) for bank, sel in info.selection for pcr in sel]
        if [(bank, pcr) for bank, pcr, _ in given] != order:
            raise QuoteMismatch("the PCR values given are not the quote's selection "
                                f"({format_selection(info.selection)})")
        if pcr_digest(signature_hash_alg(signature), (v for _, _, v in given)) \
                != info.pcr_digest:
            raise QuoteMismatch("the PCR values do not hash to the quote's pcrDigest")
    return info
