from __future__ import annotations

import orjson
import pytest

from engine.rules import InvalidRule, catalog_for, explain, load_rule, parse_rule

CAT = catalog_for("contact")


def test_explanation_tree_names_values_and_results() -> None:
    rule = {"combinator": "and", "rules": [
        {"field": "country", "operator": "=", "value": "Poland"},
        {"combinator": "or", "not": True, "rules": [
            {"field": "lifetime_value", "operator": "between", "value": "0, 1000"},
            {"field": "tags", "operator": "hasAny", "value": ["churn"]},
        ]},
    ]}
    record = {"country": "POLAND", "lifetime_value": 1500, "tags": ["vip"]}
    tree = parse_rule(rule)
    result = explain(tree, CAT, record)
    assert result.result is True is load_rule(rule, CAT).matches(record)
    assert result.to_json() == {
        "path": "", "kind": "group", "combinator": "and", "negated": False, "result": True,
        "children": [
            {"path": "/rules/0", "kind": "condition", "field": "country", "operator": "=",
             "expected": "Poland", "actual": "POLAND", "result": True},
            {"path": "/rules/1", "kind": "group", "combinator": "or", "negated": True, "result": True,
             "children": [
                 {"path": "/rules/1/rules/0", "kind": "condition", "field": "lifetime_value",
                  "operator": "between", "expected": [0, 1000], "actual": 1500, "result": False},
                 {"path": "/rules/1/rules/1", "kind": "condition", "field": "tags",
                  "operator": "hasAny", "expected": ["churn"], "actual": ["vip"], "result": False},
             ]},
        ],
    }
    orjson.dumps(result.to_json())


def test_explain_shows_datetimes_as_epoch_ms_and_missing_as_none() -> None:
    tree = parse_rule({"combinator": "and", "rules": [{"field": "created_at", "operator": "<", "value": "2024-01-01"}]})
    child = explain(tree, CAT, {}).children[0]
    assert (child.expected, child.actual, child.result) == (1704067200000, None, False)


def test_explain_rejects_invalid_rules() -> None:
    tree = parse_rule({"combinator": "and", "rules": [{"field": "nope", "operator": "=", "value": 1}]})
    with pytest.raises(InvalidRule):
        explain(tree, CAT, {})
