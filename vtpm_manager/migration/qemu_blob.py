"""The state blob that carries a vTPM inside QEMU's own migration stream.

QEMU moves a TPM by reading its state blobs from the source's control socket
(CMD_GET_STATEBLOB) and writing them to the destination's (CMD_SET_STATEBLOB); swtpm
protects them with a ``--migration-key`` both hosts share. So does this blob: the key
(``qemu_migration_key``, 32 bytes or more, the same on every host of a migration
domain) is the confidentiality layer, and the source host's signature — its host
certificate rides along and must chain to the destination's hosts CA — says which
DomS0 released the vTPM, so a key that leaked lets nobody forge one.

Frame::

    b"VTPMQEM\\0" | u16 version | u32 len + header (canonical JSON)
    | u32 len + source certificate (PEM) | 12-byte nonce | u32 len + ciphertext
    | u16 len + signature

``key = HKDF-SHA256(migration key, salt = migration id, info = LABEL ‖ SHA-256(header))``;
AES-256-GCM with everything before the ciphertext as associated data; the signature
(ECDSA, SHA-384) covers everything before it. The header is in clear — it is what the
destination checks before opening (which vTPM, which migration, from whom) — and holds
no secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import MigrationRefused, PackageRefused
from .hostcert import cert_pem, host_name_of, load_cert_pem, verify_host_certificate
from .package import Payload

MAGIC: Final = b"VTPMQEM\x00"
VERSION: Final = 1
FORMAT: Final = "vtpm-stack qemu migration blob"
LABEL: Final = b"vtpm-stack qemu migration blob key v1\x00"
MIN_KEY_BYTES: Final = 32
MAX_HEADER: Final = 16 * 1024
MAX_CERT: Final = 16 * 1024
MAX_BODY: Final = 64 * 1024 * 1024
_NONCE: Final = 12


@dataclass(frozen=True)
class QemuHeader:
    migration_id: str          # hex, 16 bytes
    vtpm_uuid: str
    vtpm_name: str
    engine: str
    generation: int
    source_host: str
    source_address: str        # the source's migration listener, for Claim and Status
    created: float

    def encode(self) -> bytes:
        doc = {"format": FORMAT, "version": VERSION, **asdict(self)}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> QemuHeader:
        try:
            doc = json.loads(data)
            if doc.pop("format") != FORMAT or doc.pop("version") != VERSION:
                raise ValueError("another format or version")
            header = cls(**doc)
            bytes.fromhex(header.migration_id)
            if type(header.generation) is not int or header.generation < 1:
                raise ValueError("bad generation")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PackageRefused(f"not a vtpm-stack QEMU migration blob header ({exc})"
                                 ) from None
        if header.encode() != data:
            raise PackageRefused("QEMU migration blob header is not in canonical form")
        return header


def is_qemu_blob(data: bytes) -> bool:
    return data.startswith(MAGIC)


def _key(secret: bytes, header: QemuHeader, header_bytes: bytes) -> bytes:
    if len(secret) < MIN_KEY_BYTES:
        raise ValueError(f"the QEMU migration key must be at least {MIN_KEY_BYTES} bytes")
    return HKDF(hashes.SHA256(), 32, bytes.fromhex(header.migration_id),
                LABEL + hashlib.sha256(header_bytes).digest()).derive(secret)


def seal_qemu_blob(header: QemuHeader, payload: Payload, secret: bytes,
                   signing_key: ec.EllipticCurvePrivateKey,
                   certificate: x509.Certificate) -> bytes:
    header_bytes = header.encode()
    nonce = os.urandom(_NONCE)
    cert = cert_pem(certificate)
    head = (MAGIC + struct.pack(">HI", VERSION, len(header_bytes)) + header_bytes
            + struct.pack(">I", len(cert)) + cert + nonce)
    body = AESGCM(_key(secret, header, header_bytes)).encrypt(nonce, payload.encode(), head)
    signed = head + struct.pack(">I", len(body)) + body
    signature = signing_key.sign(signed, ec.ECDSA(hashes.SHA384()))
    return signed + struct.pack(">H", len(signature)) + signature


def open_qemu_blob(data: bytes, secret: bytes, ca_certs: Sequence[x509.Certificate]
                   ) -> tuple[QemuHeader, Payload]:
    """Check and open a blob: the source certificate chains to a trusted hosts CA and
    names the header's source host, its key signed the blob, the migration key opens
    it. Every refusal is :class:`PackageRefused`."""
    reader = _Reader(data)
    if reader.take(len(MAGIC)) != MAGIC:
        raise PackageRefused("not a vtpm-stack QEMU migration blob (bad magic)")
    (version,) = reader.unpack(">H")
    if version != VERSION:
        raise PackageRefused(f"QEMU migration blob version {version}; we read {VERSION}")
    header_bytes = reader.sized(">I", MAX_HEADER)
    cert_bytes = reader.sized(">I", MAX_CERT)
    nonce = reader.take(_NONCE)
    head_end = reader.offset
    body = reader.sized(">I", MAX_BODY)
    signed_end = reader.offset
    signature = reader.sized(">H", 256)
    reader.end()
    header = QemuHeader.decode(header_bytes)
    try:
        certificate = load_cert_pem(cert_bytes)
        verify_host_certificate(certificate, ca_certs, role="source")
        public = certificate.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise PackageRefused("the source certificate's key is not ECDSA")
        public.verify(signature, data[:signed_end], ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise PackageRefused("signature does not verify with the source's certificate"
                             ) from None
    except MigrationRefused as exc:
        raise PackageRefused(str(exc)) from None
    except ValueError as exc:
        raise PackageRefused(f"bad source certificate ({exc})") from None
    if host_name_of(certificate) != header.source_host:
        raise PackageRefused("the blob names another source host than its certificate")
    try:
        plain = AESGCM(_key(secret, header, header_bytes)).decrypt(
            nonce, body, data[:head_end])
    except InvalidTag:
        raise PackageRefused("the QEMU migration key does not open it (another key, or "
                             "tampered)") from None
    return header, Payload.decode(plain)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise PackageRefused("QEMU migration blob truncated")
        out = self.data[self.offset:self.offset + n]
        self.offset += n
        return out

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def sized(self, fmt: str, maximum: int) -> bytes:
        (n,) = self.unpack(fmt)
        if n > maximum:
            raise PackageRefused("QEMU migration blob field too large")
        return self.take(n)

    def end(self) -> None:
        if self.offset != len(self.data):
            raise PackageRefused("trailing bytes after the QEMU migration blob")
