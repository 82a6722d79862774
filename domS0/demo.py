"""The main job on embedded defaults: a DomS0, a vTPM, a measured domain, an attestation.

``doms0 demo`` starts a DomS0 in a temporary folder, creates a vTPM, measures an
embedded sample domain (kernel into PCR 4, initrd and command line into PCR 5, as
Xen's measuring domain builder did) while keeping an event log, then asks the vTPM
for a quote over those PCRs with a fresh nonce and verifies it as a remote verifier
would: the signature with the attestation key, the nonce, and the PCR digest against
a replay of the event log. Exit 0 only if every check holds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ST, TPM2_SU, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMT_HA,
    TPMT_SIG_SCHEME,
    TPMU_HA,
)

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.client.tcti import GrpcTcti
from domS0.harness import Doms0Process

TPM_GENERATED_VALUE = 0xFF544347
AK_ATTRIBUTES = (
    TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
)


@dataclass(frozen=True)
class Measurement:
    pcr: int
    what: str
    digest: bytes


def sample_domain() -> dict[str, bytes]:
    """An embedded stand-in domain: deterministic kernel, initrd and command line."""
    return {
        "kernel": b"\x7fELF" + hashlib.sha256(b"vtpm-stack sample kernel").digest() * 64,
        "initrd": b"070701" + hashlib.sha256(b"vtpm-stack sample initrd").digest() * 32,
        "cmdline": b"root=/dev/xvda1 ro console=hvc0",
    }


def measure(domain: dict[str, bytes]) -> list[Measurement]:
    return [
        Measurement(4, "kernel", hashlib.sha256(domain["kernel"]).digest()),
        Measurement(5, "initrd", hashlib.sha256(domain["initrd"]).digest()),
        Measurement(5, "cmdline", hashlib.sha256(domain["cmdline"]).digest()),
    ]


def replay(log: list[Measurement], pcrs: Sequence[int]) -> dict[int, bytes]:
    values = {pcr: bytes(32) for pcr in pcrs}
    for event in log:
        values[event.pcr] = hashlib.sha256(values[event.pcr] + event.digest).digest()
    return values


def verify_quote(attest: bytes, r: int, s: int, ak_pem: bytes, nonce: bytes,
                 expected: dict[int, bytes]) -> list[str]:
    """The verifier's checks; returns one line per check passed, raises on a failure."""
    key = serialization.load_pem_public_key(ak_pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(encode_dss_signature(r, s), attest, ec.ECDSA(hashes.SHA256()))
    info, _ = TPMS_ATTEST.unmarshal(attest)
    if info.magic != TPM_GENERATED_VALUE or info.type != TPM2_ST.ATTEST_QUOTE:
        raise ValueError("not a TPM-generated quote")
    if bytes(info.extraData) != nonce:
        raise ValueError("quote does not carry the verifier's nonce")
    digest = hashlib.sha256(b"".join(expected[p] for p in sorted(expected))).digest()
    if bytes(info.attested.quote.pcrDigest) != digest:
        raise ValueError("PCR digest in the quote does not match the event-log replay")
    return ["signature verifies with the attestation key (ECDSA P-256, SHA-256)",
            "quote is TPM-generated and carries the verifier's nonce",
            "PCR digest equals the replay of the event log"]


def run_demo(engine: str, workdir: Path) -> int:
    doms0 = Doms0Process(workdir / "state", engine=engine).start()
    try:
        with doms0.channel() as channel:
            vtpm = pb_grpc.ManagerStub(channel).CreateVtpm(
                pb.CreateVtpmRequest(name="demo-domain", engine=engine, start=True))
        print(f"DomS0 serving on {doms0.address}; vTPM {vtpm.name} ({vtpm.uuid}, "
              f"engine {engine})")
        log = measure(sample_domain())
        tcti = GrpcTcti(doms0.address, vtpm.name, doms0.token)
        with ESAPI(tcti) as esapi:
            esapi.startup(TPM2_SU.CLEAR)
            for event in log:
                esapi.pcr_extend(getattr(ESYS_TR, f"PCR{event.pcr}"), TPML_DIGEST_VALUES(
                    [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=event.digest))]))
                print(f"measured {event.what:<8} into PCR {event.pcr}: {event.digest.hex()}")
            template = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null",
                                          objectAttributes=AK_ATTRIBUTES)
            ak, ak_public, _, _, _ = esapi.create_primary(
                TPM2B_SENSITIVE_CREATE(), template, primary_handle=ESYS_TR.ENDORSEMENT)
            nonce = secrets.token_bytes(20)
            attest, signature = esapi.quote(
                ak, TPML_PCR_SELECTION.parse("sha256:4,5"), TPM2B_DATA(nonce),
                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
            esapi.flush_context(ak)
        tcti.close()
        ecdsa = signature.signature.ecdsa
        checks = verify_quote(bytes(attest), int.from_bytes(bytes(ecdsa.signatureR), "big"),
                              int.from_bytes(bytes(ecdsa.signatureS), "big"),
                              ak_public.to_pem(), nonce, replay(log, (4, 5)))
        for line in checks:
            print(f"verified: {line}")
        print("attestation OK: the domain booted what was measured")
        return 0
    finally:
        doms0.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="doms0 demo", description=__doc__)
    parser.add_argument("--engine", choices=("builtin", "swtpm"), default="swtpm",
                        help="vTPM engine (quotes need swtpm until the builtin engine "
                        "has keys)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vtpm-demo-") as tmp:
        try:
            return run_demo(args.engine, Path(tmp))
        except Exception as exc:  # the demo reports, it does not trace
            print(f"doms0 demo: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            log = Path(tmp) / "state.doms0.log"
            if log.exists() and os.environ.get("VTPM_DEMO_VERBOSE"):
                print(log.read_text(), file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
