"""The passthrough engine: a privileged domain's vTPM *is* the host TPM.

Commands go, byte for byte, to the host TPM through a tpm2-tss TCTI opened with
tpm2-pytss (``device:/dev/tpmrm0`` or ``tabrmd:`` in production, so that the
kernel's or tpm2-abrmd's resource manager gives this domain its own object and
session handles and flushes them when the engine stops; swtpm's TCTI in tests).

What a resource manager virtualizes (transient objects, sessions) is private to the
domain; everything else in a TPM is shared with the host and with DomS0 itself,
which seals its key-encryption key to host PCRs and keeps its rollback counter in
host NV. So this engine refuses, with the response code a real TPM would plausibly
give, every command that would change that shared state (:data:`REFUSED`), and
extends or resets of the PCRs the host measures into (:class:`PassthroughPolicy`).
The policy is pure data and a pure function, testable without a TPM.

State: the host TPM is the state, so there is nothing to store and nothing that
could move. ``export_state`` returns a constant marker (:data:`PASSTHROUGH_STATE`)
so that the manager's commit-after-command path works unchanged and writes the
record once, at the first start; the manager refuses an explicit hand-out or import
of the state (migration, QEMU state blobs) with :data:`NOT_MIGRATABLE`, and
``start`` refuses any state but the marker.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tpm_emulator.constants import CC, RC, command_name
from tpm_emulator.frame import error_response
from tpm_emulator.mutations import command_code
from vtpm_manager.engine import Engine, EngineError

if TYPE_CHECKING:
    from tpm2_pytss import TCTILdr

log = logging.getLogger(__name__)

#: What the manager says when asked to migrate, export or import such a vTPM.
NOT_MIGRATABLE: Final = "a passthrough vTPM cannot migrate: its state is the host TPM"

#: The whole "state" of a passthrough vTPM: magic and a u32 format version.
PASSTHROUGH_STATE: Final = b"VTPM-PASSTHROUGH\x00" + struct.pack(">I", 1)

#: PCRs a host measures its own boot into by default: the SRTM PCRs 0-7 (firmware,
#: PC Client PFP 3.3.4) and 8-15 (boot loader and OS, e.g. shim/GRUB, systemd-stub,
#: IMA in 10; DomS0 measures itself into one of these).
DEFAULT_HOST_PCRS: Final = frozenset(range(16))

IMPLEMENTATION_PCR: Final = 24
#: TPM_CC_V: vendor-specific command codes (Part 2, 6.5.1); unknown, so refused.
_CC_VENDOR_BIT: Final = 0x2000_0000
_HEADER: Final = struct.Struct(">HII")
#: Longest response we accept; a TPM's own buffers are 4 KiB (TPM_PT_MAX_RESPONSE_SIZE).
MAX_RESPONSE_SIZE: Final = 4096
#: Longest wait for the host TPM; RSA key generation on a slow TPM can take 30 s.
RECEIVE_TIMEOUT_MS: Final = 120_000


@dataclass(frozen=True)
class Refusal:
    """Why a command is not forwarded, and the response code the domain gets."""

    rc: int
    reason: str


_OFFERED_NOT: Final = "changes state the host shares"

#: Commands never forwarded. The response codes:
#:
#: - TPM2_Startup gets TPM_RC_INITIALIZE, what any started TPM answers to a second
#:   Startup: the host powered its TPM on, and guest kernels and tpm2-tss already read
#:   that code as "the TPM is running" (Part 3, 9.3).
#: - TPM2_Clear gets TPM_RC_DISABLED, what a TPM with disableClear SET answers
#:   (Part 3, 24.6): clearing is switched off, which is the truth for this domain.
#: - Everything else gets TPM_RC_COMMAND_CODE, "command code not supported" (Part 2,
#:   6.6.3), as from a TPM that does not implement it. An authorization error
#:   (TPM_RC_HIERARCHY, TPM_RC_AUTH_UNAVAILABLE) would invite the caller to retry
#:   with other credentials; "not supported" tells it that no retry can succeed.
#:
#: Why each group is refused: hierarchy control and auth, seeds and primary policies
#: would take the host's hierarchies (and DomS0's sealed keys) from it; the
#: dictionary-attack lockout is one counter for all; PCR banks, PCR auth, clock,
#: algorithm set, audit, physical presence and firmware are platform settings; NV is
#: the host's (DomS0's rollback counter, EK certificates) and a wearable resource,
#: so to this domain it is read-only, and persistent handles (EvictControl) live
#: there too; Shutdown and the Authenticated Countdown Timer belong to whoever owns
#: power, which is the host.
REFUSED: Final[Mapping[int, Refusal]] = {
    CC.Startup: Refusal(RC.INITIALIZE, "the host TPM is already started"),
    CC.Clear: Refusal(RC.DISABLED, "clearing the host TPM is disabled for vTPMs"),
    **{
        cc: Refusal(RC.COMMAND_CODE, _OFFERED_NOT)
        for cc in (
            # hierarchies, their auth, seeds and policies
            CC.ClearControl, CC.HierarchyControl, CC.HierarchyChangeAuth,
            CC.ChangeEPS, CC.ChangePPS, CC.SetPrimaryPolicy,
            # dictionary-attack protection
            CC.DictionaryAttackLockReset, CC.DictionaryAttackParameters,
            # PCR banks and PCR authorization
            CC.PCR_Allocate, CC.PCR_SetAuthPolicy, CC.PCR_SetAuthValue,
            # NV and persistent objects
            CC.NV_DefineSpace, CC.NV_UndefineSpace, CC.NV_UndefineSpaceSpecial,
            CC.NV_Write, CC.NV_Increment, CC.NV_Extend, CC.NV_SetBits,
            CC.NV_WriteLock, CC.NV_ReadLock, CC.NV_GlobalWriteLock, CC.NV_ChangeAuth,
            CC.EvictControl,
            # power, clock, platform configuration, firmware
            CC.Shutdown, CC.ClockSet, CC.ClockRateAdjust, CC.ACT_SetTimeout,
            CC.SetAlgorithmSet, CC.SetCommandCodeAuditStatus, CC.PP_Commands,
            CC.FieldUpgradeStart, CC.FieldUpgradeData,
        )
    },
}

#: Commands whose first handle is a PCR they change (Part 3, 22.2 / 22.3 / 22.9).
PCR_CHANGING: Final = frozenset({CC.PCR_Extend, CC.PCR_Event, CC.PCR_Reset})


@dataclass(frozen=True)
class PassthroughPolicy:
    """What a passthrough vTPM may send to the host TPM."""

    host_pcrs: frozenset[int] = DEFAULT_HOST_PCRS

    def __post_init__(self) -> None:
        bad = sorted(p for p in self.host_pcrs if not 0 <= p < IMPLEMENTATION_PCR)
        if bad:
            raise ValueError(f"host PCRs {bad} do not exist; PCRs are 0..23")

    def check(self, command: bytes, locality: int) -> Refusal | None:
        """The refusal for ``command`` at ``locality``, or None to forward it."""
        if locality != 0:
            # The host's resource manager speaks at its own locality; acting at
            # another one for the guest would open the DRTM PCRs 17-22 (locality 3/4)
            # to it. Part 3, 22.2: TPM_RC_LOCALITY.
            return Refusal(RC.LOCALITY, f"locality {locality} is the host's")
        if len(command) < _HEADER.size:
            return None  # the host TPM answers a truncated command itself
        code = _HEADER.unpack_from(command)[2]
        if code & _CC_VENDOR_BIT:
            return Refusal(RC.COMMAND_CODE, "vendor commands are not forwarded")
        refusal = REFUSED.get(code)
        if refusal is not None:
            return refusal
        if code in PCR_CHANGING and len(command) >= _HEADER.size + 4:
            (pcr,) = struct.unpack_from(">I", command, _HEADER.size)
            if pcr in self.host_pcrs:
                # What a TPM says when the current locality may not change this PCR.
                return Refusal(RC.LOCALITY, f"PCR {pcr} is measured by the host")
        return None


def parse_pcr_set(text: str) -> frozenset[int]:
    """``"0-7,14"`` -> {0..7, 14}; an empty string is the empty set."""
    pcrs: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, sep, high = part.partition("-")
        try:
            first, last = int(low), int(high if sep else low)
        except ValueError:
            raise ValueError(f"bad PCR list {text!r}: use e.g. 0-7,14") from None
        if first > last:
            raise ValueError(f"bad PCR range {part!r} in {text!r}")
        pcrs.update(range(first, last + 1))
    return frozenset(pcrs)


class PassthroughEngine(Engine):
    """One domain's window onto the host TPM, through its own TCTI connection."""

    name = "passthrough"

    def __init__(
        self,
        host_tcti: str,
        host_pcrs: Iterable[int] = DEFAULT_HOST_PCRS,
        *,
        timeout_ms: int = RECEIVE_TIMEOUT_MS,
    ) -> None:
        if not host_tcti:
            raise ValueError("the passthrough engine needs the host TPM's TCTI")
        self.host_tcti = host_tcti
        self.policy = PassthroughPolicy(frozenset(host_pcrs))
        self.timeout_ms = timeout_ms
        self._tcti: TCTILdr | None = None
        self._broken: str | None = None

    # Engine interface ---------------------------------------------------------------

    def start(self, state: bytes | None) -> None:
        if state is not None and state != PASSTHROUGH_STATE:
            raise EngineError(f"{NOT_MIGRATABLE}; refusing to import another TPM's state")
        if self._tcti is not None:
            raise EngineError("passthrough engine is already started; stop it first")
        self._tcti = self._open()
        self._broken = None

    def execute(self, command: bytes, locality: int = 0) -> bytes:
        tcti = self._usable()
        refusal = self.policy.check(command, locality)
        if refusal is not None:
            code = command_code(command)
            log.warning("passthrough: refused %s at locality %d: %s (answered 0x%x)",
                        command_name(code) if code is not None else "(no header)",
                        locality, refusal.reason, refusal.rc)
            return error_response(refusal.rc)
        from tpm2_pytss import TSS2_Exception

        try:
            tcti.transmit(command)
            response = tcti.receive(MAX_RESPONSE_SIZE, self.timeout_ms)
        except TSS2_Exception as exc:
            # The command/response stream is out of step now; reconnect on restart.
            raise self._fail(f"host TPM at {self.host_tcti} failed: {exc}") from exc
        if len(response) < _HEADER.size or _HEADER.unpack_from(response)[1] != len(response):
            raise self._fail(f"host TPM at {self.host_tcti} sent a malformed response")
        return response

    def power_cycle(self, delete_volatile: bool = False) -> None:
        """A guest reset must not reset the host TPM: reconnect instead, so that the
        resource manager flushes the domain's objects and sessions, as a reset would
        have. (Without a resource manager, e.g. swtpm's TCTI in tests, nothing is
        flushed.)"""
        self._usable()
        self._close()
        self._tcti = self._open()

    def export_state(self) -> bytes:
        """The constant marker: nothing of the host TPM is, or may be, copied out."""
        self._usable()
        return PASSTHROUGH_STATE

    def stop(self) -> None:
        self._close()

    # Internals ----------------------------------------------------------------------

    def _open(self) -> TCTILdr:
        from tpm2_pytss import TCTILdr, TSS2_Exception

        try:
            return TCTILdr.parse(self.host_tcti)
        except (TSS2_Exception, RuntimeError, TypeError) as exc:
            raise EngineError(
                f"cannot open the host TPM through TCTI {self.host_tcti!r}: {exc}"
            ) from exc

    def _close(self) -> None:
        tcti, self._tcti = self._tcti, None
        if tcti is not None:
            tcti.close()

    def _usable(self) -> TCTILdr:
        if self._tcti is None:
            raise EngineError("passthrough engine is not started")
        if self._broken is not None:
            raise EngineError(f"passthrough engine failed earlier: {self._broken}")
        return self._tcti

    def _fail(self, what: str) -> EngineError:
        self._broken = what
        return EngineError(what)
