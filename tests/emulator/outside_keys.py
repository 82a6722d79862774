"""Keys made outside the TPM for tests that load them (LoadExternal, Import)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec


def p256_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key whose coordinates both take all 32 octets. tpm2-pytss's ``from_pem``
    writes a coordinate without its leading zero octets, and a TPM refuses a short
    coordinate (TPM_RC_KEY), so a plain random key would fail about 1 run in 128."""
    while True:
        key = ec.generate_private_key(ec.SECP256R1())
        n = key.public_key().public_numbers()
        if n.x.bit_length() > 248 and n.y.bit_length() > 248:
            return key
