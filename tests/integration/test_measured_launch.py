"""Measured launch and attestation against real DomS0 processes and real tpm2-tools.

A domain is built with ``vtpmctl build`` (DomS0 measures the streamed images itself),
its event log is replayed by ``tpm2_eventlog`` and compared with the vTPM's PCRs as
``tpm2_pcrread`` reads them, its quote is checked by ``tpm2_checkquote``, and
``vtpmctl verify`` passes the honest evidence and names what is wrong in forged ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from domS0.demo import SAMPLE_CMDLINE, write_sample_domain
from domS0.harness import AttachProcess, Doms0Process
from measure.manifest import Manifest
from tests.conftest import DomS0Factory, require_tool

NONCE = "00112233445566778899aabbccddeeff01020304"


def vtpmctl(doms0: Doms0Process, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "domS0.cli.vtpmctl", *map(str, args)],
                          env=doms0.env(), capture_output=True, text=True, timeout=300)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def pcr_listing(text: str) -> dict[tuple[str, int], str]:
    """``bank:`` lines followed by ``N : 0xHEX`` lines (tpm2_pcrread, tpm2_eventlog)."""
    values: dict[tuple[str, int], str] = {}
    bank = ""
    for line in text.splitlines():
        if match := re.fullmatch(r"\s*(sha\d+)\s*:\s*", line):
            bank = match[1]
        elif (match := re.fullmatch(r"\s*(\d+)\s*:\s*0x([0-9A-Fa-f]+)\s*", line)) and bank:
            values[(bank, int(match[1]))] = match[2].lower()
    return values


def build(doms0: Doms0Process, name: str, kernel: Path, initrd: Path, *extra: str | Path,
          cmdline: str = SAMPLE_CMDLINE) -> subprocess.CompletedProcess[str]:
    return vtpmctl(doms0, "build", name, "--kernel", kernel, "--initrd", initrd,
                   "--cmdline", cmdline, *extra)


def test_event_log_replays_to_the_vtpm_pcrs_and_predict_agrees(
        doms0: Doms0Process, engine: str, tmp_path: Path,
        attach: Callable[[str], AttachProcess]) -> None:
    require_tool("tpm2_getrandom")
    kernel, initrd = write_sample_domain(tmp_path / "domain")
    predicted = tmp_path / "predicted.json"
    ok(vtpmctl(doms0, "predict", "--kernel", kernel, "--initrd", initrd, "--cmdline",
               SAMPLE_CMDLINE, "--manifest-out", predicted))
    manifest, log = tmp_path / "m.json", tmp_path / "eventlog.bin"
    out = ok(build(doms0, "dom1", kernel, initrd, "--engine", engine, "--manifest-out",
                   manifest, "--eventlog-out", log))
    assert "-tpmdev emulator,id=tpm0,chardev=chrtpm" in out
    assert Manifest.loads(predicted.read_text()).pcrs == Manifest.loads(manifest.read_text()).pcrs

    parsed = subprocess.run(["tpm2_eventlog", str(log)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
    replayed = pcr_listing(parsed.stdout.split("\npcrs:", 1)[1])
    assert {pcr for _, pcr in replayed} == {8, 9}

    front = attach("dom1")
    banks = sorted({bank for bank, _ in replayed})
    read = subprocess.run(["tpm2_pcrread", "+".join(f"{b}:8,9" for b in banks)],
                          env={**os.environ, "TPM2TOOLS_TCTI": front.tcti},
                          capture_output=True, text=True)
    assert read.returncode == 0, read.stderr
    assert pcr_listing(read.stdout) == replayed
    expected = Manifest.loads(manifest.read_text()).pcrs
    assert all(expected[bank][pcr].hex() == value for (bank, pcr), value in replayed.items())


def test_quote_is_accepted_by_tpm2_checkquote_and_verify(
        start_doms0: DomS0Factory, engine: str, tmp_path: Path) -> None:
    require_tool("tpm2_getrandom")
    doms0 = start_doms0(engine)
    kernel, initrd = write_sample_domain(tmp_path / "domain")
    manifest = tmp_path / "m.json"
    built = ok(build(doms0, "dom1", kernel, initrd, "--engine", engine, "--manifest-out",
                     manifest))
    assert "AK: enrolled" in built
    ok(vtpmctl(doms0, "certs", "dom1", "--out", tmp_path / "certs"))
    ca = tmp_path / "certs" / "ca.pem"
    evidence = tmp_path / "evidence"
    ok(vtpmctl(doms0, "quote", "dom1", "--nonce", NONCE, "--out", evidence))

    checked = subprocess.run(
        ["tpm2_checkquote", "-u", str(evidence / "ak.pub.pem"), "-m",
         str(evidence / "quote.msg"), "-s", str(evidence / "quote.sig"), "-f",
         str(evidence / "quote.pcrs"), "-g", "sha256", "-q", NONCE],
        capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr

    honest = ok(vtpmctl(doms0, "verify", evidence, "--manifest", manifest, "--ca", ca,
                        "--nonce", NONCE))
    assert "FAIL" not in honest and "PASS event log" in honest

    def refused(bundle: Path, check: str, item: str = "", ca_pem: Path = ca,
                nonce: str = NONCE) -> None:
        result = vtpmctl(doms0, "verify", bundle, "--manifest", manifest, "--ca", ca_pem,
                         "--nonce", nonce)
        assert result.returncode == 1, result.stdout
        line = next((x for x in result.stdout.splitlines() if x.startswith(f"FAIL {check}")),
                    None)
        assert line is not None, result.stdout
        assert item in line, line

    # One byte of the initrd changed: a second domain booting it, checked against
    # the original manifest.
    changed = tmp_path / "changed.img"
    data = bytearray(initrd.read_bytes())
    data[100] ^= 1
    changed.write_bytes(bytes(data))
    ok(build(doms0, "dom2", kernel, changed, "--engine", engine))
    ok(vtpmctl(doms0, "quote", "dom2", "--nonce", NONCE, "--out", tmp_path / "e2"))
    refused(tmp_path / "e2", "event log", "initrd")

    ok(build(doms0, "dom3", kernel, initrd, "--engine", engine, cmdline="init=/bin/sh"))
    ok(vtpmctl(doms0, "quote", "dom3", "--nonce", NONCE, "--out", tmp_path / "e3"))
    refused(tmp_path / "e3", "event log", "cmdline")

    refused(evidence, "nonce", nonce="ff" * 20)

    edited = tmp_path / "edited"
    shutil.copytree(evidence, edited)
    log = bytearray((edited / "eventlog.bin").read_bytes())
    log[-20] ^= 1            # inside the last event's (the initrd's) sha384 digest
    (edited / "eventlog.bin").write_bytes(bytes(log))
    refused(edited, "event log", "initrd")

    other = start_doms0(engine)
    ok(vtpmctl(other, "create", "x", "--engine", engine))
    ok(vtpmctl(other, "certs", "x", "--out", tmp_path / "other"))
    refused(evidence, "certificate chain", "not issued by the trusted vTPM CA",
            ca_pem=tmp_path / "other" / "ca.pem")


def test_build_into_a_held_vtpm_is_refused_unless_forced(
        doms0: Doms0Process, engine: str, tmp_path: Path) -> None:
    kernel, initrd = write_sample_domain(tmp_path / "domain")
    ok(vtpmctl(doms0, "create", "held", "--engine", engine))
    front = AttachProcess(doms0, "held").start()
    try:
        refused = build(doms0, "held", kernel, initrd)
        assert refused.returncode == 1
        assert "FAILED_PRECONDITION" in refused.stderr and "held by" in refused.stderr
        ok(build(doms0, "held", kernel, initrd, "--force"))
    finally:
        front.stop()


def test_quote_before_the_first_build_is_refused(start_doms0: DomS0Factory,
                                                 tmp_path: Path) -> None:
    """No AK is enrolled until the domain is built; a quote says so instead of failing
    in the TPM."""
    doms0 = start_doms0()
    ok(vtpmctl(doms0, "create", "b1"))
    quoted = vtpmctl(doms0, "quote", "b1", "--nonce", NONCE, "--out", tmp_path / "e")
    assert quoted.returncode == 1
    assert "FAILED_PRECONDITION" in quoted.stderr and "no attestation key yet" in quoted.stderr
    assert "vtpmctl build b1" in quoted.stderr


def test_predict_and_event_log_over_grpc(start_doms0: DomS0Factory, tmp_path: Path) -> None:
    from domS0.api.vtpm.v1 import vtpm_pb2 as pb
    from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc

    doms0 = start_doms0()
    kernel, initrd = write_sample_domain(tmp_path / "domain")
    header = pb.BuildHeader(cmdline=SAMPLE_CMDLINE, launch_config_json='{"vcpus": 2}')
    requests = [pb.BuildRequest(header=header),
                pb.BuildRequest(chunk=pb.ImageChunk(kind=pb.IMAGE_KIND_KERNEL,
                                                    data=kernel.read_bytes())),
                pb.BuildRequest(chunk=pb.ImageChunk(kind=pb.IMAGE_KIND_INITRD,
                                                    data=initrd.read_bytes()))]
    with doms0.channel() as channel:
        stub = pb_grpc.AttestationStub(channel)
        predicted = Manifest.loads(stub.Predict(iter(requests)).manifest_json)
        assert json_item(predicted, "config") == '{"devices":[],"label":"","memory_mib":512,' \
            '"vcpus":2,"version":1}'
        header.vtpm, header.create_if_missing = "g1", True
        requests[0] = pb.BuildRequest(header=header)
        built = stub.Build(iter(requests))
        assert Manifest.loads(built.manifest_json).pcrs == predicted.pcrs
        assert "-smp" in built.qemu_args and "2" in built.qemu_args
        log = stub.GetEventLog(pb.GetEventLogRequest(vtpm="g1")).event_log
        assert log == built.event_log
        certs = stub.GetCertificates(pb.GetCertificatesRequest(vtpm="g1"))
        assert certs.ca_certificate.startswith("-----BEGIN CERTIFICATE-----")
        assert certs.ak_certificate.startswith("-----BEGIN CERTIFICATE-----")
    assert len(list((doms0.state_dir / "images" / "sha256").iterdir())) == 2


def json_item(manifest: Manifest, kind: str) -> str:
    item = manifest.item(kind)
    assert item is not None
    return str(item.value)


def test_every_guest_boot_is_measured_again(doms0: Doms0Process, engine: str,
                                            tmp_path: Path) -> None:
    """QEMU resets the vTPM when the guest powers on (CMD_INIT, then the firmware's
    TPM2_Startup(CLEAR)); DomS0 measures the built domain again right then."""
    from tests import tpm2
    from tests.integration.test_qemu_control import QemuClient
    from tpm_emulator import swtpm_ctrl as ctrl

    kernel, initrd = write_sample_domain(tmp_path / "domain")
    manifest_path = tmp_path / "m.json"
    ok(build(doms0, "booted", kernel, initrd, "--engine", engine, "--manifest-out",
             manifest_path))
    manifest = Manifest.loads(manifest_path.read_text())
    with doms0.channel() as channel:
        from domS0.api.vtpm.v1 import vtpm_pb2 as pb
        from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc

        vtpm = pb_grpc.ManagerStub(channel).GetVtpm(pb.GetVtpmRequest(vtpm="booted"))
    qemu = QemuClient(vtpm.control_socket)
    try:
        assert qemu.set_datafd() == 0
        for _ in range(2):  # power on, then a reboot
            assert qemu.call(ctrl.Init(0)).result == 0
            assert tpm2.rc_of(qemu.tpm(tpm2.startup_clear())) == 0
            for pcr in (8, 9):
                value = tpm2.pcr_value_from_read(qemu.tpm(tpm2.pcr_read_sha256(pcr)))
                assert value == manifest.pcrs["sha256"][pcr], f"PCR {pcr}"
            # The guest extends on its own afterwards, as any OS does.
            assert tpm2.rc_of(qemu.tpm(tpm2.pcr_extend_sha256(9, b"\x01" * 32))) == 0
    finally:
        qemu.close()
