"""The destination proves itself with its host TPM before a vTPM is sent to it.

The source sends a fresh 32-byte nonce. The destination answers with a
:class:`DestinationProof`: the ephemeral P-384 migration key it generated for this
session, and a quote by its host AK over its DomS0 measurement PCR whose qualifying
data is SHA-256 of a canonical, versioned *binding*::

    "vtpm-stack migration destination binding v1\\0"
    || TPM2B(migration key, DER SubjectPublicKeyInfo)
    || TPM2B(source nonce)                       freshness: this session only
    || TPM2B(code) || TPM2B(config) || TPM2B(policy)   the DomS0 measurement claim
    || u8 measurement PCR || TPM2B(log start) || u16 n || n x TPM2B(digest)

Every field is length-prefixed, so no two tuples encode alike; the label's version
keeps a later binding from ever being read as this one (and keeps this binding apart
from the deep-quote binding signed by the same host AK).

What the source learns, and why each check is there (:func:`verify_proof`):

* the AK is the one the destination's host certificate names (its TPM Name), so the
  quote comes from *that* host's TPM and not from any TPM;
* the quote signs the binding, so the migration key was presented by whoever could
  use that AK *in this session* (the nonce);
* the quoted measurement PCR equals the replay of the runtime measurement log, and
  the log holds only the claimed DomS0 measurement, whose code digest is approved: no
  other DomS0 (an older, unapproved, or tampered one) extended that PCR since the log
  began. The claim's digest binds code, configuration and policy together, so the
  policy digest shown is the one that was measured, not merely asserted.

What is weak (known):

* the log's *start* value (the PCR before DomS0's runtime log began) is taken on
  trust unless the verifier pins it (``expected_log_start``): something that ran
  before the log began is invisible here;
* the host AK has no policy tying its use to DomS0's PCRs (see
  :mod:`vtpm_manager.attestation.deep`): any process that can reach the host TPM can
  quote with it. What a quote of *this PCR* proves still holds — the PCR names which
  DomS0 code ran — but not that DomS0 itself holds the migration key's private half.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT

from ..attestation.credential import parse_public
from ..attestation.deep import host_ak
from ..attestation.errors import AttestationError, QuoteMismatch
from ..attestation.quote import (
    BANKS,
    PCR_COUNT,
    parse_attest,
    parse_selection,
    quote_with,
    verify_quote,
    verify_signature,
)
from .errors import ProofRefused

BINDING_LABEL: Final = b"vtpm-stack migration destination binding v2\x00"
CLAIM_LABEL: Final = b"vtpm-stack doms0 measurement v2\x00"
PROOF_MAGIC: Final = b"VTPMDP\x00\x00"
PROOF_VERSION: Final = 2
SOURCE_NONCE_SIZE: Final = 32
DIGEST_SIZE: Final = 32
#: A DomS0 extends once per boot; a log longer than this is not one we produced.
MAX_LOG_DIGESTS: Final = 1024
#: A restricted signing key that never leaves its TPM: what a quoting AK must be.
_AK_REQUIRED: Final = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
                       | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.RESTRICTED
                       | TPMA_OBJECT.SIGN_ENCRYPT)


@dataclass(frozen=True)
class MeasurementClaim:
    """What the destination says its DomS0 is: digests of its code, its configuration
    and the access-control policy it enforces. Only :meth:`digest` is measured, so a
    claim is believed only when that digest is in the quoted, replayed log."""

    code_digest: bytes
    config_digest: bytes
    policy_digest: bytes

    def __post_init__(self) -> None:
        for name in ("code_digest", "config_digest", "policy_digest"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != DIGEST_SIZE:
                raise ValueError(f"{name} must be {DIGEST_SIZE} bytes (SHA-256)")

    def digest(self) -> bytes:
        """SHA-256(label || code || config || policy): what DomS0 extends into its
        measurement PCR. Fixed-size fields, so the concatenation is unambiguous."""
        return hashlib.sha256(CLAIM_LABEL + self.code_digest + self.config_digest
                              + self.policy_digest).digest()


@dataclass(frozen=True)
class MeasurementLog:
    """DomS0's runtime log of one host PCR (SHA-256 bank): its value when the log
    began and every digest extended since, in order."""

    pcr: int
    start: bytes
    digests: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if type(self.pcr) is not int or not 0 <= self.pcr < PCR_COUNT:
            raise ValueError(f"measurement PCR must be 0-{PCR_COUNT - 1}")
        if not isinstance(self.start, bytes) or len(self.start) != DIGEST_SIZE:
            raise ValueError(f"log start must be a {DIGEST_SIZE}-byte SHA-256 PCR value")
        if not isinstance(self.digests, tuple) or len(self.digests) > MAX_LOG_DIGESTS:
            raise ValueError(f"log digests must be a tuple of at most {MAX_LOG_DIGESTS}")
        for digest in self.digests:
            if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
                raise ValueError(f"every log digest must be {DIGEST_SIZE} bytes")

    def replay(self) -> bytes:
        """The PCR value the log predicts: extend = SHA-256(old || digest)
        (Part 1, 17.2 "Extend of a PCR")."""
        value = self.start
        for digest in self.digests:
            value = hashlib.sha256(value + digest).digest()
        return value


def binding(migration_key_der: bytes, source_nonce: bytes, claim: MeasurementClaim,
            log: MeasurementLog, active_policy: bytes) -> bytes:
    """The canonical bytes the host quote's qualifying data is the SHA-256 of.
    ``active_policy`` is the digest of the access-control policy the destination
    enforces now (it may have been loaded after DomS0 measured itself)."""
    out = [BINDING_LABEL, _tpm2b(migration_key_der), _tpm2b(source_nonce),
           _tpm2b(claim.code_digest), _tpm2b(claim.config_digest),
           _tpm2b(claim.policy_digest), _tpm2b(active_policy), struct.pack(">B", log.pcr),
           _tpm2b(log.start), struct.pack(">H", len(log.digests))]
    out += [_tpm2b(digest) for digest in log.digests]
    return b"".join(out)


def qualifying_data(migration_key_der: bytes, source_nonce: bytes, claim: MeasurementClaim,
                    log: MeasurementLog, active_policy: bytes) -> bytes:
    return hashlib.sha256(binding(migration_key_der, source_nonce, claim, log,
                                  active_policy)).digest()


def migration_key_der(key: ec.EllipticCurvePublicKey) -> bytes:
    """DER SubjectPublicKeyInfo: the form the proof carries and the binding hashes."""
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class DestinationProof:
    """The destination's answer to the source's nonce; :meth:`encode` is its wire form.

    ``pcrs`` are (bank, PCR, value) in quote order, as :func:`quote_with` returns."""

    host_ak_public: bytes
    migration_key: bytes
    attest: bytes
    signature: bytes
    pcrs: tuple[tuple[str, int, bytes], ...]
    claim: MeasurementClaim
    log: MeasurementLog
    active_policy: bytes = b""      # digest of the policy enforced now (32 bytes)

    def encode(self) -> bytes:
        """``magic | u16 version | TPM2B host AK public | TPM2B migration key | TPM2B
        attest | TPM2B signature | u16 n | n x (u16 bank alg, u8 pcr, TPM2B value)
        | code(32) | config(32) | policy(32) | u8 log PCR | start(32) | u16 m | m x 32
        | active policy(32)``
        """
        out = [PROOF_MAGIC, struct.pack(">H", PROOF_VERSION),
               _tpm2b(self.host_ak_public), _tpm2b(self.migration_key),
               _tpm2b(self.attest), _tpm2b(self.signature),
               struct.pack(">H", len(self.pcrs))]
        for bank, pcr, value in self.pcrs:
            out += [struct.pack(">HB", BANKS[bank][0], pcr), _tpm2b(value)]
        claim, log = self.claim, self.log
        out += [claim.code_digest, claim.config_digest, claim.policy_digest,
                struct.pack(">B", log.pcr), log.start, struct.pack(">H", len(log.digests)),
                *log.digests, self.active_policy]
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> DestinationProof:
        """The proof in ``data``; :class:`ProofRefused` if it is not exactly one
        well-formed proof of a version we read. Decoding checks form, not truth:
        :func:`verify_proof` does that."""
        reader = _Reader(data)
        if reader.take(len(PROOF_MAGIC)) != PROOF_MAGIC:
            raise ProofRefused("not a vtpm-stack destination proof (bad magic)")
        (version,) = reader.unpack(">H")
        if version != PROOF_VERSION:
            raise ProofRefused(f"destination proof version {version}; this host reads "
                               f"version {PROOF_VERSION}")
        public, key, attest, signature = (reader.tpm2b(), reader.tpm2b(), reader.tpm2b(),
                                          reader.tpm2b())
        names = {alg: name for name, (alg, _) in BANKS.items()}
        pcrs = []
        for _ in range(reader.unpack(">H")[0]):
            alg, pcr = reader.unpack(">HB")
            if alg not in names:
                raise ProofRefused(f"malformed destination proof: unknown PCR bank "
                                   f"0x{alg:04x}")
            pcrs.append((names[alg], pcr, reader.tpm2b()))
        try:
            claim = MeasurementClaim(reader.take(DIGEST_SIZE), reader.take(DIGEST_SIZE),
                                     reader.take(DIGEST_SIZE))
            log_pcr, = reader.unpack(">B")
            start = reader.take(DIGEST_SIZE)
            (count,) = reader.unpack(">H")
            if count > MAX_LOG_DIGESTS:
                raise ValueError(f"{count} log entries (at most {MAX_LOG_DIGESTS})")
            log = MeasurementLog(log_pcr, start,
                                 tuple(reader.take(DIGEST_SIZE) for _ in range(count)))
            active = reader.take(DIGEST_SIZE)
        except ValueError as exc:
            raise ProofRefused(f"malformed destination proof: {exc}") from exc
        reader.end()
        return cls(public, key, attest, signature, tuple(pcrs), claim, log, active)


def make_proof(host_tcti: Any, migration_key: ec.EllipticCurvePublicKey,
               source_nonce: bytes, claim: MeasurementClaim,
               log: MeasurementLog, active_policy: bytes | None = None) -> DestinationProof:
    """Quote the host TPM (tpm2-pytss TCTI ``host_tcti``) with the host AK over
    ``sha256:<log.pcr>`` — only the measurement PCR: it is what names the DomS0 that
    ran, and a narrow selection keeps firmware updates from breaking migration — with
    qualifying data binding the migration key, the source's nonce, claim and log.

    The caller is trusted to pass its own claim and log; a wrong one only produces a
    proof the source refuses. ``active_policy`` defaults to the claim's policy digest
    (no policy loaded since the start)."""
    active = claim.policy_digest if active_policy is None else active_policy
    if len(active) != DIGEST_SIZE:
        raise ValueError(f"the active policy digest is {DIGEST_SIZE} bytes")
    if not isinstance(migration_key, ec.EllipticCurvePublicKey) \
            or migration_key.curve.name != "secp384r1":
        raise ValueError("the migration key must be an ECDH P-384 public key")
    if not isinstance(source_nonce, bytes) or len(source_nonce) != SOURCE_NONCE_SIZE:
        raise ValueError(f"the source's nonce must be {SOURCE_NONCE_SIZE} bytes")
    der = migration_key_der(migration_key)
    extra = qualifying_data(der, source_nonce, claim, log, active)
    with ESAPI(host_tcti) as esapi, host_ak(esapi) as (handle, public):
        result = quote_with(esapi, handle, extra, parse_selection(f"sha256:{log.pcr}"))
    return DestinationProof(host_ak_public=public, migration_key=der, attest=result.attest,
                            signature=result.signature, pcrs=result.pcrs, claim=claim,
                            log=log, active_policy=active)


def ak_name(host_ak_public: bytes) -> bytes:
    """The TPM Name of the AK in a marshalled TPM2B_PUBLIC: nameAlg (SHA-256) ||
    SHA-256(TPMT_PUBLIC) (Part 1, 16 "Names"). What a host certificate pins."""
    try:
        area = parse_public(host_ak_public)
    except AttestationError as exc:
        raise ProofRefused(f"the host AK public area is malformed: {exc}") from exc
    if area.nameAlg != TPM2_ALG.SHA256:
        raise ProofRefused("the host AK's name algorithm is not SHA-256")
    # parse_public consumed the whole buffer, so what follows the TPM2B size is exactly
    # the TPMT_PUBLIC the TPM hashed.
    return struct.pack(">H", TPM2_ALG.SHA256) + hashlib.sha256(host_ak_public[2:]).digest()


def verify_proof(proof: DestinationProof, *, source_nonce: bytes, trusted_ak_name: bytes,
                 allowed_code_digests: Collection[bytes],
                 expected_policy_digest: bytes | None,
                 expected_log_start: bytes | None = None) -> ec.EllipticCurvePublicKey:
    """Check a destination's proof; return its migration key (P-384) to encrypt to.

    ``trusted_ak_name`` comes from the destination's host certificate (after
    :func:`~.hostcert.verify_host_certificate`); ``allowed_code_digests`` is the
    source's list of approved DomS0 builds. ``expected_log_start``, when given, pins
    the measurement PCR's value before DomS0's log began (e.g. all zeros on a host
    where nothing else uses that PCR). Each failed check raises :class:`ProofRefused`
    naming it."""
    if len(source_nonce) != SOURCE_NONCE_SIZE:
        raise ValueError(f"the source's nonce must be {SOURCE_NONCE_SIZE} bytes")
    claim, log = proof.claim, proof.log

    if not hmac.compare_digest(ak_name(proof.host_ak_public), trusted_ak_name):
        raise ProofRefused("the quote is signed by another AK than the one the "
                           "destination's host certificate names")
    area = parse_public(proof.host_ak_public)
    if int(area.objectAttributes) & _AK_REQUIRED != _AK_REQUIRED:
        raise ProofRefused("the host AK is not a restricted, TPM-resident signing key")

    expected = qualifying_data(proof.migration_key, source_nonce, claim, log,
                               proof.active_policy)
    try:
        verify_signature(proof.host_ak_public, proof.attest, proof.signature)
        if not hmac.compare_digest(parse_attest(proof.attest).extra_data, expected):
            raise ProofRefused("the host quote does not bind this migration key, nonce and "
                               "measurement (made for another migration session?)")
        verify_quote(proof.host_ak_public, proof.attest, proof.signature, expected,
                     proof.pcrs)
    except QuoteMismatch as exc:
        raise ProofRefused(f"host quote: {exc}") from exc
    if len(proof.pcrs) != 1 or proof.pcrs[0][:2] != ("sha256", log.pcr):
        raise ProofRefused(f"the host quote must cover exactly the measurement PCR "
                           f"sha256:{log.pcr}")
    if not hmac.compare_digest(proof.pcrs[0][2], log.replay()):
        raise ProofRefused(f"the destination's measurement log does not replay to its "
                           f"quoted PCR {log.pcr}")
    if expected_log_start is not None and log.start != expected_log_start:
        raise ProofRefused(f"the destination's PCR {log.pcr} was {log.start.hex()[:16]}… "
                           "before DomS0's log began, not the expected value")

    measured = claim.digest()
    if measured not in log.digests:
        raise ProofRefused("the destination's DomS0 measurement claim is not in its "
                           "measurement log")
    if claim.code_digest not in allowed_code_digests:
        raise ProofRefused(f"destination DomS0 code measurement "
                           f"{claim.code_digest.hex()[:16]}… is not approved")
    if any(digest != measured for digest in log.digests):
        raise ProofRefused("another, unapproved DomS0 ran on the destination host since "
                           "boot")
    if expected_policy_digest is not None \
            and not hmac.compare_digest(proof.active_policy, expected_policy_digest):
        raise ProofRefused(f"destination DomS0 enforces policy "
                           f"{proof.active_policy.hex()[:16]}…, not the expected one")
    return _migration_key(proof.migration_key)


def _migration_key(der: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        raise ProofRefused("the destination's migration key is not a DER public key") \
            from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise ProofRefused("the destination's migration key is not a P-384 key")
    if migration_key_der(key) != der:
        raise ProofRefused("the destination's migration key is not in canonical DER form")
    return key


def _tpm2b(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("a TPM2B holds at most 65535 bytes")
    return struct.pack(">H", len(data)) + data


class _Reader:
    """Bounds-checked reading of a proof; :meth:`end` refuses trailing bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.offset:
            raise ProofRefused("destination proof truncated")
        value = self.data[self.offset : self.offset + n]
        self.offset += n
        return value

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def tpm2b(self) -> bytes:
        (n,) = self.unpack(">H")
        return self.take(n)

    def end(self) -> None:
        if self.offset != len(self.data):
            raise ProofRefused(f"{len(self.data) - self.offset} trailing bytes after the "
                               "destination proof")
