"""PCR prediction: kernel + initrd + command line + launch config → events → PCRs.

Convention: GRUB-style ``EV_IPL`` events on PCRs 8 and 9 (``CONVENTION = "grub"``)
==============================================================================

The finalizer measures on the guest's behalf before it launches, playing the part a
boot loader plays on hardware. It must speak a loader's dialect that verifiers
already understand (reference §0.2, §0.3, §7). We chose GRUB's:

=====  =======  ===========================================  ============================
PCR    type     event data (exact bytes)                     digest
=====  =======  ===========================================  ============================
9      EV_IPL   ``/vtpm/launch-config.json\\0``               H(canonical config JSON)
9      EV_IPL   ``/vmlinuz\\0``                               H(kernel file bytes)
8      EV_IPL   ``kernel_cmdline: <cmdline>\\0``              H(<cmdline> UTF-8, no NUL)
9      EV_IPL   ``/initrd\\0``                                H(initrd file bytes)
=====  =======  ===========================================  ============================

in that order — the order GRUB itself measures: its config file, the ``linux``
command's kernel file, that command's command line, then the ``initrd`` file. Why:

- ``tpm2_eventlog`` (every version) parses ``EV_IPL`` on PCRs 8 and 9 without a
  warning, decodes the data as a string, and checks the PCR 8 digest against the
  ``kernel_cmdline: `` payload; tagged events it only prints as hex.
- Keylime's measured-boot reference state has exactly these fields
  (``vmlinuz_plain_sha256``, ``initrd_plain_sha256`` from the PCR 9 event whose path
  holds "initrd", ``kernel_cmdline`` from PCR 8), and its stock ``example`` policy
  dispatches (8, EV_IPL) and (9, EV_IPL) with paths matching ``/vmlinuz`` and
  ``/initrd``; it has no entry at all for (9, EV_EVENT_TAG).
- go-tpm-tools/go-eventlog with ``Loader=GRUB`` extracts GRUB files and
  ``LinuxKernelState.command_line`` from these events; it skips tagged events.
- The kernel's own tagged events (PCR 9, ``EV_EVENT_TAG`` 0x8F3B22EC/ED) would mean
  "the EFI stub measured this", which it did not; and they carry no kernel event.

The launch configuration is measured like GRUB measures ``grub.cfg``: a file the
loader read, on PCR 9, so GRUB-aware parsers see one more file; a Keylime policy
must list it (the stock ``example`` policy would refuse an unknown path anyway).

Paths are fixed names, not host paths: images live in a content-addressed store,
and a host path would make the manifest instance-dependent. The command line is
measured as the kernel receives it (``-append``), without GRUB's ``/vmlinuz`` argv[0].
PCR 4 (Authenticode) is left to the guest's firmware, should it have any; the
Authenticode digest is still recorded in the manifest's kernel details so a
policy can pin it. Encodings for the EFI stub's convention live in
:mod:`measure.images.cmdline` should a second convention be wanted later.
"""

from __future__ import annotations

from typing import Any

from .errors import MalformedImage
from .events import EV_IPL, Event, replay
from .hashing import DEFAULT_BANKS, check_banks, digest_bytes
from .images import KernelImage, LaunchConfig, measure_initrd, measure_kernel
from .images import cmdline as cmdline_encoding
from .images.source import ImageSource
from .manifest import Item, Manifest

CONVENTION = "grub"
GRUB_STRING_PCR = 8
GRUB_BINARY_PCR = 9
CONFIG_PATH = b"/vtpm/launch-config.json"
KERNEL_PATH = b"/vmlinuz"
INITRD_PATH = b"/initrd"


def predict(kernel: ImageSource, initrd: ImageSource | None, cmdline: str,
            config: LaunchConfig | None = None,
            banks: tuple[str, ...] = DEFAULT_BANKS) -> Manifest:
    """Measure everything and return the manifest: items, events in order, PCRs.

    ``initrd`` may be ``None`` (no initrd event then); the command line is always
    measured, even empty, so its absence is provable. Raises
    :class:`~measure.errors.MalformedImage` or :class:`~measure.errors.InvalidInput`.
    """
    banks = check_banks(banks)
    launch = config if config is not None else LaunchConfig()
    image = measure_kernel(kernel, banks)
    max_length = None
    if image.bzimage is not None and image.bzimage.cmdline_size:
        max_length = image.bzimage.cmdline_size
    raw_cmdline = cmdline_encoding.check_cmdline(cmdline, max_length)

    items = [_config_item(launch, banks), _kernel_item(image),
             _cmdline_item(cmdline, raw_cmdline, banks)]
    if initrd is not None:
        initrd_file = measure_initrd(initrd, banks)
        if initrd_file.size == 0:
            raise MalformedImage("initrd", "file is empty (omit the initrd instead)")
        items.append(Item(kind="initrd", size=initrd_file.size, digests=initrd_file.digests,
                          event=_file_event(INITRD_PATH, initrd_file.digests, "initrd")))
    events = [item.event for item in items]
    return Manifest(convention=CONVENTION, banks=banks, items=tuple(items),
                    pcrs=replay(events, banks))


def predicted_pcrs(manifest: Manifest, bank: str = "sha256") -> dict[int, bytes]:
    """The PCR values of one bank (what ``vtpmctl predict`` prints)."""
    return dict(sorted(manifest.pcrs[bank].items()))


def _file_event(path: bytes, digests: dict[str, bytes], kind: str) -> Event:
    """GRUB's ``grub_tpm_verify_write``: PCR 9, EV_IPL, data = path + NUL."""
    return Event(GRUB_BINARY_PCR, EV_IPL, dict(digests), path + b"\0", description=kind)


def _config_item(config: LaunchConfig, banks: tuple[str, ...]) -> Item:
    canonical = config.canonical()
    digests = digest_bytes(canonical, banks)
    return Item(kind="config", size=len(canonical), digests=digests,
                event=_file_event(CONFIG_PATH, digests, "config"), value=canonical.decode("utf-8"))


def _cmdline_item(cmdline: str, raw: bytes, banks: tuple[str, ...]) -> Item:
    digests = digest_bytes(raw, banks)
    event = Event(GRUB_STRING_PCR, EV_IPL, dict(digests),
                  cmdline_encoding.GRUB_PREFIX + raw + b"\0", description="cmdline")
    return Item(kind="cmdline", size=len(raw), digests=digests, event=event, value=cmdline)


def _kernel_item(image: KernelImage) -> Item:
    return Item(kind="kernel", size=image.file.size, digests=image.file.digests,
                event=_file_event(KERNEL_PATH, image.file.digests, "kernel"),
                details=kernel_details(image))


def kernel_details(image: KernelImage) -> dict[str, Any]:
    """The kernel's format facts for the manifest: content-derived only, no addresses."""
    details: dict[str, Any] = {"formats": list(image.formats)}
    if image.pe is not None:
        details["authenticode"] = {b: d.hex() for b, d in image.pe.authenticode.items()}
        details["pe"] = {"machine": image.pe.machine, "pe32_plus": image.pe.pe32_plus,
                         "signed": image.pe.certificate_table[1] > 0}
    if image.bzimage is not None:
        bz = image.bzimage
        details["bzimage"] = {"protocol": f"{bz.protocol[0]}.{bz.protocol[1]:02d}",
                              "setup_sects": bz.setup_sects,
                              "kernel_version": bz.kernel_version}
    if image.elf is not None:
        elf = image.elf
        details["elf"] = {
            "class": elf.elf_class, "machine": elf.machine,
            "code": {b: d.hex() for b, d in elf.code.items()},
            "data": {b: d.hex() for b, d in elf.data.items()},
            "segments": [{"index": s.index, "flags": s.flags, "offset": s.offset,
                          "filesz": s.filesz, "memsz": s.memsz,
                          "digests": {b: d.hex() for b, d in s.digests.items()}}
                         for s in elf.segments],
        }
    return details
