"""The cryptographic core of vTPM migration: the package, the destination's host-TPM
proof (against a real swtpm as the host TPM) and the host certificates.

Every refusal test changes one thing about a good exchange and checks that exactly
that is named in the refusal."""

from __future__ import annotations

import datetime
import hashlib
import os
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import TPM2_SU

from domS0.harness import SwtpmProcess
from vtpm_manager.attestation.deep import host_ak_public
from vtpm_manager.migration.errors import PackageRefused, ProofRefused
from vtpm_manager.migration.hostcert import (
    ak_name_of,
    cert_pem,
    create_hosts_ca,
    host_name_of,
    issue_host_certificate,
    key_pem,
    load_cert_pem,
    load_key_pem,
    verify_host_certificate,
)
from vtpm_manager.migration.package import (
    MAGIC,
    PackageHeader,
    Payload,
    key_id,
    open_package,
    seal_package,
)
from vtpm_manager.migration.proof import (
    DestinationProof,
    MeasurementClaim,
    MeasurementLog,
    ak_name,
    make_proof,
    migration_key_der,
    verify_proof,
)
from vtpm_manager.root.host import extend_pcr

# -- the package ---------------------------------------------------------------------

SESSION_NONCE = bytes(range(32))


@dataclass
class Exchange:
    destination: ec.EllipticCurvePrivateKey
    source: ec.EllipticCurvePrivateKey
    header: PackageHeader
    payload: Payload

    def seal(self) -> bytes:
        return seal_package(self.header, self.payload, self.destination.public_key(),
                            self.source)

    def open(self, data: bytes, **overrides: object) -> tuple[PackageHeader, Payload]:
        kwargs: dict[str, object] = {"expected_nonce": SESSION_NONCE,
                                     "expected_destination_host": "host-b"}
        kwargs.update(overrides)
        return open_package(data, self.destination, self.source.public_key(),
                            **kwargs)  # type: ignore[arg-type]


def _exchange(curve: ec.EllipticCurve) -> Exchange:
    destination = ec.generate_private_key(ec.SECP384R1())
    header = PackageHeader(
        migration_id=os.urandom(16), vtpm_uuid=str(uuid.uuid4()), vtpm_name="dom1",
        engine="swtpm", generation=7, source_host="host-a", destination_host="host-b",
        destination_nonce=SESSION_NONCE, destination_key_id=key_id(destination.public_key()),
        created=time.time())
    payload = Payload(state=os.urandom(3000), record={"name": "dom1", "pcrs": [0, 7],
                                                      "nested": {"ok": True}},
                      files={"eventlog.bin": os.urandom(500), "ek.pem": b"-----BEGIN"})
    return Exchange(destination, ec.generate_private_key(curve), header, payload)


@pytest.fixture(params=[ec.SECP256R1(), ec.SECP384R1()], ids=["p256-source", "p384-source"])
def exchange(request: pytest.FixtureRequest) -> Exchange:
    return _exchange(request.param)


def _regions(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges of each frame region, read independently of the implementation."""
    offset = len(MAGIC) + 2
    (n,) = struct.unpack_from(">I", data, offset)
    header = (offset + 4, offset + 4 + n)
    offset = header[1]
    (n,) = struct.unpack_from(">H", data, offset)
    ephemeral = (offset + 2, offset + 2 + n)
    nonce = (ephemeral[1], ephemeral[1] + 12)
    (n,) = struct.unpack_from(">I", data, nonce[1])
    ciphertext = (nonce[1] + 4, nonce[1] + 4 + n)
    (n,) = struct.unpack_from(">H", data, ciphertext[1])
    signature = (ciphertext[1] + 2, ciphertext[1] + 2 + n)
    assert signature[1] == len(data)
    return {"header": header, "ephemeral": ephemeral, "nonce": nonce,
            "ciphertext": ciphertext, "signature": signature}


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _resign(data: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The frame re-signed by ``key``: a source that signs whatever it is given."""
    signed_end = _regions(data)["ciphertext"][1]
    signature = key.sign(data[:signed_end], ec.ECDSA(hashes.SHA384()))
    return data[:signed_end] + struct.pack(">H", len(signature)) + signature


def test_package_round_trip(exchange: Exchange) -> None:
    data = exchange.seal()
    assert data.startswith(b"VTPMMIG\x00\x00\x01")
    assert exchange.payload.state not in data  # encrypted, not merely wrapped
    header, payload = exchange.open(data)
    assert header == exchange.header
    assert payload == exchange.payload
    # Fresh ephemeral key and nonce each time: the same inputs never give the same bytes.
    assert exchange.seal() != data


def test_header_and_payload_encodings_are_canonical_and_versioned() -> None:
    ex = _exchange(ec.SECP256R1())
    encoded = ex.header.encode()
    assert PackageHeader.decode(encoded) == ex.header
    assert b'"format":"vtpm-stack migration package"' in encoded
    assert b'"version":1' in encoded
    assert Payload.decode(ex.payload.encode()) == ex.payload
    # Same value, other spelling: refused, since the header bytes are hashed into the key.
    with pytest.raises(PackageRefused, match="canonical"):
        PackageHeader.decode(encoded.replace(b'"engine":', b'"engine": '))
    with pytest.raises(PackageRefused, match="version 2"):
        PackageHeader.decode(encoded.replace(b'"version":1', b'"version":2'))
    with pytest.raises(PackageRefused, match="malformed package header"):
        PackageHeader.decode(encoded.replace(b'"generation":7', b'"generation":true'))
    with pytest.raises(PackageRefused, match="malformed package header"):
        PackageHeader.decode(encoded[:-1] + b',"extra":1}')
    payload = ex.payload.encode()
    with pytest.raises(PackageRefused, match="trailing"):
        Payload.decode(payload + b"\x00")
    with pytest.raises(PackageRefused, match="truncated"):
        Payload.decode(payload[:-1])
    # A payload naming an artifact that would escape a directory is refused.
    bad = payload.replace(b"ek.pem", b"../x.p")
    with pytest.raises(PackageRefused, match="plain file name"):
        Payload.decode(bad)
    with pytest.raises(ValueError, match="plain file name"):
        Payload(state=b"", files={"../etc": b""})


def test_wrong_destination_key_is_refused(exchange: Exchange) -> None:
    data = exchange.seal()
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(PackageRefused, match="another migration key"):
        open_package(data, other, exchange.source.public_key(), expected_nonce=SESSION_NONCE,
                     expected_destination_host="host-b")


@pytest.mark.parametrize("region", ["header", "ephemeral", "nonce", "ciphertext",
                                    "signature"])
def test_one_flipped_byte_in_any_region_is_refused(exchange: Exchange, region: str) -> None:
    data = exchange.seal()
    start, end = _regions(data)[region]
    for at in (start, (start + end) // 2, end - 1):
        # The point's 0x04 prefix is checked while parsing, before the signature.
        expected = ("not an uncompressed P-384 point" if (region, at) == ("ephemeral", start)
                    else "signature does not verify")
        with pytest.raises(PackageRefused, match=expected):
            exchange.open(_flip(data, at))


def test_tampered_ciphertext_fails_decryption_even_when_signed(exchange: Exchange) -> None:
    """The AEAD tag stands on its own: a frame changed and then re-signed (a source that
    signs anything) still does not decrypt."""
    data = exchange.seal()
    regions = _regions(data)
    for region in ("ciphertext", "nonce", "ephemeral"):
        start, end = regions[region]
        tampered = _resign(_flip(data, (start + end) // 2), exchange.source)
        with pytest.raises(PackageRefused, match=r"tampered: decryption failed|P-384 point"):
            exchange.open(tampered)
    # Untouched but re-signed: still opens (the test above is about the flip, not _resign).
    assert exchange.open(_resign(data, exchange.source))[1] == exchange.payload


def test_header_moved_onto_another_package_does_not_decrypt(exchange: Exchange) -> None:
    """The header is hashed into the key: a signed frame whose header was swapped for
    another session's (same destination key) does not decrypt."""
    first = exchange.seal()
    other_header = replace(exchange.header, generation=8)
    second = seal_package(other_header, exchange.payload, exchange.destination.public_key(),
                          exchange.source)
    r1, r2 = _regions(first), _regions(second)
    spliced = (second[: r2["header"][0] - 4] + first[r1["header"][0] - 4 : r1["header"][1]]
               + second[r2["header"][1] :])
    with pytest.raises(PackageRefused, match="tampered: decryption failed"):
        exchange.open(_resign(spliced, exchange.source))


def test_signature_by_another_key_is_refused(exchange: Exchange) -> None:
    impostor = ec.generate_private_key(ec.SECP384R1())
    forged = seal_package(exchange.header, exchange.payload,
                          exchange.destination.public_key(), impostor)
    with pytest.raises(PackageRefused, match="signature does not verify with the source's "
                                             "certificate"):
        exchange.open(forged)
    # And a genuine package checked against another host's certificate key.
    with pytest.raises(PackageRefused, match="signature does not verify"):
        open_package(exchange.seal(), exchange.destination, impostor.public_key(),
                     expected_nonce=SESSION_NONCE, expected_destination_host="host-b")


def test_wrong_session_nonce_is_refused(exchange: Exchange) -> None:
    with pytest.raises(PackageRefused, match=r"another migration session \(nonce\)"):
        exchange.open(exchange.seal(), expected_nonce=bytes(32))


def test_wrong_destination_host_is_refused(exchange: Exchange) -> None:
    with pytest.raises(PackageRefused, match="made for another destination"):
        exchange.open(exchange.seal(), expected_destination_host="host-c")


def test_wrong_source_host_is_refused_when_checked(exchange: Exchange) -> None:
    data = exchange.seal()
    assert exchange.open(data, expected_source_host="host-a")[0] == exchange.header
    with pytest.raises(PackageRefused, match="names source host 'host-a'"):
        exchange.open(data, expected_source_host="host-z")


def test_truncated_and_trailing_data_are_refused() -> None:
    ex = _exchange(ec.SECP256R1())
    data = ex.seal()
    for cut in range(len(data)):
        with pytest.raises(PackageRefused):
            ex.open(data[:cut])
    with pytest.raises(PackageRefused, match="1 trailing bytes"):
        ex.open(data + b"\x00")
    with pytest.raises(PackageRefused, match="bad magic"):
        ex.open(b"VTPMMIX\x00" + data[8:])
    with pytest.raises(PackageRefused, match="version 2; this host reads version 1"):
        ex.open(data[:8] + b"\x00\x02" + data[10:])
    # A length field claiming more than is there, or more than the limit.
    huge = data[:10] + struct.pack(">I", 0xFFFFFFFF) + data[14:]
    with pytest.raises(PackageRefused, match="exceeds the limit"):
        ex.open(huge)


def test_seal_refuses_keys_and_headers_that_do_not_fit() -> None:
    ex = _exchange(ec.SECP256R1())
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(ValueError, match="P-384"):
        seal_package(replace(ex.header, destination_key_id=key_id(p256)), ex.payload, p256,
                     ex.source)
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ValueError, match="destination_key_id"):
        seal_package(ex.header, ex.payload, other, ex.source)
    with pytest.raises(ValueError, match="P-256 or P-384"):
        seal_package(ex.header, ex.payload, ex.destination.public_key(),
                     ec.generate_private_key(ec.SECP521R1()))


def test_nothing_secret_in_refusals(exchange: Exchange) -> None:
    data = exchange.seal()
    start, end = _regions(data)["ciphertext"]
    with pytest.raises(PackageRefused) as refused:
        exchange.open(_resign(_flip(data, start), exchange.source))
    text = str(refused.value)
    assert exchange.payload.state[:8].hex() not in text
    assert data[start:end][:8].hex() not in text


# -- the destination's proof, against a real swtpm host TPM ------------------------

CLAIM = MeasurementClaim(code_digest=hashlib.sha256(b"doms0 code v1").digest(),
                         config_digest=hashlib.sha256(b"doms0.toml").digest(),
                         policy_digest=hashlib.sha256(b"policy").digest())
OTHER = replace(CLAIM, code_digest=hashlib.sha256(b"doms0 code, patched").digest())
MEASURE_PCR = 15
SECOND_PCR = 14  # the same TPM, where an unapproved DomS0 extended before ours


@dataclass
class Host:
    tcti: str
    ak_name: bytes
    log: MeasurementLog          # PCR 15: only CLAIM
    crowded_log: MeasurementLog  # PCR 14: OTHER, then CLAIM

    def proof(self, key: ec.EllipticCurvePublicKey, nonce: bytes,
              claim: MeasurementClaim = CLAIM,
              log: MeasurementLog | None = None) -> DestinationProof:
        return make_proof(TCTILdr.parse(self.tcti), key, nonce, claim, log or self.log)


def _pcr(esapi: ESAPI, pcr: int) -> bytes:
    _, _, digests = esapi.pcr_read(f"sha256:{pcr}")
    return bytes(digests[0])


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    tpm = SwtpmProcess(tmp_path_factory.mktemp("migration") / "host",
                       flags="not-need-init").start()
    try:
        with ESAPI(TCTILdr.parse(tpm.tcti)) as esapi:
            esapi.startup(TPM2_SU.CLEAR)
            start15, start14 = _pcr(esapi, MEASURE_PCR), _pcr(esapi, SECOND_PCR)
            extend_pcr(esapi, MEASURE_PCR, CLAIM.digest())
            extend_pcr(esapi, SECOND_PCR, OTHER.digest())
            extend_pcr(esapi, SECOND_PCR, CLAIM.digest())
        yield Host(tpm.tcti, ak_name(host_ak_public(TCTILdr.parse(tpm.tcti))),
                   MeasurementLog(MEASURE_PCR, start15, (CLAIM.digest(),)),
                   MeasurementLog(SECOND_PCR, start14, (OTHER.digest(), CLAIM.digest())))
    finally:
        tpm.stop()


@dataclass
class Session:
    key: ec.EllipticCurvePrivateKey
    nonce: bytes
    proof: DestinationProof


@pytest.fixture(scope="module")
def session(host: Host) -> Session:
    key, nonce = ec.generate_private_key(ec.SECP384R1()), os.urandom(32)
    return Session(key, nonce, host.proof(key.public_key(), nonce))


def _verify(proof: DestinationProof, session: Session, host: Host,
            **overrides: object) -> ec.EllipticCurvePublicKey:
    kwargs: dict[str, object] = {
        "source_nonce": session.nonce, "trusted_ak_name": host.ak_name,
        "allowed_code_digests": {CLAIM.code_digest, hashlib.sha256(b"older").digest()},
        "expected_policy_digest": CLAIM.policy_digest}
    kwargs.update(overrides)
    return verify_proof(proof, **kwargs)  # type: ignore[arg-type]


def test_proof_round_trip_then_package_to_the_proved_key(host: Host,
                                                         session: Session) -> None:
    proof = session.proof
    assert [(bank, pcr) for bank, pcr, _ in proof.pcrs] == [("sha256", MEASURE_PCR)]
    assert proof.pcrs[0][2] == host.log.replay() != host.log.start
    decoded = DestinationProof.decode(proof.encode())
    assert decoded == proof
    key = _verify(decoded, session, host)
    assert migration_key_der(key) == migration_key_der(session.key.public_key())
    assert _verify(proof, session, host, expected_policy_digest=None,
                   expected_log_start=host.log.start) is not None

    # The whole handshake: the source encrypts to the key the proof vouched for.
    source = ec.generate_private_key(ec.SECP256R1())
    header = PackageHeader(os.urandom(16), str(uuid.uuid4()), "dom1", "builtin", 1,
                           "host-a", "host-b", session.nonce, key_id(key), time.time())
    data = seal_package(header, Payload(b"state"), key, source)
    assert open_package(data, session.key, source.public_key(), expected_nonce=session.nonce,
                        expected_destination_host="host-b")[1].state == b"state"


def test_proof_decode_is_strict(session: Session) -> None:
    encoded = session.proof.encode()
    for cut in (0, 8, 10, len(encoded) // 2, len(encoded) - 1):
        with pytest.raises(ProofRefused, match=r"truncated|bad magic"):
            DestinationProof.decode(encoded[:cut])
    with pytest.raises(ProofRefused, match="1 trailing bytes"):
        DestinationProof.decode(encoded + b"\x00")
    with pytest.raises(ProofRefused, match="version 9"):
        DestinationProof.decode(encoded[:8] + b"\x00\x09" + encoded[10:])


def test_proof_with_another_ak_name_is_refused(host: Host, session: Session) -> None:
    other_name = b"\x00\x0b" + hashlib.sha256(b"another host's AK").digest()
    with pytest.raises(ProofRefused, match="another AK than the one the destination's host "
                                           "certificate names"):
        _verify(session.proof, session, host, trusted_ak_name=other_name)


def test_proof_for_another_nonce_is_refused(host: Host, session: Session) -> None:
    with pytest.raises(ProofRefused, match="another migration session"):
        _verify(session.proof, session, host, source_nonce=os.urandom(32))


def test_proof_with_a_swapped_migration_key_is_refused(host: Host, session: Session) -> None:
    """A man in the middle replacing the key: the quote no longer binds it."""
    mitm = migration_key_der(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(ProofRefused, match="does not bind this migration key"):
        _verify(replace(session.proof, migration_key=mitm), session, host)


def test_proof_with_a_tampered_quote_is_refused(host: Host, session: Session) -> None:
    proof = session.proof
    with pytest.raises(ProofRefused, match="signature does not verify"):
        _verify(replace(proof, attest=_flip(proof.attest, len(proof.attest) - 5)), session,
                host)
    bank, pcr, value = proof.pcrs[0]
    with pytest.raises(ProofRefused, match="pcrDigest"):
        _verify(replace(proof, pcrs=((bank, pcr, _flip(value, 0)),)), session, host)


def test_unapproved_code_digest_is_refused(host: Host, session: Session) -> None:
    with pytest.raises(ProofRefused) as refused:
        _verify(session.proof, session, host,
                allowed_code_digests={hashlib.sha256(b"older").digest()})
    assert str(refused.value) == (f"destination DomS0 code measurement "
                                  f"{CLAIM.code_digest.hex()[:16]}… is not approved")


def test_log_that_does_not_replay_is_refused(host: Host, session: Session) -> None:
    # A log claiming a second extend that the PCR does not show, quoted honestly.
    lying = replace(host.log, digests=(CLAIM.digest(), CLAIM.digest()))
    proof = host.proof(session.key.public_key(), session.nonce, log=lying)
    with pytest.raises(ProofRefused, match="does not replay to its quoted PCR 15"):
        _verify(proof, session, host)
    # A log hiding the first (unapproved) extend of PCR 14: does not replay either.
    hiding = replace(host.crowded_log, digests=(CLAIM.digest(),))
    proof = host.proof(session.key.public_key(), session.nonce, log=hiding)
    with pytest.raises(ProofRefused, match="does not replay to its quoted PCR 14"):
        _verify(proof, session, host)


def test_extra_unapproved_digest_in_the_log_is_refused(host: Host, session: Session) -> None:
    proof = host.proof(session.key.public_key(), session.nonce, log=host.crowded_log)
    assert proof.pcrs[0][2] == host.crowded_log.replay()  # the log is true ...
    with pytest.raises(ProofRefused, match="another, unapproved DomS0 ran on the "
                                           "destination host since boot"):
        _verify(proof, session, host)  # ... and says another DomS0 ran first
    # Even when that other DomS0's code is on the approved list.
    with pytest.raises(ProofRefused, match="another, unapproved DomS0"):
        _verify(proof, session, host,
                allowed_code_digests={CLAIM.code_digest, OTHER.code_digest})


def test_claim_not_in_the_log_is_refused(host: Host, session: Session) -> None:
    proof = host.proof(session.key.public_key(), session.nonce, claim=OTHER)
    with pytest.raises(ProofRefused, match="claim is not in its measurement log"):
        _verify(proof, session, host,
                allowed_code_digests={CLAIM.code_digest, OTHER.code_digest})


def test_wrong_policy_digest_is_refused(host: Host, session: Session) -> None:
    with pytest.raises(ProofRefused, match=r"enforces policy .* not the expected one"):
        _verify(session.proof, session, host,
                expected_policy_digest=hashlib.sha256(b"another policy").digest())


def test_unexpected_log_start_is_refused(host: Host, session: Session) -> None:
    with pytest.raises(ProofRefused, match="before DomS0's log began"):
        _verify(session.proof, session, host, expected_log_start=b"\x01" * 32)


def test_make_proof_refuses_a_non_p384_key(host: Host) -> None:
    with pytest.raises(ValueError, match="P-384"):
        host.proof(ec.generate_private_key(ec.SECP256R1()).public_key(), os.urandom(32))


def test_measurement_log_replays_like_a_pcr() -> None:
    start = bytes(32)
    d1, d2 = hashlib.sha256(b"1").digest(), hashlib.sha256(b"2").digest()
    expected = hashlib.sha256(hashlib.sha256(start + d1).digest() + d2).digest()
    assert MeasurementLog(15, start, (d1, d2)).replay() == expected
    assert MeasurementLog(15, start, ()).replay() == start
    with pytest.raises(ValueError):
        MeasurementLog(24, start, ())
    with pytest.raises(ValueError):
        MeasurementClaim(b"short", bytes(32), bytes(32))


# -- host certificates ---------------------------------------------------------------

def test_host_certificate_names_the_host_and_its_ak(host: Host) -> None:
    ca_key, ca_cert = create_hosts_ca("vtpm-stack hosts CA")
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    host_key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_host_certificate(ca_key, ca_cert, "host-b", host_key.public_key(),
                                  ak_name=host.ak_name, addresses=("127.0.0.1", "::1"))
    assert host_name_of(cert) == "host-b"
    assert ak_name_of(cert) == host.ak_name
    verify_host_certificate(cert, [ca_cert])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["host-b"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {x509.ExtendedKeyUsageOID.SERVER_AUTH,
                        x509.ExtendedKeyUsageOID.CLIENT_AUTH}
    # PEM round trips.
    assert load_cert_pem(cert_pem(cert)) == cert
    assert load_key_pem(key_pem(host_key)).private_numbers() == host_key.private_numbers()
    # A host without an AK name: a possible source, never a proved destination.
    plain = issue_host_certificate(ca_key, ca_cert, "host-a", host_key.public_key(),
                                   ak_name=None)
    assert ak_name_of(plain) is None


def test_certificate_from_another_ca_is_refused() -> None:
    ca_key, ca_cert = create_hosts_ca("hosts CA")
    rogue_key, rogue_cert = create_hosts_ca("hosts CA")  # same name, other key
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    rogue = issue_host_certificate(rogue_key, rogue_cert, "host-b", key, ak_name=None)
    with pytest.raises(ProofRefused, match="destination certificate not issued by a trusted "
                                           "hosts CA"):
        verify_host_certificate(rogue, [ca_cert])
    verify_host_certificate(rogue, [ca_cert, rogue_cert])  # trusted once listed
    genuine = issue_host_certificate(ca_key, ca_cert, "host-b", key, ak_name=None, days=1)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    with pytest.raises(ProofRefused, match="source certificate is not valid now"):
        verify_host_certificate(genuine, [ca_cert], role="source", now=later)


def test_ak_name_is_the_tpm_name_of_the_public_area(host: Host) -> None:
    public = host_ak_public(TCTILdr.parse(host.tcti))
    assert host.ak_name == b"\x00\x0b" + hashlib.sha256(public[2:]).digest()
    with pytest.raises(ProofRefused, match="malformed"):
        ak_name(public[:-1])


def test_proof_from_a_tpm_whose_ak_the_certificate_does_not_name(
        host: Host, session: Session, tmp_path: Path) -> None:
    """A second host TPM answering for the first: its AK is not the certified one."""
    tpm = SwtpmProcess(tmp_path / "other", flags="not-need-init").start()
    try:
        with ESAPI(TCTILdr.parse(tpm.tcti)) as esapi:
            esapi.startup(TPM2_SU.CLEAR)
            start = _pcr(esapi, MEASURE_PCR)
            extend_pcr(esapi, MEASURE_PCR, CLAIM.digest())
        log = MeasurementLog(MEASURE_PCR, start, (CLAIM.digest(),))
        proof = make_proof(TCTILdr.parse(tpm.tcti), session.key.public_key(), session.nonce,
                           CLAIM, log)
    finally:
        tpm.stop()
    assert ak_name(proof.host_ak_public) != host.ak_name
    with pytest.raises(ProofRefused, match="another AK"):
        _verify(proof, session, host)
