"""TpmRoot and TpmCounter in-process against a real swtpm host TPM."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtpm_manager.counter import CounterError
from vtpm_manager.root import PcrSelection, RootRefused, SoftwareRoot, TpmCounter, TpmRoot
from vtpm_manager.root.host import connect

from .conftest import HostTpm

HOST_PCRS = PcrSelection.parse("sha256:0,7")


def provision(host_tpm: HostTpm, state: Path, **kwargs: object) -> TpmRoot:
    return TpmRoot.provision(host_tpm.tcti, state, host_pcrs=HOST_PCRS, measure_pcr=15,
                             **kwargs)  # type: ignore[arg-type]


def test_kek_is_the_same_at_every_open(host_tpm: HostTpm, tmp_path: Path) -> None:
    root = provision(host_tpm, tmp_path)
    first = root.open().wrap(b"k" * 32, "vm")
    assert TpmRoot(host_tpm.tcti, tmp_path).open().unwrap(first, "vm") == b"k" * 32
    assert root.kind == "tpm" and root.measure_pcr == 15


def test_counter_increments_and_reads_back(host_tpm: HostTpm, tmp_path: Path) -> None:
    root = provision(host_tpm, tmp_path, nv_index=0x01500030)
    root.open()
    counter = root.counter()
    start = counter.read()
    assert counter.increment() == start + 1
    assert counter.increment() == start + 2
    reopened = TpmRoot(host_tpm.tcti, tmp_path)
    reopened.open()
    assert reopened.counter().read() == start + 2
    assert "0x01500030" in counter.origin


def test_counter_refuses_a_wrong_auth(host_tpm: HostTpm, tmp_path: Path) -> None:
    root = provision(host_tpm, tmp_path)
    root.open()
    with pytest.raises(CounterError, match="0x01500020"):
        TpmCounter(host_tpm.tcti, 0x01500020, b"\x00" * 32).increment()


def test_counter_needs_the_unsealed_auth(host_tpm: HostTpm, tmp_path: Path) -> None:
    root = provision(host_tpm, tmp_path)
    with pytest.raises(RootRefused, match="open"):
        root.counter()


def test_existing_nv_index_is_not_taken_over(host_tpm: HostTpm, tmp_path: Path) -> None:
    provision(host_tpm, tmp_path / "a")
    with pytest.raises(RootRefused, match="already defined"):
        provision(host_tpm, tmp_path / "b")


def test_cleared_owner_hierarchy_is_named(host_tpm: HostTpm, tmp_path: Path) -> None:
    provision(host_tpm, tmp_path)
    from tpm2_pytss.constants import ESYS_TR

    with connect(host_tpm.tcti) as esapi:
        esapi.clear(ESYS_TR.RH_LOCKOUT)  # new owner seed: a different SRK
    with pytest.raises(RootRefused, match="storage primary key is not the one"):
        TpmRoot(host_tpm.tcti, tmp_path).open()


def test_unreachable_tpm_is_named(tmp_path: Path, host_tpm: HostTpm) -> None:
    provision(host_tpm, tmp_path)
    with pytest.raises(RootRefused, match="cannot reach the host TPM"):
        TpmRoot("swtpm:host=127.0.0.1,port=1", tmp_path).open()


def test_software_root(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = SoftwareRoot(tmp_path)
    assert root.measure_pcr is None and root.kind == "software"
    wrapped = root.open().wrap(b"d" * 32, "vm")
    assert SoftwareRoot(tmp_path).open().unwrap(wrapped, "vm") == b"d" * 32
    assert caplog.text.count("DEVELOPMENT ROOT OF TRUST") == 2
    assert root.counter().increment() == 1
