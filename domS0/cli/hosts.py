"""``doms0 hosts``: the hosts CA that lets DomS0s trust each other for migration.

- ``doms0 hosts ca --out DIR [--name N]``: a new hosts CA (``ca.pem``, ``ca.key``);
- ``doms0 hosts issue --ca DIR --name HOST --out DIR --host-tpm TCTI [--ip A]``: a host
  certificate (``host.pem``, ``host.key``) naming the host AK of the TPM at ``TCTI``,
  so a quote by that TPM is the proof a destination gives;
- ``doms0 hosts measure [--config F] [--policy-file P]``: this DomS0's code digest (what
  peers list in ``migration_code_digests``) and its configuration and policy digests.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

CA_CERT, CA_KEY, HOST_CERT, HOST_KEY = "ca.pem", "ca.key", "host.pem", "host.key"


def add_hosts_commands(sub: Any) -> argparse.ArgumentParser:
    hosts = sub.add_parser("hosts", help="the hosts CA for migration between DomS0s")
    hsub = hosts.add_subparsers(dest="hosts_command", required=True)
    ca = hsub.add_parser("ca", help="create a hosts CA")
    ca.add_argument("--out", type=Path, required=True, metavar="DIR")
    ca.add_argument("--name", default="vtpm-stack hosts CA")
    issue = hsub.add_parser("issue", help="issue a host certificate naming its host AK")
    issue.add_argument("--ca", type=Path, required=True, metavar="DIR")
    issue.add_argument("--name", required=True, help="the host's name (certificate CN)")
    issue.add_argument("--out", type=Path, required=True, metavar="DIR")
    issue.add_argument("--host-tpm", required=True, metavar="TCTI",
                       help="the host's TPM, whose host AK the certificate names")
    issue.add_argument("--ip", action="append", default=None, metavar="ADDRESS",
                       help="an IP address the host listens on (default 127.0.0.1)")
    measure = hsub.add_parser("measure", help="print this DomS0's measurement digests")
    measure.add_argument("--config", type=Path)
    measure.add_argument("--policy-file", action="append", type=Path, default=[])
    return hosts


def run(args: argparse.Namespace) -> int:
    try:
        if args.hosts_command == "ca":
            return _ca(args.out, args.name)
        if args.hosts_command == "issue":
            return _issue(args)
        return _measure(args.config, args.policy_file)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"doms0: {exc}", file=sys.stderr)
        return 1


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _ca(out: Path, name: str) -> int:
    from vtpm_manager.migration.hostcert import cert_pem, create_hosts_ca, key_pem

    out.mkdir(parents=True, exist_ok=True)
    key, cert = create_hosts_ca(name)
    _write(out / CA_KEY, key_pem(key), 0o600)
    _write(out / CA_CERT, cert_pem(cert), 0o644)
    print(f"hosts CA {name!r} in {out} (keep {CA_KEY} offline)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric import ec
    from tpm2_pytss.TCTILdr import TCTILdr

    from vtpm_manager.attestation.deep import host_ak_public
    from vtpm_manager.migration.hostcert import (
        cert_pem,
        issue_host_certificate,
        key_pem,
        load_cert_pem,
        load_key_pem,
    )
    from vtpm_manager.migration.proof import ak_name

    ca_key = load_key_pem((args.ca / CA_KEY).read_bytes())
    ca_cert = load_cert_pem((args.ca / CA_CERT).read_bytes())
    ak = ak_name(host_ak_public(TCTILdr.parse(args.host_tpm)))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = issue_host_certificate(ca_key, ca_cert, args.name, key.public_key(), ak_name=ak,
                                  addresses=tuple(args.ip or ("127.0.0.1",)))
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / HOST_KEY, key_pem(key), 0o600)
    _write(args.out / HOST_CERT, cert_pem(cert), 0o644)
    print(f"host certificate for {args.name} (host AK {ak.hex()[:20]}…) in {args.out}")
    return 0


def _measure(config: Path | None, policies: list[Path]) -> int:
    from domS0 import selfmeasure

    claim, files = selfmeasure.measurement_claim(config, policies)
    print(f"code:        {claim.code_digest.hex()}")
    print(f"config:      {claim.config_digest.hex()}")
    print(f"policy:      {claim.policy_digest.hex()}")
    print(f"measurement: {claim.digest().hex()} ({files} files)")
    return 0
