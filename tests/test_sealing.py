"""Sealing secrets in a real vTPM (each engine): to current and predicted PCRs, to signed
policies, with auth values under dictionary-attack protection, and the TSS2 PEM file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RC, TPM2_SE, TPM2_SU
from tpm2_pytss.tsskey import TSSPrivKey
from tpm2_pytss.types import TPML_PCR_SELECTION, TPMT_SYM_DEF

from vtpm_manager.engines import make_engine
from vtpm_manager.manufacture import Execute, esapi_over
from vtpm_manager.sealing import (
    OID_SEALED_DATA,
    REVOCABLE_REF,
    REVOCATION_INDEX,
    SRK_HANDLE,
    AuthorizedPolicy,
    AuthRefused,
    LockedOut,
    NoRevocationCounter,
    PcrPolicy,
    PolicyRefused,
    SealedBlob,
    SignedPolicy,
    TpmKey,
    raise_counter,
    read_counter,
    seal,
    sign_policy,
    unseal,
)
from vtpm_manager.sealing.revocation import counter_name
from vtpm_manager.sealing.tsskey import OID_LOADABLE_KEY

SECRET = b"disk key of guest7 \x00\xff"
SELECTION = "sha256:4,8,9"


@pytest.fixture
def execute(tmp_path: Path, engine: str) -> Iterator[Execute]:
    """A started vTPM on ``engine`` (each test runs on both)."""
    tpm = make_engine(engine, tmp_path / "run")
    tpm.start(None)
    try:
        with esapi_over(tpm.execute) as esapi:
            esapi.startup(TPM2_SU.CLEAR)
        yield tpm.execute
    finally:
        tpm.stop()


def extend(execute: Execute, pcr: int, data: bytes) -> None:
    with esapi_over(execute) as esapi:
        esapi.pcr_event(ESYS_TR.PCR0 + pcr, data)


def predict(events: dict[int, list[bytes]]) -> dict[str, dict[int, bytes]]:
    """PCR values after TPM2_PCR_Event(data) for each event, from reset (all zero)."""
    values = {}
    for pcr in (4, 8, 9):
        value = bytes(32)
        for data in events.get(pcr, []):
            value = hashlib.sha256(value + hashlib.sha256(data).digest()).digest()
        values[pcr] = value
    return {"sha256": values}


def test_current_pcrs_seal_and_unseal(execute: Execute) -> None:
    extend(execute, 8, b"cmdline")
    blob = seal(execute, SECRET, PcrPolicy(SELECTION))
    again = SealedBlob.from_json(blob.to_json())
    assert unseal(execute, again) == SECRET
    extend(execute, 8, b"something else")
    with pytest.raises(PolicyRefused) as refused:
        unseal(execute, again)
    assert refused.value.differing == ("sha256:8",)
    assert refused.value.rc == 0x09D and "TPM_RC_POLICY_FAIL" in str(refused.value)


def test_predicted_values_unseal_after_the_same_boot_only(execute: Execute) -> None:
    boot = {4: [b"kernel"], 9: [b"initrd"]}
    blob = seal(execute, SECRET, PcrPolicy(SELECTION, predict(boot)))
    for pcr, events in boot.items():
        for data in events:
            extend(execute, pcr, data)
    assert unseal(execute, blob) == SECRET
    extend(execute, 9, b"initrd with one byte changed")
    with pytest.raises(PolicyRefused) as refused:
        unseal(execute, blob)
    assert refused.value.differing == ("sha256:9",)


def test_the_srk_is_created_once_and_reused(execute: Execute) -> None:
    first = seal(execute, SECRET, PcrPolicy(SELECTION))
    second = seal(execute, SECRET, PcrPolicy(SELECTION))
    assert first.key.parent == second.key.parent == SRK_HANDLE
    assert unseal(execute, first) == unseal(execute, second) == SECRET


def test_tpm2_pytss_loads_our_tss2_pem_and_unseals_it(execute: Execute) -> None:
    extend(execute, 8, b"cmdline")
    blob = seal(execute, SECRET, PcrPolicy(SELECTION))
    pem = SealedBlob.from_json(blob.to_json()).key.to_pem()
    assert pem.startswith(b"-----BEGIN TSS2 PRIVATE KEY-----\n")
    parsed = TpmKey.from_pem(pem)
    assert parsed == blob.key and parsed.type_oid == OID_LOADABLE_KEY and parsed.empty_auth
    theirs = TSSPrivKey.from_pem(pem)
    assert theirs.parent == SRK_HANDLE and theirs.empty_auth
    with esapi_over(execute) as esapi:
        handle = theirs.load(esapi)               # under the persistent SRK it names
        session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                           TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                                           TPM2_ALG.SHA256)
        esapi.policy_pcr(session, b"", TPML_PCR_SELECTION.parse(SELECTION))
        assert bytes(esapi.unseal(handle, session1=session)) == SECRET
        esapi.flush_context(session)
        esapi.pcr_event(ESYS_TR.PCR8, b"another cmdline")
        session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                           TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                                           TPM2_ALG.SHA256)
        esapi.policy_pcr(session, b"", TPML_PCR_SELECTION.parse(SELECTION))
        with pytest.raises(TSS2_Exception) as refused:
            esapi.unseal(handle, session1=session)
        assert refused.value.error == TPM2_RC.POLICY_FAIL


def test_a_pem_with_the_sealed_data_oid_is_read_too(execute: Execute) -> None:
    blob = seal(execute, SECRET, PcrPolicy(SELECTION))
    kernel_style = TpmKey(OID_SEALED_DATA, True, SRK_HANDLE, blob.public, blob.private)
    assert TpmKey.from_pem(kernel_style.to_pem()).type_oid == OID_SEALED_DATA
    doc = json.loads(blob.to_json())
    doc["tss2_pem"] = kernel_style.to_pem().decode()
    assert unseal(execute, SealedBlob.from_json(json.dumps(doc))) == SECRET


def test_authorized_policy_follows_signatures_not_pcrs(execute: Execute) -> None:
    approval = ec.generate_private_key(ec.SECP256R1())
    blob = seal(execute, SECRET, AuthorizedPolicy(approval.public_key()))
    blob = SealedBlob.from_json(blob.to_json())
    state_a = predict({})
    signed_a = SignedPolicy.from_json(sign_policy(approval, SELECTION, state_a).to_json())
    assert unseal(execute, blob, signed_policy=signed_a) == SECRET

    extend(execute, 4, b"new kernel")
    with pytest.raises(PolicyRefused) as refused:
        unseal(execute, blob, signed_policy=signed_a)
    assert refused.value.differing == ("sha256:4",)
    signed_b = sign_policy(approval, SELECTION, predict({4: [b"new kernel"]}))
    assert unseal(execute, blob, signed_policy=signed_b) == SECRET

    forged = sign_policy(ec.generate_private_key(ec.SECP256R1()), SELECTION,
                         predict({4: [b"new kernel"]}))
    with pytest.raises(PolicyRefused):
        unseal(execute, blob, signed_policy=forged)


def test_raising_the_revocation_counter_revokes_older_signed_policies(
        execute: Execute) -> None:
    approval = ec.generate_private_key(ec.SECP256R1())
    with esapi_over(execute) as esapi, pytest.raises(NoRevocationCounter):
        read_counter(esapi)
    blob = SealedBlob.from_json(seal(execute, SECRET, AuthorizedPolicy(
        approval.public_key(), revocable=True)).to_json())
    assert blob.policy == AuthorizedPolicy(approval.public_key(), revocable=True)
    with esapi_over(execute) as esapi:
        assert read_counter(esapi) == 1          # defined and incremented once, by seal
        nv = esapi.tr_from_tpmpublic(REVOCATION_INDEX)
        assert bytes(esapi.tr_get_name(nv)) == counter_name()   # the Name we sign over
    state_a = predict({})
    v1 = SignedPolicy.from_json(sign_policy(approval, SELECTION, state_a, version=1).to_json())
    assert (v1.version, v1.revocation_index, v1.policy_ref) == (1, REVOCATION_INDEX,
                                                                 REVOCABLE_REF)
    assert unseal(execute, blob, signed_policy=v1) == SECRET

    with esapi_over(execute) as esapi:
        assert raise_counter(esapi, 2) == 2
        assert raise_counter(esapi, 1) == 2      # never lowered
    with pytest.raises(PolicyRefused) as refused:
        unseal(execute, blob, signed_policy=v1)
    assert "version 1 is revoked" in str(refused.value)
    assert "counter is now 2" in str(refused.value) and refused.value.rc == 0x126
    v2 = sign_policy(approval, SELECTION, state_a, version=2)
    assert unseal(execute, blob, signed_policy=v2) == SECRET
    v3 = sign_policy(approval, SELECTION, state_a, version=3)   # versions ahead are valid
    assert unseal(execute, blob, signed_policy=v3) == SECRET

    extend(execute, 4, b"new kernel")            # a revocable policy still checks PCRs
    with pytest.raises(PolicyRefused) as refused:
        unseal(execute, blob, signed_policy=v2)
    assert refused.value.differing == ("sha256:4",)


def test_deleting_the_revocation_counter_does_not_un_revoke(execute: Execute) -> None:
    approval = ec.generate_private_key(ec.SECP256R1())
    blob = seal(execute, SECRET, AuthorizedPolicy(approval.public_key(), revocable=True))
    v3 = sign_policy(approval, SELECTION, predict({}), version=3)
    with esapi_over(execute) as esapi:
        assert raise_counter(esapi, 4) == 4
        # The owner (the guest holds owner auth) deletes the counter; the next revocable
        # seal defines it again, and a new counter starts above every earlier value.
        esapi.nv_undefine_space(esapi.tr_from_tpmpublic(REVOCATION_INDEX), ESYS_TR.OWNER)
    with pytest.raises(PolicyRefused, match="this vTPM has none"):
        unseal(execute, blob, signed_policy=v3)
    seal(execute, SECRET, AuthorizedPolicy(approval.public_key(), revocable=True))
    with esapi_over(execute) as esapi:
        assert read_counter(esapi) > 4
    with pytest.raises(PolicyRefused, match="version 3 is revoked"):
        unseal(execute, blob, signed_policy=v3)


def test_revocable_and_plain_signatures_do_not_open_each_others_objects(
        execute: Execute) -> None:
    approval = ec.generate_private_key(ec.SECP256R1())
    revocable = seal(execute, SECRET, AuthorizedPolicy(approval.public_key(), revocable=True))
    plain = seal(execute, SECRET, AuthorizedPolicy(approval.public_key()))
    state = predict({})
    plain_signature = sign_policy(approval, SELECTION, state)
    versioned = sign_policy(approval, SELECTION, state, version=1)
    assert unseal(execute, plain, signed_policy=plain_signature) == SECRET
    assert unseal(execute, revocable, signed_policy=versioned) == SECRET
    # The TPM refuses at TPM2_Unseal: the session's digest carries the other policyRef.
    with pytest.raises(PolicyRefused) as refused:
        unseal(execute, revocable, signed_policy=plain_signature)
    assert refused.value.rc == 0x09D and "the object is revocable" in str(refused.value)
    with pytest.raises(PolicyRefused) as refused:
        unseal(execute, plain, signed_policy=versioned)
    assert refused.value.rc == 0x09D and "signed policy is revocable" in str(refused.value)


def test_revocation_counter_is_refused_without_a_revocable_seal(execute: Execute) -> None:
    with esapi_over(execute) as esapi, pytest.raises(NoRevocationCounter,
                                                     match="no revocable seal"):
        raise_counter(esapi, 2)


def test_wrong_auth_values_are_refused_then_locked_out(execute: Execute) -> None:
    with esapi_over(execute) as esapi:
        esapi.dictionary_attack_parameters(3, 1000, 1000, ESYS_TR.LOCKOUT)
    blob = seal(execute, SECRET, PcrPolicy(SELECTION), auth=b"correct horse")
    assert not blob.key.empty_auth
    assert unseal(execute, blob, auth=b"correct horse") == SECRET
    for _ in range(3):
        with pytest.raises(AuthRefused):
            unseal(execute, blob, auth=b"wrong")
    with pytest.raises(LockedOut):
        unseal(execute, blob, auth=b"correct horse")


def socket_execute(port: int) -> Execute:
    """TPM commands over swtpm's data socket (raw command/response, sized by the header)."""
    import socket
    import struct

    def execute(command: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(command)
            response = b""
            while len(response) < 6 or len(response) < struct.unpack(">I", response[2:6])[0]:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                response += chunk
            return response
    return execute


def test_tpm2_unseal_opens_our_object_in_the_matching_state(tmp_path: Path) -> None:
    import subprocess

    from domS0.harness import SwtpmProcess
    from tests.conftest import require_tool
    require_tool("tpm2_unseal")
    tpm = SwtpmProcess(tmp_path / "swtpm").start()
    try:
        execute = socket_execute(tpm.port)
        extend(execute, 8, b"cmdline")
        blob = seal(execute, SECRET, PcrPolicy(SELECTION))
        (tmp_path / "seal.pub").write_bytes(blob.public)
        (tmp_path / "seal.priv").write_bytes(blob.private)
        env = {"TPM2TOOLS_TCTI": tpm.tcti, "PATH": "/usr/bin:/bin"}

        def tool(*args: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True)

        loaded = tool("tpm2_load", "-C", hex(SRK_HANDLE), "-u", "seal.pub", "-r", "seal.priv",
                      "-c", "seal.ctx")
        assert loaded.returncode == 0, loaded.stderr
        opened = tool("tpm2_unseal", "-c", "seal.ctx", "-p", f"pcr:{SELECTION}")
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout == SECRET
        extend(execute, 8, b"another cmdline")
        refused = tool("tpm2_unseal", "-c", "seal.ctx", "-p", f"pcr:{SELECTION}")
        assert refused.returncode != 0
    finally:
        tpm.stop()
