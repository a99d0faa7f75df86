"""Predicate indexing: which segments could a record match at all, found by hash lookups.

Most CRM rules are an AND with an equality among its conditions (``country = PL``, ``status in
(lead, trial)``, ``tags hasAny (vip)``). That condition is a *guard*: a record whose value is not among
its keys cannot match, whatever the rest of the rule says. Indexing segments by guard key lets the
engine skip them for such a record without running the rule, so the rules evaluated per change grow
with the segments a record could match, not with every segment that reads a changed field.

A rule without an equality but with a range among its AND conditions (``lifetime_value > 1000``,
``created_at between ...``) is guarded by that *bound* instead: bounds of a field are kept sorted, and a
record's value admits a prefix (lower bounds at or below it) or a suffix (upper bounds at or above it),
found by bisection.

A segment is still evaluated when the record is a member (it may have to leave) or when its rule has
no guard (an OR or a negated root, relative dates only). Skipping is exact: a skipped segment would
have evaluated to false for a non-member, which is no transition.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping, Set
from itertools import product
from typing import Any, NamedTuple

from .catalog import EVENTS_PREFIX, SEGMENT_FIELD, FieldType
from .model import Condition, Group
from .validate import coerce_operand, field_type


class Term(NamedTuple):
    """One necessary condition: the record's ``field`` (casefolded for strings; any one tag of a tag
    list) is one of ``keys``."""

    field: str
    field_type: FieldType
    keys: frozenset[Any]


Guard = tuple[Term, ...]  # terms on distinct fields, all necessary; indexed by the product of their keys


class Bound(NamedTuple):
    """A necessary range: the record's number or datetime ``field`` is >= ``value`` (``lower``) or
    <= ``value`` (not ``lower``). Strict comparisons are kept as their closed form: a superset."""

    field: str
    value: int | float
    lower: bool


_LOWER_OPS = {">", ">=", "after", "between"}
_UPPER_OPS = {"<", "<=", "before"}

# Selectivity guessed per key: a boolean key admits about half the records, a tag or a category a few.
_WEIGHT = {FieldType.STRING: 1, FieldType.NUMBER: 1, FieldType.DATETIME: 1, FieldType.TAGS: 2, FieldType.BOOLEAN: 8}
MAX_TERMS = 2  # two terms cut the candidates about 5x more than one here; a third adds little
WORTH_NARROWING = 8  # below this many candidates, the lookups cost about what evaluating them does
MAX_KEYS = 16  # product of the terms' key counts: index entries per segment


def guard_of(tree: Group, catalog: Mapping[str, FieldType]) -> Guard | None:
    """The most selective guard of a validated rule (up to MAX_TERMS terms), or None if it has none."""
    terms = sorted(
        (t for cond in _conjuncts(tree) if (t := _condition_term(cond, catalog)) is not None),
        key=lambda t: (len(t.keys) * _WEIGHT[t.field_type], t.field, sorted(map(str, t.keys))))
    chosen: list[Term] = []
    keys = 1
    for term in terms:
        if len(chosen) < MAX_TERMS and term.field not in {t.field for t in chosen} and keys * len(term.keys) <= MAX_KEYS:
            chosen.append(term)
            keys *= len(term.keys)
    return tuple(sorted(chosen, key=lambda t: t.field)) or None


def bound_of(tree: Group, catalog: Mapping[str, FieldType]) -> Bound | None:
    """A range condition among the rule's AND conditions (the first by field name), or None."""
    bounds = []
    for cond in _conjuncts(tree):
        if cond.field == SEGMENT_FIELD or cond.field.startswith(EVENTS_PREFIX):
            continue
        if field_type(cond.field, catalog) not in (FieldType.NUMBER, FieldType.DATETIME):
            continue
        if cond.operator in _LOWER_OPS or cond.operator in _UPPER_OPS:
            operand = coerce_operand(field_type(cond.field, catalog), cond.operator, cond.value)  # type: ignore[arg-type]
            value = operand[0] if cond.operator == "between" else operand
            bounds.append(Bound(cond.field, value, cond.operator in _LOWER_OPS))
    return min(bounds, default=None)


def _conjuncts(group: Group) -> Iterator[Condition]:
    """Conditions that must all hold for the group to hold: children of non-negated AND groups."""
    if group.negated or (group.combinator != "and" and len(group.rules) != 1):
        return
    for rule in group.rules:
        if isinstance(rule, Group):
            yield from _conjuncts(rule)
        else:
            yield rule


def _condition_term(cond: Condition, catalog: Mapping[str, FieldType]) -> Term | None:
    if cond.field == SEGMENT_FIELD or cond.field.startswith(EVENTS_PREFIX):
        return None
    ftype = field_type(cond.field, catalog)
    op = cond.operator
    if ftype is None:
        return None
    if ftype is FieldType.TAGS:
        if op not in ("contains", "hasAny", "hasAll"):
            return None
        operand = coerce_operand(ftype, op, cond.value)
        tags = [operand] if op == "contains" else list(operand)
        if op == "hasAll":  # every tag is required: one of them is term enough
            tags = [min(tags, key=str.casefold)]
        return Term(cond.field, ftype, frozenset(t.casefold() for t in tags))
    if op not in ("=", "in"):
        return None
    operand = coerce_operand(ftype, op, cond.value)
    values = list(operand) if op == "in" else [operand]
    if ftype is FieldType.STRING:
        values = [v.casefold() for v in values]
    return Term(cond.field, ftype, frozenset(values))


def _record_keys(ftype: FieldType, value: Any) -> list[Any]:
    """The keys a record's value offers to a term on its field (none when it has no value)."""
    if value is None:
        return []
    if ftype is FieldType.TAGS:
        return [tag.casefold() for tag in value]
    return [value.casefold() if ftype is FieldType.STRING else value]


class GuardIndex:
    """Guard fields -> key (or pair of keys) -> ids of the segments guarded by it; plus the ids without a guard."""

    __slots__ = ("_by_fields", "_bounds", "_guards", "unguarded")

    def __init__(self) -> None:
        self._by_fields: dict[Shape, dict[Any, set[str]]] = {}
        self._bounds: dict[tuple[str, bool], Bounds] = {}  # (field, lower) -> sorted bounds
        self._guards: dict[str, Guard | Bound] = {}
        self.unguarded: set[str] = set()

    def add(self, segment_id: str, guard: Guard | Bound | None) -> None:
        """Register (or re-register after an edit) a segment under its guard."""
        self.remove(segment_id)
        if guard is None:
            self.unguarded.add(segment_id)
            return
        self._guards[segment_id] = guard
        if isinstance(guard, Bound):
            self._bounds.setdefault((guard.field, guard.lower), Bounds()).add(guard.value, segment_id)
            return
        by_key = self._by_fields.setdefault(_shape(guard), {})
        for key in _keys(guard):
            by_key.setdefault(key, set()).add(segment_id)

    def remove(self, segment_id: str) -> None:
        """Forget a segment; unknown ids are ignored so deletes are idempotent."""
        self.unguarded.discard(segment_id)
        guard = self._guards.pop(segment_id, None)
        if guard is None:
            return
        if isinstance(guard, Bound):
            bounds = self._bounds[(guard.field, guard.lower)]
            bounds.remove(guard.value, segment_id)
            if not bounds.values:
                del self._bounds[(guard.field, guard.lower)]
            return
        shape = _shape(guard)
        by_key = self._by_fields[shape]
        for key in _keys(guard):
            ids = by_key[key]
            ids.discard(segment_id)
            if not ids:
                del by_key[key]
        if not by_key:
            del self._by_fields[shape]

    def narrow(self, candidates: Set[str], fields: Mapping[str, Any], members: Set[str]) -> Set[str]:
        """The candidates that can change for this record: its memberships, the unguarded ones, and
        those whose guard admits its fields. Set intersections run in C over the smaller side."""
        if len(candidates) <= WORTH_NARROWING or not self._guards:
            return candidates
        out = set(candidates & members)  # type: ignore[operator]
        out |= candidates & self.unguarded  # type: ignore[operator]
        offered: dict[str, list[Any]] = {}  # field -> the keys the record offers (computed once per field)
        for (first, second), by_key in self._by_fields.items():
            a = offered.get(first[0])
            if a is None:
                a = offered[first[0]] = _record_keys(first[1], fields.get(first[0]))
            if not a:
                continue
            if second is None:
                for k in a:
                    ids = by_key.get(k)
                    if ids:
                        out |= candidates & ids  # type: ignore[operator]
                continue
            b = offered.get(second[0])
            if b is None:
                b = offered[second[0]] = _record_keys(second[1], fields.get(second[0]))
            for k in a:
                for l in b:
                    ids = by_key.get((k, l))
                    if ids:
                        out |= candidates & ids  # type: ignore[operator]
        for (name, lower), bounds in self._bounds.items():
            x = fields.get(name)
            if x is not None:
                out |= candidates.intersection(bounds.admitting(x, lower))  # type: ignore[attr-defined]
        return out

    def guard(self, segment_id: str) -> Guard | Bound | None:
        return self._guards.get(segment_id)

    def __len__(self) -> int:
        return len(self._guards) + len(self.unguarded)


class Bounds:
    """Bounds of one field and direction, sorted by value, with the segment ids in the same order."""

    __slots__ = ("values", "ids")

    def __init__(self) -> None:
        self.values: list[int | float] = []
        self.ids: list[str] = []

    def add(self, value: int | float, segment_id: str) -> None:
        at = bisect_right(self.values, value)  # list.insert moves pointers in C: loading 10,000 stays fast
        self.values.insert(at, value)
        self.ids.insert(at, segment_id)

    def remove(self, value: int | float, segment_id: str) -> None:
        at = bisect_left(self.values, value)
        while self.ids[at] != segment_id:  # among the bounds of equal value
            at += 1
        del self.values[at], self.ids[at]

    def admitting(self, x: int | float, lower: bool) -> list[str]:
        """Ids whose bound `x` satisfies: lower bounds <= x (a prefix), upper bounds >= x (a suffix)."""
        if lower:
            return self.ids[: bisect_right(self.values, x)]
        return self.ids[bisect_left(self.values, x):]


Shape = tuple[tuple[str, FieldType], "tuple[str, FieldType] | None"]  # the guard's one or two fields


def _shape(guard: Guard) -> Shape:
    first = (guard[0].field, guard[0].field_type)
    return (first, (guard[1].field, guard[1].field_type) if len(guard) > 1 else None)


def _keys(guard: Guard) -> list[Any]:
    """Index keys of a guard: its one term's keys, or every pair of its two terms' keys."""
    if len(guard) == 1:
        return list(guard[0].keys)
    return list(product(guard[0].keys, guard[1].keys))
