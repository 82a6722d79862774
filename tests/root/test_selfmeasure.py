"""DomS0's self-measurement: what it hashes, and one extend per host boot."""

from __future__ import annotations

import json
from pathlib import Path

from domS0 import selfmeasure
from vtpm_manager.root.policy import extend

from .conftest import HostTpm

D1 = b"\x11" * 32
D2 = b"\x22" * 32


def test_digest_covers_code_config_and_policy_files(tmp_path: Path) -> None:
    config, policy = tmp_path / "doms0.toml", tmp_path / "ste.policy"
    config.write_text("listen = '127.0.0.1:1'\n")
    policy.write_text("types a b\n")
    base, files = selfmeasure.measurement_digest(config, [policy])
    assert selfmeasure.measurement_digest(config, [policy]) == (base, files)
    labels = [label for label, _ in selfmeasure.code_files()]
    assert labels == sorted(labels) and "domS0/selfmeasure.py" in labels
    assert "vtpm_manager/root/tpm.py" in labels and not any("__pycache__" in x for x in labels)
    assert files == len(labels) + 2
    assert selfmeasure.measurement_digest(None, [policy])[0] != base
    policy.write_text("types a c\n")
    assert selfmeasure.measurement_digest(config, [policy])[0] != base


def test_restart_in_the_same_boot_does_not_extend_again(host_tpm: HostTpm,
                                                        tmp_path: Path) -> None:
    log = tmp_path / "run" / "measurements.log"
    first = selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 3)
    assert first.extended and first.pcr_value == extend(bytes(32), D1)
    again = selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 3)
    assert not again.extended and again.others == ()
    assert host_tpm.pcr("sha256:15") == first.pcr_value
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["type"] for e in entries] == ["start", "extend"]
    assert all(e["version"] == 1 and e["pcr"] == "sha256:15" for e in entries)


def test_a_different_doms0_in_the_same_boot_is_extended_and_named(host_tpm: HostTpm,
                                                                  tmp_path: Path) -> None:
    log = tmp_path / "measurements.log"
    selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 1)
    other = selfmeasure.measure_into(host_tpm.tcti, 15, log, D2, 1)
    assert other.extended and other.others == (D1.hex(),)
    assert "different DomS0" in other.hint()
    assert host_tpm.pcr("sha256:15") == extend(extend(bytes(32), D1), D2)


def test_host_reboot_makes_the_log_stale(host_tpm: HostTpm, tmp_path: Path) -> None:
    log = tmp_path / "measurements.log"
    first = selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 1)
    host_tpm.power_cycle()
    after = selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 1)
    assert after.extended and after.pcr_value == first.pcr_value
    assert log.with_name("measurements.log.stale").exists()


def test_unlogged_extend_makes_the_log_stale_and_is_kept_as_start(host_tpm: HostTpm,
                                                                  tmp_path: Path) -> None:
    """Something else extended the PCR (e.g. systemd's early-boot measurements into
    15): the new log starts from that value, and a restart is still recognised."""
    log = tmp_path / "measurements.log"
    host_tpm.extend(15, b"machine-id")
    start = host_tpm.pcr("sha256:15")
    selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 1)
    again = selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 1)
    assert not again.extended and again.pcr_value == extend(start, D1)


def test_crash_between_log_and_extend_is_not_a_second_extend(host_tpm: HostTpm,
                                                             tmp_path: Path) -> None:
    """The extend line is written first; a crash before the extend leaves a log
    that does not replay, which is stale, so the next start extends exactly once."""
    log = tmp_path / "measurements.log"
    log.write_text(json.dumps({"version": 1, "type": "start", "pcr": "sha256:15",
                               "value": "00" * 32}) + "\n"
                   + json.dumps({"version": 1, "type": "extend", "pcr": "sha256:15",
                                 "digest": D1.hex()}) + "\n")
    done = selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 1)
    assert done.extended and done.pcr_value == extend(bytes(32), D1)


def test_malformed_log_is_stale(host_tpm: HostTpm, tmp_path: Path) -> None:
    log = tmp_path / "measurements.log"
    log.write_text("not json\n")
    assert selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 1).extended


def test_prediction_is_the_first_boot_value(host_tpm: HostTpm, tmp_path: Path) -> None:
    log = tmp_path / "measurements.log"
    predicted = selfmeasure.predicted_value(host_tpm.tcti, 15, log, D1)
    assert selfmeasure.measure_into(host_tpm.tcti, 15, log, D1, 1).pcr_value == predicted
    assert selfmeasure.predicted_value(host_tpm.tcti, 15, log, D1) == predicted
    assert selfmeasure.predicted_value(host_tpm.tcti, 15, log, D2) == extend(bytes(32), D2)
