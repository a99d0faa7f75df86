"""Deterministic grid: every operator x every pool value x every pool record value.

Complements the random property tests, which reach exact-boundary and case-variant
pairs only occasionally; here every such pair is checked against the naive oracle.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from engine.rules import FieldType, compile_rule, parse_rule
from tests.naive_eval import naive_matches
from tests.unit.strategies import (
    CATALOG,
    DATE_MS,
    DATES,
    NUMBERS,
    SPEC_OPERATORS,
    STRINGS,
    TAGS,
    TYPE_OPERATOR_PAIRS,
)

FIELD = {
    FieldType.STRING: "custom.plan",
    FieldType.NUMBER: "lifetime_value",
    FieldType.BOOLEAN: "is_subscribed",
    FieldType.DATETIME: "created_at",
    FieldType.TAGS: "tags",
}
MISSING = object()


def _rule_scalars(ftype: FieldType) -> list[Any]:
    if ftype is FieldType.STRING:
        return STRINGS
    if ftype is FieldType.NUMBER:
        return [*NUMBERS, *(str(n) for n in NUMBERS)]
    if ftype is FieldType.BOOLEAN:
        return [True, False, "true", "FALSE"]
    if ftype is FieldType.DATETIME:
        return [*DATE_MS, *(s for spellings in DATES.values() for s in spellings)]
    return TAGS


def _record_values(ftype: FieldType) -> list[Any]:
    base: list[Any]
    if ftype is FieldType.STRING:
        base = [*STRINGS, "Polandx", "xpoland", "straße!"]
    elif ftype is FieldType.NUMBER:
        base = [*NUMBERS, -2, 1000.5, 0.0]
    elif ftype is FieldType.BOOLEAN:
        base = [True, False]
    elif ftype is FieldType.DATETIME:
        base = sorted({m + d for m in DATE_MS for d in (-1, 0, 1)})
    else:
        base = [[], *([t] for t in TAGS), ["VIP", "lead"], ["beta", "churn", "vip"], ["STRASSE"]]
    return [MISSING, None, *base]


def _rule_values(ftype: FieldType, op: str) -> list[Any]:
    scalars = _rule_scalars(ftype)
    if op in ("null", "notNull"):
        return [None]
    if op in ("between", "notBetween"):
        key = (lambda v: float(v)) if ftype is FieldType.NUMBER else (
            lambda v: v if isinstance(v, int) else next(ms for ms, s in DATES.items() if v in s))
        return [[lo, hi] for lo, hi in itertools.product(scalars, repeat=2) if key(lo) <= key(hi)]
    if op in ("in", "notIn", "hasAny", "hasAll", "hasNone"):
        pairs = [[a, b] for a, b in itertools.combinations(scalars, 2)]
        return [[s] for s in scalars] + pairs[::3]
    return scalars


@pytest.mark.parametrize(("ftype", "op"), TYPE_OPERATOR_PAIRS, ids=lambda p: getattr(p, "value", p))
def test_operator_grid(ftype: FieldType, op: str) -> None:
    field = FIELD[ftype]
    checked = 0
    for value in _rule_values(ftype, op):
        rule = {"combinator": "and", "rules": [{"field": field, "operator": op, "value": value}]}
        matches = compile_rule(parse_rule(rule), CATALOG)
        for actual in _record_values(ftype):
            record = {} if actual is MISSING else {field: actual}
            assert matches(record) == naive_matches(rule, record, CATALOG), (rule, record)
            checked += 1
    assert checked > 0


def test_grid_covers_every_spec_operator() -> None:
    assert {op for ops in SPEC_OPERATORS.values() for op in ops} == {op for _, op in TYPE_OPERATOR_PAIRS}
