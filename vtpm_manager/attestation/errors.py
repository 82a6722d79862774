"""What can go wrong in enrollment and attestation, named so a caller can act on it.

Verifiers raise (never return ``False``): it is incorrect to ignore a failed check.
"""

from __future__ import annotations


class AttestationError(Exception):
    """Base class: enrollment, quoting or verification could not be done or failed."""


class CredentialFormatError(AttestationError, ValueError):
    """A credential blob or file is malformed (bad magic, version, or sizes)."""


class EnrollmentError(AttestationError):
    """The vTPM could not be enrolled; nothing was certified."""


class ActivationFailed(EnrollmentError):
    """TPM2_ActivateCredential refused the credential, or released another secret:
    the AK is not on the TPM that holds this EK (or the blob is for another EK/AK)."""

    def __init__(self, message: str, rc: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc


class QuoteError(AttestationError):
    """The vTPM could not produce a consistent quote."""


class QuoteMismatch(AttestationError):
    """A quote does not verify: signature, magic/type, nonce or PCR digest."""


class DeepQuoteMismatch(QuoteMismatch):
    """A deep quote does not verify, or does not bind the given vTPM evidence."""
