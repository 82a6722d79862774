"""The domain finalizer: measured launch (data path 2) on DomS0's side.

A builder (unprivileged, client side) only describes a domain and streams its images;
everything that vouches for the domain happens here:

1. the images land in the content-addressed :mod:`domS0.imagestore`, and DomS0 hashes
   the stored files itself (``measure.predict``): no digest ever comes from the builder,
   and the file that was measured is the file the QEMU arguments name;
2. the vTPM is found (or created), and refused if a front end holds it — a running
   domain could otherwise have its "boot" measured late, after it ran whatever it
   liked; ``force`` overrides that for operators who know the domain is not running;
3. the vTPM is power-cycled and started (TPM2_Startup(CLEAR)) so the build begins, like
   a boot, from reset PCRs; then each manifest event is extended (GRUB convention, PCRs
   8/9, see ``measure.predict``) into every bank the vTPM has allocated, and the TCG
   crypto-agile event log of exactly those banks is stored durably;
4. an AK is enrolled once per vTPM (ECC, through the EK, certified by the vTPM CA);
   an engine without the commands it needs (passthrough: no vTPM CA) still gets steps
   1-3, and the reason is reported;
5. the answer is the manifest, the log and the QEMU arguments of the launch.

Every boot is measured again: QEMU's ``-tpmdev emulator`` resets the vTPM when the
guest powers on (CMD_INIT, then the firmware's TPM2_Startup(CLEAR)), which clears
PCRs 8/9. DomS0's control socket therefore calls :meth:`Finalizer.measure_boot` right
after that Startup succeeds and before the firmware sees the answer: the stored images
are hashed again and extended, as a boot loader would on every boot, and the event
log is rewritten. A stored image that changed or vanished is not measured, so the
domain's quote no longer matches its manifest (fail closed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tpm2_pytss import TSS2_Exception

from measure.errors import MeasureError
from measure.eventlog import EventLog, LogEvent, encode
from measure.images.config import LaunchConfig
from measure.manifest import Manifest
from measure.predict import predict
from vtpm_manager.attestation import AttestationError, enroll_ak
from vtpm_manager.ca import VtpmCA, VtpmIdentity
from vtpm_manager.errors import FailedPrecondition, InvalidArgument, NotFound
from vtpm_manager.instance import Instance
from vtpm_manager.manager import VtpmManager
from vtpm_manager.manufacture import ManufactureError

from . import launch_commands as tpm
from .attestation_store import AttestationStore, BootRecord
from .imagestore import ImageStore, StoredImage

log = logging.getLogger(__name__)

ControlSocketOf = Callable[[Instance], str]
FINALIZER_HOLDER = "the DomS0 finalizer"


@dataclass(frozen=True)
class BuildSpec:
    """What a builder asks for (never a digest)."""

    vtpm: str
    cmdline: str
    config: LaunchConfig
    force: bool = False
    create_if_missing: bool = False
    engine: str = ""


@dataclass(frozen=True)
class BuildResult:
    manifest: Manifest
    eventlog: bytes
    qemu_args: tuple[str, ...]
    instance: Instance
    enrollment: str


def parse_config(text: str) -> LaunchConfig:
    """A launch configuration from its JSON (empty: the defaults)."""
    if not text.strip():
        return LaunchConfig()
    try:
        return LaunchConfig.from_dict(json.loads(text))
    except ValueError as exc:   # JSONDecodeError is a ValueError
        raise InvalidArgument(f"launch config is not valid JSON: {exc}") from None
    except MeasureError as exc:
        raise InvalidArgument(str(exc)) from None


def measure_images(kernel: StoredImage, initrd: StoredImage | None, cmdline: str,
                   config: LaunchConfig) -> Manifest:
    """``predict`` over the stored files; measurement errors become INVALID_ARGUMENT."""
    try:
        manifest = predict(kernel.path, initrd.path if initrd else None, cmdline, config)
    except MeasureError as exc:
        raise InvalidArgument(str(exc)) from None
    # The store named the file by the bytes it received; the parser hashed the file
    # again. A difference means the file changed underneath us: refuse to launch it.
    item = manifest.item("kernel")
    if item is None or item.digests.get("sha256", b"").hex() != kernel.sha256:
        raise FailedPrecondition(f"stored kernel {kernel.path} changed while measured")
    return manifest


def qemu_arguments(kernel: StoredImage, initrd: StoredImage | None, cmdline: str,
                   config: LaunchConfig, control_socket: str) -> tuple[str, ...]:
    """QEMU arguments booting the stored images on the vTPM's control socket."""
    args = ["-m", str(config.memory_mib), "-smp", str(config.vcpus),
            "-kernel", str(kernel.path)]
    if initrd is not None:
        args += ["-initrd", str(initrd.path)]
    args += ["-append", cmdline,
             "-chardev", f"socket,id=chrtpm,path={control_socket.replace(',', ',,')}",
             "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
             "-device", "tpm-crb,tpmdev=tpm0"]
    return tuple(args)


class Finalizer:
    """Builds measured domains into vTPMs of one manager."""

    def __init__(self, manager: VtpmManager, ca: VtpmCA | None, host: str,
                 records: AttestationStore, control_socket_of: ControlSocketOf,
                 images: ImageStore) -> None:
        self._manager = manager
        self._images = images
        self._ca = ca
        self._host = host
        self._records = records
        self._socket_of = control_socket_of

    def _instance(self, spec: BuildSpec) -> Instance:
        try:
            instance = self._manager.get(spec.vtpm)
        except NotFound:
            if not spec.create_if_missing:
                raise NotFound(f"no vTPM named {spec.vtpm!r}; create it first or build "
                               "with create_if_missing (vtpmctl build --engine E)") from None
            return self._manager.create(spec.vtpm, spec.engine, {}, start=True)
        if not instance.running:
            instance.start()
        return instance

    def build(self, spec: BuildSpec, kernel: StoredImage,
              initrd: StoredImage | None) -> BuildResult:
        manifest = measure_images(kernel, initrd, spec.cmdline, spec.config)
        instance = self._instance(spec)
        with instance.exclusive(FINALIZER_HOLDER, force=spec.force) as lease:
            def execute(command: bytes) -> bytes:
                return instance.execute(command, 0, lease)

            if spec.force and instance.holder != FINALIZER_HOLDER:
                log.warning("vTPM %s: measuring while held by %s (forced)",
                            instance.record.name, instance.holder)
            instance.power_cycle(lease, delete_volatile=True)
            tpm.startup_clear(execute)
            banks, eventlog = self._extend_and_log(instance, execute, manifest)
            self._records.save_boot(instance.record.uuid, BootRecord(
                kernel.sha256, initrd.sha256 if initrd else None, spec.cmdline,
                spec.config.canonical().decode()))
            enrollment = self._enroll(instance, execute)
        log.info("built measured domain into vTPM %s: %d events, banks %s, %s",
                 instance.record.name, len(manifest.events), ",".join(banks), enrollment)
        args = qemu_arguments(kernel, initrd, spec.cmdline, spec.config,
                              self._socket_of(instance))
        return BuildResult(manifest, eventlog, args, instance, enrollment)

    def _extend_and_log(self, instance: Instance, execute: tpm.Execute,
                        manifest: Manifest) -> tuple[tuple[str, ...], bytes]:
        """Extend every event into the banks the vTPM has; store the event log."""
        allocated = tpm.allocated_banks(execute)
        banks = tuple(b for b in manifest.banks if b in allocated)
        if not banks:
            raise FailedPrecondition(f"vTPM {instance.record.name} has none of the "
                                     f"banks {', '.join(manifest.banks)} allocated")
        unmeasured = [b for b in allocated if b not in banks]
        if unmeasured:
            # Those banks keep values any domain reproduces: nothing may rely on them.
            log.warning("vTPM %s: banks %s are allocated but not in the manifest; they "
                        "stay unmeasured", instance.record.name, ",".join(unmeasured))
        events = []
        for event in manifest.events:
            digests = {bank: event.digests[bank] for bank in banks}
            tpm.pcr_extend(execute, event.pcr, digests)
            events.append(LogEvent(event.pcr, event.event_type, digests, event.data))
        eventlog = encode(EventLog(banks, tuple(events)))
        self._records.save_eventlog(instance.record.uuid, eventlog)
        return banks, eventlog

    def measure_boot(self, instance: Instance, execute: tpm.Execute) -> None:
        """Measure a built domain's boot again, just after its TPM2_Startup(CLEAR).

        Called by the front end holding the vTPM; a vTPM nobody built is left alone.
        """
        boot = self._records.boot(instance.record.uuid)
        if boot is None:
            return
        kernel = self._images.get(boot.kernel_sha256)
        initrd = self._images.get(boot.initrd_sha256) if boot.initrd_sha256 else None
        if kernel is None or (boot.initrd_sha256 and initrd is None):
            log.error("vTPM %s: a stored image of its domain is gone; boot not measured",
                      instance.record.name)
            return
        try:
            manifest = measure_images(kernel, initrd, boot.cmdline, parse_config(boot.config))
        except (InvalidArgument, FailedPrecondition) as exc:
            log.error("vTPM %s: boot not measured: %s", instance.record.name, exc)
            return
        banks, _ = self._extend_and_log(instance, execute, manifest)
        log.info("vTPM %s: boot measured (%d events, banks %s)", instance.record.name,
                 len(manifest.events), ",".join(banks))

    def _enroll(self, instance: Instance, execute: tpm.Execute) -> str:
        """Enroll an ECC AK once per vTPM; report why not if the engine cannot."""
        record = instance.record
        if self._records.enrolled(record.uuid) is not None:
            return "already enrolled"
        if self._ca is None or record.engine == "passthrough":
            return "not enrolled: no vTPM CA for this engine"
        identity = VtpmIdentity(uuid=record.uuid, name=record.name, host=self._host)
        try:
            enrollment = enroll_ak(execute, self._ca, identity, "ecc")
        except (AttestationError, ManufactureError, TSS2_Exception) as exc:
            log.warning("vTPM %s: no AK enrolled: %s", record.name, exc)
            return f"not enrolled: {exc}"
        self._records.save_enrollment(record.uuid, enrollment)
        return "enrolled"
