"""A vTPM made by DomS0, on either engine, carries EK and platform certificates that
openssl accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.harness import AttachProcess
from tests.conftest import require_tool

INDICES = {"rsa-ek": "0x01c00002", "ecc-ek": "0x01c0000a", "platform": "0x01c08000"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(list(args), env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr.decode()}"
    return result


def test_ek_and_platform_certificates_verify(start_doms0, engine: str,
                                            tmp_path: Path) -> None:
    require_tool("tpm2_getrandom")
    doms0 = start_doms0(engine)
    with doms0.channel() as channel:
        from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc

        vtpm = pb_grpc.ManagerStub(channel).CreateVtpm(
            pb.CreateVtpmRequest(name="certified", start=True))
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(run(os.environ.copy(), sys.executable, "-m", "domS0.cli.doms0", "ca",
                           "cert", "--state-dir", str(doms0.state_dir)).stdout)

    front = AttachProcess(doms0, vtpm.name).start()
    try:
        check_certificates(front.tcti, ca_pem, vtpm.uuid, tmp_path)
    finally:
        front.stop()


def check_certificates(tcti: str, ca_pem: Path, uuid: str, tmp_path: Path) -> None:
    env = {**os.environ, "TPM2TOOLS_TCTI": tcti}
    run(env, "tpm2_startup", "-c")
    certificates = {}
    for label, index in INDICES.items():
        der = tmp_path / f"{label}.der"
        run(env, "tpm2_nvread", index, "-C", "o", "-o", str(der))
        pem = tmp_path / f"{label}.pem"
        run(env, "openssl", "x509", "-inform", "DER", "-in", str(der), "-out", str(pem))
        verified = run(env, "openssl", "verify", "-CAfile", str(ca_pem), str(pem))
        assert b": OK" in verified.stdout
        certificates[label] = x509.load_der_x509_certificate(der.read_bytes())

    # Each EK certificate certifies the EK the vTPM derives from the TCG template.
    for label, algorithm in (("rsa-ek", "rsa"), ("ecc-ek", "ecc")):
        ek_pem = tmp_path / f"{label}-public.pem"
        run(env, "tpm2_createek", "-G", algorithm, "-c", str(tmp_path / f"{label}.ctx"),
            "-u", str(ek_pem), "-f", "pem")
        run(env, "tpm2_flushcontext", "-t")
        public = serialization.load_pem_public_key(ek_pem.read_bytes())
        in_cert = certificates[label].public_key()
        assert public.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo) == \
            in_cert.public_bytes(serialization.Encoding.DER,
                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    # The vTPM's identity is in its certificates.
    san = certificates["rsa-ek"].extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert f"urn:uuid:{uuid}" in [str(u) for u in
                                       san.get_values_for_type(x509.UniformResourceIdentifier)]
