"""Why does a record match (or not)? A per-node result tree for the UI and API.

It evaluates every node (no short-circuit) with the same condition closures as
compile.py, so its root result always equals the compiled rule's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .catalog import FieldType
from .compile import compile_condition
from .errors import InvalidRule
from .model import Condition, Group, Rule
from .validate import coerce_operand, validate_rule


@dataclass(frozen=True)
class Explanation:
    """One node of the explanation; group fields or condition fields are None for the other kind."""

    path: str
    kind: Literal["group", "condition"]
    result: bool
    combinator: str | None = None
    negated: bool | None = None
    field: str | None = None
    operator: str | None = None
    expected: Any = None
    actual: Any = None
    children: tuple[Explanation, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists); datetimes are epoch ms."""
        if self.kind == "group":
            return {
                "path": self.path,
                "kind": "group",
                "combinator": self.combinator,
                "negated": self.negated,
                "result": self.result,
                "children": [c.to_json() for c in self.children],
            }
        return {
            "path": self.path,
            "kind": "condition",
            "field": self.field,
            "operator": self.operator,
            "expected": _jsonable(self.expected),
            "actual": _jsonable(self.actual),
            "result": self.result,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def explain(group: Group, catalog: Mapping[str, FieldType], record: Mapping[str, Any]) -> Explanation:
    """Explanation tree of ``group`` over a normalised ``record``; raises InvalidRule if invalid."""
    problems = validate_rule(group, catalog)
    if problems:
        raise InvalidRule(problems)
    return _explain(group, catalog, record)


def _explain(rule: Rule, catalog: Mapping[str, FieldType], record: Mapping[str, Any]) -> Explanation:
    if isinstance(rule, Condition):
        ftype = catalog[rule.field]
        return Explanation(
            path=rule.path,
            kind="condition",
            result=compile_condition(rule, ftype)(record),
            field=rule.field,
            operator=rule.operator,
            expected=coerce_operand(ftype, rule.operator, rule.value),
            actual=record.get(rule.field),
        )
    children = tuple(_explain(child, catalog, record) for child in rule.rules)
    if rule.combinator == "and":
        result = all(c.result for c in children)
    else:
        result = any(c.result for c in children)
    if rule.negated:
        result = not result
    return Explanation(
        path=rule.path,
        kind="group",
        result=result,
        combinator=rule.combinator,
        negated=rule.negated,
        children=children,
    )
