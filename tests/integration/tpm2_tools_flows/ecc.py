"""Two-phase ECC: curve parameters, ephemeral keys, commitments and ECDAA signing."""

from __future__ import annotations

import struct
from pathlib import Path

from .runner import Tools, tools_for

P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
ECDH_KEY = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt|noda"
ECDAA_KEY = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign|noda"
TPM_RC_VALUE_P4 = 0x4C4  # a commit counter that names no outstanding commitment
TPM_RC_VALUE = 0x084


def _counter(data: bytes) -> int:
    return int(struct.unpack(">H", data[-2:])[0])


def _zgen(key: str, static: str, ephemeral: str, counter: int,
          out: str) -> list[str]:
    return ["tpm2_zgen2phase", "-c", key, "--static-public", static,
            "--ephemeral-public", ephemeral, "-t", str(counter),
            "--output-Z1", f"{out}.z1", "--output-Z2", f"{out}.z2"]


def _end_sessions(tools: Tools) -> None:
    """Some of these tools (tpm2-tools 5.4) leave their HMAC session loaded; without a
    resource manager nobody else flushes it, and libtpms has three session slots."""
    if tools.flush:
        tools.run("tpm2_flushcontext", "-l")


def ecc_two_phase(tcti: str, work: Path) -> None:
    """tpm2_geteccparameters names the curve's order; tpm2_ecephemeral and tpm2_commit
    draw consecutive commit counters; tpm2_zgen2phase gives Z1 = [d]Q_static, the same
    as tpm2_ecdhzgen, once per counter; an ECDAA key signs with a commitment, once."""
    tools = tools_for(tcti, work)
    tools("tpm2_geteccparameters", "ecc256", "-o", "p256.params")
    params = tools.read("p256.params")
    assert struct.unpack_from(">H", params)[0] == 0x0003  # TPM_ECC_NIST_P256
    assert P256_ORDER.to_bytes(32, "big") in params

    tools("tpm2_ecephemeral", "-u", "first.q", "-t", "first.ctr", "ecc256")
    tools("tpm2_ecephemeral", "-u", "second.q", "-t", "second.ctr", "ecc256")
    first, second = _counter(tools.read("first.ctr")), _counter(tools.read("second.ctr"))
    assert second == (first + 1) & 0xFFFF

    primary = tools.primary()
    daa = tools.loaded(primary, "daa", "-G", "ecc256:ecdaa", "-a", ECDAA_KEY)
    counters = []
    for name in ("exchange", "signing"):
        tools("tpm2_commit", "-c", daa, "-t", f"{name}.ctr", "--eccpoint-K", f"{name}.K",
              "--eccpoint-L", f"{name}.L", "-u", f"{name}.E")
        counters.append(_counter(tools.read(f"{name}.ctr")))
        _end_sessions(tools)
    assert counters == [(second + 1) & 0xFFFF, (second + 2) & 0xFFFF]

    tools.write("message", b"attest me anonymously")
    sign = ("tpm2_sign", "-c", daa, "-g", "sha256", "-s", "ecdaa",
            "--commit-index", str(counters[1]), "-o", "daa.sig", "message")
    tools(*sign)
    tools.expect_rc(TPM_RC_VALUE, *sign)  # the commitment is used up

    dh = tools.loaded(primary, "dh", "-G", "ecc256:ecdh", "-a", ECDH_KEY)
    tools("tpm2_ecdhkeygen", "-c", dh, "-u", "static.pub", "-o", "static.z")
    tools("tpm2_ecdhzgen", "-c", dh, "-u", "static.pub", "-o", "expected.z")
    _end_sessions(tools)
    for ephemeral, counter in (("first.q", first), ("second.q", second),
                               ("exchange.E", counters[0])):
        tools(*_zgen(dh, "static.pub", ephemeral, counter, ephemeral))
        _end_sessions(tools)
        assert tools.read(f"{ephemeral}.z1") == tools.read("expected.z")
    # Each counter serves one key exchange only.
    tools.expect_rc(TPM_RC_VALUE_P4, *_zgen(dh, "static.pub", "first.q", first, "again"))
    _end_sessions(tools)
