"""Every caller of DomS0 is a principal: mutual TLS on TCP, bearer tokens on the
insecure loopback listener, peer credentials on the Unix socket. Real DomS0
processes and real vtpmctl runs throughout."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from domS0.api.vtpm.v1 import vtpm_pb2 as pb
from domS0.api.vtpm.v1 import vtpm_pb2_grpc as pb_grpc
from domS0.client.channel import open_channel
from domS0.harness import Doms0Process
from domS0.security.identity import ensure_tls, issue_client, principal_from_certificate
from domS0.security.principal import parse_principal
from tests.conftest import DomS0Factory


def vtpmctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "domS0.cli.vtpmctl", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def doms0_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "domS0.cli.doms0", *args],
                          capture_output=True, text=True, timeout=120)


def bare_env(server: str) -> dict[str, str]:
    """vtpmctl's environment with no credential of any kind."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VTPM_CERT", "VTPM_KEY", "VTPM_CA", "VTPM_TOKEN", "VTPM_TOKEN_FILE")}
    return {**env, "VTPM_SERVER": server, "VTPM_TOKEN_FILE": "/nonexistent/client.token"}


def callers(doms0: Doms0Process, method: str) -> list[str]:
    """The caller field of DomS0's JSON request lines for ``method``."""
    found = []
    for line in doms0.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("method") == method:
            found.append(entry["caller"])
    return found


def cert_args(folder: Path) -> tuple[str, ...]:
    return ("--cert", str(folder / "client.pem"), "--key", str(folder / "client.key"),
            "--ca", str(folder / "ca.pem"))


# -- mutual TLS ---------------------------------------------------------------------------

@pytest.fixture
def tls_doms0(start_doms0: DomS0Factory) -> Doms0Process:
    return start_doms0(tls=True, log_format="json")


def test_admin_certificate_lists_vtpms(tls_doms0: Doms0Process) -> None:
    done = vtpmctl(tls_doms0.env(), "list", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_domain_certificate_is_the_principal_the_server_sees(tls_doms0: Doms0Process,
                                                             tmp_path: Path) -> None:
    client = tls_doms0.issue("domain:vm1", tmp_path / "vm1")
    assert principal_from_certificate((client / "client.pem").read_bytes()) == \
        parse_principal("domain:vm1", "tls")
    assert stat.S_IMODE((client / "client.key").stat().st_mode) == 0o600
    vtpmctl(bare_env(tls_doms0.address), *cert_args(client), "create", "vm1")
    seen = callers(tls_doms0, "CreateVtpm")
    assert seen and seen[-1].startswith("domain:vm1@ipv4:127.0.0.1:"), seen


def test_certificate_from_another_ca_is_refused(tls_doms0: Doms0Process,
                                                tmp_path: Path) -> None:
    other_state = tmp_path / "other-host"
    ensure_tls(other_state, "other-host")
    foreign = tmp_path / "foreign"
    issue_client(other_state, parse_principal("admin:mallory"), foreign)
    done = vtpmctl(bare_env(tls_doms0.address), "--cert", str(foreign / "client.pem"),
                   "--key", str(foreign / "client.key"),
                   "--ca", str(tls_doms0.client_dir / "ca.pem"), "list")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"vtpmctl: UNAUTHENTICATED: DomS0 at {tls_doms0.address} refused the client "
        f"certificate {foreign / 'client.pem'}"), lines
    assert "NAME" not in done.stdout


@pytest.mark.parametrize("with_token", [False, True])
def test_no_certificate_is_one_line_unauthenticated(tls_doms0: Doms0Process,
                                                    with_token: bool) -> None:
    env = bare_env(tls_doms0.address)
    if with_token:       # a token means nothing to a mutual-TLS listener
        env["VTPM_TOKEN_FILE"] = str(tls_doms0.token_file)
    done = vtpmctl(env, "list")
    assert done.returncode == 1
    assert done.stderr == (f"vtpmctl: UNAUTHENTICATED: DomS0 at {tls_doms0.address} "
                           "requires a client certificate (vtpmctl --cert/--key or "
                           "VTPM_CERT/VTPM_KEY)\n")


def test_init_creates_tls_material_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = doms0_cli("init", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    tls = state / "tls"
    assert {p.name for p in tls.iterdir()} == {"ca.pem", "ca.key", "server.pem", "server.key"}
    assert stat.S_IMODE((tls / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tls / "server.key").stat().st_mode) == 0o600
    before = {p.name: p.read_bytes() for p in tls.iterdir()}
    assert doms0_cli("init", "--state-dir", str(state)).returncode == 0
    assert {p.name: p.read_bytes() for p in tls.iterdir()} == before
    refused = doms0_cli("issue", "anonymous", "--state-dir", str(state), "--out",
                        str(tmp_path / "x"))
    assert refused.returncode == 1 and refused.stderr.startswith("doms0: not a principal")


# -- the insecure loopback listener -------------------------------------------------------

@pytest.fixture
def loopback_doms0(start_doms0: DomS0Factory) -> Doms0Process:
    return start_doms0(log_format="json")


def test_insecure_loopback_warns_at_start(loopback_doms0: Doms0Process) -> None:
    warnings = [json.loads(line) for line in loopback_doms0.log().splitlines()
                if '"warning"' in line]
    assert any("--insecure-loopback" in w["msg"] and "INSECURE" in w["msg"]
               for w in warnings), warnings


def test_insecure_loopback_without_token_is_unauthenticated(
        loopback_doms0: Doms0Process) -> None:
    with open_channel(loopback_doms0.address) as channel, \
            pytest.raises(grpc.RpcError) as refused:
        pb_grpc.ManagerStub(channel).ListVtpms(pb.ListVtpmsRequest(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no bearer token" in refused.value.details()
    assert str(loopback_doms0.token_file) in refused.value.details()
    env = {**bare_env(loopback_doms0.address), "VTPM_TOKEN": "0" * 64}
    done = vtpmctl(env, "list")
    assert done.returncode == 1
    assert done.stderr.startswith("vtpmctl: UNAUTHENTICATED: the bearer token is not DomS0's")


def test_issued_domain_token_works_and_is_logged(loopback_doms0: Doms0Process,
                                                 tmp_path: Path) -> None:
    out = loopback_doms0.issue("domain:vm2", tmp_path / "vm2", token=True)
    token = (out / "token").read_text().strip()
    assert stat.S_IMODE((out / "token").stat().st_mode) == 0o600
    stored = (loopback_doms0.state_dir / "security" / "tokens.json").read_text()
    assert token not in stored and "domain:vm2" in stored
    done = vtpmctl(bare_env(loopback_doms0.address), "--token-file", str(out / "token"),
                   "create", "vm2")
    assert "UNAUTHENTICATED" not in done.stderr
    seen = callers(loopback_doms0, "CreateVtpm")
    assert seen and seen[-1].startswith("domain:vm2@ipv4:127.0.0.1:"), seen
    admin = vtpmctl(loopback_doms0.env(), "list")
    assert admin.returncode == 0, admin.stderr


def test_insecure_loopback_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    done = doms0_cli("serve", "--state-dir", str(tmp_path / "state"), "--listen",
                     "0.0.0.0:0", "--insecure-loopback")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("doms0: --insecure-loopback serves plain TCP on loopback "
                               "only, not on 0.0.0.0")


# -- the Unix socket ----------------------------------------------------------------------

@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """Short enough for a socket path (108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="doms0-sock-") as folder:
        yield Path(folder)


def unix_doms0(start_doms0: DomS0Factory, tmp_path: Path, socket_dir: Path,
               config: str = "") -> Doms0Process:
    extra: tuple[str, ...] = ()
    if config:
        path = tmp_path / "doms0.toml"
        path.write_text(config)
        extra = ("--config", str(path))
    return start_doms0(unix_socket=socket_dir / "doms0.sock", log_format="json",
                       extra_args=extra)


def test_unix_socket_own_uid_is_admin_local(start_doms0: DomS0Factory, tmp_path: Path,
                                            socket_dir: Path) -> None:
    doms0 = unix_doms0(start_doms0, tmp_path, socket_dir)
    done = vtpmctl(doms0.env(), "create", "u1")
    assert done.returncode == 0, done.stderr
    assert vtpmctl(doms0.env(), "list").returncode == 0
    seen = callers(doms0, "CreateVtpm")
    assert seen[-1].startswith(f"admin:local@unix uid {os.getuid()} "), seen


def test_unix_principals_map_the_uid(start_doms0: DomS0Factory, tmp_path: Path,
                                     socket_dir: Path) -> None:
    doms0 = unix_doms0(start_doms0, tmp_path, socket_dir,
                       f'unix_principals = {{ "uid:{os.getuid()}" = "domain:vm1" }}\n')
    vtpmctl(doms0.env(), "create", "vm1")
    seen = callers(doms0, "CreateVtpm")
    assert seen and seen[-1].startswith(f"domain:vm1@unix uid {os.getuid()} "), seen


def test_unmapped_uid_is_unauthenticated_naming_it(start_doms0: DomS0Factory,
                                                   tmp_path: Path, socket_dir: Path) -> None:
    other = os.getuid() + 4242
    doms0 = unix_doms0(start_doms0, tmp_path, socket_dir,
                       f'unix_principals = {{ "uid:{other}" = "admin:other" }}\n'
                       'unix_self_admin = false\n')
    done = vtpmctl(doms0.env(), "list")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"vtpmctl: UNAUTHENTICATED: uid {os.getuid()} "), lines
    assert "unix_principals" in lines[0]
