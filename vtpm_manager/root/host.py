"""A short-lived ESAPI connection to the host TPM, and the two PCR operations
everyone needs (read, extend).

Connections are opened per operation and closed at once: a swtpm socket serves one
client at a time, and DomS0 touches the host TPM only at start, on counter advances
and on approvals, so holding one open would only block other users of the TPM.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR
from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

from .base import RootRefused
from .policy import BANKS, PcrSelection


@contextmanager
def connect(tcti: str) -> Iterator[ESAPI]:
    """ESAPI on the TCTI string (``device:/dev/tpmrm0``, ``swtpm:host=…,port=…``)."""
    try:
        esapi = ESAPI(TCTILdr.parse(tcti))
    except (TSS2_Exception, RuntimeError, ValueError) as exc:
        raise RootRefused(f"cannot reach the host TPM at {tcti!r} ({exc}); check that it "
                          f"is running and that --root-tpm names it") from exc
    try:
        yield esapi
    finally:
        esapi.close()


def read_pcrs(esapi: ESAPI, selection: PcrSelection) -> dict[str, bytes]:
    """Current values, one PCR per PCR_Read (a read returns at most 8 digests)."""
    values: dict[str, bytes] = {}
    for label in selection.labels():
        _, _, digests = esapi.pcr_read(label)
        if len(digests) != 1:
            raise RootRefused(f"the host TPM has no PCR {label} (bank not allocated?)")
        values[label] = bytes(digests[0])
    return values


def extend_pcr(esapi: ESAPI, pcr: int, digest: bytes, bank: str = "sha256") -> None:
    """Extend one bank of one PCR (empty-password session: PCRs 0-15 have no auth)."""
    ha = TPMT_HA(hashAlg=BANKS[bank][0], digest=TPMU_HA(**{bank: digest}))
    esapi.pcr_extend(ESYS_TR.parse(f"PCR{pcr}"), TPML_DIGEST_VALUES([ha]))


def format_values(values: Mapping[str, bytes]) -> dict[str, str]:
    return {label: value.hex() for label, value in values.items()}


def parse_values(raw: Mapping[str, str]) -> dict[str, bytes]:
    return {label: bytes.fromhex(value) for label, value in raw.items()}
