"""TPM2_MakeCredential in software: what a remote CA does to challenge an EK.

A CA that holds only public data (the EK's TPM2B_PUBLIC, the AK's name) wraps a
secret so that only the TPM holding that EK can release it, and only for an object
with that name loaded next to it (TPM 2.0 Part 1, 24 "Credential Protection"):

1. a random *seed* is protected to the EK (Part 1, 11.4.3 and annex B/C):
   RSA — OAEP with the EK's nameAlg and label ``"IDENTITY\\0"``;
   ECC — one-pass ECDH with an ephemeral key, seed = KDFe(Z, ``"IDENTITY\\0"``,
   x(ephemeral), x(EK)), the ephemeral point is the encrypted secret;
2. symKey = KDFa(seed, ``"STORAGE"``, name(AK), "", EK symmetric keyBits), and the
   credential (a TPM2B_DIGEST) is encrypted with the EK's symmetric algorithm in
   CFB mode with a zero IV (Part 1, 24.4: a fresh key per seed makes that safe);
3. hmacKey = KDFa(seed, ``"INTEGRITY"``, "", "", digest bits), outerHMAC =
   HMAC(hmacKey, encIdentity || name(AK)) (Part 1, 24.5): binding the AK's name is
   what makes ActivateCredential refuse to release the secret for any other key.

TPM2B_ID_OBJECT.credential = TPM2B_DIGEST(outerHMAC) || encIdentity, and
TPM2B_ENCRYPTED_SECRET = the protected seed. tpm2-tools stores both in one file
(``tpm2_makecredential -o``): BE32 magic 0xBADCC0DE, BE32 version 1, the two TPM2B.

Everything is built from ``cryptography`` primitives and the emulator's KDFa (one
fenced home for the TPM's constructions); tpm2-pytss only parses the public area.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from tpm2_pytss.constants import TPM2_ALG
from tpm2_pytss.types import TPM2B_PUBLIC, TPMT_PUBLIC

from tpm_emulator.crypto import HASHES, HashAlg, kdfa

from ..manufacture import public_key_of
from .errors import CredentialFormatError

try:  # cryptography >= 43 keeps CFB in "decrepit"; the TPM still mandates it
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

#: tpm2-tools' credential file (tools/tpm2_makecredential.c, lib/files.c).
CREDENTIAL_FILE_MAGIC: Final = 0xBADCC0DE
CREDENTIAL_FILE_VERSION: Final = 1
_FILE_HEADER: Final = struct.Struct(">II")

#: Part 1, 24.4: the seed of a credential is protected with this label (NUL included).
IDENTITY_LABEL: Final = b"IDENTITY\x00"

_CRYPTOGRAPHY_HASHES: Final[dict[int, type[hashes.HashAlgorithm]]] = {
    int(TPM2_ALG.SHA1): hashes.SHA1,
    int(TPM2_ALG.SHA256): hashes.SHA256,
    int(TPM2_ALG.SHA384): hashes.SHA384,
}


@dataclass(frozen=True)
class Credential:
    """The two outputs of MakeCredential, as the TPM2B contents (no size prefix)."""

    id_object: bytes         # TPM2B_ID_OBJECT.credential: TPM2B_DIGEST(hmac) || encIdentity
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET.secret: the protected seed

    def to_tpm2_tools(self) -> bytes:
        """The file ``tpm2_makecredential -o`` writes and ``tpm2_activatecredential -i`` reads."""
        return (_FILE_HEADER.pack(CREDENTIAL_FILE_MAGIC, CREDENTIAL_FILE_VERSION)
                + _tpm2b(self.id_object) + _tpm2b(self.encrypted_secret))

    @classmethod
    def from_tpm2_tools(cls, data: bytes) -> Credential:
        """Parse a tpm2-tools credential file; malformed input raises
        :class:`CredentialFormatError` naming what is wrong, never a half-read blob."""
        if len(data) < _FILE_HEADER.size:
            raise CredentialFormatError("credential file truncated before its header")
        magic, version = _FILE_HEADER.unpack_from(data)
        if magic != CREDENTIAL_FILE_MAGIC:
            raise CredentialFormatError(f"not a tpm2-tools credential file (magic "
                                        f"0x{magic:08x}, want 0x{CREDENTIAL_FILE_MAGIC:08X})")
        if version != CREDENTIAL_FILE_VERSION:
            raise CredentialFormatError(f"credential file version {version}; we read "
                                        f"version {CREDENTIAL_FILE_VERSION}")
        id_object, offset = _read_tpm2b(data, _FILE_HEADER.size, "TPM2B_ID_OBJECT")
        secret, offset = _read_tpm2b(data, offset, "TPM2B_ENCRYPTED_SECRET")
        if offset != len(data):
            raise CredentialFormatError(f"{len(data) - offset} trailing bytes after the "
                                        "credential")
        return cls(id_object, secret)


# -- names and public areas ----------------------------------------------------------

def object_name(public: bytes) -> bytes:
    """name = nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1, 16), from a marshalled
    TPM2B_PUBLIC: computed by the verifier itself, never taken from the TPM."""
    area, _ = _read_tpm2b(public, 0, "TPM2B_PUBLIC")
    if len(area) < 4:
        raise CredentialFormatError("TPM2B_PUBLIC too short for a public area")
    (name_alg,) = struct.unpack_from(">H", area, 2)
    return struct.pack(">H", name_alg) + _hash_alg(name_alg).digest(area)


def parse_public(public: bytes) -> TPMT_PUBLIC:
    """The TPMT_PUBLIC in a marshalled TPM2B_PUBLIC (whole buffer, nothing trailing)."""
    try:
        parsed, used = TPM2B_PUBLIC.unmarshal(public)
    except Exception as exc:  # tpm2-tss raises its own errors for short buffers
        raise CredentialFormatError(f"not a TPM2B_PUBLIC: {exc}") from exc
    if used != len(public):
        raise CredentialFormatError(f"{len(public) - used} trailing bytes after TPM2B_PUBLIC")
    return parsed.publicArea


# -- MakeCredential ------------------------------------------------------------------

def make_credential(ek_public: bytes, secret: bytes, name: bytes) -> Credential:
    """Wrap ``secret`` for the TPM holding ``ek_public`` (marshalled TPM2B_PUBLIC),
    releasable only next to the object called ``name`` (Part 3, 12.6)."""
    ek = parse_public(ek_public)
    seed, encrypted_seed = protect_seed(ek, IDENTITY_LABEL)
    return Credential(wrap_credential(ek, seed, secret, name), encrypted_seed)


def protect_seed(ek: TPMT_PUBLIC, label: bytes) -> tuple[bytes, bytes]:
    """A fresh seed (nameAlg digest size) and its protection to the EK (Part 1, 11.4.3)."""
    h = _hash_alg(int(ek.nameAlg))
    key = public_key_of(ek)
    if isinstance(key, rsa.RSAPublicKey):
        seed = secrets.token_bytes(h.size)
        algorithm = _CRYPTOGRAPHY_HASHES[h.alg]()
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=label)
        return seed, key.encrypt(seed, oaep)
    if isinstance(key, ec.EllipticCurvePublicKey):
        ephemeral = ec.generate_private_key(key.curve)
        z = ephemeral.exchange(ec.ECDH(), key)  # the x coordinate of d_e * Q_EK
        size = (key.curve.key_size + 7) // 8
        ours = ephemeral.public_key().public_numbers()
        x_e, y_e = ours.x.to_bytes(size, "big"), ours.y.to_bytes(size, "big")
        x_ek = key.public_numbers().x.to_bytes(size, "big")
        seed = kdfe(h, z, label, x_e, x_ek, h.size * 8)
        return seed, _tpm2b(x_e) + _tpm2b(y_e)  # TPMS_ECC_POINT
    raise CredentialFormatError(f"cannot protect a seed to a {type(key).__name__}")


def wrap_credential(ek: TPMT_PUBLIC, seed: bytes, secret: bytes, name: bytes) -> bytes:
    """TPM2B_ID_OBJECT.credential for a given seed (Part 1, 24.4 and 24.5).

    Split out of :func:`make_credential` so the tests can hold the seed fixed and
    compare byte for byte with another implementation."""
    h = _hash_alg(int(ek.nameAlg))
    if not 0 < len(secret) <= h.size:
        raise ValueError(f"a credential holds 1..{h.size} bytes, not {len(secret)}")
    sym = ek.parameters.asymDetail.symmetric
    if sym.algorithm != TPM2_ALG.AES or sym.mode.sym != TPM2_ALG.CFB:
        raise CredentialFormatError("the EK's symmetric algorithm is not AES-CFB")
    bits = int(sym.keyBits.sym)
    sym_key = kdfa(h, seed, b"STORAGE", name, b"", bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(_tpm2b(secret)) + encryptor.finalize()
    hmac_key = kdfa(h, seed, b"INTEGRITY", b"", b"", h.size * 8)
    outer_hmac = h.hmac(hmac_key, enc_identity, name)
    return _tpm2b(outer_hmac) + enc_identity


def kdfe(h: HashAlg, z: bytes, label: bytes, party_u: bytes, party_v: bytes,
         bits: int) -> bytes:
    """KDFe (Part 1, 11.4.10.3; SP800-56A concatenation KDF):
    H(counter || Z || label || partyUInfo || partyVInfo), counter from 1.
    The label carries its terminating NUL, as KDFa's does."""
    if not label.endswith(b"\x00"):
        label += b"\x00"
    out = bytearray()
    counter = 1
    while len(out) * 8 < bits:
        out += hashlib.new(h.name, struct.pack(">I", counter) + z + label + party_u
                           + party_v).digest()
        counter += 1
    return bytes(out[: (bits + 7) // 8])


# -- helpers -------------------------------------------------------------------------

def _hash_alg(alg: int) -> HashAlg:
    h = HASHES.get(alg)
    if h is None or alg not in _CRYPTOGRAPHY_HASHES:
        raise CredentialFormatError(f"unsupported name algorithm 0x{alg:04x}")
    return h


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _read_tpm2b(data: bytes, offset: int, what: str) -> tuple[bytes, int]:
    if len(data) < offset + 2:
        raise CredentialFormatError(f"{what} truncated before its size")
    (n,) = struct.unpack_from(">H", data, offset)
    end = offset + 2 + n
    if len(data) < end:
        raise CredentialFormatError(f"{what} says {n} bytes, only {len(data) - offset - 2} "
                                    "follow")
    return data[offset + 2 : end], end
