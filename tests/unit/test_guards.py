"""Predicate indexing: the guard index skips segments a record cannot match, and never one it can."""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.rules import GuardIndex, load_rule, normalize_fields
from engine.rules.guards import WORTH_NARROWING
from tests.naive_eval import naive_matches
from tests.unit.strategies import CATALOG, conditions, records, rules


def index_of(segments: dict[str, dict[str, Any]]) -> GuardIndex:
    index = GuardIndex()
    for segment_id, rule in {**segments, **FILLER}.items():
        index.add(segment_id, load_rule(rule, CATALOG).guard)
    return index


class Narrowed:
    """`narrow` over the given candidates plus enough unguarded filler that narrowing is worth doing."""

    def __init__(self, index: GuardIndex) -> None:
        self.index = index

    def narrow(self, candidates: set[str], fields: dict[str, Any], members: set[str]) -> set[str]:
        return set(self.index.narrow(candidates | set(FILLER), fields, members)) - set(FILLER)


def AND(*conds: dict[str, Any], negated: bool = False) -> dict[str, Any]:
    return {"combinator": "and", "not": negated, "rules": list(conds)}


def cond(field: str, operator: str, value: Any = None) -> dict[str, Any]:
    return {"field": field, "operator": operator, "value": value}


SEGMENTS = {
    "pl": AND(cond("country", "=", "Poland"), cond("lifetime_value", ">", 1000)),
    "pl-or-de": AND(cond("country", "in", ["poland", "Germany"])),
    "vip-pl": AND(cond("tags", "hasAll", ["vip", "lead"]), cond("country", "=", "POLAND")),
    "big": AND(cond("lifetime_value", ">", 1000)),  # a range only: guarded by its bound
    "either": {"combinator": "or", "rules": [cond("country", "=", "Poland"), cond("custom.vip", "=", True)]},
    "not-pl": AND(cond("country", "=", "Poland"), negated=True),
}
ALL = set(SEGMENTS)
FILLER = {f"filler{i}": {"combinator": "or", "rules": [cond("lifetime_value", ">", i), cond("city", "null")]}
          for i in range(WORTH_NARROWING)}  # no guard: always candidates


def record(**fields: Any) -> dict[str, Any]:
    return normalize_fields(fields, CATALOG)


def test_a_record_skips_segments_whose_equality_it_fails() -> None:
    index = Narrowed(index_of(SEGMENTS))
    germany = index.narrow(ALL, record(country="Germany", lifetime_value=5000, tags=["VIP", "lead"]), set())
    assert germany == {"pl-or-de", "big", "either", "not-pl"}


def test_casefolded_values_and_any_tag_are_admitted() -> None:
    index = Narrowed(index_of(SEGMENTS))
    poland = index.narrow(ALL, record(country="POLAND", tags=["Lead", "VIP"], lifetime_value=1001), set())
    assert poland == ALL
    no_tags = index.narrow(ALL, record(country="poland", lifetime_value=1001), set())
    assert no_tags == ALL - {"vip-pl"}


def test_members_and_only_candidates_are_kept() -> None:
    index = Narrowed(index_of(SEGMENTS))
    assert index.narrow({"pl", "big"}, record(country="Germany", lifetime_value=2000), {"pl"}) == {"pl", "big"}
    assert index.narrow({"big", "pl-or-de"}, record(country="Poland", lifetime_value=2000), set()) == {"big", "pl-or-de"}


def test_a_missing_field_admits_no_guarded_segment() -> None:
    index = Narrowed(index_of(SEGMENTS))
    assert index.narrow(ALL, record(), set()) == {"either", "not-pl"}


def test_removed_and_redefined_segments_leave_the_index() -> None:
    raw = index_of(SEGMENTS)
    index = Narrowed(raw)
    raw.remove("pl")
    raw.add("pl-or-de", load_rule(AND(cond("country", "=", "Germany")), CATALOG).guard)
    raw.remove("unknown")
    admitted = index.narrow(ALL, record(country="Poland"), set())
    assert "pl" not in admitted and "pl-or-de" not in admitted
    assert index.narrow(ALL, record(country="Germany"), set()) >= {"pl-or-de"}
    assert len(raw) == len(SEGMENTS) - 1 + len(FILLER)


def test_range_only_rules_are_admitted_by_their_bound() -> None:
    raw = index_of({
        "over-1000": AND(cond("lifetime_value", ">", 1000)),
        "at-least-500": AND(cond("lifetime_value", ">=", 500), cond("city", "notNull")),
        "under-100": AND(cond("lifetime_value", "<", 100)),
        "200-300": AND(cond("lifetime_value", "between", [200, 300])),
        "before-2024": AND(cond("created_at", "before", "2024-01-01")),
        "also-over-1000": AND(cond("lifetime_value", ">", 1000)),
    })
    index = Narrowed(raw)
    every = {"over-1000", "at-least-500", "under-100", "200-300", "before-2024"}
    assert index.narrow(every, record(lifetime_value=50), set()) == {"under-100"}
    assert index.narrow(every, record(lifetime_value=250), set()) == {"200-300"}
    assert index.narrow(every, record(lifetime_value=500), set()) == {"at-least-500", "200-300"}
    assert index.narrow(every, record(lifetime_value=1000), set()) == {"over-1000", "at-least-500", "200-300"}
    assert index.narrow(every, record(created_at="2023-06-01"), set()) == {"before-2024"}
    assert index.narrow(every, record(created_at="2024-06-01"), set()) == set()
    raw.remove("over-1000")  # an equal bound stays
    raw.add("under-100", load_rule(AND(cond("lifetime_value", "<", 10)), CATALOG).guard)
    admitted = index.narrow(every | {"also-over-1000"}, record(lifetime_value=2000), set())
    assert admitted == {"also-over-1000", "at-least-500", "200-300"}  # between is indexed by its lower end
    assert index.narrow(every, record(lifetime_value=50), set()) == set()


def test_two_terms_are_both_required() -> None:
    index = Narrowed(index_of({"pl-pro": AND(cond("country", "=", "Poland"), cond("custom.plan", "in", ["pro", "team"]))}))
    assert index.narrow({"pl-pro"}, record(country="Poland", **{"custom.plan": "free"}), set()) == set()
    assert index.narrow({"pl-pro"}, record(country="Poland", **{"custom.plan": "Team"}), set()) == {"pl-pro"}


@settings(max_examples=400, deadline=None)
@given(segments=st.lists(st.one_of(rules(max_depth=3), st.lists(conditions(), min_size=1, max_size=4).map(
    lambda conds: {"combinator": "and", "rules": conds})), min_size=1, max_size=6), fields=records())
def test_the_index_never_skips_a_segment_the_record_matches(segments: list[dict[str, Any]],
                                                            fields: dict[str, Any]) -> None:
    """Checked against the naive interpreter, over random rules (flat ANDs often, so guards exist)."""
    by_id = {f"s{i}": rule for i, rule in enumerate(segments)}
    admitted = Narrowed(index_of(by_id)).narrow(set(by_id), fields, set())
    for segment_id, rule in by_id.items():
        if naive_matches(rule, fields, CATALOG):
            assert segment_id in admitted
