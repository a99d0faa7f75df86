from __future__ import annotations

import calendar
from typing import Any

import pytest

from engine.rules import EngineError, FieldType, FieldValueError, catalog_for, normalize_fields, parse_datetime_ms
from tests.unit.strategies import DATES

CAT = catalog_for("contact", {"seats": FieldType.NUMBER})


def test_normalizes_each_type() -> None:
    out = normalize_fields(
        {
            "country": "Poland",
            "lifetime_value": 1000.5,
            "custom.seats": 3,
            "is_subscribed": False,
            "created_at": "2024-01-01T01:00:00+01:00",
            "updated_at": 1704067200000,
            "tags": ["vip", "lead", "vip"],
            "city": None,
        },
        CAT,
    )
    assert out == {
        "country": "Poland",
        "lifetime_value": 1000.5,
        "custom.seats": 3,
        "is_subscribed": False,
        "created_at": 1704067200000,
        "updated_at": 1704067200000,
        "tags": ["lead", "vip"],
        "city": None,
    }


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("lifetime_value", True, "number"),
        ("lifetime_value", "1000", "number"),
        ("lifetime_value", float("nan"), "number"),
        ("lifetime_value", float("inf"), "number"),
        ("country", 48, "string"),
        ("is_subscribed", "true", "boolean"),
        ("is_subscribed", 1, "boolean"),
        ("created_at", "yesterday", "datetime"),
        ("created_at", 1.5, "datetime"),
        ("created_at", True, "datetime"),
        ("tags", "vip", "tags"),
        ("tags", ["vip", 3], "tags"),
    ],
)
def test_wrong_type_names_field_and_type(field: str, value: Any, expected: str) -> None:
    with pytest.raises(FieldValueError) as err:
        normalize_fields({field: value}, CAT)
    assert err.value.code == "field_type"
    assert err.value.field == field
    assert field in str(err.value) and expected in str(err.value)
    assert isinstance(err.value, EngineError)


def test_unknown_field() -> None:
    with pytest.raises(FieldValueError) as err:
        normalize_fields({"seats": 3}, CAT)  # custom fields need their prefix
    assert err.value.code == "unknown_field"
    assert err.value.field == "seats"


def _utc_ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, ms: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s)) * 1000 + ms


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2024-01-01", _utc_ms(2024, 1, 1)),
        ("2024-01-01T00:00:00", _utc_ms(2024, 1, 1)),  # naive = UTC
        ("2024-01-01T00:00:00Z", _utc_ms(2024, 1, 1)),
        ("2024-01-01T02:30:00+02:00", _utc_ms(2024, 1, 1, 0, 30)),
        ("2024-06-30T23:59:59.999-01:00", _utc_ms(2024, 7, 1, 0, 59, 59, 999)),
        ("2024-01-01T00:00:00.0019Z", _utc_ms(2024, 1, 1, 0, 0, 0, 1)),  # floored to ms
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_parse_datetime_ms(text: str, expected: int) -> None:
    assert parse_datetime_ms(text) == expected


def test_parse_datetime_ms_passes_ints_and_rejects_the_rest() -> None:
    assert parse_datetime_ms(1704067200000) == 1704067200000
    for bad in (True, 1.0, None, "", "2024-13-01", "x" * 100, [2024]):
        with pytest.raises(ValueError):
            parse_datetime_ms(bad)


def test_test_date_pool_is_consistent() -> None:
    """The property-test pool says these spellings are the same instant; check independently."""
    assert _utc_ms(2024, 1, 1) == 1704067200000
    assert _utc_ms(2024, 7, 1) == 1719792000000
    for ms, spellings in DATES.items():
        for text in spellings:
            assert parse_datetime_ms(text) == ms, text
