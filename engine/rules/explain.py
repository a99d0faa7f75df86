"""Why does a record match (or not)? A per-node result tree for the UI and API.

It evaluates every node (no short-circuit) with the same condition closures as
compile.py, so its root result always equals the compiled rule's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .catalog import FieldType
from .catalog import SEGMENT_FIELD
from .compile import compile_condition, value_getter
from .context import WALL_CLOCK, Context
from .errors import InvalidRule
from .model import Condition, Group, Rule
from .validate import coerce_operand, field_type, validate_rule


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


def explain(
    group: Group, catalog: Mapping[str, FieldType], record: Mapping[str, Any], context: Context = WALL_CLOCK
) -> Explanation:
    """Explanation tree of ``group`` over a normalised ``record`` (at ``context``'s time, memberships
    and activity); raises InvalidRule if invalid. For an aggregate, ``actual`` is its value; for a
    segment reference, whether the record is in that segment."""
    problems = validate_rule(group, catalog)
    if problems:
        raise InvalidRule(problems)
    return _explain(group, catalog, record, context)


def _explain(rule: Rule, catalog: Mapping[str, FieldType], record: Mapping[str, Any], context: Context) -> Explanation:
    if isinstance(rule, Condition):
        ftype = field_type(rule.field, catalog)
        expected = rule.value if rule.field == SEGMENT_FIELD else coerce_operand(ftype, rule.operator, rule.value)  # type: ignore[arg-type]
        return Explanation(
            path=rule.path,
            kind="condition",
            result=compile_condition(rule, catalog)(record, context),
            field=rule.field,
            operator=rule.operator,
            expected=expected,
            actual=value_getter(rule)(record, context),
        )
    children = tuple(_explain(child, catalog, record, context) for child in rule.rules)
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
