"""Attestation (data path 3) on DomS0's side: quotes, event logs, certificates.

A quote is given while a domain runs (that is its point), so it borrows the front
end's lease for its few commands (``Instance.exclusive(force=True)``): the guest's
commands wait, none interleave with the AK's load-and-quote. Everything returned is
checked by the verifier against the vTPM CA; nothing here needs to be trusted.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.TCTILdr import TCTILdr

from measure.evidence import Evidence
from vtpm_manager.attestation import AttestationError, quote
from vtpm_manager.attestation.deep import (
    DEFAULT_HOST_PCRS,
    deep_quote,
    ek_name_from_certificate,
    host_ak_pem,
)
from vtpm_manager.ca import VtpmCA
from vtpm_manager.errors import FailedPrecondition, InvalidArgument
from vtpm_manager.instance import Instance
from vtpm_manager.manager import VtpmManager
from vtpm_manager.manufacture import EK_KINDS, esapi_over, read_nv
from vtpm_manager.root import RootOfTrust, TpmRoot

from .attestation_store import AttestationStore, EnrolledAk

DEFAULT_SELECTION = "sha256:0-23"
QUOTE_HOLDER = "a DomS0 quote"
DEEP_NEEDS_ROOT = "deep quotes need a host TPM root (doms0 serve --root-tpm TCTI)"
#: evidence.json ``deep_quote`` format version (the encoded quote has its own).
DEEP_EVIDENCE_VERSION = 1


@dataclass(frozen=True)
class Certificates:
    ek_certificates: tuple[bytes, ...]
    ak_certificate: bytes
    ak_public_pem: bytes
    ca_certificate: bytes


class Attestor:
    def __init__(self, manager: VtpmManager, ca: VtpmCA | None,
                 records: AttestationStore, root: RootOfTrust | None = None,
                 policy_digest: Callable[[], bytes] = lambda: bytes(32)) -> None:
        self._manager = manager
        self._ca = ca
        self._records = records
        self._root = root
        #: The access-control policy DomS0 enforces now (zeros: none loaded).
        self._policy_digest = policy_digest

    def _enrolled(self, instance: Instance) -> EnrolledAk:
        enrolled = self._records.enrolled(instance.record.uuid)
        if enrolled is not None:
            return enrolled
        name = instance.record.name
        raise FailedPrecondition(f"vTPM {name} has no attestation key yet; build the "
                                 f"domain first (vtpmctl build {name} ...)")

    def quote(self, ref: str, nonce: bytes, selection: str, deep: bool = False) -> Evidence:
        """The vTPM's quote; with ``deep``, also a host-TPM quote binding it (see
        :mod:`vtpm_manager.attestation.deep`), carried as ``Evidence.deep_quote``."""
        root = self._root
        if deep and not isinstance(root, TpmRoot):
            raise FailedPrecondition(DEEP_NEEDS_ROOT)
        instance = self._manager.get(ref)
        instance.refuse_if_marked()
        enrolled = self._enrolled(instance)
        if len(nonce) > 64:
            raise InvalidArgument("the nonce is at most 64 bytes (a TPM2B_DATA)")
        selection = selection or DEFAULT_SELECTION
        with instance.exclusive(QUOTE_HOLDER, force=True) as lease:
            try:
                result = quote(lambda c: instance.execute(c, 0, lease), enrolled.ak, nonce,
                               selection)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
            except (AttestationError, TSS2_Exception) as exc:
                raise FailedPrecondition(f"vTPM {instance.record.name} cannot quote: {exc}"
                                         ) from None
        evidence = Evidence(
            vtpm_uuid=instance.record.uuid, nonce=nonce, selection=result.selection,
            attest=result.attest, signature=result.signature,
            pcr_values=result.pcr_values(), ak_public_pem=enrolled.ak.public_pem(),
            certificates=(enrolled.certificate_pem, enrolled.ek_certificate_pem),
            eventlog=self._records.eventlog(instance.record.uuid) or b"")
        if not deep:
            return evidence
        assert isinstance(root, TpmRoot)
        return replace(evidence, deep_quote=self._deep(root, evidence,
                                                      enrolled.ek_certificate_pem))

    def _deep(self, root: TpmRoot, evidence: Evidence, ek_certificate_pem: bytes
              ) -> dict[str, Any]:
        """Quote the host TPM over its boot PCRs and DomS0's measurement PCR, binding the
        vTPM quote just made, its UUID, its EK name and the digest of the access-control
        policy DomS0 enforces."""
        host_pcrs = DEFAULT_HOST_PCRS if root.measure_pcr is None else \
            f"{DEFAULT_HOST_PCRS},{root.measure_pcr}"
        ek_name = ek_name_from_certificate(ek_certificate_pem)
        policy = self._policy_digest()
        try:
            made = deep_quote(TCTILdr.parse(root.tcti), evidence.attest, evidence.vtpm_uuid,
                              ek_name, policy, host_pcrs)
        except (TSS2_Exception, RuntimeError) as exc:
            raise FailedPrecondition(f"the host TPM at {root.tcti} cannot quote: {exc}"
                                     ) from None
        return {
            "version": DEEP_EVIDENCE_VERSION,
            "encoded": base64.b64encode(made.encode()).decode(),
            "host_ak_public_pem": host_ak_pem(made.host_ak_public).decode(),
            "ek_name": ek_name.hex(), "policy_digest": policy.hex(),
            "host_pcr_selection": host_pcrs, "measure_pcr": root.measure_pcr,
        }

    def eventlog(self, ref: str) -> bytes:
        instance = self._manager.get(ref)
        instance.refuse_if_marked()
        log = self._records.eventlog(instance.record.uuid)
        if log is None:
            raise FailedPrecondition(f"vTPM {instance.record.name} has no event log; build "
                                     f"the domain first (vtpmctl build {instance.record.name})")
        return log

    def certificates(self, ref: str) -> Certificates:
        instance = self._manager.get(ref)
        instance.refuse_if_marked()
        enrolled = self._records.enrolled(instance.record.uuid)
        ca_pem = self._ca.certificate_pem() if self._ca is not None else b""
        return Certificates(self._ek_certificates(instance),
                            enrolled.certificate_pem if enrolled else b"",
                            enrolled.ak.public_pem() if enrolled else b"", ca_pem)

    @staticmethod
    def _ek_certificates(instance: Instance) -> tuple[bytes, ...]:
        """The EK certificates in the vTPM's NV (none on an unmanufactured vTPM)."""
        if not instance.running:
            return ()
        pems: list[bytes] = []
        with instance.exclusive("a DomS0 certificate read", force=True) as lease:
            try:
                with esapi_over(lambda c: instance.execute(c, 0, lease)) as esapi:
                    for _, nv_index in EK_KINDS.values():
                        try:
                            der = read_nv(esapi, nv_index)
                        except TSS2_Exception:
                            continue
                        pems.append(x509.load_der_x509_certificate(der).public_bytes(
                            serialization.Encoding.PEM))
            except TSS2_Exception:
                return tuple(pems)
        return tuple(pems)
