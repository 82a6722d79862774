"""Sealing per-domain secrets against a real DomS0 through vtpmctl, on both engines: to a
manifest's predicted PCRs before the first build, to signed policies that survive a
kernel update, unsealed by tpm2-tools inside the "domain", with auth values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from domS0.demo import SAMPLE_CMDLINE, sample_kernel, write_sample_domain
from domS0.harness import AttachProcess, Doms0Process
from tests.conftest import DomS0Factory, only_on, require_tool
from tests.integration.test_measured_launch import build, ok, vtpmctl

SECRET = b"disk key of dom1 \x00\xff\n"


def refused(result: subprocess.CompletedProcess[str], code: str, *words: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{code}:" in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def unseal(doms0: Doms0Process, name: str, blob: Path, *extra: str | Path
           ) -> subprocess.CompletedProcess[str]:
    return vtpmctl(doms0, "unseal", name, "--in", blob, *extra)


def unsealed(doms0: Doms0Process, name: str, blob: Path, out: Path, *extra: str | Path
             ) -> bytes:
    ok(unseal(doms0, name, blob, "--out", out, *extra))
    return out.read_bytes()


def setup(start_doms0: DomS0Factory, engine: str, tmp_path: Path
          ) -> tuple[Doms0Process, Path, Path]:
    doms0 = start_doms0(engine)
    kernel, initrd = write_sample_domain(tmp_path / "domain")
    (tmp_path / "secret").write_bytes(SECRET)
    ok(vtpmctl(doms0, "create", "dom1", "--engine", engine))
    return doms0, kernel, initrd


def test_manifest_sealed_secret_unseals_only_after_that_build(
        start_doms0: DomS0Factory, engine: str, tmp_path: Path) -> None:
    doms0, kernel, initrd = setup(start_doms0, engine, tmp_path)
    manifest, blob, out = tmp_path / "m.json", tmp_path / "blob.json", tmp_path / "out"
    ok(vtpmctl(doms0, "predict", "--kernel", kernel, "--initrd", initrd, "--cmdline",
               SAMPLE_CMDLINE, "--manifest-out", manifest))
    # Sealed before the domain's first build, to what the manifest predicts.
    ok(vtpmctl(doms0, "seal", "dom1", "--in", tmp_path / "secret", "--out", blob,
               "--policy", f"manifest:{manifest}"))
    refused(unseal(doms0, "dom1", blob), "FAILED_PRECONDITION", "policy refused")

    ok(build(doms0, "dom1", kernel, initrd))
    assert unsealed(doms0, "dom1", blob, out) == SECRET
    raw = subprocess.run([sys.executable, "-m", "domS0.cli.vtpmctl", "unseal", "dom1",
                          "--in", str(blob)], env=doms0.env(), capture_output=True,
                         timeout=60)
    assert raw.returncode == 0 and raw.stdout == SECRET      # raw bytes on stdout

    changed = tmp_path / "initrd-changed.img"
    data = bytearray(initrd.read_bytes())
    data[100] ^= 1
    changed.write_bytes(bytes(data))
    ok(build(doms0, "dom1", kernel, changed))
    refused(unseal(doms0, "dom1", blob), "FAILED_PRECONDITION",
            "policy refused: sha256:9 differs", "TPM_RC_POLICY_FAIL")

    ok(build(doms0, "dom1", kernel, initrd, cmdline=SAMPLE_CMDLINE + " single"))
    refused(unseal(doms0, "dom1", blob), "FAILED_PRECONDITION",
            "policy refused: sha256:8 differs", "TPM_RC_POLICY_FAIL")

    ok(build(doms0, "dom1", kernel, initrd))
    assert unsealed(doms0, "dom1", blob, out) == SECRET


# PolicyAuthorize and VerifySignature on swtpm: the revocable test below.
@only_on("builtin")
def test_authorized_secret_follows_signatures_across_a_kernel_update(
        start_doms0: DomS0Factory, engine: str, tmp_path: Path) -> None:
    doms0, kernel_a, initrd = setup(start_doms0, engine, tmp_path)
    key, pub = tmp_path / "approval.pem", tmp_path / "approval.pub.pem"
    ok(vtpmctl(doms0, "policy", "keygen", "--out", key, "--pub-out", pub))
    blob, out = tmp_path / "blob.json", tmp_path / "out"
    ok(vtpmctl(doms0, "seal", "dom1", "--in", tmp_path / "secret", "--out", blob,
               "--policy", f"authorized:{pub}"))

    manifest_a, signed_a = tmp_path / "a.json", tmp_path / "a.signed.json"
    ok(build(doms0, "dom1", kernel_a, initrd, "--manifest-out", manifest_a))
    ok(vtpmctl(doms0, "policy", "sign", "--key", key, "--manifest", manifest_a,
               "--out", signed_a))
    refused(unseal(doms0, "dom1", blob), "FAILED_PRECONDITION", "signed policy")
    assert unsealed(doms0, "dom1", blob, out, "--signed-policy", signed_a) == SECRET

    kernel_b = tmp_path / "vmlinuz-b"
    kernel_b.write_bytes(sample_kernel(payload=80 * 1024))
    manifest_b, signed_b = tmp_path / "b.json", tmp_path / "b.signed.json"
    ok(build(doms0, "dom1", kernel_b, initrd, "--manifest-out", manifest_b))
    refused(unseal(doms0, "dom1", blob, "--signed-policy", signed_a), "FAILED_PRECONDITION",
            "policy refused: sha256:9 differs")
    ok(vtpmctl(doms0, "policy", "sign", "--key", key, "--manifest", manifest_b,
               "--out", signed_b))
    assert unsealed(doms0, "dom1", blob, out, "--signed-policy", signed_b) == SECRET

    # A policy signed by another key is refused.
    other, other_pub = tmp_path / "other.pem", tmp_path / "other.pub.pem"
    forged = tmp_path / "forged.json"
    ok(vtpmctl(doms0, "policy", "keygen", "--out", other, "--pub-out", other_pub))
    ok(vtpmctl(doms0, "policy", "sign", "--key", other, "--manifest", manifest_b,
               "--out", forged))
    refused(unseal(doms0, "dom1", blob, "--signed-policy", forged), "FAILED_PRECONDITION",
            "policy refused")


def test_revoking_old_signed_policies_through_vtpmctl(
        start_doms0: DomS0Factory, engine: str, tmp_path: Path) -> None:
    doms0, kernel, initrd = setup(start_doms0, engine, tmp_path)
    key, pub = tmp_path / "approval.pem", tmp_path / "approval.pub.pem"
    ok(vtpmctl(doms0, "policy", "keygen", "--out", key, "--pub-out", pub))
    refused_locally = vtpmctl(doms0, "policy", "revoke", "dom1", "--below", "2")
    assert refused_locally.returncode == 1
    assert "no revocable seal in this vTPM" in refused_locally.stderr
    blob, out = tmp_path / "blob.json", tmp_path / "out"
    ok(vtpmctl(doms0, "seal", "dom1", "--in", tmp_path / "secret", "--out", blob,
               "--policy", f"authorized:{pub}", "--revocable"))
    assert ok(vtpmctl(doms0, "policy", "version", "dom1")).strip() == "1"

    manifest, v1, v2 = tmp_path / "m.json", tmp_path / "v1.json", tmp_path / "v2.json"
    ok(build(doms0, "dom1", kernel, initrd, "--manifest-out", manifest))
    ok(vtpmctl(doms0, "policy", "sign", "--key", key, "--manifest", manifest,
               "--version", "1", "--out", v1))
    assert unsealed(doms0, "dom1", blob, out, "--signed-policy", v1) == SECRET

    assert "revocation counter 2" in ok(vtpmctl(doms0, "policy", "revoke", "dom1",
                                                "--below", "2"))
    assert ok(vtpmctl(doms0, "policy", "version", "dom1")).strip() == "2"
    refused(unseal(doms0, "dom1", blob, "--signed-policy", v1), "FAILED_PRECONDITION",
            "policy refused", "version 1 is revoked", "counter is now 2")
    ok(vtpmctl(doms0, "policy", "sign", "--key", key, "--manifest", manifest,
               "--version", "2", "--out", v2))
    assert unsealed(doms0, "dom1", blob, out, "--signed-policy", v2) == SECRET

    # A signature without a version (empty policyRef) does not open the revocable blob.
    plain = tmp_path / "plain.json"
    ok(vtpmctl(doms0, "policy", "sign", "--key", key, "--manifest", manifest, "--out", plain))
    refused(unseal(doms0, "dom1", blob, "--signed-policy", plain), "FAILED_PRECONDITION",
            "policy refused", "the object is revocable")


# tpm2_load and tpm2_unseal of our blob on swtpm: tests/test_sealing.py.
@only_on("builtin")
def test_tpm2_unseal_inside_the_domain(
        start_doms0: DomS0Factory, engine: str, tmp_path: Path) -> None:
    require_tool("tpm2_unseal")
    doms0, kernel, initrd = setup(start_doms0, engine, tmp_path)
    manifest, blob, files = tmp_path / "m.json", tmp_path / "blob.json", tmp_path / "tpm2"
    ok(vtpmctl(doms0, "predict", "--kernel", kernel, "--initrd", initrd, "--cmdline",
               SAMPLE_CMDLINE, "--manifest-out", manifest))
    ok(vtpmctl(doms0, "seal", "dom1", "--in", tmp_path / "secret", "--out", blob,
               "--policy", f"manifest:{manifest}", "--tpm2-files", files))
    ok(build(doms0, "dom1", kernel, initrd))
    front = AttachProcess(doms0, "dom1").start()
    try:
        env = {**os.environ, "TPM2TOOLS_TCTI": front.tcti}

        def tool(*args: str) -> subprocess.CompletedProcess[bytes]:
            result = subprocess.run(args, cwd=files, env=env, capture_output=True,
                                    timeout=60)
            subprocess.run(["tpm2_flushcontext", "-t"], env=env, capture_output=True,
                           timeout=60)
            return result

        loaded = tool("tpm2_load", "-C", "0x81000001", "-u", "seal.pub", "-r", "seal.priv",
                      "-c", "seal.ctx")
        assert loaded.returncode == 0, loaded.stderr
        opened = tool("tpm2_unseal", "-c", "seal.ctx", "-p", "pcr:sha256:8,9")
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout == SECRET
        # While the domain runs, the operator's unseal borrows its lease.
        assert unsealed(doms0, "dom1", blob, tmp_path / "out") == SECRET
    finally:
        front.stop()
    assert (files / "seal.pem").read_bytes().startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")


# Wrong auth values on swtpm: tests/test_sealing.py (refused, then locked out).
@only_on("builtin")
def test_wrong_auth_value_is_permission_denied(
        start_doms0: DomS0Factory, engine: str, tmp_path: Path) -> None:
    doms0, _, _ = setup(start_doms0, engine, tmp_path)
    blob, out = tmp_path / "blob.json", tmp_path / "out"
    (tmp_path / "auth").write_bytes(b"correct horse")
    (tmp_path / "wrong").write_bytes(b"battery staple")
    ok(vtpmctl(doms0, "seal", "dom1", "--in", tmp_path / "secret", "--out", blob,
               "--policy", "current", "--auth-file", tmp_path / "auth"))
    assert unsealed(doms0, "dom1", blob, out, "--auth-file", tmp_path / "auth") == SECRET
    refused(unseal(doms0, "dom1", blob, "--auth-file", tmp_path / "wrong"),
            "PERMISSION_DENIED", "auth")
    refused(unseal(doms0, "dom1", blob), "PERMISSION_DENIED", "needs an auth value")
    assert unsealed(doms0, "dom1", blob, out, "--auth-file", tmp_path / "auth") == SECRET
    log = doms0.log()
    assert "method" in log and "Unseal" in log
    for word in ("disk key", "correct horse", "battery staple", SECRET.hex()):
        assert word not in log          # neither the secret nor an auth value is logged


def rsa_ek_certificate(folder: Path) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    for path in sorted(folder.glob("ek-*.pem")):
        if isinstance(x509.load_pem_x509_certificate(path.read_bytes()).public_key(),
                      rsa.RSAPublicKey):
            return path
    raise AssertionError(f"no RSA EK certificate in {sorted(folder.iterdir())}")


# TPM2_Import of such blobs on swtpm: tests/test_import_blob.py (both EK kinds).
@only_on("builtin")
def test_offline_import_blob_unseals_only_in_its_vtpm(
        start_doms0: DomS0Factory, engine: str, tmp_path: Path) -> None:
    doms0, kernel, initrd = setup(start_doms0, engine, tmp_path)
    ok(vtpmctl(doms0, "create", "dom2", "--engine", engine))
    certs, manifest = tmp_path / "certs", tmp_path / "m.json"
    blob, out = tmp_path / "import.json", tmp_path / "out"
    # The EK certificates are read from the vTPM's NV once it is started: boot it once
    # with another cmdline, so the manifest's PCRs are not the current ones.
    ok(build(doms0, "dom1", kernel, initrd, cmdline=SAMPLE_CMDLINE + " single"))
    ok(vtpmctl(doms0, "certs", "dom1", "--out", certs))
    ok(vtpmctl(doms0, "predict", "--kernel", kernel, "--initrd", initrd, "--cmdline",
               SAMPLE_CMDLINE, "--manifest-out", manifest))
    # The remote sealer has only the EK certificate and the manifest: no DomS0 at all.
    offline = subprocess.run(
        [sys.executable, "-m", "domS0.cli.vtpmctl", "--server", "unix:/nonexistent",
         "--token-file", "/nonexistent", "seal", "--ek", str(rsa_ek_certificate(certs)),
         "--policy", f"manifest:{manifest}", "--in", str(tmp_path / "secret"),
         "--out", str(blob)], capture_output=True, text=True, timeout=60)
    assert offline.returncode == 0, offline.stderr
    assert '"kind": "vtpm-import-blob"' in blob.read_text()

    refused(unseal(doms0, "dom1", blob), "FAILED_PRECONDITION", "policy refused")
    ok(build(doms0, "dom1", kernel, initrd))
    assert unsealed(doms0, "dom1", blob, out) == SECRET
    ok(build(doms0, "dom2", kernel, initrd))          # same PCRs, another EK
    refused(unseal(doms0, "dom2", blob), "FAILED_PRECONDITION",
            "this blob was made for another vTPM's EK")


# Dictionary-attack lockout of a sealed object on swtpm: tests/test_sealing.py.
@only_on("builtin")
def test_wrong_auth_values_lock_the_sealed_object_out(
        start_doms0: DomS0Factory, engine: str, tmp_path: Path) -> None:
    require_tool("tpm2_dictionarylockout")
    doms0, kernel, initrd = setup(start_doms0, engine, tmp_path)
    ok(build(doms0, "dom1", kernel, initrd))
    # The domain (its owner, with the lockout hierarchy's auth) sets the TPM's own DA
    # parameters: 3 tries, 100 s recovery, 100 s lockout-auth recovery.
    front = AttachProcess(doms0, "dom1").start()
    try:
        env = {**os.environ, "TPM2TOOLS_TCTI": front.tcti}
        setup_da = subprocess.run(["tpm2_dictionarylockout", "-s", "-n", "3", "-t", "100",
                                   "-l", "100"], env=env, capture_output=True, timeout=60)
        assert setup_da.returncode == 0, setup_da.stderr
    finally:
        front.stop()

    blob, out = tmp_path / "blob.json", tmp_path / "out"
    (tmp_path / "auth").write_bytes(b"correct horse")
    (tmp_path / "wrong").write_bytes(b"battery staple")
    ok(vtpmctl(doms0, "seal", "dom1", "--in", tmp_path / "secret", "--out", blob,
               "--policy", "current", "--auth-file", tmp_path / "auth"))
    assert unsealed(doms0, "dom1", blob, out, "--auth-file", tmp_path / "auth") == SECRET
    for _ in range(3):
        refused(unseal(doms0, "dom1", blob, "--auth-file", tmp_path / "wrong"),
                "PERMISSION_DENIED", "auth refused")
    refused(unseal(doms0, "dom1", blob, "--auth-file", tmp_path / "auth"),
            "FAILED_PRECONDITION", "locked out")
