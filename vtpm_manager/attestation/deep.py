"""Deep quote: the host TPM vouches that a vTPM quote came from a vTPM in this DomS0.

The host TPM quotes its own PCRs (which hold DomS0's measured boot) with qualifying
data = SHA-256 over a canonical, versioned *binding*::

    "vtpm-stack deep-quote binding v1\\0"
    || TPM2B(SHA-256(vTPM TPMS_ATTEST))   the vTPM quote, and through it its nonce
    || 16-byte vTPM UUID (RFC 4122 binary)
    || TPM2B(vTPM EK name)                nameAlg || H(EK TPMT_PUBLIC)
    || TPM2B(DomS0 policy digest)         the access-control policy DomS0 enforces

All fields are length-prefixed or fixed-size, so no two different tuples encode the
same way; the label's version lets a later binding never be misread as this one.
Freshness comes through the vTPM quote, which carries the verifier's nonce.

What is weak (known, left for later):
- the host AK is a primary key derived from the host's endorsement seed and a
  fixed template; nothing here certifies it (no host EK challenge) and it has no
  policy tying its use to DomS0's PCRs, so any process that can reach the host TPM
  can produce a deep quote for any binding. A verifier must know the host AK out of
  band (or a later step certifies it through the host EK, as :mod:`.enroll` does for
  vTPMs, and gives it a PolicyPCR over DomS0's measurement);
- the policy digest is what DomS0 says it enforces; it is bound, not measured —
  only if DomS0 also extends it into a host PCR is it attested;
- host PCR values are returned and checked against the quote, but judging them
  (is that DomS0's expected boot?) is the verifier's policy, not done here.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ECC
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMT_ECC_SCHEME,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_SYM_DEF_OBJECT,
    TPMU_ASYM_SCHEME,
    TPMU_PUBLIC_ID,
    TPMU_PUBLIC_PARMS,
)

from ..manufacture import ecc_p256_ek_template, public_key_of, rsa2048_ek_template
from .errors import DeepQuoteMismatch, QuoteMismatch
from .keys import AK_ATTRIBUTES
from .quote import (
    BANKS,
    AttestInfo,
    QuoteResult,
    format_selection,
    parse_attest,
    parse_selection,
    quote_with,
    verify_quote,
    verify_signature,
)

BINDING_LABEL: Final = b"vtpm-stack deep-quote binding v1\x00"
DEEP_QUOTE_MAGIC: Final = b"VTPMDQ\x00\x00"
DEEP_QUOTE_VERSION: Final = 1
#: Host PCRs a deep quote covers by default: firmware and boot loader (0-7) and the
#: PCRs a measured DomS0 boot uses (8, 9 for the kernel/initrd, 14 for shim/MOK).
DEFAULT_HOST_PCRS: Final = "sha256:0-9,14"
#: In the host AK's unique field: a key of its own, not anyone's default ECC AK.
_HOST_AK_UNIQUE: Final = hashlib.sha256(b"vtpm-stack host attestation key v1").digest()


def binding(vtpm_attest: bytes, vtpm_uuid: str, ek_name: bytes, policy_digest: bytes) -> bytes:
    """The canonical bytes the host quote's qualifying data is the SHA-256 of."""
    return (BINDING_LABEL + _tpm2b(hashlib.sha256(vtpm_attest).digest())
            + uuid.UUID(vtpm_uuid).bytes + _tpm2b(ek_name) + _tpm2b(policy_digest))


def qualifying_data(vtpm_attest: bytes, vtpm_uuid: str, ek_name: bytes,
                    policy_digest: bytes) -> bytes:
    return hashlib.sha256(binding(vtpm_attest, vtpm_uuid, ek_name, policy_digest)).digest()


def host_ak_template() -> TPM2B_PUBLIC:
    """A restricted ECDSA-P256-SHA256 signing primary in the host's endorsement
    hierarchy: deterministic, so the same key comes back every time without storage."""
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256, objectAttributes=AK_ATTRIBUTES,
        parameters=TPMU_PUBLIC_PARMS(eccDetail=TPMS_ECC_PARMS(
            symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
            scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.ECDSA, details=TPMU_ASYM_SCHEME(
                ecdsa={"hashAlg": TPM2_ALG.SHA256})),
            curveID=TPM2_ECC.NIST_P256, kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL))),
        unique=TPMU_PUBLIC_ID(ecc=TPMS_ECC_POINT(x=_HOST_AK_UNIQUE, y=b"")),
    ))


@contextmanager
def host_ak(esapi: ESAPI) -> Iterator[tuple[Any, bytes]]:
    """The host AK loaded on ``esapi``: (ESYS handle, marshalled TPM2B_PUBLIC), flushed
    on exit. Public because migration proofs quote with the same key as deep quotes:
    one host AK for everything a host proves about itself."""
    handle, public, *_ = esapi.create_primary(None, host_ak_template(), ESYS_TR.ENDORSEMENT)
    try:
        yield handle, bytes(public.marshal())
    finally:
        esapi.flush_context(handle)


def host_ak_public(host_tcti: Any) -> bytes:
    """The host AK's marshalled TPM2B_PUBLIC (what a verifier must trust out of band)."""
    with ESAPI(host_tcti) as esapi, host_ak(esapi) as (_, public):
        return public


@dataclass(frozen=True)
class DeepQuote:
    """A host-TPM quote binding one vTPM quote; :meth:`encode` is its versioned form."""

    host_ak_public: bytes
    host_quote: QuoteResult

    def encode(self) -> bytes:
        """``magic | u16 version | TPM2B host AK public | TPM2B attest | TPM2B signature
        | TPM2B selection text | u16 n | n x (u16 bank alg, u8 pcr, TPM2B value)``."""
        q = self.host_quote
        out = DEEP_QUOTE_MAGIC + struct.pack(">H", DEEP_QUOTE_VERSION)
        out += _tpm2b(self.host_ak_public) + _tpm2b(q.attest) + _tpm2b(q.signature)
        out += _tpm2b(format_selection(q.selection).encode())
        out += struct.pack(">H", len(q.pcrs))
        for bank, pcr, value in q.pcrs:
            out += struct.pack(">HB", BANKS[bank][0], pcr) + _tpm2b(value)
        return out

    @classmethod
    def decode(cls, data: bytes) -> tuple[bytes, bytes, bytes, str,
                                          tuple[tuple[str, int, bytes], ...]]:
        """(host AK public, attest, signature, selection, PCR values) of an encoded deep
        quote; :class:`DeepQuoteMismatch` if it is not one of ours, or another version."""
        if data[:8] != DEEP_QUOTE_MAGIC or len(data) < 10:
            raise DeepQuoteMismatch("not a vtpm-stack deep quote (bad magic)")
        (version,) = struct.unpack_from(">H", data, 8)
        if version != DEEP_QUOTE_VERSION:
            raise DeepQuoteMismatch(f"deep quote version {version}; we read "
                                    f"{DEEP_QUOTE_VERSION}")
        reader = _Reader(data, 10)
        public, attest, signature = reader.tpm2b(), reader.tpm2b(), reader.tpm2b()
        selection = reader.tpm2b().decode()
        names = {alg: name for name, (alg, _) in BANKS.items()}
        pcrs = []
        for _ in range(reader.unpack(">H")[0]):
            alg, pcr = reader.unpack(">HB")
            if alg not in names:
                raise DeepQuoteMismatch(f"unknown PCR bank 0x{alg:04x}")
            pcrs.append((names[alg], pcr, reader.tpm2b()))
        reader.end()
        return public, attest, signature, selection, tuple(pcrs)


def deep_quote(host_tcti: Any, vtpm_attest: bytes, vtpm_uuid: str, ek_name: bytes,
               policy_digest: bytes, host_pcrs: str = DEFAULT_HOST_PCRS) -> DeepQuote:
    """Quote the host TPM (tpm2-pytss TCTI ``host_tcti``) with the host AK over
    ``host_pcrs``, qualifying data binding the vTPM quote (its TPMS_ATTEST bytes)."""
    extra = qualifying_data(vtpm_attest, vtpm_uuid, ek_name, policy_digest)
    with ESAPI(host_tcti) as esapi, host_ak(esapi) as (handle, public):
        result = quote_with(esapi, handle, extra, parse_selection(host_pcrs))
    return DeepQuote(public, result)


def verify_deep_quote(encoded: bytes, host_ak_public: bytes, vtpm_attest: bytes,
                      vtpm_uuid: str, ek_name: bytes, policy_digest: bytes) -> AttestInfo:
    """Check an encoded deep quote against the host AK the verifier trusts and the
    vTPM evidence it is meant to bind. Returns the host quote; raises
    :class:`DeepQuoteMismatch` naming what does not hold.

    The vTPM quote itself (its signature, nonce, PCRs) is checked separately with
    :func:`verify_quote`; this proves only the binding and the host signature."""
    public, attest, signature, _, pcrs = DeepQuote.decode(encoded)
    if public != host_ak_public:
        raise DeepQuoteMismatch("signed by another host AK than the one trusted")
    expected = qualifying_data(vtpm_attest, vtpm_uuid, ek_name, policy_digest)
    try:
        verify_signature(host_ak_public, attest, signature)
        if parse_attest(attest).extra_data != expected:
            raise DeepQuoteMismatch("the host quote does not bind this vTPM quote, UUID, "
                                    "EK name and policy digest")
        return verify_quote(host_ak_public, attest, signature, expected, pcrs)
    except DeepQuoteMismatch:
        raise
    except QuoteMismatch as exc:
        raise DeepQuoteMismatch(f"host quote: {exc}") from exc


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def unpack(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise DeepQuoteMismatch("deep quote truncated")
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def tpm2b(self) -> bytes:
        (n,) = self.unpack(">H")
        if self.offset + n > len(self.data):
            raise DeepQuoteMismatch("deep quote truncated")
        value = self.data[self.offset : self.offset + n]
        self.offset += n
        return value

    def end(self) -> None:
        if self.offset != len(self.data):
            raise DeepQuoteMismatch("trailing bytes after the deep quote")


# -- PEM forms: what an evidence bundle carries and a verifier pins -----------------

def host_ak_pem(host_ak_public: bytes) -> bytes:
    """SubjectPublicKeyInfo PEM of a marshalled host AK TPM2B_PUBLIC."""
    public, _ = TPM2B_PUBLIC.unmarshal(host_ak_public)
    return public_key_of(public.publicArea).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def host_ak_public_from_pem(pem: bytes) -> bytes:
    """The marshalled TPM2B_PUBLIC of the host AK with this P-256 public key: the fixed
    template with the point as its unique field (what :func:`verify_deep_quote` pins)."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise DeepQuoteMismatch("the host AK must be a NIST P-256 public key")
    numbers = key.public_numbers()
    template = host_ak_template()
    template.publicArea.unique.ecc.x = numbers.x.to_bytes(32, "big")
    template.publicArea.unique.ecc.y = numbers.y.to_bytes(32, "big")
    return bytes(template.marshal())


def ek_name_from_certificate(pem: bytes) -> bytes:
    """The TPM name (``0x000b || SHA-256(TPMT_PUBLIC)``) of the EK an EK certificate
    certifies, recreated from its key and the EK Credential Profile template (L-1 RSA
    2048 or L-2 NIST P-256, the ones :mod:`vtpm_manager.manufacture` creates)."""
    key = x509.load_pem_x509_certificate(pem).public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048:
        template = rsa2048_ek_template()
        template.publicArea.unique.rsa = key.public_numbers().n.to_bytes(256, "big")
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        template = ecc_p256_ek_template()
        template.publicArea.unique.ecc.x = key.public_numbers().x.to_bytes(32, "big")
        template.publicArea.unique.ecc.y = key.public_numbers().y.to_bytes(32, "big")
    else:
        raise DeepQuoteMismatch("the EK certificate's key is neither RSA 2048 nor P-256")
    area = bytes(template.publicArea.marshal())
    return struct.pack(">H", TPM2_ALG.SHA256) + hashlib.sha256(area).digest()
