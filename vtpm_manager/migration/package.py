"""The migration package: one vTPM's whole state, sealed from source host to destination.

Sans-IO: bytes in, bytes out. The protocol, the journal and the daemon around it are
elsewhere; this module only makes and opens the package, and refuses anything it
cannot fully vouch for with :class:`~.errors.PackageRefused`.

Why this construction (ECIES-style, then signed):

* **Confidential to one destination session.** The destination generated an ephemeral
  ECDH P-384 key for this migration and proved it with its host TPM (:mod:`.proof`).
  The source makes a fresh ephemeral P-384 key per package, so the AES key exists only
  for this package and nobody, the source included, can recompute it later.
* **Key bound to the context.** ``HKDF-SHA384(ECDH shared secret, salt=migration_id,
  info=LABEL || SHA-384(header) || source ephemeral point)``: the key changes with any
  header field, so a header moved onto another package's ciphertext cannot decrypt.
* **Authenticated twice, for two reasons.** AES-256-GCM's tag (AAD = every frame byte
  before the ciphertext) proves the bytes were not changed after encryption; but
  anybody holding the destination's *public* key can encrypt to it, so the tag says
  nothing about *who* made the package. The ECDSA-SHA384 signature by the source
  host's identity key (the key of its mTLS certificate) over every byte before the
  signature says who; it is checked before anything else is believed.
* **Bound to one session and one destination.** The header carries the destination's
  session nonce, host name and migration key id; the destination refuses a package
  carrying another's. The per-vTPM ``generation`` counter travels in the header so the
  destination can refuse a replayed older package (that check is the protocol's).

Frame (big-endian; every length is checked against the bytes that remain)::

    magic b"VTPMMIG\\0" | u16 version
    | u32 len + header            canonical JSON (:class:`PackageHeader`)
    | u16 len + ephemeral public  X9.62 uncompressed P-384 point (97 bytes)
    | 12-byte GCM nonce
    | u32 len + ciphertext        AES-256-GCM(:class:`Payload` bytes) incl. 16-byte tag
    | u16 len + signature         DER ECDSA-SHA384 over everything before it
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import struct
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import PackageRefused

MAGIC: Final = b"VTPMMIG\x00"
VERSION: Final = 1
HEADER_FORMAT: Final = "vtpm-stack migration package"
HEADER_VERSION: Final = 1
PAYLOAD_MAGIC: Final = b"VTPMPLD\x00"
PAYLOAD_VERSION: Final = 1
#: HKDF info label; its version changes whenever the key derivation does.
KEY_LABEL: Final = b"vtpm-stack migration package key v1\x00"

MIGRATION_ID_SIZE: Final = 16
KEY_ID_SIZE: Final = 32
NONCE_SIZES: Final = range(16, 65)           # a session challenge: 16..64 bytes
GCM_NONCE_SIZE: Final = 12
GCM_TAG_SIZE: Final = 16
P384_POINT_SIZE: Final = 97                  # 0x04 || X(48) || Y(48)
#: Upper bounds a reader enforces before allocating or hashing anything. A vTPM's
#: state is tens of KiB; event logs and certificates add little. 64 MiB leaves room.
MAX_HEADER: Final = 16 * 1024
MAX_PAYLOAD: Final = 64 * 1024 * 1024
MAX_SIGNATURE: Final = 160                   # DER ECDSA P-384 is at most 104 bytes
MAX_TEXT: Final = 256                        # host names, vTPM name, engine
MAX_FILES: Final = 1024
#: Artifact names: a plain file name, so a receiver can store them without a path
#: ever escaping its directory (no "/", no "..", no leading dot).
FILE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_SIGNATURE_CURVES: Final = ("secp256r1", "secp384r1")


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SHA-256 of the key's DER SubjectPublicKeyInfo: names the destination's
    migration key in the header without carrying (or trusting) the key itself."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


# -- the header ----------------------------------------------------------------------

@dataclass(frozen=True)
class PackageHeader:
    """What the package is, for whom, and from where; signed, and bound into the key.

    The header travels in clear (the destination needs it to decide whether to open
    the package at all) so it holds no secret: the vTPM's identity, not its state.
    Construction validates every field (``ValueError``), so a header that exists is
    one that encodes."""

    migration_id: bytes
    vtpm_uuid: str
    vtpm_name: str
    engine: str
    generation: int
    source_host: str
    destination_host: str
    destination_nonce: bytes
    destination_key_id: bytes
    created: float

    def __post_init__(self) -> None:
        _check_bytes("migration_id", self.migration_id, (MIGRATION_ID_SIZE,))
        _check_bytes("destination_nonce", self.destination_nonce, NONCE_SIZES)
        _check_bytes("destination_key_id", self.destination_key_id, (KEY_ID_SIZE,))
        if not isinstance(self.vtpm_uuid, str) or not _is_canonical_uuid(self.vtpm_uuid):
            raise ValueError(f"vtpm_uuid {self.vtpm_uuid!r} is not a UUID in canonical "
                             "lower-case form")
        for name in ("vtpm_name", "engine", "source_host", "destination_host"):
            value = getattr(self, name)
            if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT \
                    or not value.isprintable():
                raise ValueError(f"{name} must be 1-{MAX_TEXT} printable characters")
        if type(self.generation) is not int or not 0 <= self.generation < 2**63:
            raise ValueError("generation must be an integer in 0..2^63-1")
        created = self.created
        if type(created) not in (int, float) or not math.isfinite(created):
            raise ValueError("created must be a finite number of seconds since the epoch")
        # Always a float, so an int and the float it equals encode alike.
        object.__setattr__(self, "created", float(created))

    def encode(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, ASCII only, bytes as lower-case hex;
        the same header always gives the same bytes (they are hashed into the key)."""
        doc = {
            "format": HEADER_FORMAT, "version": HEADER_VERSION,
            "migration_id": self.migration_id.hex(), "vtpm_uuid": self.vtpm_uuid,
            "vtpm_name": self.vtpm_name, "engine": self.engine,
            "generation": self.generation, "source_host": self.source_host,
            "destination_host": self.destination_host,
            "destination_nonce": self.destination_nonce.hex(),
            "destination_key_id": self.destination_key_id.hex(), "created": self.created,
        }
        return _canonical_json(doc)

    @classmethod
    def decode(cls, data: bytes) -> PackageHeader:
        """The header in ``data``; :class:`PackageRefused` unless it is exactly the
        canonical encoding of a valid header of a version we read."""
        doc = _strict_json(data, "package header")
        if not isinstance(doc, dict):
            raise PackageRefused("malformed package header: not a JSON object")
        if doc.get("format") != HEADER_FORMAT:
            raise PackageRefused("malformed package header: not a vtpm-stack migration "
                                 "package header")
        if doc.get("version") != HEADER_VERSION:
            raise PackageRefused(f"package header version {doc.get('version')!r}; this "
                                 f"host reads version {HEADER_VERSION}")
        expected = {"format", "version", *(f.name for f in fields(cls))}
        if set(doc) != expected:
            raise PackageRefused("malformed package header: fields "
                                 f"{sorted(set(doc) ^ expected)} missing or unexpected")
        try:
            header = cls(
                migration_id=_unhex(doc["migration_id"]), vtpm_uuid=doc["vtpm_uuid"],
                vtpm_name=doc["vtpm_name"], engine=doc["engine"],
                generation=doc["generation"], source_host=doc["source_host"],
                destination_host=doc["destination_host"],
                destination_nonce=_unhex(doc["destination_nonce"]),
                destination_key_id=_unhex(doc["destination_key_id"]),
                created=doc["created"])
        except ValueError as exc:
            raise PackageRefused(f"malformed package header: {exc}") from exc
        if header.encode() != data:
            raise PackageRefused("malformed package header: not in canonical form")
        return header


# -- the payload ---------------------------------------------------------------------

@dataclass(frozen=True)
class Payload:
    """The secret part: the engine's state blob, the vTPM record's metadata, and named
    artifacts (event logs, certificates, attestation records).

    Encoding (binary, so a state blob is not doubled by hex)::

        b"VTPMPLD\\0" | u16 version | u32 len + state | u32 len + record (canonical JSON)
        | u32 n | n x (u16 len + name (ASCII) | u32 len + data)   names ascending
    """

    state: bytes
    record: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.state, bytes):
            raise ValueError("state must be bytes")
        if not isinstance(self.record, dict):
            raise ValueError("record must be a dict (a JSON object)")
        _canonical_json(self.record)  # raises ValueError if it is not JSON-able
        if not isinstance(self.files, dict) or len(self.files) > MAX_FILES:
            raise ValueError(f"files must be a dict of at most {MAX_FILES} entries")
        for name, data in self.files.items():
            if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
                raise ValueError(f"artifact name {name!r} is not a plain file name "
                                 "(letters, digits, '.', '_', '-'; no leading dot)")
            if not isinstance(data, bytes):
                raise ValueError(f"artifact {name!r} must be bytes")

    def encode(self) -> bytes:
        record = _canonical_json(self.record)
        out = [PAYLOAD_MAGIC, struct.pack(">HI", PAYLOAD_VERSION, len(self.state)),
               self.state, struct.pack(">I", len(record)), record,
               struct.pack(">I", len(self.files))]
        for name in sorted(self.files):
            data = self.files[name]
            out += [struct.pack(">H", len(name)), name.encode("ascii"),
                    struct.pack(">I", len(data)), data]
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Payload:
        """The payload in ``data``; :class:`PackageRefused` unless it is exactly the
        encoding of a valid payload of a version we read."""
        reader = _Reader(data, "payload")
        if reader.take(len(PAYLOAD_MAGIC)) != PAYLOAD_MAGIC:
            raise PackageRefused("malformed payload: bad magic")
        (version,) = reader.unpack(">H")
        if version != PAYLOAD_VERSION:
            raise PackageRefused(f"payload version {version}; this host reads version "
                                 f"{PAYLOAD_VERSION}")
        state = reader.sized(">I", MAX_PAYLOAD)
        record_bytes = reader.sized(">I", MAX_PAYLOAD)
        record = _strict_json(record_bytes, "payload record")
        if not isinstance(record, dict):
            raise PackageRefused("malformed payload: the record is not a JSON object")
        if _canonical_json(record) != record_bytes:
            raise PackageRefused("malformed payload: the record is not in canonical form")
        (count,) = reader.unpack(">I")
        if count > MAX_FILES:
            raise PackageRefused(f"malformed payload: {count} artifacts (at most "
                                 f"{MAX_FILES})")
        files: dict[str, bytes] = {}
        previous = ""
        for _ in range(count):
            raw_name = reader.sized(">H", 128)
            name = raw_name.decode("ascii", errors="replace")
            if not FILE_NAME.fullmatch(name):
                raise PackageRefused(f"malformed payload: artifact name {name!r} is not a "
                                     "plain file name")
            if files and name <= previous:
                raise PackageRefused("malformed payload: artifact names out of order or "
                                     "repeated")
            files[name] = reader.sized(">I", MAX_PAYLOAD)
            previous = name
        reader.end()
        return cls(state=state, record=record, files=files)


# -- sealing and opening -------------------------------------------------------------

def seal_package(header: PackageHeader, payload: Payload,
                 destination_key: ec.EllipticCurvePublicKey,
                 signing_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Encrypt ``payload`` to the destination's migration key and sign the whole frame
    with the source host's identity key (P-256 or P-384; ECDSA with SHA-384 either way).

    ``ValueError`` if the destination key is not P-384, the header names another key,
    or the signing key is not P-256/P-384: those are this host's mistakes, not the
    peer's, and nothing is produced."""
    if not isinstance(destination_key, ec.EllipticCurvePublicKey) \
            or destination_key.curve.name != "secp384r1":
        raise ValueError("the destination's migration key must be an ECDH P-384 key")
    if not hmac.compare_digest(header.destination_key_id, key_id(destination_key)):
        raise ValueError("header.destination_key_id is not the id of this destination key")
    if not isinstance(signing_key, ec.EllipticCurvePrivateKey) \
            or signing_key.curve.name not in _SIGNATURE_CURVES:
        raise ValueError("the signing key must be an ECDSA P-256 or P-384 private key")
    plaintext = payload.encode()
    if len(plaintext) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(plaintext)} bytes exceeds {MAX_PAYLOAD}")
    header_bytes = header.encode()
    if len(header_bytes) > MAX_HEADER:
        raise ValueError(f"header of {len(header_bytes)} bytes exceeds {MAX_HEADER}")

    ephemeral = ec.generate_private_key(ec.SECP384R1())
    point = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)
    key = _package_key(ephemeral.exchange(ec.ECDH(), destination_key), header, header_bytes,
                       point)
    nonce = os.urandom(GCM_NONCE_SIZE)
    aad = (MAGIC + struct.pack(">HI", VERSION, len(header_bytes)) + header_bytes
           + struct.pack(">H", len(point)) + point + nonce)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, aad)
    signed = aad + struct.pack(">I", len(ciphertext)) + ciphertext
    signature = signing_key.sign(signed, ec.ECDSA(hashes.SHA384()))
    return signed + struct.pack(">H", len(signature)) + signature


def open_package(data: bytes, destination_private: ec.EllipticCurvePrivateKey,
                 source_public_key: CertificatePublicKeyTypes, *, expected_nonce: bytes,
                 expected_destination_host: str,
                 expected_source_host: str | None = None) -> tuple[PackageHeader, Payload]:
    """Check and decrypt a package; every refusal is :class:`PackageRefused`.

    Order matters: the frame is parsed strictly, then the signature is verified with
    the key of the source's mTLS certificate *before* any field is believed; then the
    header must name this session (nonce, compared in constant time), this host and
    this migration key; only then is anything decrypted. ``expected_source_host``
    (e.g. the host name in the source's certificate) is checked when given."""
    if not isinstance(destination_private, ec.EllipticCurvePrivateKey) \
            or destination_private.curve.name != "secp384r1":
        raise ValueError("the destination's migration key must be an ECDH P-384 key")
    frame = _parse_frame(data)

    if not isinstance(source_public_key, ec.EllipticCurvePublicKey) \
            or source_public_key.curve.name not in _SIGNATURE_CURVES:
        raise PackageRefused("the source's certificate key is not an ECDSA P-256 or "
                             "P-384 key; cannot check the package signature")
    try:
        source_public_key.verify(frame.signature, data[: frame.signed_end],
                                 ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise PackageRefused("signature does not verify with the source's certificate") \
            from None

    header = PackageHeader.decode(frame.header)
    if not hmac.compare_digest(header.destination_nonce, expected_nonce):
        raise PackageRefused("made for another migration session (nonce)")
    if header.destination_host != expected_destination_host:
        raise PackageRefused(f"made for another destination ({header.destination_host!r}, "
                             f"this host is {expected_destination_host!r})")
    if expected_source_host is not None and header.source_host != expected_source_host:
        raise PackageRefused(f"the header names source host {header.source_host!r}, but "
                             f"the package comes from {expected_source_host!r}")
    if not hmac.compare_digest(header.destination_key_id,
                               key_id(destination_private.public_key())):
        raise PackageRefused("encrypted to another migration key than this session's")

    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(),
                                                                 frame.ephemeral)
    except ValueError:
        raise PackageRefused("the source's ephemeral key is not a P-384 point") from None
    key = _package_key(destination_private.exchange(ec.ECDH(), ephemeral), header,
                       frame.header, frame.ephemeral)
    try:
        plaintext = AESGCM(key).decrypt(frame.nonce, frame.ciphertext,
                                        data[: frame.aad_end])
    except InvalidTag:
        raise PackageRefused("tampered: decryption failed") from None
    return header, Payload.decode(plaintext)


def _package_key(shared: bytes, header: PackageHeader, header_bytes: bytes,
                 point: bytes) -> bytes:
    info = KEY_LABEL + hashlib.sha384(header_bytes).digest() + point
    return HKDF(algorithm=hashes.SHA384(), length=32, salt=header.migration_id,
                info=info).derive(shared)


@dataclass(frozen=True)
class _Frame:
    header: bytes
    ephemeral: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    aad_end: int        # AAD = data[:aad_end]: magic .. GCM nonce
    signed_end: int     # signed = data[:signed_end]: magic .. ciphertext


def _parse_frame(data: bytes) -> _Frame:
    reader = _Reader(data, "migration package")
    if reader.take(len(MAGIC)) != MAGIC:
        raise PackageRefused("not a vtpm-stack migration package (bad magic)")
    (version,) = reader.unpack(">H")
    if version != VERSION:
        raise PackageRefused(f"migration package version {version}; this host reads "
                             f"version {VERSION}")
    header = reader.sized(">I", MAX_HEADER)
    ephemeral = reader.sized(">H", P384_POINT_SIZE)
    if len(ephemeral) != P384_POINT_SIZE or ephemeral[0] != 0x04:
        raise PackageRefused("malformed migration package: the ephemeral key is not an "
                             "uncompressed P-384 point")
    nonce = reader.take(GCM_NONCE_SIZE)
    aad_end = reader.offset
    ciphertext = reader.sized(">I", MAX_PAYLOAD + GCM_TAG_SIZE)
    if len(ciphertext) < GCM_TAG_SIZE:
        raise PackageRefused("malformed migration package: ciphertext shorter than its tag")
    signed_end = reader.offset
    signature = reader.sized(">H", MAX_SIGNATURE)
    if not signature:
        raise PackageRefused("malformed migration package: no signature")
    reader.end()
    return _Frame(header, ephemeral, nonce, ciphertext, signature, aad_end, signed_end)


# -- helpers -------------------------------------------------------------------------

class _Reader:
    """Bounds-checked reading: every length is checked against what remains (and a
    maximum) before anything is sliced, and :meth:`end` refuses trailing bytes."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.what, self.offset = data, what, 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.offset:
            raise PackageRefused(f"{self.what} truncated")
        value = self.data[self.offset : self.offset + n]
        self.offset += n
        return value

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def sized(self, fmt: str, maximum: int) -> bytes:
        (n,) = self.unpack(fmt)
        if n > maximum:
            raise PackageRefused(f"malformed {self.what}: a field of {n} bytes exceeds "
                                 f"the limit of {maximum}")
        return self.take(n)

    def end(self) -> None:
        if self.offset != len(self.data):
            raise PackageRefused(f"{len(self.data) - self.offset} trailing bytes after the "
                                 f"{self.what}")


def _canonical_json(doc: Any) -> bytes:
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON-able: {exc}") from exc


def _strict_json(data: bytes, what: str) -> Any:
    """JSON with duplicate keys and NaN/Infinity refused (both have no canonical form)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            raise ValueError("duplicate key")
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    try:
        return json.loads(data.decode("ascii"), object_pairs_hook=pairs,
                          parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PackageRefused(f"malformed {what}: {exc}") from None


def _unhex(value: Any) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-f]{2})*", value):
        raise ValueError("a bytes field is not lower-case hex")
    return bytes.fromhex(value)


def _check_bytes(name: str, value: Any, sizes: range | tuple[int, ...]) -> None:
    if not isinstance(value, bytes) or len(value) not in sizes:
        allowed = f"{sizes[0]}-{sizes[-1]}" if isinstance(sizes, range) else str(sizes[0])
        raise ValueError(f"{name} must be {allowed} bytes")


def _is_canonical_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
