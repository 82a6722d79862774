"""The sHype ACM engine: policy parsing and validation, the compiled form and its digest,
STE and Chinese Wall decisions, and the replay that accepts or rejects a policy reload."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

from domS0.security.acm import (
    UNLABELED,
    AcmPolicy,
    AcmPolicyError,
    AcmStateError,
    ChineseWall,
    Decision,
    RunningDomain,
    SubjectLabel,
    check_reload,
    combine,
    compile,
    describe,
    digest,
    load_compiled,
    parse_xml,
    ste_permits,
    ste_permits_domains,
)
from domS0.security.acm.policy import MAX_XML_BYTES

FIXTURES = Path(__file__).parent / "fixtures" / "acm"


@pytest.fixture(scope="module")
def client() -> AcmPolicy:
    return parse_xml((FIXTURES / "client_v1.xml").read_text())


# A small policy whose pieces the validation tests swap out one at a time.
SMALL = """<?xml version="1.0"?>
<SecurityPolicyDefinition>
  <PolicyHeader><PolicyName>small</PolicyName><Version>1.0</Version></PolicyHeader>
  <SimpleTypeEnforcement><SimpleTypeEnforcementTypes>
    <Type>mgmt</Type><Type>red</Type><Type>blue</Type>
  </SimpleTypeEnforcementTypes></SimpleTypeEnforcement>
  <ChineseWall>
    <ChineseWallTypes><Type>red</Type><Type>blue</Type></ChineseWallTypes>
    <ConflictSets>
      <Conflict name="colours"><Type>red</Type><Type>blue</Type></Conflict>
    </ConflictSets>
  </ChineseWall>
  <SecurityLabelTemplate>
    <SubjectLabels bootstrap="mgmt">
      <VirtualMachineLabel><Name>mgmt</Name>
        <SimpleTypeEnforcementTypes><Type>mgmt</Type><Type>red</Type><Type>blue</Type></SimpleTypeEnforcementTypes>
      </VirtualMachineLabel>
      <VirtualMachineLabel><Name>red</Name>
        <SimpleTypeEnforcementTypes><Type>red</Type></SimpleTypeEnforcementTypes>
        <ChineseWallTypes><Type>red</Type></ChineseWallTypes>
      </VirtualMachineLabel>
      <VirtualMachineLabel><Name>blue</Name>
        <SimpleTypeEnforcementTypes><Type>blue</Type></SimpleTypeEnforcementTypes>
        <ChineseWallTypes><Type>blue</Type></ChineseWallTypes>
      </VirtualMachineLabel>
    </SubjectLabels>
    <ObjectLabels>
      <ResourceLabel><Name>red.disk</Name>
        <SimpleTypeEnforcementTypes><Type>red</Type></SimpleTypeEnforcementTypes>
      </ResourceLabel>
    </ObjectLabels>
  </SecurityLabelTemplate>
</SecurityPolicyDefinition>
"""


def small(*edits: tuple[str, str]) -> str:
    """SMALL with each (old, new) applied; ``old`` must occur exactly once, so a test
    cannot pass because its edit silently did nothing."""
    text = SMALL
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


# ------------------------------------------------------------------------ parsing

def test_parses_a_realistic_policy_with_namespace(client: AcmPolicy) -> None:
    assert client.name == "example.client_v1"
    assert client.version == "1.0"
    assert client.date == "2024-05-01"
    assert client.url == "https://policies.example.org/acm/client_v1.xml"
    assert (client.primary, client.secondary) == ("chwall", "ste")
    assert client.ste_types == ("A-Bank", "AutoCorp", "B-Bank", "Insurance",
                                "SystemManagement", UNLABELED)
    assert client.cw_types == ("A-Bank", "AutoCorp", "B-Bank", "Insurance",
                               "SystemManagement")
    assert client.conflict_sets == (
        ("auto-vs-insurer", frozenset({"AutoCorp", "Insurance"})),
        ("banks", frozenset({"A-Bank", "B-Bank"})))
    assert client.bootstrap == "SystemManagement"
    assert client.subject_labels["A-Bank-Auto"] == SubjectLabel(
        ste=frozenset({"A-Bank", "AutoCorp"}), cw=frozenset({"A-Bank", "AutoCorp"}))
    assert client.subject_labels[UNLABELED] == SubjectLabel(frozenset({UNLABELED}))
    assert client.object_labels["banks.iso"] == frozenset({"A-Bank", "B-Bank"})
    assert len(client.subject_labels) == 7 and len(client.object_labels) == 6


def test_same_policy_without_namespace_reordered_is_equal(client: AcmPolicy) -> None:
    plain = parse_xml((FIXTURES / "client_v1_plain.xml").read_bytes())
    assert plain == client
    assert compile(plain) == compile(client)
    assert digest(plain) == digest(client)


def test_labels_are_read_only(client: AcmPolicy) -> None:
    with pytest.raises(TypeError):
        client.subject_labels["new"] = SubjectLabel(frozenset())  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        client.name = "other"  # type: ignore[misc]


def test_priority_attribute_makes_ste_primary() -> None:
    policy = parse_xml(small(("<SimpleTypeEnforcement>",
                              '<SimpleTypeEnforcement priority="PrimaryPolicyComponent">')))
    assert (policy.primary, policy.secondary) == ("ste", "chwall")
    assert policy.components == ("ste", "chwall")


def test_priority_on_chinese_wall_and_default_agree() -> None:
    marked = parse_xml(small(("<ChineseWall>", '<ChineseWall priority="PrimaryPolicyComponent">')))
    assert (marked.primary, marked.secondary) == ("chwall", "ste")
    assert marked == parse_xml(SMALL)


def test_ste_only_policy_has_no_secondary() -> None:
    text = small(
        (SMALL[SMALL.index("  <ChineseWall>"):SMALL.index("  <SecurityLabelTemplate>")], ""),
        ("<ChineseWallTypes><Type>red</Type></ChineseWallTypes>", ""),
        ("<ChineseWallTypes><Type>blue</Type></ChineseWallTypes>", ""))
    policy = parse_xml(text)
    assert (policy.primary, policy.secondary) == ("ste", None)
    assert not policy.has_chwall and policy.conflict_sets == ()


VALIDATION_ERRORS = {
    "label with undeclared STE type": (
        [("<Name>red</Name>\n        <SimpleTypeEnforcementTypes><Type>red</Type>",
          "<Name>red</Name>\n        <SimpleTypeEnforcementTypes><Type>green</Type>")],
        r"subject label 'red' references undeclared STE type\(s\): 'green'"),
    "label with undeclared CW type": (
        [("<ChineseWallTypes><Type>red</Type></ChineseWallTypes>",
          "<ChineseWallTypes><Type>green</Type></ChineseWallTypes>")],
        r"subject label 'red' references undeclared Chinese Wall type\(s\): 'green'"),
    "resource label with undeclared type": (
        [("<Name>red.disk</Name>\n        <SimpleTypeEnforcementTypes><Type>red</Type>",
          "<Name>red.disk</Name>\n        <SimpleTypeEnforcementTypes><Type>pink</Type>")],
        r"resource label 'red.disk' references undeclared STE type\(s\): 'pink'"),
    "duplicate STE type": (
        [("<Type>mgmt</Type><Type>red</Type><Type>blue</Type>\n",
          "<Type>mgmt</Type><Type>red</Type><Type>blue</Type><Type>red</Type>\n")],
        r"duplicate type in .*SimpleTypeEnforcementTypes 'red'"),
    "duplicate subject label": (
        [("<Name>blue</Name>", "<Name>red</Name>")],
        r"duplicate subject label 'red'"),
    "duplicate resource label": (
        [("</ObjectLabels>", "<ResourceLabel><Name>red.disk</Name></ResourceLabel>"
                             "</ObjectLabels>")],
        r"duplicate resource label 'red.disk'"),
    "duplicate conflict set": (
        [("</ConflictSets>", '<Conflict name="colours"><Type>blue</Type><Type>red</Type>'
                             "</Conflict></ConflictSets>")],
        r"duplicate conflict set 'colours'"),
    "conflict set with undeclared type": (
        [('<Conflict name="colours"><Type>red</Type>',
          '<Conflict name="colours"><Type>mgmt</Type>')],
        r"conflict set 'colours' references undeclared Chinese Wall type\(s\): 'mgmt'"),
    "conflict set with one type": (
        [('<Conflict name="colours"><Type>red</Type><Type>blue</Type>',
          '<Conflict name="colours"><Type>red</Type>')],
        r"conflict set 'colours' needs at least 2 types, has 1"),
    "conflict set without a name": (
        [('<Conflict name="colours">', "<Conflict>")], r"has no name attribute"),
    "label with conflicting CW types": (
        [("<ChineseWallTypes><Type>red</Type></ChineseWallTypes>",
          "<ChineseWallTypes><Type>red</Type><Type>blue</Type></ChineseWallTypes>")],
        r"subject label 'red' includes conflicting Chinese Wall types \['blue', 'red'\] "
        r"of conflict set 'colours'"),
    "bootstrap label missing": (
        [('bootstrap="mgmt"', 'bootstrap="dom0"')],
        r"bootstrap label 'dom0' is not a defined subject label"),
    "unknown element": (
        [("<PolicyName>small</PolicyName>", "<PolicyName>small</PolicyName><Colour/>")],
        r"unknown element <Colour> in SecurityPolicyDefinition/PolicyHeader"),
    "unknown top-level element": (
        [("</SecurityPolicyDefinition>", "<Flask/></SecurityPolicyDefinition>")],
        r"unknown element <Flask> in SecurityPolicyDefinition"),
    "unknown attribute (label rename)": (
        [("<Name>blue</Name>", '<Name from="navy">blue</Name>')],
        r"unknown attribute 'from'"),
    "both components primary": (
        [("<SimpleTypeEnforcement>", '<SimpleTypeEnforcement priority="PrimaryPolicyComponent">'),
         ("<ChineseWall>", '<ChineseWall priority="PrimaryPolicyComponent">')],
        r"both components are marked PrimaryPolicyComponent"),
    "bad priority value": (
        [("<ChineseWall>", '<ChineseWall priority="Secondary">')],
        r"priority='Secondary'"),
    "missing policy name": (
        [("<PolicyName>small</PolicyName>", "")],
        r"PolicyHeader must contain exactly 1 <PolicyName>, has 0"),
    "two headers": (
        [("</SecurityPolicyDefinition>",
          "<PolicyHeader><PolicyName>b</PolicyName><Version>1.0</Version></PolicyHeader>"
          "</SecurityPolicyDefinition>")],
        r"must contain exactly 1 <PolicyHeader>, has 2"),
    "bad version": (
        [("<Version>1.0</Version>", "<Version>one</Version>")],
        r"policy version 'one' is not of the form '1.0'"),
    "stray text": (
        [("<SubjectLabels bootstrap=\"mgmt\">", "<SubjectLabels bootstrap=\"mgmt\">oops")],
        r"unexpected text 'oops'"),
    "empty type name": (
        [("<Type>mgmt</Type><Type>red</Type><Type>blue</Type>\n",
          "<Type>mgmt</Type><Type> </Type><Type>red</Type><Type>blue</Type>\n")],
        r"STE type '' is not a valid name"),
    "foreign namespace": (
        [("<SecurityLabelTemplate>",
          '<SecurityLabelTemplate xmlns="http://example.org/other">')],
        r"unknown element '\{http://example.org/other\}SecurityLabelTemplate'"),
}


@pytest.mark.parametrize("case", sorted(VALIDATION_ERRORS))
def test_validation_errors(case: str) -> None:
    edits, message = VALIDATION_ERRORS[case]
    with pytest.raises(AcmPolicyError, match=message):
        parse_xml(small(*edits))


def test_the_small_policy_itself_is_valid() -> None:
    # Otherwise every validation test above could be failing for the wrong reason.
    policy = parse_xml(SMALL)
    assert set(policy.subject_labels) == {"mgmt", "red", "blue"}


def test_neither_component_is_refused() -> None:
    with pytest.raises(AcmPolicyError, match="neither <SimpleTypeEnforcement> nor <ChineseWall>"):
        parse_xml("<SecurityPolicyDefinition><PolicyHeader><PolicyName>x</PolicyName>"
                  "<Version>1.0</Version></PolicyHeader></SecurityPolicyDefinition>")


def test_wrong_root_is_refused() -> None:
    with pytest.raises(AcmPolicyError, match="root element is <policy>"):
        parse_xml("<policy/>")


def test_malformed_xml_is_refused() -> None:
    with pytest.raises(AcmPolicyError, match="not well-formed"):
        parse_xml("<SecurityPolicyDefinition><PolicyHeader>")


def test_construction_validates_without_xml() -> None:
    with pytest.raises(AcmPolicyError, match="includes conflicting Chinese Wall types"):
        AcmPolicy(name="code", version="2.1", primary="chwall", secondary="ste",
                  ste_types=("a",), cw_types=("x", "y"),
                  conflict_sets=(("xy", frozenset({"x", "y"})),),
                  subject_labels={"both": SubjectLabel(frozenset({"a"}),
                                                       frozenset({"x", "y"}))})


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE SecurityPolicyDefinition [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
]>
<SecurityPolicyDefinition><PolicyHeader><PolicyName>&lol2;</PolicyName>
<Version>1.0</Version></PolicyHeader></SecurityPolicyDefinition>
"""


def test_dtd_and_entities_are_refused() -> None:
    with pytest.raises(AcmPolicyError, match="DTDs and entity declarations"):
        parse_xml(BILLION_LAUGHS)


def test_dtd_is_refused_in_any_encoding() -> None:
    # The substring check cannot see UTF-16; the expat pre-scan must.
    doc = BILLION_LAUGHS.replace('version="1.0"?>', 'version="1.0" encoding="UTF-16"?>')
    data = doc.encode("utf-16")
    assert b"<!DOCTYPE" not in data
    with pytest.raises(AcmPolicyError, match="DTDs and entity declarations"):
        parse_xml(data)


def test_external_entity_is_refused() -> None:
    doc = ('<!DOCTYPE x SYSTEM "file:///etc/passwd"><SecurityPolicyDefinition/>')
    with pytest.raises(AcmPolicyError, match="DTDs"):
        parse_xml(doc)


def test_oversized_document_is_refused() -> None:
    padding = "<!--" + "x" * MAX_XML_BYTES + "-->"
    with pytest.raises(AcmPolicyError, match="limit is"):
        parse_xml(padding + SMALL.split("?>", 1)[1])


# ------------------------------------------------------------------------ compiled form

def test_compile_load_round_trip(client: AcmPolicy) -> None:
    blob = compile(client)
    assert load_compiled(blob) == client
    assert json.loads(blob)["format_version"] == 1
    assert digest(client) == hashlib.sha256(blob).digest()
    assert digest(load_compiled(blob)) == digest(client)


def test_digest_is_stable_for_the_same_document(client: AcmPolicy) -> None:
    again = parse_xml((FIXTURES / "client_v1.xml").read_text())
    assert digest(again) == digest(client)
    assert len(digest(client)) == 32


def test_digest_changes_when_a_type_changes() -> None:
    changed = small(("<ChineseWallTypes><Type>red</Type><Type>blue</Type></ChineseWallTypes>",
                     "<ChineseWallTypes><Type>red</Type><Type>blue</Type><Type>grey</Type>"
                     "</ChineseWallTypes>"))
    assert digest(parse_xml(changed)) != digest(parse_xml(SMALL))


def test_digest_changes_when_a_label_gains_a_type() -> None:
    changed = small(("<ChineseWallTypes><Type>blue</Type></ChineseWallTypes>", ""))
    assert digest(parse_xml(changed)) != digest(parse_xml(SMALL))


def test_load_refuses_other_versions(client: AcmPolicy) -> None:
    doc = json.loads(compile(client))
    doc["format_version"] = 2
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(AcmPolicyError, match="unsupported compiled policy format"):
        load_compiled(blob)


def test_load_refuses_other_formats() -> None:
    with pytest.raises(AcmPolicyError, match="unsupported compiled policy format"):
        load_compiled(b'{"format":"xen-acm-bin","format_version":1}')
    with pytest.raises(AcmPolicyError, match="not JSON"):
        load_compiled(b"\x00\x01ACM")


def test_load_refuses_non_canonical_bytes(client: AcmPolicy) -> None:
    pretty = json.dumps(json.loads(compile(client)), indent=2, sort_keys=True).encode()
    with pytest.raises(AcmPolicyError, match="not in canonical form"):
        load_compiled(pretty)


def test_load_validates_the_policy_rules(client: AcmPolicy) -> None:
    doc = json.loads(compile(client))
    doc["subject_labels"]["A-Bank"]["cw"] = ["A-Bank", "B-Bank"]
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(AcmPolicyError, match="conflicting Chinese Wall types"):
        load_compiled(blob)


def test_load_refuses_wrong_shapes(client: AcmPolicy) -> None:
    doc = json.loads(compile(client))
    doc["object_labels"]["banks.iso"] = "A-Bank"
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(AcmPolicyError, match="not a list of strings"):
        load_compiled(blob)
    doc = json.loads(compile(client))
    doc["extra"] = 1
    with pytest.raises(AcmPolicyError, match="unexpected \\['extra'\\]"):
        load_compiled(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def test_describe_names_the_policy_and_its_rules(client: AcmPolicy) -> None:
    text = describe(client)
    assert "policy example.client_v1 version 1.0" in text
    assert f"sha256:{digest(client).hex()}" in text
    assert "components Chinese Wall then STE" in text
    assert "conflict set banks: at most one of A-Bank, B-Bank" in text
    assert "bootstrap SystemManagement" in text
    assert "A-Bank-Auto: ste A-Bank, AutoCorp; cw A-Bank, AutoCorp" in text


# ------------------------------------------------------------------------ STE

def test_ste_permits_when_labels_share_a_type(client: AcmPolicy) -> None:
    d = ste_permits(client, "A-Bank", "A-Bank.disk")
    assert d == Decision(True, "STE: dom label 'A-Bank' and res label 'A-Bank.disk' "
                               "share type(s) A-Bank")
    assert ste_permits(client, "B-Bank", "banks.iso").permitted
    assert ste_permits(client, "A-Bank-Auto", "AutoCorp.disk").permitted


def test_ste_denies_when_labels_share_nothing(client: AcmPolicy) -> None:
    d = ste_permits(client, "A-Bank", "B-Bank.disk")
    assert d == Decision(False, "STE: dom label 'A-Bank' and res label 'B-Bank.disk' "
                                "share no type")
    # Dom0's label holds every STE type, so it shares with each resource.
    assert ste_permits(client, "SystemManagement", "B-Bank.disk").permitted
    assert not ste_permits(client, "Insurance", "banks.iso").permitted


def test_ste_unlabelled_falls_back_to_unlabeled_label(client: AcmPolicy) -> None:
    assert ste_permits(client, None, None).permitted
    assert ste_permits(client, None, UNLABELED).permitted
    assert not ste_permits(client, None, "A-Bank.disk").permitted
    assert not ste_permits(client, "A-Bank", None).permitted


def test_ste_unlabelled_denied_without_unlabeled_label() -> None:
    policy = parse_xml(SMALL)
    d = ste_permits(policy, None, "red.disk")
    assert not d.permitted
    assert "no label and policy 'small' defines no __UNLABELED__" in d.rule


def test_ste_undefined_label_denied(client: AcmPolicy) -> None:
    d = ste_permits(client, "C-Bank", "A-Bank.disk")
    assert d == Decision(False, "STE: dom label 'C-Bank' is not defined in policy "
                                "'example.client_v1'")
    assert not ste_permits(client, "A-Bank", "C-Bank.disk").permitted


def test_ste_between_domains(client: AcmPolicy) -> None:
    assert ste_permits_domains(client, "A-Bank", "A-Bank-Auto").permitted
    assert ste_permits_domains(client, "SystemManagement", "Insurance").permitted
    assert not ste_permits_domains(client, "A-Bank", "B-Bank").permitted
    # A domain label is not a resource label: 'A-Bank.disk' is not a domain.
    assert not ste_permits_domains(client, "A-Bank", "A-Bank.disk").permitted


# ------------------------------------------------------------------------ Chinese Wall

def test_two_domains_in_one_conflict_set_cannot_both_run(client: AcmPolicy) -> None:
    wall = ChineseWall(client)
    assert wall.check_start("A-Bank").permitted
    wall.started("A-Bank")
    d = wall.check_start("B-Bank")
    assert d == Decision(False, "ChWall: dom label 'B-Bank' type 'B-Bank' conflicts with "
                                "running type 'A-Bank' (conflict set 'banks')")
    wall.stopped("A-Bank")
    assert wall.check_start("B-Bank").permitted
    assert wall.running_types == {} and wall.conflict_aggregate == {}


def test_same_type_may_run_twice_and_the_wall_holds_until_both_stop(
        client: AcmPolicy) -> None:
    wall = ChineseWall(client, ["A-Bank", "A-Bank"])
    assert wall.running_types == {"A-Bank": 2}
    assert wall.conflict_aggregate == {"B-Bank": 2}
    wall.stopped("A-Bank")
    assert not wall.check_start("B-Bank").permitted
    wall.stopped("A-Bank")
    assert wall.check_start("B-Bank").permitted


def test_counts_with_a_multi_type_label(client: AcmPolicy) -> None:
    wall = ChineseWall(client)
    wall.started("A-Bank-Auto")
    assert wall.running_types == {"A-Bank": 1, "AutoCorp": 1}
    assert wall.conflict_aggregate == {"B-Bank": 1, "Insurance": 1}
    assert not wall.check_start("B-Bank").permitted
    d = wall.check_start("Insurance")
    assert not d.permitted and "conflict set 'auto-vs-insurer'" in d.rule
    assert wall.check_start("AutoCorp").permitted
    wall.started("AutoCorp")
    assert wall.running_types == {"A-Bank": 1, "AutoCorp": 2}
    assert wall.conflict_aggregate == {"B-Bank": 1, "Insurance": 2}

    wall.stopped("A-Bank-Auto")
    assert wall.check_start("B-Bank").permitted          # the bank half has gone
    assert not wall.check_start("Insurance").permitted   # AutoCorp still runs
    wall.stopped("AutoCorp")
    assert wall.running_types == {} and wall.conflict_aggregate == {}
    assert wall.check_start("Insurance").permitted


def test_labels_without_conflicts_always_start(client: AcmPolicy) -> None:
    wall = ChineseWall(client, ["A-Bank", "Insurance"])
    assert wall.check_start("SystemManagement").permitted
    assert wall.check_start(None).permitted            # __UNLABELED__, no CW types
    d = wall.check_start("C-Bank")
    assert not d.permitted and "'C-Bank' is not defined" in d.rule


def test_stopping_what_never_started_raises_and_changes_nothing(client: AcmPolicy) -> None:
    wall = ChineseWall(client, ["A-Bank"])
    with pytest.raises(AcmStateError, match="no running domain with label 'B-Bank'"):
        wall.stopped("B-Bank")
    with pytest.raises(AcmStateError, match="no running domain with label 'A-Bank-Auto'"):
        wall.stopped("A-Bank-Auto")   # A-Bank runs, but AutoCorp does not
    assert wall.running_types == {"A-Bank": 1}
    assert wall.conflict_aggregate == {"B-Bank": 1}
    with pytest.raises(AcmStateError, match="not defined"):
        wall.started("C-Bank")


def test_rebuilding_a_running_set_that_breaks_the_wall_raises(client: AcmPolicy) -> None:
    with pytest.raises(AcmStateError, match="already violate"):
        ChineseWall(client, ["A-Bank", "SystemManagement", "B-Bank"])


# ------------------------------------------------------------------------ combine

def test_combine_needs_both_and_reports_the_first_denial() -> None:
    yes1, yes2 = Decision(True, "ChWall: ok"), Decision(True, "STE: ok")
    no1, no2 = Decision(False, "ChWall: no"), Decision(False, "STE: no")
    assert combine(no1, no2) == no1
    assert combine(no1, yes2) == no1
    assert combine(yes1, no2) == no2
    both = combine(yes1, yes2)
    assert both.permitted and both.rule == "ChWall: ok; STE: ok"


# ------------------------------------------------------------------------ policy reload

RUNNING = [
    RunningDomain("dom0", "SystemManagement", "tpm0", "SystemManagement"),
    RunningDomain("vm-a", "A-Bank", "/images/a.img", "A-Bank.disk"),
    RunningDomain("vm-a", "A-Bank", "/iso/banks.iso", "banks.iso"),
    RunningDomain("vm-ins", "Insurance"),
    RunningDomain("legacy", None, "/images/old.img", None),
]


def test_reload_of_a_compatible_policy_is_accepted(client: AcmPolicy) -> None:
    assert check_reload(client, RUNNING) == []
    plain = parse_xml((FIXTURES / "client_v1_plain.xml").read_text())
    assert check_reload(plain, RUNNING) == []


def test_reload_reports_a_removed_label(client: AcmPolicy) -> None:
    labels = {k: v for k, v in client.subject_labels.items() if k != "Insurance"}
    new = dataclasses.replace(client, subject_labels=labels)
    assert check_reload(new, RUNNING) == [
        "domain 'vm-ins': dom label 'Insurance' is not defined in policy "
        "'example.client_v1'"]


def test_reload_reports_a_removed_resource_label(client: AcmPolicy) -> None:
    objects = {k: v for k, v in client.object_labels.items() if k != "banks.iso"}
    new = dataclasses.replace(client, object_labels=objects)
    assert check_reload(new, RUNNING) == [
        "domain 'vm-a' resource '/iso/banks.iso': res label 'banks.iso' is not defined "
        "in policy 'example.client_v1'"]


def test_reload_reports_a_running_pair_now_in_conflict(client: AcmPolicy) -> None:
    new = dataclasses.replace(client, conflict_sets=(
        *client.conflict_sets, ("bank-vs-insurer", frozenset({"A-Bank", "Insurance"}))))
    assert check_reload(new, RUNNING) == [
        "domain 'vm-ins' cannot run beside 'vm-a': ChWall: dom label 'Insurance' type "
        "'Insurance' conflicts with running type 'A-Bank' (conflict set 'bank-vs-insurer')"]


def test_reload_reports_ste_no_longer_sharing(client: AcmPolicy) -> None:
    objects = dict(client.object_labels)
    objects["A-Bank.disk"] = frozenset({"B-Bank"})
    new = dataclasses.replace(client, object_labels=objects)
    assert check_reload(new, RUNNING) == [
        "domain 'vm-a' resource '/images/a.img': STE: dom label 'A-Bank' and res label "
        "'A-Bank.disk' share no type"]


def test_reload_reports_unlabelled_domains_when_unlabeled_goes(client: AcmPolicy) -> None:
    subjects = {k: v for k, v in client.subject_labels.items() if k != UNLABELED}
    new = dataclasses.replace(client, subject_labels=subjects)
    problems = check_reload(new, RUNNING)
    assert problems == ["domain 'legacy': dom has no label and policy 'example.client_v1' "
                        "defines no __UNLABELED__"]


def test_reload_reports_every_problem(client: AcmPolicy) -> None:
    running = [*RUNNING, RunningDomain("vm-b1", "B-Bank"), RunningDomain("vm-b2", "B-Bank"),
               RunningDomain("ghost", "C-Bank", "/x.img", "nowhere")]
    problems = check_reload(client, running)
    assert len(problems) == 4, problems
    assert [re.match(r"domain '([^']+)'", p).group(1) for p in problems] == [  # type: ignore[union-attr]
        "vm-b1", "vm-b2", "ghost", "ghost"]
    assert "cannot run beside 'vm-a'" in problems[0]


def test_reload_reports_a_domain_listed_under_two_labels(client: AcmPolicy) -> None:
    running = [RunningDomain("vm-a", "A-Bank"),
               RunningDomain("vm-a", "AutoCorp", "d", "AutoCorp.disk")]
    assert check_reload(client, running) == [
        "domain 'vm-a' is listed with labels 'A-Bank' and 'AutoCorp'"]
