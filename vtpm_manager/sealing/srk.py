"""The storage root key: the TCG standard ECC NIST P-256 SRK template (TCG TPM v2.0
Provisioning Guidance, 7.5.1; the same template tpm2-tss-engine, tpm2-openssl and
tpm2-pytss' ``tsskey`` use for a TSS2 key's parent), persistent at 0x81000001.

ECC rather than RSA-2048: CreatePrimary takes milliseconds instead of seconds, and the
template is the one TSS2 key files assume when their parent is the owner hierarchy.
"""

from __future__ import annotations

from typing import Final

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_ECC, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMS_ECC_PARMS,
    TPMT_ECC_SCHEME,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_SYM_DEF_OBJECT,
    TPMU_PUBLIC_PARMS,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

from .errors import SealingError

SRK_HANDLE: Final = 0x81000001


def srk_template() -> TPM2B_PUBLIC:
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256,
        objectAttributes=(TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
                          | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
                          | TPMA_OBJECT.NODA | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT),
        authPolicy=b"",
        parameters=TPMU_PUBLIC_PARMS(eccDetail=TPMS_ECC_PARMS(
            symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.AES,
                                          keyBits=TPMU_SYM_KEY_BITS(aes=128),
                                          mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB)),
            scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL), curveID=TPM2_ECC.NIST_P256,
            kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL)))))


def _shape(public: TPMT_PUBLIC) -> bytes:
    """The public area without its unique field: what the template fixes."""
    shaped = TPMT_PUBLIC.unmarshal(bytes(public.marshal()))[0]
    shaped.unique.ecc.x = b""
    shaped.unique.ecc.y = b""
    return bytes(shaped.marshal())


def _persistent_handles(esapi: ESAPI) -> set[int]:
    handles: set[int] = set()
    start, more = 0x81000000, True
    while more:
        more, data = esapi.get_capability(TPM2_CAP.HANDLES, start, 64)
        got = [int(h) for h in data.data.handles]
        handles.update(got)
        if not got:
            break
        start = got[-1] + 1
    return handles


def ensure_srk(esapi: ESAPI) -> ESYS_TR:
    """The SRK's ESYS_TR: the persistent one if present (and of our template), else
    CreatePrimary in the owner hierarchy and EvictControl (owner auth, empty) to
    0x81000001."""
    if SRK_HANDLE in _persistent_handles(esapi):
        srk = esapi.tr_from_tpmpublic(SRK_HANDLE)
        public, _, _ = esapi.read_public(srk)
        if public.publicArea.type != TPM2_ALG.ECC or \
                _shape(public.publicArea) != _shape(srk_template().publicArea):
            raise SealingError(f"the object at {SRK_HANDLE:#x} is not a standard ECC SRK")
        return srk
    try:
        primary, _, _, _, _ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), srk_template(),
                                                   ESYS_TR.OWNER)
        try:
            return esapi.evict_control(ESYS_TR.OWNER, primary, SRK_HANDLE)
        finally:
            esapi.flush_context(primary)
    except TSS2_Exception as exc:
        raise SealingError(f"cannot create the SRK at {SRK_HANDLE:#x}: {exc}") from exc
