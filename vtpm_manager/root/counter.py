"""The host TPM's NV monotonic counter (TPM_NT_COUNTER, Part 1 §37.2.2).

An NV counter only goes up, survives TPM2_Clear's peers (it is in the owner
hierarchy, so an owner can delete it, but a re-created counter starts at the highest
value any counter on that TPM has had, Part 1 §37.2.2) and cannot be copied back
like a file. Its auth value is the second half of DomS0's sealed secret, so only the
measured DomS0 that unsealed it can advance it.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_NT, TPM2_SE, TPMA_NV, TPMA_SESSION
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

from ..counter import CounterError, MonotonicCounter
from .base import RootRefused
from .host import connect
from .session import flush, salted_session, storage_primary

T = TypeVar("T")
DEFAULT_NV_INDEX = 0x01500020
COUNTER_ATTRIBUTES = (
    TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE
    # 32 random bytes cannot be guessed, and NO_DA keeps a caller with a wrong value
    # from using our index to drive the whole TPM into dictionary-attack lockout.
    | TPMA_NV.NO_DA
    | (TPM2_NT.COUNTER << TPMA_NV.TPM2_NT_SHIFT)
)


class TpmCounter(MonotonicCounter):
    """Reads with NV_Read and advances with NV_Increment, under an HMAC session
    salted with the SRK so the auth value never crosses the bus."""

    def __init__(self, tcti: str, index: int, auth: bytes, srk_handle: int | None = None
                 ) -> None:
        self.tcti = tcti
        self.index = index
        self._auth = auth
        self._srk_handle = srk_handle
        self.origin = f"host TPM NV counter {index:#010x} ({tcti})"
        self._lock = threading.Lock()

    def read(self) -> int:
        data = self._run(lambda esapi, nv, s: bytes(esapi.nv_read(nv, 8, 0, session1=s)))
        return int(struct.unpack(">Q", data)[0])

    def increment(self) -> int:
        with self._lock:
            self._run(lambda esapi, nv, s: esapi.nv_increment(nv, session1=s))
            return self.read()

    def _run(self, operation: Callable[[ESAPI, ESYS_TR, ESYS_TR], T]) -> T:
        """Run one NV operation on a fresh connection: (esapi, nv index, session)."""
        try:
            with connect(self.tcti) as esapi, storage_primary(esapi, self._srk_handle) as srk:
                nv = esapi.tr_from_tpmpublic(self.index)
                esapi.tr_set_auth(nv, self._auth)
                session = salted_session(esapi, srk, TPM2_SE.HMAC,
                                         TPMA_SESSION.CONTINUESESSION)
                try:
                    return operation(esapi, nv, session)
                finally:
                    flush(esapi, session)
                    esapi.tr_close(nv)
        except (TSS2_Exception, RootRefused) as exc:
            raise CounterError(f"{self.origin}: {exc}") from exc


def define_counter(esapi: ESAPI, srk: ESYS_TR, index: int, auth: bytes, replace: bool) -> None:
    """Define the counter index under the owner hierarchy and increment it once (an
    unwritten counter cannot be read, Part 3 §31.13)."""
    if replace:
        try:
            old = esapi.tr_from_tpmpublic(index)
        except TSS2_Exception:
            old = None
        if old is not None:
            esapi.nv_undefine_space(old, ESYS_TR.OWNER)
    public = TPM2B_NV_PUBLIC(nvPublic=TPMS_NV_PUBLIC(
        nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=COUNTER_ATTRIBUTES,
        authPolicy=b"", dataSize=8))
    session = salted_session(esapi, srk, TPM2_SE.HMAC,
                             TPMA_SESSION.DECRYPT | TPMA_SESSION.CONTINUESESSION)
    try:
        try:
            nv = esapi.nv_define_space(auth, public, ESYS_TR.OWNER, session1=session)
        except TSS2_Exception as exc:
            if "NV_DEFINED" in str(exc).upper() or exc.error == 0x14C:
                raise RootRefused(
                    f"NV index {index:#010x} is already defined on the host TPM; choose "
                    f"another with --nv-index, or rerun with --force to replace it") from None
            raise
        esapi.tr_set_auth(nv, auth)
        # NV_Increment has no parameter to encrypt; DECRYPT would be refused.
        esapi.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION)
        esapi.nv_increment(nv, session1=session)
        esapi.tr_close(nv)
    finally:
        flush(esapi, session)
