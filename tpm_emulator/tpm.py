"""The TPM: ``execute(command, locality) -> response`` and snapshot/restore. No IO.

``execute`` follows the reference ``ExecuteCommand()`` order so that a malformed
command earns the same response code a real TPM gives: framing (tag, size) → command
code → Startup gate → handle area → entity load status → authorization area →
authorization → parameters → command body → response sessions. Nothing raises out of
``execute``: an unexpected exception becomes TPM_RC_FAILURE.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable

from . import handlers as _handlers
from .admin import presence
from .admin.allocation import allocation_record, restore_allocation
from .admin.da import guarded
from .admin.hierarchy import enabled, load_refusal, permanent_entity
from .admin.properties import admin_properties
from .admin.snapshot import record_of as admin_record_of
from .admin.snapshot import restore as admin_restore
from .attest import audit as command_audit
from .codec import Reader, schema
from .commands import COMMANDS, MAX_LOADED_OBJECTS, Auth, Command
from .constants import (
    HT,
    IMPLEMENTATION_PCR,
    MAX_ACTIVE_SESSIONS,
    MAX_COMMAND_SIZE,
    MAX_LOADED_SESSIONS,
    MAX_RESPONSE_SIZE,
    PT,
    RC,
    RH,
    ST,
    TPM_ALG,
)
from .crypto import CONTEXT_HASH, CONTEXT_SYM_BITS, MAX_DIGEST_SIZE
from .errors import StateFormatError, TpmError, with_handle, with_parameter
from .frame import error_response, frame_error
from .keys.commit import COMMIT_SLOTS
from .keys.commit import record_of as commit_record_of
from .keys.commit import restore as commit_restore
from .lifecycle import ALLOWED_BEFORE_STARTUP, KEEPS_ORDERLY, REFUSED_AFTER_STARTUP, Orderly
from .nv.pin import pin_counting
from .nv.public import MAX_NV_BUFFER_SIZE, MAX_NV_INDEX_SIZE
from .nv.store import store_from_record, store_record
from .objects import store
from .objects.public import CURVE_BYTES
from .policy.enforce import PolicyFacts
from .session_table import (
    HMAC_SESSION_FIRST,
    POLICY_SESSION_FIRST,
    crypto_record,
    restore_crypto_record,
)
from .sessions import (
    Entity,
    audit_sessions,
    authorize,
    build_response_auths,
    check_sessions,
    decrypt_parameters,
    encrypt_response,
    parse_auth_area,
    wants_audit,
)
from .state import (
    PermanentState,
    ResetData,
    StateRecord,
    decode,
    encode,
    reset_data,
    reset_record,
)
from .structures import TPMS_CLOCK_INFO

log = logging.getLogger(__name__)

_HDR = struct.Struct(">HII")
# Persistent handles from here on belong to the platform (Part 2, 7.5).
PLATFORM_PERSISTENT = 0x81800000
_U32 = struct.Struct(">I")

MANUFACTURER = 0x56545053  # "VTPS": vtpm-stack
VENDOR_STRINGS = (b"vtpm", b"-sta", b"ck-p", b"y\x00\x00\x00")


class TPM:
    """A TPM 2.0 in pure Python, driven by command bytes (sans-IO)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        """A freshly manufactured TPM, powered on and waiting for TPM2_Startup."""
        self._now = clock
        self.perm = PermanentState.manufacture()
        self._rd: ResetData | None = None
        self.started = False
        self.startup_orderly = False
        self.clock_safe = True
        self._time_base_ms = 0
        self._clock_base_ms = 0
        self._anchor = clock()

    # ---- power -----------------------------------------------------------------------
    def power_cycle(self, delete_volatile: bool = False) -> None:
        """_TPM_Init (Part 1, 12.2.2): drop volatile state and wait for TPM2_Startup.
        A Shutdown(STATE) record survives unless ``delete_volatile`` (swtpm's
        PTM_INIT_FLAG_DELETE_VOLATILE)."""
        self._sync_clock()
        self._time_base_ms = 0
        self._rd = None
        self.started = False
        if delete_volatile:
            self.perm.shutdown_state = None
            if self.perm.orderly == Orderly.STATE:
                self.perm.orderly = Orderly.NONE

    # ---- Clock and Time (Part 1, 36) ---------------------------------------------------
    def _elapsed_ms(self) -> int:
        return max(0, int((self._now() - self._anchor) * 1000))

    def _sync_clock(self) -> None:
        elapsed = self._elapsed_ms()
        self._anchor = self._now()
        self._clock_base_ms += elapsed
        self._time_base_ms += elapsed

    def time_ms(self) -> int:
        return (self._time_base_ms + self._elapsed_ms()) & 0xFFFFFFFFFFFFFFFF

    def clock_ms(self) -> int:
        return (self.perm.clock_ms + self._clock_base_ms + self._elapsed_ms()) & (2**64 - 1)

    def clock_info(self) -> TPMS_CLOCK_INFO:
        return TPMS_CLOCK_INFO(self.clock_ms(), self.perm.reset_count,
                               self.perm.restart_count, int(self.clock_safe))

    # ---- state accessors used by handlers ----------------------------------------------
    @property
    def reset_data(self) -> ResetData:
        if self._rd is None:  # pragma: no cover - the Startup gate prevents this
            raise TpmError(RC.INITIALIZE)
        return self._rd

    @reset_data.setter
    def reset_data(self, value: ResetData) -> None:
        self._rd = value

    def hierarchy_proof(self, hierarchy: int) -> bytes:
        """The per-hierarchy secret that keys tickets and context blobs (Part 1, 14.4)."""
        proofs: dict[int, bytes] = {
            RH.OWNER: self.perm.sh_proof,
            RH.ENDORSEMENT: self.perm.eh_proof,
            RH.PLATFORM: self.perm.ph_proof,
        }
        return proofs.get(hierarchy) or self.reset_data.null_proof

    def entity(self, handle: int, cc: int | None = None, role: Auth | None = None) -> Entity:
        """Name, authValue and authPolicy of an entity that exists (Part 1, 16); with
        ``cc`` and ``role``, also whether they may authorize that command."""
        if handle >> 24 == HT.NV_INDEX:
            return self.perm.nv.entity(handle, cc, admin=role == Auth.ADMIN)
        if store.is_object_handle(handle):
            return store.get(self, handle).entity(role)
        return permanent_entity(self, handle)  # PCRs, hierarchies, sessions: Name = handle

    def handles_of_type(self, htype: int) -> list[int]:
        """TPM_CAP_HANDLES listing. Session slots are shared by HMAC and policy sessions:
        type 0x02 lists loaded sessions, 0x03 saved ones (Part 2, 7.2)."""
        if htype == HT.PCR:
            return list(range(IMPLEMENTATION_PCR))
        if htype == HT.PERMANENT:
            from .capability import PERMANENT_HANDLES

            return sorted(PERMANENT_HANDLES)
        if htype == HT.HMAC_SESSION and self._rd is not None:
            return sorted(HMAC_SESSION_FIRST + i for i in self._rd.sessions.loaded)
        if htype == HT.POLICY_SESSION and self._rd is not None:
            return sorted(POLICY_SESSION_FIRST + i for i in self._rd.sessions.saved)
        if htype in (HT.TRANSIENT, HT.PERSISTENT):
            return store.handles(self, htype)
        if htype == HT.NV_INDEX:
            return self.perm.nv.handles()
        return []

    def tpm_properties(self) -> dict[int, int]:
        """TPM_PT values (Part 2, 6.13): fixed group, then variable group."""
        ncmd = len(COMMANDS)
        loaded = len(self._rd.sessions.loaded) if self._rd else 0
        transient = len(self._rd.objects) if self._rd else 0
        persistent = len(self.perm.persistent)
        active = self._rd.sessions.active() if self._rd else 0
        return {
            PT.FAMILY_INDICATOR: 0x322E3000,  # "2.0"
            PT.LEVEL: 0,
            PT.REVISION: 164,
            PT.DAY_OF_YEAR: 1,
            PT.YEAR: 2025,
            PT.MANUFACTURER: MANUFACTURER,
            PT.VENDOR_STRING_1: _U32.unpack(VENDOR_STRINGS[0])[0],
            PT.VENDOR_STRING_2: _U32.unpack(VENDOR_STRINGS[1])[0],
            PT.VENDOR_STRING_3: _U32.unpack(VENDOR_STRINGS[2])[0],
            PT.VENDOR_STRING_4: _U32.unpack(VENDOR_STRINGS[3])[0],
            PT.VENDOR_TPM_TYPE: 1,
            PT.FIRMWARE_VERSION_1: 0x00010000,
            PT.FIRMWARE_VERSION_2: 0,
            PT.INPUT_BUFFER: 1024,
            PT.HR_TRANSIENT_MIN: MAX_LOADED_OBJECTS,
            PT.HR_PERSISTENT_MIN: 7,  # as libtpms reports
            PT.HR_LOADED_MIN: MAX_LOADED_SESSIONS,
            PT.ACTIVE_SESSIONS_MAX: MAX_ACTIVE_SESSIONS,
            PT.PCR_COUNT: IMPLEMENTATION_PCR,
            PT.PCR_SELECT_MIN: (IMPLEMENTATION_PCR + 7) // 8,
            PT.CONTEXT_GAP_MAX: 0xFFFF,
            PT.NV_COUNTERS_MAX: 0,  # no fixed limit: counters share the NV memory
            PT.NV_INDEX_MAX: MAX_NV_INDEX_SIZE,
            PT.MEMORY: 0,
            PT.CLOCK_UPDATE: 1 << 12,
            PT.CONTEXT_HASH: CONTEXT_HASH.alg,
            PT.CONTEXT_SYM: TPM_ALG.AES,
            PT.CONTEXT_SYM_SIZE: CONTEXT_SYM_BITS,
            PT.ORDERLY_COUNT: 0,
            PT.MAX_COMMAND_SIZE: MAX_COMMAND_SIZE,
            PT.MAX_RESPONSE_SIZE: MAX_RESPONSE_SIZE,
            PT.MAX_DIGEST: MAX_DIGEST_SIZE,
            PT.MAX_OBJECT_CONTEXT: 0,
            PT.MAX_SESSION_CONTEXT: 512,
            PT.PS_FAMILY_INDICATOR: 1,  # PC Client
            PT.PS_LEVEL: 0,
            PT.PS_REVISION: 0x105,
            PT.PS_DAY_OF_YEAR: 0,
            PT.PS_YEAR: 0,
            PT.SPLIT_MAX: COMMIT_SLOTS,  # outstanding TPM2_Commit values (keys/commit.py)
            PT.TOTAL_COMMANDS: ncmd,
            PT.LIBRARY_COMMANDS: ncmd,
            PT.VENDOR_COMMANDS: 0,
            PT.NV_BUFFER_MAX: MAX_NV_BUFFER_SIZE,
            PT.MODES: 0,
            PT.MAX_CAP_BUFFER: 1024,
            # TPMA_PERMANENT, TPMA_STARTUP_CLEAR, LOCKOUT_COUNTER, MAX_AUTH_FAIL,
            # LOCKOUT_INTERVAL and LOCKOUT_RECOVERY (admin/properties.py).
            **admin_properties(self),
            PT.HR_NV_INDEX: len(self.perm.nv.indices),
            PT.HR_LOADED: loaded,
            PT.HR_LOADED_AVAIL: MAX_LOADED_SESSIONS - loaded,
            PT.HR_ACTIVE: active,
            PT.HR_ACTIVE_AVAIL: MAX_ACTIVE_SESSIONS - active,
            PT.HR_TRANSIENT_AVAIL: MAX_LOADED_OBJECTS - transient,
            PT.HR_PERSISTENT: persistent,
            PT.HR_PERSISTENT_AVAIL: store.MAX_PERSISTENT_OBJECTS - persistent,
            PT.NV_COUNTERS: self.perm.nv.counters(),
            PT.NV_COUNTERS_AVAIL: self.perm.nv.counters_available(),
            PT.LOADED_CURVES: len(CURVE_BYTES),
            PT.NV_WRITE_RECOVERY: 0,
            PT.AUDIT_COUNTER_0: self.perm.command_audit.counter >> 32,
            PT.AUDIT_COUNTER_1: self.perm.command_audit.counter & 0xFFFFFFFF,
        }

    # ---- the command pipeline ----------------------------------------------------------
    def execute(self, command: bytes, locality: int = 0) -> bytes:
        """Run one command and return its response. Never raises."""
        try:
            if not isinstance(locality, int) or not 0 <= locality <= 255:
                return error_response(RC.LOCALITY)
            return self._execute(bytes(command), locality)
        except TpmError as e:
            return error_response(e.rc)
        except Exception:  # the boundary: no exception ever reaches the caller
            log.exception("internal error while executing a TPM command")
            return error_response(RC.FAILURE)

    def _execute(self, cmd: bytes, locality: int) -> bytes:
        rc = frame_error(cmd)
        if rc is not None:
            return error_response(rc)
        tag, _size, cc = _HDR.unpack_from(cmd)
        spec = COMMANDS.get(cc)
        if spec is None:
            raise TpmError(RC.COMMAND_CODE)
        if (not self.started and cc not in ALLOWED_BEFORE_STARTUP) or (
            self.started and cc in REFUSED_AFTER_STARTUP
        ):
            raise TpmError(RC.INITIALIZE)

        r = Reader(cmd, _HDR.size)
        handles = self._parse_handles(spec, r)

        auths = []
        sessions: list = []
        if tag == ST.SESSIONS:
            auth_size = r.unpack(_U32)
            # ExecuteCommand's sanity check: smaller than one session or larger than
            # what is left is TPM_RC_SIZE (observed from libtpms, as in the reference).
            if auth_size < 9 or auth_size > r.remaining():
                raise TpmError(RC.SIZE, "authorizationSize")
            if not spec.sessions_allowed:
                raise TpmError(RC.AUTH_CONTEXT)
            auths = parse_auth_area(cmd, r.pos, auth_size)
            r.pos += auth_size
            sessions = check_sessions(self.reset_data.sessions, auths, spec.auth_handles,
                                      spec.decrypt, spec.encrypt)
        elif spec.auth_handles:
            raise TpmError(RC.AUTH_MISSING)
        param_bytes = cmd[r.pos :]

        auth_entities = [self.entity(h, cc, hs.auth)
                         for h, hs in zip(handles, spec.handles, strict=True)
                         if hs.auth is not None]
        auth_handles = [h for h, hs in zip(handles, spec.handles, strict=True)
                        if hs.auth is not None]
        if auths:
            presence.check(cc, auth_handles)
            # Dictionary-attack lockout before each authorization, failure counting
            # after (admin/da.py); a PIN index counts the uses of its PIN (nv/pin.py).
            with (guarded(self, auth_handles, auth_entities, sessions) as locked_out,
                  pin_counting(self.perm.nv, auth_handles, auth_entities, sessions) as reached):

                def before_each(i: int) -> None:
                    reached(i)
                    locked_out(i)

                authorize(auths, sessions, auth_entities, cc, param_bytes,
                          [self.entity(h).name for h in handles],
                          policy=PolicyFacts(
                              self, locality, tuple(auth_handles),
                              tuple(hs.auth for hs in spec.handles if hs.auth is not None)),
                          before_each=before_each)
            # Part 1, 21: the first parameter is decrypted once every HMAC was checked
            # over the ciphertext, and before the parameters are unmarshalled.
            r = Reader(decrypt_parameters(auths, sessions, auth_entities, param_bytes))
        # A session audit's cpHash takes the Names as they are before the command runs.
        audit_names = [self.entity(h).name for h in handles] if wants_audit(auths) else []
        command_audit.before_command(self, cc, handles, param_bytes)  # so does command audit

        params = self._parse_params(spec, r)
        out = _handlers.HANDLERS[cc](
            self, _handlers.Invocation(cc, locality, tuple(handles)), params
        )
        if spec.nv and cc not in KEEPS_ORDERLY and self.perm.orderly != Orderly.NONE:
            # Part 1, 12.2: a state change after TPM2_Shutdown voids the orderly state.
            self.perm.orderly = Orderly.NONE
            self.perm.shutdown_state = None
        # The response HMAC uses the authValue as it is now: HierarchyChangeAuth,
        # Clear and PCR_SetAuthValue answer under the new one (Part 1, 19.6.x).
        auth_entities = [self.entity(h) if h >> 24 in (HT.PERMANENT, HT.PCR) else e
                         for h, e in zip(auth_handles, auth_entities, strict=True)]
        return self._build_response(spec, tag, out, auths, sessions, auth_entities,
                                    (audit_names, param_bytes))

    def _parse_handles(self, spec: Command, r: Reader) -> list[int]:
        handles: list[int] = []
        for n, hs in enumerate(spec.handles, start=1):
            try:
                h = r.unpack(_U32)
            except TpmError as e:
                raise TpmError(with_handle(e.rc, n)) from None
            if not hs.accepts(h):
                raise TpmError(with_handle(RC.VALUE, n))
            handles.append(h)
        # EntityGetLoadStatus: every handle must name something that is there. A
        # persistent object is read into a free object slot for the command (reference
        # ObjectLoadEvict): unless its range's hierarchy is disabled (TPM_RC_HANDLE),
        # with every slot taken even a missing one is a bare TPM_RC_OBJECT_MEMORY, and
        # each persistent handle takes a slot of its own.
        free_slots = MAX_LOADED_OBJECTS - len(store.handles(self, HT.TRANSIENT))
        for i, h in enumerate(handles):
            htype = h >> 24
            if htype in (HT.HMAC_SESSION, HT.POLICY_SESSION):
                if self.reset_data.sessions.find_loaded(h) is None:
                    if (h & 0xFFFFFF) in self.reset_data.sessions.loaded:
                        # The slot holds a session of the other type (libtpms: HANDLE).
                        raise TpmError(with_handle(RC.HANDLE, i + 1), "wrong session type")
                    raise TpmError(RC.REFERENCE_H0 + i)
            elif htype == HT.TRANSIENT:
                if store.find(self, h) is None:
                    raise TpmError(RC.REFERENCE_H0 + i)
            elif htype == HT.PERSISTENT:
                owner = RH.OWNER if h < PLATFORM_PERSISTENT else RH.PLATFORM
                if free_slots <= 0 and enabled(self.reset_data.stclear, owner):
                    raise TpmError(RC.OBJECT_MEMORY, "no slot to load a persistent object")
                if store.find(self, h) is None:
                    raise TpmError(with_handle(RC.HANDLE, i + 1))
                free_slots -= 1
            elif htype == HT.NV_INDEX:
                if h not in self.perm.nv:
                    raise TpmError(with_handle(RC.HANDLE, i + 1))
            refusal = load_refusal(self, h)  # a disabled hierarchy (admin/hierarchy.py)
            if refusal is not None:
                raise TpmError(with_handle(refusal, i + 1))
        return handles

    @staticmethod
    def _parse_params(spec: Command, r: Reader) -> object:
        values: dict[str, object] = {}
        for n, (name, wire) in enumerate(schema(spec.params), start=1):
            try:
                values[name] = wire.read(r, values)
            except TpmError as e:
                raise TpmError(with_parameter(e.rc, n)) from None
        if r.remaining():
            raise TpmError(RC.SIZE, "trailing octets after the parameters")
        return spec.params(**values)

    def _build_response(self, spec: Command, tag: int, out: object, auths: list,
                        sessions: list, entities: list[Entity],
                        command: tuple[list[bytes], bytes] = ([], b"")) -> bytes:
        """The response; ``command`` is (Names, parameters as sent) for session audit."""
        fields = schema(spec.response)
        head = bytearray()
        body = bytearray()
        for i, (name, wire) in enumerate(fields):
            target = head if (spec.response_handle and i == 0) else body
            wire.write(target, getattr(out, name), out)
        rparams = bytes(body)
        attributes = None
        if tag == ST.SESSIONS:  # reference BuildResponseSession: nonces, encryption, audit
            rparams = encrypt_response(auths, sessions, entities, rparams)
        if self._rd is not None:
            attributes = audit_sessions(self._rd.sessions, auths, sessions, spec.cc, *command,
                                        rparams, spec.sessions_allowed)
        command_audit.after_command(self, spec.cc, rparams)  # the command audit digest
        if tag == ST.SESSIONS:
            rauth = build_response_auths(self.reset_data.sessions, auths, sessions, entities,
                                         spec.cc, rparams, attributes)
            payload = bytes(head) + _U32.pack(len(rparams)) + rparams + rauth
            rtag = ST.SESSIONS
        else:
            payload = bytes(head) + bytes(body)
            rtag = ST.NO_SESSIONS
        return _HDR.pack(rtag, _HDR.size + len(payload), RC.SUCCESS) + payload

    # ---- snapshot / restore ------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The whole TPM as a versioned blob (see ``state.py`` for what is in it)."""
        p = self.perm
        return encode(StateRecord(
            p.eps, p.sps, p.pps, p.ph_proof, p.sh_proof, p.eh_proof,
            self.clock_ms(), p.reset_count, p.restart_count, int(p.orderly),
            (reset_record(p.shutdown_state),) if p.shutdown_state is not None else (),
            int(self.started), int(self.startup_orderly), int(self.clock_safe),
            self.time_ms(),
            (reset_record(self._rd),) if self._rd is not None else (),
            persistentObjects=store.persistent_records(self),
            transientObjects=store.transient_records(self),
            nvState=(store_record(p.nv),),
            sessionCrypto=(crypto_record(self._rd.sessions),) if self._rd is not None else (),
            commandAudit=(command_audit.audit_record(p.command_audit),),
            adminState=(admin_record_of(self),),
            pcrAllocation=(allocation_record(p.pcr_allocation),),
            algorithmSet=(p.admin.algorithm_set,),
            commitState=(commit_record_of(self),),
        ))

    @classmethod
    def restore(cls, blob: bytes, *, clock: Callable[[], float] = time.monotonic) -> TPM:
        """Rebuild a TPM from ``snapshot()`` output; raises ``StateFormatError``."""
        rec = decode(blob)
        if bool(rec.started) != bool(rec.current):
            raise StateFormatError("started flag and volatile state disagree")
        if (rec.orderly == Orderly.STATE) != bool(rec.shutdownState):
            raise StateFormatError("orderly state and Shutdown(STATE) record disagree")
        tpm = cls(clock=clock)
        tpm.perm = PermanentState(
            rec.eps, rec.sps, rec.pps, rec.phProof, rec.shProof, rec.ehProof,
            rec.clock, rec.resetCount, rec.restartCount, Orderly(rec.orderly),
            reset_data(rec.shutdownState[0]) if rec.shutdownState else None,
        )
        tpm._rd = reset_data(rec.current[0]) if rec.current else None
        tpm.started = bool(rec.started)
        tpm.startup_orderly = bool(rec.startupOrderly)
        tpm.clock_safe = bool(rec.clockSafe)
        tpm._time_base_ms = rec.time
        store.restore_records(tpm, rec.transientObjects, rec.persistentObjects)
        if rec.nvState:
            tpm.perm.nv = store_from_record(rec.nvState[0])
        if rec.sessionCrypto and tpm._rd is not None:
            restore_crypto_record(tpm._rd.sessions, rec.sessionCrypto[0])
        if rec.commandAudit:
            tpm.perm.command_audit = command_audit.audit_from_record(rec.commandAudit[0])
        admin_restore(tpm, rec.adminState)
        restore_allocation(tpm, rec.pcrAllocation)
        if rec.algorithmSet:
            tpm.perm.admin.algorithm_set = rec.algorithmSet[0]
        commit_restore(tpm, rec.commitState)
        return tpm

