"""Normalise incoming record fields into the state form that compiled rules evaluate.

Evaluation never converts types on the hot path: strings stay str, numbers int|float,
datetimes int epoch milliseconds, tags a sorted list of unique strings, None = cleared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from .catalog import FieldType
from .errors import FieldValueError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_MAX_DATETIME_TEXT = 64


def parse_datetime_ms(value: Any) -> int:
    """ISO-8601 string (naive means UTC) or int epoch ms -> int epoch ms.

    Raises ValueError for anything else (bools and floats included), so callers can
    attach their own field/path context. Sub-millisecond precision is floored.
    """
    if isinstance(value, bool):
        raise ValueError("expected an ISO-8601 string or epoch milliseconds, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if not value or len(value) > _MAX_DATETIME_TEXT:
            raise ValueError(f"invalid ISO-8601 datetime {value[:_MAX_DATETIME_TEXT]!r}")
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"invalid ISO-8601 datetime {value!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return (dt - _EPOCH) // _ONE_MS
    raise ValueError(
        f"expected an ISO-8601 string or epoch milliseconds, got {type(value).__name__}"
    )


def _type_error(name: str, ftype: FieldType, raw: Any, detail: str = "") -> FieldValueError:
    got = type(raw).__name__
    extra = f" ({detail})" if detail else ""
    return FieldValueError(
        "field_type", name, f"field {name!r} expects {ftype.value}, got {got}{extra}"
    )


def normalize_value(name: str, ftype: FieldType, raw: Any) -> Any:
    """One non-null field value -> state form, or FieldValueError(code="field_type")."""
    if ftype is FieldType.STRING:
        if isinstance(raw, str):
            return raw
    elif ftype is FieldType.NUMBER:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            if isinstance(raw, float) and not math.isfinite(raw):
                raise _type_error(name, ftype, raw, "NaN and infinity are not numbers")
            return raw
    elif ftype is FieldType.BOOLEAN:
        if isinstance(raw, bool):
            return raw
    elif ftype is FieldType.DATETIME:
        try:
            return parse_datetime_ms(raw)
        except ValueError as exc:
            raise _type_error(name, ftype, raw, str(exc)) from None
    elif ftype is FieldType.TAGS:
        if isinstance(raw, (list, tuple)):
            if all(isinstance(item, str) for item in raw):
                return sorted(set(raw))
            raise _type_error(name, ftype, raw, "every tag must be a string")
    raise _type_error(name, ftype, raw)


def normalize_fields(fields: Mapping[str, Any], catalog: Mapping[str, FieldType]) -> dict[str, Any]:
    """Validate and convert a record's (partial) fields; JSON null stays None = clear the field."""
    out: dict[str, Any] = {}
    for name, raw in fields.items():
        ftype = catalog.get(name)
        if ftype is None:
            raise FieldValueError("unknown_field", str(name), f"unknown field {name!r}")
        out[name] = None if raw is None else normalize_value(name, ftype, raw)
    return out
