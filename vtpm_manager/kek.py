"""DomS0's key-encryption key (KEK): it wraps every per-vTPM data key.

Today the KEK lives in a 0600 file in the state folder: a development root of trust
that says so loudly at every start. A later root seals the same 32 bytes to the host
TPM; everything above this module stays the same.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .durable import atomic_write

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
_WRAP_LABEL = b"vtpm-stack data-key wrap v1\x00"


class KeyUnwrapError(Exception):
    """A wrapped key failed authentication: wrong KEK, or the wrapping was altered."""


class KeyEncryptionKey:
    """Wraps and unwraps per-vTPM data keys with AES-256-GCM.

    The vTPM's UUID is bound into the associated data, so a wrapped key copied into
    another vTPM's record does not open there.
    """

    def __init__(self, key: bytes, origin: str) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a KEK is {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.origin = origin

    def wrap(self, data_key: bytes, owner: str) -> bytes:
        """Return nonce ‖ ciphertext ‖ tag of ``data_key``, bound to ``owner``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, _WRAP_LABEL + owner.encode())

    def unwrap(self, wrapped: bytes, owner: str) -> bytes:
        """Inverse of :meth:`wrap`; raises :class:`KeyUnwrapError` on any mismatch."""
        nonce, body = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, _WRAP_LABEL + owner.encode())
        except (InvalidTag, ValueError) as exc:
            raise KeyUnwrapError(f"data key of {owner} does not open under this KEK") from exc


def load_development_kek(path: Path) -> KeyEncryptionKey:
    """Load (or create on first use) the KEK from a 0600 file.

    Anyone who can read this file can decrypt every vTPM: it is for development
    only, and the warning at every start says so.
    """
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(
                f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
            )
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise ValueError(f"{path} holds {len(key)} bytes, a KEK is {KEY_BYTES}")
    else:
        key = secrets.token_bytes(KEY_BYTES)
        atomic_write(path, key, mode=0o600)
    log.warning(
        "development root of trust: the key-encryption key is a plain file (%s); "
        "vTPM state is only as safe as that file", path,
    )
    return KeyEncryptionKey(key, origin=f"development key file {path}")
