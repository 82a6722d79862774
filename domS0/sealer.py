"""Sealing per-domain secrets on DomS0's side (issue 5): TPM2_Create of a sealed object
under a vTPM's SRK, and TPM2_Unseal through the policy session the blob names.

Like a quote, sealing and unsealing are a few commands that must not interleave with a
running domain's, so they borrow the front end's lease (``Instance.exclusive(force=True)``).
A vTPM that is not started yet (created, never built) gets TPM2_Startup(CLEAR) first.
The secret is never logged: requests are logged by method and vTPM only.

The typed refusals of :mod:`vtpm_manager.sealing` stay typed here; the gRPC servicer
maps them onto status codes (:func:`domS0.rpc.attestation.sealing_status`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from tpm2_pytss import TSS2_Exception

from domS0.launch_commands import startup_clear
from vtpm_manager.errors import FailedPrecondition, InvalidArgument
from vtpm_manager.instance import Instance
from vtpm_manager.manager import VtpmManager
from vtpm_manager.manufacture import Execute
from vtpm_manager.sealing import (
    ImportBlob,
    ImportRefused,
    SealedBlob,
    SealedFormatError,
    SealingError,
    SealPolicy,
    SignedPolicy,
    import_and_unseal,
    seal,
    unseal,
)
from vtpm_manager.sealing.importblob import IMPORT_BLOB_KIND

SEAL_HOLDER = "a DomS0 seal"
T = TypeVar("T")


class Sealer:
    def __init__(self, manager: VtpmManager) -> None:
        self._manager = manager

    def _run(self, ref: str, holder: str, action: Callable[[Execute], T]) -> T:
        instance: Instance = self._manager.get(ref)
        instance.refuse_if_marked()   # a migrated vTPM: say where it went
        if not instance.running:
            raise FailedPrecondition(f"vTPM {instance.record.name} is stopped; start it "
                                     f"first (vtpmctl start {instance.record.name})")
        with instance.exclusive(holder, force=True) as lease:
            def execute(command: bytes) -> bytes:
                return instance.execute(command, 0, lease)

            try:
                # A vTPM no domain has booted yet is not started; TPM2_Startup(CLEAR) is
                # what its firmware would send (a no-op on a started one).
                startup_clear(execute)
                return action(execute)
            except TSS2_Exception as exc:
                raise FailedPrecondition(f"vTPM {instance.record.name}: {exc}") from None

    def seal(self, ref: str, secret: bytes, policy: SealPolicy,
             auth: bytes | None = None) -> SealedBlob:
        if not secret:
            raise InvalidArgument("the secret is empty")
        try:
            return self._run(ref, SEAL_HOLDER, lambda ex: seal(ex, secret, policy, auth))
        except SealedFormatError:
            raise
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None

    def unseal(self, ref: str, blob_json: str, signed_policy_json: str = "",
               auth: bytes | None = None) -> bytes:
        """Unseal a blob from :meth:`seal`, or an import blob an offline sealer made for
        this vTPM's EK (``vtpmctl seal --ek``): those carry ``"kind": "vtpm-import-blob"``
        and are TPM2_Import-ed under the recreated EK first."""
        if is_import_blob(blob_json):
            return self._unseal_import(ref, blob_json, signed_policy_json, auth)
        try:
            blob = SealedBlob.from_json(blob_json)
            signed = SignedPolicy.from_json(signed_policy_json) if signed_policy_json \
                else None
        except SealingError as exc:
            raise InvalidArgument(str(exc)) from None
        return self._run(ref, "a DomS0 unseal",
                         lambda ex: unseal(ex, blob, signed_policy=signed, auth=auth))

    def _unseal_import(self, ref: str, blob_json: str, signed_policy_json: str,
                       auth: bytes | None) -> bytes:
        if signed_policy_json or auth:
            raise InvalidArgument("an import blob carries its PCR policy and no auth value; "
                                  "give neither --signed-policy nor --auth-file")
        try:
            blob = ImportBlob.from_json(blob_json)
        except SealingError as exc:
            raise InvalidArgument(str(exc)) from None
        name = self._manager.get(ref).record.name
        try:
            return self._run(ref, "a DomS0 unseal", lambda ex: import_and_unseal(ex, blob))
        except ImportRefused as exc:
            raise FailedPrecondition(
                f"this blob was made for another vTPM's EK (EK name {blob.ek_name.hex()}), "
                f"not {name}'s: {exc}") from None


def is_import_blob(blob_json: str) -> bool:
    """Whether ``blob_json`` is an offline import blob (kind ``vtpm-import-blob``)."""
    try:
        document = json.loads(blob_json)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("kind") == IMPORT_BLOB_KIND
