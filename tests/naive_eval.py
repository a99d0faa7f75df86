"""Deliberately naive reference interpreter for react-querybuilder rules.

Used as the oracle in unit and integration tests. It works on the RAW rule JSON and a
normalised record, and shares no code with engine.rules except the catalog (for field
types) and ``parse_datetime_ms``. It assumes the rule is valid; it is written for
obviousness, not speed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.rules.values import parse_datetime_ms

NEGATIVE_TWIN = {
    "!=": "=",
    "notIn": "in",
    "notBetween": "between",
    "doesNotContain": "contains",
    "doesNotBeginWith": "beginsWith",
    "doesNotEndWith": "endsWith",
    "hasNone": "hasAny",
    "notNull": "null",
}


def naive_matches(rule_json: Mapping[str, Any], record: Mapping[str, Any], catalog: Mapping[str, Any]) -> bool:
    """Does ``record`` (normalised state form) satisfy ``rule_json`` (a valid rule)?"""
    if "rules" in rule_json:
        results = [naive_matches(child, record, catalog) for child in rule_json["rules"]]
        if rule_json["combinator"].lower() == "and":
            result = all(results)
        else:
            result = any(results)
        if rule_json.get("not"):
            result = not result
        return result
    return condition_matches(rule_json, record, catalog)


def condition_matches(cond: Mapping[str, Any], record: Mapping[str, Any], catalog: Mapping[str, Any]) -> bool:
    field = cond["field"]
    operator = cond["operator"]
    field_type = str(catalog[field].value)
    actual: Any = record.get(field)

    if operator in NEGATIVE_TWIN:
        positive = dict(cond)
        positive["operator"] = NEGATIVE_TWIN[operator]
        return not condition_matches(positive, record, catalog)

    is_null = actual is None or (field_type == "tags" and len(actual) == 0)
    if operator == "null":
        return is_null
    if is_null:
        return False

    raw_value: Any = cond.get("value")

    if field_type == "tags":
        have = [tag.casefold() for tag in actual]
        if operator == "contains":
            return raw_value.casefold() in have
        wanted = [item.casefold() for item in as_list(raw_value)]
        if operator == "hasAny":
            return any(w in have for w in wanted)
        if operator == "hasAll":
            return all(w in have for w in wanted)
        raise ValueError(operator)

    if field_type == "string":
        text = actual.casefold()
        if operator == "in":
            return text in [item.casefold() for item in as_list(raw_value)]
        wanted_text = raw_value.casefold()
        if operator == "=":
            return text == wanted_text
        if operator == "contains":
            return wanted_text in text
        if operator == "beginsWith":
            return text[: len(wanted_text)] == wanted_text
        if operator == "endsWith":
            return len(wanted_text) == 0 or text[-len(wanted_text):] == wanted_text
        raise ValueError(operator)

    to_value = {"number": to_number, "datetime": parse_datetime_ms, "boolean": to_bool}[field_type]
    if operator == "in":
        return any(actual == to_value(item) for item in as_list(raw_value))
    if operator == "between":
        low, high = as_list(raw_value)
        return to_value(low) <= actual and actual <= to_value(high)
    wanted_value = to_value(raw_value)
    if operator == "=":
        return actual == wanted_value
    if operator == "<":
        return actual < wanted_value
    if operator == ">":
        return actual > wanted_value
    if operator == "<=":
        return actual <= wanted_value
    if operator == ">=":
        return actual >= wanted_value
    raise ValueError(operator)


def as_list(value: Any) -> list[Any]:
    """A JSON list as is; a react-querybuilder comma string split on unescaped commas."""
    if isinstance(value, (list, tuple)):
        return list(value)
    items = []
    current = ""
    escaped_comma = "\\,"
    i = 0
    while i < len(value):
        if value[i : i + 2] == escaped_comma:
            current += ","
            i += 2
        elif value[i] == ",":
            items.append(current)
            current = ""
            i += 1
        else:
            current += value[i]
            i += 1
    items.append(current)
    return [item.strip() for item in items if item.strip() != ""]


def to_number(value: Any) -> float:
    if isinstance(value, str):
        return float(value)
    return float(value) if isinstance(value, float) else int(value)


def to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)
