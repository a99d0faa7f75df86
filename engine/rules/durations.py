"""Durations for relative-date operators and aggregate windows: ``"30 days"``, ``"12h"`` or
``{"amount": 30, "unit": "days"}`` -> milliseconds. Whole minutes at least, so every window is a
whole number of activity buckets (see activity.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MINUTE_MS = 60_000
UNIT_MS: Mapping[str, int] = {
    "minute": MINUTE_MS, "minutes": MINUTE_MS, "m": MINUTE_MS,
    "hour": 60 * MINUTE_MS, "hours": 60 * MINUTE_MS, "h": 60 * MINUTE_MS,
    "day": 1_440 * MINUTE_MS, "days": 1_440 * MINUTE_MS, "d": 1_440 * MINUTE_MS,
    "week": 10_080 * MINUTE_MS, "weeks": 10_080 * MINUTE_MS, "w": 10_080 * MINUTE_MS,
}
MAX_DURATION_MS = 3_650 * 1_440 * MINUTE_MS  # ten years: a relative date further off is a mistake
_TEXT = re.compile(r"\s*([0-9]{1,7})\s*([a-zA-Z]+)\s*")


def parse_duration_ms(value: Any) -> int:
    """A positive duration in ms; ValueError naming what was wrong otherwise."""
    if isinstance(value, str):
        match = _TEXT.fullmatch(value[:64])
        if match is None:
            raise ValueError(f"expected a duration such as '30 days' or '12 hours', got {value[:64]!r}")
        amount: Any = int(match.group(1))
        unit: Any = match.group(2).lower()
    elif isinstance(value, Mapping):
        amount, unit = value.get("amount"), value.get("unit")
        if isinstance(unit, str):
            unit = unit.lower()
    else:
        raise ValueError("expected a duration such as '30 days' or {\"amount\": 30, \"unit\": \"days\"}")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError(f"duration amount must be a positive whole number, got {amount!r}")
    if unit not in UNIT_MS:
        raise ValueError(f"duration unit must be minutes, hours, days or weeks, got {unit!r}")
    ms = amount * UNIT_MS[unit]
    if ms > MAX_DURATION_MS:
        raise ValueError("duration is longer than ten years")
    return ms
