"""Manufacturing real vTPMs (each engine): EKs from the TCG templates, certificates in
the TCG NV indices, readable by ESAPI and by tpm2-tools, verified by openssl."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tpm2_pytss.constants import ESYS_TR, TPM2_SU, TPMA_NV
from tpm2_pytss.internal.templates import ek_template

from domS0.harness import free_port
from tests.conftest import only_on, require_tool
from vtpm_manager.ca import VtpmCA, VtpmIdentity
from vtpm_manager.engine import Engine
from vtpm_manager.engines import make_engine
from vtpm_manager.engines.swtpm import unpack_state
from vtpm_manager.kek import KeyEncryptionKey
from vtpm_manager.manager import VtpmManager
from vtpm_manager.manufacture import (
    CERT_NV_ATTRIBUTES,
    EK_KINDS,
    NV_ECC_P256_EK_CERT,
    NV_PLATFORM_CERT,
    NV_RSA2048_EK_CERT,
    Execute,
    Manufactured,
    ecc_p256_ek_template,
    esapi_over,
    manufacture,
    public_key_of,
    read_nv,
    rsa2048_ek_template,
    state_manufacturer,
)
from vtpm_manager.store import StateStore

HOST = "doms0.example.net"
IDENTITY = VtpmIdentity(uuid="0d6f1b7e-7f0c-4c43-9a55-3c1f8e2b9d10", name="guest7", host=HOST)
CERT_INDICES = (NV_RSA2048_EK_CERT, NV_ECC_P256_EK_CERT, NV_PLATFORM_CERT)


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey(b"\x42" * 32, origin="test")


@pytest.fixture
def ca(tmp_path: Path, kek: KeyEncryptionKey) -> VtpmCA:
    return VtpmCA.open(tmp_path / "state", kek, HOST)


@pytest.fixture
def vtpm(tmp_path: Path, engine: str) -> Iterator[Engine]:
    """A fresh, unmanufactured vTPM on ``engine``."""
    tpm = make_engine(engine, tmp_path / "run")
    tpm.start(None)
    yield tpm
    tpm.stop()


def spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def openssl_verify(ca_pem: bytes, der: bytes, tmp_path: Path) -> None:
    require_tool("openssl")
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    pem = tmp_path / "leaf.pem"
    pem.write_bytes(x509.load_der_x509_certificate(der).public_bytes(
        serialization.Encoding.PEM))
    result = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"),
                             str(pem)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), (
        result.stdout + result.stderr)


def started(execute: Execute) -> None:
    with esapi_over(execute) as esapi:
        esapi.startup(TPM2_SU.CLEAR)


def read_certificates(execute: Execute) -> dict[int, bytes]:
    """What a guest reads: NV_ReadPublic + NV_Read (owner auth) of each index."""
    out: dict[int, bytes] = {}
    with esapi_over(execute) as esapi:
        for index in CERT_INDICES:
            handle = esapi.tr_from_tpmpublic(index)
            public, _ = esapi.nv_read_public(handle)
            attrs = int(public.nvPublic.attributes)
            assert attrs & int(CERT_NV_ATTRIBUTES) == int(CERT_NV_ATTRIBUTES), hex(attrs)
            assert attrs & TPMA_NV.WRITTEN and attrs & TPMA_NV.WRITELOCKED, hex(attrs)
            out[index] = read_nv(esapi, index)
            assert len(out[index]) == int(public.nvPublic.dataSize)
    return out


def recreated_ek_spki(execute: Execute) -> dict[str, bytes]:
    """CreatePrimary again from each template: deterministic, so the same EK."""
    out: dict[str, bytes] = {}
    with esapi_over(execute) as esapi:
        for kind, (template, _) in EK_KINDS.items():
            handle, public, *_ = esapi.create_primary(None, template(), ESYS_TR.ENDORSEMENT)
            esapi.flush_context(handle)
            out[kind] = spki(public_key_of(public.publicArea))
    return out


def check_manufactured(result: Manufactured, certs: dict[int, bytes], ca: VtpmCA,
                       ek_spki: dict[str, bytes], tmp_path: Path, uuid: str) -> None:
    by_index = {k.nv_index: k for k in result.endorsement_keys}
    assert set(by_index) == {NV_RSA2048_EK_CERT, NV_ECC_P256_EK_CERT}
    for index, der in certs.items():
        openssl_verify(ca.certificate_pem(), der, tmp_path)
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"urn:uuid:{uuid}" in san.get_values_for_type(x509.UniformResourceIdentifier)
        if index == NV_PLATFORM_CERT:
            assert der == result.platform_certificate.public_bytes(serialization.Encoding.DER)
            assert spki(cert.public_key()) == ek_spki["rsa2048"]
            continue
        key = by_index[index]
        assert der == key.certificate.public_bytes(serialization.Encoding.DER)
        assert spki(cert.public_key()) == ek_spki[key.kind] == spki(key.public_key)
        tpm_name = san.get_values_for_type(x509.DirectoryName)[0]
        values = {a.oid.dotted_string: a.value for a in tpm_name}
        assert values["2.23.133.2.1"] == result.tpm.manufacturer


# -- templates -----------------------------------------------------------------------------


@pytest.mark.parametrize(("ours", "name"), [(rsa2048_ek_template, "EK-RSA2048"),
                                            (ecc_p256_ek_template, "EK-ECC256")])
def test_templates_equal_tpm2_pytss_reading_of_the_profile(ours, name: str) -> None:
    """Independent check of our L-1/L-2 templates against tpm2-pytss's own."""
    theirs = ek_template.lookup(name)
    assert ours().marshal() == theirs.template.marshal()
    assert EK_KINDS["rsa2048" if "RSA" in name else "ecc-nist-p256"][1] == theirs.cert_index


# -- manufacturing a vTPM on each engine -----------------------------------------------------


def test_manufactured_vtpm_holds_verifiable_ek_and_platform_certificates(
        vtpm: Engine, ca: VtpmCA, tmp_path: Path) -> None:
    result = manufacture(vtpm.execute, ca, IDENTITY)
    assert result.tpm.manufacturer.startswith("id:") and result.tpm.spec_family == "2.0"
    # As a guest gets it: power cycle (CMD_INIT), the guest's own Startup works.
    vtpm.power_cycle(delete_volatile=True)
    started(vtpm.execute)
    certs = read_certificates(vtpm.execute)
    ek_spki = recreated_ek_spki(vtpm.execute)
    check_manufactured(result, certs, ca, ek_spki, tmp_path, IDENTITY.uuid)


def test_manufactured_state_survives_export_and_restore(
        vtpm: Engine, engine: str, ca: VtpmCA, tmp_path: Path) -> None:
    result = manufacture(vtpm.execute, ca, IDENTITY)
    vtpm.power_cycle(delete_volatile=True)
    state = vtpm.export_state()
    again = make_engine(engine, tmp_path / "run2")
    again.start(state)
    try:
        started(again.execute)   # left shut down orderly: a fresh Startup(CLEAR) works
        certs = read_certificates(again.execute)
        check_manufactured(result, certs, ca, recreated_ek_spki(again.execute), tmp_path,
                           IDENTITY.uuid)
    finally:
        again.stop()


def test_manufacturing_again_replaces_the_certificates(
        vtpm: Engine, ca: VtpmCA, tmp_path: Path) -> None:
    first = manufacture(vtpm.execute, ca, IDENTITY)
    vtpm.power_cycle(delete_volatile=True)
    second = manufacture(vtpm.execute, ca, IDENTITY)
    assert (first.endorsement_keys[0].certificate.serial_number
            != second.endorsement_keys[0].certificate.serial_number)
    # Same templates, same seed: the same EKs.
    assert [k.public for k in first.endorsement_keys] == [
        k.public for k in second.endorsement_keys]
    vtpm.power_cycle(delete_volatile=True)
    started(vtpm.execute)
    certs = read_certificates(vtpm.execute)
    check_manufactured(second, certs, ca, recreated_ek_spki(vtpm.execute), tmp_path,
                       IDENTITY.uuid)


def test_an_already_started_tpm_is_left_started(vtpm: Engine, ca: VtpmCA) -> None:
    started(vtpm.execute)
    manufacture(vtpm.execute, ca, IDENTITY)
    with esapi_over(vtpm.execute) as esapi:
        assert len(bytes(esapi.get_random(8))) == 8   # no TPM_RC_INITIALIZE: still up


def test_an_engine_failure_surfaces_as_itself(ca: VtpmCA) -> None:
    class Broken(Exception):
        pass

    def execute(command: bytes) -> bytes:
        raise Broken("engine died")

    with pytest.raises(Broken, match="engine died"):
        manufacture(execute, ca, IDENTITY)


# -- tpm2-tools against a swtpm socket holding the same state ---------------------------------


class PlainSwtpm:
    """``swtpm socket`` on TCP, loaded with a permanent state blob via swtpm_ioctl."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port(2)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self, permanent: bytes) -> PlainSwtpm:
        require_tool("swtpm_ioctl")
        state = self.root / "state"
        state.mkdir(parents=True)
        blob = self.root / "permanent.blob"
        blob.write_bytes(permanent)
        self.proc = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
             "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
             "--log", f"file={self.root / 'swtpm.log'}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port + 1)) == 0:
                    break
            assert self.proc.poll() is None, "swtpm exited"
            assert time.monotonic() < deadline, "swtpm did not listen"
            time.sleep(0.02)
        ctrl = ["swtpm_ioctl", "--tcp", f"127.0.0.1:{self.port + 1}"]
        for args in (["--stop"], ["--load", "permanent", str(blob)], ["-i"]):
            subprocess.run([*ctrl, *args], check=True, capture_output=True, timeout=30)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def tools(tcti: str, *argv: str) -> subprocess.CompletedProcess[str]:
    require_tool(argv[0])
    result = subprocess.run(list(argv), env={**os.environ, "TPM2TOOLS_TCTI": tcti},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stderr}"
    return result


# swtpm's own state blob goes into a plain swtpm; tpm2-tools read both engines'
# certificates through DomS0 in tests/integration/test_ek_certificates.py.
@only_on("swtpm")
def test_tpm2_tools_read_the_certificates(vtpm: Engine, ca: VtpmCA,
                                          tmp_path: Path) -> None:
    result = manufacture(vtpm.execute, ca, IDENTITY)
    vtpm.power_cycle(delete_volatile=True)
    permanent = unpack_state(vtpm.export_state()).permanent
    plain = PlainSwtpm(tmp_path / "plain").start(permanent)
    try:
        tools(plain.tcti, "tpm2_startup", "-c")
        listing = tools(plain.tcti, "tpm2_nvreadpublic").stdout
        for index in CERT_INDICES:
            assert f"{index:#x}:" in listing
        expected = {k.nv_index: k.certificate for k in result.endorsement_keys}
        expected[NV_PLATFORM_CERT] = result.platform_certificate
        for index, cert in expected.items():
            out = tmp_path / f"{index:x}.der"
            tools(plain.tcti, "tpm2_nvread", "-C", "o", "-o", str(out), f"{index:#x}")
            assert out.read_bytes() == cert.public_bytes(serialization.Encoding.DER)
            openssl_verify(ca.certificate_pem(), out.read_bytes(), tmp_path)
        # tpm2_getekcertificate reads the TCG low-range indices: RSA first, then ECC.
        rsa_out, ecc_out = tmp_path / "ek-rsa.der", tmp_path / "ek-ecc.der"
        tools(plain.tcti, "tpm2_getekcertificate", "-o", str(rsa_out), "-o", str(ecc_out))
        assert rsa_out.read_bytes() == expected[NV_RSA2048_EK_CERT].public_bytes(
            serialization.Encoding.DER)
        assert ecc_out.read_bytes() == expected[NV_ECC_P256_EK_CERT].public_bytes(
            serialization.Encoding.DER)
    finally:
        plain.stop()


# -- the manager hook ---------------------------------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path, kek: KeyEncryptionKey, ca: VtpmCA) -> Iterator[VtpmManager]:
    require_tool("swtpm")
    # Unix socket paths are short (108 bytes): the run root lives in /tmp.
    run_root = Path(tempfile.mkdtemp(prefix="mfg-"))
    mgr = VtpmManager(StateStore(tmp_path / "vtpms", kek), run_root, "builtin",
                      manufacturer=state_manufacturer(ca, HOST))
    yield mgr
    mgr.shutdown()
    shutil.rmtree(run_root, ignore_errors=True)


@pytest.mark.parametrize("start", [False, True], ids=["stopped", "started"])
def test_manager_create_manufactures(manager: VtpmManager, ca: VtpmCA, tmp_path: Path,
                                     engine: str, start: bool) -> None:
    instance = manager.create("vm1", engine, start=start)
    assert instance.running == start
    assert instance.holder is None
    manager.start("vm1")

    def execute(command: bytes) -> bytes:
        return instance.execute(command, 0, None)

    started(execute)
    certs = read_certificates(execute)
    for der in certs.values():
        openssl_verify(ca.certificate_pem(), der, tmp_path)
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        assert f"urn:uuid:{instance.record.uuid}" in san.get_values_for_type(
            x509.UniformResourceIdentifier)
    rsa = x509.load_der_x509_certificate(certs[NV_RSA2048_EK_CERT])
    assert spki(rsa.public_key()) == recreated_ek_spki(execute)["rsa2048"]


def test_a_failed_manufacture_leaves_no_vtpm(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    failures = ["CA unavailable"]

    def fails_once(record: object) -> bytes | None:
        if failures:
            raise RuntimeError(failures.pop())
        return None

    store = StateStore(tmp_path / "vtpms", kek)
    mgr = VtpmManager(store, tmp_path / "mrun", "builtin", manufacturer=fails_once)
    with pytest.raises(RuntimeError, match="CA unavailable"):
        mgr.create("vm1", "builtin")
    assert mgr.list() == []
    assert store.load_all() == ([], [])
    assert not (tmp_path / "mrun").exists() or not any((tmp_path / "mrun").iterdir())
    mgr.create("vm1", "builtin")   # the name is free again
    assert [r.name for r in store.load_all()[0]] == ["vm1"]
    mgr.shutdown()
