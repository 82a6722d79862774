"""Enrollment: an AK on the vTPM, proven to share the TPM with the EK, then certified.

The vTPM CA acts as a remote CA would (Keylime's registrar, TCG's "AK certificate"
flow), trusting nothing the TPM says about itself beyond public data it checks:

1. the EK certificate in NV must chain to this CA and hold the EK's public key;
2. the AK's TPM2B_PUBLIC must carry exactly the AK attributes; its name is computed
   here, not read from the TPM;
3. MakeCredential *in software* (:mod:`.credential`) wraps a fresh 32-byte secret to
   the EK for that name; TPM2_ActivateCredential on the vTPM must release it, which
   it does only if the EK's private key and an object with that name are loaded in
   the same TPM (Part 1, 24); the released secret is compared in constant time;
4. only then does the CA issue the AK certificate.

Steps 1-4 run in DomS0 here; the same functions serve a remote registrar, which
gets :class:`Credential` in tpm2-tools' file format.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_RC, TPM2_SU
from tpm2_pytss.types import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPM2B_SENSITIVE_CREATE

from ..ca import VtpmCA, VtpmIdentity
from ..manufacture import EK_KINDS, Execute, esapi_over, public_key_of, read_nv
from .credential import Credential, make_credential, object_name, parse_public
from .errors import ActivationFailed, EnrollmentError
from .keys import (
    AK_HANDLES,
    EK_KIND_FOR,
    AttestationKey,
    ak_template,
    check_ak_public,
    ek_policy_session,
    endorsement_key,
    load_ak,
)

log = logging.getLogger(__name__)

#: Bytes of the challenge secret (fits the TPM2B_DIGEST of a SHA-256 EK).
CHALLENGE_SIZE = 32


@dataclass(frozen=True)
class Enrollment:
    """An enrolled AK and what vouches for it."""

    ak: AttestationKey
    certificate: x509.Certificate    # AK certificate from the vTPM CA
    ek_public: bytes                 # marshalled TPM2B_PUBLIC of the EK used
    ek_name: bytes
    ek_certificate: x509.Certificate

    @property
    def ak_public_pem(self) -> bytes:
        return self.ak.public_pem()

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def enroll_ak(execute: Execute, ca: VtpmCA, identity: VtpmIdentity,
              alg: str = "ecc") -> Enrollment:
    """Create, persist, challenge and certify an AK on a manufactured vTPM.

    Raises :class:`EnrollmentError` if the vTPM is not manufactured by ``ca`` or the
    AK is not what it should be, :class:`ActivationFailed` if the challenge fails;
    no certificate is issued then.
    """
    ek_kind = EK_KIND_FOR.get(alg)
    if ek_kind is None:
        raise ValueError(f"unknown AK algorithm {alg!r}; choose 'ecc' or 'rsa'")
    with esapi_over(execute) as esapi:
        started_here = _ensure_started(esapi)
        ek_public, ek_certificate = _checked_ek(esapi, ca, ek_kind)
        ak = _create_and_persist(esapi, alg)
        if started_here:
            esapi.shutdown(TPM2_SU.CLEAR)
    check_ak_public(ak.public, alg)
    secret = secrets.token_bytes(CHALLENGE_SIZE)
    credential = make_credential(ek_public, secret, object_name(ak.public))
    released = activate_credential(execute, ak, credential)
    if not hmac.compare_digest(released, secret):
        raise ActivationFailed("ActivateCredential released another secret than the "
                               "one wrapped for this EK and AK")
    certificate = ca.issue_ak_certificate(public_key_of(parse_public(ak.public)), identity)
    log.info("enrolled %s AK for vTPM %s (%s) at 0x%08x", alg, identity.name,
             identity.uuid, ak.handle)
    return Enrollment(ak, certificate, ek_public, object_name(ek_public), ek_certificate)


def activate_credential(execute: Execute, ak: AttestationKey,
                        credential: Credential) -> bytes:
    """TPM2_ActivateCredential (Part 3, 12.5) with the AK and its EK: the secret, or
    :class:`ActivationFailed` if the TPM refuses (blob for another EK or AK, or altered)."""
    with esapi_over(execute) as esapi, load_ak(esapi, ak) as ak_handle, \
            endorsement_key(esapi, ak.ek_kind) as (ek, _), \
            ek_policy_session(esapi) as session:
        try:
            # activateHandle needs ADMIN role: the AK's (empty) password, since
            # adminWithPolicy is clear; keyHandle needs USER role: the EK's policy.
            released = esapi.activate_credential(
                ak_handle, ek, TPM2B_ID_OBJECT(credential=credential.id_object),
                TPM2B_ENCRYPTED_SECRET(secret=credential.encrypted_secret),
                session1=ESYS_TR.PASSWORD, session2=session)
        except TSS2_Exception as exc:
            rc = int(exc.rc)
            raise ActivationFailed(
                f"the vTPM refused the credential (TPM rc 0x{rc:03x}: {exc}); it was "
                "not made for this vTPM's EK and this AK's name, or was altered", rc) from exc
    return bytes(released)


def _ensure_started(esapi: ESAPI) -> bool:
    try:
        esapi.startup(TPM2_SU.CLEAR)
    except TSS2_Exception as exc:
        if int(exc.rc) & 0xFFF == TPM2_RC.INITIALIZE:
            return False
        raise
    return True


def _checked_ek(esapi: ESAPI, ca: VtpmCA, ek_kind: str) -> tuple[bytes, x509.Certificate]:
    """The EK's TPM2B_PUBLIC, once its NV certificate is ours and names that key."""
    _, nv_index = EK_KINDS[ek_kind]
    try:
        der = read_nv(esapi, nv_index)
    except TSS2_Exception as exc:
        raise EnrollmentError(f"no EK certificate at NV 0x{nv_index:08x}: the vTPM is not "
                              "manufactured; manufacture it first") from exc
    certificate = x509.load_der_x509_certificate(der)
    try:
        certificate.verify_directly_issued_by(ca.certificate)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise EnrollmentError(f"the EK certificate at NV 0x{nv_index:08x} was not issued "
                              "by this vTPM CA") from exc
    with endorsement_key(esapi, ek_kind) as (_, ek_public):
        pass
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (public_key_of(parse_public(ek_public)).public_bytes(serialization.Encoding.DER, spki)
            != certificate.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise EnrollmentError(f"the EK certificate at NV 0x{nv_index:08x} certifies another "
                              "key than this vTPM's EK")
    return ek_public, certificate


def _create_and_persist(esapi: ESAPI, alg: str) -> AttestationKey:
    """TPM2_Create under the EK, TPM2_Load, then EvictControl to the AK handle
    (replacing whatever is there: the handle is reserved for the AK)."""
    handle = AK_HANDLES[alg]
    with endorsement_key(esapi, EK_KIND_FOR[alg]) as (ek, _):
        with ek_policy_session(esapi) as session:
            private, public, *_ = esapi.create(ek, TPM2B_SENSITIVE_CREATE(), ak_template(alg),
                                               session1=session)
        with ek_policy_session(esapi) as session:
            transient = esapi.load(ek, private, public, session1=session)
    try:
        _evict_if_present(esapi, handle)
        persistent = esapi.evict_control(ESYS_TR.OWNER, transient, handle)
        esapi.tr_close(persistent)
    finally:
        esapi.flush_context(transient)
    public_bytes = public.marshal()
    return AttestationKey(alg, handle, public_bytes, private.marshal(),
                          object_name(public_bytes))


def _evict_if_present(esapi: ESAPI, handle: int) -> None:
    try:
        old = esapi.tr_from_tpmpublic(handle)
    except TSS2_Exception:
        return
    esapi.evict_control(ESYS_TR.OWNER, old, handle)
