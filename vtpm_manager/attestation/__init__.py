"""Attestation on a vTPM: AK enrollment through the EK, quotes, and deep quotes.

- :mod:`.credential` — TPM2_MakeCredential in software and tpm2-tools' credential file;
- :mod:`.keys` — the AK's template, persistent handle and blob (decisions in its doc);
- :mod:`.enroll` — create the AK, challenge it through the EK, certify it;
- :mod:`.quote` — TPM2_Quote, PCR values, verification, tpm2-tools files;
- :mod:`.deep` — a host-TPM quote binding a vTPM quote to this DomS0.

Every function takes the vTPM as ``execute(command) -> response`` (an engine's or
``Instance.execute`` with its lease bound), the host TPM as a tpm2-pytss TCTI.
"""

from .credential import Credential, make_credential, object_name
from .deep import DeepQuote, binding, deep_quote, host_ak_public, verify_deep_quote
from .enroll import Enrollment, activate_credential, enroll_ak
from .errors import (
    ActivationFailed,
    AttestationError,
    CredentialFormatError,
    DeepQuoteMismatch,
    EnrollmentError,
    QuoteError,
    QuoteMismatch,
)
from .keys import AK_HANDLES, AttestationKey
from .quote import QuoteResult, parse_selection, quote, verify_quote

__all__ = [
    "AK_HANDLES",
    "ActivationFailed",
    "AttestationError",
    "AttestationKey",
    "Credential",
    "CredentialFormatError",
    "DeepQuote",
    "DeepQuoteMismatch",
    "Enrollment",
    "EnrollmentError",
    "QuoteError",
    "QuoteMismatch",
    "QuoteResult",
    "activate_credential",
    "binding",
    "deep_quote",
    "enroll_ak",
    "host_ak_public",
    "make_credential",
    "object_name",
    "parse_selection",
    "quote",
    "verify_deep_quote",
    "verify_quote",
]
