"""The README's first command: the demo runs a DomS0, builds a measured domain,
quotes it and verifies the evidence, seals a secret to the manifest and unseals it,
migrates the vTPM to a second DomS0 and attests it there, and says so, on the default
engine (builtin) as the README runs it. ``--engine swtpm`` walks the same steps; their
swtpm variants run in test_measured_launch, test_sealing_flow and test_migration."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import only_on


@only_on("builtin")
def test_demo_attests_the_measured_domain(engine: str) -> None:
    flags = () if engine == "builtin" else ("--engine", engine)
    result = subprocess.run([sys.executable, "-m", "domS0.cli.doms0", "demo", *flags],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert f"(engine {engine}, host TPM" in result.stdout
    for check in ("certificate chain", "quote signature", "nonce", "PCR digest",
                  "event log"):
        assert f"PASS {check}:" in result.stdout, result.stdout
    assert "FAIL" not in result.stdout
    assert "attestation OK: the domain's vTPM holds what was measured\n" in result.stdout
    assert "sealed 32 bytes in demo-domain to manifest:" in result.stdout
    assert "sealed to the manifest; unsealed after the measured build: OK" in result.stdout
    assert "done: vTPM demo-domain is live on host-b" in result.stdout
    assert result.stdout.count("verified: all checks passed") == 2
    assert result.stdout.strip().endswith(
        "migrated to host-b: attestation OK there, sealed secret unseals: OK")
