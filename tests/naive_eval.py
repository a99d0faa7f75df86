"""Deliberately naive reference interpreter for react-querybuilder rules.

Used as the oracle in unit and integration tests. It works on the RAW rule JSON and a
normalised record, and shares no code with engine.rules except the catalog (for field
types) and ``parse_datetime_ms``. It assumes the rule is valid; it is written for
obviousness, not speed.

Besides the record's fields a rule can read:

* the time ``now`` (epoch ms) -- relative-date operators ``withinLast``, ``moreThanAgo``,
  ``withinNext`` and windowed aggregates. A rule that needs it when ``now`` is None raises
  ``NowRequired`` (there is no default clock: a silent one would make results depend on when
  the test runs);
* ``members``, the ids of the segments the record is in -- ``segment memberOf|notMemberOf <id>``;
* ``events``, the record's FULL raw behavioural history, a sequence of
  ``{"id", "name", "at" (epoch ms), "properties"}`` in arrival order. Duplicate ids count once
  (the first occurrence wins) and every aggregate is recomputed from that list each time.

The windows are the engine's minute-resolution sliding windows: at ``now`` an event at ``at``
is inside a window of ``W`` ms iff ``now//60000 - W//60000 < at//60000 <= now//60000``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    "notMemberOf": "memberOf",
}
RELATIVE = ("withinLast", "moreThanAgo", "withinNext")

MINUTE = 60_000
UNIT_MS = {"minute": MINUTE, "hour": 60 * MINUTE, "day": 24 * 60 * MINUTE, "week": 7 * 24 * 60 * MINUTE}
UNIT_ABBREVIATIONS = {"m": "minute", "h": "hour", "d": "day", "w": "week"}


class NowRequired(ValueError):
    """The rule depends on the time but naive_matches was not given ``now``."""


def naive_matches(
    rule_json: Mapping[str, Any],
    record: Mapping[str, Any],
    catalog: Mapping[str, Any],
    now: int | None = None,
    members: Any = frozenset(),
    events: Sequence[Mapping[str, Any]] = (),
) -> bool:
    """Does ``record`` (normalised state form) satisfy ``rule_json`` (a valid rule) at ``now``, given
    its segment ``members`` and raw event history ``events``?"""
    return _matches(rule_json, record, catalog, now, frozenset(members), unique_events(events))


def _matches(rule_json: Mapping[str, Any], record: Mapping[str, Any], catalog: Mapping[str, Any],
             now: int | None, members: frozenset[str], history: list[Mapping[str, Any]]) -> bool:
    if "rules" in rule_json:
        results = [_matches(child, record, catalog, now, members, history) for child in rule_json["rules"]]
        if rule_json["combinator"].lower() == "and":
            result = all(results)
        else:
            result = any(results)
        if rule_json.get("not"):
            result = not result
        return result
    return condition_matches(rule_json, record, catalog, now, members, history)


def unique_events(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The history without repeated ids; the first event with an id is the one that counts."""
    seen = []
    out = []
    for event in events:
        if event["id"] not in seen:
            seen.append(event["id"])
            out.append(event)
    return out


def condition_matches(cond: Mapping[str, Any], record: Mapping[str, Any], catalog: Mapping[str, Any],
                      now: int | None = None, members: Any = frozenset(),
                      history: Sequence[Mapping[str, Any]] = ()) -> bool:
    """One condition; ``history`` must already be de-duplicated (see unique_events)."""
    field = cond["field"]
    operator = cond["operator"]

    if operator in NEGATIVE_TWIN:
        positive = dict(cond)
        positive["operator"] = NEGATIVE_TWIN[operator]
        return not condition_matches(positive, record, catalog, now, members, history)

    if field == "segment":
        assert operator == "memberOf", operator
        return cond["value"] in members

    actual: Any
    if field.startswith("events."):
        field_type, actual = aggregate_value(cond, history, now)
    else:
        field_type = str(catalog[field].value)
        actual = record.get(field)

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

    if operator in RELATIVE:
        d = duration_ms(raw_value)
        t = need_now(now)
        if operator == "withinLast":
            return t - d <= actual and actual <= t
        if operator == "moreThanAgo":
            return actual < t - d
        return t <= actual and actual <= t + d  # withinNext

    to_value = {"number": to_number, "datetime": parse_datetime_ms, "boolean": to_bool}[field_type]
    if operator == "in":
        return any(actual == to_value(item) for item in as_list(raw_value))
    if operator == "between":
        low, high = as_list(raw_value)
        return to_value(low) <= actual and actual <= to_value(high)
    wanted_value = to_value(raw_value)
    if operator == "=":
        return actual == wanted_value
    if operator in ("<", "before"):
        return actual < wanted_value
    if operator in (">", "after"):
        return actual > wanted_value
    if operator == "<=":
        return actual <= wanted_value
    if operator == ">=":
        return actual >= wanted_value
    raise ValueError(operator)


# ---- aggregates, recomputed from the raw history -------------------------------------------------

def aggregate_parts(field: str) -> tuple[str, str, str | None]:
    """``events.<event>.<function>[.<property>]`` -> (event, function, property or None)."""
    parts = field.split(".")
    return parts[1], parts[2], (parts[3] if len(parts) == 4 else None)


def in_window(at: int, now: int, window: int) -> bool:
    return now // MINUTE - window // MINUTE < at // MINUTE and at // MINUTE <= now // MINUTE


def selected_events(cond: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                    now: int | None) -> list[Mapping[str, Any]]:
    """The (de-duplicated) events an aggregate condition aggregates at ``now``."""
    event, _, _ = aggregate_parts(cond["field"])
    chosen = [e for e in history if e["name"] == event]
    where = cond.get("where")
    if where is not None:
        (prop, wanted), = where.items()
        chosen = [e for e in chosen
                  if isinstance(props(e).get(prop), str) and props(e)[prop].casefold() == wanted.casefold()]
    if cond.get("window") is not None:
        window = duration_ms(cond["window"])
        t = need_now(now)
        chosen = [e for e in chosen if in_window(e["at"], t, window)]
    return chosen


def aggregate_value(cond: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                    now: int | None) -> tuple[str, Any]:
    """(field type, value) of an aggregate condition's field; None is 'missing'."""
    _, function, prop = aggregate_parts(cond["field"])
    chosen = selected_events(cond, history, now)
    if function == "count":
        return "number", len(chosen)
    if function == "last_seen":
        if not chosen:
            return "datetime", None
        return "datetime", max(e["at"] for e in chosen)
    assert prop is not None, "sum, min and max name a property"
    numbers = [props(e)[prop] for e in chosen if is_number(props(e).get(prop))]
    if function == "sum":
        total: int | float = 0
        for n in numbers:
            total = total + n
        return "number", total
    if not numbers:
        return "number", None
    if function == "min":
        return "number", min(numbers)
    if function == "max":
        return "number", max(numbers)
    raise ValueError(function)


def props(event: Mapping[str, Any]) -> Mapping[str, Any]:
    return event.get("properties") or {}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---- time -----------------------------------------------------------------------------------------

def need_now(now: int | None) -> int:
    if now is None:
        raise NowRequired("this rule depends on the time: pass now= (epoch ms) to naive_matches")
    return now


def duration_ms(value: Any) -> int:
    """A (valid) duration: "30 days", "1 hour", "12h", "2 weeks" or {"amount": 30, "unit": "days"}."""
    if isinstance(value, Mapping):
        amount = value["amount"]
        unit = value["unit"]
    else:
        text = value.strip()
        digits = ""
        while text and text[0].isdigit():
            digits += text[0]
            text = text[1:]
        amount = int(digits)
        unit = text.strip()
    unit = unit.lower()
    if unit in UNIT_ABBREVIATIONS:
        unit = UNIT_ABBREVIATIONS[unit]
    if unit.endswith("s"):
        unit = unit[:-1]
    return amount * UNIT_MS[unit]


def is_time_condition(cond: Mapping[str, Any]) -> bool:
    """Can this condition's result change just because time passes?"""
    return cond["operator"] in RELATIVE or (cond["field"].startswith("events.") and cond.get("window") is not None)


def conditions_of(rule_json: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every condition of a rule, in document order."""
    if "rules" not in rule_json:
        return [rule_json]
    out: list[Mapping[str, Any]] = []
    for child in rule_json["rules"]:
        out.extend(conditions_of(child))
    return out


def change_points(rule_json: Mapping[str, Any], record: Mapping[str, Any],
                  events: Sequence[Mapping[str, Any]], after: int) -> list[int]:
    """Every instant > ``after`` at which some condition of the rule could change its result, for the
    record and events as they are (a superset: a rule's result is constant between two of them).

    From the definitions: ``now - d <= x <= now`` holds for now in [x, x + d]; ``x < now - d`` from
    x + d + 1 on; ``now <= x <= now + d`` for now in [x - d, x]; an event is in a window of W ms for
    now in [minute * 60000, (minute + W//60000) * 60000) where minute = at // 60000. A relative
    condition on last_seen is considered for every event time it could read.
    """
    history = unique_events(events)
    points: set[int] = set()
    for cond in conditions_of(rule_json):
        if not is_time_condition(cond):
            continue
        if cond["field"].startswith("events."):
            everywhere = dict(cond)
            everywhere.pop("window", None)
            candidates = [e["at"] for e in selected_events(everywhere, history, None)]
            if cond.get("window") is not None:
                width = duration_ms(cond["window"]) // MINUTE
                for at in candidates:
                    points.add(at // MINUTE * MINUTE)
                    points.add((at // MINUTE + width) * MINUTE)
        else:
            x = record.get(cond["field"])
            candidates = [] if x is None else [x]
        if cond["operator"] in RELATIVE:
            d = duration_ms(cond["value"])
            for x in candidates:
                if cond["operator"] == "withinLast":
                    points.update((x, x + d + 1))
                elif cond["operator"] == "moreThanAgo":
                    points.add(x + d + 1)
                else:
                    points.update((x - d, x + 1))
    return sorted(p for p in points if p > after)


# ---- value spellings --------------------------------------------------------------------------------

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
