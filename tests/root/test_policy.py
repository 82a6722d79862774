"""Offline policy digests agree with the TPM's own (trial sessions on a real swtpm)."""

from __future__ import annotations

import hashlib

import pytest
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE

from vtpm_manager.root.host import connect, read_pcrs
from vtpm_manager.root.policy import (
    PcrSelection,
    SelectionError,
    approval_hash,
    differing,
    extend,
    policy_authorize,
    policy_pcr,
)
from vtpm_manager.root.session import flush

from .conftest import HostTpm


def test_selection_parses_sorts_and_merges() -> None:
    selection = PcrSelection.parse("sha256:7,0,3+sha1:1")
    assert str(selection) == "sha1:1+sha256:0,3,7"
    assert selection.labels() == ["sha1:1", "sha256:0", "sha256:3", "sha256:7"]
    assert str(selection.with_pcr("sha256", 15)) == "sha1:1+sha256:0,3,7,15"
    # TPML_PCR_SELECTION: count, then hash alg, sizeofSelect, bitmap per bank
    assert PcrSelection.parse("sha256:0,7,15").marshal() == bytes.fromhex(
        "00000001" "000b" "03" "818000")


@pytest.mark.parametrize("text", ["", "sha256", "md5:0", "sha256:24", "sha256:x", "sha256:"])
def test_malformed_selection_is_refused(text: str) -> None:
    with pytest.raises(SelectionError):
        PcrSelection.parse(text)


def test_policy_pcr_matches_a_trial_session(host_tpm: HostTpm) -> None:
    host_tpm.extend(7)
    selection = PcrSelection.parse("sha256:0,7,15+sha1:2")
    with connect(host_tpm.tcti) as esapi:
        values = read_pcrs(esapi, selection)
        trial = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, None,
                                         TPM2_ALG.SHA256)
        try:
            esapi.policy_pcr(trial, b"", str(selection))
            assert bytes(esapi.policy_get_digest(trial)) == policy_pcr(selection, values)
        finally:
            flush(esapi, trial)


def test_policy_authorize_and_approval_hash_follow_part_3() -> None:
    name = bytes.fromhex("000b") + hashlib.sha256(b"key").digest()
    first = hashlib.sha256(bytes(32) + bytes.fromhex("0000016a") + name).digest()
    assert policy_authorize(name) == hashlib.sha256(first).digest()
    assert approval_hash(b"\x01" * 32) == hashlib.sha256(b"\x01" * 32).digest()


def test_extend_and_differing() -> None:
    after = extend(bytes(32), b"\x02" * 32)
    assert after == hashlib.sha256(bytes(32) + b"\x02" * 32).digest()
    selection = PcrSelection.parse("sha256:0,7")
    assert differing(selection, {"sha256:0": b"a", "sha256:7": b"b"},
                     {"sha256:0": b"a", "sha256:7": b"c"}) == ["sha256:7"]
