"""The vTPM CA: its sealed key, its certificate (self-signed or operator-signed), and
what the EK and platform certificates it issues carry (TCG EK Credential Profile)."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from domS0.cli.ca import main as ca_main
from tests.conftest import require_tool
from vtpm_manager import ca as ca_module
from vtpm_manager.ca import (
    CACertificateMismatch,
    CAError,
    CAKeyTampered,
    PlatformInfo,
    TpmInfo,
    VtpmCA,
    VtpmIdentity,
    tpm_specification_attributes,
)
from vtpm_manager.kek import KeyEncryptionKey

HOST = "host1.example.org"
IDENTITY = VtpmIdentity(uuid="6f1c3a52-8d0e-4a7b-9c1d-2e3f4a5b6c7d", name="vm1", host=HOST)
SWTPM_TPM = TpmInfo(manufacturer="id:00001014", model="swtpm", version="id:20191023",
                    spec_family="2.0", spec_level=0, spec_revision=164)


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey(b"\x11" * 32, origin="test")


@pytest.fixture
def ca(tmp_path: Path, kek: KeyEncryptionKey) -> VtpmCA:
    return VtpmCA.open(tmp_path / "state", kek, HOST)


def spki(key: object) -> bytes:
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def openssl_verify(ca_file: Path, leaf: x509.Certificate, tmp_path: Path,
                   untrusted: Path | None = None) -> None:
    require_tool("openssl")
    leaf_path = tmp_path / "leaf.pem"
    leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    argv = ["openssl", "verify", "-CAfile", str(ca_file)]
    if untrusted is not None:
        argv += ["-untrusted", str(untrusted)]
    result = subprocess.run([*argv, str(leaf_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


# -- the CA itself ---------------------------------------------------------------------


def test_first_open_creates_a_self_signed_ca_naming_the_host(tmp_path: Path,
                                                            ca: VtpmCA) -> None:
    folder = tmp_path / "state" / "ca"
    assert (folder / "ca.key.sealed").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    assert cert == ca.certificate
    assert cert.subject == cert.issuer
    assert HOST in cert.subject.rfc4514_string()
    assert [a.value for a in cert.subject.get_attributes_for_oid(
        NameOID.DOMAIN_COMPONENT)] == ["org", "example", "host1"]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.not_valid_after_utc == dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    cert.verify_directly_issued_by(cert)
    # The sealed file holds no plaintext key.
    assert b"PRIVATE" not in (folder / "ca.key.sealed").read_bytes()


def test_reopen_gives_the_same_ca(tmp_path: Path, kek: KeyEncryptionKey, ca: VtpmCA) -> None:
    again = VtpmCA.open(tmp_path / "state", kek, "another-host")
    assert again.certificate == ca.certificate
    leaf = again.issue_ek_certificate(ec.generate_private_key(ec.SECP256R1()).public_key(),
                                      IDENTITY, SWTPM_TPM)
    leaf.verify_directly_issued_by(ca.certificate)


def test_rsa_3072_ca(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    ca = VtpmCA.open(tmp_path / "s", kek, HOST, key_type="rsa-3072")
    public = ca.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 3072
    leaf = ca.issue_ek_certificate(rsa.generate_private_key(65537, 2048).public_key(),
                                   IDENTITY, SWTPM_TPM)
    leaf.verify_directly_issued_by(ca.certificate)


@pytest.mark.parametrize("offset", [0, 8, 9, 12, 40, -1], ids=lambda o: f"byte{o}")
def test_a_flipped_bit_in_the_sealed_key_is_refused_by_name(
        tmp_path: Path, kek: KeyEncryptionKey, ca: VtpmCA, offset: int) -> None:
    path = tmp_path / "state" / "ca" / "ca.key.sealed"
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CAKeyTampered) as refused:
        VtpmCA.open(tmp_path / "state", kek, HOST)
    assert refused.value.path == path
    assert "vTPM CA key" in str(refused.value) and str(path) in str(refused.value)


def test_a_truncated_sealed_key_is_refused(tmp_path: Path, kek: KeyEncryptionKey,
                                           ca: VtpmCA) -> None:
    path = tmp_path / "state" / "ca" / "ca.key.sealed"
    path.write_bytes(path.read_bytes()[:5])
    with pytest.raises(CAKeyTampered, match="truncated"):
        VtpmCA.open(tmp_path / "state", kek, HOST)


def test_another_kek_is_refused(tmp_path: Path, ca: VtpmCA) -> None:
    other = KeyEncryptionKey(b"\x22" * 32, origin="another DomS0")
    with pytest.raises(CAKeyTampered, match="another DomS0's key-encryption key"):
        VtpmCA.open(tmp_path / "state", other, HOST)


def test_a_certificate_without_its_key_is_refused(tmp_path: Path, kek: KeyEncryptionKey,
                                                  ca: VtpmCA) -> None:
    (tmp_path / "state" / "ca" / "ca.key.sealed").unlink()
    with pytest.raises(CAError, match=r"key .* is missing"):
        VtpmCA.open(tmp_path / "state", kek, HOST)


def test_a_replaced_ca_certificate_is_refused(tmp_path: Path, kek: KeyEncryptionKey,
                                              ca: VtpmCA) -> None:
    stranger = VtpmCA.open(tmp_path / "other", kek, HOST)
    (tmp_path / "state" / "ca" / "ca.pem").write_bytes(stranger.certificate_pem())
    with pytest.raises(CACertificateMismatch, match="another key"):
        VtpmCA.open(tmp_path / "state", kek, HOST)


def test_an_altered_self_signed_certificate_is_refused(tmp_path: Path, kek: KeyEncryptionKey,
                                                       ca: VtpmCA) -> None:
    path = tmp_path / "state" / "ca" / "ca.pem"
    der = bytearray(ca.certificate.public_bytes(serialization.Encoding.DER))
    where = der.find(b"99991231235959Z")   # notAfter, inside the signed part
    der[where + 3] ^= 0x01                 # 9999-12-31 -> 9999-12-30: still parses
    altered = x509.load_der_x509_certificate(bytes(der))
    path.write_bytes(altered.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CACertificateMismatch, match="altered"):
        VtpmCA.open(tmp_path / "state", kek, HOST)


# -- CSR, operator CA, import ------------------------------------------------------------


class OperatorCA:
    """A throwaway operator CA (RSA root) that signs our CSR as a CA certificate."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(65537, 2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Operator Root CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                         False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def sign(self, csr_pem: bytes, *, as_ca: bool = True) -> x509.Certificate:
        csr = x509.load_pem_x509_csr(csr_pem)
        assert csr.is_signature_valid
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if as_ca:
            for ext in csr.extensions:  # honour what the CSR asks for
                builder = builder.add_extension(ext.value, critical=ext.critical)
        else:
            builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                            critical=True)
        return builder.sign(self.key, hashes.SHA256())

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def test_csr_signed_by_an_operator_ca_then_imported(tmp_path: Path, kek: KeyEncryptionKey,
                                                     ca: VtpmCA) -> None:
    operator = OperatorCA()
    csr = x509.load_pem_x509_csr(ca.csr())
    assert csr.subject == ca.certificate.subject
    assert csr.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    signed = operator.sign(ca.csr())
    ca.import_certificate(signed.public_bytes(serialization.Encoding.PEM) + operator.pem())

    assert ca.certificate == signed
    assert ca.chain_pem() == operator.pem()
    reopened = VtpmCA.open(tmp_path / "state", kek, HOST)
    assert reopened.certificate == signed

    ek = reopened.issue_ek_certificate(rsa.generate_private_key(65537, 2048).public_key(),
                                       IDENTITY, SWTPM_TPM)
    aki = ek.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = signed.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert ek.issuer == signed.subject
    operator_file, ca_file = tmp_path / "operator.pem", tmp_path / "ca.pem"
    operator_file.write_bytes(operator.pem())
    ca_file.write_bytes(reopened.certificate_pem())
    openssl_verify(operator_file, ek, tmp_path, untrusted=ca_file)


def test_import_of_a_certificate_for_another_key_is_refused(ca: VtpmCA) -> None:
    operator = OperatorCA()
    stranger_key = ec.generate_private_key(ec.SECP384R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(ca.certificate.subject)
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
           .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                        False), critical=True)
           .sign(stranger_key, hashes.SHA384()))
    wrong = operator.sign(csr.public_bytes(serialization.Encoding.PEM))
    before = ca.certificate_pem()
    with pytest.raises(CACertificateMismatch, match="another key"):
        ca.import_certificate(wrong.public_bytes(serialization.Encoding.PEM))
    assert ca.certificate_pem() == before
    assert (ca.folder / "ca.pem").read_bytes() == before


def test_import_of_a_non_ca_certificate_is_refused(ca: VtpmCA) -> None:
    leaf = OperatorCA().sign(ca.csr(), as_ca=False)
    with pytest.raises(CACertificateMismatch, match=r"not a CA certificate|lacks"):
        ca.import_certificate(leaf.public_bytes(serialization.Encoding.PEM))


def test_import_of_garbage_is_refused(ca: VtpmCA) -> None:
    with pytest.raises(CACertificateMismatch):
        ca.import_certificate(b"not a certificate")


# -- what issued certificates carry --------------------------------------------------------


def test_rsa_ek_certificate_follows_the_ek_credential_profile(tmp_path: Path,
                                                             ca: VtpmCA) -> None:
    ek_key = rsa.generate_private_key(65537, 2048).public_key()
    cert = ca.issue_ek_certificate(ek_key, IDENTITY, SWTPM_TPM)
    assert cert.version == x509.Version.v3
    assert spki(cert.public_key()) == spki(ek_key)
    assert len(cert.subject) == 0                       # empty subject ...
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical                                 # ... so a critical SAN
    tpm_name, vtpm_name = san.value.get_values_for_type(x509.DirectoryName)
    tpm_attrs = {a.oid.dotted_string: a.value for a in tpm_name}
    assert tpm_attrs == {"2.23.133.2.1": "id:00001014", "2.23.133.2.2": "swtpm",
                         "2.23.133.2.3": "id:20191023"}
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:uuid:{IDENTITY.uuid}"]
    assert vtpm_name.rfc4514_string() == "CN=vm1,DC=host1,DC=example,DC=org"

    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_encipherment
    assert not usage.value.digital_signature and not usage.value.key_agreement
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [o.dotted_string for o in eku] == ["2.23.133.8.1"]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    notice = policies[0].policy_qualifiers[0]
    assert isinstance(notice, x509.UserNotice)
    assert IDENTITY.uuid in str(notice.explicit_text) and HOST in str(notice.explicit_text)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    sda = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("2.5.29.9"))
    assert sda.value.value == tpm_specification_attributes(SWTPM_TPM)
    assert cert.not_valid_after_utc == dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)

    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.certificate_pem())
    openssl_verify(ca_file, cert, tmp_path)


def test_ecc_ek_certificate_is_for_key_agreement(ca: VtpmCA) -> None:
    cert = ca.issue_ek_certificate(ec.generate_private_key(ec.SECP256R1()).public_key(),
                                   IDENTITY, SWTPM_TPM)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_agreement and not usage.key_encipherment


def test_tpm_specification_matches_swtpm_encoding() -> None:
    """Known answer: the subjectDirectoryAttributes swtpm_cert 0.7.1 writes for a
    TPM 2.0, level 0, revision 164 (read from a swtpm_setup EK certificate)."""
    assert tpm_specification_attributes(SWTPM_TPM).hex().upper() == (
        "3019301706056781050210310E300C0C03322E30020100020200A4")
    assert ca_module._der_int(0) == b"\x02\x01\x00"
    assert ca_module._der_int(128) == b"\x02\x02\x00\x80"


def test_platform_certificate_names_the_vtpm(tmp_path: Path, ca: VtpmCA) -> None:
    ek_key = rsa.generate_private_key(65537, 2048).public_key()
    cert = ca.issue_platform_certificate(ek_key, IDENTITY,
                                         PlatformInfo("ACME", "vm-model", "7"))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "vm1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [o.dotted_string for o in eku] == ["2.23.133.8.2"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    platform = {a.oid.dotted_string: a.value
                for a in san.get_values_for_type(x509.DirectoryName)[0]}
    assert platform == {"2.23.133.5.1.1": "ACME", "2.23.133.5.1.4": "vm-model",
                        "2.23.133.5.1.5": "7"}
    assert f"urn:uuid:{IDENTITY.uuid}" in san.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert spki(cert.public_key()) == spki(ek_key)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.certificate_pem())
    openssl_verify(ca_file, cert, tmp_path)


def test_serial_numbers_differ(ca: VtpmCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    serials = {ca.issue_ek_certificate(key, IDENTITY, SWTPM_TPM).serial_number
               for _ in range(5)}
    assert len(serials) == 5


def test_a_non_ascii_host_is_refused(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    with pytest.raises(CAError, match="ASCII"):
        VtpmCA.open(tmp_path / "s", kek, "hôte.example")


# -- doms0 ca ------------------------------------------------------------------------------


def test_cli_csr_import_cert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert ca_main(["ca", "csr", "--state-dir", str(state), "--host", HOST,
                    "--out", str(tmp_path / "ca.csr")]) == 0
    assert (state / "kek.dev").exists()   # the development root, as doms0 serve uses
    operator = OperatorCA()
    signed = operator.sign((tmp_path / "ca.csr").read_bytes())
    (tmp_path / "signed.pem").write_bytes(signed.public_bytes(serialization.Encoding.PEM)
                                          + operator.pem())
    capsys.readouterr()
    assert ca_main(["ca", "import", "--state-dir", str(state), str(tmp_path / "signed.pem")]
                   ) == 0
    assert "restart DomS0" in capsys.readouterr().err
    assert ca_main(["ca", "cert", "--state-dir", str(state)]) == 0
    printed = capsys.readouterr().out.encode()
    assert x509.load_pem_x509_certificate(printed) == signed
    assert ca_main(["ca", "cert", "--state-dir", str(state), "--chain"]) == 0
    assert len(x509.load_pem_x509_certificates(capsys.readouterr().out.encode())) == 2


def test_cli_refusals_are_one_line_and_exit_1(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert ca_main(["ca", "import", "--state-dir", str(state), "nothing.pem"]) == 1
    assert "no DomS0 state folder" in capsys.readouterr().err
    assert ca_main(["ca", "cert", "--state-dir", str(state), "--host", HOST]) == 0
    (tmp_path / "junk.pem").write_bytes(b"junk")
    capsys.readouterr()
    assert ca_main(["ca", "import", "--state-dir", str(state), str(tmp_path / "junk.pem")]
                   ) == 1
    err = capsys.readouterr().err
    assert err.startswith("doms0 ca: ") and err.count("\n") == 1


def test_cli_uses_the_given_kek_loader(tmp_path: Path, kek: KeyEncryptionKey,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Path] = []

    def loader(state_dir: Path) -> KeyEncryptionKey:
        seen.append(state_dir)
        return kek

    state = tmp_path / "state"
    assert ca_main(["ca", "cert", "--state-dir", str(state), "--host", HOST],
                   kek_loader=loader) == 0
    assert seen == [state] and not (state / "kek.dev").exists()
    printed = x509.load_pem_x509_certificate(capsys.readouterr().out.encode())
    assert printed == VtpmCA.open(state, kek, HOST).certificate
    # The development KEK does not open a CA sealed under the plugged-in root.
    assert ca_main(["ca", "cert", "--state-dir", str(state)]) == 1
    assert "refused" in capsys.readouterr().err
