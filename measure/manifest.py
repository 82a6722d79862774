"""Domain manifests: every measured item, the event it produces, the PCRs it predicts.

A manifest is the reference a verifier matches an event log against, and what a
sealing policy is computed from. It is *instance-independent*: it names no domain,
vTPM, address, path on a host or time, so two hosts booting the same kernel, initrd,
command line and configuration produce byte-identical manifests, and one manifest
can be published and shared.

JSON, version 1::

    {"format": "vtpm-stack.manifest", "version": 1, "convention": "grub",
     "banks": ["sha1", "sha256", "sha384", "sha512"],
     "items": [{"kind": "kernel", "size": 123, "digests": {"sha256": "<hex>", ...},
                "details": {...}, "value": null,
                "event": {"pcr": 9, "event_type": "EV_IPL", "event_type_value": 13,
                          "digests": {"sha256": "<hex>", ...}, "data": "<hex>"}}, ...],
     "pcrs": {"sha256": {"8": "<hex>", "9": "<hex>"}, ...}}

``items`` are in extend order. ``event.data`` is the exact event-data bytes the log
will carry (hex), so a verifier compares bytes, not a re-rendering. On load the
declared ``pcrs`` must equal a replay of the items' events: a manifest cannot claim
values its own events do not produce. An unknown ``format`` or ``version`` is refused
with a message, never read as something else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ManifestError, UnsupportedManifestVersion
from .events import EVENT_TYPE_NAMES, Event, replay
from .hashing import DIGEST_SIZES, check_banks

FORMAT = "vtpm-stack.manifest"
VERSION = 1
ITEM_KINDS = ("config", "kernel", "cmdline", "initrd")
MAX_MANIFEST_BYTES = 4 << 20


@dataclass(frozen=True)
class Item:
    """One measured thing and the one event it extends."""

    kind: str  # one of ITEM_KINDS
    size: int  # bytes measured
    digests: dict[str, bytes]  # of the item's bytes (file, UTF-8 command line, canonical config)
    event: Event
    details: dict[str, Any] = field(default_factory=dict)  # format facts, JSON-able
    value: str | None = None  # the command line or canonical config text, for display



@dataclass(frozen=True)
class Manifest:
    """Items in extend order and the PCR values they leave, per declared bank."""

    convention: str
    banks: tuple[str, ...]
    items: tuple[Item, ...]
    pcrs: dict[str, dict[int, bytes]]
    version: int = VERSION

    @property
    def events(self) -> tuple[Event, ...]:
        """What the finalizer extends and logs, in order."""
        return tuple(item.event for item in self.items)

    def item(self, kind: str) -> Item | None:
        return next((i for i in self.items if i.kind == kind), None)

    # --- JSON ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": self.version, "convention": self.convention,
            "banks": list(self.banks),
            "items": [_item_to_dict(i) for i in self.items],
            "pcrs": {bank: {str(pcr): value.hex() for pcr, value in sorted(values.items())}
                     for bank, values in self.pcrs.items()},
        }

    def dumps(self) -> str:
        """Stable text (sorted keys, indented): equal manifests are equal files."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

    @classmethod
    def loads(cls, text: str | bytes) -> Manifest:
        """Parse and validate; :class:`ManifestError` for anything not version 1 as written."""
        if len(text) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest is not JSON: {exc}") from None
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: object) -> Manifest:
        doc = _mapping(document, "manifest")
        if doc.get("format") != FORMAT:
            raise ManifestError(f"not a vtpm-stack manifest (format {doc.get('format')!r}, "
                                f"expected {FORMAT!r})")
        version = doc.get("version")
        if version != VERSION:
            raise UnsupportedManifestVersion(
                f"manifest version {version!r} is not supported; this build reads version "
                f"{VERSION} (upgrade vtpm-stack, or re-run predict to write version {VERSION})")
        convention = doc.get("convention")
        if not isinstance(convention, str):
            raise ManifestError("manifest: 'convention' must be text")
        raw_banks = doc.get("banks")
        if not isinstance(raw_banks, list) or not all(isinstance(b, str) for b in raw_banks):
            raise ManifestError("manifest: 'banks' must be a list of bank names")
        try:
            banks = check_banks(raw_banks)
        except ValueError as exc:
            raise ManifestError(f"manifest: {exc}") from None
        raw_items = doc.get("items")
        if not isinstance(raw_items, list) or not raw_items:
            raise ManifestError("manifest: 'items' must be a non-empty list")
        items = tuple(_item_from_dict(raw, i, banks) for i, raw in enumerate(raw_items))
        pcrs = _pcrs_from_dict(doc.get("pcrs"), banks)
        replayed = replay((i.event for i in items), banks)
        if replayed != pcrs:
            raise ManifestError("manifest: declared 'pcrs' differ from a replay of its events")
        return cls(convention=convention, banks=banks, items=items, pcrs=pcrs)


def _item_to_dict(item: Item) -> dict[str, Any]:
    event = item.event
    return {
        "kind": item.kind, "size": item.size, "value": item.value, "details": item.details,
        "digests": {b: d.hex() for b, d in item.digests.items()},
        "event": {"pcr": event.pcr, "event_type": event.type_name,
                  "event_type_value": event.event_type,
                  "digests": {b: d.hex() for b, d in event.digests.items()},
                  "data": event.data.hex()},
    }


def _item_from_dict(raw: object, index: int, banks: tuple[str, ...]) -> Item:
    where = f"manifest item #{index}"
    doc = _mapping(raw, where)
    kind = doc.get("kind")
    if kind not in ITEM_KINDS:
        raise ManifestError(f"{where}: kind {kind!r} is not one of {list(ITEM_KINDS)}")
    size = doc.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where}: size must be a non-negative integer")
    value = doc.get("value")
    if value is not None and not isinstance(value, str):
        raise ManifestError(f"{where}: value must be text or null")
    details = _mapping(doc.get("details", {}), f"{where} details")
    event_doc = _mapping(doc.get("event"), f"{where} event")
    type_value = event_doc.get("event_type_value")
    if isinstance(type_value, bool) or not isinstance(type_value, int):
        raise ManifestError(f"{where}: event_type_value must be an integer")
    name = event_doc.get("event_type")
    if name != EVENT_TYPE_NAMES.get(type_value, f"{type_value:#010x}"):
        raise ManifestError(f"{where}: event_type {name!r} does not name {type_value:#x}")
    try:
        event = Event(pcr=event_doc.get("pcr"),  # type: ignore[arg-type]
                      event_type=type_value,
                      digests=_digests(event_doc.get("digests"), banks, f"{where} event"),
                      data=_hex(event_doc.get("data"), f"{where} event data"),
                      description=kind)
    except ValueError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    return Item(kind=kind, size=size, digests=_digests(doc.get("digests"), banks, where),
                event=event, details=dict(details), value=value)


def _pcrs_from_dict(raw: object, banks: tuple[str, ...]) -> dict[str, dict[int, bytes]]:
    doc = _mapping(raw, "manifest pcrs")
    if set(doc) != set(banks):
        raise ManifestError(f"manifest: 'pcrs' must have exactly the banks {list(banks)}")
    pcrs: dict[str, dict[int, bytes]] = {}
    for bank in banks:
        values = _mapping(doc[bank], f"manifest pcrs {bank}")
        pcrs[bank] = {}
        for key, value in values.items():
            if not isinstance(key, str) or not key.isdigit() or not 0 <= int(key) < 24:
                raise ManifestError(f"manifest: PCR index {key!r} is not 0..23")
            digest = _hex(value, f"manifest PCR {bank}:{key}")
            if len(digest) != DIGEST_SIZES[bank]:
                raise ManifestError(f"manifest: PCR {bank}:{key} is not a {bank} value")
            pcrs[bank][int(key)] = digest
    return pcrs


def _digests(raw: object, banks: tuple[str, ...], where: str) -> dict[str, bytes]:
    doc = _mapping(raw, f"{where} digests")
    if set(doc) != set(banks):
        raise ManifestError(f"{where}: digests must be exactly the banks {list(banks)}")
    result = {bank: _hex(doc[bank], f"{where} {bank} digest") for bank in banks}
    for bank, digest in result.items():
        if len(digest) != DIGEST_SIZES[bank]:
            raise ManifestError(f"{where}: {bank} digest must be {DIGEST_SIZES[bank]} bytes")
    return result


def _hex(raw: object, where: str) -> bytes:
    if not isinstance(raw, str):
        raise ManifestError(f"{where} must be a hex string")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise ManifestError(f"{where} is not hex") from None


def _mapping(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{where} must be a JSON object")
    return raw
