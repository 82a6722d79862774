"""vtpmctl's sealing commands: seal, unseal (through DomS0), policy sign/keygen (local) and
policy revoke/version (the vTPM's revocation counter, through DomS0's Transmit RPC).

``--policy`` takes one of:

- ``current[:PCRS]`` — PolicyPCR over the vTPM's PCR values now (default PCRS
  ``sha256:0-9``: the firmware PCRs and the 8/9 our builds extend);
- ``manifest:M.json[:PCRS]`` — PolicyPCR over the values the manifest predicts, computed
  here and sent (default PCRS ``sha256:8,9``, the PCRs ``vtpmctl build`` extends), so a
  secret can be sealed before the domain's first build;
- ``authorized:APPROVAL_PUB.pem`` — PolicyAuthorize to an approval key: any PCR policy
  ``vtpmctl policy sign`` signs with its private key unseals it; a kernel update needs a
  new signature, not a re-seal. With ``--revocable`` the signatures must also carry a
  version (``vtpmctl policy sign --version V``) and open the object only while the vTPM's
  revocation counter is at most V; ``vtpmctl policy revoke DOMAIN --below V`` raises the
  counter so every signature for a version below V stops working.

Offline: ``vtpmctl seal --ek EK.pem --policy manifest:M.json[:PCRS] --in F --out BLOB``
(no DOMAIN) talks to no DomS0: it makes an import blob (TPM2_Duplicate/Import style,
:func:`vtpm_manager.sealing.create_import_blob`) that only the vTPM with that EK can load;
``--ek`` takes the EK's PEM public key or its certificate (``vtpmctl certs``), and
``--ek-template`` defaults from the key type. ``vtpmctl unseal DOMAIN --in BLOB`` sends it.

``--auth-file F`` adds PolicyAuthValue with F's bytes, exactly as stored (no newline is
stripped); wrong values count towards the vTPM's dictionary-attack lockout.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss import ESAPI, TSS2_Exception

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.client.channel import CredentialError, connect
from domS0.launch_commands import startup_clear
from measure.errors import MeasureError
from measure.manifest import Manifest
from vtpm_manager.attestation.quote import Selection, parse_selection
from vtpm_manager.errors import ManagerError
from vtpm_manager.manufacture import esapi_over
from vtpm_manager.sealing import (
    PcrPolicy,
    SealedBlob,
    SealingError,
    create_import_blob,
    raise_counter,
    read_counter,
    sign_policy,
)
from vtpm_manager.sealing.policy import PcrValues, policy_pcr_digest, public_key_pem

from .errors import EXIT_UNREACHABLE, RPC_TIMEOUT, CliError
from .security import ACM_POLICY_COMMANDS, add_policy_parsers, cmd_acm_policy

CURRENT_PCRS = "sha256:0-9"
MANIFEST_PCRS = "sha256:8,9"
_WITH_PCRS = re.compile(r"(?P<path>.+?)(?::(?P<pcrs>sha\d+:.+))?")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the {what}: {exc}") from None


def _selection(text: str) -> Selection:
    try:
        return parse_selection(text)
    except ValueError as exc:
        raise CliError(f"bad PCR selection {text!r}: {exc}") from None


def manifest_values(path: str, pcrs: str) -> tuple[Selection, PcrValues]:
    """The selected PCR values the manifest at ``path`` predicts."""
    try:
        manifest = Manifest.loads(_read(path, "manifest"))
    except MeasureError as exc:
        raise CliError(f"{path}: {exc}") from None
    selection = _selection(pcrs)
    values: PcrValues = {}
    for bank, numbers in selection:
        for pcr in numbers:
            value = manifest.pcrs.get(bank, {}).get(pcr)
            if value is None:
                raise CliError(f"{path} predicts no value for PCR {bank}:{pcr}")
            values.setdefault(bank, {})[pcr] = value
    return selection, values


def _policy_fields(policy: str, revocable: bool = False) -> dict[str, Any]:
    kind, _, rest = policy.partition(":")
    if revocable and kind != "authorized":
        raise CliError("--revocable applies to --policy authorized:APPROVAL_PUB.pem only")
    if kind == "current":
        current = rest or CURRENT_PCRS
        _selection(current)
        return {"current": pb.CurrentPcrPolicy(pcr_selection=current)}
    if kind == "manifest" and rest:
        match = _WITH_PCRS.fullmatch(rest)
        assert match is not None
        selection_text = match["pcrs"] or MANIFEST_PCRS
        selection, values = manifest_values(match["path"], selection_text)
        return {"predicted": pb.PredictedPcrPolicy(
            pcr_selection=selection_text,
            values=[pb.PcrValue(bank=bank, pcr=pcr, value=values[bank][pcr])
                    for bank, numbers in selection for pcr in numbers])}
    if kind == "authorized" and rest:
        pem = _read(rest, "approval public key").decode(errors="replace")
        return {"authorized": pb.AuthorizedPcrPolicy(approval_public_key_pem=pem,
                                                     revocable=revocable)}
    raise CliError(f"--policy {policy!r}: use current[:PCRS], manifest:M.json[:PCRS] or "
                   "authorized:APPROVAL_PUB.pem")


def _auth(args: argparse.Namespace) -> bytes | None:
    return _read(args.auth_file, "auth file") if args.auth_file else None


EK_TEMPLATES = ("rsa2048", "ecc-nist-p256")


def ek_public_pem(data: bytes, path: str) -> tuple[str, str]:
    """The EK's PEM public key from a PEM public key or certificate at ``path``, and the
    EK template its key type implies."""
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise CliError(f"{path}: not a PEM public key or certificate ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        return public_key_pem(key), "rsa2048"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return public_key_pem(key), "ecc-nist-p256"
    raise CliError(f"{path}: an EK is an RSA or ECC key")


def cmd_seal_offline(args: argparse.Namespace) -> int:
    """``vtpmctl seal --ek``: an import blob for one vTPM's EK, made here, offline."""
    if args.name:
        raise CliError("give either DOMAIN or --ek: --ek seals offline, for that EK")
    if args.auth_file or args.tpm2_files or args.revocable:
        raise CliError("--auth-file, --tpm2-files and --revocable do not apply to an offline "
                       "(--ek) seal")
    kind, _, rest = args.policy.partition(":")
    if kind != "manifest" or not rest:
        raise CliError(f"--policy {args.policy!r}: an offline seal takes "
                       "manifest:M.json[:PCRS] (the values must be known without the vTPM)")
    match = _WITH_PCRS.fullmatch(rest)
    assert match is not None
    selection, values = manifest_values(match["path"], match["pcrs"] or MANIFEST_PCRS)
    pem, template = ek_public_pem(_read(args.ek, "EK"), args.ek)
    secret = _read(args.input, "secret")
    try:
        blob = create_import_blob(pem, secret, policy_pcr_digest(selection, values),
                                  ek_template=args.ek_template or template,
                                  policy=PcrPolicy(selection, values))
    except (SealingError, ValueError) as exc:
        raise CliError(f"cannot seal to {args.ek}: {exc}") from None
    Path(args.out).write_text(blob.to_json())
    print(f"sealed {len(secret)} bytes offline to the EK in {args.ek} "
          f"({args.ek_template or template}, EK name {blob.ek_name.hex()}) and "
          f"{args.policy}: {args.out}")
    return 0


def cmd_seal(args: argparse.Namespace, channel: grpc.Channel) -> None:
    if not args.name:
        raise CliError("give the vTPM (DOMAIN), or --ek EK.pem to seal offline")
    secret = _read(args.input, "secret")
    request = pb.SealRequest(vtpm=args.name, secret=secret, auth=_auth(args),
                             **_policy_fields(args.policy, args.revocable))
    reply = pb_grpc.AttestationStub(channel).Seal(request, timeout=RPC_TIMEOUT)
    Path(args.out).write_text(reply.blob_json)
    what = f"{args.policy} (revocable)" if args.revocable else args.policy
    print(f"sealed {len(secret)} bytes in {args.name} to {what}: {args.out}")
    if args.revocable:
        print(f"sign policies with --version at least the revocation counter (vtpmctl "
              f"policy version {args.name})")
    if args.tpm2_files:
        blob = SealedBlob.from_json(reply.blob_json)
        folder = Path(args.tpm2_files)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "seal.pub").write_bytes(blob.public)
        (folder / "seal.priv").write_bytes(blob.private)
        (folder / "seal.pem").write_bytes(blob.key.to_pem())
        print(f"tpm2-tools files: {folder}/seal.pub, seal.priv (tpm2_load -C 0x81000001 "
              f"-u seal.pub -r seal.priv), TSS2 PEM {folder}/seal.pem")


def cmd_unseal(args: argparse.Namespace, channel: grpc.Channel) -> None:
    blob = _read(args.input, "sealed blob").decode(errors="replace")
    signed = _read(args.signed_policy, "signed policy").decode(errors="replace") \
        if args.signed_policy else ""
    reply = pb_grpc.AttestationStub(channel).Unseal(
        pb.UnsealRequest(vtpm=args.name, blob_json=blob, signed_policy_json=signed,
                         auth=_auth(args)), timeout=RPC_TIMEOUT)
    if args.out:
        path = Path(args.out)
        path.touch(mode=0o600)
        path.write_bytes(reply.secret)
    else:
        sys.stdout.buffer.write(reply.secret)
        sys.stdout.buffer.flush()


class _Transmit:
    """``execute(command)`` over DomS0's Transmit RPC, for an ESAPI (``esapi_over``).
    tpm2-tss turns a failure here into a TCTI error code; the gRPC error is kept so that
    it can be reported as what it was (DomS0 unreachable, vTPM held or stopped)."""

    def __init__(self, channel: grpc.Channel, vtpm: str) -> None:
        self._stub = pb_grpc.TpmStub(channel)
        self._vtpm = vtpm
        self.failure: grpc.RpcError | None = None

    def __call__(self, command: bytes) -> bytes:
        try:
            return bytes(self._stub.Transmit(pb.TransmitRequest(vtpm=self._vtpm,
                                                                command=command),
                                             timeout=RPC_TIMEOUT).response)
        except grpc.RpcError as exc:
            self.failure = exc
            raise

    def refusal(self, server: str) -> CliError | None:
        """The CliError for a kept gRPC failure, worded and coded as vtpmctl's others."""
        exc = self.failure
        if exc is None:
            return None
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return CliError(f"cannot reach DomS0 at {server}: {details}", EXIT_UNREACHABLE)
        return CliError(f"{code.name if code else 'ERROR'}: {details}")


def _on_revocation_counter(args: argparse.Namespace, action: Callable[[ESAPI], int]) -> int:
    """Run ``action(esapi)`` on the vTPM's revocation counter, through DomS0."""
    try:
        channel = connect(args.server, args.token_file, args.cert, args.key, args.ca)
    except CredentialError as exc:
        raise CliError(str(exc)) from None
    link = _Transmit(channel, args.name)
    try:
        # A vTPM no domain has started yet needs TPM2_Startup(CLEAR), as DomS0's Seal
        # sends it (a no-op on a started one).
        startup_clear(link)
        with esapi_over(link) as esapi:
            return action(esapi)
    except (SealingError, ManagerError, TSS2_Exception, grpc.RpcError) as exc:
        raise link.refusal(args.server) or CliError(f"{args.name}: {exc}") from None
    finally:
        channel.close()


def cmd_policy(args: argparse.Namespace) -> int:
    if args.policy_command in ACM_POLICY_COMMANDS:
        return cmd_acm_policy(args)
    if args.policy_command in ("revoke", "version"):
        if args.policy_command == "version":
            print(_on_revocation_counter(args, read_counter))
            return 0
        if args.below < 1:
            raise CliError("--below takes a version of at least 1")
        value = _on_revocation_counter(args, lambda esapi: raise_counter(esapi, args.below))
        print(f"{args.name}: revocation counter {value}; signed policies for versions below "
              f"{value} are revoked")
        return 0
    if args.policy_command == "keygen":
        new = ec.generate_private_key(ec.SECP256R1())
        private = Path(args.out)
        private.touch(mode=0o600)
        private.write_bytes(new.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        public = Path(args.pub_out)
        public.write_text(public_key_pem(new.public_key()))
        print(f"approval key: {private}; public key (seal with authorized:{public}): "
              f"{public}")
        return 0
    try:
        key = serialization.load_pem_private_key(_read(args.key, "approval key"), None)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{args.key}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CliError(f"{args.key}: approval keys are ECC P-256 or RSA")
    selection, values = manifest_values(args.manifest, args.pcrs)
    try:
        signed = sign_policy(key, selection, values, version=args.version)
    except (SealingError, ValueError) as exc:
        raise CliError(str(exc)) from None
    Path(args.out).write_text(signed.to_json())
    kind = f"revocable, version {args.version}, " if args.version is not None else ""
    print(f"signed the PCR policy of {args.manifest} ({args.pcrs}, {kind}digest "
          f"{signed.policy_digest.hex()}): {args.out}")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("seal", help="seal a secret in a vTPM to a PCR or signed policy, "
                       "or offline to a vTPM's EK (--ek)")
    p.add_argument("name", nargs="?", help="vTPM name or UUID (omit with --ek)")
    p.add_argument("--ek", metavar="EK.pem", help="seal offline, without DomS0, to this EK "
                   "(PEM public key or certificate, e.g. from vtpmctl certs): an import blob")
    p.add_argument("--ek-template", choices=EK_TEMPLATES,
                   help="the EK's TCG template (default: from the key type)")
    p.add_argument("--in", dest="input", required=True, metavar="FILE",
                   help="the secret (1-128 bytes)")
    p.add_argument("--out", required=True, metavar="BLOB", help="write the sealed blob")
    p.add_argument("--policy", required=True,
                   help=f"current[:PCRS] (default {CURRENT_PCRS}) | manifest:M.json[:PCRS] "
                   f"(default {MANIFEST_PCRS}) | authorized:APPROVAL_PUB.pem")
    p.add_argument("--auth-file", metavar="F", help="also require this auth value")
    p.add_argument("--revocable", action="store_true", help="with authorized:...: only "
                   "versioned signatures open it, and vtpmctl policy revoke revokes them")
    p.add_argument("--tpm2-files", metavar="DIR", help="also write seal.pub/seal.priv "
                   "(tpm2_load) and seal.pem (TSS2 PRIVATE KEY) into DIR")
    p = sub.add_parser("unseal", help="unseal a sealed blob in its vTPM")
    p.add_argument("name", help="vTPM name or UUID")
    p.add_argument("--in", dest="input", required=True, metavar="BLOB")
    p.add_argument("--signed-policy", metavar="SIGNED.json",
                   help="for an authorized blob: a policy from vtpmctl policy sign")
    p.add_argument("--auth-file", metavar="F", help="the auth value the blob was sealed with")
    p.add_argument("--out", metavar="FILE", help="write the secret (default: stdout, raw)")
    p = sub.add_parser("policy", help="approval keys and signed PCR policies (local); "
                       "revoking old ones; the sHype ACM policy (make, load, show)")
    policy = p.add_subparsers(dest="policy_command", required=True)
    q = policy.add_parser("keygen", help="create an ECC P-256 approval key")
    q.add_argument("--out", required=True, metavar="APPROVAL.pem")
    q.add_argument("--pub-out", required=True, metavar="APPROVAL_PUB.pem")
    q = policy.add_parser("sign", help="sign the PCR policy a manifest predicts")
    q.add_argument("--key", required=True, metavar="APPROVAL.pem")
    q.add_argument("--manifest", required=True, metavar="M.json")
    q.add_argument("--pcrs", default=MANIFEST_PCRS, help=f"default {MANIFEST_PCRS}")
    q.add_argument("--out", required=True, metavar="SIGNED.json")
    q.add_argument("--version", type=int, metavar="V", help="a revocable signed policy "
                   "(for seal --revocable), valid while the revocation counter is <= V")
    q = policy.add_parser("revoke", help="revoke every signed policy for a version below V "
                          "(raises the vTPM's revocation counter to V; cannot be undone)")
    q.add_argument("name", help="vTPM name or UUID")
    q.add_argument("--below", required=True, type=int, metavar="V")
    q = policy.add_parser("version", help="print the vTPM's revocation counter: the lowest "
                          "version a signed policy may carry")
    q.add_argument("name", help="vTPM name or UUID")
    add_policy_parsers(policy)
