"""DomS0's root of trust: where the key-encryption key and the rollback counter live.

``SoftwareRoot`` is the development root (key and counter files, loud warnings);
``TpmRoot`` seals the KEK to the host TPM with PolicyPCR or PolicyAuthorize and keeps
a ``TpmCounter`` in its NV. Callers see only :class:`RootOfTrust`.
"""

from .approval import Approval, ApprovalInvalid, ApprovalKey, sign_approval
from .base import RootOfTrust, RootRefused
from .counter import DEFAULT_NV_INDEX, TpmCounter
from .policy import PcrSelection, SelectionError
from .software import SoftwareRoot
from .tpm import TpmRoot

__all__ = [
    "DEFAULT_NV_INDEX",
    "Approval",
    "ApprovalInvalid",
    "ApprovalKey",
    "PcrSelection",
    "RootOfTrust",
    "RootRefused",
    "SelectionError",
    "SoftwareRoot",
    "TpmCounter",
    "TpmRoot",
    "sign_approval",
]
