# mypy: disable-error-code="misc"
# (mypy cannot infer lambdas with a default argument; every closure here is a Predicate.)
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
``before``          datetime                     x < v (v a date)
``after``           datetime                     x > v (v a date)
``withinLast``      datetime                     now - d <= x <= now      (d a duration)
``moreThanAgo``     datetime                     x < now - d
``withinNext``      datetime                     now <= x <= now + d
``memberOf``        the ``segment`` field        the record is in segment v (same workspace/type)
``notMemberOf``     the ``segment`` field        not memberOf
==================  ===========================  ==============================================

Durations are ``"30 days"``, ``"12 hours"``, ``{"amount": 30, "unit": "days"}`` (minutes, hours,
days, weeks). ``now`` is the engine's time (Context.now), never read from a wall clock here, so the
engine decides when time moves and every result is reproducible.

Aggregate fields ``events.<event>.count|last_seen`` and ``events.<event>.sum|min|max.<property>``
read the record's activity (activity.py) and compare like number / datetime fields, optionally over a
sliding ``window`` and filtered by ``where: {property: value}`` (one property, equal, case-insensitive).
``count`` and ``sum`` of nothing are 0; ``min``, ``max`` and ``last_seen`` of nothing are missing.

Time-dependent conditions (relative dates, windowed aggregates) also compile to a *boundary*
function: the earliest instant after ``now`` at which the condition's result can change for the
record as it is. The engine schedules a re-evaluation at the minimum over a record's segments.

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
from dataclasses import dataclass, field
from typing import Any

from .activity import aggregate, next_boundary, stream_name
from .catalog import EVENTS_PREFIX, SEGMENT_FIELD, AggregateField, FieldType, parse_aggregate_field
from .context import WALL_CLOCK, Context
from .errors import InvalidRule
from .model import Condition, Group, Rule
from .validate import RELATIVE_OPS, coerce_operand, condition_where, condition_window, field_type, validate_rule

Record = Mapping[str, Any]
Predicate = Callable[[Record, Context], bool]
Boundary = Callable[[Record, Context], "int | None"]
Getter = Callable[[Record, Context], Any]

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
    "notMemberOf": "memberOf",
}
#: Operators that are another name for a comparison.
ALIASES: Mapping[str, str] = {"before": "<", "after": ">"}


@dataclass
class Reads:
    """What a rule depends on besides its own constants, collected while compiling."""

    fields: set[str] = field(default_factory=set)  # record fields, and events.<name> per event read
    segments: set[str] = field(default_factory=set)  # ids of segments it references
    streams: set[tuple[str, tuple[str, str] | None]] = field(default_factory=set)  # (event, where)
    time_fields: set[str] = field(default_factory=set)  # fields whose value decides a time boundary
    boundaries: list[Boundary] = field(default_factory=list)


def compile_rule(group: Group, catalog: Mapping[str, FieldType], reads: Reads | None = None) -> Predicate:
    """Validated closure tree for ``group``; raises InvalidRule rather than compile garbage."""
    problems = validate_rule(group, catalog)
    if problems:
        raise InvalidRule(problems)
    return _compile(group, catalog, reads if reads is not None else Reads())


def fields_read(group: Rule) -> frozenset[str]:
    """Every field the rule can read: a change to any other field cannot change its result.

    Aggregates read ``events.<event>``; segment references read no field (see Reads.segments).
    """
    out: set[str] = set()
    stack: list[Rule] = [group]
    while stack:
        node = stack.pop()
        if isinstance(node, Group):
            stack.extend(node.rules)
        elif node.field.startswith(EVENTS_PREFIX):
            out.add(EVENTS_PREFIX + node.field[len(EVENTS_PREFIX):].split(".", 1)[0])
        elif node.field != SEGMENT_FIELD:
            out.add(node.field)
    return frozenset(out)


def _compile(rule: Rule, catalog: Mapping[str, FieldType], reads: Reads) -> Predicate:
    if isinstance(rule, Condition):
        return compile_condition(rule, catalog, reads)
    return combine(rule.combinator, rule.negated, tuple(_compile(c, catalog, reads) for c in rule.rules))


def combine(combinator: str, negated: bool, preds: tuple[Predicate, ...]) -> Predicate:
    """Short-circuiting and/or over child predicates, negated if asked."""
    inner: Predicate
    if len(preds) == 1:
        inner = preds[0]
    elif combinator == "and":
        def inner(r: Record, c: Context = WALL_CLOCK) -> bool:
            for p in preds:
                if not p(r, c):
                    return False
            return True
    else:
        def inner(r: Record, c: Context = WALL_CLOCK) -> bool:
            for p in preds:
                if p(r, c):
                    return True
            return False
    if not negated:
        return inner

    def negated_pred(r: Record, c: Context = WALL_CLOCK) -> bool:
        return not inner(r, c)
    return negated_pred


def value_getter(cond: Condition) -> Getter:
    """How a condition reads its value: a record field, an aggregate, or the record's memberships."""
    if cond.field == SEGMENT_FIELD:
        segment_id = cond.value
        return lambda r, c: segment_id in c.members
    if cond.field.startswith(EVENTS_PREFIX):
        agg = parse_aggregate_field(cond.field)
        assert isinstance(agg, AggregateField)
        stream = stream_name(agg.event, condition_where(cond))
        window = condition_window(cond)
        function, prop = agg.function, agg.prop
        return lambda r, c: aggregate(c.activity, stream, function, prop, window, c.now)
    f = cond.field
    return lambda r, c: r.get(f)


def compile_condition(cond: Condition, catalog: Mapping[str, FieldType], reads: Reads | None = None) -> Predicate:
    """Closure for one (already validated) condition; records what it reads in ``reads``."""
    reads = reads if reads is not None else Reads()
    if cond.field == SEGMENT_FIELD:
        reads.segments.add(cond.value)
        segment_id = cond.value
        if cond.operator == "memberOf":
            return lambda r, c=WALL_CLOCK: segment_id in c.members
        return lambda r, c=WALL_CLOCK: segment_id not in c.members
    ftype = field_type(cond.field, catalog)
    assert ftype is not None, "validate_rule should have rejected an unknown field"
    op = ALIASES.get(cond.operator, cond.operator)
    operand = coerce_operand(ftype, cond.operator, cond.value)
    if cond.field.startswith(EVENTS_PREFIX):
        pred = _aggregate_condition(cond, ftype, op, operand, reads)
    else:
        reads.fields.add(cond.field)
        positive_op = NEGATIONS.get(op)
        pos = _positive(cond.field, ftype, positive_op or op, operand)
        pred = pos if positive_op is None else _negate(pos)
        if op in RELATIVE_OPS:
            reads.time_fields.add(cond.field)
            reads.boundaries.append(_relative_boundary(value_getter(cond), op, operand))
    return pred


def _negate(pos: Predicate) -> Predicate:
    def negative(r: Record, c: Context = WALL_CLOCK) -> bool:
        return not pos(r, c)
    return negative


def _aggregate_condition(cond: Condition, ftype: FieldType, op: str, operand: Any, reads: Reads) -> Predicate:
    """An aggregate compares like a field holding its value: evaluate the aggregate, then compare."""
    agg = parse_aggregate_field(cond.field)
    assert isinstance(agg, AggregateField)
    where = condition_where(cond)
    window = condition_window(cond)
    pseudo_field = EVENTS_PREFIX + agg.event
    reads.fields.add(pseudo_field)
    reads.streams.add((agg.event, where))
    stream = stream_name(agg.event, where)
    get = value_getter(cond)
    positive_op = NEGATIONS.get(op)
    compare = _positive("v", ftype, positive_op or op, operand)
    if positive_op is None:
        def aggregate_pred(r: Record, c: Context = WALL_CLOCK) -> bool:
            return compare({"v": get(r, c)}, c)
    else:
        def aggregate_pred(r: Record, c: Context = WALL_CLOCK) -> bool:
            return not compare({"v": get(r, c)}, c)
    if window is not None:
        reads.time_fields.add(pseudo_field)
        reads.boundaries.append(lambda r, c: next_boundary(c.activity, stream, window, c.now))
    if op in RELATIVE_OPS:
        reads.time_fields.add(pseudo_field)
        reads.boundaries.append(_relative_boundary(get, op, operand))
    return aggregate_pred


def _relative_boundary(get: Getter, op: str, d: int) -> Boundary:
    """When a relative-date condition over value x can next flip: the instants where its interval starts
    (the condition becomes true at that ms) or ends (false from the next ms)."""
    def boundary(r: Record, c: Context) -> int | None:
        x = get(r, c)
        if x is None:
            return None
        if op == "withinLast":  # now in [x, x + d]
            instants: tuple[int, ...] = (x, x + d + 1)
        elif op == "moreThanAgo":  # now > x + d
            instants = (x + d + 1,)
        else:  # withinNext: now in [x - d, x]
            instants = (x - d, x + 1)
        now = c.now
        later = [t for t in instants if t > now]
        return min(later) if later else None
    return boundary


def next_change(boundaries: list[Boundary]) -> Callable[[Record, Context], int | None]:
    """The earliest boundary of any time-dependent condition of a rule (None: time cannot flip it)."""
    frozen = tuple(boundaries)

    def earliest(r: Record, c: Context) -> int | None:
        best: int | None = None
        for b in frozen:
            t = b(r, c)
            if t is not None and (best is None or t < best):
                best = t
        return best
    return earliest


def _positive(f: str, ftype: FieldType, op: str, v: Any) -> Predicate:  # noqa: C901 - one flat table
    W = WALL_CLOCK
    if op == "null":
        if ftype is FieldType.TAGS:
            return lambda r, c=W: not r.get(f)
        return lambda r, c=W: r.get(f) is None

    if ftype is FieldType.TAGS:
        if op == "contains":
            tag = v.casefold()

            def tags_contains(r: Record, c: Context = W) -> bool:
                x = r.get(f)
                if x:
                    for t in x:
                        if t.casefold() == tag:
                            return True
                return False
            return tags_contains
        wanted = frozenset(s.casefold() for s in v)
        if op == "hasAny":
            def has_any(r: Record, c: Context = W) -> bool:
                x = r.get(f)
                if x:
                    for t in x:
                        if t.casefold() in wanted:
                            return True
                return False
            return has_any
        if op == "hasAll":
            def has_all(r: Record, c: Context = W) -> bool:
                x = r.get(f)
                if not x:
                    return False
                return wanted.issubset([t.casefold() for t in x])
            return has_all

    elif ftype is FieldType.STRING:
        if op == "in":
            options = frozenset(s.casefold() for s in v)
            return lambda r, c=W: (x := r.get(f)) is not None and x.casefold() in options
        k = v.casefold()
        if op == "=":
            return lambda r, c=W: (x := r.get(f)) is not None and x.casefold() == k
        if op == "contains":
            return lambda r, c=W: (x := r.get(f)) is not None and k in x.casefold()
        if op == "beginsWith":
            return lambda r, c=W: (x := r.get(f)) is not None and x.casefold().startswith(k)
        if op == "endsWith":
            return lambda r, c=W: (x := r.get(f)) is not None and x.casefold().endswith(k)

    else:  # NUMBER, BOOLEAN, DATETIME: values are already int|float|bool|epoch-ms
        if op == "=":
            return lambda r, c=W: (x := r.get(f)) is not None and x == v
        if op == "in":
            options = frozenset(v)
            return lambda r, c=W: (x := r.get(f)) is not None and x in options
        if op == "<":
            return lambda r, c=W: (x := r.get(f)) is not None and x < v
        if op == ">":
            return lambda r, c=W: (x := r.get(f)) is not None and x > v
        if op == "<=":
            return lambda r, c=W: (x := r.get(f)) is not None and x <= v
        if op == ">=":
            return lambda r, c=W: (x := r.get(f)) is not None and x >= v
        if op == "between":
            lo, hi = v
            return lambda r, c=W: (x := r.get(f)) is not None and lo <= x <= hi
        if op == "withinLast":
            return lambda r, c=W: (x := r.get(f)) is not None and c.now - v <= x <= c.now
        if op == "moreThanAgo":
            return lambda r, c=W: (x := r.get(f)) is not None and x < c.now - v
        if op == "withinNext":
            return lambda r, c=W: (x := r.get(f)) is not None and c.now <= x <= c.now + v

    raise AssertionError(f"no evaluator for {ftype.value} {op!r}; validate_rule should have rejected it")
