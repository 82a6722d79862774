"""Objects and hierarchies under tpm2-pytss ESAPI: deterministic primaries, sealed
data under a storage parent, names, persistence, contexts, and the snapshot."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_RC,
    TPM2_SE,
    TPM2B_AUTH,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMA_SESSION,
    TPMS_SENSITIVE_CREATE,
    TPMT_SENSITIVE,
    TPMT_SYM_DEF,
    TSS2_Exception,
)

from tests.emulator.emulator_wire import startup
from tests.emulator.inprocess import esapi_over
from tpm_emulator import TPM

PARENT = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
SEALED = "fixedtpm|fixedparent|userwithauth|noda"




def parent_template(alg: str = "ecc256:aes128cfb") -> Any:
    return TPM2B_PUBLIC.parse(alg, objectAttributes=PARENT)


def sealed_template() -> Any:
    return TPM2B_PUBLIC.parse("keyedhash", objectAttributes=SEALED)


def sensitive(auth: bytes = b"", data: bytes = b"") -> Any:
    return TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(
        userAuth=TPM2B_AUTH(auth), data=TPM2B_SENSITIVE_DATA(data)))


def primary(e: Any, alg: str = "ecc256:aes128cfb", hierarchy: Any = ESYS_TR.OWNER) -> tuple:
    handle, pub, *_ = e.create_primary(TPM2B_SENSITIVE_CREATE(), parent_template(alg),
                                       hierarchy)
    return handle, bytes(pub.marshal())


def expected_name(public: bytes) -> bytes:
    # TPM2B_PUBLIC: size, then TPMT_PUBLIC whose nameAlg is at octets 2..3.
    name_alg = struct.unpack(">H", public[4:6])[0]
    assert name_alg == TPM2_ALG.SHA256
    return struct.pack(">H", name_alg) + hashlib.sha256(public[2:]).digest()


@pytest.mark.parametrize("alg", ["ecc256:aes128cfb", "ecc384:aes256cfb", "rsa2048:aes128cfb"])
def test_create_primary_is_deterministic_even_after_restore(tpm: TPM, alg: str) -> None:
    """The same template gives the same key *and* the same seedValue, so a child made
    under one CreatePrimary loads under the next (also when the derivation is cached)."""
    with esapi_over(tpm) as e:
        h1, pub1 = primary(e, alg)
        priv, spub, *_ = e.create(h1, sensitive(b"", b"kept"), sealed_template())
        e.flush_context(h1)
        h2, pub2 = primary(e, alg)
        child = e.load(h2, priv, spub)
        assert bytes(e.unseal(child)) == b"kept"
        e.flush_context(child)
        e.flush_context(h2)
        _h3, endorsement = primary(e, alg, ESYS_TR.ENDORSEMENT)
    assert pub1 == pub2
    assert endorsement != pub1  # another hierarchy, another seed
    restored = TPM.restore(tpm.snapshot())
    with esapi_over(restored) as e:
        e.flush_context(e.tr_from_tpmpublic(0x80000000))
        h4, pub3 = primary(e, alg)
        assert bytes(e.unseal(e.load(h4, priv, spub))) == b"kept"
    assert pub3 == pub1


def test_another_unique_gives_another_primary(esapi: Any) -> None:
    t = parent_template()
    t.publicArea.unique.ecc.x = b"tenant-1"
    h, pub, *_ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), t)
    esapi.flush_context(h)
    _h, default = primary(esapi)
    assert bytes(pub.marshal()) != default


def test_read_public_name_is_name_alg_and_digest_of_public(esapi: Any) -> None:
    h, pub = primary(esapi)
    out, name, qualified = esapi.read_public(h)
    assert bytes(out.marshal()) == pub
    assert bytes(name) == expected_name(pub)
    owner_qn = struct.pack(">H", TPM2_ALG.SHA256) + hashlib.sha256(
        struct.pack(">I", 0x40000001) + bytes(name)).digest()
    assert bytes(qualified) == owner_qn


def test_sealed_data_create_load_unseal_with_password(esapi: Any) -> None:
    parent, _ = primary(esapi)
    priv, pub, *_ = esapi.create(parent, sensitive(b"pw", b"the secret"), sealed_template())
    item = esapi.load(parent, priv, pub)
    esapi.tr_set_auth(item, b"pw")
    assert bytes(esapi.unseal(item)) == b"the secret"
    esapi.tr_set_auth(item, b"wrong")
    with pytest.raises(TSS2_Exception) as err:
        esapi.unseal(item)
    assert err.value.error == TPM2_RC.BAD_AUTH  # noDA objects fail with BAD_AUTH


def test_unseal_with_hmac_session(esapi: Any) -> None:
    parent, _ = primary(esapi, "rsa2048:aes128cfb")
    priv, pub, *_ = esapi.create(parent, sensitive(b"pw", b"over hmac"), sealed_template())
    item = esapi.load(parent, priv, pub)
    esapi.tr_set_auth(item, b"pw")
    s = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC,
                                 TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
    esapi.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION)
    assert bytes(esapi.unseal(item, session1=s)) == b"over hmac"


def test_object_change_auth_gives_a_new_private(esapi: Any) -> None:
    parent, _ = primary(esapi)
    priv, pub, *_ = esapi.create(parent, sensitive(b"old", b"data"), sealed_template())
    item = esapi.load(parent, priv, pub)
    esapi.tr_set_auth(item, b"old")
    new_priv = esapi.object_change_auth(item, parent, TPM2B_AUTH(b"new"))
    esapi.flush_context(item)
    again = esapi.load(parent, new_priv, pub)
    esapi.tr_set_auth(again, b"new")
    assert bytes(esapi.unseal(again)) == b"data"


def test_load_refuses_a_tampered_private(esapi: Any) -> None:
    parent, _ = primary(esapi)
    priv, pub, *_ = esapi.create(parent, sensitive(b"", b"x"), sealed_template())
    blob = bytearray(priv.marshal())
    blob[-1] ^= 1
    from tpm2_pytss import TPM2B_PRIVATE

    with pytest.raises(TSS2_Exception) as err:
        esapi.load(parent, TPM2B_PRIVATE.unmarshal(bytes(blob))[0], pub)
    assert err.value.error == TPM2_RC.INTEGRITY


def test_child_keys_under_a_storage_parent(esapi: Any) -> None:
    parent, _ = primary(esapi)
    for alg in ("ecc256:ecdsa-sha256", "rsa2048:rsassa-sha256", "hmac"):
        t = TPM2B_PUBLIC.parse(alg, objectAttributes=(
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"))
        priv, pub, *_ = esapi.create(parent, sensitive(), t)
        child = esapi.load(parent, priv, pub)
        _out, name, _qn = esapi.read_public(child)
        assert bytes(name) == expected_name(bytes(pub.marshal()))
        esapi.flush_context(child)


def test_context_save_load_and_flush(esapi: Any) -> None:
    parent, pub = primary(esapi)
    ctx = esapi.context_save(parent)
    esapi.flush_context(parent)
    with pytest.raises(TSS2_Exception):
        esapi.read_public(parent)
    again = esapi.context_load(ctx)
    out, _name, _qn = esapi.read_public(again)
    assert bytes(out.marshal()) == pub
    esapi.flush_context(again)
    _more, cap = esapi.get_capability(TPM2_CAP.HANDLES, 0x80000000, 10)
    assert list(cap.data.handles) == []


def test_transient_slots_run_out_like_libtpms(esapi: Any) -> None:
    for _ in range(3):
        primary(esapi)
    with pytest.raises(TSS2_Exception) as err:
        primary(esapi)
    assert err.value.error == TPM2_RC.OBJECT_MEMORY
    hr_transient_avail = 0x207
    _more, props = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, hr_transient_avail, 1)
    assert props.data.tpmProperties[0].value == 0


def test_evict_control_persists_across_restore(tpm: TPM) -> None:
    with esapi_over(tpm) as e:
        h, pub = primary(e)
        e.evict_control(ESYS_TR.OWNER, h, 0x81000001)
        _more, cap = e.get_capability(TPM2_CAP.HANDLES, 0x81000000, 10)
        assert list(cap.data.handles) == [0x81000001]
    restored = TPM.restore(tpm.snapshot())
    restored.power_cycle()
    startup(restored)
    with esapi_over(restored) as e:
        persistent = e.tr_from_tpmpublic(0x81000001)
        out, name, _qn = e.read_public(persistent)
        assert bytes(out.marshal()) == pub
        assert bytes(name) == expected_name(pub)
        priv, spub, *_ = e.create(persistent, sensitive(b"", b"kept"), sealed_template())
        item = e.load(persistent, priv, spub)
        assert bytes(e.unseal(item)) == b"kept"
        e.evict_control(ESYS_TR.OWNER, persistent, 0x81000001)
        _more, cap = e.get_capability(TPM2_CAP.HANDLES, 0x81000000, 10)
        assert list(cap.data.handles) == []


def test_loaded_objects_survive_a_snapshot(tpm: TPM) -> None:
    with esapi_over(tpm) as e:
        parent, _ = primary(e)
        priv, pub, *_ = e.create(parent, sensitive(b"", b"mid-flight"), sealed_template())
        item = e.load(parent, priv, pub)
        handle = e.tr_get_tpm_handle(item)
    restored = TPM.restore(tpm.snapshot())
    with esapi_over(restored) as e:
        assert bytes(e.unseal(e.tr_from_tpmpublic(handle))) == b"mid-flight"


def test_load_external_public_and_null_hierarchy_sensitive(esapi: Any) -> None:
    h, _ = primary(esapi)
    out, name, _qn = esapi.read_public(h)
    out.publicArea.objectAttributes &= ~0x12  # an external key is neither fixedTPM nor fixedParent
    ext = esapi.load_external(out, None, ESYS_TR.RH_NULL)
    _o, ext_name, _q = esapi.read_public(ext)
    assert bytes(ext_name) != bytes(name)
    esapi.flush_context(ext)
    key = b"k" * 32
    seed = b"s" * 32
    t = TPM2B_PUBLIC.parse("hmac", objectAttributes="userwithauth|sign")
    t.publicArea.unique.keyedHash = hashlib.sha256(seed + key).digest()
    sens = TPM2B_SENSITIVE(TPMT_SENSITIVE(sensitiveType=TPM2_ALG.KEYEDHASH, seedValue=seed))
    sens.sensitiveArea.sensitive.bits = key
    loaded = esapi.load_external(t, sens, ESYS_TR.RH_NULL)
    _o, lname, _q = esapi.read_public(loaded)
    assert bytes(lname) == expected_name(bytes(t.marshal()))


def test_capabilities_report_objects(esapi: Any) -> None:
    _more, cmds = esapi.get_capability(TPM2_CAP.COMMANDS, 0x120, 100)
    attrs = {a & 0xFFFF: int(a) for a in cmds.data.command}
    assert attrs[0x131] == 0x12000131  # CreatePrimary: one handle, a response handle
    assert attrs[0x120] == 0x04400120  # EvictControl: two handles, nv
    primary(esapi)
    _more, cap = esapi.get_capability(TPM2_CAP.HANDLES, 0x80000000, 10)
    assert list(cap.data.handles) == [0x80000000]


def test_tpm2_tools_seal_and_unseal(tmp_path: Any) -> None:
    """tpm2-tools against ``tpm-emulator socket``, flushing between tools as one must
    without a resource manager (libtpms, too, has three transient slots)."""
    from tests.conftest import require_tool
    from tests.emulator.test_server import Server

    require_tool("tpm2_createprimary")
    (tmp_path / "state").mkdir()
    server = Server(tmp_path / "state")
    try:
        def run(*args: str) -> str:
            out = server.tools(*args)
            server.tools("tpm2_flushcontext", "-t")
            return out

        (tmp_path / "secret").write_bytes(b"sealed by tpm2-tools")
        p = str(tmp_path)
        server.tools("tpm2_startup", "-c")
        run("tpm2_createprimary", "-C", "o", "-c", f"{p}/prim.ctx", "-Q")
        run("tpm2_create", "-C", f"{p}/prim.ctx", "-i", f"{p}/secret", "-u", f"{p}/seal.pub",
            "-r", f"{p}/seal.priv", "-p", "pw123", "-Q")
        run("tpm2_load", "-C", f"{p}/prim.ctx", "-u", f"{p}/seal.pub", "-r", f"{p}/seal.priv",
            "-c", f"{p}/seal.ctx", "-Q")
        assert run("tpm2_unseal", "-c", f"{p}/seal.ctx", "-p", "pw123") == "sealed by tpm2-tools"
        run("tpm2_evictcontrol", "-C", "o", "-c", f"{p}/prim.ctx", "0x81000001")
        run("tpm2_createprimary", "-C", "o", "-c", f"{p}/again.ctx", "-Q")
        run("tpm2_readpublic", "-c", f"{p}/again.ctx", "-o", f"{p}/again.pub", "-Q")
        run("tpm2_readpublic", "-c", "0x81000001", "-o", f"{p}/kept.pub", "-Q")
        assert (tmp_path / "again.pub").read_bytes() == (tmp_path / "kept.pub").read_bytes()
    finally:
        server.stop()
