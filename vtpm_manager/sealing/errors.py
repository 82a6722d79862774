"""What can go wrong in sealing and unsealing, named so a caller can act on it."""

from __future__ import annotations


class SealingError(Exception):
    """Base class: a secret could not be sealed or unsealed."""


class SealedFormatError(SealingError, ValueError):
    """A sealed blob, TSS2 PEM or signed policy file is malformed or of another version."""


class PolicyRefused(SealingError):
    """The TPM refused the policy (TPM_RC_POLICY_FAIL, TPM_RC_VALUE or TPM_RC_SIGNATURE):
    the PCRs are not in the sealed (or signed) state, or the signature is not the approval
    key's. ``differing`` names the PCRs whose values differ, as ``"bank:pcr"``, when known."""

    def __init__(self, message: str, rc: int | None = None,
                 differing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.rc = rc
        self.differing = differing


class AuthRefused(SealingError):
    """Wrong auth value (TPM_RC_AUTH_FAIL); counted by dictionary-attack protection."""

    def __init__(self, message: str, rc: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc


class LockedOut(SealingError):
    """The TPM is in dictionary-attack lockout (TPM_RC_LOCKOUT): no auth is tried until
    the recovery time passes or the lockout hierarchy resets the counter."""

    def __init__(self, message: str, rc: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc
