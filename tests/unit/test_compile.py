from __future__ import annotations

from typing import Any

import pytest

import engine.rules.compile as compile_module
from engine.rules import (
    NEGATIONS,
    CompiledRule,
    FieldType,
    InvalidRule,
    catalog_for,
    compile_rule,
    fields_read,
    load_rule,
    parse_rule,
)
from tests.unit.strategies import SPEC_OPERATORS

CAT = catalog_for("contact", {"plan": FieldType.STRING})

POSITIVE = {"=", "contains", "beginsWith", "endsWith", "in", "between", "<", ">", "<=", ">=", "hasAny", "hasAll"}
NEGATIVE = {"!=", "doesNotContain", "doesNotBeginWith", "doesNotEndWith", "notIn", "notBetween", "hasNone"}

FIELD = {FieldType.STRING: "country", FieldType.NUMBER: "lifetime_value", FieldType.BOOLEAN: "is_subscribed",
         FieldType.DATETIME: "created_at", FieldType.TAGS: "tags"}
VALUE = {"between": [1, 2], "notBetween": [1, 2], "in": ["1"], "notIn": ["1"], "hasAny": ["a"], "hasAll": ["a"],
         "hasNone": ["a"], "contains": "a", "doesNotContain": "a"}
SCALAR = {FieldType.STRING: "a", FieldType.NUMBER: 1, FieldType.BOOLEAN: True, FieldType.DATETIME: 1}
MISSING_RECORDS = [{}, {"__": 1}]


def _matches(field: str, op: str, value: Any, record: dict[str, Any]) -> bool:
    rule = {"combinator": "and", "rules": [{"field": field, "operator": op, "value": value}]}
    return load_rule(rule, CAT).matches(record)


def _null_cases() -> list[tuple[FieldType, str]]:
    return [(t, op) for t, ops in SPEC_OPERATORS.items() for op in ops]


@pytest.mark.parametrize(("ftype", "op"), _null_cases(), ids=lambda p: getattr(p, "value", p))
def test_null_semantics_table(ftype: FieldType, op: str) -> None:
    field = FIELD[ftype]
    value = VALUE.get(op, SCALAR.get(ftype))
    if ftype is FieldType.DATETIME and op in ("between", "notBetween"):
        value = [1, 2]
    nulls: list[dict[str, Any]] = [{}, {field: None}] + ([{field: []}] if ftype is FieldType.TAGS else [])
    for record in nulls:
        got = _matches(field, op, value, record)
        if op == "null":
            assert got is True
        elif op == "notNull":
            assert got is False
        elif op in POSITIVE:
            assert got is False, (op, record)
        else:
            assert op in NEGATIVE
            assert got is True, (op, record)


def test_every_negative_operator_has_a_positive_twin() -> None:
    assert set(NEGATIONS) == NEGATIVE | {"notNull", "notMemberOf"}
    assert set(NEGATIONS.values()) <= POSITIVE | {"null", "memberOf"}


@pytest.mark.parametrize("op,value,actual,expected", [
    ("=", "poland", "POLAND", True),
    ("=", "STRASSE", "Straße", True),  # casefold, not lower
    ("!=", "Poland", "poland", False),
    ("contains", "LAN", "Poland", True),
    ("beginsWith", "PO", "poland", True),
    ("endsWith", "AND", "Poland", True),
    ("doesNotEndWith", "AND", "Poland", False),
    ("in", "de, PL, fr", "pl", True),
    ("notIn", ["DE", "FR"], "pl", True),
    ("contains", "", "anything", True),
    ("=", "", "", True),
])
def test_strings_are_case_insensitive(op: str, value: Any, actual: str, expected: bool) -> None:
    assert _matches("country", op, value, {"country": actual}) is expected


def test_tags_are_case_insensitive() -> None:
    rec = {"tags": ["Lead", "VIP"]}
    assert _matches("tags", "hasAny", "vip, churn", rec)
    assert _matches("tags", "hasAll", ["lead", "vip"], rec)
    assert not _matches("tags", "hasAll", ["lead", "vip", "beta"], rec)
    assert not _matches("tags", "hasNone", ["LEAD"], rec)
    assert _matches("tags", "contains", "vIp", rec)
    assert not _matches("tags", "contains", "vi", rec)  # whole tags, not substrings
    assert _matches("campaigns", "doesNotContain", "spring", {"campaigns": ["summer"]})


@pytest.mark.parametrize("op,value,actual,expected", [
    (">", "1000", 1000, False),
    (">=", 1000, 1000.0, True),
    ("between", [10, 20], 10, True),
    ("between", "10,20", 20, True),
    ("between", [10, 20], 20.0001, False),
    ("notBetween", [10, 20], 9.99, True),
    ("in", "1, 2.5", 2.5, True),
    ("=", "1e3", 1000, True),
])
def test_numbers(op: str, value: Any, actual: float, expected: bool) -> None:
    assert _matches("lifetime_value", op, value, {"lifetime_value": actual}) is expected


def test_datetimes_compare_as_epoch_ms() -> None:
    jan1 = 1704067200000
    assert _matches("created_at", "=", "2024-01-01T01:00:00+01:00", {"created_at": jan1})
    assert _matches("created_at", "<", "2024-01-01", {"created_at": jan1 - 1})
    assert not _matches("created_at", "<", jan1, {"created_at": jan1})
    assert _matches("created_at", "between", "2024-01-01, 2024-01-02", {"created_at": jan1})
    assert _matches("created_at", "notBetween", [jan1 + 1, jan1 + 5], {"created_at": jan1})


def test_booleans() -> None:
    assert _matches("is_subscribed", "=", True, {"is_subscribed": True})
    assert _matches("is_subscribed", "=", "false", {"is_subscribed": False})
    assert _matches("is_subscribed", "!=", True, {"is_subscribed": False})


def test_groups_and_or_not() -> None:
    rule = {"combinator": "or", "not": True, "rules": [
        {"field": "country", "operator": "=", "value": "pl"},
        {"combinator": "and", "rules": [
            {"field": "lifetime_value", "operator": ">", "value": 1000},
            {"field": "tags", "operator": "hasAny", "value": ["vip"]},
        ]},
    ]}
    compiled = load_rule(rule, CAT)
    assert compiled.matches({"country": "de"})
    assert not compiled.matches({"country": "PL"})
    assert not compiled.matches({"lifetime_value": 2000, "tags": ["VIP"]})
    assert compiled.matches({"lifetime_value": 2000, "tags": ["other"]})


def test_load_rule_returns_tree_matches_and_fields() -> None:
    rule = {"combinator": "and", "rules": [
        {"field": "country", "operator": "=", "value": "Poland"},
        {"combinator": "or", "rules": [{"field": "custom.plan", "operator": "null"},
                                       {"field": "country", "operator": "notNull"}]},
    ]}
    compiled = load_rule(rule, CAT)
    assert isinstance(compiled, CompiledRule)
    assert compiled.tree == parse_rule(rule)
    assert compiled.fields == fields_read(compiled.tree) == frozenset({"country", "custom.plan"})


def test_compile_rule_refuses_invalid_trees() -> None:
    tree = parse_rule({"combinator": "and", "rules": [{"field": "country", "operator": ">", "value": "x"}]})
    with pytest.raises(InvalidRule):
        compile_rule(tree, CAT)


def test_docstring_table_lists_every_operator() -> None:
    doc = compile_module.__doc__ or ""
    for ops in SPEC_OPERATORS.values():
        for op in ops:
            assert f"``{op}``" in doc, op
