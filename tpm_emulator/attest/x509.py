"""The DER side of TPM2_CertifyX509 (Part 3, 18.8; Part 2, 8.12 TPMA_X509_KEY_USAGE):
split the caller's partialCertificate, check its extensions against the certified
object, and encode what the TPM adds to the TBSCertificate (RFC 5280, 4.1).

The caller sends a SEQUENCE holding, in this order, the optional signature
AlgorithmIdentifier, issuer, validity and subject (each a SEQUENCE the TPM does not look
into) and the [3] extensions. The TPM adds version (v3), serialNumber, the signature
AlgorithmIdentifier when the caller left it out, and the certified key's
SubjectPublicKeyInfo; it hashes the TBSCertificate assembled in RFC 5280 order and signs
that digest.

The reader is deliberately no more lenient and no stricter than the reference's
TpmASN1.c: definite lengths of one, two or three octets (a two-octet length must stay
below 0x8000), every length inside its container, no high tag numbers. Non-minimal
lengths are accepted, as libtpms accepts them. Only the extensions are parsed; the
issuer, validity and subject are taken as they come.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import RC, TPM_ALG
from ..crypto import HASHES
from ..errors import TpmError
from ..keys.signing import TPMT_SIG_SCHEME
from ..objects.public import (
    ECC_NIST_P256,
    ECC_NIST_P384,
    ECC_NIST_P521,
    TPMA_OBJECT,
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMS_RSA_PARMS,
    TPMT_PUBLIC,
    UniqueBytes,
)

# ---- DER tags (X.690, 8.1.2) -----------------------------------------------------------
INTEGER, BIT_STRING, OCTET_STRING, NULL, OID = 0x02, 0x03, 0x04, 0x05, 0x06
SEQUENCE = 0x30
VERSION_TAG = 0xA0  # [0] EXPLICIT Version
EXTENSIONS_TAG = 0xA3  # [3] EXPLICIT Extensions


def encode_oid(dotted: str) -> bytes:
    """A whole OBJECT IDENTIFIER element (tag, length, base-128 arcs)."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(OID, bytes(body))


def tlv(tag: int, content: bytes) -> bytes:
    """Tag, minimal definite length, content."""
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + length + content


def der_integer(big_endian: bytes) -> bytes:
    """An unsigned big-endian number as a DER INTEGER: leading zeros dropped (one kept
    for zero), a zero octet put back when the top bit would make it negative."""
    value = big_endian.lstrip(b"\x00") or b"\x00"
    if value[0] & 0x80:
        value = b"\x00" + value
    return tlv(INTEGER, value)


def algorithm_identifier(algorithm: bytes, *, null_parameters: bool = True,
                         parameters: bytes = b"") -> bytes:
    """AlgorithmIdentifier (RFC 5280, 4.1.1.2); ``algorithm`` is a whole OID element."""
    return tlv(SEQUENCE, algorithm + (tlv(NULL, b"") if null_parameters else parameters))


# ---- OIDs (RFC 3279, 4055, 5480, 5758; TCG EK Credential Profile) ---------------------
OID_KEY_USAGE = encode_oid("2.5.29.15")
OID_TCG_TPMA_OBJECT = encode_oid("2.23.133.10.1.1.1")
OID_RSA_ENCRYPTION = encode_oid("1.2.840.113549.1.1.1")
OID_MGF1 = encode_oid("1.2.840.113549.1.1.8")
OID_RSASSA_PSS = encode_oid("1.2.840.113549.1.1.10")
OID_EC_PUBLIC_KEY = encode_oid("1.2.840.10045.2.1")
OID_HASH: dict[int, bytes] = {
    TPM_ALG.SHA1: encode_oid("1.3.14.3.2.26"),
    TPM_ALG.SHA256: encode_oid("2.16.840.1.101.3.4.2.1"),
    TPM_ALG.SHA384: encode_oid("2.16.840.1.101.3.4.2.2"),
    TPM_ALG.SHA512: encode_oid("2.16.840.1.101.3.4.2.3"),
}
OID_PKCS1_SIGNATURE: dict[int, bytes] = {
    TPM_ALG.SHA1: encode_oid("1.2.840.113549.1.1.5"),
    TPM_ALG.SHA256: encode_oid("1.2.840.113549.1.1.11"),
    TPM_ALG.SHA384: encode_oid("1.2.840.113549.1.1.12"),
    TPM_ALG.SHA512: encode_oid("1.2.840.113549.1.1.13"),
}
OID_ECDSA_SIGNATURE: dict[int, bytes] = {
    TPM_ALG.SHA1: encode_oid("1.2.840.10045.4.1"),
    TPM_ALG.SHA256: encode_oid("1.2.840.10045.4.3.2"),
    TPM_ALG.SHA384: encode_oid("1.2.840.10045.4.3.3"),
    TPM_ALG.SHA512: encode_oid("1.2.840.10045.4.3.4"),
}
OID_CURVE: dict[int, bytes] = {
    ECC_NIST_P256: encode_oid("1.2.840.10045.3.1.7"),
    ECC_NIST_P384: encode_oid("1.3.132.0.34"),
    ECC_NIST_P521: encode_oid("1.3.132.0.35"),
}

# ---- TPMA_X509_KEY_USAGE (Part 2, 8.12): the KeyUsage BIT STRING, left-justified -------
DIGITAL_SIGNATURE = 1 << 31
NON_REPUDIATION = 1 << 30
KEY_ENCIPHERMENT = 1 << 29
DATA_ENCIPHERMENT = 1 << 28
KEY_AGREEMENT = 1 << 27
KEY_CERT_SIGN = 1 << 26
CRL_SIGN = 1 << 25
ENCIPHER_ONLY = 1 << 24
DECIPHER_ONLY = 1 << 23
# Part 3, 18.8.1: which KeyUsage bits need which TPMA_OBJECT attribute. Signing usages
# need sign, decryption usages decrypt, nonRepudiation fixedTPM. Which usage needs
# restricted is where the versions part: libtpms 0.9 (TPM 2.0 1.59) ties restricted
# to keyAgreement; later references tie it to keyEncipherment and also refuse KeyUsage
# bits below decipherOnly (TPM_RC_RESERVED_BITS). We answer as libtpms 0.9, our oracle.
KEY_USAGE_SIGN = DIGITAL_SIGNATURE | KEY_CERT_SIGN | CRL_SIGN
KEY_USAGE_DECRYPT = (KEY_ENCIPHERMENT | DATA_ENCIPHERMENT | KEY_AGREEMENT | ENCIPHER_ONLY
                     | DECIPHER_ONLY)
USAGE_NEEDS: tuple[tuple[int, TPMA_OBJECT], ...] = (
    (KEY_USAGE_SIGN, TPMA_OBJECT.sign),
    (KEY_USAGE_DECRYPT, TPMA_OBJECT.decrypt),
    (NON_REPUDIATION, TPMA_OBJECT.fixedTPM),
    (KEY_AGREEMENT, TPMA_OBJECT.restricted),
)

# The reference's SIZE_OF_X509_SERIAL_NUMBER: at most 20 octets (RFC 5280, 4.1.2.2).
SERIAL_NUMBER_BYTES = 20


class Malformed(Exception):
    """The DER cannot be read the way the reference reads it (TPM_RC_VALUE, or _SIZE
    for the outer SEQUENCE, on partialCertificate)."""


class _Reader:
    """A cursor over one DER container: ``end`` is where the container stops."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data, self.offset = data, start
        self.end = len(data) if end is None else end

    def at_end(self) -> bool:
        return self.offset >= self.end

    def octet(self) -> int:
        if self.offset >= self.end:
            raise Malformed("read past the end of the element")
        b = self.data[self.offset]
        self.offset += 1
        return b

    def next_tag(self) -> tuple[int, int]:
        """The next tag and its length; the cursor is left on the contents."""
        tag = self.octet()
        if tag & 0x1F == 0x1F:
            raise Malformed("high tag numbers are not supported")
        first = self.octet()
        if first < 0x80:
            length = first
        else:
            if self.offset + (first & 0x7F) > self.end:
                raise Malformed("length octets past the end")
            if first == 0x81:
                length = self.octet()
            elif first == 0x82:
                high = self.octet()
                if high >= 0x80:
                    raise Malformed("length beyond 0x7FFF")
                length = (high << 8) | self.octet()
            else:  # indefinite, or longer than two octets
                raise Malformed("unsupported length form")
        if self.offset + length > self.end:
            raise Malformed("element longer than its container")
        return tag, length


# ---- reading partialCertificate ---------------------------------------------------------
@dataclass(frozen=True)
class PartialCertificate:
    """The caller's part of the TBSCertificate, each element whole (tag and length)."""

    signature: bytes  # b"": the TPM supplies the AlgorithmIdentifier
    issuer: bytes
    validity: bytes
    subject: bytes
    extensions: bytes


def split_partial(partial: bytes) -> PartialCertificate:
    """The elements of partialCertificate, checked as the reference checks them: it
    must not be empty (TPM_RC_VALUE) and must be one SEQUENCE that fills it exactly
    (TPM_RC_SIZE); inside, three or four SEQUENCEs and exactly one [3] extensions and
    nothing else (TPM_RC_VALUE; the optional unique IDs are refused too, as libtpms
    refuses them). Raises TpmError with the bare code; the command numbers it."""
    if not partial:
        raise TpmError(RC.VALUE, "empty partialCertificate")
    r = _Reader(partial)
    try:
        tag, length = r.next_tag()
    except Malformed:
        raise TpmError(RC.SIZE, "partialCertificate is not DER") from None
    if tag != SEQUENCE or r.offset + length != len(partial):
        raise TpmError(RC.SIZE, "partialCertificate is not one SEQUENCE")
    sequences: list[bytes] = []
    extensions = b""
    try:
        while not r.at_end():
            start = r.offset
            tag, length = r.next_tag()
            r.offset += length
            if tag == SEQUENCE:
                sequences.append(partial[start:r.offset])
                if len(sequences) > 4:
                    break
            elif tag == EXTENSIONS_TAG and not extensions:
                extensions = partial[start:r.offset]
            else:
                raise Malformed(f"unexpected element 0x{tag:02X}")
    except Malformed as e:
        raise TpmError(RC.VALUE, str(e)) from None
    if not r.at_end() or not 3 <= len(sequences) <= 4 or not extensions:
        raise TpmError(RC.VALUE, "partialCertificate lacks or repeats elements")
    signature = sequences[0] if len(sequences) == 4 else b""
    issuer, validity, subject = sequences[-3:]
    return PartialCertificate(signature, issuer, validity, subject, extensions)


def _bit_string(r: _Reader) -> int:
    """A BIT STRING of up to 32 bits, left-justified in a 32-bit value, read the way
    the reference's ASN1GetBitStringValue reads it: octets are shifted in while no
    set bit would fall off the top; the last octet's check is void when it has no
    unused bits (the mask shifts out), so a longer string with leading zero octets
    gets through, and its final shift by a negative count behaves as x86's does (the
    count taken modulo 32), as in the libtpms builds we compare with."""
    tag, length = r.next_tag()
    if length < 1 or tag != BIT_STRING:
        raise Malformed("not a BIT STRING")
    unused = r.octet()
    length -= 1
    bits = 8 * length - unused
    if unused >= 8 or (length == 0 and unused != 0):
        raise Malformed("bad unused-bit count")
    value = 0
    for _ in range(length - 1):
        if value & 0xFF000000:
            raise Malformed("BIT STRING longer than 32 bits")
        value = ((value << 8) + r.octet()) & 0xFFFFFFFF
    if length >= 1:
        if value & ((0xFF000000 << (8 - unused)) & 0xFFFFFFFF):
            raise Malformed("BIT STRING longer than 32 bits")
        value = ((value << (8 - unused)) + (r.octet() >> unused)) & 0xFFFFFFFF
    if bits > 0:
        value = (value << ((32 - bits) & 31)) & 0xFFFFFFFF
    return value


def _find_extension(extensions: _Reader, oid: bytes) -> _Reader | None:
    """The Extension SEQUENCE whose extnID is ``oid`` (a cursor over its contents), or
    None. Every entry must be a SEQUENCE."""
    r = _Reader(extensions.data, extensions.offset, extensions.end)
    while not r.at_end():
        tag, length = r.next_tag()
        if tag != SEQUENCE:
            raise Malformed("an extension that is not a SEQUENCE")
        if length >= len(oid) and r.data[r.offset:r.offset + len(oid)] == oid:
            return _Reader(r.data, r.offset, r.offset + length)
        r.offset += length
    return None


def _extension_bits(extension: _Reader) -> int:
    """The BIT STRING inside an extension's extnValue OCTET STRING (extnID and the
    critical flag before it are skipped)."""
    while True:
        tag, length = extension.next_tag()
        if length <= 0 or extension.at_end():
            raise Malformed("extension without a value")
        if tag == OCTET_STRING:
            return _bit_string(extension)
        extension.offset += length


def check_extensions(public: TPMT_PUBLIC, extensions: bytes) -> None:
    """Part 3, 18.8.1: the extensions must hold a KeyUsage consistent with the object's
    TPMA_OBJECT (``USAGE_NEEDS``) and, if present, a TCG tpmaObject extension equal to
    its attributes. Bare codes: TPM_RC_ATTRIBUTES (the command puts it on
    objectHandle) and _VALUE (on partialCertificate)."""
    attributes = public.objectAttributes
    try:
        r = _Reader(extensions)
        tag, _ = r.next_tag()
        if tag != EXTENSIONS_TAG:
            raise Malformed("not [3] extensions")
        tag, _ = r.next_tag()
        if tag != SEQUENCE:
            raise Malformed("extensions are not a SEQUENCE")
        tpma = _find_extension(r, OID_TCG_TPMA_OBJECT)
        if tpma is not None and _extension_bits(tpma) != attributes:
            raise TpmError(RC.ATTRIBUTES, "tpmaObject extension differs from the object")
        usage_ext = _find_extension(r, OID_KEY_USAGE)
        if usage_ext is None:
            raise TpmError(RC.VALUE, "KeyUsage extension is required")
        usage = _extension_bits(usage_ext)
    except Malformed as e:
        raise TpmError(RC.VALUE, str(e)) from None
    if any(usage & bits and not public.has(needs) for bits, needs in USAGE_NEEDS):
        raise TpmError(RC.VALUE, "KeyUsage contradicts the object's attributes")


# ---- what the TPM adds -----------------------------------------------------------------
def subject_public_key_info(public: TPMT_PUBLIC) -> bytes | None:
    """SubjectPublicKeyInfo of an RSA (RFC 3279, 2.3.1) or ECC (RFC 5480, 2) key; None
    for an object type the TPM cannot describe (TPM_RC_ASYMMETRIC). The EC point is the
    TPM's x and y as stored, uncompressed."""
    p, unique = public.parameters, public.unique
    if isinstance(p, TPMS_RSA_PARMS):
        modulus = unique.buffer if isinstance(unique, UniqueBytes) else b""
        exponent = (p.exponent or 65537).to_bytes(4, "big")
        key = tlv(SEQUENCE, der_integer(modulus) + der_integer(exponent))
        return tlv(SEQUENCE, algorithm_identifier(OID_RSA_ENCRYPTION)
                   + tlv(BIT_STRING, b"\x00" + key))
    if isinstance(p, TPMS_ECC_PARMS) and isinstance(unique, TPMS_ECC_POINT):
        curve = OID_CURVE.get(p.curveID)
        if curve is None:
            return None
        point = b"\x04" + unique.x + unique.y
        return tlv(SEQUENCE, tlv(SEQUENCE, OID_EC_PUBLIC_KEY + curve)
                   + tlv(BIT_STRING, b"\x00" + point))
    return None


def pss_salt_size(hash_size: int, key_bytes: int) -> int:
    """The salt TPM-made PSS signatures use: the digest's size, or what fits (Part 1,
    B.7; the reference's CryptRsaPssSaltSize)."""
    return max(0, min(hash_size, key_bytes - hash_size - 2))


def signature_algorithm(signer: TPMT_PUBLIC, scheme: TPMT_SIG_SCHEME) -> bytes | None:
    """The signature AlgorithmIdentifier for the signing key and selected scheme
    (RFC 4055 for RSASSA and PSS, RFC 5758 for ECDSA); None where there is none (an
    HMAC key: TPM_RC_SCHEME on signHandle). PSS with SHA-1 is all defaults, so its
    parameters are just NULL; otherwise they name the hash, MGF1 with it and the salt."""
    h = scheme.hashAlg
    if h not in HASHES:
        return None
    if signer.type == TPM_ALG.RSA and scheme.scheme == TPM_ALG.RSASSA:
        return algorithm_identifier(OID_PKCS1_SIGNATURE[h])
    if signer.type == TPM_ALG.RSA and scheme.scheme == TPM_ALG.RSAPSS:
        if h == TPM_ALG.SHA1:
            return algorithm_identifier(OID_RSASSA_PSS)
        hash_id = algorithm_identifier(OID_HASH[h])
        modulus = signer.unique.buffer if isinstance(signer.unique, UniqueBytes) else b""
        salt = pss_salt_size(HASHES[h].size, len(modulus))
        params = tlv(SEQUENCE, tlv(0xA0, hash_id)
                     + tlv(0xA1, tlv(SEQUENCE, OID_MGF1 + hash_id))
                     + tlv(0xA2, der_integer(salt.to_bytes(4, "big"))))
        return algorithm_identifier(OID_RSASSA_PSS, null_parameters=False,
                                    parameters=params)
    if signer.type == TPM_ALG.ECC and scheme.scheme == TPM_ALG.ECDSA:
        return algorithm_identifier(OID_ECDSA_SIGNATURE[h], null_parameters=False)
    return None


VERSION_3 = tlv(VERSION_TAG, der_integer(b"\x02"))


def complete(partial: PartialCertificate, subject_key: bytes, signature_alg: bytes,
             name_alg: int, signer_name: bytes, object_name: bytes) -> tuple[bytes, bytes]:
    """(addedToCertificate, TBSCertificate).

    The serialNumber is a digest, with the signing key's nameAlg, of the TBSCertificate
    elements from signature to extensions, then the signer's Name and the certified
    object's Name, cut to 20 octets: deterministic, so the same request to the same
    keys certifies to the same serial (the reference's TPM2_CertifyX509).

    addedToCertificate is a SEQUENCE of what the TPM contributed, in TBSCertificate
    order: version, serialNumber, the signature AlgorithmIdentifier (only if the caller
    did not send one) and the SubjectPublicKeyInfo. From it and partialCertificate the
    caller rebuilds the TBSCertificate the TPM signed."""
    signature = partial.signature or signature_alg
    tail = (signature + partial.issuer + partial.validity + partial.subject + subject_key
            + partial.extensions)
    serial = HASHES[name_alg].digest(tail, signer_name, object_name)[:SERIAL_NUMBER_BYTES]
    head = VERSION_3 + der_integer(serial)
    tbs = tlv(SEQUENCE, head + tail)
    added = tlv(SEQUENCE, head + (b"" if partial.signature else signature_alg) + subject_key)
    return added, tbs
