"""Operator approvals: a PolicyPCR digest signed by the approval key.

This is Xen's system approval agent (SAA) on TPM 2.0: the sealed KEK's authPolicy is
PolicyAuthorize(approval key), so any PCR policy the key signs opens it (Part 3
§23.16). The approval file carries what was approved (selection and values, so a
refusal can name the PCR that moved), the policy digest and the signature over
aHash = H(approvedPolicy ‖ policyRef). The TPM checks the signature again at unseal;
checking it here too means a wrong file is refused when installed, not at next boot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPMS_SIGNATURE_ECC,
    TPMS_SIGNATURE_RSA,
    TPMT_SIGNATURE,
    TPMU_SIGNATURE,
)

from .host import format_values, parse_values
from .policy import PcrSelection, approval_hash, policy_pcr

FORMAT = "vtpm-stack root approval"
VERSION = 1
# What the approval key looks like to the TPM when loaded with LoadExternal. Fixed
# here because the key's TPM name (and so the sealed authPolicy) depends on it.
_KEY_ATTRIBUTES = TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.USERWITHAUTH


class ApprovalInvalid(Exception):
    """An approval file is malformed, of another version, or not signed by the
    approval key; the message names the file."""


@dataclass(frozen=True)
class ApprovalKey:
    """The public half of the approval key (RSA or ECC P-256), as PEM."""

    pem: bytes

    def public_area(self) -> TPM2B_PUBLIC:
        try:
            return TPM2B_PUBLIC.from_pem(self.pem, objectAttributes=_KEY_ATTRIBUTES)
        except (ValueError, TypeError) as exc:
            raise ApprovalInvalid(f"approval key is not an RSA or ECC public key: {exc}") \
                from exc

    @property
    def name(self) -> bytes:
        """The TPM name (nameAlg ‖ H(TPMT_PUBLIC)) that PolicyAuthorize binds to."""
        return bytes(self.public_area().publicArea.get_name())

    def _key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        key = serialization.load_pem_public_key(self.pem)
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ApprovalInvalid("approval key must be RSA or ECC")
        return key

    def verify(self, approval: Approval) -> None:
        """Raise :class:`ApprovalInvalid` unless ``approval`` is signed by this key and
        its digest is the PolicyPCR digest of its own values."""
        if policy_pcr(approval.selection, approval.values) != approval.policy:
            raise ApprovalInvalid(f"{approval.source}: policy digest does not match its "
                                  f"PCR values")
        if approval.key_name != self.name:
            raise ApprovalInvalid(f"{approval.source}: signed by another approval key "
                                  f"(name {approval.key_name.hex()[:16]}…)")
        key = self._key()
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(approval.signature, approval.policy, padding.PKCS1v15(),
                           hashes.SHA256())
            else:
                half = len(approval.signature) // 2
                der = encode_dss_signature(int.from_bytes(approval.signature[:half], "big"),
                                           int.from_bytes(approval.signature[half:], "big"))
                key.verify(der, approval.policy, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise ApprovalInvalid(f"{approval.source}: signature does not verify with the "
                                  f"approval key") from None


@dataclass(frozen=True)
class Approval:
    """One approved PCR policy."""

    selection: PcrSelection
    values: dict[str, bytes]
    policy: bytes
    key_name: bytes
    scheme: str  # "rsassa" or "ecdsa"
    signature: bytes
    source: str = "approval"

    def tpm_signature(self) -> TPMT_SIGNATURE:
        """The signature as VerifySignature takes it (Part 2 §11.3.4)."""
        if self.scheme == "rsassa":
            return TPMT_SIGNATURE(sigAlg=TPM2_ALG.RSASSA, signature=TPMU_SIGNATURE(
                rsassa=TPMS_SIGNATURE_RSA(hash=TPM2_ALG.SHA256, sig=self.signature)))
        half = len(self.signature) // 2
        return TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA, signature=TPMU_SIGNATURE(
            ecdsa=TPMS_SIGNATURE_ECC(hash=TPM2_ALG.SHA256,
                                     signatureR=self.signature[:half],
                                     signatureS=self.signature[half:])))

    @property
    def a_hash(self) -> bytes:
        return approval_hash(self.policy)

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "version": VERSION, "selection": str(self.selection),
            "pcr_values": format_values(self.values), "approved_policy": self.policy.hex(),
            "policy_ref": "", "key_name": self.key_name.hex(),
            "signature": {"scheme": self.scheme, "hash": "sha256",
                          "value": self.signature.hex()},
        }, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Approval:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ApprovalInvalid(f"{source} is not a DomS0 approval file")
            if doc.get("version") != VERSION:
                raise ApprovalInvalid(f"{source}: approval version {doc.get('version')!r} "
                                      f"is not supported (this DomS0 reads {VERSION})")
            if doc["policy_ref"] or doc["signature"]["hash"] != "sha256":
                raise ApprovalInvalid(f"{source}: only sha256 and an empty policyRef are "
                                      f"supported")
            scheme = doc["signature"]["scheme"]
            if scheme not in ("rsassa", "ecdsa"):
                raise ApprovalInvalid(f"{source}: unknown signature scheme {scheme!r}")
            return cls(PcrSelection.parse(doc["selection"]), parse_values(doc["pcr_values"]),
                       bytes.fromhex(doc["approved_policy"]), bytes.fromhex(doc["key_name"]),
                       scheme, bytes.fromhex(doc["signature"]["value"]), source)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ApprovalInvalid(f"{source} is not a valid approval file: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> Approval:
        try:
            return cls.from_json(path.read_bytes(), str(path))
        except OSError as exc:
            raise ApprovalInvalid(f"cannot read {path}: {exc}") from exc


def public_pem_of(private_pem: bytes) -> bytes:
    """The approval public key (PEM) matching a private key (PEM)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def sign_approval(private_pem: bytes, selection: PcrSelection,
                  values: Mapping[str, bytes]) -> Approval:
    """Approve the PolicyPCR policy of ``values``: what ``doms0 policy approve`` does
    with the operator's private key (which never goes near DomS0's host)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    chosen = {label: values[label] for label in selection.labels()}
    digest = policy_pcr(selection, chosen)
    name = ApprovalKey(public_pem_of(private_pem)).name
    if isinstance(key, rsa.RSAPrivateKey):
        return Approval(selection, chosen, digest, name, "rsassa",
                        key.sign(digest, padding.PKCS1v15(), hashes.SHA256()))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(hashes.SHA256())))
        size = (key.curve.key_size + 7) // 8
        return Approval(selection, chosen, digest, name, "ecdsa",
                        r.to_bytes(size, "big") + s.to_bytes(size, "big"))
    raise ApprovalInvalid("the approval key must be an RSA or ECC private key")
