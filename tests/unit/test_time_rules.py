"""Property tests for time, behaviour and segment references in the rule core.

Random rules mix plain conditions, relative dates (withinLast / moreThanAgo / withinNext, before /
after), aggregates over a raw event history (count / last_seen / sum / min / max, with or without a
sliding window and a where filter) and memberOf / notMemberOf, in nested and/or/not groups. Events
have duplicate ids, come out of order, some in the future. Times are drawn around the durations the
rule itself uses, so window and interval edges (the exact minute, +-1 ms) are hit often.

1. compiled.matches == tests.naive_eval.naive_matches == explain(...).result, for the rule and for each
   of its conditions; every aggregate's value (explain's ``actual``) == the one recomputed from the
   raw history, at now and later (activity built as of now).
2. next_change is exact: following the schedule from now, the result is the same at every instant of
   [t, next_change) (checked at every change point the oracle knows, so with no gaps), and at
   next_change the rule flips or some condition really changes; None means nothing ever flips.
   The same on a deterministic grid of edges.
3. Invalid time / aggregate / segment conditions give InvalidRule with the right code, path, field and
   operator, wherever they sit; arbitrary JSON in a condition is refused that way or agrees with the oracle.

Event amounts are dyadic fractions (0.25, 2.5, ...) so sums are exact whatever order the engine's
buckets add them in: float rounding order is not what these tests are about.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import orjson
import pytest
from hypothesis import event as note
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.rules import Context, InvalidRule, explain, load_rule, parse_rule, validate_rule
from engine.rules.activity import add_event, numeric_properties, stream_name
from tests.naive_eval import (
    aggregate_value,
    change_points,
    condition_matches,
    conditions_of,
    is_time_condition,
    naive_matches,
    selected_events,
    unique_events,
)
from tests.unit.strategies import CATALOG, conditions as plain_conditions, records as plain_records

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
BASE_MINUTE = 1_718_000_000_000 // MINUTE  # June 2024

DATETIME_FIELDS = ["created_at", "last_contact_at", "custom.renewal_at"]
EVENT_NAMES = ["purchase", "page_view"]
SEGMENT_IDS = ["vip", "seg-2", "churn.risk"]

# Duration spellings -> ms, written out by hand (not computed by any parser).
WINDOWS: dict[str, int] = {
    "1 minute": MINUTE,
    "2 minutes": 2 * MINUTE,
    "45 minutes": 45 * MINUTE,
    "1 hour": HOUR,
    "12h": 12 * HOUR,
    "1 day": DAY,
    "7d": 7 * DAY,
    "2 weeks": 14 * DAY,
    "30 days": 30 * DAY,
    "90 days": 90 * DAY,
}
DICT_WINDOWS: list[tuple[dict[str, Any], int]] = [
    ({"amount": 3, "unit": "minutes"}, 3 * MINUTE),
    ({"amount": 1, "unit": "Hours"}, HOUR),
    ({"amount": 129_600, "unit": "minutes"}, 90 * DAY),
]
LONG_DURATIONS: dict[str, int] = {"13 weeks": 91 * DAY, "365 days": 365 * DAY}
RELATIVE_OPS = ["withinLast", "moreThanAgo", "withinNext"]
AGG = "events.purchase.count"
LAST = "events.purchase.last_seen"

AMOUNTS: list[Any] = [0, 1, 2, 2.5, 10, -3, 0.25, 100, 12.5]
ODD_AMOUNTS: list[Any] = [True, "10", float("nan"), float("inf"), None]  # never numbers to aggregate
CURRENCIES: list[Any] = ["EUR", "eur", "usd", "USD", "Straße", "STRASSE", "straße", 5]
URLS = ["/home", "/Home", "/HOME", "/pricing", "/straße", "/STRASSE"]
WHERE_VALUES = {"currency": ["EUR", "usd", "strasse", "Straße", "gbp"], "url": ["/home", "/PRICING", "/Straße", "/strasse"]}
AGG_NUMBERS: list[Any] = [0, 1, 2, 3, 2.5, 10, 12.5, -3, 100]
JITTER = [-60_001, -60_000, -59_999, -1, 0, 1, 59_999, 60_000, 60_001]

NUMBER_OPS = ["=", "!=", "<", ">", "<=", ">=", "between", "notBetween", "in", "notIn", "null", "notNull"]
DATE_OPS = ["=", "!=", "<", ">", "<=", ">=", "between", "notBetween", "null", "notNull", "before", "after"]


def iso(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)).isoformat()


def duration_spellings() -> st.SearchStrategy[tuple[Any, int]]:
    """(duration as a rule spells it, its ms)."""
    return st.one_of(st.sampled_from(sorted(WINDOWS.items())), st.sampled_from(DICT_WINDOWS))


def relative_durations() -> st.SearchStrategy[tuple[Any, int]]:
    return st.one_of(duration_spellings(), st.sampled_from(sorted(LONG_DURATIONS.items())))


# Instants are drawn as specs relative to ``now`` and to the durations the rule uses, and resolved once
# both are known (see resolve_instant): the strategies are built once, not per example.
_SIGN = st.sampled_from([-1, 1])
_INDEX = st.integers(0, 63)  # which edge: offsets[index % len(offsets)]
_EXACT = st.tuples(st.just("edge"), _SIGN, _INDEX, st.sampled_from([-1, 0, 0, 1]))
_EDGE = st.tuples(st.just("edge"), _SIGN, _INDEX, st.one_of(st.sampled_from(JITTER), st.integers(-2 * MINUTE, 2 * MINUTE)))
_MINUTE_EDGE = st.tuples(st.just("minute"), _SIGN, _INDEX, st.sampled_from([-1, 0, 1]),
                         st.sampled_from([0, 1, MINUTE - 1, MINUTE // 2]))
_INSIDE = st.tuples(st.just("inside"), _INDEX, st.integers(0, 1000))
INSTANT_SPECS = st.one_of(
    _EXACT, _MINUTE_EDGE, _INSIDE, _EXACT, _EDGE, _INSIDE, _EXACT, _MINUTE_EDGE,
    st.tuples(st.just("near"), st.integers(-3 * MINUTE, 3 * MINUTE)),
    st.tuples(st.just("wide"), st.integers(-100 * DAY, 100 * DAY)),
    st.tuples(st.just("far"), _SIGN, st.integers(91 * DAY, 400 * DAY)),
)


def resolve_instant(spec: tuple[Any, ...], now: int, offsets: list[int]) -> int:
    """An epoch-ms instant near ``now``, mostly on or next to an edge ``now +- offset``."""
    kind = spec[0]
    if kind == "edge":
        _, sign, index, jitter = spec
        return now + sign * offsets[index % len(offsets)] + jitter
    if kind == "minute":  # at the very start / end of a minute next to the edge minute
        _, sign, index, minutes, within = spec
        return ((now + sign * offsets[index % len(offsets)]) // MINUTE + minutes) * MINUTE + within
    if kind == "inside":  # somewhere in the last ``offset``, where a window of that width reaches
        _, index, thousandths = spec
        return now - offsets[index % len(offsets)] * thousandths // 1000
    if kind in ("near", "wide"):
        return now + spec[1]
    return now + spec[1] * spec[2]


class At(NamedTuple):
    """A rule's absolute date, still to be resolved: epoch ms, or ISO-8601 text if ``text``."""

    spec: tuple[Any, ...]
    text: bool


NOW_INSTANTS = st.builds(
    lambda minute, within: (BASE_MINUTE + minute) * MINUTE + within,
    st.integers(-50_000, 50_000),
    st.one_of(st.sampled_from([0, 1, MINUTE - 1, MINUTE // 2]), st.integers(0, MINUTE - 1)),
)
DATE_VALUES = st.builds(At, INSTANT_SPECS, st.booleans())


@st.composite
def number_operand(draw: st.DrawFn, op: str) -> Any:
    def scalar() -> Any:
        n = draw(st.sampled_from(AGG_NUMBERS))
        return draw(st.sampled_from([n, n, str(n)]))
    if op in ("null", "notNull"):
        return None
    if op in ("between", "notBetween"):
        return sorted([scalar(), scalar()], key=float)
    if op in ("in", "notIn"):
        return [scalar() for _ in range(draw(st.integers(1, 3)))]
    return scalar()


def date_operand(draw: st.DrawFn, op: str) -> Any:
    if op in ("null", "notNull"):
        return None
    if op in RELATIVE_OPS:
        return draw(relative_durations())[0]
    if op in ("between", "notBetween"):
        return [draw(DATE_VALUES), draw(DATE_VALUES)]  # put in order when resolved
    return draw(DATE_VALUES)


@st.composite
def date_conditions(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(DATETIME_FIELDS))
    op = draw(st.sampled_from(RELATIVE_OPS + RELATIVE_OPS + ["before", "after", "<", ">="]))
    cond = {"field": field, "operator": op}
    value = date_operand(draw, op)
    if value is not None:
        cond["value"] = value
    return cond


@st.composite
def aggregate_conditions(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(st.sampled_from(EVENT_NAMES))
    function = draw(st.sampled_from(["count", "count", "last_seen", "last_seen", "sum", "min", "max"]))
    field = f"events.{event}.{function}" + (".amount" if function in ("sum", "min", "max") else "")
    cond: dict[str, Any] = {"field": field}
    if function == "last_seen":
        op = draw(st.sampled_from(DATE_OPS + RELATIVE_OPS + RELATIVE_OPS))
        value = date_operand(draw, op)
    else:
        op = draw(st.sampled_from(NUMBER_OPS))
        value = draw(number_operand(op))
    cond["operator"] = op
    if value is not None:
        cond["value"] = value
    if draw(st.booleans()):
        cond["window"] = draw(duration_spellings())[0]
    if draw(st.booleans()):
        prop = draw(st.sampled_from(["currency", "currency", "url", "amount"]))
        cond["where"] = {prop: "10" if prop == "amount" else draw(st.sampled_from(WHERE_VALUES[prop]))}
    return cond


SEGMENT_CONDITIONS = st.fixed_dictionaries({
    "field": st.just("segment"),
    "operator": st.sampled_from(["memberOf", "notMemberOf"]),
    "value": st.sampled_from(SEGMENT_IDS),
})
ANY_CONDITION = st.one_of(plain_conditions(), date_conditions(), aggregate_conditions(), aggregate_conditions(),
                          SEGMENT_CONDITIONS)


def rule_trees(max_depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Rule trees whose absolute dates are still At specs (see resolve_rule)."""
    def group(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {"combinator": st.sampled_from(["and", "or", "AND"]),
             "rules": st.lists(children, min_size=1, max_size=4)},
            optional={"not": st.booleans()},
        )
    tree = group(ANY_CONDITION)
    for _ in range(max_depth - 1):
        tree = group(st.one_of(ANY_CONDITION, ANY_CONDITION, tree))
    return tree


RULE_TREES = {depth: rule_trees(depth) for depth in (1, 3)}


def durations_in(rule: dict[str, Any]) -> list[int]:
    """Every duration (ms) a rule uses, read off the hand-written tables above."""
    spelled = {**WINDOWS, **LONG_DURATIONS}
    out: list[int] = []
    for cond in conditions_of(rule):
        for value in (cond.get("window"), cond.get("value") if cond["operator"] in RELATIVE_OPS else None):
            if isinstance(value, str):
                out.append(spelled[value])
            elif isinstance(value, dict):
                out.extend(ms for spelling, ms in DICT_WINDOWS if spelling == value)
    return out


def resolve_rule(rule: dict[str, Any], now: int, offsets: list[int]) -> dict[str, Any]:
    """The rule with every At resolved (between bounds put in order), as it arrives over the wire."""
    def walk(node: dict[str, Any]) -> dict[str, Any]:
        if "rules" in node:
            return {**node, "rules": [walk(child) for child in node["rules"]]}
        value = node.get("value")
        if isinstance(value, At):
            ms = resolve_instant(value.spec, now, offsets)
            return {**node, "value": iso(ms) if value.text else ms}
        if isinstance(value, list) and value and isinstance(value[0], At):
            pairs = sorted((resolve_instant(v.spec, now, offsets), v.text) for v in value)
            return {**node, "value": [iso(ms) if text else ms for ms, text in pairs]}
        return node
    return orjson.loads(orjson.dumps(walk(rule)))  # type: ignore[no-any-return]


EVENT = st.fixed_dictionaries(
    {
        "id": st.sampled_from([f"e{i}" for i in range(16)]),  # repeats are duplicates
        "name": st.sampled_from(["purchase", "purchase", "page_view", "signup"]),
        "at": INSTANT_SPECS,
        "properties": st.fixed_dictionaries({}, optional={
            "amount": st.one_of(st.sampled_from(AMOUNTS), st.sampled_from(ODD_AMOUNTS), st.sampled_from(AMOUNTS)),
            "currency": st.sampled_from(CURRENCIES),
            "url": st.sampled_from(URLS),
        }),
    })


@st.composite
def event_specs(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [draw(EVENT) for _ in range(draw(st.integers(0, 12)))]  # st.lists would keep them short


EVENT_SPECS = event_specs()
RECORD_DATES = st.fixed_dictionaries(
    {field: st.one_of(INSTANT_SPECS, st.just(None), INSTANT_SPECS, st.just("missing"), INSTANT_SPECS)
     for field in DATETIME_FIELDS})
PLAIN_RECORDS = plain_records()
MEMBERS = st.frozensets(st.sampled_from([*SEGMENT_IDS, "other"]))


@st.composite
def surroundings(draw: st.DrawFn, now: int, offsets: list[int]) -> dict[str, Any]:
    """A record, its segment memberships and raw events around ``now`` and the edges ``offsets``."""
    record = draw(PLAIN_RECORDS)
    spec: Any
    for field, spec in draw(RECORD_DATES).items():
        if spec == "missing":
            record.pop(field, None)
        else:
            record[field] = None if spec is None else resolve_instant(spec, now, offsets)
    events = [{**e, "at": resolve_instant(e["at"], now, offsets)} for e in draw(EVENT_SPECS)]
    return {"record": record, "now": now, "members": draw(MEMBERS), "events": events}


@st.composite
def scenarios(draw: st.DrawFn, max_depth: int = 3) -> dict[str, Any]:
    now = draw(NOW_INSTANTS)
    tree = draw(RULE_TREES[max_depth])
    offsets = [0, *durations_in(tree)]
    return {"rule": resolve_rule(tree, now, offsets), **draw(surroundings(now, offsets))}


def build_activity(streams: frozenset[Any], events: list[dict[str, Any]], now: int) -> dict[str, Any]:
    """The engine's activity for a raw history, as engine/membership.py apply_event builds it."""
    filters: dict[str, set[tuple[str, str]]] = {}
    for event, where in streams:
        if where is not None:
            filters.setdefault(event, set()).add((where[0], where[1].casefold()))
    activity: dict[str, Any] = {}
    seen: set[str] = set()
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        names = [event["name"]]
        for prop, value in sorted(filters.get(event["name"], ())):
            actual = event["properties"].get(prop)
            if isinstance(actual, str) and actual.casefold() == value:
                names.append(stream_name(event["name"], (prop, value)))
        add_event(activity, names, event["at"], numeric_properties(event["properties"]), now)
    return activity


class Setup:
    """One scenario compiled, with the engine and the oracle evaluable at any instant."""

    def __init__(self, s: dict[str, Any]) -> None:
        self.rule, self.record, self.now = s["rule"], s["record"], s["now"]
        self.members, self.events = s["members"], s["events"]
        self.compiled = load_rule(self.rule, CATALOG)
        self.activity = build_activity(self.compiled.streams, self.events, self.now)  # as of the original now

    def context(self, t: int) -> Context:
        return Context(t, self.members, self.activity)

    def engine(self, t: int) -> bool:
        return self.compiled.matches(self.record, self.context(t))

    def oracle(self, t: int) -> bool:
        return naive_matches(self.rule, self.record, CATALOG, now=t, members=self.members, events=self.events)


def _explained_pairs(rule: dict[str, Any], node: Any) -> list[tuple[dict[str, Any], Any]]:
    """(condition JSON, its explanation node) for every condition, walking both trees together."""
    if "rules" not in rule:
        return [(rule, node)]
    assert len(rule["rules"]) == len(node.children)
    return [pair for child, sub in zip(rule["rules"], node.children) for pair in _explained_pairs(child, sub)]


# ---- 1. engine == oracle == explain ---------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(s=scenarios())
def test_time_rules_compiled_equals_naive_equals_explain(s: dict[str, Any]) -> None:
    setup = Setup(s)
    context = setup.context(setup.now)
    compiled = setup.engine(setup.now)
    assert compiled == setup.oracle(setup.now)
    explanation = explain(setup.compiled.tree, CATALOG, setup.record, context)
    assert explanation.result == compiled
    orjson.dumps(explanation.to_json())
    # Every condition's own result, not just whatever reaches the root.
    history = unique_events(setup.events)
    for cond, node in _explained_pairs(setup.rule, explanation):
        expected = condition_matches(cond, setup.record, CATALOG, setup.now, setup.members, history)
        assert node.result == expected, cond
        alone = load_rule({"combinator": "and", "rules": [cond]}, CATALOG)
        assert alone.matches(setup.record, context) == expected, cond


@settings(max_examples=200, deadline=None)
@given(s=scenarios(max_depth=1))
def test_flat_time_rules_compiled_equals_naive(s: dict[str, Any]) -> None:
    """One group level, so every condition's own result reaches the root often."""
    setup = Setup(s)
    compiled = setup.engine(setup.now)
    assert compiled == setup.oracle(setup.now)
    assert explain(setup.compiled.tree, CATALOG, setup.record, setup.context(setup.now)).result == compiled


AGGREGATE_FIELDS = [f"events.{event}.{function}" for event in EVENT_NAMES for function in ("count", "last_seen")] + \
    [f"events.{event}.{function}.amount" for event in EVENT_NAMES for function in ("sum", "min", "max")]


@settings(max_examples=100, deadline=None)
@given(now=NOW_INSTANTS, windows=st.lists(duration_spellings(), min_size=1, max_size=3),
       specs=EVENT_SPECS, later=st.lists(st.integers(0, 100 * DAY), max_size=3))
def test_aggregate_values_equal_naive(now: int, windows: list[tuple[Any, int]], specs: list[dict[str, Any]],
                                      later: list[int]) -> None:
    """Every aggregate, all time and over each window, with and without a where filter: the value the
    engine computes (explain's ``actual``) is the one recomputed from the raw history, at now and later."""
    offsets = [0, *(ms for _, ms in windows)]
    events = [{**e, "at": resolve_instant(e["at"], now, offsets)} for e in specs]
    wheres = [None, {"currency": "EUR"}, {"currency": "strasse"}, {"url": "/Straße"}, {"amount": "10"}]
    conds = [{"field": field, "operator": "notNull", **({} if window is None else {"window": window}),
              **({} if where is None else {"where": where})}
             for field in AGGREGATE_FIELDS for window in [None, *(w for w, _ in windows)] for where in wheres]
    rule = {"combinator": "and", "rules": conds}
    setup = Setup({"rule": rule, "record": {}, "now": now, "members": frozenset(), "events": events})
    history = unique_events(events)
    for t in [now, *(now + dt for dt in later)]:
        explanation = explain(setup.compiled.tree, CATALOG, {}, setup.context(t))
        for cond, node in zip(conds, explanation.children):
            assert node.actual == aggregate_value(cond, history, t)[1], (cond, t)


# ---- 2. next_change is exact ------------------------------------------------------------------------

def _legitimate_boundary(setup: Setup, d: int) -> bool:
    """Does some time-dependent condition change at d: its result, or the events its window holds?"""
    history = unique_events(setup.events)
    for cond in conditions_of(setup.rule):
        if not is_time_condition(cond):
            continue
        before = condition_matches(cond, setup.record, CATALOG, d - 1, setup.members, history)
        at = condition_matches(cond, setup.record, CATALOG, d, setup.members, history)
        if before != at:
            return True
        if cond["field"].startswith("events.") and cond.get("window") is not None:
            inside_before = [e["id"] for e in selected_events(cond, history, d - 1)]
            inside_at = [e["id"] for e in selected_events(cond, history, d)]
            if inside_before != inside_at:
                return True
    return False


def check_schedule(setup: Setup, random_instants: Callable[[int, int], list[int]], max_steps: int = 400) -> int:
    """Follow the schedule from now as the engine would (re-evaluate at next_change, ask again, ...) and
    check every step is exact: the result is the same at every instant of [t, d), and at d it flips or
    some condition really changes. Returns the number of steps."""
    has_time = any(is_time_condition(c) for c in conditions_of(setup.rule))
    assert (setup.compiled.next_change is not None) == has_time
    # The oracle's change points are every instant at which any condition can change, so checking them
    # (and the instant before each) checks every instant of [t, d) with no gaps.
    points = change_points(setup.rule, setup.record, setup.events, setup.now)
    t = setup.now
    for step in range(max_steps):
        start = setup.oracle(t)
        assert setup.engine(t) == start
        d = None if setup.compiled.next_change is None else setup.compiled.next_change(setup.record, setup.context(t))
        if d is not None:
            assert d > t
            end = d
        else:
            end = max([t + 200 * DAY, *points]) + 1
        checks = {t + 1, end - 1}
        checks.update(p for p in points if t < p < end)
        checks.update(p - 1 for p in points if t < p - 1 < end)
        if step == 0 and end - 1 > t:
            checks.update(random_instants(t + 1, end - 1))
            if d is None:
                checks.update(random_instants(t + 1, t + 200 * DAY))
        elif end - 1 > t:
            checks.add((t + end) // 2)
        for x in sorted(checks):
            if t < x < end:
                assert setup.oracle(x) == start, f"the rule flips at {x}, before next_change {d} (asked at {t})"
                assert setup.engine(x) == start, f"engine at {x} with activity built at {setup.now}"
        if d is None:
            return step
        if setup.oracle(d) == start:
            assert _legitimate_boundary(setup, d), f"next_change {d} (asked at {t}) is no boundary of any condition"
        t = d
    return max_steps


@settings(max_examples=200, deadline=None)
@given(s=scenarios(), data=st.data())
def test_next_change_is_exact(s: dict[str, Any], data: st.DataObject) -> None:
    check_schedule(Setup(s), lambda lo, hi: data.draw(st.lists(st.integers(lo, hi), min_size=3, max_size=3)))
    # and for each time-dependent condition alone, whose every flip reaches the root
    for cond in conditions_of(s["rule"]):
        if is_time_condition(cond):
            alone = Setup({**s, "rule": {"combinator": "and", "rules": [cond]}})
            check_schedule(alone, lambda lo, hi: [(lo + hi) // 2])


# ---- 2b. every edge, deterministically --------------------------------------------------------------

GRID_DURATIONS: list[tuple[Any, int]] = [("1 minute", MINUTE), ("45 minutes", 45 * MINUTE), ("1 day", DAY),
                                         ({"amount": 2, "unit": "weeks"}, 14 * DAY)]
GRID_NOWS = [BASE_MINUTE * MINUTE + within for within in (0, 1, MINUTE // 2, MINUTE - 1)]


def _edges(now: int, d: int) -> list[int]:
    """Instants on and next to now - d, now and now + d, to the ms and to the minute."""
    out: set[int] = set()
    for base in (now - d, now, now + d):
        out.update(base + j for j in (-1, 0, 1))
        out.update((base // MINUTE + k) * MINUTE + w for k in (-1, 0, 1) for w in (0, MINUTE - 1))
    return sorted(out)


def _grid_rules(duration: Any) -> list[dict[str, Any]]:
    conds: list[dict[str, Any]] = [{"field": "created_at", "operator": op, "value": duration} for op in RELATIVE_OPS]
    conds += [{"field": LAST, "operator": op, "value": duration} for op in RELATIVE_OPS]
    conds += [{"field": LAST, "operator": op, "value": "1 minute", "window": duration} for op in RELATIVE_OPS]
    conds += [{"field": "events.purchase.count", "operator": "=", "value": 1, "window": duration},
              {"field": "events.purchase.sum.amount", "operator": ">=", "value": 2, "window": duration},
              {"field": "events.purchase.min.amount", "operator": "notNull", "window": duration,
               "where": {"currency": "eur"}},
              {"field": LAST, "operator": "notNull", "window": duration}]
    return [{"combinator": "and", "rules": [cond]} for cond in conds]


def test_every_edge_engine_equals_naive_and_schedule_is_exact() -> None:
    checked = 0
    for duration, d in GRID_DURATIONS:
        for rule in _grid_rules(duration):
            for now in GRID_NOWS:
                for x in _edges(now, d):
                    events = [{"id": "a", "name": "purchase", "at": x, "properties": {"amount": 2, "currency": "EUR"}}]
                    setup = Setup({"rule": rule, "record": {"created_at": x}, "now": now,
                                   "members": frozenset(), "events": events})
                    assert setup.engine(now) == setup.oracle(now), (rule, now, x)
                    check_schedule(setup, lambda lo, hi: [(lo + hi) // 2])
                    checked += 1
    assert checked > 1000


# ---- 3. validation ------------------------------------------------------------------------------

BAD_CONDITIONS: list[tuple[dict[str, Any], str]] = [
    # durations of relative-date operators
    *[({"field": "created_at", "operator": op, "value": bad}, "invalid_value")
      for op in RELATIVE_OPS
      for bad in ["30", "days", "0 days", "-1 days", "1.5 days", "30 seconds", "2 years", "", "3651 days",
                  "12345678 days", 30, None, True, ["30 days"], {"amount": 0, "unit": "days"},
                  {"amount": "30", "unit": "days"}, {"amount": True, "unit": "days"}, {"amount": 30},
                  {"amount": 30, "unit": "fortnights"}, {"amount": 1.5, "unit": "days"}]],
    ({"field": LAST, "operator": "withinLast", "value": "soon"}, "invalid_value"),
    ({"field": "custom.renewal_at", "operator": "withinNext", "value": "0 minutes"}, "invalid_value"),
    ({"field": "created_at", "operator": "before", "value": "30 days"}, "invalid_value"),
    ({"field": "created_at", "operator": "after", "value": True}, "invalid_value"),
    # windows
    *[({"field": AGG, "operator": ">", "value": 1, "window": bad}, "invalid_window")
      for bad in ["91 days", "13 weeks", "129601 minutes", {"amount": 2161, "unit": "hours"}, "30", "30 seconds",
                  "0 days", 30, "ninety days", {"amount": 0, "unit": "days"}, "3651 days", True]],
    ({"field": LAST, "operator": "withinLast", "value": "1 day", "window": "100 days"}, "invalid_window"),
    # where
    ({"field": AGG, "operator": ">", "value": 1, "where": {"currency": "eur", "url": "/x"}}, "invalid_where"),
    ({"field": AGG, "operator": ">", "value": 1, "where": {}}, "invalid_where"),
    ({"field": AGG, "operator": ">", "value": 1, "where": {"currency": 5}}, "invalid_where"),
    ({"field": AGG, "operator": ">", "value": 1, "where": {"currency": ["eur"]}}, "invalid_where"),
    ({"field": AGG, "operator": ">", "value": 1, "where": {"currency": None}}, "invalid_where"),
    ({"field": AGG, "operator": ">", "value": 1, "where": {"currency": True}}, "invalid_where"),
    ({"field": AGG, "operator": ">", "value": 1, "where": {"currency": ""}}, "invalid_where"),
    ({"field": AGG, "operator": ">", "value": 1, "where": {"Currency": "eur"}}, "invalid_where"),
    ({"field": AGG, "operator": ">", "value": 1, "where": {"a.b": "eur"}}, "invalid_where"),
    # window / where on a field that is not an aggregate
    ({"field": "created_at", "operator": "withinLast", "value": "1 day", "window": "1 day"}, "invalid_shape"),
    ({"field": "country", "operator": "=", "value": "x", "where": {"currency": "eur"}}, "invalid_shape"),
    ({"field": "lifetime_value", "operator": ">", "value": 1, "window": "7 days"}, "invalid_shape"),
    ({"field": "segment", "operator": "memberOf", "value": "vip", "window": "7 days"}, "invalid_shape"),
    ({"field": "segment", "operator": "notMemberOf", "value": "vip", "where": {"currency": "eur"}}, "invalid_shape"),
    # malformed aggregate field names
    *[({"field": name, "operator": ">", "value": 1}, "unknown_field")
      for name in ["events.purchase.sum", "events.purchase.min", "events.purchase.count.amount",
                   "events.Bad.count", "events.purchase.avg.amount", "events.purchase", "events..count",
                   "events.purchase.last_seen.amount", "events.purchase.sum.Amount", "events.purchase.sum.amount.x",
                   "events.purchase.Count", "events.9lives.count"]],
    # segment references
    *[({"field": "segment", "operator": op, "value": bad}, "invalid_value")
      for op in ["memberOf", "notMemberOf"]
      for bad in [5, None, True, ["vip"], "", "bad id!", "x" * 101]],
    ({"field": "segment", "operator": "=", "value": "vip"}, "operator_not_allowed"),
    ({"field": "segment", "operator": "null"}, "operator_not_allowed"),
    ({"field": "country", "operator": "memberOf", "value": "vip"}, "operator_not_allowed"),
    ({"field": AGG, "operator": "notMemberOf", "value": "vip"}, "operator_not_allowed"),
    # relative-date operators on fields that are not datetimes
    *[({"field": field, "operator": op, "value": "30 days"}, "operator_not_allowed")
      for field in ["lifetime_value", "country", "is_subscribed", "tags", "custom.score", AGG,
                    "events.purchase.sum.amount", "events.page_view.max.amount"]
      for op in [*RELATIVE_OPS, "before", "after"]],
]

#: Edge cases that must stay valid (so the table above does not pass by rejecting everything).
GOOD_CONDITIONS: list[dict[str, Any]] = [
    {"field": AGG, "operator": ">", "value": 1, "window": "90 days"},
    {"field": AGG, "operator": ">", "value": 1, "window": "12 weeks"},
    {"field": AGG, "operator": ">", "value": 1, "window": {"amount": 129_600, "unit": "minutes"}},
    {"field": AGG, "operator": ">", "value": 1, "window": {"amount": 2160, "unit": "hours"}},
    {"field": AGG, "operator": ">", "value": 1, "window": "1 minute", "where": {"currency": "EUR"}},
    {"field": LAST, "operator": "withinLast", "value": "3650 days"},
    {"field": LAST, "operator": "moreThanAgo", "value": {"amount": 30, "unit": "DAYS"}},
    {"field": "created_at", "operator": "withinNext", "value": " 12h "},
    {"field": "created_at", "operator": "before", "value": "2024-01-01T00:00:00Z"},
    {"field": "last_contact_at", "operator": "after", "value": 1_704_067_200_000},
    {"field": "events.page_view.sum.amount", "operator": "between", "value": [1, 2], "where": {"url": "/x"}},
    {"field": "segment", "operator": "memberOf", "value": "churn.risk_2-b"},
    {"field": "segment", "operator": "notMemberOf", "value": "x" * 100},
]


def _nest(bad: dict[str, Any]) -> dict[str, Any]:
    """A rule with ``bad`` at /rules/1/rules/1, between valid siblings."""
    return {"combinator": "and", "rules": [
        {"field": "country", "operator": "=", "value": "PL"},
        {"combinator": "or", "not": True, "rules": [
            {"field": "segment", "operator": "memberOf", "value": "vip"},
            bad,
            {"field": "events.purchase.count", "operator": ">", "value": 0, "window": "30 days"},
        ]},
    ]}


def _problems(rule: dict[str, Any]) -> list[Any]:
    with pytest.raises(InvalidRule) as caught:
        load_rule(rule, CATALOG)
    return caught.value.problems


@pytest.mark.parametrize(("bad", "code"), BAD_CONDITIONS, ids=[f"{c}-{b}"[:80] for b, c in BAD_CONDITIONS])
def test_invalid_time_conditions_are_located(bad: dict[str, Any], code: str) -> None:
    problems = _problems(_nest(bad))
    assert [(p.code, p.path, p.field, p.operator) for p in problems] == \
        [(code, "/rules/1/rules/1", bad["field"], bad["operator"])], problems[0].message
    assert problems[0].message


@pytest.mark.parametrize("good", GOOD_CONDITIONS, ids=[str(g)[:80] for g in GOOD_CONDITIONS])
def test_edge_conditions_stay_valid(good: dict[str, Any]) -> None:
    tree = parse_rule(_nest(good))
    assert validate_rule(tree, CATALOG) == []
    load_rule(_nest(good), CATALOG)


def _insert(rule: dict[str, Any], bad: dict[str, Any], choices: list[int], path: str = "") -> str:
    """Put ``bad`` somewhere in ``rule`` (in place) following ``choices``; return its JSON pointer."""
    groups = [i for i, child in enumerate(rule["rules"]) if "rules" in child]
    if groups and choices and choices[0] % 2:
        i = groups[choices[0] % len(groups)]
        return _insert(rule["rules"][i], bad, choices[1:], f"{path}/rules/{i}")
    at = (choices[0] if choices else 0) % (len(rule["rules"]) + 1)
    rule["rules"].insert(at, bad)
    return f"{path}/rules/{at}"


@settings(max_examples=100, deadline=None)
@given(now=NOW_INSTANTS, tree=RULE_TREES[3], case=st.sampled_from(BAD_CONDITIONS),
       choices=st.lists(st.integers(0, 7), max_size=4))
def test_invalid_condition_anywhere_is_the_one_problem(now: int, tree: dict[str, Any],
                                                       case: tuple[dict[str, Any], str], choices: list[int]) -> None:
    bad, code = case
    rule = resolve_rule(tree, now, [0, *durations_in(tree)])
    path = _insert(rule, dict(bad), choices)
    problems = _problems(rule)
    assert [(p.code, p.path, p.field, p.operator) for p in problems] == [(code, path, bad["field"], bad["operator"])]


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**8), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6), st.sampled_from(["30 days", "1 minute", " 12H ", "0030 days", "2 W", "1 m", "91 days",
                                          "vip", "EUR", "soon", "3651 days"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["amount", "unit", "currency", "url", "Bad"]), inner,
                                            max_size=3)),
    max_leaves=5,
)
FUZZ_FIELDS = [*DATETIME_FIELDS, "country", "lifetime_value", "tags", "segment", "events", *AGGREGATE_FIELDS,
               "events.purchase.sum", "events.purchase.count.amount", "events.Bad.count", "events.purchase.avg.amount"]
FUZZ_OPERATORS = [*RELATIVE_OPS, "before", "after", "memberOf", "notMemberOf", "=", "!=", ">", "between", "in",
                  "null", "notNull", "hasAny", "within"]


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(FUZZ_FIELDS), op=st.sampled_from(FUZZ_OPERATORS),
       extra=st.fixed_dictionaries({}, optional={"value": JSON_VALUES, "window": JSON_VALUES, "where": JSON_VALUES}),
       s=NOW_INSTANTS.flatmap(lambda now: surroundings(now, [0, MINUTE, DAY, 30 * DAY])))
def test_any_condition_is_refused_cleanly_or_agrees_with_naive(field: str, op: str, extra: dict[str, Any],
                                                               s: dict[str, Any]) -> None:
    """Whatever JSON a condition holds, load_rule accepts it or raises InvalidRule locating it; accepted,
    the engine agrees with the oracle."""
    cond = orjson.loads(orjson.dumps({"field": field, "operator": op, **extra}))
    rule = {"combinator": "or", "rules": [{"field": "country", "operator": "=", "value": "PL"}, cond]}
    try:
        load_rule(rule, CATALOG)
    except InvalidRule as exc:
        assert [(p.path, p.field, p.operator) for p in exc.problems] == [("/rules/1", field, op)]
        note("refused")
        return
    note("accepted")
    setup = Setup({**s, "rule": rule})
    assert setup.engine(setup.now) == setup.oracle(setup.now)
    check_schedule(setup, lambda lo, hi: [(lo + hi) // 2])


# ---- the oracle itself, on hand-checked examples -------------------------------------------------

def test_oracle_window_edges_by_hand() -> None:
    now = BASE_MINUTE * MINUTE + 30_000  # half way through a minute
    day_ago = now - DAY
    rule = {"combinator": "and", "rules": [{"field": AGG, "operator": "=", "value": 1, "window": "1 day"}]}

    def count_is_one(at: int, t: int = now) -> bool:
        return naive_matches(rule, {}, CATALOG, now=t, events=[{"id": "a", "name": "purchase", "at": at, "properties": {}}])
    assert count_is_one(now)
    assert not count_is_one(now + MINUTE - 30_001 + 1)  # the next minute: not yet
    assert count_is_one(now + MINUTE - 30_001)  # last ms of this minute
    assert not count_is_one(day_ago)  # same minute of the day before: out
    assert count_is_one(day_ago + 30_000)  # the minute after: in
    with pytest.raises(ValueError):
        count_is_one(now, t=None)  # type: ignore[arg-type]


def test_oracle_dedupes_filters_and_aggregates_by_hand() -> None:
    now = BASE_MINUTE * MINUTE
    events = [
        {"id": "1", "name": "purchase", "at": now - 10, "properties": {"amount": 10, "currency": "EUR"}},
        {"id": "1", "name": "purchase", "at": now - 5, "properties": {"amount": 99, "currency": "EUR"}},  # duplicate
        {"id": "2", "name": "purchase", "at": now - 2 * DAY, "properties": {"amount": 2.5, "currency": "eur"}},
        {"id": "3", "name": "purchase", "at": now + DAY, "properties": {"amount": True, "currency": "usd"}},
        {"id": "4", "name": "purchase", "at": now - 3, "properties": {"amount": math.inf, "currency": "Straße"}},
    ]

    def value(field: str, op: str, v: Any, **extra: Any) -> bool:
        rule = {"combinator": "and", "rules": [{"field": field, "operator": op, "value": v, **extra}]}
        return naive_matches(rule, {}, CATALOG, now=now, events=events)
    assert value(AGG, "=", 4)
    assert value(AGG, "=", 2, window="1 day")  # 1 and 4; 2 is too old, 3 in the future
    assert value(AGG, "=", 2, where={"currency": "EUR"})
    assert value(AGG, "=", 1, where={"currency": "STRASSE"})
    assert value("events.purchase.sum.amount", "=", 12.5)
    assert value("events.purchase.max.amount", "=", 10, window="1 day")
    assert value("events.purchase.min.amount", "null", None, window="1 day", where={"currency": "usd"})
    assert value("events.purchase.sum.amount", "=", 0, where={"currency": "usd"})
    assert value(LAST, "=", now + DAY)  # all time includes the future
    assert value(LAST, "=", now - 3, window="1 day")
    assert value(LAST, "withinLast", "5 minutes", window="1 day")
    assert not value(LAST, "withinLast", "5 minutes")
    assert value("events.page_view.last_seen", "notNull", None) is False
    assert naive_matches({"combinator": "or", "rules": [{"field": "segment", "operator": "notMemberOf", "value": "a"}]},
                         {}, CATALOG, members={"a"}) is False
