"""ESAPI plumbing shared by the root and its counter: the storage primary key,
sessions that keep secrets off the TPM bus, and flushing what we load.

The SRK is re-created from a fixed template at every use rather than made
persistent: the same owner seed and template always give the same key (Part 1 §27.6,
"primary keys are derived"), so nothing has to be provisioned in the TPM's scarce
persistent storage, and a changed owner seed (TPM2_Clear) shows up as a changed name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_OBJECT, TPMA_SESSION
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPMT_PUBLIC,
    TPMT_SYM_DEF,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

#: TCG "TPM v2.0 Provisioning Guidance" §7.5.1 SRK template: ECC NIST P-256,
#: AES-128-CFB, restricted decryption key, SHA-256 name, empty unique.
SRK_TEMPLATE = "ecc-p256"
_SRK_ATTRIBUTES = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
                   | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
                   | TPMA_OBJECT.NODA | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT)
_AES128_CFB = TPMT_SYM_DEF(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128),
                           mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB))


def srk_public() -> TPM2B_PUBLIC:
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.parse("ecc256:aes128cfb",
                                                     objectAttributes=_SRK_ATTRIBUTES))


@contextlib.contextmanager
def storage_primary(esapi: ESAPI, handle: int | None) -> Iterator[ESYS_TR]:
    """The owner hierarchy's storage primary: a persistent ``handle``, or the fixed
    template re-created (and flushed again afterwards)."""
    if handle is not None:
        srk = esapi.tr_from_tpmpublic(handle)
        try:
            yield srk
        finally:
            esapi.tr_close(srk)
        return
    srk = esapi.create_primary(None, srk_public(), ESYS_TR.OWNER)[0]
    try:
        yield srk
    finally:
        flush(esapi, srk)


def salted_session(esapi: ESAPI, srk: ESYS_TR, kind: TPM2_SE,
                   attributes: TPMA_SESSION) -> ESYS_TR:
    """A session salted with the SRK, so its key (and so parameter encryption with
    it) is secret to this process and the TPM: the KEK and the counter auth never
    cross the bus in clear (Part 1 §19.6.12, §21)."""
    session = esapi.start_auth_session(srk, ESYS_TR.NONE, kind, _AES128_CFB, TPM2_ALG.SHA256)
    esapi.trsess_set_attributes(session, attributes)
    return session


def flush(esapi: ESAPI, *handles: ESYS_TR | None) -> None:
    """Flush transient objects and sessions; a swtpm without a resource manager keeps
    them until flushed, and has room for only three."""
    for handle in handles:
        if handle is None:
            continue
        with contextlib.suppress(TSS2_Exception):
            esapi.flush_context(handle)
