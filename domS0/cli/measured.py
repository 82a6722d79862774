"""vtpmctl's measured-launch and attestation commands: build, predict, quote, verify,
certs, eventlog.

``build`` streams the images to DomS0 (which measures them itself); ``quote`` fetches
evidence and writes the bundle; ``predict`` and ``verify`` run here, without DomS0,
since a verifier must not need to trust the host it verifies.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from measure.errors import MeasureError
from measure.evidence import Evidence, EvidenceError, load, parse_pcr_selection, write
from measure.images.config import LaunchConfig
from measure.manifest import Manifest
from measure.predict import predict
from measure.verify import check
from vtpm_manager.attestation.deep import (
    ek_name_from_certificate,
    host_ak_public_from_pem,
    verify_deep_quote,
)
from vtpm_manager.attestation.errors import DeepQuoteMismatch

from .errors import EXIT_REFUSED, CliError

CHUNK_BYTES = 1 << 20
BUILD_TIMEOUT = 300.0
QUOTE_TIMEOUT = 60.0
HOST_AK_FILE = "host-ak.pub.pem"


def _read_config(path: str | None) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read the launch config: {exc}") from None


def _chunks(path: str, kind: pb.ImageKind) -> Iterator[pb.BuildRequest]:
    try:
        with open(path, "rb") as stream:
            while data := stream.read(CHUNK_BYTES):
                yield pb.BuildRequest(chunk=pb.ImageChunk(kind=kind, data=data))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from None


def _stream(args: argparse.Namespace, header: pb.BuildHeader) -> Iterator[pb.BuildRequest]:
    yield pb.BuildRequest(header=header)
    yield from _chunks(args.kernel, pb.IMAGE_KIND_KERNEL)
    if args.initrd:
        yield from _chunks(args.initrd, pb.IMAGE_KIND_INITRD)


def _check_readable(*paths: str | None) -> None:
    for path in paths:
        if path is not None and not Path(path).is_file():
            raise CliError(f"{path}: no such file")


def _print_pcrs(manifest: Manifest) -> None:
    for bank in manifest.banks:
        for pcr, value in sorted(manifest.pcrs[bank].items()):
            print(f"{bank}:{pcr:<2} {value.hex()}")


def cmd_build(args: argparse.Namespace, channel: grpc.Channel) -> None:
    _check_readable(args.kernel, args.initrd)
    header = pb.BuildHeader(vtpm=args.name, cmdline=args.cmdline,
                            launch_config_json=_read_config(args.config), force=args.force,
                            create_if_missing=args.engine is not None,
                            engine=args.engine or "")
    reply = pb_grpc.AttestationStub(channel).Build(_stream(args, header),
                                                   timeout=BUILD_TIMEOUT)
    if args.manifest_out:
        Path(args.manifest_out).write_text(reply.manifest_json)
    if args.eventlog_out:
        Path(args.eventlog_out).write_bytes(reply.event_log)
    print(f"built {reply.vtpm.name} ({reply.vtpm.uuid}); AK: {reply.enrollment}")
    _print_pcrs(Manifest.loads(reply.manifest_json))
    print("qemu-system-x86_64 " + shlex.join(reply.qemu_args))


def cmd_quote(args: argparse.Namespace, channel: grpc.Channel) -> None:
    try:
        nonce = bytes.fromhex(args.nonce) if args.nonce else secrets.token_bytes(20)
    except ValueError:
        raise CliError("--nonce must be hexadecimal") from None
    reply = pb_grpc.AttestationStub(channel).Quote(
        pb.QuoteRequest(vtpm=args.name, nonce=nonce, pcr_selection=args.pcrs,
                        deep=args.deep),
        timeout=QUOTE_TIMEOUT)
    values: dict[str, dict[int, bytes]] = {}
    for item in reply.pcrs:
        values.setdefault(item.bank, {})[item.pcr] = item.value
    evidence = Evidence(
        vtpm_uuid=reply.vtpm_uuid, nonce=reply.nonce,
        selection=parse_pcr_selection(reply.pcr_selection), attest=reply.attest,
        signature=reply.signature, pcr_values=values,
        ak_public_pem=reply.ak_public_pem.encode(),
        certificates=tuple(pem.encode() for pem in reply.certificates),
        eventlog=reply.event_log, deep_quote=_deep_document(reply))
    target = write(evidence, Path(args.out))
    quote = evidence.quote
    print(f"wrote {target} (nonce {nonce.hex()}, clock={quote.clock} "
          f"resetCount={quote.reset_count} restartCount={quote.restart_count})")
    if evidence.deep_quote is not None:
        (Path(args.out) / HOST_AK_FILE).write_text(reply.deep_quote.host_ak_public_pem)
        print(f"deep quote: host PCRs {reply.deep_quote.host_pcr_selection}; host AK in "
              f"{Path(args.out) / HOST_AK_FILE} (pin it out of band to verify)")


def _deep_document(reply: pb.QuoteResponse) -> dict[str, Any] | None:
    """evidence.json's ``deep_quote``: the encoded host quote and what it binds."""
    if not reply.HasField("deep_quote"):
        return None
    deep = reply.deep_quote
    return {"version": 1, "encoded": base64.b64encode(deep.encoded).decode(),
            "host_ak_public_pem": deep.host_ak_public_pem, "ek_name": deep.ek_name.hex(),
            "policy_digest": deep.policy_digest.hex(),
            "host_pcr_selection": deep.host_pcr_selection,
            "measure_pcr": deep.measure_pcr}


def cmd_certs(args: argparse.Namespace, channel: grpc.Channel) -> None:
    reply = pb_grpc.AttestationStub(channel).GetCertificates(
        pb.GetCertificatesRequest(vtpm=args.name), timeout=QUOTE_TIMEOUT)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"ca.pem": reply.ca_certificate, "ak.pem": reply.ak_certificate,
             "ak.pub.pem": reply.ak_public_pem}
    files.update({f"ek-{i}.pem": pem for i, pem in enumerate(reply.ek_certificates)})
    for name, pem in files.items():
        if pem:
            (out / name).write_text(pem)
            print(out / name)


def cmd_eventlog(args: argparse.Namespace, channel: grpc.Channel) -> None:
    reply = pb_grpc.AttestationStub(channel).GetEventLog(
        pb.GetEventLogRequest(vtpm=args.name), timeout=QUOTE_TIMEOUT)
    Path(args.out).write_bytes(reply.event_log)
    print(f"wrote {args.out} ({len(reply.event_log)} bytes)")


def cmd_predict(args: argparse.Namespace) -> int:
    """Measure locally with the same code DomS0 runs: no vTPM, no DomS0."""
    _check_readable(args.kernel, args.initrd)
    try:
        text = _read_config(args.config)
        config = LaunchConfig.from_dict(json.loads(text)) if text.strip() else None
        manifest = predict(args.kernel, args.initrd, args.cmdline, config)
    except (MeasureError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.manifest_out:
        Path(args.manifest_out).write_text(manifest.dumps())
    _print_pcrs(manifest)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Every check, one line each; exit 0 only if all pass."""
    try:
        evidence = load(Path(args.evidence))
        manifest = Manifest.loads(Path(args.manifest).read_bytes())
        ca_pem = Path(args.ca).read_bytes()
        nonce = bytes.fromhex(args.nonce) if args.nonce is not None else evidence.nonce
    except (EvidenceError, MeasureError, OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.nonce is None:
        print("note: no --nonce given; checking the bundle's own nonce (no freshness)")
    try:
        host_ak = Path(args.host_ak).read_bytes() if args.host_ak else None
        policy = bytes.fromhex(args.policy_digest) if args.policy_digest else None
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    report = check(evidence, manifest.events, ca_pem, nonce)
    for line in report.lines:
        print(line)
    deep_ok, deep_line = _check_deep(evidence, host_ak, policy, args.require_deep)
    if deep_line:
        print(deep_line)
    failures = len(report.failures) + (0 if deep_ok else 1)
    print("verified: all checks passed" if report.ok and deep_ok else
          f"FAILED: {failures} check(s) failed")
    return 0 if report.ok and deep_ok else EXIT_REFUSED


def _check_deep(evidence: Evidence, host_ak_pem: bytes | None, policy: bytes | None,
                required: bool) -> tuple[bool, str]:
    """(passed, line) for the deep quote. The EK name is recreated from the bundle's
    EK certificate (the vTPM checks above tie it to the CA) rather than trusted from
    the deep quote's own copy; the policy digest is taken from the bundle unless the
    verifier pins it (``--policy-digest``)."""
    deep = evidence.deep_quote
    if deep is None:
        return (False, "FAIL deep quote: absent (--require-deep)") if required else \
            (True, "INFO deep quote: absent" if host_ak_pem is not None else "")
    if host_ak_pem is None:
        line = "deep quote: present, not checked (pass --host-ak)"
        return (False, f"FAIL {line}") if required else (True, f"INFO {line}")
    try:
        if deep.get("version") != 1:
            raise DeepQuoteMismatch(f"deep quote document version {deep.get('version')!r} "
                                    "is not supported (this verifier reads 1)")
        if len(evidence.certificates) < 2:
            raise DeepQuoteMismatch("the bundle carries no EK certificate to name the EK")
        ek_name = ek_name_from_certificate(evidence.certificates[1])
        if deep["ek_name"] != ek_name.hex():
            raise DeepQuoteMismatch("its EK name is not the one the bundle's EK "
                                    "certificate certifies")
        bound_policy = bytes.fromhex(deep["policy_digest"])
        if policy is not None and bound_policy != policy:
            raise DeepQuoteMismatch(f"DomS0's policy digest {bound_policy.hex()} is not the "
                                    f"expected {policy.hex()}")
        info = verify_deep_quote(base64.b64decode(deep["encoded"], validate=True),
                                 host_ak_public_from_pem(host_ak_pem), evidence.attest,
                                 evidence.vtpm_uuid, ek_name, bound_policy)
    except (DeepQuoteMismatch, KeyError, TypeError, ValueError) as exc:
        return False, f"FAIL deep quote: {exc}"
    measured = deep.get("measure_pcr")
    return True, (f"PASS deep quote: the host AK binds this quote, vTPM {evidence.vtpm_uuid}, "
                  f"EK {ek_name.hex()[:16]}..., policy {bound_policy.hex()[:16]}...; host "
                  f"PCRs {deep.get('host_pcr_selection')} (DomS0 measured into PCR "
                  f"{measured}), resetCount={info.reset_count}")


def add_parsers(sub: Any) -> None:
    """Add the subcommands to vtpmctl's parser (``sub``: its subparsers action)."""
    def images(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kernel", required=True, help="kernel image (ELF, bzImage, PE)")
        p.add_argument("--initrd", help="initial ramdisk (any compression)")
        p.add_argument("--cmdline", default="", help="kernel command line")
        p.add_argument("--config", metavar="F.json", help="launch config (memory_mib, "
                       "vcpus, devices, label)")
        p.add_argument("--manifest-out", metavar="M.json", help="write the manifest")

    p = sub.add_parser("build", help="measure a domain into its vTPM; print QEMU arguments")
    p.add_argument("name", help="vTPM name or UUID")
    images(p)
    p.add_argument("--engine", choices=("builtin", "swtpm"),
                   help="create the vTPM with this engine if it does not exist")
    p.add_argument("--eventlog-out", metavar="E.bin", help="write the TCG event log")
    p.add_argument("--force", action="store_true",
                   help="measure even though a front end (a running domain) holds the vTPM")
    p = sub.add_parser("predict", help="print the PCRs a build will produce (local)")
    images(p)
    p = sub.add_parser("quote", help="quote a vTPM's PCRs; write an evidence bundle")
    p.add_argument("name", help="vTPM name or UUID")
    p.add_argument("--nonce", help="verifier nonce, hex (default: 20 random bytes)")
    p.add_argument("--pcrs", default="sha256:0-23", help="PCR selection (tpm2-tools style)")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory")
    p.add_argument("--deep", action="store_true", help="also a host-TPM deep quote binding "
                   "this one (DomS0 served with --root-tpm TCTI)")
    p = sub.add_parser("verify", help="verify an evidence bundle (local)")
    p.add_argument("evidence", help="bundle directory or its evidence.json")
    p.add_argument("--manifest", required=True, help="reference manifest (build/predict)")
    p.add_argument("--ca", required=True, help="trusted vTPM CA certificate (PEM)")
    p.add_argument("--nonce", help="the nonce the verifier chose (hex)")
    p.add_argument("--host-ak", metavar="HOST_AK.pem", help="trusted host AK public key "
                   "(PEM): check the bundle's deep quote against it")
    p.add_argument("--policy-digest", metavar="HEX",
                   help="the DomS0 policy digest the deep quote must bind")
    p.add_argument("--require-deep", action="store_true",
                   help="fail unless a deep quote is present and checked")
    p = sub.add_parser("certs", help="write the CA, EK and AK certificates into DIR")
    p.add_argument("name", help="vTPM name or UUID")
    p.add_argument("--out", required=True, metavar="DIR")
    p = sub.add_parser("eventlog", help="write a vTPM's event log to FILE")
    p.add_argument("name", help="vTPM name or UUID")
    p.add_argument("--out", required=True, metavar="FILE")
