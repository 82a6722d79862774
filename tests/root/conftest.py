"""A real swtpm as the host TPM, and helpers to run ``doms0`` against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from domS0.harness import Doms0Process, SwtpmProcess
from tests.conftest import require_tool
from vtpm_manager.root.host import connect, extend_pcr, read_pcrs
from vtpm_manager.root.policy import PcrSelection

ENV = {**os.environ, "TSS2_LOG": "all+NONE"}


@dataclass
class HostTpm:
    """One ``swtpm socket`` process standing in for the host's TPM."""

    port: int
    state: Path
    proc: subprocess.Popen[bytes]

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def extend(self, pcr: int, data: bytes = b"firmware update") -> None:
        import hashlib

        with connect(self.tcti) as esapi:
            extend_pcr(esapi, pcr, hashlib.sha256(data).digest())

    def pcr(self, label: str) -> bytes:
        with connect(self.tcti) as esapi:
            return read_pcrs(esapi, PcrSelection.parse(label))[label]

    def power_cycle(self) -> None:
        """A host reboot: CMD_INIT over the control channel resets the TPM (PCRs back
        to their reset values), then the firmware's TPM2_Startup(CLEAR)."""
        require_tool("swtpm_ioctl")
        subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{self.port + 1}", "-i"],
                       check=True, capture_output=True, timeout=10)
        from tpm2_pytss.constants import TPM2_SU

        with connect(self.tcti) as esapi:
            esapi.startup(TPM2_SU.CLEAR)


@pytest.fixture
def host_tpm(tmp_path: Path) -> Iterator[HostTpm]:
    require_tool("swtpm")
    process = SwtpmProcess(tmp_path / "host-tpm").start()
    assert process.proc is not None
    yield HostTpm(process.port, process.state_dir, process.proc)
    process.stop()


@dataclass
class Host:
    """A DomS0 host: a host TPM, a state dir and a runtime measurement log."""

    tpm: HostTpm
    state_dir: Path
    measurement_log: Path

    def common(self) -> tuple[str, ...]:
        return ("--state-dir", str(self.state_dir), "--root-tpm", self.tpm.tcti,
                "--measurement-log", str(self.measurement_log))

    def doms0(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``doms0 ARGS`` to completion (init, policy, a serve expected to fail)."""
        done = subprocess.run([sys.executable, "-m", "domS0.cli.doms0", *args],
                              capture_output=True, text=True, env=ENV, timeout=60)
        if check and done.returncode != 0:
            pytest.fail(f"doms0 {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done

    def init(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.doms0("init", *self.common(), *args)

    def serve_process(self, *args: str) -> Doms0Process:
        return Doms0Process(self.state_dir, extra_args=(
            "--root-tpm", self.tpm.tcti, "--measurement-log", str(self.measurement_log),
            *args))

    def serve_refused(self, *args: str) -> str:
        """Run ``doms0 serve`` expecting a refusal; returns its one-line error."""
        done = self.doms0("serve", *self.common(), "--listen", "127.0.0.1:0", *args,
                          check=False)
        assert done.returncode == 1, f"serve did not refuse:\n{done.stderr}"
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("doms0: "), done.stderr
        return last


@pytest.fixture
def host(host_tpm: HostTpm, tmp_path: Path) -> Host:
    return Host(host_tpm, tmp_path / "state", tmp_path / "run" / "measurements.log")


def private_pem(kind: str) -> bytes:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else \
        ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(params=["rsa", "ecc"])
def approval_keys(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """(private PEM, public PEM) files of an operator's approval key."""
    from vtpm_manager.root.approval import public_pem_of

    pem = private_pem(str(request.param))
    private, public = tmp_path / "approval-private.pem", tmp_path / "approval-public.pem"
    private.write_bytes(pem)
    private.chmod(0o600)
    public.write_bytes(public_pem_of(pem))
    return private, public
