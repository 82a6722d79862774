"""The steps every attestation command shares (Part 3, 18.1; the reference's
Attest_spt.c): pick the signing key and scheme, fill in the TPMS_ATTEST header, sign.

Privacy (Part 2, 10.12.12; Part 1, clause 36): resetCount and restartCount tell how
often a platform rebooted and firmwareVersion what it runs, which would let signatures by
different keys be linked. So unless the signing key is in the endorsement or platform
hierarchy, the three are offset by an obfuscation value that depends on the signer:
KDFa(shProof, "OBFUSCATE", qualifiedSigner), 128 bits — the first 64 added to
firmwareVersion, the next 32 to resetCount and the last 32 to restartCount (taken
big-endian; libtpms reads them in host order, which cannot be compared anyway since
shProof is secret). An unsigned attestation (signHandle TPM_RH_NULL) is obfuscated too.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ..codec import marshal
from ..constants import PT, RC, RH, TPM_ALG, TPM_GENERATED_VALUE
from ..crypto import CONTEXT_HASH, HASHES, kdfa
from ..errors import TpmError, with_handle, with_parameter
from ..keys.signing import TPMT_SIG_SCHEME, TPMT_SIGNATURE, is_signing_key, select_scheme, sign
from ..lifecycle import Orderly
from ..objects import store
from ..structures import TPMS_CLOCK_INFO
from .structures import TPMS_ATTEST

if TYPE_CHECKING:
    from ..objects.store import LoadedObject
    from ..tpm import TPM

_U32 = struct.Struct(">I")
_PLAIN_HIERARCHIES = (RH.ENDORSEMENT, RH.PLATFORM)


def signing_key(tpm: TPM, handle: int, n: int) -> LoadedObject | None:
    """The key behind signHandle (handle number ``n``), None for TPM_RH_NULL;
    TPM_RC_KEY if it cannot sign (IsSigningObject)."""
    obj = None if handle == RH.NULL else store.get(tpm, handle)
    if not is_signing_key(obj):
        raise TpmError(with_handle(RC.KEY, n), "signHandle is not a signing key")
    return obj


def signing_scheme(obj: LoadedObject | None, scheme: TPMT_SIG_SCHEME,
                   n: int) -> TPMT_SIG_SCHEME:
    """The scheme to sign with; TPM_RC_SCHEME on inScheme (parameter ``n``)."""
    try:
        return select_scheme(obj, scheme)
    except TpmError as e:
        raise TpmError(with_parameter(e.rc, n), str(e)) from None


def firmware_version(tpm: TPM) -> int:
    """TPM_PT_FIRMWARE_VERSION_1 || _2 as one UINT64."""
    props = tpm.tpm_properties()
    return (props[PT.FIRMWARE_VERSION_1] << 32) | props[PT.FIRMWARE_VERSION_2]


def is_anonymous(scheme: TPMT_SIG_SCHEME) -> bool:
    """ECDAA is the one anonymous scheme (the reference's CryptIsSchemeAnonymous)."""
    return scheme.scheme == TPM_ALG.ECDAA


def attestation(tpm: TPM, obj: LoadedObject | None, scheme: TPMT_SIG_SCHEME,
                qualifying_data: bytes, st: int, attested: Any) -> TPMS_ATTEST:
    """A TPMS_ATTEST of type ``st`` (the reference's FillInAttestInfo). The signer is
    named by its qualified Name (the handle TPM_RH_NULL when unsigned); the caller's
    qualifyingData becomes extraData. An anonymous (ECDAA) signature names no signer
    and carries no extraData, as libtpms does: the verifier's nonce is bound through
    the commitment instead, and a Name would say which key signed."""
    if is_anonymous(scheme):
        signer, qualifying_data = b"", b""
    else:
        signer = _U32.pack(RH.NULL) if obj is None else obj.qualified_name
    clock = tpm.clock_info()
    firmware = firmware_version(tpm)
    if obj is None or obj.hierarchy not in _PLAIN_HIERARCHIES:
        pad = kdfa(CONTEXT_HASH, tpm.perm.sh_proof, b"OBFUSCATE", signer, b"", 128)
        fw_off, reset_off, restart_off = struct.unpack(">QII", pad)
        firmware = (firmware + fw_off) & 0xFFFFFFFFFFFFFFFF
        clock = TPMS_CLOCK_INFO(clock.clock, (clock.resetCount + reset_off) & 0xFFFFFFFF,
                                (clock.restartCount + restart_off) & 0xFFFFFFFF, clock.safe)
    return TPMS_ATTEST(TPM_GENERATED_VALUE, st, signer, qualifying_data, clock, firmware,
                       attested)


def sign_attestation(tpm: TPM, obj: LoadedObject | None, scheme: TPMT_SIG_SCHEME,
                     attest: TPMS_ATTEST) -> tuple[bytes, TPMT_SIGNATURE]:
    """The marshalled attestation and its signature over H_scheme(attestation) (the
    reference's SignAttestInfo); the NULL signature when unsigned. A signature reveals
    Clock, so it voids a pending orderly shutdown (NvClearOrderly). Signing errors
    (TPM_RC_SCHEME for a scheme the key type cannot use, _VALUE) come back unnumbered,
    as libtpms returns them."""
    blob = marshal(attest)
    if obj is None or scheme.scheme == TPM_ALG.NULL:
        return blob, TPMT_SIGNATURE(TPM_ALG.NULL)
    signature = sign(obj, scheme, HASHES[scheme.hashAlg].digest(blob), tpm.reset_data.commit)
    if tpm.perm.orderly != Orderly.NONE:
        tpm.perm.orderly = Orderly.NONE
        tpm.perm.shutdown_state = None
    return blob, signature
