"""The main job on embedded defaults: a DomS0, a measured domain, a verified attestation.

``doms0 demo`` starts a DomS0 in a temporary folder, its vTPMs on the builtin engine
(our own TPM 2.0; ``--engine swtpm`` runs the same walk on libtpms), and walks data
paths 2 and 3 as a builder and a remote verifier would, through ``vtpmctl``:

1. ``vtpmctl build``: streams a sample kernel (a small bzImage made here), an initrd
   and a command line to DomS0, whose finalizer stores and measures them, extends the
   vTPM's PCRs 8/9 (GRUB convention), keeps the TCG event log and enrolls an AK;
2. ``vtpmctl certs``: the vTPM CA certificate, the verifier's trust anchor;
3. ``vtpmctl quote`` with a fresh nonce: the evidence bundle;
4. ``vtpmctl verify`` against the build's manifest and the CA: one line per check;
5. ``vtpmctl seal --policy manifest:M.json``: a secret sealed in the vTPM to the PCRs
   the build's manifest predicts, and ``vtpmctl unseal`` opening it in the measured state;
6. ``vtpmctl migrate``: the domain's vTPM moves to a second DomS0 on loopback, which
   proves itself with its host TPM first; there a fresh quote verifies against the same
   manifest and CA, and the sealed secret still unseals.

Each DomS0 runs on a host TPM of its own (a swtpm process standing in for the hardware
TPM) with a certificate from a hosts CA made for the demo.

Exit 0 only if every check passes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from domS0.harness import Doms0Process, MigrationNode, create_hosts_ca

SAMPLE_CMDLINE = "root=/dev/vda1 ro console=ttyS0"
KERNEL_VERSION = "6.1.0-vtpm-demo (builder@example) #1 SMP"


def sample_kernel(setup_sects: int = 4, payload: int = 64 * 1024) -> bytes:
    """A minimal x86 bzImage: boot sector, setup header ("HdrS", protocol 2.15), a
    version string and a protected-mode payload; enough for the bzImage parser."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    struct.pack_into("<I", setup, 0x1F4, payload // 16)   # syssize
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    setup[0x211] = 0x01                                   # LOADED_HIGH
    struct.pack_into("<I", setup, 0x238, 2047)            # cmdline_size
    struct.pack_into("<H", setup, 0x20E, 0x300 - 0x200)   # kernel_version
    setup[0x300:0x300 + len(KERNEL_VERSION) + 1] = KERNEL_VERSION.encode() + b"\0"
    block = hashlib.sha256(b"vtpm-stack sample kernel").digest()
    return bytes(setup) + (block * (payload // len(block) + 1))[:payload]


def sample_initrd() -> bytes:
    """A stand-in initrd (a cpio "newc" magic, then deterministic bytes)."""
    return b"070701" + hashlib.sha256(b"vtpm-stack sample initrd").digest() * 256


def write_sample_domain(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    kernel, initrd = folder / "vmlinuz", folder / "initrd.img"
    kernel.write_bytes(sample_kernel())
    initrd.write_bytes(sample_initrd())
    return kernel, initrd


def _vtpmctl(doms0: Doms0Process, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "domS0.cli.vtpmctl", *args],
                            env=doms0.env(), capture_output=True, text=True, timeout=300)
    return result


def _step(doms0: Doms0Process, *args: str) -> str:
    result = _vtpmctl(doms0, *args)
    if result.returncode != 0:
        raise RuntimeError(f"vtpmctl {args[0]}: {result.stderr.strip()}")
    return result.stdout


def _seal_and_unseal(doms0: Doms0Process, workdir: Path, manifest: Path) -> int:
    """Seal a fresh secret to the manifest's PCRs 8/9, then unseal it in the vTPM."""
    secret, blob, opened = workdir / "secret", workdir / "sealed.json", workdir / "unsealed"
    secret.write_bytes(secrets.token_bytes(32))
    print(_step(doms0, "seal", "demo-domain", "--in", str(secret), "--out", str(blob),
                "--policy", f"manifest:{manifest}"), end="")
    _step(doms0, "unseal", "demo-domain", "--in", str(blob), "--out", str(opened))
    if opened.read_bytes() != secret.read_bytes():
        print("sealing FAILED: the unsealed secret differs", file=sys.stderr)
        return 1
    print("sealed to the manifest; unsealed after the measured build: OK")
    return 0


def run_demo(engine: str, workdir: Path) -> int:
    ca = create_hosts_ca(workdir / "hosts-ca")
    host_a = MigrationNode(workdir / "host-a", "host-a", ca, engine=engine)
    host_b = MigrationNode(workdir / "host-b", "host-b", ca, engine=engine)
    try:
        doms0 = host_a.provision().start()
        host_b.provision().start()
        print(f"DomS0 host-a serving on {doms0.address} (engine {engine}, host TPM "
              f"{host_a.tpm.tcti})")
        kernel, initrd = write_sample_domain(workdir / "domain")
        manifest, out = workdir / "manifest.json", workdir / "evidence"
        built = _step(doms0, "build", "demo-domain", "--kernel", str(kernel), "--initrd",
                      str(initrd), "--cmdline", SAMPLE_CMDLINE, "--engine", engine,
                      "--manifest-out", str(manifest))
        print(built, end="")
        _step(doms0, "certs", "demo-domain", "--out", str(workdir / "certs"))
        nonce = secrets.token_hex(20)
        print(_step(doms0, "quote", "demo-domain", "--nonce", nonce, "--out", str(out)),
              end="")
        verified = _vtpmctl(doms0, "verify", str(out), "--manifest", str(manifest),
                            "--ca", str(workdir / "certs" / "ca.pem"), "--nonce", nonce)
        print(verified.stdout, end="")
        if verified.returncode != 0:
            print(verified.stderr, end="", file=sys.stderr)
            return 1
        print("attestation OK: the domain's vTPM holds what was measured")
        if _seal_and_unseal(doms0, workdir, manifest) != 0:
            return 1
        return _migrate_and_attest(host_a, host_b, workdir, manifest)
    finally:
        host_a.stop()
        host_b.stop()


def _migrate_and_attest(host_a: MigrationNode, host_b: MigrationNode, workdir: Path,
                        manifest: Path) -> int:
    """Move the vTPM to host-b, attest it there against the same manifest and CA."""
    assert host_a.doms0 is not None and host_b.doms0 is not None
    print(_step(host_a.doms0, "migrate", "demo-domain", "--to", host_b.migration_address),
          end="")
    out, nonce = workdir / "evidence-b", secrets.token_hex(20)
    print(_step(host_b.doms0, "quote", "demo-domain", "--nonce", nonce, "--out", str(out)),
          end="")
    verified = _vtpmctl(host_b.doms0, "verify", str(out), "--manifest", str(manifest),
                        "--ca", str(workdir / "certs" / "ca.pem"), "--nonce", nonce)
    print(verified.stdout, end="")
    if verified.returncode != 0:
        print(verified.stderr, end="", file=sys.stderr)
        return 1
    _step(host_b.doms0, "unseal", "demo-domain", "--in", str(workdir / "sealed.json"),
          "--out", str(workdir / "unsealed-b"))
    if (workdir / "unsealed-b").read_bytes() != (workdir / "secret").read_bytes():
        print("migration FAILED: the secret does not unseal on host-b", file=sys.stderr)
        return 1
    print("migrated to host-b: attestation OK there, sealed secret unseals: OK")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="doms0 demo", description=__doc__)
    parser.add_argument("--engine", choices=("builtin", "swtpm"), default="builtin",
                        help="the vTPMs' engine on both hosts (default: builtin, our own "
                        "TPM 2.0; swtpm: libtpms)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vtpm-demo-") as tmp:
        try:
            return run_demo(args.engine, Path(tmp))
        except Exception as exc:  # the demo reports, it does not trace
            print(f"doms0 demo: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            if os.environ.get("VTPM_DEMO_VERBOSE"):
                for log in sorted(Path(tmp).glob("host-*/state.doms0.log")):
                    print(log.read_text(), file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
