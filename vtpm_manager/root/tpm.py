"""The host TPM as DomS0's root of trust (tpm2-pytss ESAPI).

Under the owner hierarchy's storage primary key DomS0 keeps one sealed keyed-hash
object holding 64 random bytes: the KEK (32) ‖ the NV counter's auth value (32). Its
authPolicy is either

* ``pcr``: PolicyPCR over the host PCRs and DomS0's measurement PCR, as they were at
  ``doms0 init``; any change strands the keys until that configuration boots again;
* ``authorized``: PolicyAuthorize(approval key). Any PolicyPCR digest the operator's
  approval key signed opens it (Xen's system approval agent, on TPM 2.0), so an update
  the operator approved keeps the keys reachable.

Unseal runs, in one salted policy session: PolicyPCR → (VerifySignature of the
approval with the key from LoadExternal → PolicyAuthorize) → Unseal with response
encryption. When the TPM says no, we compare the current PCRs with the recorded ones
to tell the operator which PCR moved.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_OBJECT, TPMA_SESSION
from tpm2_pytss.types import (
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMS_KEYEDHASH_PARMS,
    TPMS_SENSITIVE_CREATE,
    TPMT_KEYEDHASH_SCHEME,
    TPMT_PUBLIC,
    TPMT_TK_VERIFIED,
    TPMU_PUBLIC_PARMS,
)

from ..durable import atomic_write
from ..kek import KEY_BYTES, KeyEncryptionKey
from .approval import Approval, ApprovalInvalid, ApprovalKey
from .base import RootOfTrust, RootRefused
from .counter import DEFAULT_NV_INDEX, TpmCounter, define_counter
from .host import connect, read_pcrs
from .policy import PcrSelection, differing, policy_authorize, policy_pcr
from .record import RootFiles, RootRecord
from .session import flush, salted_session, storage_primary

log = logging.getLogger(__name__)

SECRET_BYTES = 64  # KEK ‖ NV counter auth
MEASURE_BANK = "sha256"
_SEALED_ATTRIBUTES = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.NODA


class TpmRoot(RootOfTrust):
    """A provisioned host-TPM root in ``STATE_DIR/root`` reached through ``tcti``."""

    kind = "tpm"

    def __init__(self, tcti: str, state_dir: Path) -> None:
        self.tcti = tcti
        self.files = RootFiles(state_dir)
        self.record = self.files.load()
        self.measure_pcr = self.record.measure_pcr
        self._counter_auth: bytes | None = None

    # -- provisioning ----------------------------------------------------------------

    @classmethod
    def provision(cls, tcti: str, state_dir: Path, *, host_pcrs: PcrSelection,
                  measure_pcr: int, approval_key_pem: bytes | None = None,
                  nv_index: int = DEFAULT_NV_INDEX, srk_handle: int | None = None,
                  force: bool = False) -> TpmRoot:
        """Seal a fresh KEK to the host TPM and define the NV counter (``doms0 init``).

        Call after DomS0 has measured itself, so the measurement PCR holds the value
        this DomS0 gives it. Refuses to replace an existing root unless ``force``: its
        KEK is the only way into every vTPM record.
        """
        files = RootFiles(state_dir)
        if files.exists() and not force:
            raise RootRefused(
                f"a host TPM root is already provisioned in {files.dir}; its KEK protects "
                f"every vTPM there, so doms0 init will not replace it (rerun with --force "
                f"to replace it and lose access to the existing vTPM state)")
        selection = host_pcrs.with_pcr(MEASURE_BANK, measure_pcr)
        key = ApprovalKey(approval_key_pem) if approval_key_pem is not None else None
        secret = secrets.token_bytes(SECRET_BYTES)
        with connect(tcti) as esapi, storage_primary(esapi, srk_handle) as srk:
            srk_name = bytes(esapi.tr_get_name(srk))
            values = read_pcrs(esapi, selection)
            policy = policy_pcr(selection, values) if key is None else \
                policy_authorize(key.name)
            public, private = _seal(esapi, srk, secret, policy)
            define_counter(esapi, srk, nv_index, secret[KEY_BYTES:], replace=force)
        if force and files.dir.exists():
            shutil.rmtree(files.dir)
        record = RootRecord("pcr" if key is None else "authorized", selection, values, policy,
                            measure_pcr, nv_index, srk_name, srk_handle,
                            None if key is None else key.pem)
        files.save(record, public, private)
        return cls(tcti, state_dir)

    # -- RootOfTrust -----------------------------------------------------------------

    def describe(self) -> str:
        r = self.record
        if r.mode == "pcr":
            how = f"PolicyPCR {r.selection}"
        else:
            how = f"PolicyAuthorize (approval key {self.approval_key().name.hex()[:16]}…)"
        return (f"host TPM {self.tcti}: KEK sealed under the SRK with {how}; "
                f"NV counter {r.nv_index:#010x}")

    def open(self) -> KeyEncryptionKey:
        secret = self._unseal()
        if len(secret) != SECRET_BYTES:
            raise RootRefused(f"sealed KEK blob {self.files.private} holds {len(secret)} "
                              f"bytes, not {SECRET_BYTES}; re-provision with doms0 init")
        self._counter_auth = secret[KEY_BYTES:]
        return KeyEncryptionKey(secret[:KEY_BYTES], origin=f"host TPM {self.tcti}")

    def counter(self) -> TpmCounter:
        if self._counter_auth is None:
            raise RootRefused("the NV counter's auth is in the sealed secret: open() first")
        return TpmCounter(self.tcti, self.record.nv_index, self._counter_auth,
                          self.record.srk_handle)

    # -- approvals -------------------------------------------------------------------

    def approval_key(self) -> ApprovalKey:
        if self.record.approval_key_pem is None:
            raise RootRefused(f"the root in {self.files.dir} seals to fixed PCR values "
                              f"(mode pcr); approvals need one provisioned with "
                              f"--approval-key")
        return ApprovalKey(self.record.approval_key_pem)

    def install_approval(self, approval: Approval) -> Path:
        """Check ``approval`` against the approval key and keep it for unsealing."""
        self.approval_key().verify(approval)
        self.files.approved.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.files.approved / f"{approval.policy.hex()[:32]}.json"
        atomic_write(path, approval.to_json(), mode=0o644)
        return path

    def approvals(self) -> list[Approval]:
        """Installed approvals that verify; others are skipped with a warning."""
        key = self.approval_key()
        found = []
        for path in sorted(self.files.approved.glob("*.json")):
            try:
                approval = Approval.load(path)
                key.verify(approval)
            except ApprovalInvalid as exc:
                log.warning("ignoring approval: %s", exc)
                continue
            found.append(approval)
        return found

    # -- unsealing -------------------------------------------------------------------

    def _unseal(self) -> bytes:
        public_blob, private_blob = self.files.blobs()
        try:
            public = TPM2B_PUBLIC.unmarshal(public_blob)[0]
            private = TPM2B_PRIVATE.unmarshal(private_blob)[0]
        except Exception as exc:  # the TSS's unmarshal errors have no common type
            raise self._blob_refused(f"it does not parse ({exc})") from exc
        with connect(self.tcti) as esapi, storage_primary(esapi, self.record.srk_handle) as srk:
            if bytes(esapi.tr_get_name(srk)) != self.record.srk_name:
                raise RootRefused(
                    "the host TPM's storage primary key is not the one DomS0's KEK was "
                    "sealed under (TPM cleared, another TPM, or another --root-tpm?); "
                    "the sealed keys are unreachable: re-provision with doms0 init --force")
            # The approval's ticket first, so no more than two objects are ever loaded
            # at once (a TPM may hold as few as three, and others share them).
            approved = None
            if self.record.mode == "authorized":
                approval = self._matching_approval(esapi)
                approved = (approval, self._verify_approval(esapi, approval))
            try:
                sealed = esapi.load(srk, private, public)
            except TSS2_Exception as exc:
                raise self._blob_refused(f"the TPM's integrity check failed: {exc}") from exc
            try:
                return self._unseal_loaded(esapi, srk, sealed, approved)
            finally:
                flush(esapi, sealed)

    def _blob_refused(self, why: str) -> RootRefused:
        return RootRefused(f"sealed KEK blob {self.files.private} / {self.files.public} "
                           f"refused: {why}; it was altered or belongs to another TPM: "
                           f"restore {self.files.dir} from backup")

    def _unseal_loaded(self, esapi: ESAPI, srk: ESYS_TR, sealed: ESYS_TR,
                       approved: tuple[Approval, TPMT_TK_VERIFIED] | None) -> bytes:
        session = salted_session(esapi, srk, TPM2_SE.POLICY,
                                 TPMA_SESSION.ENCRYPT | TPMA_SESSION.CONTINUESESSION)
        try:
            if approved is None:
                selection, expected = self.record.selection, self.record.sealed_values
                against = "the sealed policy"
            else:
                selection, expected = approved[0].selection, approved[0].values
                against = f"the approved policy {approved[0].source}"
            try:
                esapi.policy_pcr(session, b"", str(selection))
                if approved is not None:
                    approval, ticket = approved
                    esapi.policy_authorize(session, approval.policy,
                                           self.approval_key().name, ticket, b"")
                return bytes(esapi.unseal(sealed, session1=session))
            except TSS2_Exception as exc:
                current = read_pcrs(esapi, selection)
                raise self._pcr_refusal(selection, expected, current, against, exc) from None
        finally:
            flush(esapi, session)

    def _matching_approval(self, esapi: ESAPI) -> Approval:
        approvals = self.approvals()
        if not approvals:
            raise RootRefused(
                f"no approved PCR policy is installed in {self.files.approved}; sign one with "
                f"`doms0 policy approve` and install it with `doms0 policy install`")
        scored = []
        for approval in approvals:
            current = read_pcrs(esapi, approval.selection)
            diffs = differing(approval.selection, approval.values, current)
            if not diffs:
                return approval
            scored.append((len(diffs), approval, current))
        _, closest, current = min(scored, key=lambda item: item[0])
        raise self._pcr_refusal(closest.selection, closest.values, current,
                                f"every approved policy (closest: {closest.source})", None)

    def _verify_approval(self, esapi: ESAPI, approval: Approval) -> TPMT_TK_VERIFIED:
        """VerifySignature with the approval key loaded by LoadExternal under the owner
        hierarchy: a NULL-hierarchy ticket would not satisfy PolicyAuthorize."""
        external = esapi.load_external(self.approval_key().public_area(), None, ESYS_TR.OWNER)
        try:
            return esapi.verify_signature(external, approval.a_hash, approval.tpm_signature())
        except TSS2_Exception as exc:
            raise RootRefused(f"the host TPM rejects the signature of {approval.source} "
                              f"({exc}); re-approve with `doms0 policy approve`") from exc
        finally:
            flush(esapi, external)

    def _pcr_refusal(self, selection: PcrSelection, expected: dict[str, bytes],
                     current: dict[str, bytes], against: str,
                     error: TSS2_Exception | None) -> RootRefused:
        diffs = differing(selection, expected, current)
        if not diffs:
            return RootRefused(f"the host TPM refused to unseal DomS0's KEK although the "
                               f"PCRs match {against} ({error}); the sealed blob may be "
                               f"damaged: restore {self.files.dir} from backup")
        measure_label = f"{MEASURE_BANK}:{self.record.measure_pcr}"
        parts = []
        for label in diffs:
            what = " (DomS0's own measurement: its code, configuration or policy files " \
                   "differ)" if label == measure_label else ""
            was = expected.get(label, b"").hex()[:12]
            word = "sealed" if self.record.mode == "pcr" else "approved"
            parts.append(f"host PCR {label}{what} differs from {against} "
                         f"({word} {was}…, now {current[label].hex()[:12]}…)")
        if self.record.mode == "pcr":
            advice = ("boot the configuration DomS0 was sealed to; to let approved updates "
                      "keep the keys, provision with --approval-key")
        else:
            advice = ("boot an approved configuration, or approve this one with "
                      "`doms0 policy approve` and install it with `doms0 policy install`")
        return RootRefused("; ".join(parts) + f"; {advice}")


def _seal(esapi: ESAPI, srk: ESYS_TR, secret: bytes, policy: bytes) -> tuple[bytes, bytes]:
    """TPM2_Create of a keyed-hash data object (no userWithAuth: the policy is the only
    way in, Part 1 §19.7.1) with parameter encryption of the secret."""
    template = TPMT_PUBLIC(
        type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256, objectAttributes=_SEALED_ATTRIBUTES,
        authPolicy=policy, parameters=TPMU_PUBLIC_PARMS(keyedHashDetail=TPMS_KEYEDHASH_PARMS(
            scheme=TPMT_KEYEDHASH_SCHEME(scheme=TPM2_ALG.NULL))))
    sensitive = TPM2B_SENSITIVE_CREATE(sensitive=TPMS_SENSITIVE_CREATE(
        data=TPM2B_SENSITIVE_DATA(secret)))
    session = salted_session(esapi, srk, TPM2_SE.HMAC,
                             TPMA_SESSION.DECRYPT | TPMA_SESSION.CONTINUESESSION)
    try:
        private, public, *_ = esapi.create(srk, sensitive, TPM2B_PUBLIC(publicArea=template),
                                           session1=session)
    finally:
        flush(esapi, session)
    return bytes(public.marshal()), bytes(private.marshal())
