"""``doms0 ca``: the vTPM CA's certificate — show it, ask an operator's CA to sign it.

    doms0 ca csr    --state-dir D [--host H] [--out F]   print or write a PEM CSR
    doms0 ca import --state-dir D CERT.pem               install the signed certificate
    doms0 ca cert   --state-dir D [--chain]              print the CA certificate

They work on the state folder directly (the CA key is sealed under DomS0's KEK, so
they need the same root of trust as ``doms0 serve``: ``kek_loader``). A running
DomS0 keeps the certificate it loaded at start; restart it after ``import``.

Exit codes: 0 done, 1 refused (the message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vtpm_manager.ca import CAError, VtpmCA
from vtpm_manager.durable import atomic_write
from vtpm_manager.kek import KeyEncryptionKey, KeyUnwrapError, load_development_kek

KekLoader = Callable[[Path], KeyEncryptionKey]
#: Where ``doms0 serve`` keeps the development KEK (domS0.daemon.KEK_FILE).
DEV_KEK_FILE = "kek.dev"
EXIT_REFUSED = 1


def development_kek_loader(state_dir: Path) -> KeyEncryptionKey:
    """The default: the development KEK file ``doms0 serve`` uses."""
    return load_development_kek(state_dir / DEV_KEK_FILE)


def add_ca_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    kek_loader: KekLoader = development_kek_loader,
) -> argparse.ArgumentParser:
    """Add ``ca {csr,import,cert}`` to a ``doms0`` parser; run it with :func:`run`."""
    ca = subparsers.add_parser("ca", help="the vTPM CA: CSR, import, print certificate")
    ca.set_defaults(ca_kek_loader=kek_loader)
    sub = ca.add_subparsers(dest="ca_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--state-dir", type=Path, required=True,
                            help="DomS0's state folder (as for doms0 serve)")
        parser.add_argument("--host", default=None,
                            help="host name for a CA created now (default: this host's FQDN)")

    csr = sub.add_parser("csr", help="a PEM certificate signing request for the CA key")
    common(csr)
    csr.add_argument("--out", type=Path, help="write the CSR here instead of stdout")
    imp = sub.add_parser("import", help="install the CA certificate an operator's CA signed")
    common(imp)
    imp.add_argument("certificate", type=Path,
                     help="PEM: the CA certificate, optionally followed by its chain")
    cert = sub.add_parser("cert", help="print the CA certificate as PEM")
    common(cert)
    cert.add_argument("--chain", action="store_true",
                      help="also print the operator's chain above it, if imported")
    return ca


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``doms0 ca ...``; returns the exit code."""
    try:
        return _run(args)
    except (CAError, KeyUnwrapError, PermissionError, ValueError, OSError) as exc:
        print(f"doms0 ca: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def _run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    # csr and cert create the CA on first use, as `doms0 serve` would; import never
    # does (a certificate can only be for a key that exists already).
    create = args.ca_command != "import"
    if not create and not state_dir.is_dir():
        raise CAError(f"no DomS0 state folder at {state_dir}")
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    kek = args.ca_kek_loader(state_dir)
    ca = VtpmCA.open(state_dir, kek, args.host or socket.getfqdn(), create=create)
    if args.ca_command == "csr":
        pem = ca.csr()
        if args.out is None:
            sys.stdout.write(pem.decode())
        else:
            atomic_write(args.out, pem, mode=0o644)
            print(f"CSR written to {args.out}; have your CA sign it as a CA certificate "
                  "(CA:TRUE, keyCertSign), then: doms0 ca import", file=sys.stderr)
        return 0
    if args.ca_command == "import":
        ca.import_certificate(args.certificate.read_bytes())
        print(f"imported: {ca.certificate.subject.rfc4514_string()} issued by "
              f"{ca.certificate.issuer.rfc4514_string()}; restart DomS0 to use it",
              file=sys.stderr)
        return 0
    sys.stdout.write(ca.certificate_pem().decode())
    if args.chain:
        sys.stdout.write(ca.chain_pem().decode())
    return 0


def main(argv: Sequence[str] | None = None, kek_loader: KekLoader = development_kek_loader
         ) -> int:
    """Standalone entry (``python -m domS0.cli.ca ca cert --state-dir D``), for tests
    and until ``doms0`` itself dispatches ``ca``."""
    parser = argparse.ArgumentParser(prog="doms0")
    add_ca_commands(parser.add_subparsers(dest="command", required=True), kek_loader)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
