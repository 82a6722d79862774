"""doms0: run DomS0 (``serve``), provision its host root of trust and TLS material
(``init``), issue client certificates or tokens to callers (``issue``), and sign or
install operator-approved PCR policies (``policy approve`` / ``policy install``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domS0.cli.ca import KekLoader, add_ca_commands
from domS0.cli.ca import run as run_ca
from domS0.cli.hosts import add_hosts_commands
from domS0.cli.hosts import run as run_hosts
from domS0.config import ConfigError, Settings, load_settings
from domS0.logs import setup_logging
from vtpm_manager.kek import KeyEncryptionKey


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that every subcommand reading settings shares (all also in the TOML)."""
    parser.add_argument("--config", type=Path, help="TOML settings file (measured)")
    parser.add_argument("--state-dir", help="where vTPM records live (default /var/lib/doms0)")
    parser.add_argument("--root-tpm", metavar="TCTI",
                        help="host TPM as a tpm2-tss TCTI (device:/dev/tpmrm0, "
                        "swtpm:host=H,port=P, mssim:...) or 'software' (development, "
                        "the default)")
    parser.add_argument("--measurement-log", help="runtime self-measurement log (default "
                        "/run/doms0/measurements.log)")
    parser.add_argument("--policy-file", action="append", dest="policy_files",
                        help="a security policy file DomS0 measures (repeatable)")


def _root_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pcrs", dest="host_pcrs", help="host PCRs the KEK is sealed to "
                        "(default sha256:0,1,2,3,7; the measurement PCR is added)")
    parser.add_argument("--measure-pcr", help="host PCR DomS0 measures itself into "
                        "(default 15)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doms0", description="The vTPM security domain.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve vTPMs over gRPC and control sockets")
    _settings_flags(serve)
    serve.add_argument("--production", action="store_true", default=None,
                       help="refuse the development root of trust")
    serve.add_argument("--listen", help="HOST:PORT (mutual TLS) or unix:PATH (peer "
                       "credentials) (default 127.0.0.1:7340)")
    serve.add_argument("--insecure-loopback", action="store_true", default=None,
                       help="plain TCP with bearer tokens instead of mutual TLS, on a "
                       "loopback address only (development; warns at start)")
    serve.add_argument("--run-dir", help="sockets and engine scratch (default: a new "
                       "temporary folder)")
    serve.add_argument("--default-engine", choices=("builtin", "swtpm"))
    serve.add_argument("--log-format", choices=("text", "json"))
    serve.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    serve.add_argument("--adopt-state", action="store_true", default=None,
                       help="trust the vTPM records on disk once and rebind them to the "
                       "rollback counter (restoring a backup on purpose)")
    serve.add_argument("--host-name", help="this host's name in vTPM certificates "
                       "(default: its FQDN)")
    serve.add_argument("--passthrough-tcti", metavar="TCTI", help="host TPM for passthrough "
                       "vTPMs, behind a resource manager (e.g. device:/dev/tpmrm0)")
    serve.add_argument("--passthrough-host-pcrs", metavar="RANGES",
                       help="host PCRs a passthrough vTPM may not change (default 0-15)")
    serve.add_argument("--migration-listen", metavar="HOST:PORT",
                       help="accept vTPMs from other DomS0s here (mutual TLS)")
    serve.add_argument("--tls-cert", help="this host's certificate from the hosts CA")
    serve.add_argument("--tls-key", help="its private key")
    serve.add_argument("--tls-ca", help="the hosts CA certificate(s) trusted for peers")
    serve.add_argument("--qemu-migration-key", metavar="FILE", help="a secret (32+ bytes) "
                       "shared with the other hosts: state blobs then carry the vTPM in "
                       "QEMU's migration stream")
    serve.add_argument("--security-modules", metavar="LIST", help="dummy (default), acm, "
                       "or acm,dummy: the security modules, primary first")
    serve.add_argument("--permissive", action="store_true", default=None,
                       help="log policy denials without enforcing them")
    serve.add_argument("--audit-log", metavar="FILE", help="append-only audit log (default "
                       "STATE_DIR/security/audit.log)")
    serve.add_argument("--audit-permits", action="store_true", default=None,
                       help="audit every permitted decision too")
    serve.add_argument("--allow-code", action="append", dest="migration_code_digests",
                       metavar="HEX|self", help="a DomS0 code digest a destination may "
                       "run (repeatable; default: self, the same code as this one)")

    init = sub.add_parser("init", help="provision the host root of trust once")
    _settings_flags(init)
    _root_flags(init)
    init.add_argument("--approval-key", metavar="PUB.pem", help="seal with PolicyAuthorize "
                      "to this RSA/ECC public key, so approved PCR policies open the KEK")
    init.add_argument("--nv-index", help="NV counter index (default 0x01500020)")
    init.add_argument("--srk-handle", help="persistent storage key handle (default: the "
                      "TCG ECC P-256 SRK template, re-created at each use)")
    init.add_argument("--force", action="store_true",
                      help="replace an existing root (its vTPM state becomes unreadable)")

    issue = sub.add_parser("issue", help="issue a client certificate (or with --token a "
                           "bearer token) naming a principal")
    _settings_flags(issue)
    issue.add_argument("principal", help="admin:NAME, domain:NAME or peer:HOST")
    issue.add_argument("--out", type=Path, required=True, metavar="DIR",
                       help="writes client.pem, client.key and ca.pem (or token)")
    issue.add_argument("--token", action="store_true", help="a bearer token for the "
                       "--insecure-loopback listener instead of a certificate")

    policy = sub.add_parser("policy", help="approved PCR policies (PolicyAuthorize)")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    approve = psub.add_parser("approve", help="sign a PCR policy with the approval key")
    _settings_flags(approve)
    _root_flags(approve)
    approve.add_argument("--key", type=Path, required=True, metavar="PRIVATE.pem",
                         help="the approval private key")
    approve.add_argument("--pcr-value", action="append", default=[], metavar="BANK:N=HEX",
                         help="approve this value instead of the current one (repeatable)")
    approve.add_argument("--out", type=Path, required=True, help="approval file to write")
    install = psub.add_parser("install", help="check an approval and keep it for unsealing")
    _settings_flags(install)
    install.add_argument("approval", type=Path)

    ca = add_ca_commands(sub)
    ca.add_argument("--root-tpm", metavar="TCTI", default=None,
                    help="the root of trust that seals the CA key, as for doms0 serve "
                    "(default: the development root)")
    add_hosts_commands(sub)
    demo = sub.add_parser("demo", help="run a DomS0, measure a sample domain, attest it")
    demo.add_argument("demo_args", nargs=argparse.REMAINDER)
    return parser


def _root_kek_loader(root_tpm: str | None) -> KekLoader:
    """The CA key is sealed under the KEK, so ``doms0 ca`` opens the same root of
    trust as ``doms0 serve`` (measuring DomS0 first, as serve does)."""

    def load(state_dir: Path) -> KeyEncryptionKey:
        from domS0.daemon import StartupError, open_root

        overrides: dict[str, Any] = {"state_dir": str(state_dir), "root_tpm": root_tpm}
        try:
            return open_root(load_settings(None, overrides))[1]
        except StartupError as exc:
            raise ValueError(str(exc)) from None

    return load


def _load(args: argparse.Namespace) -> Settings:
    names = ("state_dir", "root_tpm", "measurement_log", "policy_files", "production",
             "listen", "run_dir", "default_engine", "log_format", "log_level", "host_pcrs",
             "measure_pcr", "approval_key", "nv_index", "srk_handle", "adopt_state",
             "host_name", "passthrough_tcti", "passthrough_host_pcrs", "migration_listen",
             "tls_cert", "tls_key", "tls_ca", "migration_code_digests",
             "qemu_migration_key", "insecure_loopback", "security_modules", "permissive",
             "audit_log", "audit_permits")
    overrides: dict[str, Any] = {name: getattr(args, name, None) for name in names}
    return load_settings(args.config, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    # The TSS logs its own errors to stderr; ours say the same thing in one line.
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        # The demo parses its own flags: argparse's REMAINDER would not pass on a
        # leading option such as --engine.
        from domS0.demo import main as demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "hosts":
        return run_hosts(args)
    if args.command == "ca":
        args.ca_kek_loader = _root_kek_loader(args.root_tpm)
        return run_ca(args)
    try:
        settings = _load(args)
    except ConfigError as exc:
        print(f"doms0: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        setup_logging(settings.log_format, settings.log_level)
        from domS0.daemon import StartupError, serve
        from domS0.rpc.server import BindError

        try:
            return serve(settings)
        except (StartupError, BindError, PermissionError, ValueError) as exc:
            print(f"doms0: {exc}", file=sys.stderr)
            return 1
    setup_logging(settings.log_format, "WARNING")
    if args.command == "init":
        return _init(settings, args.force)
    if args.command == "issue":
        return _issue(settings, args)
    if args.command == "policy":
        from vtpm_manager.root import ApprovalInvalid, RootRefused, SelectionError

        try:
            if args.policy_command == "approve":
                return _approve(settings, args)
            return _install(settings, args.approval)
        except (RootRefused, ApprovalInvalid, SelectionError, ValueError, OSError) as exc:
            print(f"doms0: {exc}", file=sys.stderr)
            return 1
    return 2


def _init(settings: Settings, force: bool) -> int:
    from domS0.daemon import StartupError, provision
    from vtpm_manager.root import TpmRoot

    try:
        root = provision(settings, force)
    except (StartupError, PermissionError, ValueError) as exc:
        print(f"doms0: {exc}", file=sys.stderr)
        return 1
    print(f"provisioned {settings.state_dir}: {root.describe()}")
    if isinstance(root, TpmRoot) and root.record.mode == "authorized":
        print("next: sign a policy with `doms0 policy approve` and install it with "
              "`doms0 policy install`; serve refuses until one is installed")
    return 0


def _issue(settings: Settings, args: argparse.Namespace) -> int:
    """``doms0 issue PRINCIPAL --out DIR [--token]``."""
    from domS0.rpc.auth import issue_token
    from domS0.security.identity import IdentityError, issue_client
    from domS0.security.principal import parse_principal
    from vtpm_manager.durable import atomic_write

    try:
        principal = parse_principal(args.principal)
        if args.token:
            token = issue_token(settings.state_dir, principal)
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write(args.out / "token", (token + "\n").encode(), mode=0o600)
            print(f"bearer token for {principal} in {args.out / 'token'} (for the "
                  f"--insecure-loopback listener; vtpmctl --token-file)")
            return 0
        cert, key = issue_client(settings.state_dir, principal, args.out)
    except (IdentityError, ValueError, OSError) as exc:
        print(f"doms0: {exc}", file=sys.stderr)
        return 1
    print(f"client certificate for {principal}: {cert}, key {key}, CA {args.out / 'ca.pem'}"
          f" (vtpmctl --cert {cert} --key {key} --ca {args.out / 'ca.pem'})")
    return 0


def _approve(settings: Settings, args: argparse.Namespace) -> int:
    """Sign the PolicyPCR digest of the current (or given) PCR values. The measurement
    PCR gets the value it will have once this installation of DomS0 has measured
    itself first in a boot, so an approval made for a DomS0 update holds after the
    next reboot, not just in the current boot."""
    from domS0 import selfmeasure
    from vtpm_manager.root import PcrSelection, sign_approval
    from vtpm_manager.root.host import connect, read_pcrs
    from vtpm_manager.root.record import RootFiles
    from vtpm_manager.root.tpm import MEASURE_BANK

    files = RootFiles(settings.state_dir)
    if files.exists():
        record = files.load()
        selection, measure_pcr = record.selection, record.measure_pcr
    else:
        measure_pcr = settings.measure_pcr
        selection = PcrSelection.parse(settings.host_pcrs).with_pcr(MEASURE_BANK, measure_pcr)
    values: dict[str, bytes] = {}
    for given in args.pcr_value:
        label, sep, value = given.partition("=")
        if not sep:
            raise ValueError(f"--pcr-value {given!r}: expected BANK:N=HEX")
        values[str(PcrSelection.parse(label))] = bytes.fromhex(value)
    missing = [label for label in selection.labels() if label not in values]
    if missing and settings.root_tpm == "software":
        raise ValueError(f"no value for {', '.join(missing)}: give --root-tpm TCTI to read "
                         f"them from the host TPM, or --pcr-value")
    measure_label = f"{MEASURE_BANK}:{measure_pcr}"
    if measure_label in missing:
        digest, _ = selfmeasure.measurement_digest(settings.config_file, settings.policy_files)
        values[measure_label] = selfmeasure.predicted_value(
            settings.root_tpm, measure_pcr, settings.measurement_log, digest)
        missing.remove(measure_label)
    if missing:
        with connect(settings.root_tpm) as esapi:
            values.update(read_pcrs(esapi, PcrSelection.parse("+".join(missing))))
    approval = sign_approval(args.key.read_bytes(), selection, values)
    args.out.write_bytes(approval.to_json())
    print(f"approved PolicyPCR {selection} (digest {approval.policy.hex()[:16]}…) "
          f"-> {args.out}")
    return 0


def _install(settings: Settings, path: Path) -> int:
    from vtpm_manager.root import Approval, TpmRoot

    root = TpmRoot(settings.root_tpm, settings.state_dir)
    kept = root.install_approval(Approval.load(path))
    print(f"installed {path} as {kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
