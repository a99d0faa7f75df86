"""Property tests: compiled rule == naive interpreter == explain, and the index never misses."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.rules import (
    FieldIndex,
    compile_rule,
    explain,
    load_rule,
    normalize_fields,
    parse_rule,
    validate_rule,
)
from tests.naive_eval import naive_matches
from tests.unit.strategies import ALL_FIELDS, CATALOG, conditions, field_value, records, rules


@settings(max_examples=400, deadline=None)
@given(rule=rules(), record=records())
def test_compiled_equals_naive_equals_explain(rule: dict[str, Any], record: dict[str, Any]) -> None:
    rule = orjson.loads(orjson.dumps(rule))  # exactly what arrives over the wire
    tree = parse_rule(rule)
    assert validate_rule(tree, CATALOG) == []
    compiled = compile_rule(tree, CATALOG)(record)
    assert compiled == naive_matches(rule, record, CATALOG)
    explanation = explain(tree, CATALOG, record)
    assert explanation.result == compiled
    orjson.dumps(explanation.to_json())  # always serialisable


@settings(max_examples=400, deadline=None)
@given(conds=st.lists(conditions(), min_size=1, max_size=3), negated=st.booleans(),
       combinator=st.sampled_from(["and", "or"]), record=records())
def test_flat_rules_compiled_equals_naive(conds: list[dict[str, Any]], negated: bool,
                                          combinator: str, record: dict[str, Any]) -> None:
    """Shallow rules so every operator's own result reaches the root often."""
    rule = {"combinator": combinator, "not": negated, "rules": conds}
    tree = parse_rule(rule)
    compiled = compile_rule(tree, CATALOG)(record)
    assert compiled == naive_matches(rule, record, CATALOG)
    assert explain(tree, CATALOG, record).result == compiled


@settings(max_examples=100, deadline=None)
@given(record=records())
def test_generated_records_are_already_normalised(record: dict[str, Any]) -> None:
    assert normalize_fields(record, CATALOG) == record


@st.composite
def change(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    before = draw(records())
    changed = set(draw(st.lists(st.sampled_from(ALL_FIELDS), max_size=4)))
    after = dict(before)
    for field in changed:
        if draw(st.booleans()):
            after[field] = draw(field_value(field))
        else:
            after.pop(field, None)
    return before, after, changed


@settings(max_examples=200, deadline=None)
@given(segments=st.lists(rules(max_depth=3), min_size=1, max_size=6), delta=change())
def test_index_never_misses(segments: list[dict[str, Any]], delta: tuple[dict[str, Any], dict[str, Any], set[str]]) -> None:
    before, after, changed = delta
    index = FieldIndex()
    compiled = {f"s{i}": load_rule(rule, CATALOG) for i, rule in enumerate(segments)}
    for segment_id, segment in compiled.items():
        index.add(segment_id, segment.fields)
    affected = index.affected(changed)
    for segment_id, segment in compiled.items():
        if segment.matches(before) != segment.matches(after):
            assert segment_id in affected
