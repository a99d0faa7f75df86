"""Behavioural aggregates of one record, kept incrementally with bounded state.

A record's activity maps a *stream* to its summary. A stream is an event name (``purchase``), or an
event name filtered on one property value (``purchase?currency=eur``, see ``stream_name``). A summary
holds all-time figures and one bucket per minute that had events, for the last ``HORIZON_MS``:

    {"c": count, "l": last_at, "n": {property: [sum, min, max]},
     "b": [[minute, count, last_at, {property: [sum, min, max]}], ...]}   # sorted by minute

Window semantics (exact, at minute resolution): at time ``now`` an event at ``at`` is inside a window
of W ms when ``now//60000 - W//60000 < at//60000 <= now//60000``. Events in later minutes count from
their minute on; all-time figures count every event at once. An event's minute leaves a window at
``(minute + W//60000) * 60000`` and enters at ``minute * 60000``: those instants are when a windowed
condition can flip, and ``next_boundary`` gives the earliest one after ``now``.

State per stream is bounded whatever the event rate: at most ``MAX_BUCKETS`` minute buckets (a record
busy in more minutes than that within the horizon gets its oldest buckets merged, so those events leave
windows a little late, never early), each with the first ``MAX_BUCKET_PROPERTIES`` numeric properties.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from typing import Any, cast

BUCKET_MS = 60_000
HORIZON_MS = 90 * 86_400_000  # the longest window a rule may use
HORIZON_BUCKETS = HORIZON_MS // BUCKET_MS
MAX_NUMERIC_PROPERTIES = 32  # per event, in all-time figures
MAX_BUCKET_PROPERTIES = 8  # per event, in minute buckets (what windowed sum/min/max can read)
MAX_BUCKETS = 1_024  # per stream; beyond, the two oldest buckets merge (see add_event)
FUNCTIONS = ("count", "sum", "min", "max", "last_seen")

Activity = dict[str, Any]


def stream_name(event: str, where: tuple[str, str] | None = None) -> str:
    """The stream an aggregate reads: the event name, or name?property=value (value casefolded)."""
    if where is None:
        return event
    return f"{event}?{where[0]}={where[1].casefold()}"


def numeric_properties(properties: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric properties of an event (booleans are not numbers), at most 32."""
    out: dict[str, float] = {}
    for name, value in properties.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = value
            if len(out) >= MAX_NUMERIC_PROPERTIES:
                break
    return out


def _fold(numbers: dict[str, list[float]], values: Mapping[str, float]) -> None:
    for prop, value in values.items():
        acc = numbers.get(prop)
        if acc is None:
            numbers[prop] = [value, value, value]
        else:
            acc[0] += value
            if value < acc[1]:
                acc[1] = value
            if value > acc[2]:
                acc[2] = value


def add_event(activity: Activity, streams: Iterable[str], at: int, numbers: Mapping[str, float], now: int) -> None:
    """Count one (already de-duplicated) event in every stream it belongs to."""
    minute = at // BUCKET_MS
    oldest = now // BUCKET_MS - HORIZON_BUCKETS + 1
    bucket_numbers = dict(list(numbers.items())[:MAX_BUCKET_PROPERTIES])
    for stream in streams:
        summary = activity.get(stream)
        if summary is None:
            summary = activity[stream] = {"c": 0, "l": None, "n": {}, "b": []}
        summary["c"] += 1
        if summary["l"] is None or at > summary["l"]:
            summary["l"] = at
        _fold(summary["n"], numbers)
        buckets: list[list[Any]] = summary["b"]
        if minute >= oldest:
            i = bisect.bisect_left(buckets, minute, key=lambda b: b[0])
            if i < len(buckets) and buckets[i][0] == minute:
                bucket = buckets[i]
                bucket[1] += 1
                if at > bucket[2]:
                    bucket[2] = at
            else:
                bucket = [minute, 1, at, {}]
                buckets.insert(i, bucket)
            _fold(bucket[3], bucket_numbers)
            if len(buckets) > MAX_BUCKETS:
                _merge_oldest(buckets)
        prune(summary, now)


def _merge_oldest(buckets: list[list[Any]]) -> None:
    """Keep a stream's state bounded for very busy records: fold the oldest bucket into the next one.
    Its events then leave windows at the later bucket's minute (late, never early)."""
    oldest, into = buckets[0], buckets[1]
    into[1] += oldest[1]
    into[2] = max(into[2], oldest[2])
    for prop, (total, low, high) in oldest[3].items():
        acc = into[3].get(prop)
        into[3][prop] = [total, low, high] if acc is None else [acc[0] + total, min(acc[1], low), max(acc[2], high)]
    del buckets[0]


def prune(summary: dict[str, Any], now: int) -> None:
    """Drop buckets that no window can reach any more."""
    oldest = now // BUCKET_MS - HORIZON_BUCKETS + 1
    buckets = summary["b"]
    if buckets and buckets[0][0] < oldest:
        del buckets[: bisect.bisect_left(buckets, oldest, key=lambda b: b[0])]


def aggregate(activity: Mapping[str, Any], stream: str, function: str, prop: str | None,
              window_ms: int | None, now: int) -> int | float | None:
    """count (0 without events), sum (0 without values), min, max, last_seen (None without events)."""
    summary = activity.get(stream)
    if summary is None:
        return 0 if function in ("count", "sum") else None
    if window_ms is None:
        if function == "count":
            return int(summary["c"])
        if function == "last_seen":
            return summary["l"]  # type: ignore[no-any-return]
        acc = summary["n"].get(prop)
        if acc is None:
            return 0 if function == "sum" else None
        return acc[("sum", "min", "max").index(function)]  # type: ignore[no-any-return]
    current = now // BUCKET_MS
    first = current - window_ms // BUCKET_MS + 1
    buckets = summary["b"]
    lo = bisect.bisect_left(buckets, first, key=lambda b: b[0])
    hi = bisect.bisect_right(buckets, current, key=lambda b: b[0])
    inside = buckets[lo:hi]
    if function == "count":
        return int(sum(b[1] for b in inside))
    if function == "last_seen":
        return cast("int | None", max((b[2] for b in inside), default=None))
    accs = [b[3][prop] for b in inside if prop in b[3]]
    if function == "sum":
        return cast(float, sum(a[0] for a in accs))
    if not accs:
        return None
    if function == "min":
        return cast(float, min(a[1] for a in accs))
    return cast(float, max(a[2] for a in accs))


def next_boundary(activity: Mapping[str, Any], stream: str, window_ms: int, now: int) -> int | None:
    """The earliest instant after ``now`` at which a bucket enters or leaves the window.

    Buckets are sorted, so this is two binary searches: the oldest bucket still inside the window leaves
    first, and the first bucket after the current minute enters first.
    """
    summary = activity.get(stream)
    if summary is None:
        return None
    buckets = summary["b"]
    width = window_ms // BUCKET_MS
    current = now // BUCKET_MS
    best: int | None = None
    leaving = bisect.bisect_right(buckets, current - width, key=_minute)
    if leaving < len(buckets):
        best = (buckets[leaving][0] + width) * BUCKET_MS
    entering = bisect.bisect_right(buckets, current, key=_minute)
    if entering < len(buckets):
        instant = buckets[entering][0] * BUCKET_MS
        best = instant if best is None else min(best, instant)
    return best


def _minute(bucket: list[Any]) -> int:
    return bucket[0]  # type: ignore[no-any-return]
