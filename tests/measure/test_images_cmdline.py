"""Command-line encodings (GRUB, EFI stub) and the canonical launch configuration."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from measure.errors import InvalidInput, MeasureError
from measure.images import cmdline
from measure.images.config import LaunchConfig


def test_grub_hashes_the_command_line_alone_and_logs_it_prefixed() -> None:
    assert cmdline.grub_digest_input("console=ttyS0 ro") == b"console=ttyS0 ro"
    assert cmdline.grub_event_data("console=ttyS0 ro") == b"kernel_cmdline: console=ttyS0 ro\0"


def test_efi_stub_load_options_are_utf16le_with_a_two_byte_nul() -> None:
    assert cmdline.efi_load_options("ro") == b"r\0o\0\0\0"


def test_efi_stub_tagged_event_data() -> None:
    data = cmdline.efi_load_options_event_data()
    assert data[:4] == bytes.fromhex("ed223b8f") and data[4:8] == (26).to_bytes(4, "little")
    assert data[8:] == b"LOADED_IMAGE::LoadOptions\0"
    assert cmdline.efi_initrd_event_data()[8:] == b"Linux initrd\0"


@pytest.mark.parametrize("bad", ["a\0b", "x" * 2048, "\udc80"])
def test_unmeasurable_command_lines_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        cmdline.check_cmdline(bad)


def test_canonical_config_is_sorted_compact_and_versioned() -> None:
    config = LaunchConfig(memory_mib=1024, vcpus=2, label="green",
                          devices=({"type": "virtio-net", "mac": None},))
    text = config.canonical().decode()
    assert text == ('{"devices":[{"mac":null,"type":"virtio-net"}],"label":"green",'
                    '"memory_mib":1024,"vcpus":2,"version":1}')
    assert LaunchConfig.from_dict(json.loads(text)) == config


@pytest.mark.parametrize("doc, message", [
    ({"memory_mib": 0}, "memory_mib"), ({"vcpus": True}, "vcpus"),
    ({"name": "vm1"}, "unknown keys"), ({"version": 2}, "version 2"),
    ({"devices": [{"type": "disk", "size": 1.5}]}, "float"),
    ({"devices": [{"model": "x"}]}, "string 'type'"), ([], "JSON object"),
])
def test_bad_configs_are_refused(doc: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        LaunchConfig.from_dict(doc)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                           max_leaves=10)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["version", "memory_mib", "vcpus", "devices", "label",
                                        "other"]), json_values))
def test_any_json_config_loads_or_raises_our_error(doc: dict[str, object]) -> None:
    try:
        config = LaunchConfig.from_dict(doc)
    except MeasureError:
        return
    assert LaunchConfig.from_dict(json.loads(config.canonical())) == config
