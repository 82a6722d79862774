"""The sHype ACM policy: its XML source, the validated in-memory form, the compiled form.

Xen's ACM (reference §2) kept a policy as an XML document (``security_policy.xsd``)
that ``xensec_xml2bin`` compiled into a binary the hypervisor loaded. We keep the same
XML vocabulary so existing policies and the ``xm`` habits carry over, and compile it to a
canonical JSON document instead of a ``.bin``: DomS0 stores it, binds its SHA-256 into
attestation evidence, and migrating hosts compare digests, so the compiled bytes must be
a function of the policy's meaning alone (types sorted, labels sorted, no whitespace).

The whole module is pure: text in, :class:`AcmPolicy` out, bytes in and out. Decisions
live in :mod:`.decide`.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, cast
from xml.parsers import expat

Component = Literal["chwall", "ste"]

#: The label a domain or resource without a label falls back to, when the policy
#: defines it (user.tex: "Unlabelled domains get __UNLABELED__ if the policy defines it").
UNLABELED: Final = "__UNLABELED__"

#: The XML namespace of Xen's policies; documents may also omit it.
IBM_NS: Final = "http://www.ibm.com"
_XSI_NS: Final = "http://www.w3.org/2001/XMLSchema-instance"
_PRIMARY_MARK: Final = "PrimaryPolicyComponent"

#: Compiled form: a format name and a version, checked before anything else is read.
COMPILED_FORMAT: Final = "vtpm-stack/acm-policy"
COMPILED_VERSION: Final = 1

#: Policies are small (Xen's examples are a few KiB); a cap keeps a hostile upload cheap.
MAX_XML_BYTES: Final = 1 << 20

_NAME_MAX: Final = 128
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_VERSION: Final = re.compile(r"\d{1,9}(\.\d{1,9})?")


class AcmPolicyError(ValueError):
    """The policy (XML or compiled) is malformed or breaks an sHype rule; the message
    says which element, label or type is at fault."""


@dataclass(frozen=True)
class SubjectLabel:
    """A ``VirtualMachineLabel``: the STE types a domain may share through and the
    Chinese Wall types it brings to the running set."""

    ste: frozenset[str]
    cw: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AcmPolicy:
    """A validated sHype policy. Construction checks every rule, whatever the source
    (XML, compiled JSON or code), and normalises order so that equal policies compare
    equal and compile to the same bytes."""

    name: str
    version: str
    primary: Component
    ste_types: tuple[str, ...] = ()
    cw_types: tuple[str, ...] = ()
    conflict_sets: tuple[tuple[str, frozenset[str]], ...] = ()
    subject_labels: Mapping[str, SubjectLabel] = field(default_factory=dict)
    object_labels: Mapping[str, frozenset[str]] = field(default_factory=dict)
    bootstrap: str | None = None
    #: The other component, checked only when the primary permits (shype4xen_readme);
    #: None when the policy has only one.
    secondary: Component | None = None
    url: str | None = None
    date: str | None = None
    reference: str | None = None

    def __post_init__(self) -> None:
        _validate(self)
        put = object.__setattr__
        put(self, "ste_types", tuple(sorted(self.ste_types)))
        put(self, "cw_types", tuple(sorted(self.cw_types)))
        put(self, "conflict_sets", tuple(sorted(
            (n, frozenset(ts)) for n, ts in self.conflict_sets)))
        put(self, "subject_labels", MappingProxyType(
            {k: self.subject_labels[k] for k in sorted(self.subject_labels)}))
        put(self, "object_labels", MappingProxyType(
            {k: frozenset(self.object_labels[k]) for k in sorted(self.object_labels)}))

    @property
    def components(self) -> tuple[Component, ...]:
        """Primary first, as the hooks evaluate them."""
        return (self.primary,) if self.secondary is None else (self.primary, self.secondary)

    @property
    def has_ste(self) -> bool:
        return "ste" in self.components

    @property
    def has_chwall(self) -> bool:
        return "chwall" in self.components


# --------------------------------------------------------------------------- validation

def _check_name(what: str, name: object) -> None:
    if not isinstance(name, str) or not name or name != name.strip() \
            or len(name) > _NAME_MAX or _CONTROL.search(name):
        raise AcmPolicyError(f"{what} {name!r} is not a valid name (1-{_NAME_MAX} "
                             "characters, no surrounding whitespace or control characters)")


def _check_unique(what: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise AcmPolicyError(f"duplicate {what} {n!r}")
        seen.add(n)


def _check_declared(what: str, types: Iterable[str], declared: Iterable[str],
                    kind: str) -> None:
    missing = sorted(set(types) - set(declared))
    if missing:
        raise AcmPolicyError(f"{what} references undeclared {kind} type(s): "
                             + ", ".join(repr(t) for t in missing))


def _validate(p: AcmPolicy) -> None:
    """Every rule the XML schema and ``xensec_xml2bin`` enforced, plus user.tex's
    "It is illegal to define labels including conflicting Chinese Wall types"."""
    _check_name("policy name", p.name)
    if not isinstance(p.version, str) or not _VERSION.fullmatch(p.version):
        raise AcmPolicyError(f"policy version {p.version!r} is not of the form '1.0'")
    if p.primary not in ("chwall", "ste"):
        raise AcmPolicyError(f"primary component {p.primary!r} is not 'chwall' or 'ste'")
    if p.secondary not in (None, "chwall", "ste") or p.secondary == p.primary:
        raise AcmPolicyError(f"secondary component {p.secondary!r} is not the other one "
                             f"of 'chwall'/'ste' (primary is {p.primary!r})")
    for opt in ("url", "date", "reference"):
        value = getattr(p, opt)
        if value is not None and (not isinstance(value, str) or _CONTROL.search(value)):
            raise AcmPolicyError(f"policy header {opt} {value!r} is not plain text")
    if not p.has_ste and p.ste_types:
        raise AcmPolicyError("STE types declared but the policy has no STE component")
    if not p.has_chwall and (p.cw_types or p.conflict_sets):
        raise AcmPolicyError("Chinese Wall types declared but the policy has no "
                             "Chinese Wall component")

    for t in p.ste_types:
        _check_name("STE type", t)
    _check_unique("STE type", p.ste_types)
    for t in p.cw_types:
        _check_name("Chinese Wall type", t)
    _check_unique("Chinese Wall type", p.cw_types)

    _check_unique("conflict set", (n for n, _ in p.conflict_sets))
    for cs_name, cs_types in p.conflict_sets:
        _check_name("conflict set", cs_name)
        _check_declared(f"conflict set {cs_name!r}", cs_types, p.cw_types, "Chinese Wall")
        if len(cs_types) < 2:
            raise AcmPolicyError(f"conflict set {cs_name!r} needs at least 2 types, "
                                 f"has {len(cs_types)}")

    for label, sub in p.subject_labels.items():
        _check_name("subject label", label)
        if not isinstance(sub, SubjectLabel):
            raise AcmPolicyError(f"subject label {label!r} is not a SubjectLabel")
        what = f"subject label {label!r}"
        _check_declared(what, sub.ste, p.ste_types, "STE")
        _check_declared(what, sub.cw, p.cw_types, "Chinese Wall")
        for cs_name, cs_types in p.conflict_sets:
            clash = sorted(sub.cw & cs_types)
            if len(clash) > 1:
                raise AcmPolicyError(f"{what} includes conflicting Chinese Wall types "
                                     f"{clash} of conflict set {cs_name!r}")
    for label, ste in p.object_labels.items():
        _check_name("resource label", label)
        _check_declared(f"resource label {label!r}", ste, p.ste_types, "STE")
    if p.bootstrap is not None and p.bootstrap not in p.subject_labels:
        raise AcmPolicyError(f"bootstrap label {p.bootstrap!r} is not a defined "
                             "subject label")


# --------------------------------------------------------------------------- XML

# Children each element may have, with (min, max) counts; max None = unbounded. The
# document's structure is read from this table rather than from nested ifs.
_Counts = tuple[int, int | None]
_SCHEMA: Final[dict[str, dict[str, _Counts]]] = {
    "SecurityPolicyDefinition": {
        "PolicyHeader": (1, 1), "SimpleTypeEnforcement": (0, 1),
        "ChineseWall": (0, 1), "SecurityLabelTemplate": (0, 1)},
    "PolicyHeader": {
        "PolicyName": (1, 1), "Version": (1, 1), "PolicyUrl": (0, 1), "Date": (0, 1),
        "Reference": (0, 1), "NameSpaceUrl": (0, 1)},
    "SimpleTypeEnforcement": {"SimpleTypeEnforcementTypes": (1, 1)},
    "ChineseWall": {"ChineseWallTypes": (1, 1), "ConflictSets": (0, 1)},
    "SimpleTypeEnforcementTypes": {"Type": (0, None)},
    "ChineseWallTypes": {"Type": (0, None)},
    "ConflictSets": {"Conflict": (0, None)},
    "Conflict": {"Type": (0, None)},
    "SecurityLabelTemplate": {"SubjectLabels": (0, 1), "ObjectLabels": (0, 1)},
    "SubjectLabels": {"VirtualMachineLabel": (0, None)},
    "ObjectLabels": {"ResourceLabel": (0, None)},
    "VirtualMachineLabel": {
        "Name": (1, 1), "SimpleTypeEnforcementTypes": (0, 1), "ChineseWallTypes": (0, 1)},
    "ResourceLabel": {"Name": (1, 1), "SimpleTypeEnforcementTypes": (0, 1)},
}
# Attributes each element may carry (besides xsi:*). Anything else is refused: Xen's
# ``<Name from="…">`` renames labels on update, and ignoring it would silently change
# what a running domain's label means.
_ATTRIBUTES: Final[dict[str, frozenset[str]]] = {
    "SimpleTypeEnforcement": frozenset({"priority"}),
    "ChineseWall": frozenset({"priority"}),
    "SubjectLabels": frozenset({"bootstrap"}),
    "Conflict": frozenset({"name"}),
}


def _local(elem: ET.Element, path: str) -> str:
    tag = elem.tag
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        if ns != IBM_NS:
            raise AcmPolicyError(f"unknown element {tag!r} in {path} "
                                 f"(namespace must be {IBM_NS!r} or none)")
        return name
    return tag


def _children(elem: ET.Element, name: str, path: str) -> dict[str, list[ET.Element]]:
    """Children of ``elem`` by local name, checked against :data:`_SCHEMA`."""
    allowed = _SCHEMA[name]
    for attr in elem.attrib:
        if attr.startswith(f"{{{_XSI_NS}}}") or attr in _ATTRIBUTES.get(name, ()):
            continue
        raise AcmPolicyError(f"unknown attribute {attr!r} on {path}")
    text = (elem.text or "").strip()
    if text:
        raise AcmPolicyError(f"unexpected text {text!r} in {path}")
    found: dict[str, list[ET.Element]] = {k: [] for k in allowed}
    for child in elem:
        local = _local(child, path)
        if local not in allowed:
            raise AcmPolicyError(f"unknown element <{local}> in {path}")
        tail = (child.tail or "").strip()
        if tail:
            raise AcmPolicyError(f"unexpected text {tail!r} after <{local}> in {path}")
        found[local].append(child)
    for child_name, (lo, hi) in allowed.items():
        n = len(found[child_name])
        if n < lo or (hi is not None and n > hi):
            want = f"exactly {lo}" if lo == hi else (f"at least {lo}" if hi is None
                                                     else f"at most {hi}")
            raise AcmPolicyError(f"{path} must contain {want} <{child_name}>, has {n}")
    return found


def _text(elem: ET.Element, path: str) -> str:
    """The text of a leaf element, stripped, as Xen's tools read it."""
    for attr in elem.attrib:
        raise AcmPolicyError(f"unknown attribute {attr!r} on {path}")
    if len(elem):
        raise AcmPolicyError(f"{path} must hold only text")
    return (elem.text or "").strip()


def _optional_text(kids: dict[str, list[ET.Element]], name: str, path: str) -> str | None:
    return _text(kids[name][0], f"{path}/{name}") if kids[name] else None


def _types(elem: ET.Element | None, name: str, path: str) -> list[str]:
    if elem is None:
        return []
    here = f"{path}/{name}"
    types = [_text(t, f"{here}/Type") for t in _children(elem, name, here)["Type"]]
    _check_unique(f"type in {here}", types)
    return types


def _first(kids: dict[str, list[ET.Element]], name: str) -> ET.Element | None:
    return kids[name][0] if kids[name] else None


def _refuse_dtd(data: bytes) -> None:
    """Refuse DOCTYPE (and with it every entity declaration) before building a tree.

    defusedxml is not a dependency of this project, so we do its job for the one attack
    surface the stdlib leaves open: entity expansion ("billion laughs") and external
    entities both need a DTD. A substring check catches the plain case; a streaming
    expat pass catches it in any encoding the document declares.
    """
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise AcmPolicyError("DTDs and entity declarations are not accepted in policies")

    def refuse(*_: object) -> None:
        raise AcmPolicyError("DTDs and entity declarations are not accepted in policies")

    scanner = expat.ParserCreate()
    scanner.StartDoctypeDeclHandler = refuse
    scanner.EntityDeclHandler = refuse
    scanner.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    try:
        scanner.Parse(data, True)
    except expat.ExpatError as e:
        raise AcmPolicyError(f"policy is not well-formed XML: {e}") from None


def parse_xml(text: str | bytes) -> AcmPolicy:
    """Parse and validate an sHype ``SecurityPolicyDefinition`` document."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(data) > MAX_XML_BYTES:
        raise AcmPolicyError(f"policy document is {len(data)} bytes; the limit is "
                             f"{MAX_XML_BYTES}")
    if isinstance(text, str):
        # A str has already been decoded; an encoding declaration inside it would lie.
        data = re.sub(rb"^\s*<\?xml[^>]*\?>", b"", data, count=1)
    _refuse_dtd(data)
    try:
        root = ET.fromstring(data)  # noqa: S314 - DTDs refused above
    except ET.ParseError as e:
        raise AcmPolicyError(f"policy is not well-formed XML: {e}") from None
    return _from_tree(root)


def _from_tree(root: ET.Element) -> AcmPolicy:
    top = "SecurityPolicyDefinition"
    if _local(root, "document") != top:
        raise AcmPolicyError(f"root element is <{_local(root, 'document')}>, not <{top}>")
    kids = _children(root, top, top)

    hpath = f"{top}/PolicyHeader"
    header = _children(kids["PolicyHeader"][0], "PolicyHeader", hpath)
    name = _text(header["PolicyName"][0], f"{hpath}/PolicyName")
    version = _text(header["Version"][0], f"{hpath}/Version")

    components: list[tuple[Component, bool]] = []
    ste_types: list[str] = []
    ste = _first(kids, "SimpleTypeEnforcement")
    if ste is not None:
        path = f"{top}/SimpleTypeEnforcement"
        ste_kids = _children(ste, "SimpleTypeEnforcement", path)
        ste_types = _types(ste_kids["SimpleTypeEnforcementTypes"][0],
                           "SimpleTypeEnforcementTypes", path)
        components.append(("ste", _is_primary(ste, path)))

    cw_types: list[str] = []
    conflict_sets: list[tuple[str, frozenset[str]]] = []
    cw = _first(kids, "ChineseWall")
    if cw is not None:
        path = f"{top}/ChineseWall"
        cw_kids = _children(cw, "ChineseWall", path)
        cw_types = _types(cw_kids["ChineseWallTypes"][0], "ChineseWallTypes", path)
        sets = _first(cw_kids, "ConflictSets")
        if sets is not None:
            spath = f"{path}/ConflictSets"
            for conflict in _children(sets, "ConflictSets", spath)["Conflict"]:
                cs_name = conflict.get("name")
                if cs_name is None:
                    raise AcmPolicyError(f"{spath}/Conflict has no name attribute")
                cpath = f"{spath}/Conflict[@name={cs_name!r}]"
                members = [_text(t, f"{cpath}/Type")
                           for t in _children(conflict, "Conflict", cpath)["Type"]]
                _check_unique(f"type in {cpath}", members)
                conflict_sets.append((cs_name, frozenset(members)))
        components.append(("chwall", _is_primary(cw, path)))

    primary, secondary = _order_components(components)

    subjects: dict[str, SubjectLabel] = {}
    objects: dict[str, frozenset[str]] = {}
    bootstrap: str | None = None
    template = _first(kids, "SecurityLabelTemplate")
    if template is not None:
        tpath = f"{top}/SecurityLabelTemplate"
        tkids = _children(template, "SecurityLabelTemplate", tpath)
        subj = _first(tkids, "SubjectLabels")
        if subj is not None:
            spath = f"{tpath}/SubjectLabels"
            bootstrap = subj.get("bootstrap")
            for vm in _children(subj, "SubjectLabels", spath)["VirtualMachineLabel"]:
                vpath = f"{spath}/VirtualMachineLabel"
                vkids = _children(vm, "VirtualMachineLabel", vpath)
                label = _text(vkids["Name"][0], f"{vpath}/Name")
                if label in subjects:
                    raise AcmPolicyError(f"duplicate subject label {label!r}")
                vpath = f"{vpath}[Name={label!r}]"
                subjects[label] = SubjectLabel(
                    ste=frozenset(_types(_first(vkids, "SimpleTypeEnforcementTypes"),
                                         "SimpleTypeEnforcementTypes", vpath)),
                    cw=frozenset(_types(_first(vkids, "ChineseWallTypes"),
                                        "ChineseWallTypes", vpath)))
        obj = _first(tkids, "ObjectLabels")
        if obj is not None:
            opath = f"{tpath}/ObjectLabels"
            for res in _children(obj, "ObjectLabels", opath)["ResourceLabel"]:
                rpath = f"{opath}/ResourceLabel"
                rkids = _children(res, "ResourceLabel", rpath)
                label = _text(rkids["Name"][0], f"{rpath}/Name")
                if label in objects:
                    raise AcmPolicyError(f"duplicate resource label {label!r}")
                objects[label] = frozenset(_types(
                    _first(rkids, "SimpleTypeEnforcementTypes"),
                    "SimpleTypeEnforcementTypes", f"{rpath}[Name={label!r}]"))

    return AcmPolicy(
        name=name, version=version, primary=primary, secondary=secondary,
        ste_types=tuple(ste_types), cw_types=tuple(cw_types),
        conflict_sets=tuple(conflict_sets), subject_labels=subjects,
        object_labels=objects, bootstrap=bootstrap,
        url=_optional_text(header, "PolicyUrl", hpath),
        date=_optional_text(header, "Date", hpath),
        reference=_optional_text(header, "Reference", hpath))


def _is_primary(elem: ET.Element, path: str) -> bool:
    priority = elem.get("priority")
    if priority is None:
        return False
    if priority != _PRIMARY_MARK:
        raise AcmPolicyError(f"{path} priority={priority!r}; the only value is "
                             f"{_PRIMARY_MARK!r}")
    return True


def _order_components(
        found: list[tuple[Component, bool]]) -> tuple[Component, Component | None]:
    """Primary and secondary component. Without a ``priority`` mark, Chinese Wall comes
    first, as in Xen's default ``CHWALL_AND_STE`` binary policy."""
    if not found:
        raise AcmPolicyError("policy defines neither <SimpleTypeEnforcement> nor "
                             "<ChineseWall>")
    marked = [c for c, is_primary in found if is_primary]
    if len(marked) > 1:
        raise AcmPolicyError("both components are marked PrimaryPolicyComponent")
    names = [c for c, _ in found]
    primary = marked[0] if marked else ("chwall" if "chwall" in names else names[0])
    others = [c for c in names if c != primary]
    return primary, (others[0] if others else None)


# --------------------------------------------------------------------------- compiled

def _to_json(policy: AcmPolicy) -> dict[str, Any]:
    return {
        "format": COMPILED_FORMAT,
        "format_version": COMPILED_VERSION,
        "name": policy.name,
        "version": policy.version,
        "url": policy.url,
        "date": policy.date,
        "reference": policy.reference,
        "primary": policy.primary,
        "secondary": policy.secondary,
        "ste_types": list(policy.ste_types),
        "cw_types": list(policy.cw_types),
        "conflict_sets": [{"name": n, "types": sorted(ts)} for n, ts in policy.conflict_sets],
        "subject_labels": {k: {"ste": sorted(v.ste), "cw": sorted(v.cw)}
                           for k, v in policy.subject_labels.items()},
        "object_labels": {k: sorted(v) for k, v in policy.object_labels.items()},
        "bootstrap": policy.bootstrap,
    }


def compile(policy: AcmPolicy) -> bytes:
    """The canonical compiled form DomS0 stores (Xen's ``.bin``): sorted JSON, ASCII,
    no whitespace, so equal policies compile to equal bytes."""
    return json.dumps(_to_json(policy), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False).encode("ascii")


def digest(policy: AcmPolicy) -> bytes:
    """SHA-256 of :func:`compile` — the value bound into attestation evidence and
    compared between migrating hosts."""
    return hashlib.sha256(compile(policy)).digest()


_COMPILED_KEYS: Final = frozenset(_to_json(AcmPolicy(name="x", version="1.0",
                                                       primary="ste")))


def _str_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AcmPolicyError(f"compiled policy: {what} is not a list of strings")
    return cast(list[str], value)


def _opt_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise AcmPolicyError(f"compiled policy: {what} is not a string or null")
    return value


def load_compiled(data: bytes) -> AcmPolicy:
    """Load what :func:`compile` produced. Only this format version is accepted, and
    only in canonical form, so ``sha256(data) == digest(load_compiled(data))`` always
    holds: the stored bytes and the attested digest cannot drift apart."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise AcmPolicyError(f"compiled policy is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise AcmPolicyError("compiled policy is not a JSON object")
    if doc.get("format") != COMPILED_FORMAT or doc.get("format_version") != COMPILED_VERSION \
            or isinstance(doc.get("format_version"), bool):
        raise AcmPolicyError(
            f"unsupported compiled policy format {doc.get('format')!r} version "
            f"{doc.get('format_version')!r} (expected {COMPILED_FORMAT!r} "
            f"version {COMPILED_VERSION})")
    if set(doc) != _COMPILED_KEYS:
        extra, missing = set(doc) - _COMPILED_KEYS, _COMPILED_KEYS - set(doc)
        raise AcmPolicyError(f"compiled policy keys wrong: unexpected {sorted(extra)}, "
                             f"missing {sorted(missing)}")

    sets = doc["conflict_sets"]
    if not isinstance(sets, list) or not all(
            isinstance(s, dict) and set(s) == {"name", "types"} for s in sets):
        raise AcmPolicyError("compiled policy: conflict_sets malformed")
    subjects = doc["subject_labels"]
    if not isinstance(subjects, dict) or not all(
            isinstance(v, dict) and set(v) == {"ste", "cw"} for v in subjects.values()):
        raise AcmPolicyError("compiled policy: subject_labels malformed")
    objects = doc["object_labels"]
    if not isinstance(objects, dict):
        raise AcmPolicyError("compiled policy: object_labels malformed")
    for key in ("name", "version", "primary"):
        if not isinstance(doc[key], str):
            raise AcmPolicyError(f"compiled policy: {key} is not a string")

    policy = AcmPolicy(
        name=doc["name"], version=doc["version"],
        # Whether these name real components is checked by AcmPolicy's validation.
        primary=doc["primary"],
        secondary=cast("Component | None", _opt_str(doc["secondary"], "secondary")),
        ste_types=tuple(_str_list(doc["ste_types"], "ste_types")),
        cw_types=tuple(_str_list(doc["cw_types"], "cw_types")),
        conflict_sets=tuple(
            (s["name"], frozenset(_str_list(s["types"], f"conflict set {s['name']!r}")))
            for s in sets),
        subject_labels={k: SubjectLabel(ste=frozenset(_str_list(v["ste"], k)),
                                        cw=frozenset(_str_list(v["cw"], k)))
                        for k, v in subjects.items()},
        object_labels={k: frozenset(_str_list(v, k)) for k, v in objects.items()},
        bootstrap=_opt_str(doc["bootstrap"], "bootstrap"),
        url=_opt_str(doc["url"], "url"), date=_opt_str(doc["date"], "date"),
        reference=_opt_str(doc["reference"], "reference"))
    if compile(policy) != bytes(data):
        raise AcmPolicyError("compiled policy is not in canonical form (re-compile it "
                             "from its XML source)")
    return policy


# --------------------------------------------------------------------------- summary

def describe(policy: AcmPolicy) -> str:
    """A human summary for ``vtpmctl policy show``."""
    def types(ts: Iterable[str]) -> str:
        listed = sorted(ts)
        return ", ".join(listed) if listed else "(none)"

    order = " then ".join({"chwall": "Chinese Wall", "ste": "STE"}[c]
                          for c in policy.components)
    lines = [f"policy {policy.name} version {policy.version}",
             f"  digest     sha256:{digest(policy).hex()}",
             f"  components {order}"]
    for key in ("url", "date", "reference"):
        value = getattr(policy, key)
        if value:
            lines.append(f"  {key:<10} {value}")
    if policy.has_ste:
        lines.append(f"  STE types ({len(policy.ste_types)}): {types(policy.ste_types)}")
    if policy.has_chwall:
        lines.append(f"  Chinese Wall types ({len(policy.cw_types)}): "
                     f"{types(policy.cw_types)}")
        for cs_name, cs_types in policy.conflict_sets:
            lines.append(f"    conflict set {cs_name}: at most one of {types(cs_types)}")
    lines.append(f"  subject labels ({len(policy.subject_labels)})"
                 + (f", bootstrap {policy.bootstrap}" if policy.bootstrap else ""))
    for label, sub in policy.subject_labels.items():
        lines.append(f"    {label}: ste {types(sub.ste)}"
                     + (f"; cw {types(sub.cw)}" if policy.has_chwall else ""))
    lines.append(f"  resource labels ({len(policy.object_labels)})")
    for label, ste in policy.object_labels.items():
        lines.append(f"    {label}: ste {types(ste)}")
    return "\n".join(lines)
