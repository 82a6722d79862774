"""Sealing per-domain secrets in a vTPM (issue 5): to current PCRs, to PCRs predicted from
a manifest, and to signed PCR policies (PolicyAuthorize) that survive kernel updates.

- :mod:`.srk` — the standard ECC P-256 SRK, persistent at 0x81000001;
- :mod:`.policy` — seal policies, their digests in software, signed PCR policies;
- :mod:`.seal` — TPM2_Create/Unseal through policy sessions, the blob file;
- :mod:`.tsskey` — the ``TSS2 PRIVATE KEY`` PEM (TPMKey ASN.1, loadable-key OID);
- :mod:`.revocation` — the per-vTPM NV counter that revokes old signed policies;
- :mod:`.importblob` — offline sealing to one vTPM's EK (Duplicate/Import style);
- :mod:`.errors` — typed refusals.

Every function takes the vTPM as ``execute(command) -> response``.
"""

from .errors import (
    AuthRefused,
    LockedOut,
    PolicyRefused,
    SealedFormatError,
    SealingError,
)
from .importblob import ImportBlob, ImportRefused, create_import_blob, import_and_unseal
from .policy import (
    REVOCABLE_REF,
    AuthorizedPolicy,
    PcrPolicy,
    PcrValues,
    SealPolicy,
    SignedPolicy,
    policy_pcr_digest,
    sign_policy,
)
from .revocation import (
    REVOCATION_INDEX,
    NoRevocationCounter,
    ensure_counter,
    raise_counter,
    read_counter,
)
from .seal import SealedBlob, seal, unseal
from .srk import SRK_HANDLE, ensure_srk, srk_template
from .tsskey import OID_SEALED_DATA, TpmKey

__all__ = [
    "OID_SEALED_DATA",
    "REVOCABLE_REF",
    "REVOCATION_INDEX",
    "SRK_HANDLE",
    "AuthRefused",
    "AuthorizedPolicy",
    "ImportBlob",
    "ImportRefused",
    "LockedOut",
    "NoRevocationCounter",
    "PcrPolicy",
    "PcrValues",
    "PolicyRefused",
    "SealPolicy",
    "SealedBlob",
    "SealedFormatError",
    "SealingError",
    "SignedPolicy",
    "TpmKey",
    "create_import_blob",
    "ensure_counter",
    "ensure_srk",
    "import_and_unseal",
    "policy_pcr_digest",
    "raise_counter",
    "read_counter",
    "seal",
    "sign_policy",
    "srk_template",
    "unseal",
]
