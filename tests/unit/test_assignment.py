"""Chat assignment core: the rules document is checked with a problem per mistake, and a conversation is
decided from the contact's segments at that moment: first rule in order wins, groups rotate, unknown
contacts and repeats are handled, and time-based flips that were due happen first."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from engine.assignment import (
    ASSIGNED,
    CONVERSATION_IDS,
    DUPLICATE,
    NO_RULE_MATCHED,
    UNASSIGNED,
    UNKNOWN_CONTACT,
    AssignmentBook,
    Conversation,
    InvalidAssignment,
    assign_conversation,
    parse_assignment,
)
from engine.membership import ENTERED, Change, RecordState, apply_change
from engine.registry import SegmentRegistry
from engine.rules import catalog_for
from engine.workspaces import Workspaces

NOW = 1_790_000_000_000
DAY = 86_400_000


def registry(**rules: dict[str, Any]) -> SegmentRegistry:
    reg = SegmentRegistry(Workspaces({("acme", "contact"): catalog_for("contact")}))
    for version, (sid, rule) in enumerate(rules.items(), start=1):
        reg.apply({"type": "segment.defined", "workspace": "acme",
                   "data": {"id": sid, "object_type": "contact", "name": sid, "version": version, "rule": rule}})
    return reg


def eq(field: str, value: Any) -> dict[str, Any]:
    return {"combinator": "and", "rules": [{"field": field, "operator": "=", "value": value}]}


REG = registry(pl=eq("country", "PL"), vip=eq("status", "vip"), de=eq("country", "DE"))
SEGMENTS = REG.segment_set("acme", "contact")


def contact(version: int = 1, **fields: Any) -> RecordState:
    outcome = apply_change(None, Change("upsert", "contact", "c1", version, fields), SEGMENTS, NOW)
    assert outcome.state is not None
    return outcome.state


def rules(*rule_list: dict[str, Any], groups: dict[str, list[str]] | None = None, version: int = 7) -> Any:
    return parse_assignment({"rules": list(rule_list), "groups": groups or {}}, "acme", version, SEGMENTS.segments)


def to_member(rule_id: str, segment: str, member: str) -> dict[str, Any]:
    return {"id": rule_id, "segment_id": segment, "assign_to": {"member": member}}


def to_group(rule_id: str, segment: str, group: str) -> dict[str, Any]:
    return {"id": rule_id, "segment_id": segment, "assign_to": {"group": group}}


def conv(cid: str = "conv-1") -> Conversation:
    return Conversation(cid, "c1", None)


# ---- the rules document --------------------------------------------------------------------------


def test_a_valid_document_round_trips() -> None:
    doc = {"rules": [to_member("r1", "pl", "ada"), to_group("r2", "vip", "sales")], "groups": {"sales": ["bob", "eve"]}}
    parsed = parse_assignment(doc, "acme", 5, SEGMENTS.segments)
    assert parsed.to_json() == {"version": 5, **doc}
    assert parsed.using("pl") == ["r1"] and parsed.using("de") == []


@pytest.mark.parametrize("doc, code, path", [
    ({"rules": [to_member("r1", "nope", "ada")]}, "unknown_segment", "/rules/0/segment_id"),
    ({"rules": [to_group("r1", "pl", "ghosts")]}, "unknown_group", "/rules/0/assign_to/group"),
    ({"rules": [to_member("r1", "pl", "ada"), to_member("r1", "de", "bob")]}, "duplicate_rule_id", "/rules/1/id"),
    ({"rules": [{"id": "r1", "segment_id": "pl", "assign_to": {"member": "ada", "group": "g"}}]},
     "invalid_assignee", "/rules/0/assign_to"),
    ({"rules": [{"id": "r1", "segment_id": "pl", "assign_to": {"team": "x"}}]}, "invalid_assignee", "/rules/0/assign_to"),
    ({"rules": [to_member("r1", "pl", "a b")]}, "invalid_assignee", "/rules/0/assign_to/member"),
    ({"rules": [to_member("", "pl", "ada")]}, "invalid_rule_id", "/rules/0/id"),
    ({"rules": [{**to_member("r1", "pl", "ada"), "priority": 1}]}, "unknown_attribute", "/rules/0/priority"),
    ({"rules": "pl→ada"}, "invalid_rules", "/rules"),
    ({"rules": [], "groups": {"sales": []}}, "invalid_group", "/groups/sales"),
    ({"rules": [], "groups": {"sales": ["bob", "bob"]}}, "invalid_group", "/groups/sales"),
    ({"rules": [], "groups": {"a/b": ["bob"]}}, "invalid_group", "/groups/a/b"),
    ({"rules": [], "teams": {}}, "unknown_attribute", "/teams"),
])
def test_every_mistake_is_named_with_its_path(doc: dict[str, Any], code: str, path: str) -> None:
    with pytest.raises(InvalidAssignment) as caught:
        parse_assignment(doc, "acme", 1, SEGMENTS.segments)
    assert (code, path) in [(p.code, p.path) for p in caught.value.problems]


def test_a_worker_accepts_a_rule_whose_segment_went_away_and_it_never_matches() -> None:
    stored = parse_assignment({"rules": [to_member("r1", "gone", "ada"), to_member("r2", "pl", "bob")]}, "acme", 1)
    decision = assign_conversation(contact(country="PL"), conv(), SEGMENTS, stored, {}, NOW).decision
    assert decision is not None and decision.rule is not None and decision.rule.id == "r2"


def test_the_book_keeps_the_newest_version_per_workspace() -> None:
    book = AssignmentBook()
    assert book.apply("acme", {"version": 2, "rules": [to_member("r1", "pl", "ada")], "groups": {}})
    assert not book.apply("acme", {"version": 1, "rules": [], "groups": {}})
    assert book.version("acme") == 2 and book.version("other") == 0 and book.get("other") is None


# ---- deciding ------------------------------------------------------------------------------------


def test_a_member_of_s_is_assigned_by_rule_s() -> None:
    outcome = assign_conversation(contact(country="PL"), conv(), SEGMENTS,
                                  rules(to_member("r-de", "de", "bob"), to_member("r-pl", "pl", "ada")), {}, NOW)
    d = outcome.decision
    assert d is not None and d.event_type == ASSIGNED and d.rule is not None
    assert (d.rule.id, d.member, d.group, d.rules_version) == ("r-pl", "ada", None, 7)
    assert outcome.state is not None and outcome.state.conversations == ["conv-1"]


def test_rule_order_decides_between_segments_the_contact_is_in() -> None:
    state = contact(country="PL", status="vip")
    first_vip = rules(to_member("r-vip", "vip", "vera"), to_member("r-pl", "pl", "ada"))
    first_pl = rules(to_member("r-pl", "pl", "ada"), to_member("r-vip", "vip", "vera"))
    assert assign_conversation(state, conv(), SEGMENTS, first_vip, {}, NOW).decision.member == "vera"  # type: ignore[union-attr]
    assert assign_conversation(state, conv(), SEGMENTS, first_pl, {}, NOW).decision.member == "ada"  # type: ignore[union-attr]


def test_no_matching_rule_or_no_rules_is_unassigned() -> None:
    for book in (rules(to_member("r-pl", "pl", "ada")), None):
        d = assign_conversation(contact(country="DE"), conv(), SEGMENTS, book, {}, NOW).decision
        assert d is not None and (d.event_type, d.reason, d.rule, d.member) == (UNASSIGNED, NO_RULE_MATCHED, None, None)


def test_unknown_and_deleted_contacts_are_unassigned_and_remembered() -> None:
    book = rules(to_member("r-pl", "pl", "ada"))
    outcome = assign_conversation(None, conv(), SEGMENTS, book, {}, NOW)
    assert outcome.decision is not None and outcome.decision.reason == UNKNOWN_CONTACT
    assert outcome.state is not None and outcome.state.version == 0 and outcome.state.conversations == ["conv-1"]
    # The contact's first real change still applies (version 0 < 1) and is evaluated in full.
    later = apply_change(outcome.state, Change("upsert", "contact", "c1", 1, {"country": "PL"}), SEGMENTS, NOW)
    assert [t.segment_id for t in later.transitions if t.event_type == ENTERED] == ["pl"]
    assert later.state is not None and later.state.conversations == ["conv-1"]

    deleted = apply_change(contact(country="PL"), Change("delete", "contact", "c1", 2, {}), SEGMENTS, NOW).state
    outcome = assign_conversation(deleted, conv("conv-2"), SEGMENTS, book, {}, NOW)
    assert outcome.decision is not None and outcome.decision.reason == UNKNOWN_CONTACT
    assert outcome.state is not None and outcome.state.deleted and outcome.state.version == 2


def test_a_conversation_id_is_decided_once() -> None:
    book = rules(to_member("r-pl", "pl", "ada"))
    first = assign_conversation(contact(country="PL"), conv(), SEGMENTS, book, {}, NOW)
    assert first.state is not None
    assert assign_conversation(first.state, conv(), SEGMENTS, book, {}, NOW) == DUPLICATE
    assert RecordState.from_bytes(first.state.to_bytes()).conversations == ["conv-1"]


def test_remembered_conversation_ids_are_bounded() -> None:
    state: RecordState | None = contact(country="PL")
    for i in range(CONVERSATION_IDS + 5):
        state = assign_conversation(state, conv(f"c{i}"), SEGMENTS, None, {}, NOW).state
    assert state is not None and len(state.conversations) == CONVERSATION_IDS
    assert state.conversations[-1] == f"c{CONVERSATION_IDS + 4}" and "c0" not in state.conversations


def test_a_group_rule_picks_the_member_whose_turn_it_is() -> None:
    book = rules(to_group("r-pl", "pl", "sales"), groups={"sales": ["bob", "eve", "ann"]})
    state = contact(country="PL")
    picked = [assign_conversation(state, conv(f"c{turn}"), SEGMENTS, book, {"sales": turn}, NOW).decision
              for turn in range(6)]
    assert [d.member for d in picked] == ["bob", "eve", "ann", "bob", "eve", "ann"]  # type: ignore[union-attr]
    assert {d.group for d in picked} == {"sales"}  # type: ignore[union-attr]
    # A partition with no turns yet starts at its own offset.
    d = assign_conversation(state, conv(), SEGMENTS, book, {}, NOW, first_turn=2).decision
    assert d is not None and d.member == "ann"


def test_time_based_flips_that_are_due_happen_before_the_decision() -> None:
    reg = registry(new=eq("country", "PL") | {"rules": [
        {"field": "country", "operator": "=", "value": "PL"},
        {"field": "created_at", "operator": "withinLast", "value": "7 days"}]})
    segments = reg.segment_set("acme", "contact")
    created = NOW - 6 * DAY
    state = apply_change(None, Change("upsert", "contact", "c1", 1, {"country": "PL", "created_at": created}),
                         segments, NOW).state
    assert state is not None and state.members == {"new"} and state.due is not None
    flip = state.due  # the first instant "within the last 7 days" no longer holds
    assert created + 7 * DAY <= flip <= created + 7 * DAY + 1
    book = parse_assignment({"rules": [to_member("r-new", "new", "ada")]}, "acme", 1, segments.segments)
    before = assign_conversation(state, conv("a"), segments, book, {}, flip - 1)
    assert before.transitions == [] and before.decision.member == "ada"  # type: ignore[union-attr]
    after = assign_conversation(state, conv("b"), segments, book, {}, flip)
    assert [(t.event_type, t.segment_id, t.cause) for t in after.transitions] == [("segment.exited", "new", "time")]
    assert after.decision is not None and after.decision.reason == NO_RULE_MATCHED


# ---- property: the decision is the first rule, in order, whose segment the contact is in ----------

SEGMENT_IDS = ["pl", "vip", "de"]


@settings(max_examples=300, deadline=None)
@given(
    country=st.sampled_from(["PL", "DE", "FR", None]),
    vip=st.booleans(),
    rule_list=st.lists(st.tuples(st.sampled_from(SEGMENT_IDS), st.sampled_from(["ada", "bob", "@sales"])), max_size=5),
    turn=st.integers(0, 10),
)
def test_decision_equals_first_matching_rule(country: str | None, vip: bool, rule_list: list[tuple[str, str]],
                                             turn: int) -> None:
    fields: dict[str, Any] = {"status": "vip" if vip else "lead"}
    if country:
        fields["country"] = country
    state = contact(**fields)
    in_segment = {"pl": country == "PL", "de": country == "DE", "vip": vip}  # the oracle, written by hand
    doc_rules = [to_group(f"r{i}", sid, "sales") if who == "@sales" else to_member(f"r{i}", sid, who)
                 for i, (sid, who) in enumerate(rule_list)]
    book = rules(*doc_rules, groups={"sales": ["sam", "sue"]})
    d = assign_conversation(state, conv(), SEGMENTS, book, {"sales": turn}, NOW).decision
    expected = next(((i, sid, who) for i, (sid, who) in enumerate(rule_list) if in_segment[sid]), None)
    assert d is not None
    if expected is None:
        assert (d.event_type, d.reason) == (UNASSIGNED, NO_RULE_MATCHED)
    else:
        i, _, who = expected
        assert d.event_type == ASSIGNED and d.rule is not None and d.rule.id == f"r{i}"
        assert d.member == (["sam", "sue"][turn % 2] if who == "@sales" else who)
