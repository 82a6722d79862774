"""Acceptance: every tpm2-tools flow of :mod:`tpm2_tools_flows` passes against each
target — our ``tpm-emulator`` standalone, behind tpm2-abrmd, a DomS0 vTPM behind
``vtpmctl attach`` — and against swtpm/libtpms, the oracle the flows were written
against.

One TPM per target for the whole module (pytest groups the tests by target); each
flow brings its own keys, indices and handles, and transient objects and sessions a
failed flow left behind are flushed before the next one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.integration import tpm_targets
from tests.integration.tpm2_tools_flows import FLOWS, tools_for

TARGETS = ("swtpm", "emulator", "abrmd", "doms0")
TOOLS_FOR_TARGET = {"swtpm": "swtpm", "abrmd": "tpm2-abrmd", "emulator": "tpm2_getrandom",
                    "doms0": "tpm2_getrandom"}


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tpm_targets.Target]:
    name = str(request.param)
    require_tool("tpm2_getrandom")
    require_tool(TOOLS_FOR_TARGET[name])
    if name == "abrmd":
        require_tool("dbus-daemon")
    with tpm_targets.start(name, tmp_path_factory.mktemp(name)) as running:
        # A DomS0 vTPM starts powered on but not started up; the others were
        # started with --flags startup-clear and answer TPM_RC_INITIALIZE here.
        subprocess.run(["tpm2_startup", "-c"], capture_output=True, timeout=60,
                       env={**os.environ, **running.env, "TPM2TOOLS_TCTI": running.tcti})
        yield running


@pytest.mark.parametrize("flow", list(FLOWS))
def test_flow(target: tpm_targets.Target, flow: str, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in target.env.items():
        monkeypatch.setenv(key, value)
    tools = tools_for(target.tcti, tmp_path)
    if tools.flush:
        tools.reset_handles()
    FLOWS[flow](target.tcti, tmp_path)
