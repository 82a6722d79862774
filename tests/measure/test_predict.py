"""Prediction: the events a build extends, and PCRs equal to extends done by hand."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from measure.errors import InvalidInput, MalformedImage
from measure.events import EV_IPL, Event, replay
from measure.images.config import LaunchConfig
from measure.predict import CONVENTION, predict, predicted_pcrs
from tests.measure.test_images_bzimage import synthetic_bzimage

CMDLINE = "console=ttyS0 root=/dev/vda ro"
CONFIG = LaunchConfig(memory_mib=2048, vcpus=2, label="blue",
                      devices=({"type": "virtio-blk"}, {"type": "virtio-net"}))


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(synthetic_bzimage())
    initrd.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4000)  # "gzip": compression is opaque
    return kernel, initrd


def extend_by_hand(bank: str, digests: list[bytes], size: int) -> bytes:
    value = bytes(size)
    for digest in digests:
        value = hashlib.new(bank, value + digest).digest()
    return value


def test_events_follow_grub_in_order(images: tuple[Path, Path]) -> None:
    kernel, initrd = images
    manifest = predict(kernel, initrd, CMDLINE, CONFIG)
    assert manifest.convention == CONVENTION == "grub"
    assert [(e.pcr, e.event_type, e.data) for e in manifest.events] == [
        (9, EV_IPL, b"/vtpm/launch-config.json\0"),
        (9, EV_IPL, b"/vmlinuz\0"),
        (8, EV_IPL, b"kernel_cmdline: " + CMDLINE.encode() + b"\0"),
        (9, EV_IPL, b"/initrd\0"),
    ]
    kernel_event, cmdline_event, initrd_event = manifest.events[1:]
    assert kernel_event.digests["sha256"] == hashlib.sha256(kernel.read_bytes()).digest()
    assert cmdline_event.digests["sha1"] == hashlib.sha1(CMDLINE.encode()).digest()
    assert initrd_event.digests["sha384"] == hashlib.sha384(initrd.read_bytes()).digest()
    assert manifest.events[0].digests["sha256"] == hashlib.sha256(CONFIG.canonical()).digest()


@pytest.mark.parametrize("bank, size", [("sha1", 20), ("sha256", 32), ("sha384", 48)])
def test_predicted_pcrs_equal_manual_extends(images: tuple[Path, Path], bank: str,
                                             size: int) -> None:
    kernel, initrd = images
    h = lambda data: hashlib.new(bank, data).digest()  # noqa: E731
    pcr9 = extend_by_hand(bank, [h(CONFIG.canonical()), h(kernel.read_bytes()),
                                 h(initrd.read_bytes())], size)
    pcr8 = extend_by_hand(bank, [h(CMDLINE.encode())], size)
    manifest = predict(kernel, initrd, CMDLINE, CONFIG)
    assert manifest.pcrs[bank] == {8: pcr8, 9: pcr9}
    assert predicted_pcrs(manifest, bank) == {8: pcr8, 9: pcr9}


def test_instance_independent(images: tuple[Path, Path], tmp_path: Path) -> None:
    """Same bytes from other paths, or from memory, give a byte-identical manifest."""
    kernel, initrd = images
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "k").write_bytes(kernel.read_bytes())
    (other / "i").write_bytes(initrd.read_bytes())
    first = predict(kernel, initrd, CMDLINE, CONFIG).dumps()
    assert predict(other / "k", other / "i", CMDLINE, CONFIG).dumps() == first
    assert predict(io.BytesIO(kernel.read_bytes()), io.BytesIO(initrd.read_bytes()), CMDLINE,
                   CONFIG).dumps() == first
    assert str(tmp_path) not in first and "elsewhere" not in first


def test_each_input_moves_its_own_pcr(images: tuple[Path, Path]) -> None:
    kernel, initrd = images
    base = predict(kernel, initrd, CMDLINE, CONFIG).pcrs["sha256"]
    assert predict(kernel, initrd, CMDLINE + " quiet", CONFIG).pcrs["sha256"][9] == base[9]
    assert predict(kernel, initrd, CMDLINE + " quiet", CONFIG).pcrs["sha256"][8] != base[8]
    raw = initrd.read_bytes()
    changed = io.BytesIO(raw[:-1] + bytes([raw[-1] ^ 1]))  # one bit of the initrd
    assert predict(kernel, changed, CMDLINE, CONFIG).pcrs["sha256"][9] != base[9]
    other_config = LaunchConfig(memory_mib=4096, vcpus=2, label="blue",
                                devices=CONFIG.devices)
    assert predict(kernel, initrd, CMDLINE, other_config).pcrs["sha256"][9] != base[9]


def test_without_initrd_and_with_one_bank(images: tuple[Path, Path]) -> None:
    kernel, _ = images
    manifest = predict(kernel, None, "", banks=("sha256",))
    assert [i.kind for i in manifest.items] == ["config", "kernel", "cmdline"]
    assert manifest.banks == ("sha256",) and set(manifest.pcrs) == {"sha256"}
    assert manifest.events[2].data == b"kernel_cmdline: \0"


def test_kernel_details_carry_format_facts(images: tuple[Path, Path]) -> None:
    kernel, initrd = images
    details = predict(kernel, initrd, CMDLINE).item("kernel").details  # type: ignore[union-attr]
    assert details["formats"] == ["bzimage"]
    assert details["bzimage"]["protocol"] == "2.15"


def test_efi_stub_kernel_reports_authenticode() -> None:
    stub = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
    if not stub.exists():
        pytest.fail(f"{stub} is missing: apt-get install systemd-boot-efi")
    details = predict(stub, None, CMDLINE).item("kernel").details  # type: ignore[union-attr]
    assert len(bytes.fromhex(details["authenticode"]["sha256"])) == 32


def test_bad_inputs_raise_typed_errors(images: tuple[Path, Path]) -> None:
    kernel, initrd = images
    with pytest.raises(InvalidInput, match="NUL"):
        predict(kernel, initrd, "a\0b")
    with pytest.raises(InvalidInput, match="at most 100"):
        predict(io.BytesIO(synthetic_bzimage(cmdline_size=100)), initrd, "x" * 101)
    with pytest.raises(MalformedImage, match="empty"):
        predict(kernel, io.BytesIO(b""), CMDLINE)
    with pytest.raises(MalformedImage):
        predict(initrd, None, CMDLINE)  # an initrd is no kernel


def test_event_validates_on_construction() -> None:
    with pytest.raises(ValueError, match="PCR index"):
        Event(24, EV_IPL, {"sha256": bytes(32)}, b"")
    with pytest.raises(ValueError, match="32 bytes"):
        Event(9, EV_IPL, {"sha256": bytes(20)}, b"")
    with pytest.raises(ValueError, match="unknown PCR bank"):
        Event(9, EV_IPL, {"md5": bytes(16)}, b"")


def test_replay_skips_no_action_and_starts_drtm_pcrs_at_ones() -> None:
    digest = hashlib.sha256(b"x").digest()
    pcrs = replay([Event(9, 3, {"sha256": digest}, b""),
                   Event(17, EV_IPL, {"sha256": digest}, b"")], ["sha256"])
    assert 9 not in pcrs["sha256"]
    assert pcrs["sha256"][17] == hashlib.sha256(b"\xff" * 32 + digest).digest()


def test_events_name_their_item_and_feed_the_log_writer(images: tuple[Path, Path]) -> None:
    from measure.eventlog import LogEvent

    kernel, initrd = images
    manifest = predict(kernel, initrd, CMDLINE, CONFIG)
    assert [e.description for e in manifest.events] == ["config", "kernel", "cmdline", "initrd"]
    for event in manifest.events:
        logged = LogEvent(event.pcr, event.event_type, event.digests, event.data)
        assert (logged.pcr, logged.event_type, dict(logged.digests), logged.data) == \
            (event.pcr, event.event_type, event.digests, event.data)
