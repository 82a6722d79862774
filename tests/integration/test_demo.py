"""The README's first command: the demo runs a DomS0, measures, attests, and says so."""

from __future__ import annotations

import subprocess
import sys


def test_demo_attests_the_measured_domain() -> None:
    result = subprocess.run([sys.executable, "-m", "domS0.cli.doms0", "demo"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "verified: PCR digest equals the replay of the event log" in result.stdout
    assert result.stdout.strip().endswith("attestation OK: the domain booted what was measured")
