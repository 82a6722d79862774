"""NV indices of our TPM under tpm2-pytss ESAPI (which checks Names, response HMACs and
nonces), plus tpm2-tools against the standalone ``tpm-emulator socket``."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HC,
    TPM2_NT,
    TPM2_PT_NV,
    TPM2_RC,
    TPM2_SE,
    TPM2_SU,
    TPM2B_NV_PUBLIC,
    TPMA_NV,
    TPMA_SESSION,
    TPMS_NV_PUBLIC,
    TPMT_SYM_DEF,
    TSS2_Exception,
)

from tests.conftest import require_tool
from tests.emulator.emulator_wire import rc, startup, with_pw
from tests.emulator.inprocess import esapi_over
from tests.emulator.test_server import Server
from tpm_emulator import TPM

SYM_NULL = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
OWNER_RW = (TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD
            | TPMA_NV.NO_DA)
NT_SHIFT = 4




def nv_public(index: int, attrs: int, size: int, nt: int = TPM2_NT.ORDINARY,
              alg: int = TPM2_ALG.SHA256, policy: bytes = b"") -> TPM2B_NV_PUBLIC:
    return TPM2B_NV_PUBLIC(TPMS_NV_PUBLIC(
        nvIndex=index, nameAlg=alg, attributes=attrs | (nt << NT_SHIFT),
        authPolicy=policy, dataSize=size))


def define(e: Any, index: int, attrs: int = OWNER_RW, size: int = 16, auth: bytes = b"",
           hierarchy: int = ESYS_TR.OWNER, **kw: Any) -> Any:
    handle = e.nv_define_space(auth, nv_public(index, attrs, size, **kw),
                               auth_handle=hierarchy)
    e.tr_set_auth(handle, auth)
    return handle


def code(exc: TSS2_Exception) -> int:
    """The TPM's response code without the handle/parameter/session number."""
    rc = int(exc.rc) & 0xFFFF
    return rc & 0xBF if rc & 0x80 else rc


def refused(fn: Any, *args: Any, **kw: Any) -> int:
    with pytest.raises(TSS2_Exception) as info:
        fn(*args, **kw)
    return code(info.value)


def session(e: Any, kind: int = TPM2_SE.HMAC, bind: Any = ESYS_TR.NONE) -> Any:
    s = e.start_auth_session(ESYS_TR.NONE, bind, kind, SYM_NULL, TPM2_ALG.SHA256)
    e.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION)
    return s


def name_of(public: Any) -> bytes:
    """Name = nameAlg || SHA-256(TPMS_NV_PUBLIC), computed on the client side."""
    return struct.pack(">H", TPM2_ALG.SHA256) + hashlib.sha256(public.marshal()).digest()


# ---- each index type ---------------------------------------------------------------------
def test_ordinary_index_with_password_and_hmac_sessions(esapi: Any) -> None:
    nv = define(esapi, 0x01000001, auth=b"pw", size=32)
    assert refused(esapi.nv_read, nv, 4) == TPM2_RC.NV_UNINITIALIZED
    esapi.nv_write(nv, b"hello", 0)
    assert bytes(esapi.nv_read(nv, 5)) == b"hello"
    s = session(esapi)
    esapi.nv_write(nv, b"world", 5, session1=s)
    assert bytes(esapi.nv_read(nv, 10, session1=s)) == b"helloworld"
    bound = session(esapi, bind=nv)
    assert bytes(esapi.nv_read(nv, 5, 5, session1=bound)) == b"world"
    assert bytes(esapi.nv_read(nv, 2, auth_handle=ESYS_TR.OWNER)) == b"he"
    assert refused(esapi.nv_read, nv, 33) == TPM2_RC.NV_RANGE
    esapi.tr_set_auth(nv, b"wrong")
    assert refused(esapi.nv_write, nv, b"x") == TPM2_RC.BAD_AUTH  # NO_DA: not AUTH_FAIL


def test_name_changes_when_written(esapi: Any) -> None:
    nv = define(esapi, 0x01000002)
    before, name_before = esapi.nv_read_public(nv)
    assert bytes(name_before) == name_of(before.nvPublic)
    esapi.nv_write(nv, b"x")
    after, name_after = esapi.nv_read_public(nv)
    assert after.nvPublic.attributes & TPMA_NV.WRITTEN
    assert bytes(name_after) == name_of(after.nvPublic) != bytes(name_before)


def test_counter_bits_and_extend_indices(esapi: Any) -> None:
    ctr = define(esapi, 0x01000010, size=8, nt=TPM2_NT.COUNTER)
    for _ in range(3):
        esapi.nv_increment(ctr)
    assert bytes(esapi.nv_read(ctr, 8)) == struct.pack(">Q", 3)
    assert refused(esapi.nv_write, ctr, b"\x00" * 8) == TPM2_RC.ATTRIBUTES
    esapi.nv_undefine_space(ctr)
    again = define(esapi, 0x01000010, size=8, nt=TPM2_NT.COUNTER)
    esapi.nv_increment(again)  # never below a value a deleted counter had
    assert struct.unpack(">Q", bytes(esapi.nv_read(again, 8)))[0] == 4

    bits = define(esapi, 0x01000011, size=8, nt=TPM2_NT.BITS)
    esapi.nv_set_bits(bits, 0x5)
    esapi.nv_set_bits(bits, 0x100)
    assert bytes(esapi.nv_read(bits, 8)) == struct.pack(">Q", 0x105)
    assert refused(esapi.nv_increment, bits) == TPM2_RC.ATTRIBUTES

    ext = define(esapi, 0x01000012, size=32, nt=TPM2_NT.EXTEND)
    esapi.nv_extend(ext, b"one")
    esapi.nv_extend(ext, b"two")
    first = hashlib.sha256(bytes(32) + b"one").digest()
    assert bytes(esapi.nv_read(ext, 32)) == hashlib.sha256(first + b"two").digest()
    assert refused(esapi.nv_set_bits, ext, 1) == TPM2_RC.ATTRIBUTES


def test_capabilities_report_the_indices(esapi: Any) -> None:
    define(esapi, 0x01000021, size=8, nt=TPM2_NT.COUNTER)
    define(esapi, 0x01000020)
    _, data = esapi.get_capability(TPM2_CAP.HANDLES, TPM2_HC.HR_NV_INDEX, 16)
    assert list(data.data.handles) == [0x01000020, 0x01000021]
    _, props = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT_NV.INDEX_MAX, 1)
    assert props.data.tpmProperties[0].value == 2048
    _, props = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, 0x20A, 1)  # NV_COUNTERS
    assert props.data.tpmProperties[0].value == 1


# ---- attributes and refusals ---------------------------------------------------------------
def test_read_and_write_permissions(esapi: Any) -> None:
    owner_only = define(esapi, 0x01000030, TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD)
    assert refused(esapi.nv_write, owner_only, b"x") == TPM2_RC.AUTH_UNAVAILABLE
    esapi.nv_write(owner_only, b"x", auth_handle=ESYS_TR.OWNER)
    assert refused(esapi.nv_read, owner_only, 1) == TPM2_RC.AUTH_UNAVAILABLE
    assert refused(esapi.nv_read, owner_only, 1,
                   auth_handle=ESYS_TR.PLATFORM) == TPM2_RC.NV_AUTHORIZATION
    assert bytes(esapi.nv_read(owner_only, 1, auth_handle=ESYS_TR.OWNER)) == b"x"
    # The owner may not delete what the platform created.
    pp = define(esapi, 0x01000031, TPMA_NV.PPWRITE | TPMA_NV.PPREAD | TPMA_NV.PLATFORMCREATE,
                hierarchy=ESYS_TR.PLATFORM)
    assert refused(esapi.nv_undefine_space, pp) == TPM2_RC.NV_AUTHORIZATION
    esapi.nv_undefine_space(pp, auth_handle=ESYS_TR.PLATFORM)
    assert refused(define, esapi, 0x01000030) == TPM2_RC.NV_DEFINED
    assert refused(define, esapi, 0x01000032, OWNER_RW | TPMA_NV.WRITTEN) == TPM2_RC.ATTRIBUTES
    assert refused(define, esapi, 0x01000032, size=4, nt=TPM2_NT.COUNTER) == TPM2_RC.SIZE


def test_writeall_and_write_locks(tpm: TPM, esapi: Any) -> None:
    whole = define(esapi, 0x01000040, OWNER_RW | TPMA_NV.WRITEALL, size=4)
    assert refused(esapi.nv_write, whole, b"ab") == TPM2_RC.NV_RANGE
    esapi.nv_write(whole, b"abcd")
    wd = define(esapi, 0x01000041, OWNER_RW | TPMA_NV.WRITEDEFINE, size=4)
    plain = define(esapi, 0x01000042, size=4)
    assert refused(esapi.nv_write_lock, plain) == TPM2_RC.ATTRIBUTES
    esapi.nv_write(wd, b"once")
    esapi.nv_write_lock(wd)
    assert refused(esapi.nv_write, wd, b"more") == TPM2_RC.NV_LOCKED
    gl = define(esapi, 0x01000043, OWNER_RW | TPMA_NV.GLOBALLOCK, size=4)
    esapi.nv_global_write_lock()
    assert refused(esapi.nv_write, gl, b"late") == TPM2_RC.NV_LOCKED
    esapi.nv_write(plain, b"free")
    late = define(esapi, 0x01000044, OWNER_RW | TPMA_NV.GLOBALLOCK, size=4)
    assert refused(esapi.nv_write, late, b"late") == TPM2_RC.NV_LOCKED  # defined after
    with esapi_over(TPM.restore(tpm.snapshot())) as e2:  # the global lock is state too
        handle = e2.tr_from_tpmpublic(0x01000043)
        assert refused(e2.nv_write, handle, b"late") == TPM2_RC.NV_LOCKED


def _command_code_policy(cc: int) -> bytes:
    """PolicyCommandCode(cc): the ADMIN role needs a policy naming the command
    (Part 1, 19.7; libtpms refuses an ADMIN authorization without one)."""
    return hashlib.sha256(bytes(32) + struct.pack(">II", 0x16C, cc)).digest()


def _policy_session(e: Any, cc: int) -> Any:
    s = session(e, TPM2_SE.POLICY)
    e.policy_command_code(s, cc)
    return s


def test_change_auth_and_undefine_special_need_policy(tpm: TPM, esapi: Any) -> None:
    nv = define(esapi, 0x01000050, auth=b"old", policy=_command_code_policy(0x13B))
    # ESAPI will not even send it with a password; the TPM refuses it too (ADMIN role).
    with_password = with_pw(0x13B, struct.pack(">I", 0x01000050),
                            struct.pack(">H", 3) + b"new", b"old")
    assert rc(tpm.execute(with_password)) == TPM2_RC.AUTH_TYPE
    esapi.nv_change_auth(nv, b"new", session1=_policy_session(esapi, 0x13B))
    esapi.tr_set_auth(nv, b"old")  # ESAPI had switched to the new one itself
    assert refused(esapi.nv_write, nv, b"x") == TPM2_RC.BAD_AUTH
    esapi.tr_set_auth(nv, b"new")
    esapi.nv_write(nv, b"x")

    special = define(esapi, 0x01000051, TPMA_NV.PPWRITE | TPMA_NV.PPREAD
                     | TPMA_NV.PLATFORMCREATE | TPMA_NV.POLICY_DELETE,
                     hierarchy=ESYS_TR.PLATFORM, policy=_command_code_policy(0x11F))
    assert refused(esapi.nv_undefine_space, special,
                   auth_handle=ESYS_TR.PLATFORM) == TPM2_RC.ATTRIBUTES
    esapi.nv_undefine_space_special(special, session1=_policy_session(esapi, 0x11F))
    _, data = esapi.get_capability(TPM2_CAP.HANDLES, TPM2_HC.HR_NV_INDEX, 16)
    assert 0x01000051 not in list(data.data.handles)


# ---- state: snapshot, STCLEAR locks across Startup -------------------------------------------
def test_snapshot_keeps_nv(tpm: TPM, esapi: Any) -> None:
    nv = define(esapi, 0x01000060, auth=b"pw")
    esapi.nv_write(nv, b"kept")
    ctr = define(esapi, 0x01000061, size=8, nt=TPM2_NT.COUNTER)
    esapi.nv_increment(ctr)
    esapi.nv_increment(ctr)
    esapi.nv_undefine_space(ctr)
    restored = TPM.restore(tpm.snapshot(), clock=lambda: 0.0)  # Clock still: same bytes
    assert restored.snapshot() == restored.snapshot()
    with esapi_over(restored) as e2:
        handle = e2.tr_from_tpmpublic(0x01000060)
        e2.tr_set_auth(handle, b"pw")
        assert bytes(e2.nv_read(handle, 4)) == b"kept"
        fresh = define(e2, 0x01000061, size=8, nt=TPM2_NT.COUNTER)
        e2.nv_increment(fresh)
        assert bytes(e2.nv_read(fresh, 8)) == struct.pack(">Q", 3)


def _stclear_indices(e: Any) -> tuple[Any, Any, Any]:
    ws = define(e, 0x01000070, OWNER_RW | TPMA_NV.WRITE_STCLEAR, size=4)
    rs = define(e, 0x01000071, OWNER_RW | TPMA_NV.READ_STCLEAR, size=4)
    cs = define(e, 0x01000072, OWNER_RW | TPMA_NV.CLEAR_STCLEAR, size=4)
    for nv in (ws, rs, cs):
        e.nv_write(nv, b"data")
    e.nv_write_lock(ws)
    e.nv_read_lock(rs)
    return ws, rs, cs


@pytest.mark.parametrize("resume", [False, True], ids=["Startup(CLEAR)", "Startup(STATE)"])
def test_stclear_locks_end_at_reset_not_resume(tpm: TPM, resume: bool) -> None:
    with esapi_over(tpm) as e:
        _stclear_indices(e)
        e.shutdown(TPM2_SU.STATE if resume else TPM2_SU.CLEAR)
    tpm.power_cycle()
    startup(tpm, su=1 if resume else 0)
    with esapi_over(tpm) as e:
        ws, rs, cs = (e.tr_from_tpmpublic(h) for h in (0x01000070, 0x01000071, 0x01000072))
        if resume:
            assert refused(e.nv_write, ws, b"more") == TPM2_RC.NV_LOCKED
            assert refused(e.nv_read, rs, 4) == TPM2_RC.NV_LOCKED
            assert bytes(e.nv_read(cs, 4)) == b"data"
        else:
            e.nv_write(ws, b"more")
            assert bytes(e.nv_read(rs, 4)) == b"data"
            assert refused(e.nv_read, cs, 4) == TPM2_RC.NV_UNINITIALIZED


def test_writedefine_lock_survives_reset(tpm: TPM, esapi: Any) -> None:
    wd = define(esapi, 0x01000080, OWNER_RW | TPMA_NV.WRITEDEFINE, size=4)
    esapi.nv_write(wd, b"cert")
    esapi.nv_write_lock(wd)
    esapi.shutdown(TPM2_SU.CLEAR)
    tpm.power_cycle()
    startup(tpm)
    with esapi_over(tpm) as e:
        handle = e.tr_from_tpmpublic(0x01000080)
        assert refused(e.nv_write, handle, b"new!") == TPM2_RC.NV_LOCKED
        assert bytes(e.nv_read(handle, 4)) == b"cert"


# ---- tpm2-tools against the standalone server ---------------------------------------------
def test_tpm2_tools_nv_commands(tmp_path: Path) -> None:
    require_tool("tpm2_nvdefine")
    server = Server(tmp_path / "state")
    try:
        server.tools("tpm2_startup", "-c")
        server.tools("tpm2_nvdefine", "0x1500016", "-C", "o", "-s", "32",
                     "-a", "ownerread|ownerwrite|authread|authwrite", "-p", "secret")
        data = tmp_path / "data.bin"
        data.write_bytes(b"tpm2-tools wrote this")
        server.tools("tpm2_nvwrite", "0x1500016", "-C", "0x1500016", "-P", "secret",
                     "-i", str(data))
        out = tmp_path / "out.bin"
        server.tools("tpm2_nvread", "0x1500016", "-C", "o", "-s", "21", "-o", str(out))
        assert out.read_bytes() == b"tpm2-tools wrote this"
        server.tools("tpm2_nvdefine", "0x1500017", "-C", "o", "-s", "8",
                     "-a", "ownerread|ownerwrite|nt=counter")
        server.tools("tpm2_nvincrement", "0x1500017", "-C", "o")
        server.tools("tpm2_nvincrement", "0x1500017", "-C", "o")
        server.tools("tpm2_nvread", "0x1500017", "-C", "o", "-s", "8", "-o", str(out))
        assert out.read_bytes() == struct.pack(">Q", 2)
        listing = server.tools("tpm2_nvreadpublic")
        assert "0x1500016" in listing and "0x1500017" in listing
        assert "written" in listing
        server.tools("tpm2_nvundefine", "0x1500016", "-C", "o")
        assert "0x1500016" not in server.tools("tpm2_nvreadpublic")
    finally:
        server.stop()


# ---- DomS0's manufacturing writes EK certificates into platform NV indices ----------------
def test_manufacture_stores_certificates_in_nv(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from vtpm_manager.ca import VtpmCA, VtpmIdentity
    from vtpm_manager.kek import KeyEncryptionKey
    from vtpm_manager.manufacture import NV_PLATFORM_CERT, manufacture

    ca = VtpmCA.open(tmp_path / "ca", KeyEncryptionKey(b"\x42" * 32, origin="test"), "host")
    identity = VtpmIdentity(uuid="0d6f1b7e-7f0c-4c43-9a55-3c1f8e2b9d10", name="g", host="host")
    core = TPM()
    manufacture(core.execute, ca, identity)
    result = manufacture(core.execute, ca, identity)  # again: replaces the locked indices
    with esapi_over(core) as e:
        for key in result.endorsement_keys:
            handle = e.tr_from_tpmpublic(key.nv_index)
            public, _ = e.nv_read_public(handle)
            attrs = public.nvPublic.attributes
            assert attrs & TPMA_NV.WRITELOCKED and attrs & TPMA_NV.PLATFORMCREATE
            size = public.nvPublic.dataSize
            der = b"".join(bytes(e.nv_read(handle, min(1024, size - off), off,
                                           auth_handle=ESYS_TR.OWNER))
                           for off in range(0, size, 1024))
            assert der == key.certificate.public_bytes(Encoding.DER)
            assert refused(e.nv_write, handle, b"x",
                           auth_handle=ESYS_TR.PLATFORM) == TPM2_RC.NV_LOCKED
        e.tr_from_tpmpublic(NV_PLATFORM_CERT)
