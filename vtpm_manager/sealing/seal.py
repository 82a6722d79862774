"""TPM2_Create of a sealed data object under the SRK, and its unsealing through a policy
session; the blob file that carries it.

The sealed object (Part 1, 27.2; Part 2, 12.2.3.2 TPMA_OBJECT): a KEYEDHASH object with
scheme NULL and neither sign nor decrypt — it can only be unsealed; fixedTPM|fixedParent;
userWithAuth clear, so only the policy (adminWithPolicy too) authorizes it; noDA clear, so
wrong auth values count towards dictionary-attack lockout (Part 1, 19.8.6).

The blob file (``SealedBlob.to_json``) is one versioned JSON document::

    {"version": 1, "kind": "vtpm-sealed",
     "policy": {"kind": "pcr", "selection": "sha256:0,4", "values": {...}}
               | {"kind": "authorized", "approval_key": PEM, "key_name": hex,
                  "revocable": true},   -- only when revocable (absent: false)
     "auth": bool,                  -- PolicyAuthValue follows the policy above
     "tss2_pem": "-----BEGIN TSS2 PRIVATE KEY-----..."}

A revocable authorized object (:mod:`.revocation`) is opened only by signed policies that
also pass PolicyNV on the vTPM's revocation counter; :func:`seal` creates that counter.

One file, so the object and the policy that opens it cannot be separated; the embedded
PEM (parent 0x81000001; see :mod:`.tsskey` for its type OID) is what other TSS2 tools
take, and ``SealedBlob.public``/``private`` are the TPM2B files ``tpm2_load -u/-r`` take.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_EO, TPM2_SE, TPMA_OBJECT, TPMA_SESSION
from tpm2_pytss.types import (
    TPM2B_OPERAND,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMS_KEYEDHASH_PARMS,
    TPMS_SENSITIVE_CREATE,
    TPMT_KEYEDHASH_SCHEME,
    TPMT_PUBLIC,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF,
    TPMU_PUBLIC_PARMS,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

from ..attestation.quote import Selection, format_selection, parse_selection, read_pcrs, to_tpml
from ..manufacture import Execute, esapi_over
from .errors import AuthRefused, LockedOut, PolicyRefused, SealedFormatError, SealingError
from .policy import (
    AuthorizedPolicy,
    PcrPolicy,
    PcrValues,
    SealPolicy,
    SignedPolicy,
    approval_key_name,
    approval_public,
    load_public_key_pem,
    load_versioned,
    policy_auth_value_digest,
    policy_authorize_digest,
    policy_pcr_digest,
    public_key_pem,
    values_from_json,
    values_to_json,
    version_operand,
)
from .revocation import ensure_counter, read_counter
from .srk import SRK_HANDLE, ensure_srk
from .tsskey import OID_LOADABLE_KEY, OID_SEALED_DATA, TpmKey

BLOB_VERSION: Final = 1
#: MAX_SYM_DATA (Part 2, 10.4.2): the most a sealed data object holds.
MAX_SECRET: Final = 128

TPM_RC_VALUE: Final = 0x084
TPM_RC_AUTH_FAIL: Final = 0x08E
TPM_RC_SIGNATURE: Final = 0x09B
TPM_RC_POLICY_FAIL: Final = 0x09D
TPM_RC_BAD_AUTH: Final = 0x0A2
#: PolicyNV's comparison failed (Part 3, 23.9): the counter is above the signed version.
TPM_RC_POLICY: Final = 0x126
TPM_RC_LOCKOUT: Final = 0x921
_RC_NAMES: Final = {TPM_RC_VALUE: "TPM_RC_VALUE", TPM_RC_POLICY_FAIL: "TPM_RC_POLICY_FAIL",
                    TPM_RC_SIGNATURE: "TPM_RC_SIGNATURE"}
_POLICY_CODES: Final = frozenset(_RC_NAMES)


@dataclass(frozen=True)
class SealedBlob:
    """A sealed object and the policy that unseals it; see the module doc for the file."""

    key: TpmKey
    policy: PcrPolicy | AuthorizedPolicy     # PcrPolicy always with values here
    auth: bool

    @property
    def public(self) -> bytes:
        return self.key.public

    @property
    def private(self) -> bytes:
        return self.key.private

    def to_json(self) -> str:
        policy: dict[str, Any]
        if isinstance(self.policy, PcrPolicy):
            assert self.policy.values is not None
            policy = {"kind": "pcr", "selection": format_selection(self.policy.selection),
                      "values": values_to_json(self.policy.values)}
        else:
            key = self.policy.approval_public_key
            policy = {"kind": "authorized", "approval_key": public_key_pem(key),
                      "key_name": approval_key_name(key).hex()}
            if self.policy.revocable:
                policy["revocable"] = True
        return json.dumps({"version": BLOB_VERSION, "kind": "vtpm-sealed", "policy": policy,
                           "auth": self.auth, "tss2_pem": self.key.to_pem().decode()},
                          indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> SealedBlob:
        doc = load_versioned(text, "vtpm-sealed", BLOB_VERSION)
        try:
            key = TpmKey.from_pem(doc["tss2_pem"])
            spec = doc["policy"]
            policy: PcrPolicy | AuthorizedPolicy
            if spec["kind"] == "pcr":
                policy = PcrPolicy(parse_selection(spec["selection"]),
                                   values_from_json(spec["values"]))
            elif spec["kind"] == "authorized":
                revocable = spec.get("revocable", False)
                if not isinstance(revocable, bool):
                    raise ValueError(f"revocable is {revocable!r}, not true or false")
                policy = AuthorizedPolicy(load_public_key_pem(spec["approval_key"]),
                                          revocable)
            else:
                raise SealedFormatError(f"unknown policy kind {spec['kind']!r}")
            auth = doc["auth"]
        except (KeyError, TypeError, ValueError) as exc:
            raise SealedFormatError(f"bad sealed blob: {exc}") from None
        if key.type_oid not in (OID_LOADABLE_KEY, OID_SEALED_DATA):
            raise SealedFormatError(f"TSS2 key of type {key.type_oid}, not a loadable object")
        return cls(key, policy, bool(auth))


def auth_policy_digest(policy: PcrPolicy | AuthorizedPolicy, with_auth: bool) -> bytes:
    """The sealed object's authPolicy (a PcrPolicy must carry its values)."""
    if isinstance(policy, PcrPolicy):
        assert policy.values is not None
        digest = policy_pcr_digest(policy.selection, policy.values)
    else:
        digest = policy_authorize_digest(approval_key_name(policy.approval_public_key),
                                         policy.policy_ref)
    return policy_auth_value_digest(digest) if with_auth else digest


def sealed_template(auth_policy: bytes) -> TPM2B_PUBLIC:
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256,
        objectAttributes=TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT,
        authPolicy=auth_policy,
        parameters=TPMU_PUBLIC_PARMS(keyedHashDetail=TPMS_KEYEDHASH_PARMS(
            scheme=TPMT_KEYEDHASH_SCHEME(scheme=TPM2_ALG.NULL)))))


def current_values(esapi: ESAPI, selection: Selection) -> PcrValues:
    values: PcrValues = {}
    for bank, pcr, value in read_pcrs(esapi, selection):
        values.setdefault(bank, {})[pcr] = value
    return values


def seal(execute: Execute, secret: bytes, policy: SealPolicy,
         auth: bytes | None = None) -> SealedBlob:
    """Seal ``secret`` (at most 128 bytes) under the vTPM's SRK, creating the SRK if absent.
    A ``PcrPolicy`` without values is sealed to the PCR values read now; a revocable
    ``AuthorizedPolicy`` first makes sure the vTPM's revocation counter exists and has a
    value, so that signed policies checking it can be satisfied."""
    if not 0 < len(secret) <= MAX_SECRET:
        raise ValueError(f"a sealed secret is 1-{MAX_SECRET} bytes, not {len(secret)}")
    with esapi_over(execute) as esapi:
        srk = ensure_srk(esapi)
        if isinstance(policy, AuthorizedPolicy) and policy.revocable:
            ensure_counter(esapi)
        if isinstance(policy, PcrPolicy) and policy.values is None:
            policy = PcrPolicy(policy.selection, current_values(esapi, policy.selection))
        template = sealed_template(auth_policy_digest(policy, auth is not None))
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=auth or b"",
                                                                 data=secret))
        try:
            private, public, _, _, _ = esapi.create(srk, sensitive, template)
        except TSS2_Exception as exc:
            raise SealingError(f"TPM2_Create of the sealed object failed: {exc}") from exc
    key = TpmKey(OID_LOADABLE_KEY, empty_auth=auth is None, parent=SRK_HANDLE,
                 public=bytes(public.marshal()), private=bytes(private.marshal()))
    return SealedBlob(key, policy, auth is not None)


def _tpm_rc(exc: TSS2_Exception) -> int | None:
    """The canonical TPM response code (format-1 handle/parameter/session bits dropped)."""
    rc = int(exc.rc)
    if rc >> 16:
        return None                 # from a software layer, not the TPM
    return rc & 0xBF if rc & 0x80 else rc


@contextmanager
def _refusals(esapi: ESAPI, selection: Selection, values: PcrValues | None) -> Iterator[None]:
    try:
        yield
    except TSS2_Exception as exc:
        rc = _tpm_rc(exc)
        if rc == TPM_RC_LOCKOUT:
            raise LockedOut("the vTPM is in dictionary-attack lockout", rc) from exc
        if rc in (TPM_RC_AUTH_FAIL, TPM_RC_BAD_AUTH):
            raise AuthRefused("wrong auth value for the sealed object", rc) from exc
        if rc in _POLICY_CODES:
            differing = _differing(esapi, selection, values) if values is not None else ()
            what = f": PCRs {', '.join(differing)} differ" if differing else ""
            raise PolicyRefused(f"the vTPM refused the policy ({_RC_NAMES[rc]}){what}", rc,
                                differing) from exc
        raise SealingError(f"unsealing failed: {exc}") from exc


def _differing(esapi: ESAPI, selection: Selection, values: PcrValues) -> tuple[str, ...]:
    try:
        now = current_values(esapi, selection)
    except TSS2_Exception:
        return ()
    return tuple(f"{bank}:{pcr}" for bank, pcrs in selection for pcr in pcrs
                 if not hmac.compare_digest(now[bank][pcr], values[bank][pcr]))


def unseal(execute: Execute, blob: SealedBlob, *, signed_policy: SignedPolicy | None = None,
           auth: bytes | None = None) -> bytes:
    """Load ``blob`` under the SRK, satisfy its policy in a session salted to the SRK (the
    secret comes back encrypted), and TPM2_Unseal. Raises :class:`PolicyRefused`,
    :class:`AuthRefused` or :class:`LockedOut` for the TPM's refusals."""
    if blob.auth and auth is None:
        raise AuthRefused("this sealed object needs an auth value")
    if isinstance(blob.policy, AuthorizedPolicy) and signed_policy is None:
        raise PolicyRefused("an authorized sealed object needs a signed policy")
    with esapi_over(execute) as esapi:
        srk = esapi.tr_from_tpmpublic(blob.key.parent)
        try:
            item = esapi.load(srk, TPM2B_PRIVATE.unmarshal(blob.private)[0],
                              TPM2B_PUBLIC.unmarshal(blob.public)[0])
        except TSS2_Exception as exc:
            raise SealingError(f"cannot load the sealed object under the SRK: {exc}") from exc
        session = esapi.start_auth_session(
            tpm_key=srk, bind=ESYS_TR.NONE, session_type=TPM2_SE.POLICY,
            symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128),
                                   mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB)),
            auth_hash=TPM2_ALG.SHA256)
        try:
            _satisfy(esapi, session, blob, signed_policy)
            if auth is not None:
                esapi.policy_auth_value(session)
                esapi.tr_set_auth(item, auth)
            esapi.trsess_set_attributes(session, TPMA_SESSION.ENCRYPT
                                        | TPMA_SESSION.CONTINUESESSION)
            policy = blob.policy if isinstance(blob.policy, PcrPolicy) else None
            try:
                with _refusals(esapi, *_expected(policy, signed_policy)):
                    return bytes(esapi.unseal(item, session1=session))
            except PolicyRefused as exc:
                hint = _kind_mismatch(blob.policy, signed_policy)
                if hint is None:
                    raise
                raise PolicyRefused(f"{exc}: {hint}", exc.rc, exc.differing) from exc
        finally:
            esapi.flush_context(session)
            esapi.flush_context(item)


def _kind_mismatch(policy: PcrPolicy | AuthorizedPolicy, signed: SignedPolicy | None
                   ) -> str | None:
    """Why a signature could not open the object if it is of the other kind. The TPM is
    what refuses (the policyRef differs); this only names the reason."""
    if not isinstance(policy, AuthorizedPolicy) or signed is None:
        return None
    if policy.revocable and not signed.revocable:
        return "the object is revocable and the signed policy is not (sign it with a version)"
    if signed.revocable and not policy.revocable:
        return "the signed policy is revocable (versioned) and the object is not"
    return None


def _expected(policy: PcrPolicy | None, signed: SignedPolicy | None
              ) -> tuple[Selection, PcrValues | None]:
    if policy is not None:
        return policy.selection, policy.values
    assert signed is not None
    return signed.selection, signed.values


def _satisfy(esapi: ESAPI, session: ESYS_TR, blob: SealedBlob,
             signed: SignedPolicy | None) -> None:
    if isinstance(blob.policy, PcrPolicy):
        assert blob.policy.values is not None
        selection, values = blob.policy.selection, blob.policy.values
        with _refusals(esapi, selection, values):
            # An empty pcrDigest: the TPM takes the PCRs as they are, and a mismatch fails
            # at TPM2_Unseal with TPM_RC_POLICY_FAIL, as it does for tpm2_unseal.
            esapi.policy_pcr(session, b"", to_tpml(selection))
        return
    assert signed is not None
    key = blob.policy.approval_public_key
    if not hmac.compare_digest(signed.key_name, approval_key_name(key)):
        raise PolicyRefused("the policy is signed by another key than the blob's approval key")
    with _refusals(esapi, signed.selection, signed.values):
        # PCRs as they are; a mismatch fails PolicyAuthorize with TPM_RC_POLICY_FAIL.
        esapi.policy_pcr(session, b"", to_tpml(signed.selection))
        if signed.revocable:
            _policy_nv(esapi, session, signed)
        verifier = esapi.load_external(approval_public(key), hierarchy=ESYS_TR.OWNER)
        try:
            a_hash = _sha256(signed.policy_digest + signed.policy_ref)
            ticket = esapi.verify_signature(verifier, a_hash,
                                            TPMT_SIGNATURE.unmarshal(signed.signature)[0])
        finally:
            esapi.flush_context(verifier)
        esapi.policy_authorize(session, signed.policy_digest, signed.key_name, ticket,
                               signed.policy_ref)


def _policy_nv(esapi: ESAPI, session: ESYS_TR, signed: SignedPolicy) -> None:
    """TPM2_PolicyNV(counter ≤ version), authorized by the index itself with its empty
    password. A counter above the version is a revocation, and is reported as one."""
    assert signed.revocation_index is not None and signed.version is not None
    index, version = signed.revocation_index, signed.version
    try:
        nv = esapi.tr_from_tpmpublic(index)
    except TSS2_Exception as exc:
        raise PolicyRefused(f"the signed policy checks the revocation counter at {index:#010x}"
                            ", and this vTPM has none", _tpm_rc(exc)) from exc
    try:
        esapi.policy_nv(nv, nv, session, TPM2B_OPERAND(version_operand(version)),
                        TPM2_EO.UNSIGNED_LE, 0, session1=ESYS_TR.PASSWORD)
    except TSS2_Exception as exc:
        esapi.tr_close(nv)      # before read_counter, which opens the index again
        rc = _tpm_rc(exc)
        if rc != TPM_RC_POLICY:
            raise PolicyRefused(f"TPM2_PolicyNV on the revocation counter at {index:#010x} "
                                f"failed: {exc}", rc) from exc
        try:
            now = f"is now {read_counter(esapi, index)}"
        except SealingError:
            now = "is above it"
        raise PolicyRefused(f"the signed policy's version {version} is revoked (the vTPM's "
                            f"revocation counter {now})", rc) from exc
    esapi.tr_close(nv)


def _sha256(data: bytes) -> bytes:

    return hashlib.sha256(data).digest()
