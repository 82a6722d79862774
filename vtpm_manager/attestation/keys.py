"""The attestation key: its templates, where it lives, and how a command gets at it.

Where the AK lives (decision). Like Keylime and ``tpm2_createak``, the AK is an
ordinary (non-primary) child of the EK, created with TPM2_Create under the EK (the
EK's policy, PolicySecret(TPM_RH_ENDORSEMENT), authorizes its use as a parent). So
it sits in the endorsement hierarchy: TPM2_Clear by the guest's owner does not
change the endorsement seed, the EK re-derives from its template, and the AK's
private blob stays loadable under it for the vTPM's life; an AK under the SRK would
die with the first TPM2_Clear (which changes the storage seed).

Handle and blob (decision). Both. The AK is made persistent with EvictControl at
:data:`AK_HANDLES` (endorsement range 0x8101xxxx of the TCG handle registry, clear of
0x81010001/0x81010002 which it reserves for the RSA and ECC EKs), because the quote
path then costs one command and tools inside the guest can quote with it too
(``tpm2_quote -c 0x81010010``). The guest's owner can evict or replace that handle,
so :class:`AttestationKey` also keeps the TPM2B_PRIVATE blob: :func:`load_ak` uses the
persistent handle only if the object there has the enrolled AK's *name*, and
otherwise recreates the EK and loads the blob as a transient object. The blob is not
secret (it is encrypted and integrity-protected under the EK's seed) but the manager
should store it with the vTPM's record.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import serialization
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_ECC,
    TPM2_SE,
    TPMA_OBJECT,
    TPMA_SESSION,
)
from tpm2_pytss.types import (
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMS_RSA_PARMS,
    TPMT_ECC_SCHEME,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_RSA_SCHEME,
    TPMT_SYM_DEF,
    TPMT_SYM_DEF_OBJECT,
    TPMU_ASYM_SCHEME,
    TPMU_PUBLIC_ID,
    TPMU_PUBLIC_PARMS,
)

from ..manufacture import EK_KINDS, public_key_of
from .credential import object_name, parse_public
from .errors import EnrollmentError

#: restricted signing key that never leaves this TPM (Part 2, 8.3; TCG "AK" profile):
#: fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign.
AK_ATTRIBUTES: Final = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
                        | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
                        | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT)

#: Persistent handles of the enrolled AKs, one per algorithm (see the module doc).
AK_HANDLES: Final = {"ecc": 0x81010010, "rsa": 0x81010011}
#: Which EK each AK is created under and challenged through (manufacture.EK_KINDS).
EK_KIND_FOR: Final = {"ecc": "ecc-nist-p256", "rsa": "rsa2048"}


def _null_sym() -> TPMT_SYM_DEF_OBJECT:
    return TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL)


def ak_template(alg: str) -> TPM2B_PUBLIC:
    """ECC P-256 ECDSA-SHA256 or RSA-2048 RSASSA-SHA256 (the schemes every verifier
    accepts: Keylime takes only RSASSA and ECDSA; tpm2_checkquote 5.4 no RSA-PSS)."""
    if alg == "ecc":
        return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256, objectAttributes=AK_ATTRIBUTES,
            parameters=TPMU_PUBLIC_PARMS(eccDetail=TPMS_ECC_PARMS(
                symmetric=_null_sym(),
                scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.ECDSA, details=TPMU_ASYM_SCHEME(
                    ecdsa={"hashAlg": TPM2_ALG.SHA256})),
                curveID=TPM2_ECC.NIST_P256, kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL))),
            unique=TPMU_PUBLIC_ID(ecc=TPMS_ECC_POINT()),
        ))
    if alg == "rsa":
        return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.RSA, nameAlg=TPM2_ALG.SHA256, objectAttributes=AK_ATTRIBUTES,
            parameters=TPMU_PUBLIC_PARMS(rsaDetail=TPMS_RSA_PARMS(
                symmetric=_null_sym(),
                scheme=TPMT_RSA_SCHEME(scheme=TPM2_ALG.RSASSA, details=TPMU_ASYM_SCHEME(
                    rsassa={"hashAlg": TPM2_ALG.SHA256})),
                keyBits=2048, exponent=0)),
            unique=TPMU_PUBLIC_ID(rsa=b""),
        ))
    raise ValueError(f"unknown AK algorithm {alg!r}; choose 'ecc' or 'rsa'")


def check_ak_public(public: bytes, alg: str) -> TPMT_PUBLIC:
    """What a CA checks before it certifies: the key is the restricted signing key
    it claims to be, with exactly the AK attributes (a key without fixedTPM could be
    a copy somewhere else; one without restricted could sign a forged TPMS_ATTEST)."""
    area = parse_public(public)
    want_type = TPM2_ALG.ECC if alg == "ecc" else TPM2_ALG.RSA
    if area.type != want_type:
        raise EnrollmentError(f"AK has type {area.type}, expected {want_type}")
    if int(area.objectAttributes) != int(AK_ATTRIBUTES):
        raise EnrollmentError(f"AK attributes 0x{int(area.objectAttributes):08x} are not "
                              f"an AK's 0x{int(AK_ATTRIBUTES):08x}")
    if area.nameAlg != TPM2_ALG.SHA256:
        raise EnrollmentError("AK name algorithm is not SHA-256")
    return area


@dataclass(frozen=True)
class AttestationKey:
    """An enrolled AK: enough to find or reload it and to verify what it signs."""

    alg: str            # "ecc" or "rsa"
    handle: int         # persistent handle (see module doc)
    public: bytes       # marshalled TPM2B_PUBLIC
    private: bytes      # marshalled TPM2B_PRIVATE, loadable under the EK
    name: bytes         # nameAlg || H(TPMT_PUBLIC), computed by us

    @property
    def ek_kind(self) -> str:
        return EK_KIND_FOR[self.alg]

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM (what ``tpm2_checkquote -u`` and openssl read)."""
        key = public_key_of(parse_public(self.public))
        return key.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo)


# -- sessions and handles -------------------------------------------------------------

@contextmanager
def ek_policy_session(esapi: ESAPI) -> Iterator[ESYS_TR]:
    """A policy session satisfying the EK's authPolicy, PolicySecret(TPM_RH_ENDORSEMENT)
    (EK Credential Profile B.3.3), with the (empty) endorsement auth; flushed after."""
    session = esapi.start_auth_session(
        tpm_key=ESYS_TR.NONE, bind=ESYS_TR.NONE, session_type=TPM2_SE.POLICY,
        symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), auth_hash=TPM2_ALG.SHA256)
    try:
        esapi.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION,
                                    TPMA_SESSION.CONTINUESESSION)
        esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        yield session
    finally:
        esapi.flush_context(session)


@contextmanager
def endorsement_key(esapi: ESAPI, kind: str) -> Iterator[tuple[ESYS_TR, bytes]]:
    """The EK of ``kind`` recreated from its TCG template (deterministic), and its
    marshalled TPM2B_PUBLIC; flushed after."""
    template, _ = EK_KINDS[kind]
    handle, public, *_ = esapi.create_primary(None, template(), ESYS_TR.ENDORSEMENT)
    try:
        yield handle, public.marshal()
    finally:
        esapi.flush_context(handle)


@contextmanager
def load_ak(esapi: ESAPI, ak: AttestationKey) -> Iterator[ESYS_TR]:
    """The AK, ready to sign: its persistent handle if the object there is this AK,
    else the blob loaded under a recreated EK (transient, flushed after)."""
    try:
        persistent = esapi.tr_from_tpmpublic(ak.handle)
    except TSS2_Exception:
        persistent = None
    if persistent is not None:
        if bytes(esapi.tr_get_name(persistent)) == ak.name:
            try:
                yield persistent
            finally:
                esapi.tr_close(persistent)
            return
        esapi.tr_close(persistent)
    public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
    private, _ = TPM2B_PRIVATE.unmarshal(ak.private)
    with endorsement_key(esapi, ak.ek_kind) as (ek, _), ek_policy_session(esapi) as session:
        transient = esapi.load(ek, private, public, session1=session)
    try:
        if bytes(esapi.tr_get_name(transient)) != ak.name:
            raise EnrollmentError("the AK blob loaded with another name than enrolled")
        yield transient
    finally:
        esapi.flush_context(transient)


def ak_name_of(public: bytes) -> bytes:
    """The AK's name as a verifier computes it from its TPM2B_PUBLIC."""
    return object_name(public)
