"""Offline sealing by a remote party: an import blob that only one vTPM can load (issue 5).

A sealer who holds only a vTPM's EK public key (its ``TPM2B_PUBLIC``, or a PEM and which
TCG template it came from) builds, in software and without a TPM, what TPM2_Duplicate
would have output for a sealed data object (Part 1, 23 "Protected Storage Hierarchy" —
duplication; Part 3, 13.3 TPM2_Import), like go-tpm-tools' ``server.CreateImportBlob``:

1. the object: a KEYEDHASH public area with scheme NULL, nameAlg SHA-256, the given
   authPolicy (PolicyPCR, computed with :func:`.policy.policy_pcr_digest`), and every
   attribute clear — no userWithAuth, so only the policy opens it; fixedTPM and
   fixedParent clear, as TPM2_Import requires; encryptedDuplication clear, since there is
   no inner wrapper. Its sensitive part is ``TPMT_SENSITIVE{KEYEDHASH, authValue "",
   seedValue (random, digest size), bits = secret}``, and ``unique`` is
   ``H(seedValue ‖ secret)`` (Part 1, 27.2), which the TPM checks on load;
2. a fresh *seed* protected to the EK (the new parent, Part 1, 11.4.3): RSA — OAEP with
   the EK's nameAlg and label ``"DUPLICATE\\0"``; ECC — one-pass ECDH with an ephemeral
   key, seed = KDFe(Z, ``"DUPLICATE"``, x(ephemeral), x(EK)) (the same construction as
   MakeCredential's, :func:`..attestation.credential.protect_seed`, another label);
3. the outer wrapper (Part 1, 23.3.2.3): symKey = KDFa(seed, ``"STORAGE"``, name(object),
   "", the EK's symmetric keyBits), ``encSensitive = AES-128-CFB(symKey, IV 0,
   TPM2B_SENSITIVE)``; hmacKey = KDFa(seed, ``"INTEGRITY"``, "", "", digest bits),
   ``duplicate = TPM2B_DIGEST(HMAC(hmacKey, encSensitive ‖ name(object))) ‖ encSensitive``.
   No inner wrapper (TPM2_Import's encryptionKey empty, symmetricAlg NULL).

On the vTPM (:func:`import_and_unseal`): CreatePrimary of the EK from its template in
the endorsement hierarchy; TPM2_Import and TPM2_Load under it — the EK's authPolicy is
PolicySecret(TPM_RH_ENDORSEMENT) and its userWithAuth is clear, so each use of the EK as
a parent takes a fresh policy session satisfied with PolicySecret (endorsement auth,
empty), as go-tpm-tools' client does; then a PolicyPCR session and TPM2_Unseal. Another
vTPM's EK recovers another seed (RSA: OAEP fails; ECC: a different ECDH secret), so the
integrity HMAC does not verify and TPM2_Import fails: :class:`ImportRefused`.

The file (``ImportBlob.to_json``) is one versioned JSON document::

    {"version": 1, "kind": "vtpm-import-blob",
     "ek_template": "rsa2048" | "ecc-nist-p256",
     "ek_name": hex,                         -- the EK the blob was made for
     "public": hex, "duplicate": hex, "encrypted_seed": hex,   -- TPM2B contents
     "policy_digest": hex,
     "policy": {"kind": "pcr", "selection": "sha256:0,4", "values": {...}} | null}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ECC, TPM2_SE, TPMA_OBJECT, TPMA_SESSION
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMS_ECC_POINT,
    TPMS_KEYEDHASH_PARMS,
    TPMT_KEYEDHASH_SCHEME,
    TPMT_PUBLIC,
    TPMT_SYM_DEF,
    TPMT_SYM_DEF_OBJECT,
    TPMU_PUBLIC_ID,
    TPMU_PUBLIC_PARMS,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

from tpm_emulator.crypto import HASHES, kdfa

from ..attestation.credential import protect_seed
from ..attestation.errors import CredentialFormatError
from ..attestation.quote import format_selection, parse_selection, to_tpml
from ..manufacture import EK_KINDS, Execute, esapi_over
from .errors import PolicyRefused, SealedFormatError, SealingError
from .policy import (
    PcrPolicy,
    load_versioned,
    ordered_values,
    policy_pcr_digest,
    values_from_json,
    values_to_json,
)

try:  # cryptography >= 43 keeps CFB in "decrepit"; the TPM still mandates it
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

IMPORT_BLOB_VERSION: Final = 1
IMPORT_BLOB_KIND: Final = "vtpm-import-blob"
#: Part 1, 23.3.2.2 (and annex B.10.3 / C.6.3): the seed of a duplicate uses this label.
DUPLICATE_LABEL: Final = b"DUPLICATE\x00"
#: MAX_SYM_DATA (Part 2, 10.4.2): the most a sealed data object holds.
MAX_SECRET: Final = 128

TPM_RC_VALUE: Final = 0x084
TPM_RC_POLICY_FAIL: Final = 0x09D
_SHA256: Final = HASHES[int(TPM2_ALG.SHA256)]


class ImportRefused(SealingError):
    """TPM2_Import refused the blob: it was made for another EK (TPM_RC_INTEGRITY, or
    TPM_RC_VALUE when RSA-OAEP does not decrypt), or it is corrupt. ``rc`` is the TPM's
    response code (format-1 parameter bits dropped), ``None`` if not from the TPM."""

    def __init__(self, message: str, rc: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc


@dataclass(frozen=True)
class ImportBlob:
    """TPM2_Import's inputs for one sealed object and one EK; see the module doc."""

    ek_template: str          # a key of manufacture.EK_KINDS
    ek_name: bytes            # name of the EK it was made for
    public: bytes             # marshalled TPM2B_PUBLIC of the sealed object
    duplicate: bytes          # marshalled TPM2B_PRIVATE (outer-wrapped sensitive)
    encrypted_seed: bytes     # marshalled TPM2B_ENCRYPTED_SECRET
    policy_digest: bytes      # the object's authPolicy
    policy: PcrPolicy | None = None   # what satisfies it, when the sealer recorded it

    def to_json(self) -> str:
        policy = None
        if self.policy is not None:
            assert self.policy.values is not None
            policy = {"kind": "pcr", "selection": format_selection(self.policy.selection),
                      "values": values_to_json(self.policy.values)}
        return json.dumps({
            "version": IMPORT_BLOB_VERSION, "kind": IMPORT_BLOB_KIND,
            "ek_template": self.ek_template, "ek_name": self.ek_name.hex(),
            "public": self.public.hex(), "duplicate": self.duplicate.hex(),
            "encrypted_seed": self.encrypted_seed.hex(),
            "policy_digest": self.policy_digest.hex(), "policy": policy,
        }, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ImportBlob:
        doc = load_versioned(text, IMPORT_BLOB_KIND, IMPORT_BLOB_VERSION)
        try:
            spec = doc["policy"]
            policy = None
            if spec is not None:
                if spec["kind"] != "pcr":
                    raise SealedFormatError(f"unknown policy kind {spec['kind']!r}")
                policy = PcrPolicy(parse_selection(spec["selection"]),
                                   values_from_json(spec["values"]))
            blob = cls(str(doc["ek_template"]), bytes.fromhex(doc["ek_name"]),
                       bytes.fromhex(doc["public"]), bytes.fromhex(doc["duplicate"]),
                       bytes.fromhex(doc["encrypted_seed"]),
                       bytes.fromhex(doc["policy_digest"]), policy)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SealedFormatError):
                raise
            raise SealedFormatError(f"bad import blob: {exc}") from None
        if blob.ek_template not in EK_KINDS:
            raise SealedFormatError(f"unknown EK template {blob.ek_template!r}")
        for what, data, kind in (("public", blob.public, TPM2B_PUBLIC),
                                 ("duplicate", blob.duplicate, TPM2B_PRIVATE),
                                 ("encrypted_seed", blob.encrypted_seed,
                                  TPM2B_ENCRYPTED_SECRET)):
            try:
                _, used = kind.unmarshal(data)
            except Exception as exc:  # tpm2-tss raises its own errors for short buffers
                raise SealedFormatError(f"bad {what}: {exc}") from None
            if used != len(data):
                raise SealedFormatError(f"{len(data) - used} trailing bytes after {what}")
        return blob


# -- the EK the sealer holds ---------------------------------------------------------------

def ek_public_from_pem(pem: str | bytes, template: str) -> TPM2B_PUBLIC:
    """The EK's TPM2B_PUBLIC: the TCG template ``template`` (``"rsa2048"`` or
    ``"ecc-nist-p256"``) with ``unique`` filled in from the PEM public key."""
    if template not in EK_KINDS:
        raise ValueError(f"unknown EK template {template!r}; one of {', '.join(EK_KINDS)}")
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    public = EK_KINDS[template][0]()
    area = public.publicArea
    if area.type == TPM2_ALG.RSA:
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size != 2048 \
                or key.public_numbers().e != 65537:
            raise ValueError("the PEM is not an RSA-2048 key with exponent 65537")
        area.unique = TPMU_PUBLIC_ID(rsa=key.public_numbers().n.to_bytes(256, "big"))
    else:
        if not isinstance(key, ec.EllipticCurvePublicKey) \
                or not isinstance(key.curve, ec.SECP256R1) \
                or area.parameters.eccDetail.curveID != TPM2_ECC.NIST_P256:
            raise ValueError("the PEM is not an ECC NIST P-256 key")
        numbers = key.public_numbers()
        area.unique = TPMU_PUBLIC_ID(ecc=TPMS_ECC_POINT(x=numbers.x.to_bytes(32, "big"),
                                                        y=numbers.y.to_bytes(32, "big")))
    return public


def _template_of(ek: TPMT_PUBLIC) -> str:
    """Which TCG EK template ``ek`` was created from; the vTPM recreates it from that."""
    for kind, (factory, _) in EK_KINDS.items():
        template = factory().publicArea
        if template.type != ek.type:
            continue
        ours = TPMT_PUBLIC.unmarshal(bytes(ek.marshal()))[0]
        ours.unique = template.unique
        if bytes(ours.marshal()) == bytes(template.marshal()):
            return kind
    raise ValueError("the EK public area is not from a TCG default template "
                     f"({', '.join(EK_KINDS)})")


# -- the duplicate -------------------------------------------------------------------------

def sealed_import_public(policy_digest: bytes, unique: bytes) -> TPM2B_PUBLIC:
    """The imported sealed object's public area (attributes all clear: see module doc)."""
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256,
        objectAttributes=TPMA_OBJECT(0), authPolicy=policy_digest,
        parameters=TPMU_PUBLIC_PARMS(keyedHashDetail=TPMS_KEYEDHASH_PARMS(
            scheme=TPMT_KEYEDHASH_SCHEME(scheme=TPM2_ALG.NULL))),
        unique=TPMU_PUBLIC_ID(keyedHash=unique)))


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def sensitive(secret: bytes, obfuscation: bytes) -> bytes:
    """Marshalled TPM2B_SENSITIVE: TPMT_SENSITIVE{KEYEDHASH, authValue empty,
    seedValue, sensitive.bits} (Part 2, 12.3.2.4)."""
    area = (struct.pack(">H", int(TPM2_ALG.KEYEDHASH)) + _tpm2b(b"") + _tpm2b(obfuscation)
            + _tpm2b(secret))
    return _tpm2b(area)


def outer_wrap(ek: TPMT_PUBLIC, seed: bytes, name: bytes, plaintext: bytes) -> bytes:
    """TPM2B_PRIVATE.buffer: TPM2B_DIGEST(outerHMAC) ‖ AES-CFB(symKey, IV 0, plaintext)
    (Part 1, 23.3.2.3); the KDFs use the new parent's nameAlg and symmetric key size."""
    h = HASHES.get(int(ek.nameAlg))
    if h is None:
        raise ValueError(f"unsupported EK name algorithm {int(ek.nameAlg):#06x}")
    sym = ek.parameters.asymDetail.symmetric
    if sym.algorithm != TPM2_ALG.AES or sym.mode.sym != TPM2_ALG.CFB:
        raise ValueError("the EK's symmetric algorithm is not AES-CFB")
    sym_key = kdfa(h, seed, b"STORAGE", name, b"", int(sym.keyBits.sym))
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_sensitive = encryptor.update(plaintext) + encryptor.finalize()
    hmac_key = kdfa(h, seed, b"INTEGRITY", b"", b"", h.size * 8)
    return _tpm2b(h.hmac(hmac_key, enc_sensitive, name)) + enc_sensitive


def create_import_blob(ek_public: bytes | str, secret: bytes, policy_digest: bytes, *,
                       ek_template: str | None = None,
                       policy: PcrPolicy | None = None) -> ImportBlob:
    """Seal ``secret`` (1..128 bytes) offline for the vTPM whose EK is ``ek_public``: a
    marshalled TPM2B_PUBLIC, or a PEM public key together with ``ek_template``
    (``"rsa2048"`` / ``"ecc-nist-p256"``). ``policy_digest`` is the object's authPolicy;
    ``policy`` (a :class:`PcrPolicy` with values), if given, must produce that digest and
    is recorded in the blob so that :func:`import_and_unseal` needs nothing else."""
    if not 0 < len(secret) <= MAX_SECRET:
        raise ValueError(f"a sealed secret is 1-{MAX_SECRET} bytes, not {len(secret)}")
    if len(policy_digest) != _SHA256.size:
        raise ValueError(f"a SHA-256 policy digest is 32 bytes, not {len(policy_digest)}")
    if policy is not None:
        if policy.values is None:
            raise ValueError("an offline seal needs the PCR values, not 'current'")
        if not hmac.compare_digest(policy_pcr_digest(policy.selection, policy.values),
                                   policy_digest):
            raise ValueError("the PCR policy does not produce the given policy digest")
    if isinstance(ek_public, str) or ek_public.lstrip().startswith(b"-----BEGIN"):
        if ek_template is None:
            raise ValueError("a PEM EK needs its template (rsa2048 or ecc-nist-p256)")
        ek = ek_public_from_pem(ek_public, ek_template).publicArea
    else:
        try:
            parsed, used = TPM2B_PUBLIC.unmarshal(ek_public)
        except Exception as exc:  # tpm2-tss raises its own errors for short buffers
            raise ValueError(f"not a TPM2B_PUBLIC: {exc}") from exc
        if used != len(ek_public):
            raise ValueError(f"{len(ek_public) - used} trailing bytes after TPM2B_PUBLIC")
        ek = parsed.publicArea
        detected = _template_of(ek)
        if ek_template is not None and ek_template != detected:
            raise ValueError(f"the EK is from the {detected} template, not {ek_template}")
        ek_template = detected
    assert ek_template is not None

    obfuscation = secrets.token_bytes(_SHA256.size)
    unique = hashlib.sha256(obfuscation + secret).digest()
    public = sealed_import_public(policy_digest, unique)
    name = bytes(public.get_name())
    try:
        seed, encrypted_seed = protect_seed(ek, DUPLICATE_LABEL)
    except CredentialFormatError as exc:
        raise ValueError(str(exc)) from exc
    duplicate = outer_wrap(ek, seed, name, sensitive(secret, obfuscation))
    return ImportBlob(
        ek_template=ek_template,
        ek_name=bytes(TPM2B_PUBLIC(publicArea=ek).get_name()),
        public=bytes(public.marshal()), duplicate=_tpm2b(duplicate),
        encrypted_seed=_tpm2b(encrypted_seed), policy_digest=policy_digest,
        policy=policy)


# -- on the vTPM ---------------------------------------------------------------------------

def _tpm_rc(exc: TSS2_Exception) -> int | None:
    rc = int(exc.rc)
    if rc >> 16:
        return None
    return rc & 0xBF if rc & 0x80 else rc


def _ek_session(esapi: ESAPI) -> ESYS_TR:
    """A policy session satisfying the EK's authPolicy: PolicySecret(TPM_RH_ENDORSEMENT)."""
    session = esapi.start_auth_session(
        tpm_key=ESYS_TR.NONE, bind=ESYS_TR.NONE, session_type=TPM2_SE.POLICY,
        symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), auth_hash=TPM2_ALG.SHA256)
    try:
        esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, expiration=0)
    except BaseException:
        esapi.flush_context(session)
        raise
    return session


@contextmanager
def _flushing(esapi: ESAPI, handle: ESYS_TR) -> Iterator[ESYS_TR]:
    try:
        yield handle
    finally:
        esapi.flush_context(handle)


def import_and_unseal(execute: Execute, blob: ImportBlob, *,
                      policy: PcrPolicy | None = None) -> bytes:
    """Recreate the EK, TPM2_Import and TPM2_Load the blob under it, and TPM2_Unseal through
    a PolicyPCR session (``policy`` or the one recorded in the blob). Raises
    :class:`ImportRefused` if this vTPM's EK is not the blob's, :class:`PolicyRefused` if
    the PCRs are not in the sealed state."""
    policy = policy if policy is not None else blob.policy
    if policy is None or policy.values is None:
        raise PolicyRefused("the import blob records no PCR policy; pass one with values")
    if not hmac.compare_digest(policy_pcr_digest(policy.selection, policy.values),
                               blob.policy_digest):
        raise PolicyRefused("the PCR policy does not produce the blob's policy digest")
    if blob.ek_template not in EK_KINDS:
        raise SealedFormatError(f"unknown EK template {blob.ek_template!r}")
    public = TPM2B_PUBLIC.unmarshal(blob.public)[0]
    with esapi_over(execute) as esapi:
        try:
            ek, ek_public, _, _, _ = esapi.create_primary(
                TPM2B_SENSITIVE_CREATE(), EK_KINDS[blob.ek_template][0](),
                ESYS_TR.ENDORSEMENT)
        except TSS2_Exception as exc:
            raise SealingError(f"cannot create the {blob.ek_template} EK: {exc}") from exc
        with _flushing(esapi, ek):
            ours = bytes(ek_public.get_name())
            other = "" if hmac.compare_digest(ours, blob.ek_name) else (
                f" (it was made for the EK named {blob.ek_name.hex()}, this vTPM's EK is "
                f"{ours.hex()})")
            try:
                with _flushing(esapi, _ek_session(esapi)) as session:
                    private = esapi.import_(
                        ek, TPM2B_DATA(b""), public,
                        TPM2B_PRIVATE.unmarshal(blob.duplicate)[0],
                        TPM2B_ENCRYPTED_SECRET.unmarshal(blob.encrypted_seed)[0],
                        TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL), session1=session)
            except TSS2_Exception as exc:
                raise ImportRefused(f"TPM2_Import refused the blob{other}: {exc}",
                                    _tpm_rc(exc)) from exc
            try:
                with _flushing(esapi, _ek_session(esapi)) as session:
                    item = esapi.load(ek, private, public, session1=session)
            except TSS2_Exception as exc:
                raise ImportRefused(f"TPM2_Load of the imported object failed: {exc}",
                                    _tpm_rc(exc)) from exc
            with _flushing(esapi, item):
                return _unseal(esapi, ek, item, policy)


def _unseal(esapi: ESAPI, ek: ESYS_TR, item: ESYS_TR, policy: PcrPolicy) -> bytes:
    """PolicyPCR and TPM2_Unseal in a session salted to the EK, with response encryption:
    the secret does not cross the transport in the clear."""
    assert policy.values is not None
    pcr_digest = hashlib.sha256(b"".join(ordered_values(policy.selection,
                                                        policy.values))).digest()
    session = esapi.start_auth_session(
        tpm_key=ek, bind=ESYS_TR.NONE, session_type=TPM2_SE.POLICY,
        symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128),
                               mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB)),
        auth_hash=TPM2_ALG.SHA256)
    with _flushing(esapi, session):
        esapi.trsess_set_attributes(session, TPMA_SESSION.ENCRYPT
                                    | TPMA_SESSION.CONTINUESESSION)
        try:
            # The expected pcrDigest makes a mismatch fail here, with TPM_RC_VALUE.
            esapi.policy_pcr(session, pcr_digest, to_tpml(policy.selection))
            return bytes(esapi.unseal(item, session1=session))
        except TSS2_Exception as exc:
            rc = _tpm_rc(exc)
            if rc in (TPM_RC_VALUE, TPM_RC_POLICY_FAIL):
                raise PolicyRefused(f"the vTPM refused the PCR policy (rc {rc:#x})",
                                    rc) from exc
            raise SealingError(f"unsealing the imported object failed: {exc}") from exc
