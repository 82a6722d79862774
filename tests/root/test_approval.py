"""Approval files: signed by the approval key, versioned, refused when altered."""

from __future__ import annotations

import json

import pytest

from vtpm_manager.root.approval import (
    Approval,
    ApprovalInvalid,
    ApprovalKey,
    public_pem_of,
    sign_approval,
)
from vtpm_manager.root.policy import PcrSelection, policy_pcr

from .conftest import private_pem

SELECTION = PcrSelection.parse("sha256:0,7,15")
VALUES = {label: bytes([i]) * 32 for i, label in enumerate(SELECTION.labels())}


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_sign_round_trip_verify(kind: str) -> None:
    pem = private_pem(kind)
    approval = sign_approval(pem, SELECTION, VALUES)
    assert approval.policy == policy_pcr(SELECTION, VALUES)
    again = Approval.from_json(approval.to_json(), "a.json")
    ApprovalKey(public_pem_of(pem)).verify(again)
    assert again.tpm_signature().sigAlg in (0x0014, 0x0018)  # RSASSA, ECDSA


def test_altered_value_or_other_key_is_refused() -> None:
    pem = private_pem("ecc")
    doc = json.loads(sign_approval(pem, SELECTION, VALUES).to_json())
    doc["pcr_values"]["sha256:7"] = "ff" * 32
    with pytest.raises(ApprovalInvalid, match="does not match its PCR values"):
        ApprovalKey(public_pem_of(pem)).verify(Approval.from_json(json.dumps(doc).encode(),
                                                                  "x.json"))
    other = ApprovalKey(public_pem_of(private_pem("ecc")))
    with pytest.raises(ApprovalInvalid, match="another approval key"):
        other.verify(sign_approval(pem, SELECTION, VALUES))


def test_forged_signature_is_refused() -> None:
    pem = private_pem("rsa")
    doc = json.loads(sign_approval(pem, SELECTION, VALUES).to_json())
    sig = bytearray.fromhex(doc["signature"]["value"])
    sig[5] ^= 1
    doc["signature"]["value"] = sig.hex()
    with pytest.raises(ApprovalInvalid, match="signature does not verify"):
        ApprovalKey(public_pem_of(pem)).verify(Approval.from_json(json.dumps(doc).encode(),
                                                                  "x.json"))


def test_other_version_is_refused_with_a_message() -> None:
    doc = json.loads(sign_approval(private_pem("ecc"), SELECTION, VALUES).to_json())
    doc["version"] = 2
    with pytest.raises(ApprovalInvalid, match="version 2 is not supported"):
        Approval.from_json(json.dumps(doc).encode(), "x.json")
