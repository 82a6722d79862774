"""tpm2-abrmd, the TSS resource manager, drives a vTPM through ``vtpmctl attach``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from pathlib import Path

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from tests.conftest import require_tool


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)


def test_tools_through_abrmd(vtpm: pb.Vtpm, attach, session_bus: str,
                             tmp_path: Path) -> None:
    require_tool("tpm2-abrmd")
    require_tool("tpm2_getrandom")
    front = attach(vtpm.name)
    bus_name = f"com.vtpmstack.Test.T{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": session_bus,
           "TPM2TOOLS_TCTI": f"tabrmd:bus_type=session,bus_name={bus_name}"}
    log = (tmp_path / "abrmd.log").open("w")
    abrmd = subprocess.Popen(
        ["tpm2-abrmd", "--session", "--allow-root", f"--dbus-name={bus_name}",
         f"--tcti=swtpm:host=127.0.0.1,port={front.port}"],
        env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            result = run(env, "tpm2_getrandom", "--hex", "8")
            if result.returncode == 0:
                break
            assert abrmd.poll() is None, (tmp_path / "abrmd.log").read_text()
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.2)
        assert len(bytes.fromhex(result.stdout.strip())) == 8

        caps = run(env, "tpm2_getcap", "pcrs")
        assert caps.returncode == 0 and "sha256" in caps.stdout, caps.stderr
        digest = hashlib.sha256(b"through abrmd").digest()
        assert run(env, "tpm2_pcrextend", f"16:sha256={digest.hex()}").returncode == 0
        event = tmp_path / "event"
        event.write_bytes(b"abrmd event")
        pcrevent = run(env, "tpm2_pcrevent", "16", str(event))
        assert pcrevent.returncode == 0, pcrevent.stderr
        read = run(env, "tpm2_pcrread", "sha256:16")
        assert read.returncode == 0, read.stderr
        first = hashlib.sha256(bytes(32) + digest).digest()
        want = hashlib.sha256(first + hashlib.sha256(b"abrmd event").digest()).hexdigest()
        assert want in read.stdout.lower()
    finally:
        abrmd.terminate()
        abrmd.wait(10)
        log.close()
