"""The domain's launch configuration in one canonical byte form.

Memory, vCPUs, devices and the security label decide what the guest is as much as
its kernel does, so they are measured too. A measurement needs one byte string per
meaning, hence: sorted-keys compact JSON, UTF-8, integers only (no floats, whose
text form is ambiguous), unknown keys refused, and a ``version`` field so a future
field cannot silently change what an old digest meant. Device order is kept: it
decides bus slots. Nothing instance-specific belongs here (no domain name or id,
no socket paths); those vary per launch and would make the manifest unshareable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput

CONFIG_VERSION = 1
_KEYS = {"version", "memory_mib", "vcpus", "devices", "label"}
_MAX_DEVICES = 256


@dataclass(frozen=True)
class LaunchConfig:
    """What the launch gives the guest besides its images."""

    memory_mib: int = 512
    vcpus: int = 1
    devices: tuple[Mapping[str, Any], ...] = field(default=())
    label: str = ""  # the domain's sHype label (a type name, not an instance name)

    def __post_init__(self) -> None:
        for name, value, high in (("memory_mib", self.memory_mib, 1 << 24),
                                  ("vcpus", self.vcpus, 4096)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise InvalidInput(f"launch config: {name} must be an integer in 1..{high}, "
                                   f"got {value!r}")
        if not isinstance(self.label, str) or "\0" in self.label or len(self.label) > 256:
            raise InvalidInput("launch config: label must be text of at most 256 characters")
        if not isinstance(self.devices, tuple) or len(self.devices) > _MAX_DEVICES:
            raise InvalidInput(f"launch config: devices must be a list of at most "
                               f"{_MAX_DEVICES} objects")
        for i, device in enumerate(self.devices):
            if not isinstance(device, Mapping) or not isinstance(device.get("type"), str):
                raise InvalidInput(f"launch config: device #{i} must be an object with a "
                                   "string 'type'")
            _check_json_value(device, f"device #{i}")

    def to_dict(self) -> dict[str, Any]:
        return {"version": CONFIG_VERSION, "memory_mib": self.memory_mib, "vcpus": self.vcpus,
                "devices": [dict(d) for d in self.devices], "label": self.label}

    def canonical(self) -> bytes:
        """The bytes that are hashed: sorted keys, no whitespace, UTF-8."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False).encode("utf-8")

    @classmethod
    def from_dict(cls, value: object) -> LaunchConfig:
        """Read a config (e.g. ``--config F``), refusing unknown keys and versions."""
        if not isinstance(value, Mapping):
            raise InvalidInput("launch config must be a JSON object")
        unknown = set(value) - _KEYS
        if unknown:
            raise InvalidInput(f"launch config: unknown keys {sorted(map(str, unknown))}; "
                               f"known: {sorted(_KEYS)}")
        version = value.get("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise InvalidInput(f"launch config version {version!r} is not supported "
                               f"(this build reads version {CONFIG_VERSION})")
        devices = value.get("devices", [])
        if not isinstance(devices, list):
            raise InvalidInput("launch config: devices must be a list")
        return cls(memory_mib=value.get("memory_mib", 512), vcpus=value.get("vcpus", 1),
                   devices=tuple(devices), label=value.get("label", ""))


def _check_json_value(value: object, where: str, depth: int = 0) -> None:
    """Only JSON types with one canonical text: str, int, bool, None, lists, objects."""
    if depth > 16:
        raise InvalidInput(f"launch config: {where} nests too deeply")
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json_value(item, where, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"launch config: {where} has a non-text key {key!r}")
            _check_json_value(item, where, depth + 1)
        return
    raise InvalidInput(f"launch config: {where} holds a {type(value).__name__}; only text, "
                       "integers, booleans, null, lists and objects are allowed")
