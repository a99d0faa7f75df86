from __future__ import annotations

from typing import Any

import pytest

from engine.rules import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_LIST_VALUES,
    MAX_STRING_LENGTH,
    FieldType,
    InvalidRule,
    catalog_for,
    load_rule,
    parse_rule,
    validate_rule,
)

CAT = catalog_for("contact", {"plan": FieldType.STRING})


def _one(field: str, operator: str, value: Any = None) -> dict[str, Any]:
    return {"combinator": "and", "rules": [
        {"field": "country", "operator": "notNull"},
        {"combinator": "or", "rules": [{"field": field, "operator": operator, "value": value}]},
    ]}


def _problem(rule: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    problems = validate_rule(parse_rule(rule), CAT)
    assert len(problems) == 1, problems
    p = problems[0]
    return p.code, p.path, p.field, p.operator


@pytest.mark.parametrize("field,operator,value,code", [
    ("__class__", "=", "x", "invalid_field_name"),
    ("country.__len__", "=", "x", "invalid_field_name"),
    ("tags[0]", "=", "x", "invalid_field_name"),
    ("Country", "=", "x", "invalid_field_name"),
    ("plan", "=", "x", "unknown_field"),  # custom fields need the custom. prefix
    ("custom.seats", "=", 1, "unknown_field"),
    ("country", "like", "x", "unknown_operator"),
    ("country", "<", "x", "operator_not_allowed"),
    ("country", "between", ["a", "b"], "operator_not_allowed"),
    ("is_subscribed", "in", [True], "operator_not_allowed"),
    ("tags", "=", "vip", "operator_not_allowed"),
    ("created_at", "contains", "2024", "operator_not_allowed"),
    ("lifetime_value", "=", "abc", "invalid_value"),
    ("lifetime_value", ">", True, "invalid_value"),
    ("lifetime_value", ">", None, "invalid_value"),
    ("lifetime_value", "=", "nan", "invalid_value"),
    ("lifetime_value", "=", "\u0663", "invalid_value"),  # only ASCII digits
    ("lifetime_value", "=", "1_000", "invalid_value"),
    ("lifetime_value", "=", "1e999", "invalid_value"),
    ("lifetime_value", "between", [1], "invalid_value"),
    ("lifetime_value", "between", "1,2,3", "invalid_value"),
    ("lifetime_value", "between", [5, 1], "invalid_value"),
    ("created_at", "between", ["2024-02-01", "2024-01-01"], "invalid_value"),
    ("created_at", ">", "last week", "invalid_value"),
    ("created_at", ">", 1.5, "invalid_value"),
    ("is_subscribed", "=", "yes", "invalid_value"),
    ("country", "=", 48, "invalid_value"),
    ("country", "in", [], "invalid_value"),
    ("country", "in", "", "invalid_value"),
    ("country", "in", "Poland", "OK"),  # a one-item comma string is fine
    ("tags", "hasAll", [], "invalid_value"),
    ("tags", "hasAny", [1], "invalid_value"),
    ("tags", "contains", ["vip"], "invalid_value"),
    ("country", "=", "x" * (MAX_STRING_LENGTH + 1), "value_too_large"),
    ("country", "in", ["x"] * (MAX_LIST_VALUES + 1), "value_too_large"),
])
def test_condition_problems_name_path_field_operator(field: str, operator: str, value: Any, code: str) -> None:
    rule = _one(field, operator, value)
    if code == "OK":
        assert validate_rule(parse_rule(rule), CAT) == []
        return
    assert _problem(rule) == (code, "/rules/1/rules/0", field, operator)
    with pytest.raises(InvalidRule) as err:
        load_rule(rule, CAT)
    message = str(err.value)
    assert "/rules/1/rules/0" in message and repr(field) in message and repr(operator) in message
    assert err.value.code == "invalid_rule"


def test_limits_at_the_boundary_are_valid() -> None:
    assert validate_rule(parse_rule(_one("country", "=", "x" * MAX_STRING_LENGTH)), CAT) == []
    assert validate_rule(parse_rule(_one("country", "in", ["x"] * MAX_LIST_VALUES)), CAT) == []


def test_empty_group() -> None:
    assert _problem({"combinator": "and", "rules": []}) == ("empty_group", "", None, None)
    assert _problem({"combinator": "and", "rules": [{"combinator": "or", "rules": []}]}) == (
        "empty_group", "/rules/0", None, None)


def _nested(levels: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"combinator": "and", "rules": [{"field": "country", "operator": "null"}]}
    for _ in range(levels - 1):
        rule = {"combinator": "or", "rules": [rule]}
    return rule


def test_too_deep() -> None:
    assert validate_rule(parse_rule(_nested(MAX_DEPTH)), CAT) == []
    assert _problem(_nested(MAX_DEPTH + 1)) == ("too_deep", "/rules/0" * MAX_DEPTH, None, None)


def test_too_many_conditions() -> None:
    cond = {"field": "country", "operator": "notNull"}
    assert validate_rule(parse_rule({"combinator": "and", "rules": [cond] * MAX_CONDITIONS}), CAT) == []
    half = {"combinator": "or", "rules": [cond] * (MAX_CONDITIONS // 2 + 1)}
    assert _problem({"combinator": "and", "rules": [half, half]}) == ("too_many_conditions", "", None, None)


def test_reports_all_problems_in_document_order() -> None:
    rule = {"combinator": "and", "rules": [
        {"field": "nope", "operator": "=", "value": 1},
        {"combinator": "or", "rules": []},
        {"field": "lifetime_value", "operator": "contains", "value": 1},
        {"field": "lifetime_value", "operator": "=", "value": "x"},
    ]}
    problems = validate_rule(parse_rule(rule), CAT)
    assert [(p.code, p.path) for p in problems] == [
        ("unknown_field", "/rules/0"),
        ("empty_group", "/rules/1"),
        ("operator_not_allowed", "/rules/2"),
        ("invalid_value", "/rules/3"),
    ]
    assert all(set(p.to_json()) == {"code", "path", "field", "operator", "message"} for p in problems)
    with pytest.raises(InvalidRule) as err:
        load_rule(rule, CAT)
    assert len(err.value.problems) == 4 and "(+3 more)" in str(err.value)
