"""tpm2-pytss ESAPI reaches vTPMs both through our gRPC TCTI and through the swtpm one."""

from __future__ import annotations

import hashlib

from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SU
from tpm2_pytss.types import TPML_DIGEST_VALUES, TPML_PCR_SELECTION, TPMT_HA, TPMU_HA

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.client.tcti import GrpcTcti
from domS0.harness import Doms0Process


def exercise(esapi: ESAPI) -> None:
    esapi.startup(TPM2_SU.CLEAR)
    assert len(bytes(esapi.get_random(24))) == 24
    digest = hashlib.sha256(b"pytss").digest()
    esapi.pcr_extend(ESYS_TR.PCR16, TPML_DIGEST_VALUES(
        [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))]))
    _, _, values = esapi.pcr_read(TPML_PCR_SELECTION.parse("sha256:16"))
    assert bytes(values[0]) == hashlib.sha256(bytes(32) + digest).digest()


def test_esapi_over_grpc_tcti(doms0: Doms0Process, vtpm: pb.Vtpm) -> None:
    tcti = GrpcTcti(doms0.address, vtpm.name, doms0.token)
    with ESAPI(tcti) as esapi:
        exercise(esapi)
    tcti.close()


def test_esapi_over_swtpm_front_end(vtpm: pb.Vtpm, attach) -> None:
    front = attach(vtpm.name)
    with ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={front.port}")) as esapi:
        exercise(esapi)
