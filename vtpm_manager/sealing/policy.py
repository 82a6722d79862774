"""Seal policies, their digests computed in software, and signed PCR policies.

A sealed object's authPolicy is the digest a policy session must reach before TPM2_Unseal
(Part 1, 19.7). We compute it here rather than with a trial session, so that a secret can be
sealed to PCR values the TPM does not hold yet (predicted from a manifest):

- PolicyPCR (Part 3, 23.7): ``H(d ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ pcrDigest)``,
  ``pcrDigest = H(PCR values concatenated in selection order)`` — banks in the order given,
  PCRs ascending within a bank, all hashed with the session's hash (SHA-256 here).
- PolicyAuthorize (Part 3, 23.16): the digest is reset, then
  ``H(H(0… ‖ TPM_CC_PolicyAuthorize ‖ keySign.name) ‖ policyRef)``; the session reaches it
  only with a ticket that the approval key signed ``H(approvedPolicy ‖ policyRef)``. This is
  systemd-measure's signed PCR policy: re-sign, do not re-seal, when a kernel changes.
- PolicyAuthValue (Part 3, 23.18): ``H(d ‖ TPM_CC_PolicyAuthValue)``; the object's authValue
  then keys the session HMAC, and wrong values count towards dictionary-attack lockout.
- PolicyNV (Part 3, 23.9): ``H(d ‖ TPM_CC_PolicyNV ‖ H(operandB ‖ offset ‖ operation) ‖
  nvIndex.Name)``. A *revocable* signed policy is PolicyPCR then PolicyNV(revocation
  counter ≤ version, TPM_EO_UNSIGNED_LE), approved under policyRef :data:`REVOCABLE_REF`
  (see :mod:`.revocation`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from tpm2_pytss.constants import TPM2_ALG, TPM2_ECC, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMS_RSA_PARMS,
    TPMS_SIGNATURE_ECC,
    TPMS_SIGNATURE_RSA,
    TPMT_ECC_SCHEME,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_RSA_SCHEME,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF_OBJECT,
    TPMU_PUBLIC_ID,
    TPMU_PUBLIC_PARMS,
    TPMU_SIGNATURE,
)

from ..attestation.quote import BANKS, Selection, format_selection, parse_selection, to_tpml
from .errors import SealedFormatError
from .revocation import COUNTER_SIZE, REVOCATION_INDEX, counter_name

TPM_CC_POLICY_PCR: Final = 0x0000017F
TPM_CC_POLICY_AUTHORIZE: Final = 0x0000016A
TPM_CC_POLICY_AUTH_VALUE: Final = 0x0000016B
TPM_CC_POLICY_NV: Final = 0x00000149
#: TPM_EO_UNSIGNED_LE (Part 2, 6.8): PolicyNV passes while NV contents ≤ operandB.
TPM_EO_UNSIGNED_LE: Final = 0x0009
#: The policyRef of revocable seals and signatures. PolicyAuthorize hashes policyRef into
#: both the object's authPolicy and the signed aHash, so a signature made for one kind
#: (empty policyRef: PCRs only) never opens an object sealed as the other kind.
REVOCABLE_REF: Final = b"vtpm-stack revocable v1"
#: The policy session hash, and so the sealed object's nameAlg.
POLICY_HASH: Final = "sha256"
ZERO_DIGEST: Final = bytes(32)
SIGNED_POLICY_VERSION: Final = 1

#: ``{bank: {pcr: value}}`` — what ``measure.manifest.Manifest.pcrs`` predicts.
PcrValues = dict[str, dict[int, bytes]]
ApprovalPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
ApprovalPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _h(*parts: bytes) -> bytes:
    h = hashlib.new(POLICY_HASH)
    for part in parts:
        h.update(part)
    return h.digest()


def as_selection(selection: Selection | str) -> Selection:
    return parse_selection(selection) if isinstance(selection, str) else selection


def ordered_values(selection: Selection, values: PcrValues) -> list[bytes]:
    """The selected PCR values in the TPM's order, each checked against its bank's size."""
    out = []
    for bank, pcrs in selection:
        size = BANKS[bank][1]
        for pcr in pcrs:
            try:
                value = values[bank][pcr]
            except KeyError:
                raise ValueError(f"no value for PCR {bank}:{pcr}") from None
            if len(value) != size:
                raise ValueError(f"PCR {bank}:{pcr} value is {len(value)} bytes, not {size}")
            out.append(value)
    return out


def policy_pcr_digest(selection: Selection, values: PcrValues,
                      previous: bytes = ZERO_DIGEST) -> bytes:
    """policyDigest after TPM2_PolicyPCR(selection) in the given PCR state."""
    pcr_digest = _h(*ordered_values(selection, values))
    return _h(previous, struct.pack(">I", TPM_CC_POLICY_PCR), to_tpml(selection).marshal(),
              pcr_digest)


def policy_authorize_digest(key_name: bytes, policy_ref: bytes = b"") -> bytes:
    """policyDigest after TPM2_PolicyAuthorize(keySign, policyRef) (it resets the digest)."""
    return _h(_h(ZERO_DIGEST, struct.pack(">I", TPM_CC_POLICY_AUTHORIZE), key_name),
              policy_ref)


def policy_auth_value_digest(previous: bytes) -> bytes:
    return _h(previous, struct.pack(">I", TPM_CC_POLICY_AUTH_VALUE))


def policy_nv_digest(previous: bytes, nv_name: bytes, operand_b: bytes, offset: int,
                     operation: int) -> bytes:
    """policyDigest after TPM2_PolicyNV on the index named ``nv_name``."""
    args = _h(operand_b, struct.pack(">HH", offset, operation))
    return _h(previous, struct.pack(">I", TPM_CC_POLICY_NV), args, nv_name)


def version_operand(version: int) -> bytes:
    """A policy version as PolicyNV's operandB: the counter's own UINT64 encoding."""
    if not 0 <= version < 1 << (8 * COUNTER_SIZE):
        raise ValueError(f"a policy version is 0 to 2^64-1, not {version}")
    return version.to_bytes(COUNTER_SIZE, "big")


def revocable_policy_digest(selection: Selection, values: PcrValues, version: int,
                            index: int = REVOCATION_INDEX) -> bytes:
    """The approved policy of a revocable signature: PolicyPCR(values), then PolicyNV
    (counter at ``index`` ≤ ``version``)."""
    return policy_nv_digest(policy_pcr_digest(selection, values), counter_name(index),
                            version_operand(version), 0, TPM_EO_UNSIGNED_LE)


# -- the approval key as the TPM sees it ---------------------------------------------------

def approval_public(key: ApprovalPublicKey) -> TPM2B_PUBLIC:
    """The public area we LoadExternal for TPM2_VerifySignature. Built field by field (not
    with a library default) because its Name is baked into sealed objects' policies."""
    attributes = TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.USERWITHAUTH
    null_sym = TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("approval keys are ECC NIST P-256 or RSA")
        numbers = key.public_numbers()
        public = TPMT_PUBLIC(
            type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256, objectAttributes=attributes,
            parameters=TPMU_PUBLIC_PARMS(eccDetail=TPMS_ECC_PARMS(
                symmetric=null_sym, scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL),
                curveID=TPM2_ECC.NIST_P256, kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL))),
            unique=TPMU_PUBLIC_ID(ecc=TPMS_ECC_POINT(x=numbers.x.to_bytes(32, "big"),
                                                     y=numbers.y.to_bytes(32, "big"))))
    else:
        rsa_numbers = key.public_numbers()
        public = TPMT_PUBLIC(
            type=TPM2_ALG.RSA, nameAlg=TPM2_ALG.SHA256, objectAttributes=attributes,
            parameters=TPMU_PUBLIC_PARMS(rsaDetail=TPMS_RSA_PARMS(
                symmetric=null_sym, scheme=TPMT_RSA_SCHEME(scheme=TPM2_ALG.NULL),
                keyBits=key.key_size,
                exponent=0 if rsa_numbers.e == 65537 else rsa_numbers.e)),
            unique=TPMU_PUBLIC_ID(rsa=rsa_numbers.n.to_bytes(key.key_size // 8, "big")))
    return TPM2B_PUBLIC(publicArea=public)


def approval_key_name(key: ApprovalPublicKey) -> bytes:
    return bytes(approval_public(key).get_name())


def public_key_pem(key: ApprovalPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key_pem(pem: str) -> ApprovalPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise SealedFormatError("approval key is neither ECC nor RSA")
    return key


# -- policies ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PcrPolicy:
    """PolicyPCR over ``selection``; ``values`` given (predicted) or ``None``: read from the
    vTPM at seal time (``current``)."""

    selection: Selection
    values: PcrValues | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "selection", as_selection(self.selection))
        if self.values is not None:
            ordered_values(self.selection, self.values)   # complete and well-sized


@dataclass(frozen=True)
class AuthorizedPolicy:
    """PolicyAuthorize(approval key, empty policyRef): any PCR policy the key signs.
    ``revocable``: policyRef :data:`REVOCABLE_REF` instead, and only signatures that also
    check the vTPM's revocation counter (``sign_policy(..., version=V)``) open it."""

    approval_public_key: ApprovalPublicKey
    revocable: bool = False

    @property
    def policy_ref(self) -> bytes:
        return REVOCABLE_REF if self.revocable else b""


SealPolicy = PcrPolicy | AuthorizedPolicy


@dataclass(frozen=True)
class SignedPolicy:
    """An approved policy digest and the approval key's signature over
    ``H(approvedPolicy ‖ policyRef)``, like systemd-measure's ``--json`` output. ``values``
    are kept so that a refusal can name the PCRs that differ.

    Revocable (``version`` and ``revocation_index`` set, policyRef :data:`REVOCABLE_REF`):
    the approved policy is PolicyPCR then PolicyNV(counter at ``revocation_index`` ≤
    ``version``). In the JSON these are an optional ``"revocation"`` member, so the
    document keeps version 1 and a non-revocable one is written exactly as before."""

    selection: Selection
    values: PcrValues
    policy_digest: bytes
    key_name: bytes
    signature: bytes            # marshalled TPMT_SIGNATURE
    policy_ref: bytes = field(default=b"")
    revocation_index: int | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        if (self.revocation_index is None) != (self.version is None):
            raise ValueError("a revocable signed policy names both its NV index and version")
        if self.version is not None:
            version_operand(self.version)

    @property
    def revocable(self) -> bool:
        return self.version is not None

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "version": SIGNED_POLICY_VERSION, "kind": "signed-pcr-policy",
            "selection": format_selection(self.selection),
            "values": values_to_json(self.values),
            "policy_digest": self.policy_digest.hex(), "policy_ref": self.policy_ref.hex(),
            "key_name": self.key_name.hex(), "signature": self.signature.hex(),
        }
        if self.revocation_index is not None:
            doc["revocation"] = {"nv_index": f"{self.revocation_index:#010x}",
                                 "version": self.version}
        return json.dumps(doc, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> SignedPolicy:
        doc = load_versioned(text, "signed-pcr-policy", SIGNED_POLICY_VERSION)
        try:
            index = version = None
            if "revocation" in doc:
                index = int(doc["revocation"]["nv_index"], 16)
                version = doc["revocation"]["version"]
                if not isinstance(version, int) or isinstance(version, bool):
                    raise ValueError(f"revocation version {version!r} is not an integer")
            return cls(parse_selection(doc["selection"]), values_from_json(doc["values"]),
                       bytes.fromhex(doc["policy_digest"]), bytes.fromhex(doc["key_name"]),
                       bytes.fromhex(doc["signature"]), bytes.fromhex(doc["policy_ref"]),
                       index, version)
        except (KeyError, TypeError, ValueError) as exc:
            raise SealedFormatError(f"bad signed policy: {exc}") from None


def sign_policy(approval_private_key: ApprovalPrivateKey, selection: Selection | str,
                values: PcrValues, *, version: int | None = None,
                revocation_index: int = REVOCATION_INDEX) -> SignedPolicy:
    """Approve the PCR state ``values`` for objects sealed to
    ``AuthorizedPolicy(approval_private_key.public_key())``; with ``version``, for objects
    sealed to ``AuthorizedPolicy(..., revocable=True)`` while the vTPM's revocation counter
    is at most ``version``."""
    selection = as_selection(selection)
    if version is None:
        digest, policy_ref = policy_pcr_digest(selection, values), b""
    else:
        digest = revocable_policy_digest(selection, values, version, revocation_index)
        policy_ref = REVOCABLE_REF
    a_hash = _h(digest, policy_ref)
    if isinstance(approval_private_key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(
            approval_private_key.sign(a_hash, ec.ECDSA(Prehashed(hashes.SHA256()))))
        signature = TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA, signature=TPMU_SIGNATURE(
            ecdsa=TPMS_SIGNATURE_ECC(hash=TPM2_ALG.SHA256, signatureR=r.to_bytes(32, "big"),
                                     signatureS=s.to_bytes(32, "big"))))
    else:
        raw = approval_private_key.sign(a_hash, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        signature = TPMT_SIGNATURE(sigAlg=TPM2_ALG.RSASSA, signature=TPMU_SIGNATURE(
            rsassa=TPMS_SIGNATURE_RSA(hash=TPM2_ALG.SHA256, sig=raw)))
    return SignedPolicy(selection, {b: dict(v) for b, v in values.items()}, digest,
                        approval_key_name(approval_private_key.public_key()),
                        bytes(signature.marshal()), policy_ref,
                        None if version is None else revocation_index, version)


# -- JSON helpers shared with the blob ----------------------------------------------------

def values_to_json(values: PcrValues) -> dict[str, dict[str, str]]:
    return {bank: {str(pcr): value.hex() for pcr, value in sorted(pcrs.items())}
            for bank, pcrs in values.items()}


def values_from_json(doc: Any) -> PcrValues:
    return {bank: {int(pcr): bytes.fromhex(value) for pcr, value in pcrs.items()}
            for bank, pcrs in doc.items()}


def load_versioned(text: str | bytes, kind: str, version: int) -> dict[str, Any]:
    """A sealing document (blob, signed policy, import blob) of exactly this kind and
    version; anything else is refused with SealedFormatError, never misread."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SealedFormatError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise SealedFormatError(f"not a {kind} document")
    if doc.get("version") != version:
        raise SealedFormatError(f"{kind} version {doc.get('version')!r}; we read {version}")
    return doc
