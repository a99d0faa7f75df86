from __future__ import annotations

from typing import Any

import pytest

from engine.rules import Condition, Group, InvalidRule, parse_rule, split_comma_list


def test_parses_nested_groups_with_paths_and_ignores_ids() -> None:
    tree = parse_rule({
        "id": "root", "combinator": "AND", "not": False,
        "rules": [
            {"id": "r1", "field": "country", "operator": "=", "value": "Poland", "valueSource": "value"},
            {"combinator": "or", "not": True, "rules": [
                {"field": "tags", "operator": "hasAny", "value": ["vip", "lead"]},
                {"field": "city", "operator": "null", "value": "ignored"},
            ]},
        ],
    })
    assert tree == Group("and", False, (
        Condition("country", "=", "Poland", "/rules/0"),
        Group("or", True, (
            Condition("tags", "hasAny", ("vip", "lead"), "/rules/1/rules/0"),
            Condition("city", "null", None, "/rules/1/rules/1"),
        ), "/rules/1"),
    ), "")


@pytest.mark.parametrize("text,items", [
    ("a,b,c", ("a", "b", "c")),
    (" a , b ", ("a", "b")),
    ("a,,b,", ("a", "b")),
    (r"a\,b,c", ("a,b", "c")),
    ("", ()),
    ("single", ("single",)),
])
def test_split_comma_list(text: str, items: tuple[str, ...]) -> None:
    assert split_comma_list(text) == items


def test_comma_strings_only_split_for_list_operators() -> None:
    tree = parse_rule({"combinator": "and", "rules": [
        {"field": "lifetime_value", "operator": "between", "value": "10, 20"},
        {"field": "country", "operator": "contains", "value": "a,b"},
    ]})
    assert [c.value for c in tree.rules] == [("10", "20"), "a,b"]  # type: ignore[union-attr]


def _problems(obj: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRule) as err:
        parse_rule(obj)
    return [(p.code, p.path) for p in err.value.problems]


@pytest.mark.parametrize("obj,expected", [
    ([], [("invalid_shape", "")]),
    ("rule", [("invalid_shape", "")]),
    ({"field": "country", "operator": "=", "value": "x"}, [("invalid_shape", "")]),
    ({"combinator": "xor", "rules": []}, [("invalid_shape", "")]),
    ({"combinator": "and", "not": "yes", "rules": []}, [("invalid_shape", "")]),
    ({"combinator": "and", "rules": {}}, [("invalid_shape", "")]),
    ({"combinator": "and", "rules": [{"field": "a", "operator": "="}, "and", {"field": 1, "operator": "="}]},
     [("invalid_shape", "/rules/1"), ("invalid_shape", "/rules/2")]),
    ({"combinator": "and", "rules": [{"value": 1}]}, [("invalid_shape", "/rules/0")]),
    ({"combinator": "and", "rules": [{"combinator": "or", "rules": [{"field": "country", "operator": None}]}]},
     [("invalid_shape", "/rules/0/rules/0")]),
])
def test_shape_problems(obj: Any, expected: list[tuple[str, str]]) -> None:
    assert _problems(obj) == expected


def test_value_source_field_rejected_naming_field_and_operator() -> None:
    with pytest.raises(InvalidRule) as err:
        parse_rule({"combinator": "and", "rules": [
            {"field": "city", "operator": "=", "value": "country", "valueSource": "field"}]})
    problem = err.value.problems[0]
    assert (problem.code, problem.path, problem.field, problem.operator) == ("invalid_shape", "/rules/0", "city", "=")
    assert "valueSource" in str(err.value) and "'city'" in str(err.value)


def test_hostile_nesting_is_stopped_without_recursion_error() -> None:
    obj: dict[str, Any] = {"field": "country", "operator": "null"}
    for _ in range(5000):
        obj = {"combinator": "and", "rules": [obj]}
    assert ("too_deep", "/rules/0" * 64) in _problems(obj)
