"""vtpmctl against a real DomS0: listings, transmit, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from domS0.harness import Doms0Process


def vtpmctl(doms0: Doms0Process, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "domS0.cli.vtpmctl", *args],
                          env=env or doms0.env(), capture_output=True, text=True, timeout=60)


def test_lifecycle_and_json(doms0: Doms0Process, engine: str) -> None:
    created = vtpmctl(doms0, "create", "web-1", "--engine", engine, "--meta", "owner=ops",
                      "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert info["name"] == "web-1" and info["engine"] == engine
    assert info["metadata"] == {"owner": "ops"} and info["state"] == "VTPM_STATE_RUNNING"

    listing = json.loads(vtpmctl(doms0, "list", "--json").stdout)
    assert [v["uuid"] for v in listing] == [info["uuid"]]
    assert "web-1" in vtpmctl(doms0, "list").stdout

    startup = vtpmctl(doms0, "transmit", "web-1", "80010000000c00000144 0000")
    assert startup.returncode == 0 and startup.stdout.strip() == "80010000000a00000000"
    random = vtpmctl(doms0, "transmit", info["uuid"], "80010000000c0000017b0010")
    assert random.stdout.startswith("80010000001c00000000")

    assert vtpmctl(doms0, "stop", "web-1").returncode == 0
    assert "stopped" in vtpmctl(doms0, "show", "web-1").stdout
    assert vtpmctl(doms0, "start", "web-1").returncode == 0
    assert vtpmctl(doms0, "delete", "web-1").returncode == 0
    assert json.loads(vtpmctl(doms0, "list", "--json").stdout) == []


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vtpmctl: ") and text in lines[0], lines[0]


def test_errors_are_one_line(doms0: Doms0Process) -> None:
    one_line_error(vtpmctl(doms0, "show", "ghost"), 1, "NOT_FOUND")
    one_line_error(vtpmctl(doms0, "create", "has space"), 1, "INVALID_ARGUMENT")
    one_line_error(vtpmctl(doms0, "transmit", "ghost", "zz"), 1, "hexadecimal")
    one_line_error(vtpmctl(doms0, "create", "x", "--meta", "novalue"), 1, "KEY=VALUE")
    no_token = {**doms0.env(), "VTPM_TOKEN_FILE": "/nonexistent/token"}
    one_line_error(vtpmctl(doms0, "list", env=no_token), 1, "token")
    wrong = {**doms0.env(), "VTPM_TOKEN": "f" * 64}
    wrong.pop("VTPM_TOKEN_FILE")
    one_line_error(vtpmctl(doms0, "list", env=wrong), 1, "UNAUTHENTICATED")
    nowhere = {**doms0.env(), "VTPM_SERVER": "127.0.0.1:1"}
    one_line_error(vtpmctl(doms0, "list", env=nowhere), 3, "cannot reach DomS0")
