"""AK enrollment, quotes and deep quotes on real vTPMs of each engine (builtin, and swtpm
processes), with one swtpm as the host TPM, checked against tpm2-pytss, tpm2-tools and
openssl."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tpm2_pytss.utils
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SU
from tpm2_pytss.internal.crypto import kdfe as pytss_kdfe
from tpm2_pytss.types import TPM2B_NAME, TPM2B_PUBLIC, TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

from domS0.harness import free_port
from measure.evidence import encode_pcrs_file
from tests.conftest import ENGINES, require_tool
from tpm_emulator.crypto import HASHES
from vtpm_manager.attestation import (
    AK_HANDLES,
    ActivationFailed,
    Credential,
    CredentialFormatError,
    DeepQuote,
    DeepQuoteMismatch,
    Enrollment,
    EnrollmentError,
    QuoteMismatch,
    activate_credential,
    deep_quote,
    enroll_ak,
    host_ak_public,
    make_credential,
    object_name,
    parse_selection,
    quote,
    verify_deep_quote,
    verify_quote,
)
from vtpm_manager.attestation.credential import kdfe, parse_public, wrap_credential
from vtpm_manager.attestation.deep import qualifying_data
from vtpm_manager.ca import OID_KP_AIK_CERTIFICATE, VtpmCA, VtpmIdentity
from vtpm_manager.engine import Engine
from vtpm_manager.engines import make_engine
from vtpm_manager.kek import KeyEncryptionKey
from vtpm_manager.manufacture import (
    Execute,
    ecc_p256_ek_template,
    esapi_over,
    manufacture,
    rsa2048_ek_template,
)

HOST = "doms0.example.net"
IDENTITY = VtpmIdentity(uuid="5b0c6a52-3f7e-4b7a-9c1e-2d4f6a8b0c1d", name="guest9", host=HOST)
POLICY_DIGEST = hashlib.sha256(b"sHype policy v1").digest()
TOOLS_HINT = "apt-get install tpm2-tools"


# -- fixtures: real vTPMs on each engine, a swtpm process as host TPM ----------------------


@pytest.fixture
def ca(tmp_path: Path) -> VtpmCA:
    return VtpmCA.open(tmp_path / "state", KeyEncryptionKey(b"\x42" * 32, origin="test"), HOST)


@pytest.fixture
def vtpm(tmp_path: Path, ca: VtpmCA, engine: str) -> Iterator[Engine]:
    """A manufactured vTPM on ``engine``, power-cycled and started as a guest would."""
    tpm = make_engine(engine, tmp_path / "vtpm")
    tpm.start(None)
    try:
        manufacture(tpm.execute, ca, IDENTITY)
        tpm.power_cycle(delete_volatile=True)
        with esapi_over(tpm.execute) as esapi:
            esapi.startup(TPM2_SU.CLEAR)
        yield tpm
    finally:
        tpm.stop()


@pytest.fixture(scope="module", params=ENGINES)
def enrolled_ecc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Engine, VtpmCA, Enrollment]]:
    """One enrolled vTPM per engine shared by the read-only tests (enrollment costs ~a
    second)."""
    if request.param == "swtpm":
        require_tool("swtpm")
    base = tmp_path_factory.mktemp("enrolled")
    ca = VtpmCA.open(base / "state", KeyEncryptionKey(b"\x17" * 32, origin="test"), HOST)
    engine = make_engine(request.param, base / "vtpm")
    engine.start(None)
    try:
        manufacture(engine.execute, ca, IDENTITY)
        yield engine, ca, enroll_ak(engine.execute, ca, IDENTITY, "ecc")
    finally:
        engine.stop()


@pytest.fixture
def host_tcti(tmp_path: Path) -> Iterator[TCTILdr]:
    """A swtpm process on TCP standing in for the host's TPM, through tpm2-tss's swtpm TCTI."""
    binary = require_tool("swtpm")
    port = free_port(span=2)
    state = tmp_path / "host-tpm"
    state.mkdir()
    process = subprocess.Popen(
        [binary, "socket", "--tpm2", "--tpmstate", f"dir={state}",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tcti = None
        deadline = time.monotonic() + 30     # a busy CI machine starts swtpm slowly
        while tcti is None and time.monotonic() < deadline:
            try:
                tcti = TCTILdr("swtpm", f"host=127.0.0.1,port={port}")
            except Exception:
                time.sleep(0.05)
        assert tcti is not None, "host swtpm did not come up"
        yield tcti
        tcti.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def extend(execute: Execute, pcr: int, data: bytes) -> None:
    with esapi_over(execute) as esapi:
        esapi.pcr_extend(getattr(ESYS_TR, f"PCR{pcr}"), TPML_DIGEST_VALUES([
            TPMT_HA(hashAlg=TPM2_ALG.SHA256,
                    digest=TPMU_HA(sha256=hashlib.sha256(data).digest()))]))


def ek_public_of(execute: Execute, template: TPM2B_PUBLIC) -> bytes:
    with esapi_over(execute) as esapi:
        handle, public, *_ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        esapi.flush_context(handle)
    return bytes(public.marshal())


def foreign_ecc_ek() -> bytes:
    """An EK-shaped public key no vTPM here holds."""
    template = ecc_p256_ek_template()
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    template.publicArea.unique.ecc.x = numbers.x.to_bytes(32, "big")
    template.publicArea.unique.ecc.y = numbers.y.to_bytes(32, "big")
    return bytes(template.marshal())


# -- the software MakeCredential against other implementations ---------------------------


def test_kdfe_equals_tpm2_pytss() -> None:
    z, u, v = secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(32)
    for bits in (256, 384, 520):
        assert kdfe(HASHES[TPM2_ALG.SHA256], z, b"IDENTITY\x00", u, v, bits) == pytss_kdfe(
            TPM2_ALG.SHA256, z, b"IDENTITY\x00", u, v, bits)


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_credential_is_byte_identical_to_tpm2_pytss_for_the_same_seed(
        enrolled_ecc: tuple[Engine, VtpmCA, Enrollment], kind: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine, _, enrollment = enrolled_ecc
    ek = (enrollment.ek_public if kind == "ecc"
          else ek_public_of(engine.execute, rsa2048_ek_template()))
    seed, secret, name = secrets.token_bytes(32), secrets.token_bytes(32), enrollment.ak.name
    monkeypatch.setattr(tpm2_pytss.utils, "_generate_seed",
                        lambda public, label: (seed, b"protected-seed"))
    theirs, _ = tpm2_pytss.utils.make_credential(
        TPM2B_PUBLIC.unmarshal(ek)[0], secret, TPM2B_NAME(name))
    assert wrap_credential(parse_public(ek), seed, secret, name) == bytes(theirs)


def test_credential_file_format_round_trips_and_rejects_garbage() -> None:
    credential = Credential(b"\x00\x20" + bytes(32) + b"abc", b"seed")
    data = credential.to_tpm2_tools()
    assert data[:8] == bytes.fromhex("badcc0de00000001")
    assert data == tpm2_pytss.utils.credential_to_tools(credential.id_object,
                                                        credential.encrypted_secret)
    assert Credential.from_tpm2_tools(data) == credential
    for bad in (data[:6], b"\xba\xdc\xc0\xdf" + data[4:], data[:4] + b"\0\0\0\2" + data[8:],
                data[:-1], data + b"\0"):
        with pytest.raises(CredentialFormatError):
            Credential.from_tpm2_tools(bad)


# -- enrollment --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ecc", "rsa"])
def test_enrolled_ak_is_persistent_and_certified_by_the_vtpm_ca(
        vtpm: Engine, ca: VtpmCA, alg: str, tmp_path: Path) -> None:
    enrollment = enroll_ak(vtpm.execute, ca, IDENTITY, alg)
    ak = enrollment.ak
    assert ak.handle == AK_HANDLES[alg] and ak.name == object_name(ak.public)
    with esapi_over(vtpm.execute) as esapi:
        persistent = esapi.tr_from_tpmpublic(ak.handle)
        assert bytes(esapi.tr_get_name(persistent)) == ak.name
    # openssl, as a relying party would, against the CA certificate alone.
    require_tool("openssl")
    (tmp_path / "ca.pem").write_bytes(ca.certificate_pem())
    (tmp_path / "ak.crt").write_bytes(enrollment.certificate_pem)
    result = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"),
                             str(tmp_path / "ak.crt")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    cert = enrollment.certificate
    assert cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
    ) == enrollment.ak_public_pem
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        OID_KP_AIK_CERTIFICATE]
    assert IDENTITY.uuid in cert.subject.rfc4514_string()


def test_enrollment_refuses_a_vtpm_manufactured_by_another_ca(
        vtpm: Engine, tmp_path: Path) -> None:
    other = VtpmCA.open(tmp_path / "other", KeyEncryptionKey(b"\x01" * 32, origin="t"), HOST)
    with pytest.raises(EnrollmentError, match="not issued by this vTPM CA"):
        enroll_ak(vtpm.execute, other, IDENTITY)


def test_a_failed_challenge_issues_no_certificate(
        vtpm: Engine, ca: VtpmCA, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the credential is not for this EK (here: a CA bug wraps it to a foreign EK),
    activation fails and the CA is never asked for a certificate."""
    import vtpm_manager.attestation.enroll as enroll

    real = enroll.make_credential
    monkeypatch.setattr(enroll, "make_credential",
                        lambda ek, secret, name: real(foreign_ecc_ek(), secret, name))
    issued: list[object] = []
    monkeypatch.setattr(ca, "issue_ak_certificate", lambda *a, **k: issued.append(a))
    with pytest.raises(ActivationFailed):
        enroll_ak(vtpm.execute, ca, IDENTITY)
    assert issued == []


def test_tpm2_tools_credential_file_activates_on_the_vtpm(
        enrolled_ecc: tuple[Engine, VtpmCA, Enrollment], tmp_path: Path) -> None:
    """tpm2_makecredential -T none (no TPM) writes the file; our parser and the vTPM
    accept it: same format, same construction."""
    tool = require_tool("tpm2_makecredential")
    engine, _, enrollment = enrolled_ecc
    secret = secrets.token_bytes(32)
    (tmp_path / "ek.pub").write_bytes(enrollment.ek_public)
    (tmp_path / "secret").write_bytes(secret)
    result = subprocess.run(
        [tool, "-T", "none", "-u", str(tmp_path / "ek.pub"), "-s", str(tmp_path / "secret"),
         "-n", enrollment.ak.name.hex(), "-o", str(tmp_path / "cred")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    credential = Credential.from_tpm2_tools((tmp_path / "cred").read_bytes())
    assert activate_credential(engine.execute, enrollment.ak, credential) == secret


def test_software_credential_activates_and_other_eks_or_names_fail(
        enrolled_ecc: tuple[Engine, VtpmCA, Enrollment]) -> None:
    engine, _, enrollment = enrolled_ecc
    secret = secrets.token_bytes(32)
    ours = make_credential(enrollment.ek_public, secret, enrollment.ak.name)
    assert activate_credential(engine.execute, enrollment.ak, ours) == secret
    # The file form survives the round trip and still activates.
    again = Credential.from_tpm2_tools(ours.to_tpm2_tools())
    assert activate_credential(engine.execute, enrollment.ak, again) == secret
    # tpm2-pytss's make_credential output activates too.
    blob, enc = tpm2_pytss.utils.make_credential(
        TPM2B_PUBLIC.unmarshal(enrollment.ek_public)[0], secret,
        TPM2B_NAME(enrollment.ak.name))
    assert activate_credential(engine.execute, enrollment.ak,
                               Credential(bytes(blob), bytes(enc))) == secret

    for wrong in (make_credential(foreign_ecc_ek(), secret, enrollment.ak.name),
                  make_credential(enrollment.ek_public, secret,
                                  b"\x00\x0b" + hashlib.sha256(b"another AK").digest())):
        with pytest.raises(ActivationFailed, match="refused the credential") as info:
            activate_credential(engine.execute, enrollment.ak, wrong)
        assert info.value.rc


# -- quotes ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ecc", "rsa"])
def test_quote_verifies_with_cryptography_and_tpm2_checkquote(
        vtpm: Engine, ca: VtpmCA, alg: str, tmp_path: Path) -> None:
    checkquote = require_tool("tpm2_checkquote")
    enrollment = enroll_ak(vtpm.execute, ca, IDENTITY, alg)
    extend(vtpm.execute, 4, b"kernel")
    extend(vtpm.execute, 5, b"initrd")
    nonce = secrets.token_bytes(20)
    result = quote(vtpm.execute, enrollment.ak, nonce, "sha256:0-23")
    assert len(result.pcrs) == 24 and result.pcr_values()["sha256"][0] == bytes(32)
    assert result.reset_count >= 0 and result.clock > 0 and result.safe
    info = verify_quote(enrollment.ak.public, result.attest, result.signature, nonce,
                        result.pcrs)
    assert info.extra_data == nonce

    pcrs = encode_pcrs_file(result.selection, result.pcr_values())
    files = {"ak.pem": enrollment.ak_public_pem, "msg": result.attest,
             "sig": result.signature, "pcrs": pcrs}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    args = [checkquote, "-u", str(tmp_path / "ak.pem"), "-m", str(tmp_path / "msg"),
            "-s", str(tmp_path / "sig"), "-f", str(tmp_path / "pcrs")]
    ok = subprocess.run([*args, "-q", nonce.hex()], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([*args, "-q", secrets.token_bytes(20).hex()], capture_output=True,
                         text=True)
    assert bad.returncode != 0


def test_quote_over_two_banks_and_more_than_eight_pcrs(
        enrolled_ecc: tuple[Engine, VtpmCA, Enrollment], tmp_path: Path) -> None:
    engine, _, enrollment = enrolled_ecc
    nonce = secrets.token_bytes(16)
    result = quote(engine.execute, enrollment.ak, nonce, "sha1,sha256:0,4,5+sha384:0-11")
    assert [(b, p) for b, p, _ in result.pcrs][:6] == [
        ("sha1", 0), ("sha1", 4), ("sha1", 5), ("sha256", 0), ("sha256", 4), ("sha256", 5)]
    assert [len(v) for b, _, v in result.pcrs if b == "sha384"] == [48] * 12
    verify_quote(enrollment.ak.public, result.attest, result.signature, nonce, result.pcrs)
    checkquote = require_tool("tpm2_checkquote")
    pcrs = encode_pcrs_file(result.selection, result.pcr_values())
    for name, data in {"ak.pub": enrollment.ak.public, "msg": result.attest,
                       "sig": result.signature, "pcrs": pcrs}.items():
        (tmp_path / name).write_bytes(data)
    run = subprocess.run([checkquote, "-u", str(tmp_path / "ak.pub"), "-m",
                          str(tmp_path / "msg"), "-s", str(tmp_path / "sig"), "-f",
                          str(tmp_path / "pcrs"), "-q", nonce.hex()],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_quote_verification_names_what_is_wrong(
        enrolled_ecc: tuple[Engine, VtpmCA, Enrollment]) -> None:
    engine, _, enrollment = enrolled_ecc
    nonce = secrets.token_bytes(16)
    result = quote(engine.execute, enrollment.ak, nonce, "sha256:0-7")
    ak = enrollment.ak.public
    with pytest.raises(QuoteMismatch, match="nonce"):
        verify_quote(ak, result.attest, result.signature, b"other", result.pcrs)
    with pytest.raises(QuoteMismatch, match="signature"):
        verify_quote(ak, result.attest[:-1] + bytes([result.attest[-1] ^ 1]),
                     result.signature, nonce)
    edited = list(result.pcrs)
    edited[3] = (edited[3][0], edited[3][1], b"\x01" * 32)
    with pytest.raises(QuoteMismatch, match="pcrDigest"):
        verify_quote(ak, result.attest, result.signature, nonce, edited)
    with pytest.raises(QuoteMismatch, match="selection"):
        verify_quote(ak, result.attest, result.signature, nonce, result.pcrs[:-1])


def test_quote_reloads_the_blob_when_the_guest_evicted_the_handle(
        vtpm: Engine, ca: VtpmCA) -> None:
    enrollment = enroll_ak(vtpm.execute, ca, IDENTITY)
    with esapi_over(vtpm.execute) as esapi:
        handle = esapi.tr_from_tpmpublic(enrollment.ak.handle)
        esapi.evict_control(ESYS_TR.OWNER, handle, enrollment.ak.handle)
    nonce = secrets.token_bytes(8)
    result = quote(vtpm.execute, enrollment.ak, nonce, "sha256:0")
    verify_quote(enrollment.ak.public, result.attest, result.signature, nonce, result.pcrs)


def test_selection_syntax() -> None:
    assert parse_selection("sha256:0-2,7") == (("sha256", (0, 1, 2, 7)),)
    assert parse_selection("sha1,sha256:5,4") == (("sha1", (4, 5)), ("sha256", (4, 5)))
    for bad in ("sha256", "md5:0", "sha256:24", "sha256:3-1", "sha256:0+sha256:1", ""):
        with pytest.raises(ValueError):
            parse_selection(bad)


# -- deep quote --------------------------------------------------------------------------


def test_deep_quote_binds_the_vtpm_quote_and_fails_when_any_field_changes(
        enrolled_ecc: tuple[Engine, VtpmCA, Enrollment], host_tcti: TCTILdr) -> None:
    engine, _, enrollment = enrolled_ecc
    vtpm_quote = quote(engine.execute, enrollment.ak, secrets.token_bytes(16), "sha256:0-7")
    host_ak = host_ak_public(host_tcti)
    assert host_ak == host_ak_public(host_tcti)  # deterministic: no storage needed
    deep = deep_quote(host_tcti, vtpm_quote.attest, IDENTITY.uuid, enrollment.ek_name,
                      POLICY_DIGEST)
    encoded = deep.encode()
    bound = (vtpm_quote.attest, IDENTITY.uuid, enrollment.ek_name, POLICY_DIGEST)
    info = verify_deep_quote(encoded, host_ak, *bound)
    assert info.selection == (("sha256", (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)),)

    changed = [
        (vtpm_quote.attest[:-1] + bytes([vtpm_quote.attest[-1] ^ 1]), *bound[1:]),
        (bound[0], "5b0c6a52-3f7e-4b7a-9c1e-2d4f6a8b0c1e", *bound[2:]),
        (*bound[:2], enrollment.ek_name[:-1] + b"\x00", bound[3]),
        (*bound[:3], hashlib.sha256(b"another policy").digest()),
    ]
    for fields in changed:
        with pytest.raises(DeepQuoteMismatch, match="does not bind"):
            verify_deep_quote(encoded, host_ak, *fields)
    with pytest.raises(DeepQuoteMismatch, match="another host AK"):
        verify_deep_quote(encoded, foreign_ecc_ek(), *bound)
    with pytest.raises(DeepQuoteMismatch):
        verify_deep_quote(encoded[:-1], host_ak, *bound)
    with pytest.raises(DeepQuoteMismatch, match="version"):
        verify_deep_quote(encoded[:8] + b"\x00\x02" + encoded[10:], host_ak, *bound)
    # A host PCR value changed in transit no longer hashes to the signed digest.
    _, attest, signature, _, pcrs = DeepQuote.decode(encoded)
    with pytest.raises(QuoteMismatch, match="pcrDigest"):
        verify_quote(host_ak, attest, signature, qualifying_data(*bound),
                     [(b, p, b"\x07" * len(v)) for b, p, v in pcrs])
