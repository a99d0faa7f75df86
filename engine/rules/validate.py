"""Check a parsed rule against a field catalog and the product limits.

Reports every problem (not just the first) with its path, field and operator so the
segment builder can highlight each one. ``coerce_operand`` is the single definition of
what a valid value is; compile.py uses it too, so validation and evaluation cannot drift.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from .activity import HORIZON_MS
from .catalog import (
    EVENTS_PREFIX,
    FIELD_NAME_RE,
    SEGMENT_FIELD,
    AggregateField,
    FieldType,
    is_valid_field_name,
    parse_aggregate_field,
)
from .durations import parse_duration_ms
from .errors import RuleProblem
from .model import Condition, Group, Rule
from .values import parse_datetime_ms

MAX_DEPTH = 8  # nesting levels of groups; the root group is level 1
MAX_CONDITIONS = 200
MAX_LIST_VALUES = 1000
MAX_STRING_LENGTH = 1000

_STRING_OPS = frozenset({
    "=", "!=", "contains", "doesNotContain", "beginsWith", "doesNotBeginWith",
    "endsWith", "doesNotEndWith", "in", "notIn", "null", "notNull",
})
_ORDERED_OPS = frozenset({"=", "!=", "<", ">", "<=", ">=", "between", "notBetween", "null", "notNull"})

#: Relative-date operators: their value is a duration and their result depends on the time.
RELATIVE_OPS = frozenset({"withinLast", "moreThanAgo", "withinNext"})
#: Operators on the ``segment`` field: membership of another segment (value: its id).
SEGMENT_OPS = frozenset({"memberOf", "notMemberOf"})
_SEGMENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")

OPERATORS_BY_TYPE: Mapping[FieldType, frozenset[str]] = {
    FieldType.STRING: _STRING_OPS,
    FieldType.NUMBER: _ORDERED_OPS | {"in", "notIn"},
    FieldType.BOOLEAN: frozenset({"=", "!=", "null", "notNull"}),
    FieldType.DATETIME: _ORDERED_OPS | RELATIVE_OPS | {"before", "after"},
    FieldType.TAGS: frozenset({"hasAny", "hasAll", "hasNone", "contains", "doesNotContain", "null", "notNull"}),
}
ALL_OPERATORS: frozenset[str] = frozenset().union(*OPERATORS_BY_TYPE.values(), SEGMENT_OPS)

_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")


class OperandError(Exception):
    """A condition value that does not fit its field type and operator."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise OperandError("invalid_value", f"expected a string, got {_kind(value)}")
    if len(value) > MAX_STRING_LENGTH:
        raise OperandError("value_too_large", f"string longer than {MAX_STRING_LENGTH} characters")
    return value


def _number(value: Any) -> int | float:
    # Numeric strings are accepted because react-querybuilder text inputs emit strings.
    if isinstance(value, str):
        text = _string(value).strip()
        if not _NUMBER_TEXT.fullmatch(text):
            raise OperandError("invalid_value", f"expected a number, got {value!r}")
        number: int | float = int(text) if _INT_TEXT.fullmatch(text) else float(text)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    else:
        raise OperandError("invalid_value", f"expected a number, got {_kind(value)}")
    if isinstance(number, float) and not math.isfinite(number):
        raise OperandError("invalid_value", "expected a finite number")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise OperandError("invalid_value", f"expected true or false, got {_kind(value)}")


def _datetime(value: Any) -> int:
    if isinstance(value, str):
        _string(value)
    try:
        return parse_datetime_ms(value)
    except ValueError as exc:
        raise OperandError("invalid_value", str(exc)) from None


_SCALAR: Mapping[FieldType, Callable[[Any], Any]] = {
    FieldType.STRING: _string,
    FieldType.NUMBER: _number,
    FieldType.BOOLEAN: _boolean,
    FieldType.DATETIME: _datetime,
    FieldType.TAGS: _string,
}


def _kind(value: Any) -> str:
    if value is None:
        return "no value"
    if isinstance(value, (list, tuple)):
        return "a list"
    return repr(value) if isinstance(value, str) else type(value).__name__


def _list(value: Any) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise OperandError("invalid_value", f"expected a list or comma-separated string, got {_kind(value)}")
    if not value:
        raise OperandError("invalid_value", "expected at least one value")
    if len(value) > MAX_LIST_VALUES:
        raise OperandError("value_too_large", f"more than {MAX_LIST_VALUES} values")
    return tuple(value)


def coerce_operand(ftype: FieldType, operator: str, value: Any) -> Any:
    """Parsed condition value -> typed operand (raises OperandError).

    Returns None for null/notNull, a tuple for in/notIn/hasAny/hasAll/hasNone,
    an ordered (lo, hi) pair for between/notBetween, else one typed scalar
    (str, int|float, bool, or int epoch ms). Strings are not casefolded here.
    """
    if operator in ("null", "notNull"):
        return None
    if operator in RELATIVE_OPS:
        try:
            return parse_duration_ms(value)
        except ValueError as exc:
            raise OperandError("invalid_value", str(exc)) from None
    scalar = _SCALAR[ftype]
    if operator in ("in", "notIn", "hasAny", "hasAll", "hasNone"):
        return tuple(scalar(v) for v in _list(value))
    if operator in ("between", "notBetween"):
        bounds = _list(value)
        if len(bounds) != 2:
            raise OperandError("invalid_value", f"{operator} needs exactly 2 bounds, got {len(bounds)}")
        lo, hi = scalar(bounds[0]), scalar(bounds[1])
        if lo > hi:
            raise OperandError("invalid_value", f"lower bound {bounds[0]!r} is greater than upper bound {bounds[1]!r}")
        return (lo, hi)
    return scalar(value)


def _count_conditions(rule: Rule) -> int:
    if isinstance(rule, Group):
        return sum(_count_conditions(child) for child in rule.rules)
    return 1


def validate_rule(group: Group, catalog: Mapping[str, FieldType]) -> list[RuleProblem]:
    """Every problem in ``group`` (empty list = valid), in document order."""
    problems: list[RuleProblem] = []
    if not isinstance(group, Group):
        return [RuleProblem("invalid_shape", "", None, None, "the root of a rule must be a group")]
    _check(group, catalog, 1, problems)
    total = _count_conditions(group)
    if total > MAX_CONDITIONS:
        problems.append(RuleProblem(
            "too_many_conditions", "", None, None,
            f"rule has {total} conditions; the limit is {MAX_CONDITIONS}",
        ))
    return problems


def _check(rule: Any, catalog: Mapping[str, FieldType], depth: int, problems: list[RuleProblem]) -> None:
    if isinstance(rule, Group):
        if depth > MAX_DEPTH:
            problems.append(RuleProblem(
                "too_deep", rule.path, None, None,
                f"groups are nested more than {MAX_DEPTH} levels deep",
            ))
            return  # one problem per over-deep subtree is enough
        if rule.combinator not in ("and", "or"):
            problems.append(RuleProblem(
                "invalid_shape", rule.path, None, None,
                f"combinator must be 'and' or 'or', got {rule.combinator!r}",
            ))
        if not rule.rules:
            problems.append(RuleProblem("empty_group", rule.path, None, None, "group has no rules"))
        for child in rule.rules:
            _check(child, catalog, depth + 1, problems)
    elif isinstance(rule, Condition):
        problem = check_condition(rule, catalog)
        if problem is not None:
            problems.append(problem)
    else:
        problems.append(RuleProblem("invalid_shape", "", None, None, f"unexpected rule node {type(rule).__name__}"))


def field_type(field: str, catalog: Mapping[str, FieldType]) -> FieldType | None:
    """The type of a record field or an aggregate field; None if there is no such field."""
    if field.startswith(EVENTS_PREFIX):
        parsed = parse_aggregate_field(field)
        return parsed.field_type if isinstance(parsed, AggregateField) else None
    return catalog.get(field)


def check_condition(cond: Condition, catalog: Mapping[str, FieldType]) -> RuleProblem | None:
    """The first problem with one condition, or None."""
    field, op, path = cond.field, cond.operator, cond.path

    def problem(code: str, message: str) -> RuleProblem:
        return RuleProblem(code, path, field, op, message)

    if field == SEGMENT_FIELD:
        if op not in SEGMENT_OPS:
            return problem("operator_not_allowed", f"the segment field takes memberOf or notMemberOf, not {op!r}")
        if not isinstance(cond.value, str) or _SEGMENT_ID.fullmatch(cond.value) is None:
            return problem("invalid_value", f"{op} needs a segment id, got {_kind(cond.value)}")
        return _no_window_or_where(cond, problem)
    if field.startswith(EVENTS_PREFIX):
        parsed = parse_aggregate_field(field)
        if not isinstance(parsed, AggregateField):
            return problem("unknown_field", parsed)
        found = _check_aggregate_options(cond, problem)
        if found is not None:
            return found
        ftype: FieldType | None = parsed.field_type
    else:
        if not is_valid_field_name(field):
            return problem("invalid_field_name", f"{field!r} is not a valid field name")
        ftype = catalog.get(field)
        if ftype is None:
            return problem("unknown_field", f"unknown field {field!r}")
        found = _no_window_or_where(cond, problem)
        if found is not None:
            return found
    assert ftype is not None
    if op not in ALL_OPERATORS:
        return problem("unknown_operator", f"unknown operator {op!r}")
    if op not in OPERATORS_BY_TYPE[ftype]:
        allowed = ", ".join(sorted(OPERATORS_BY_TYPE[ftype]))
        return problem("operator_not_allowed",
                       f"operator {op!r} cannot be used on {ftype.value} field {field!r}; allowed: {allowed}")
    try:
        coerce_operand(ftype, op, cond.value)
    except OperandError as exc:
        return problem(exc.code, f"field {field!r} ({ftype.value}) operator {op!r}: {exc.message}")
    return None


def _no_window_or_where(cond: Condition, problem: Callable[[str, str], RuleProblem]) -> RuleProblem | None:
    if cond.window is not None or cond.where is not None:
        return problem("invalid_shape", "only aggregate conditions (events.…) take 'window' or 'where'")
    return None


def _check_aggregate_options(cond: Condition, problem: Callable[[str, str], RuleProblem]) -> RuleProblem | None:
    if cond.window is not None:
        try:
            window = condition_window(cond)
        except ValueError as exc:
            return problem("invalid_window", f"window: {exc}")
        if window is not None and window > HORIZON_MS:
            return problem("invalid_window", f"window is longer than the {HORIZON_MS // 86_400_000}-day horizon")
    if cond.where is not None:
        if len(cond.where) != 1:
            return problem("invalid_where", "'where' filters on exactly one event property")
        (prop, value), = cond.where
        if not isinstance(prop, str) or FIELD_NAME_RE.fullmatch(prop) is None:
            return problem("invalid_where", f"where: {prop!r} is not a valid property name")
        if not isinstance(value, str) or not 0 < len(value) <= MAX_STRING_LENGTH:
            return problem("invalid_where", f"where: property {prop!r} must equal a non-empty string")
    return None


def condition_window(cond: Condition) -> int | None:
    """An aggregate condition's window in ms (None = all time); ValueError if it is not a duration."""
    return None if cond.window is None else parse_duration_ms(cond.window)


def condition_where(cond: Condition) -> tuple[str, str] | None:
    """An aggregate condition's one (property, value) filter, or None."""
    return None if cond.where is None else cond.where[0]
