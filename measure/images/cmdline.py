"""The kernel command line, in the exact byte encodings loaders measure.

Two conventions exist (reference §5), and they do not hash the same bytes:

GRUB (``grub-core/commands/tpm.c``, ``grub_tpm_verify_string``)
    PCR 8, ``EV_IPL``. Event data = ``b"kernel_cmdline: " + cmdline + b"\\0"``; the
    digest is of the command line **alone**: UTF-8 bytes, no prefix, no NUL.
    (GRUB's own string starts with the kernel's path, ``/vmlinuz-… root=…``, because
    ``linux`` passes argv[0]; a content-addressed launch has no path, so we measure
    the command line exactly as the kernel receives it through ``-append``.)
    ``tpm2_eventlog`` checks PCR 8 data against ``^[a-zA-Z_]+:? <payload>\\0`` with
    digest H(payload), and Keylime's reference state matches ``kernel_cmdline: <regex>``.

Linux EFI stub (``drivers/firmware/efi/libstub``, ``efi_measure_tagged_event``)
    PCR 9, ``EV_EVENT_TAG``. Event data = ``TCG_PCClientTaggedEvent`` {u32 id
    0x8F3B22ED, u32 size 26, ``"LOADED_IMAGE::LoadOptions\\0"``} (little-endian); the
    digest is of the raw LoadOptions buffer: UTF-16LE of the command line **plus a
    2-byte NUL**, the form systemd-pcrlock predicts (it holds only if the loader
    passes the terminator inside LoadOptionsSize, as systemd-boot and OVMF do).

A command line may not contain NUL (it would end the string early for the kernel
and for the event data) nor exceed the kernel's ``cmdline_size`` when that is known.
"""

from __future__ import annotations

import struct

from ..errors import InvalidInput

GRUB_PREFIX = b"kernel_cmdline: "
LOAD_OPTIONS_EVENT_TAG_ID = 0x8F3B22ED
INITRD_EVENT_TAG_ID = 0x8F3B22EC
LOAD_OPTIONS_TAG_DATA = b"LOADED_IMAGE::LoadOptions\0"
INITRD_TAG_DATA = b"Linux initrd\0"
# x86 COMMAND_LINE_SIZE is 2048 including the NUL; other limits come from the kernel.
DEFAULT_MAX_LENGTH = 2047


def check_cmdline(cmdline: str, max_length: int | None = None) -> bytes:
    """The command line as the UTF-8 bytes the kernel receives, or :class:`InvalidInput`."""
    if not isinstance(cmdline, str):
        raise InvalidInput(f"command line must be text, got {type(cmdline).__name__}")
    if "\0" in cmdline:
        raise InvalidInput("command line contains a NUL character")
    try:
        raw = cmdline.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"command line is not encodable as UTF-8: {exc.reason}") from None
    limit = DEFAULT_MAX_LENGTH if max_length is None else max_length
    if len(raw) > limit:
        raise InvalidInput(f"command line is {len(raw)} bytes; the kernel accepts at most "
                           f"{limit}")
    return raw


def grub_digest_input(cmdline: str) -> bytes:
    """What GRUB hashes for PCR 8: the command line, no prefix, no NUL."""
    return check_cmdline(cmdline)


def grub_event_data(cmdline: str) -> bytes:
    """GRUB's PCR 8 ``EV_IPL`` event data: ``kernel_cmdline: <cmdline>\\0``."""
    return GRUB_PREFIX + check_cmdline(cmdline) + b"\0"


def efi_load_options(cmdline: str) -> bytes:
    """What the EFI stub hashes for PCR 9: UTF-16LE LoadOptions with a 2-byte NUL."""
    check_cmdline(cmdline)
    return cmdline.encode("utf-16-le") + b"\0\0"


def tagged_event_data(tag: int, data: bytes) -> bytes:
    """``TCG_PCClientTaggedEvent`` (PC Client PFP, ``EV_EVENT_TAG``): id, size, data."""
    return struct.pack("<II", tag, len(data)) + data


def efi_load_options_event_data() -> bytes:
    """The EFI stub's PCR 9 event data for the command line (constant)."""
    return tagged_event_data(LOAD_OPTIONS_EVENT_TAG_ID, LOAD_OPTIONS_TAG_DATA)


def efi_initrd_event_data() -> bytes:
    """The EFI stub's PCR 9 event data for the initrd (constant)."""
    return tagged_event_data(INITRD_EVENT_TAG_ID, INITRD_TAG_DATA)
