"""Block-cipher modes for TPM2_EncryptDecrypt(2) (Part 3, 15.2/15.3; Part 1, Annex C.2),
with the chaining value a TPM hands back as ``ivOut``.

Part 3 leaves the output IV to the mode: CBC and CFB return the last ciphertext block,
OFB the last keystream block, CTR the counter after the last block used. After a final
partial CFB block libtpms (through OpenSSL's CFB128 register) returns the ciphertext
octets followed by the unused keystream octets (the reference's own code zero-fills
instead); with no data at all the IV comes back untouched. We answer as libtpms does,
so that a caller chaining calls gets the same octets from either. The modes are built
here on the raw AES block function, since ``cryptography``'s mode objects do not expose
the chaining value.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..constants import TPM_ALG

BLOCK = 16


def _blocks(data: bytes) -> list[bytes]:
    return [data[i : i + BLOCK] for i in range(0, len(data), BLOCK)]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=False))


def _increment(counter: bytes) -> bytes:
    return ((int.from_bytes(counter, "big") + 1) % (1 << (8 * BLOCK))).to_bytes(BLOCK, "big")


def crypt(key: bytes, mode: int, iv: bytes, data: bytes, decrypt: bool) -> tuple[bytes, bytes]:
    """(output, ivOut) of AES in ``mode``; ``iv`` and the data size were checked by the
    caller (ECB: no IV and whole blocks; CBC: whole blocks; others: a block-sized IV)."""
    if not data:
        return b"", iv
    # The raw block function: every mode below is built on it (ECB is one of them).
    aes = Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305
    if mode == TPM_ALG.ECB:
        op = aes.decryptor() if decrypt else aes.encryptor()
        return op.update(data) + op.finalize(), iv
    enc = aes.encryptor()
    if mode == TPM_ALG.CBC:
        if decrypt:
            dec = aes.decryptor()
            plain = dec.update(data) + dec.finalize()
            chain = [iv, *_blocks(data)]
            out = b"".join(_xor(p, c) for p, c in zip(_blocks(plain), chain, strict=False))
            return out, chain[-1]
        out_blocks = []
        for block in _blocks(data):
            iv = bytes(enc.update(_xor(block, iv)))
            out_blocks.append(iv)
        return b"".join(out_blocks), iv
    pieces = []
    for block in _blocks(data):
        stream = bytes(enc.update(iv))
        piece = _xor(block, stream)
        pieces.append(piece)
        if mode == TPM_ALG.CFB:
            # After a partial block the rest of the register still holds keystream.
            iv = (block if decrypt else piece) + stream[len(piece) :]
        elif mode == TPM_ALG.OFB:
            iv = stream
        else:  # CTR
            iv = _increment(iv)
    return b"".join(pieces), iv
