"""Manufacturing a vTPM: what a TPM vendor does before a TPM ships, done by DomS0.

For every new vTPM: create the TCG default EKs (templates L-1, RSA 2048, and L-2,
ECC NIST P-256; TCG EK Credential Profile 2.x, B.3.3 and B.3.4) under the
endorsement hierarchy, have the vTPM CA certify them, and store the certificates
where TCG software looks for them (profile 2.2.1.4: NV 0x01c00002 RSA, 0x01c0000a
ECC; platform certificate at 0x01c08000), so that ``tpm2_getekcertificate`` inside
the guest, or any verifier reading NV, finds certificates that chain to the CA.

The vTPM is driven with hand-marshalled TPM 2.0 commands handed to a plain
``execute(command) -> response`` callable: no socket, no separate tool process, and
no ESAPI either (its per-command overhead was larger than the NV commands; see
``_Tpm``). That is why this is fast next to ``swtpm_setup``. Reading certificates
back (:func:`read_nv`, tests, the attestor) still goes through ESAPI over an
in-process TCTI (:func:`esapi_over`).

The EKs are not made persistent: the templates are deterministic, so anyone can
recreate the same key with TPM2_CreatePrimary (that is what the profile intends,
and what tpm2_createek does); persisting would cost NV and a command per key.

The NV indices get swtpm_setup's attributes (PLATFORMCREATE | AUTHREAD | OWNERREAD
| PPREAD | PPWRITE | NO_DA | WRITEDEFINE): defined by the platform, written with
platform authorization, readable by owner or index auth (empty), which is what
``tpm2_nvread -C o`` and ``tpm2_getekcertificate`` use. By default each index is
then write-locked (NV_WriteLock; with WRITEDEFINE the lock lasts until the index is
undefined), as ``swtpm_setup --lock-nvram`` does: a guest firmware that leaves
platform auth empty (SeaBIOS) then cannot overwrite its own EK certificates.

Power state. If the TPM was not yet started we run TPM2_Startup(CLEAR) and end with
TPM2_Shutdown(CLEAR), as swtpm_setup does, so the vTPM is left orderly shut down;
the caller then power-cycles the engine (swtpm's CMD_INIT) before the state is
stored, so a guest's firmware sees a TPM that waits for its own TPM2_Startup.
If the TPM was already started (TPM_RC_INITIALIZE), it is left started.
"""

from __future__ import annotations

import logging
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_ECC,
    TPM2_RC,
    TPM2_SU,
    TPMA_NV,
    TPMA_OBJECT,
)
from tpm2_pytss.TCTI import PyTCTI
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMS_RSA_PARMS,
    TPMT_ECC_SCHEME,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_RSA_SCHEME,
    TPMT_SYM_DEF_OBJECT,
    TPMU_PUBLIC_ID,
    TPMU_PUBLIC_PARMS,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

from .ca import EkPublicKey, PlatformInfo, TpmInfo, VtpmCA, VtpmIdentity
from .engines import make_engine

if TYPE_CHECKING:
    from .instance import EngineFactory
    from .store import Record

log = logging.getLogger(__name__)

Execute = Callable[[bytes], bytes]

# TCG EK Credential Profile 2.x, 2.2.1.4 (low range) and 2.2.1.5.
NV_RSA2048_EK_CERT: Final = 0x01C00002
NV_ECC_P256_EK_CERT: Final = 0x01C0000A
NV_PLATFORM_CERT: Final = 0x01C08000

#: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the EK's authPolicy (profile B.3.3).
EK_AUTH_POLICY: Final = bytes.fromhex(
    "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")

#: fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt
#: (= 0x000300B2; userWithAuth clear, so using the EK needs the policy).
EK_ATTRIBUTES: Final = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
                        | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.ADMINWITHPOLICY
                        | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT)

#: swtpm_setup's attributes for certificate indices (see the module docstring).
CERT_NV_ATTRIBUTES: Final = (TPMA_NV.PLATFORMCREATE | TPMA_NV.AUTHREAD | TPMA_NV.OWNERREAD
                             | TPMA_NV.PPREAD | TPMA_NV.PPWRITE | TPMA_NV.NO_DA
                             | TPMA_NV.WRITEDEFINE)

# TPM_PT fixed properties (Part 2, 6.13); tpm2-pytss names only some of them.
PT_FIXED: Final = 0x100
PT_FAMILY_INDICATOR: Final = 0x100
PT_LEVEL: Final = 0x101
PT_REVISION: Final = 0x102
PT_MANUFACTURER: Final = 0x105
PT_VENDOR_STRINGS: Final = (0x106, 0x107, 0x108, 0x109)
PT_FIRMWARE_VERSION_1: Final = 0x10B
PT_NV_BUFFER_MAX: Final = 0x12C
PT_VAR: Final = 0x200
#: First NV index handle (Part 2, 7.4: TPM_HT_NV_INDEX << 24).
NV_INDEX_FIRST: Final = 0x01000000

#: TPM2B_MAX_NV_BUFFER holds at most this much in tpm2-tss; the TPM may allow less.
_TSS_NV_BUFFER_MAX: Final = 2048


class ManufactureError(Exception):
    """Manufacturing failed; the vTPM should not be handed out as manufactured."""


class ManufactureUnsupported(ManufactureError):
    """The TPM does not implement a command manufacturing needs (TPM_RC_COMMAND_CODE).

    Both engines implement what manufacturing needs (the builtin one since it gained
    TPM2_CreatePrimary and the NV commands); callers that meet a TPM without them
    skip manufacturing and log this message.
    """

    def __init__(self, command: str) -> None:
        super().__init__(f"this TPM does not implement {command} (TPM_RC_COMMAND_CODE); "
                         "it cannot be manufactured with EK certificates")
        self.command = command


@dataclass(frozen=True)
class EndorsementKey:
    """One EK as created from its template, and the certificate stored for it."""

    kind: str                       # "rsa2048" or "ecc-nist-p256"
    nv_index: int
    public: bytes                   # marshalled TPM2B_PUBLIC as the TPM returned it
    public_key: EkPublicKey
    certificate: x509.Certificate


@dataclass(frozen=True)
class Manufactured:
    """What a manufactured vTPM holds, for logs, tests and the API."""

    identity: VtpmIdentity
    tpm: TpmInfo
    endorsement_keys: tuple[EndorsementKey, ...]
    platform_certificate: x509.Certificate


# -- EK templates --------------------------------------------------------------------

def _aes128_cfb() -> TPMT_SYM_DEF_OBJECT:
    return TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128),
                               mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB))


def rsa2048_ek_template() -> TPM2B_PUBLIC:
    """Template L-1 (EK Credential Profile B.3.3): unique is 256 zero bytes."""
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.RSA, nameAlg=TPM2_ALG.SHA256, objectAttributes=EK_ATTRIBUTES,
        authPolicy=EK_AUTH_POLICY,
        parameters=TPMU_PUBLIC_PARMS(rsaDetail=TPMS_RSA_PARMS(
            symmetric=_aes128_cfb(), scheme=TPMT_RSA_SCHEME(scheme=TPM2_ALG.NULL),
            keyBits=2048, exponent=0)),
        unique=TPMU_PUBLIC_ID(rsa=bytes(256)),
    ))


def ecc_p256_ek_template() -> TPM2B_PUBLIC:
    """Template L-2 (EK Credential Profile B.3.4): unique is two 32-byte zero points."""
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256, objectAttributes=EK_ATTRIBUTES,
        authPolicy=EK_AUTH_POLICY,
        parameters=TPMU_PUBLIC_PARMS(eccDetail=TPMS_ECC_PARMS(
            symmetric=_aes128_cfb(), scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL),
            curveID=TPM2_ECC.NIST_P256, kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL))),
        unique=TPMU_PUBLIC_ID(ecc=TPMS_ECC_POINT(x=bytes(32), y=bytes(32))),
    ))


#: kind -> (template factory, certificate NV index), in the order we manufacture them.
EK_KINDS: Final[dict[str, tuple[Callable[[], TPM2B_PUBLIC], int]]] = {
    "rsa2048": (rsa2048_ek_template, NV_RSA2048_EK_CERT),
    "ecc-nist-p256": (ecc_p256_ek_template, NV_ECC_P256_EK_CERT),
}


def public_key_of(public: TPMT_PUBLIC) -> EkPublicKey:
    """The ``cryptography`` key of a TPM RSA or NIST P-256/P-384 public area."""
    if public.type == TPM2_ALG.RSA:
        exponent = int(public.parameters.rsaDetail.exponent) or 65537  # 0 means 2^16+1
        modulus = int.from_bytes(bytes(public.unique.rsa), "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    if public.type == TPM2_ALG.ECC:
        curves = {TPM2_ECC.NIST_P256: ec.SECP256R1(), TPM2_ECC.NIST_P384: ec.SECP384R1()}
        curve = curves.get(public.parameters.eccDetail.curveID)
        if curve is None:
            raise ManufactureError(f"unsupported EK curve {public.parameters.eccDetail.curveID}")
        point = public.unique.ecc
        return ec.EllipticCurvePublicNumbers(int.from_bytes(bytes(point.x), "big"),
                                             int.from_bytes(bytes(point.y), "big"),
                                             curve).public_key()
    raise ManufactureError(f"unsupported EK type {public.type}")


# -- the in-process TCTI ---------------------------------------------------------------

class ExecuteTcti(PyTCTI):
    """A TCTI whose transmit is ``execute(command)``: ESAPI straight into an engine.

    tpm2-tss turns any exception here into a TCTI error code; we keep the original
    so that :func:`manufacture` can re-raise it (an ``EngineError`` stays one).
    """

    def __init__(self, execute: Execute) -> None:
        super().__init__(max_size=4096, magic=b"VTPMEXEC")
        self._execute = execute
        self._response = b""
        self.failure: BaseException | None = None

    def do_transmit(self, command: bytes) -> None:
        try:
            self._response = self._execute(bytes(command))
        except BaseException as exc:
            self.failure = exc
            raise

    def do_receive(self, timeout: int) -> bytes:
        response, self._response = self._response, b""
        return response


@contextmanager
def esapi_over(execute: Execute) -> Iterator[ESAPI]:
    """An ESAPI context on ``execute``; TCTI failures surface as their own exception,
    a missing command as :class:`ManufactureUnsupported`."""
    tcti = ExecuteTcti(execute)
    esapi = ESAPI(tcti)
    try:
        yield esapi
    except TSS2_Exception as exc:
        if tcti.failure is not None:
            raise tcti.failure from exc
        raise
    finally:
        esapi.close()


def _tpm_rc(exc: TSS2_Exception) -> int:
    """The TPM's response code, or -1 if the error came from a software layer."""
    rc = int(exc.rc)
    return rc if rc >> 16 == 0 else -1


# -- reading the TPM -------------------------------------------------------------------

def _fixed_properties(esapi: ESAPI) -> dict[int, int]:
    properties: dict[int, int] = {}
    start, more = PT_FIXED, True
    while more:
        more, data = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, start, 64)
        props = list(data.data.tpmProperties)
        if not props:
            break
        for prop in props:
            properties[int(prop.property)] = int(prop.value)
        start = int(props[-1].property) + 1
        more = more and start < PT_VAR
    return properties


def read_tpm_info(esapi: ESAPI) -> tuple[TpmInfo, int]:
    """The TPM's identity for its certificates, and TPM_PT_NV_BUFFER_MAX."""
    return _tpm_info_of(_fixed_properties(esapi))


def _tpm_info_of(props: dict[int, int]) -> tuple[TpmInfo, int]:
    def text(*pts: int) -> str:
        raw = b"".join(struct.pack(">I", props.get(pt, 0)) for pt in pts)
        return raw.replace(b"\x00", b"").decode("ascii", "replace").strip()

    info = TpmInfo(
        manufacturer=f"id:{props.get(PT_MANUFACTURER, 0):08X}",
        model=text(*PT_VENDOR_STRINGS),
        version=f"id:{props.get(PT_FIRMWARE_VERSION_1, 0):08X}",
        spec_family=text(PT_FAMILY_INDICATOR) or "2.0",
        spec_level=props.get(PT_LEVEL, 0),
        spec_revision=props.get(PT_REVISION, 0),
    )
    buffer_max = props.get(PT_NV_BUFFER_MAX, 1024) or 1024
    return info, min(buffer_max, _TSS_NV_BUFFER_MAX)


def defined_nv_indices(esapi: ESAPI) -> set[int]:
    """Every NV index the TPM has (one GetCapability, instead of a probe per index)."""
    found: set[int] = set()
    start, more = NV_INDEX_FIRST, True
    while more:
        more, data = esapi.get_capability(TPM2_CAP.HANDLES, start, 64)
        handles = [int(h) for h in data.data.handles]
        if not handles:
            break
        found.update(handles)
        start = handles[-1] + 1
    return found


def read_nv(esapi: ESAPI, index: int) -> bytes:
    """An NV index's whole content, read with owner authorization as tpm2_nvread -C o."""
    handle = esapi.tr_from_tpmpublic(index)
    public, _ = esapi.nv_read_public(handle)
    size = int(public.nvPublic.dataSize)
    _, chunk = read_tpm_info(esapi)
    data = bytearray()
    while len(data) < size:
        n = min(chunk, size - len(data))
        data += bytes(esapi.nv_read(handle, n, len(data), auth_handle=ESYS_TR.OWNER))
    esapi.tr_close(handle)
    return bytes(data)


# -- raw commands ------------------------------------------------------------------------
#
# Manufacturing drives the TPM with hand-marshalled commands rather than ESAPI: every
# command it sends is simple (no parameter encryption, empty password authorization),
# and tpm2-tss's per-command work (ESYS_TR bookkeeping, cffi conversions) cost more
# than the NV commands themselves. The structures are those of TPM 2.0 Part 3; the
# EK templates are still built and parsed with tpm2-pytss's types, so the bytes sent
# and the TPM2B_PUBLIC kept are exactly what ESAPI would send and return.

_ST_NO_SESSIONS: Final = 0x8001
_ST_SESSIONS: Final = 0x8002
_RH_ENDORSEMENT: Final = 0x4000000B
_RH_PLATFORM: Final = 0x4000000C
#: One TPMS_AUTH_COMMAND: TPM_RS_PW, empty nonce, no attributes, empty password.
_PASSWORD_AUTH: Final = struct.pack(">IHBH", 0x40000009, 0, 0, 0)
_CC_NV_UNDEFINE_SPACE: Final = 0x122
_CC_NV_DEFINE_SPACE: Final = 0x12A
_CC_CREATE_PRIMARY: Final = 0x131
_CC_NV_WRITE: Final = 0x137
_CC_NV_WRITE_LOCK: Final = 0x138
_CC_STARTUP: Final = 0x144
_CC_SHUTDOWN: Final = 0x145
_CC_FLUSH_CONTEXT: Final = 0x165
_CC_GET_CAPABILITY: Final = 0x17A
_COMMAND_NAMES: Final = {
    _CC_NV_UNDEFINE_SPACE: "TPM2_NV_UndefineSpace", _CC_NV_DEFINE_SPACE: "TPM2_NV_DefineSpace",
    _CC_CREATE_PRIMARY: "TPM2_CreatePrimary", _CC_NV_WRITE: "TPM2_NV_Write",
    _CC_NV_WRITE_LOCK: "TPM2_NV_WriteLock", _CC_STARTUP: "TPM2_Startup",
    _CC_SHUTDOWN: "TPM2_Shutdown", _CC_FLUSH_CONTEXT: "TPM2_FlushContext",
    _CC_GET_CAPABILITY: "TPM2_GetCapability",
}
#: TPM2B_SENSITIVE_CREATE with empty userAuth and data; empty outsideInfo and
#: creationPCR: what ESAPI's create_primary(None, template) sends after the template.
_EMPTY_SENSITIVE_CREATE: Final = struct.pack(">HHH", 4, 0, 0)
_EMPTY_OUTSIDE_INFO_AND_PCRS: Final = struct.pack(">HI", 0, 0)


class _Tpm:
    """``execute`` with TPM 2.0 command framing; a TPM error raises TSS2_Exception."""

    def __init__(self, execute: Execute) -> None:
        self._execute = execute

    def call(self, cc: int, handles: tuple[int, ...] = (), params: bytes = b"", *,
             auth: bool = False, out_handles: int = 0) -> bytes:
        """Send one command; the response's handles and parameters (a session
        response's parameterSize and authorization area left out)."""
        body = struct.pack(f">{len(handles)}I", *handles)
        if auth:
            body += struct.pack(">I", len(_PASSWORD_AUTH)) + _PASSWORD_AUTH
        body += params
        tag = _ST_SESSIONS if auth else _ST_NO_SESSIONS
        response = self._execute(struct.pack(">HII", tag, 10 + len(body), cc) + body)
        if len(response) < 10:
            raise ManufactureError(f"{_COMMAND_NAMES.get(cc, hex(cc))}: short response "
                                   f"({len(response)} bytes)")
        rc = struct.unpack_from(">I", response, 6)[0]
        if rc == TPM2_RC.COMMAND_CODE:
            raise ManufactureUnsupported(_COMMAND_NAMES.get(cc, hex(cc)))
        if rc != 0:
            raise TSS2_Exception(rc)
        offset = 10 + 4 * out_handles
        if not auth:
            return response[10:]
        size = struct.unpack_from(">I", response, offset)[0]   # parameterSize
        return response[10:offset] + response[offset + 4:offset + 4 + size]

    def startup(self) -> bool:
        """TPM2_Startup(CLEAR); False if the TPM was already started."""
        try:
            self.call(_CC_STARTUP, params=struct.pack(">H", TPM2_SU.CLEAR))
        except TSS2_Exception as exc:
            if _tpm_rc(exc) == TPM2_RC.INITIALIZE:
                return False
            raise
        return True

    def shutdown(self) -> None:
        self.call(_CC_SHUTDOWN, params=struct.pack(">H", TPM2_SU.CLEAR))

    def get_capability(self, capability: int, start: int, count: int,
                       ) -> tuple[bool, list[tuple[int, ...]]]:
        """(moreData, entries): (property, value) pairs or (handle,) tuples."""
        out = self.call(_CC_GET_CAPABILITY,
                        params=struct.pack(">III", capability, start, count))
        more, cap, n = struct.unpack_from(">BII", out)
        width = 2 if cap == TPM2_CAP.TPM_PROPERTIES else 1
        values = struct.unpack_from(f">{n * width}I", out, 9)
        return bool(more), [values[i:i + width] for i in range(0, len(values), width)]

    def create_primary_ek(self, template: TPM2B_PUBLIC) -> TPM2B_PUBLIC:
        """CreatePrimary under the endorsement hierarchy, flushed again at once."""
        params = (_EMPTY_SENSITIVE_CREATE + template.marshal()
                  + _EMPTY_OUTSIDE_INFO_AND_PCRS)
        out = self.call(_CC_CREATE_PRIMARY, (_RH_ENDORSEMENT,), params, auth=True,
                        out_handles=1)
        # out: objectHandle, outPublic, creationData, creationHash, ...
        handle = struct.unpack_from(">I", out)[0]
        public, _ = TPM2B_PUBLIC.unmarshal(out[4:])
        self.call(_CC_FLUSH_CONTEXT, params=struct.pack(">I", handle))
        return public

    def store_nv(self, index: int, data: bytes, chunk: int, *, replace: bool,
                 lock: bool) -> None:
        """A certificate index with :data:`CERT_NV_ATTRIBUTES`, written, maybe locked."""
        handles = (_RH_PLATFORM, index)
        if replace:
            self.call(_CC_NV_UNDEFINE_SPACE, handles, auth=True)
        # TPM2B_AUTH (empty) + TPM2B_NV_PUBLIC {index, SHA-256, attributes, no policy,
        # dataSize}.
        public = struct.pack(">IHIHH", index, TPM2_ALG.SHA256, CERT_NV_ATTRIBUTES, 0,
                             len(data))
        self.call(_CC_NV_DEFINE_SPACE, (_RH_PLATFORM,),
                  struct.pack(">HH", 0, len(public)) + public, auth=True)
        for offset in range(0, len(data), chunk):
            piece = data[offset:offset + chunk]
            self.call(_CC_NV_WRITE, handles,
                      struct.pack(">H", len(piece)) + piece + struct.pack(">H", offset),
                      auth=True)
        if lock:
            self.call(_CC_NV_WRITE_LOCK, handles, auth=True)


def _raw_tpm_info(tpm: _Tpm) -> tuple[TpmInfo, int]:
    """:func:`read_tpm_info` over raw commands."""
    props: dict[int, int] = {}
    start, more = PT_FIXED, True
    while more:
        more, entries = tpm.get_capability(TPM2_CAP.TPM_PROPERTIES, start, 64)
        if not entries:
            break
        props.update((prop, value) for prop, value in entries)
        start = entries[-1][0] + 1
        more = more and start < PT_VAR
    return _tpm_info_of(props)


def _raw_nv_indices(tpm: _Tpm) -> set[int]:
    """:func:`defined_nv_indices` over raw commands."""
    found: set[int] = set()
    start, more = NV_INDEX_FIRST, True
    while more:
        more, entries = tpm.get_capability(TPM2_CAP.HANDLES, start, 64)
        if not entries:
            break
        found.update(h for (h,) in entries)
        start = entries[-1][0] + 1
    return found


# -- manufacturing ---------------------------------------------------------------------

def manufacture(
    execute: Execute,
    ca: VtpmCA,
    identity: VtpmIdentity,
    *,
    platform: PlatformInfo | None = None,
    lock: bool = True,
) -> Manufactured:
    """Create the default EKs, certify them and the platform, store the certificates.

    Re-running it replaces earlier certificates (the indices are undefined first,
    which platform authorization may do even when they are write-locked). Raises
    :class:`ManufactureUnsupported` if the TPM lacks a needed command, ``EngineError``
    if the engine fails, ``TSS2_Exception`` for any other TPM refusal.
    """
    tpm = _Tpm(execute)
    started_here = tpm.startup()
    info, chunk = _raw_tpm_info(tpm)
    existing = _raw_nv_indices(tpm)
    keys: list[EndorsementKey] = []
    for kind, (template, nv_index) in EK_KINDS.items():
        public = tpm.create_primary_ek(template())
        public_key = public_key_of(public.publicArea)
        certificate = ca.issue_ek_certificate(public_key, identity, info)
        keys.append(EndorsementKey(kind, nv_index, public.marshal(), public_key,
                                   certificate))
    platform_certificate = ca.issue_platform_certificate(keys[0].public_key, identity,
                                                         platform)
    stores = [(k.nv_index, k.certificate) for k in keys]
    stores.append((NV_PLATFORM_CERT, platform_certificate))
    for nv_index, certificate in stores:
        tpm.store_nv(nv_index, certificate.public_bytes(Encoding.DER), chunk,
                     replace=nv_index in existing, lock=lock)
    if started_here:
        tpm.shutdown()
    log.info("manufactured vTPM %s (%s): EKs %s, platform certificate",
             identity.name, identity.uuid, ", ".join(k.kind for k in keys))
    return Manufactured(identity, info, tuple(keys), platform_certificate)


# -- the manager hook -------------------------------------------------------------------

def state_manufacturer(
    ca: VtpmCA,
    host: str,
    platform: PlatformInfo | None = None,
    factory: EngineFactory | None = None,
) -> Callable[[Record], bytes | None]:
    """A ``VtpmManager(manufacturer=...)`` hook: the initial state of a new vTPM.

    It runs :func:`manufacture` on a scratch engine of the vTPM's kind, freshly
    powered on, power-cycles it and returns the whole state, which the manager then
    writes as the vTPM's first record. So a vTPM is stored manufactured or not at
    all: a crash half-way leaves nothing behind, and nobody can use a vTPM whose EK
    certificates are not yet in place. A TPM without the commands is logged and gets
    ``None``: the engine's fresh state.
    """
    make: EngineFactory = factory or make_engine

    def hook(record: Record) -> bytes | None:
        identity = VtpmIdentity(uuid=record.uuid, name=record.name, host=host)
        scratch = Path(tempfile.mkdtemp(prefix="vtpm-mfg-"))
        engine = make(record.engine, scratch)
        try:
            engine.start(None)
            manufacture(engine.execute, ca, identity, platform=platform)
            engine.power_cycle(delete_volatile=True)
            return engine.export_state()
        except ManufactureUnsupported as exc:
            log.warning("vTPM %s (engine %s) not manufactured: %s", record.name,
                        record.engine, exc)
            return None
        finally:
            engine.stop()
            shutil.rmtree(scratch, ignore_errors=True)

    return hook
