"""Deep quote end to end: a real swtpm as the host TPM, ``doms0 init`` + ``serve
--root-tpm``, a domain built with ``vtpmctl build`` into a vTPM of each engine,
``vtpmctl quote --deep`` and ``vtpmctl verify --host-ak``."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domS0.demo import write_sample_domain
from domS0.harness import Doms0Process
from tests.conftest import DomS0Factory, only_on, require_tool
from tests.integration.test_measured_launch import NONCE, build, ok, vtpmctl

from .conftest import Host


def _built(doms0: Doms0Process, engine: str, tmp_path: Path) -> tuple[Path, Path]:
    """Build dom1 on a vTPM of ``engine``; returns (manifest, CA certificate)."""
    kernel, initrd = write_sample_domain(tmp_path / "domain")
    manifest = tmp_path / "m.json"
    ok(build(doms0, "dom1", kernel, initrd, "--engine", engine, "--manifest-out", manifest))
    ok(vtpmctl(doms0, "certs", "dom1", "--out", tmp_path / "certs"))
    return manifest, tmp_path / "certs" / "ca.pem"


def test_deep_quote_binds_the_vtpm_quote_to_the_host(host: Host, engine: str,
                                                     tmp_path: Path) -> None:
    require_tool("swtpm")
    host.init("--pcrs", "sha256:0,7")
    doms0 = host.serve_process().start()
    try:
        manifest, ca = _built(doms0, engine, tmp_path)
        evidence = tmp_path / "evidence"
        out = ok(vtpmctl(doms0, "quote", "dom1", "--nonce", NONCE, "--deep", "--out",
                         evidence))
        assert "deep quote" in out
        shown = json.loads(ok(vtpmctl(doms0, "policy", "show", "--json")))
    finally:
        doms0.stop()
    doc = json.loads((evidence / "evidence.json").read_text())
    deep = doc["deep_quote"]
    assert deep["measure_pcr"] == 15 and deep["host_pcr_selection"].endswith(",15")
    # The access-control policy DomS0 enforces (none loaded: the zero digest).
    policy_digest = shown["digest"]
    assert deep["policy_digest"] == policy_digest == "00" * 32
    host_ak = evidence / "host-ak.pub.pem"
    assert host_ak.read_text() == deep["host_ak_public_pem"]

    def verify(*extra: str | Path) -> tuple[int, str]:
        done = vtpmctl(doms0, "verify", evidence, "--manifest", manifest, "--ca", ca,
                       "--nonce", NONCE, *extra)
        return done.returncode, done.stdout + done.stderr

    code, text = verify("--host-ak", host_ak, "--require-deep",
                        "--policy-digest", policy_digest)
    assert code == 0, text
    assert "PASS deep quote" in text and "verified: all checks passed" in text

    # Without the host AK: informational, not a failure; unless it is required.
    code, text = verify()
    assert code == 0, text
    assert "INFO deep quote: present, not checked (pass --host-ak)" in text
    code, text = verify("--require-deep")
    assert code != 0 and "FAIL deep quote: present, not checked" in text

    # Another host AK: refused.
    other = tmp_path / "other-ak.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code, text = verify("--host-ak", other)
    assert code != 0, text
    assert "FAIL deep quote: signed by another host AK" in text

    # Another policy digest pinned: refused.
    code, text = verify("--host-ak", host_ak, "--policy-digest", "11" * 32)
    assert code != 0 and "FAIL deep quote: DomS0's policy digest" in text

    # The binding covers the vTPM UUID: a bundle relabelled to another vTPM fails.
    doc["vtpm_uuid"] = "00000000-0000-4000-8000-000000000000"
    (evidence / "evidence.json").write_text(json.dumps(doc))
    code, text = verify("--host-ak", host_ak)
    assert code != 0 and "does not bind this vTPM quote" in text


# Refused before any host TPM is asked; the vTPM's quotes are the test above's.
@only_on("builtin")
def test_software_root_refuses_deep_quotes(start_doms0: DomS0Factory, engine: str,
                                           tmp_path: Path) -> None:
    doms0 = start_doms0(engine)
    _built(doms0, engine, tmp_path)
    done = vtpmctl(doms0, "quote", "dom1", "--nonce", NONCE, "--deep", "--out",
                   tmp_path / "e")
    assert done.returncode != 0
    assert "FAILED_PRECONDITION" in done.stderr
    assert "deep quotes need a host TPM root (doms0 serve --root-tpm TCTI)" in done.stderr
    ok(vtpmctl(doms0, "quote", "dom1", "--nonce", NONCE, "--out", tmp_path / "plain"))
