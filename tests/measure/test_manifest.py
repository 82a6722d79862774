"""Manifests: round trip, refusal of unknown versions and of inconsistent content."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from measure.errors import ManifestError, UnsupportedManifestVersion
from measure.images.config import LaunchConfig
from measure.manifest import Manifest
from measure.predict import predict
from tests.measure.test_images_bzimage import synthetic_bzimage


def sample() -> Manifest:
    return predict(io.BytesIO(synthetic_bzimage()), io.BytesIO(b"initrd bytes" * 100),
                   "console=ttyS0", LaunchConfig(label="red"))


def test_round_trip() -> None:
    manifest = sample()
    text = manifest.dumps()
    loaded = Manifest.loads(text)
    assert loaded == manifest
    assert loaded.dumps() == text
    assert loaded.events == manifest.events


def test_document_shape_is_what_the_verifier_reads() -> None:
    doc = json.loads(sample().dumps())
    assert doc["format"] == "vtpm-stack.manifest" and doc["version"] == 1
    assert doc["banks"] == ["sha1", "sha256", "sha384", "sha512"]
    cmdline = next(i for i in doc["items"] if i["kind"] == "cmdline")
    assert cmdline["event"]["event_type"] == "EV_IPL" and cmdline["event"]["pcr"] == 8
    assert bytes.fromhex(cmdline["event"]["data"]) == b"kernel_cmdline: console=ttyS0\0"
    assert cmdline["value"] == "console=ttyS0"
    assert set(doc["pcrs"]["sha256"]) == {"8", "9"}


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_unknown_version_is_refused_with_a_message(version: object) -> None:
    doc = json.loads(sample().dumps())
    doc["version"] = version
    with pytest.raises(UnsupportedManifestVersion, match="this build reads version 1"):
        Manifest.loads(json.dumps(doc))


def _edit(path: list[Any], value: object) -> str:
    doc = json.loads(sample().dumps())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(doc)


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    (json.dumps([]), "must be a JSON object"),
    (_edit(["format"], "other"), "not a vtpm-stack manifest"),
    (_edit(["banks"], ["md5"]), "PCR banks"),
    (_edit(["items"], []), "non-empty"),
    (_edit(["items", 0, "kind"], "firmware"), "kind 'firmware'"),
    (_edit(["items", 1, "event", "pcr"], 99), "PCR index"),
    (_edit(["items", 1, "event", "data"], "zz"), "not hex"),
    (_edit(["items", 1, "event", "event_type"], "EV_SEPARATOR"), "does not name"),
    (_edit(["items", 1, "event", "digests", "sha256"], "00" * 32), "differ from a replay"),
    (_edit(["pcrs", "sha256", "9"], "00" * 32), "differ from a replay"),
    (_edit(["pcrs", "sha256", "9"], "00"), "not a sha256 value"),
])
def test_invalid_manifests_are_refused(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.loads(text)


_BASE = json.loads(sample().dumps())
_leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_manifests_load_or_raise_only_manifest_error(data: st.DataObject) -> None:
    doc = copy.deepcopy(_BASE)
    target: Any = doc
    while isinstance(target, dict | list) and target and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(target) if isinstance(target, dict)
                                        else list(range(len(target)))))
        if not isinstance(target[key], dict | list):
            target[key] = data.draw(_leaves)
            break
        target = target[key]
    else:
        if isinstance(target, dict):
            target[data.draw(st.text(max_size=4))] = data.draw(_leaves)
    try:
        Manifest.loads(json.dumps(doc))
    except ManifestError:
        pass
