"""Compile a validated rule tree into a tree of closures over a normalised record.

Everything that depends only on the rule (casefolded strings, frozensets, datetime
bounds) is computed once here; a call only reads the record and compares.

Operator semantics (react-querybuilder names). ``x`` is the record value, ``v`` the rule value.
String and tag comparisons are case-insensitive (``str.casefold`` on both sides).

==================  ===========================  ==============================================
Operator            Field types                  True when
==================  ===========================  ==============================================
``=``               string number boolean dt     x equals v
``!=``              string number boolean dt     not (x = v)
``<`` ``>``         number datetime              x < v, x > v
``<=`` ``>=``       number datetime              x <= v, x >= v
``between``         number datetime              lo <= x <= hi (inclusive; lo > hi is invalid)
``notBetween``      number datetime              not between
``in``              string number                x equals one of the values
``notIn``           string number                not in
``contains``        string                       v is a substring of x
``contains``        tags                         one tag of x equals v
``doesNotContain``  string tags                  not contains
``beginsWith``      string                       x starts with v
``doesNotBeginWith`` string                      not beginsWith
``endsWith``        string                       x ends with v
``doesNotEndWith``  string                       not endsWith
``hasAny``          tags                         x has at least one of the values
``hasAll``          tags                         x has every one of the values
``hasNone``         tags                         not hasAny
``null``            all                          x is missing or None (tags: or empty list)
``notNull``         all                          not null
==================  ===========================  ==============================================

A missing/None field (or empty tag list) makes every positive operator false and every
negative operator (``!=``, ``notIn``, ``notBetween``, ``doesNotContain``,
``doesNotBeginWith``, ``doesNotEndWith``, ``hasNone``) true: each negative operator is
exactly the negation of its positive twin. Values for in/notIn/between/notBetween/
hasAny/hasAll/hasNone may be a JSON list or a comma-separated string; number values
may be numeric strings; datetime values are ISO-8601 strings (naive = UTC) or int epoch
ms; null/notNull ignore any value. A group with ``"not": true`` negates its result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .catalog import FieldType
from .errors import InvalidRule
from .model import Condition, Group, Rule
from .validate import coerce_operand, validate_rule

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]

#: Negative operator -> its positive twin.
NEGATIONS: Mapping[str, str] = {
    "!=": "=",
    "notIn": "in",
    "notBetween": "between",
    "doesNotContain": "contains",
    "doesNotBeginWith": "beginsWith",
    "doesNotEndWith": "endsWith",
    "hasNone": "hasAny",
    "notNull": "null",
}


def compile_rule(group: Group, catalog: Mapping[str, FieldType]) -> Predicate:
    """Validated closure tree for ``group``; raises InvalidRule rather than compile garbage."""
    problems = validate_rule(group, catalog)
    if problems:
        raise InvalidRule(problems)
    return _compile(group, catalog)


def fields_read(group: Rule) -> frozenset[str]:
    """Every field the rule can read: a change to any other field cannot change its result."""
    if isinstance(group, Condition):
        return frozenset((group.field,))
    out: set[str] = set()
    stack: list[Rule] = [group]
    while stack:
        node = stack.pop()
        if isinstance(node, Group):
            stack.extend(node.rules)
        else:
            out.add(node.field)
    return frozenset(out)


def _compile(rule: Rule, catalog: Mapping[str, FieldType]) -> Predicate:
    if isinstance(rule, Condition):
        return compile_condition(rule, catalog[rule.field])
    return combine(rule.combinator, rule.negated, tuple(_compile(c, catalog) for c in rule.rules))


def combine(combinator: str, negated: bool, preds: tuple[Predicate, ...]) -> Predicate:
    """Short-circuiting and/or over child predicates, negated if asked."""
    inner: Predicate
    if len(preds) == 1:
        inner = preds[0]
    elif combinator == "and":
        def inner(r: Record) -> bool:
            for p in preds:
                if not p(r):
                    return False
            return True
    else:
        def inner(r: Record) -> bool:
            for p in preds:
                if p(r):
                    return True
            return False
    if not negated:
        return inner

    def negated_pred(r: Record) -> bool:
        return not inner(r)
    return negated_pred


def compile_condition(cond: Condition, ftype: FieldType) -> Predicate:
    """Closure for one (already validated) condition."""
    positive_op = NEGATIONS.get(cond.operator)
    if positive_op is None:
        return _positive(cond.field, ftype, cond.operator, coerce_operand(ftype, cond.operator, cond.value))
    pos = _positive(cond.field, ftype, positive_op, coerce_operand(ftype, cond.operator, cond.value))

    def negative(r: Record) -> bool:
        return not pos(r)
    return negative


def _positive(f: str, ftype: FieldType, op: str, v: Any) -> Predicate:  # noqa: C901 - one flat table
    if op == "null":
        if ftype is FieldType.TAGS:
            return lambda r: not r.get(f)
        return lambda r: r.get(f) is None

    if ftype is FieldType.TAGS:
        if op == "contains":
            tag = v.casefold()

            def tags_contains(r: Record) -> bool:
                x = r.get(f)
                if x:
                    for t in x:
                        if t.casefold() == tag:
                            return True
                return False
            return tags_contains
        wanted = frozenset(s.casefold() for s in v)
        if op == "hasAny":
            def has_any(r: Record) -> bool:
                x = r.get(f)
                if x:
                    for t in x:
                        if t.casefold() in wanted:
                            return True
                return False
            return has_any
        if op == "hasAll":
            def has_all(r: Record) -> bool:
                x = r.get(f)
                if not x:
                    return False
                return wanted.issubset([t.casefold() for t in x])
            return has_all

    elif ftype is FieldType.STRING:
        if op == "in":
            options = frozenset(s.casefold() for s in v)
            return lambda r: (x := r.get(f)) is not None and x.casefold() in options
        c = v.casefold()
        if op == "=":
            return lambda r: (x := r.get(f)) is not None and x.casefold() == c
        if op == "contains":
            return lambda r: (x := r.get(f)) is not None and c in x.casefold()
        if op == "beginsWith":
            return lambda r: (x := r.get(f)) is not None and x.casefold().startswith(c)
        if op == "endsWith":
            return lambda r: (x := r.get(f)) is not None and x.casefold().endswith(c)

    else:  # NUMBER, BOOLEAN, DATETIME: values are already int|float|bool|epoch-ms
        if op == "=":
            return lambda r: (x := r.get(f)) is not None and x == v
        if op == "in":
            options = frozenset(v)
            return lambda r: (x := r.get(f)) is not None and x in options
        if op == "<":
            return lambda r: (x := r.get(f)) is not None and x < v
        if op == ">":
            return lambda r: (x := r.get(f)) is not None and x > v
        if op == "<=":
            return lambda r: (x := r.get(f)) is not None and x <= v
        if op == ">=":
            return lambda r: (x := r.get(f)) is not None and x >= v
        if op == "between":
            lo, hi = v
            return lambda r: (x := r.get(f)) is not None and lo <= x <= hi

    raise AssertionError(f"no evaluator for {ftype.value} {op!r}; validate_rule should have rejected it")
