"""The admin trailer of a state blob: write it from a TPM, and put it back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import StateFormatError
from .state import AdminRecord, admin_from, admin_record, stclear_from

if TYPE_CHECKING:
    from ..tpm import TPM


def record_of(tpm: TPM) -> AdminRecord:
    rd, saved = tpm._rd, tpm.perm.shutdown_state
    return admin_record(tpm.perm.admin, rd.stclear if rd is not None else None,
                        saved.stclear if saved is not None else None)


def restore(tpm: TPM, records: tuple[AdminRecord, ...]) -> None:
    """Apply the trailer to a TPM rebuilt from the rest of the blob. A blob written
    before the trailer existed keeps the defaults (empty authorizations, everything
    enabled), which is what such a TPM had."""
    if not records:
        return
    rec = records[0]
    rd, saved = tpm._rd, tpm.perm.shutdown_state
    if bool(rec.current) != (rd is not None) or bool(rec.shutdown) != (saved is not None):
        raise StateFormatError("hierarchy state does not match the reset data")
    tpm.perm.admin = admin_from(rec)
    if rd is not None:
        rd.stclear = stclear_from(rec.current[0])
    if saved is not None:
        saved.stclear = stclear_from(rec.shutdown[0])
