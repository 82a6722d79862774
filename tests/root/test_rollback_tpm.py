"""Rollback protection anchored in the host TPM's NV counter, with real processes."""

from __future__ import annotations

import shutil

from .conftest import Host
from .test_doms0_root import create_vtpm, vtpm_names


def test_an_old_whole_state_dir_is_refused(host: Host, tmp_path) -> None:
    host.init("--pcrs", "sha256:0,7")
    doms0 = host.serve_process().start()
    create_vtpm(doms0, "vm1")
    assert doms0.stop() == 0
    backup = tmp_path / "backup"
    shutil.copytree(host.state_dir, backup)

    doms0 = host.serve_process().start()  # a later run moves the host counter on
    create_vtpm(doms0, "vm2")
    assert doms0.stop() == 0

    shutil.rmtree(host.state_dir)
    shutil.copytree(backup, host.state_dir)
    refusal = host.serve_refused()
    assert "epoch" in refusal and str(host.state_dir / "vtpms") in refusal

    # The operator may accept the old state on purpose, and then it serves again.
    doms0 = host.serve_process("--adopt-state").start()
    assert vtpm_names(doms0) == {"vm1"}
    assert doms0.stop() == 0
