"""Unmodified tpm2-tools reach a vTPM through ``vtpmctl attach`` (swtpm TCTI)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from tests.conftest import require_tool


def tools(tcti: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    require_tool("tpm2_getrandom")
    env = {**os.environ, "TPM2TOOLS_TCTI": tcti}
    result = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stderr}"
    return result


def pcr_hex(tcti: str, bank: str, index: int) -> str:
    out = tools(tcti, "tpm2_pcrread", f"{bank}:{index}").stdout
    for line in out.splitlines():
        if line.strip().startswith(f"{index}:"):
            return line.split("0x", 1)[1].strip().lower()
    raise AssertionError(f"no PCR {index} in:\n{out}")


def test_everyday_tools(vtpm: pb.Vtpm, attach, tmp_path: Path) -> None:
    tcti = attach(vtpm.name).tcti
    tools(tcti, "tpm2_startup", "-c")

    random = tools(tcti, "tpm2_getrandom", "--hex", "16").stdout.strip()
    assert len(bytes.fromhex(random)) == 16

    for capability in ("algorithms", "commands", "pcrs", "properties-fixed",
                       "properties-variable"):
        assert tools(tcti, "tpm2_getcap", capability).stdout.strip()
    assert 'value: "2.0"' in tools(tcti, "tpm2_getcap", "properties-fixed").stdout

    assert pcr_hex(tcti, "sha256", 16) == "00" * 32
    digest = hashlib.sha256(b"measured").digest()
    tools(tcti, "tpm2_pcrextend", f"16:sha256={digest.hex()}")
    expected = hashlib.sha256(bytes(32) + digest).digest()
    assert pcr_hex(tcti, "sha256", 16) == expected.hex()

    event = tmp_path / "event.bin"
    event.write_bytes(b"an event for PCR 23")
    out = tools(tcti, "tpm2_pcrevent", "23", str(event)).stdout
    assert hashlib.sha256(event.read_bytes()).hexdigest() in out.lower()
    for bank, fn in (("sha1", hashlib.sha1), ("sha256", hashlib.sha256),
                     ("sha384", hashlib.sha384)):
        size = fn().digest_size
        want = fn(bytes(size) + fn(event.read_bytes()).digest()).hexdigest()
        assert pcr_hex(tcti, bank, 23) == want, bank


def test_two_vtpms_are_isolated(manager, attach, engine: str) -> None:
    a = manager.CreateVtpm(pb.CreateVtpmRequest(name="a", engine=engine, start=True))
    b = manager.CreateVtpm(pb.CreateVtpmRequest(name="b", engine=engine, start=True))
    tcti_a, tcti_b = attach(a.name).tcti, attach(b.name).tcti
    tools(tcti_a, "tpm2_startup", "-c")
    tools(tcti_b, "tpm2_startup", "-c")
    tools(tcti_a, "tpm2_pcrextend", f"16:sha256={'11' * 32}")
    assert pcr_hex(tcti_a, "sha256", 16) != "00" * 32
    assert pcr_hex(tcti_b, "sha256", 16) == "00" * 32


def test_attach_on_a_unix_socket(doms0, vtpm: pb.Vtpm, tmp_path: Path) -> None:
    from domS0.harness import AttachProcess

    path = tmp_path / "vm1.sock"
    front = AttachProcess(doms0, vtpm.name, unix_path=str(path)).start()
    try:
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        tools(front.tcti, "tpm2_startup", "-c")
        assert len(tools(front.tcti, "tpm2_getrandom", "--hex", "4").stdout.strip()) == 8
    finally:
        front.stop()
