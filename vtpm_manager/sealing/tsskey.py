"""The ``TSS2 PRIVATE KEY`` PEM file (the TPM 2.0 key file format of tpm2-tss-engine,
tpm2-openssl, openssl_tpm2_engine and tpm2-pytss' ``tsskey``)::

    TPMKey ::= SEQUENCE {
        type        OBJECT IDENTIFIER,        -- 2.23.133.10.1.{3 loadable,4 importable,5 sealed}
        emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
        ...         [1]..[5] (policy, secret, authPolicy, description, rsaParent) OPTIONAL,
        parent      INTEGER,                  -- a persistent handle, or TPM_RH_OWNER
        pubkey      OCTET STRING,             -- TPM2B_PUBLIC
        privkey     OCTET STRING }            -- TPM2B_PRIVATE

We write the mandatory fields plus emptyAuth (TRUE when the object has no auth value,
FALSE otherwise: tpm2-pytss requires the field), and read any optional tagged field by
skipping it.

Type OID. A sealed data object is written as a *loadable* key (…10.1.3), as
``tpm2_encodeobject`` writes every object: that is the type tpm2-pytss' ``TSSPrivKey``,
``tpm2_load -r`` and tpm2-tss-engine accept (they refuse 10.1.5, which only the kernel's
trusted keys read). Both are read here. A tiny DER writer/reader is
enough: definite lengths, the five universal types above, context tags.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Final

from .errors import SealedFormatError

OID_LOADABLE_KEY: Final = "2.23.133.10.1.3"
OID_IMPORTABLE_KEY: Final = "2.23.133.10.1.4"
OID_SEALED_DATA: Final = "2.23.133.10.1.5"
PEM_LABEL: Final = "TSS2 PRIVATE KEY"

_BOOLEAN, _INTEGER, _OCTET_STRING, _OID, _SEQUENCE = 0x01, 0x02, 0x04, 0x06, 0x30
_CONTEXT_0: Final = 0xA0


@dataclass(frozen=True)
class TpmKey:
    """One TPMKey structure; ``public``/``private`` are the marshalled TPM2B structures."""

    type_oid: str
    empty_auth: bool
    parent: int
    public: bytes
    private: bytes

    def to_der(self) -> bytes:
        fields = _tlv(_OID, _encode_oid(self.type_oid))
        fields += _tlv(_CONTEXT_0, _tlv(_BOOLEAN, b"\xff" if self.empty_auth else b"\x00"))
        fields += _tlv(_INTEGER, _encode_uint(self.parent))
        fields += _tlv(_OCTET_STRING, self.public) + _tlv(_OCTET_STRING, self.private)
        return _tlv(_SEQUENCE, fields)

    def to_pem(self) -> bytes:
        body = base64.b64encode(self.to_der())
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        return (f"-----BEGIN {PEM_LABEL}-----\n".encode() + b"\n".join(lines)
                + f"\n-----END {PEM_LABEL}-----\n".encode())

    @classmethod
    def from_der(cls, der: bytes) -> TpmKey:
        tag, body, rest = _read(der)
        if tag != _SEQUENCE or rest:
            raise SealedFormatError("TPMKey: not one DER SEQUENCE")
        tag, oid, body = _read(body)
        if tag != _OID:
            raise SealedFormatError("TPMKey: type is not an OBJECT IDENTIFIER")
        empty_auth = False
        tag, value, after = _read(body)
        while tag & 0xE0 == 0xA0:              # [n] EXPLICIT optional fields
            if tag == _CONTEXT_0:
                inner_tag, inner, _ = _read(value)
                # tpm2-tss-engine once wrote TRUE as 0x01: accept any non-zero octet.
                if inner_tag != _BOOLEAN or len(inner) != 1:
                    raise SealedFormatError("TPMKey: emptyAuth is not a BOOLEAN")
                empty_auth = inner != b"\x00"
            body = after
            tag, value, after = _read(body)
        if tag != _INTEGER or not value or value[0] & 0x80:
            raise SealedFormatError("TPMKey: parent is not a non-negative INTEGER")
        parent = int.from_bytes(value, "big")
        tag, public, after = _read(after)
        tag2, private, after = _read(after)
        if tag != _OCTET_STRING or tag2 != _OCTET_STRING or after:
            raise SealedFormatError("TPMKey: pubkey/privkey are not two OCTET STRINGs")
        return cls(_decode_oid(oid), empty_auth, parent, public, private)

    @classmethod
    def from_pem(cls, pem: bytes | str) -> TpmKey:
        text = pem.decode() if isinstance(pem, bytes) else pem
        match = re.search(rf"-----BEGIN {PEM_LABEL}-----(.*?)-----END {PEM_LABEL}-----",
                          text, re.S)
        if match is None:
            raise SealedFormatError(f"no {PEM_LABEL} PEM block")
        try:
            der = base64.b64decode("".join(match[1].split()), validate=True)
        except ValueError as exc:
            raise SealedFormatError(f"bad base64 in {PEM_LABEL}: {exc}") from None
        return cls.from_der(der)


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def _encode_uint(n: int) -> bytes:
    # DER INTEGER is two's complement: a set top bit needs a leading zero octet.
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def _encode_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.append(0x80 | arc & 0x7F)
        out += bytes(reversed(chunk))
    return bytes(out)


def _decode_oid(raw: bytes) -> str:
    if not raw:
        raise SealedFormatError("empty OBJECT IDENTIFIER")
    arcs = [raw[0] // 40, raw[0] % 40]
    value = 0
    for byte in raw[1:]:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return ".".join(map(str, arcs))


def _read(data: bytes) -> tuple[int, bytes, bytes]:
    """(tag, value, rest) of the first TLV; definite lengths only (DER)."""
    if len(data) < 2:
        raise SealedFormatError("truncated DER")
    tag, first = data[0], data[1]
    offset = 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            raise SealedFormatError("bad DER length")
        length = int.from_bytes(data[2:2 + count], "big")
        offset += count
    if len(data) < offset + length:
        raise SealedFormatError("truncated DER")
    return tag, data[offset:offset + length], data[offset + length:]
