"""The catalog a segment builder reads offers exactly what the validator accepts (engine/api/catalog.py)."""
from __future__ import annotations

from typing import Any

from engine.api.catalog import describe
from engine.rules import FieldType, catalog_for
from engine.rules.errors import InvalidRule
from engine.rules.parse import parse_rule
from engine.rules.validate import ALL_OPERATORS, validate_rule

SAMPLE: dict[str, Any] = {"string": "x", "number": 3, "boolean": True, "datetime": "2026-01-02T00:00:00Z", "tags": "vip"}
LISTS = {"in", "notIn", "hasAny", "hasAll", "hasNone"}


def value_for(ftype: str, operator: str) -> Any:
    if operator in ("null", "notNull"):
        return None
    if operator in ("withinLast", "moreThanAgo", "withinNext"):
        return "30d"
    if operator in ("between", "notBetween"):
        return [SAMPLE[ftype], SAMPLE[ftype]]
    return [SAMPLE[ftype]] if operator in LISTS else SAMPLE[ftype]


def problems(field: str, operator: str, value: Any) -> list[Any]:
    rule = {"combinator": "and", "rules": [{"field": field, "operator": operator, "value": value}]}
    try:
        return validate_rule(parse_rule(rule), catalog_for("contact", {"plan": FieldType.STRING}))
    except InvalidRule as exc:
        return list(exc.problems)


def test_every_listed_operator_is_accepted_and_no_other() -> None:
    doc = describe(catalog_for("contact", {"plan": FieldType.STRING}))
    fields = {f["name"]: f for f in doc["fields"]}
    assert fields["custom.plan"]["custom"] and not fields["country"]["custom"]
    for field in ("country", "lifetime_value", "is_subscribed", "created_at", "tags", "custom.plan"):
        entry = fields[field]
        for operator in entry["operators"]:
            assert problems(field, operator, value_for(entry["type"], operator)) == [], (field, operator)
        for operator in ALL_OPERATORS - set(entry["operators"]):
            assert problems(field, operator, value_for(entry["type"], operator)), (field, operator)


def test_aggregates_and_segment_field() -> None:
    doc = describe(catalog_for("contact"))
    assert doc["segment"] == {"field": "segment", "operators": ["memberOf", "notMemberOf"]}
    functions = {f["function"]: f for f in doc["aggregates"]["functions"]}
    assert functions["sum"]["needs_property"] and not functions["count"]["needs_property"]
    assert problems("events.purchase.sum.amount", ">=", 1000) == []
    assert problems("events.purchase.last_seen", "withinLast", "7d") == []
    assert "withinLast" in functions["last_seen"]["operators"] and "withinLast" not in functions["count"]["operators"]
