from __future__ import annotations

import pytest

from engine.rules import (
    OBJECT_TYPES,
    STANDARD_FIELDS,
    CatalogError,
    EngineError,
    FieldType,
    catalog_for,
    is_valid_field_name,
)


def test_contact_standard_fields() -> None:
    cat = catalog_for("contact")
    assert cat["country"] is FieldType.STRING
    assert cat["lifetime_value"] is FieldType.NUMBER
    assert cat["is_subscribed"] is FieldType.BOOLEAN
    assert cat["last_contact_at"] is FieldType.DATETIME
    assert cat["campaigns"] is FieldType.TAGS
    assert cat.object_type == "contact"


@pytest.mark.parametrize("object_type", OBJECT_TYPES)
def test_every_object_type_has_the_basics(object_type: str) -> None:
    fields = STANDARD_FIELDS[object_type]
    assert {"status", "owner", "created_at", "updated_at", "tags"} <= set(fields)
    assert all(is_valid_field_name(name) for name in fields)


def test_custom_fields_are_prefixed_and_accept_string_types() -> None:
    cat = catalog_for("deal", {"plan": FieldType.STRING, "custom.seats": "number"})
    assert cat["custom.plan"] is FieldType.STRING
    assert cat["custom.seats"] is FieldType.NUMBER
    assert "plan" not in cat


def test_catalog_is_immutable() -> None:
    cat = catalog_for("contact")
    with pytest.raises(TypeError):
        cat["x"] = FieldType.STRING  # type: ignore[index]


@pytest.mark.parametrize("name", ["__class__", "a.b", "tags[0]", "Plan", "1st", "", "a-b", "x" * 65, "custom.__x"])
def test_bad_custom_names_rejected(name: str) -> None:
    with pytest.raises(CatalogError) as err:
        catalog_for("contact", {name: FieldType.STRING})
    assert err.value.code == "invalid_field_name"
    assert isinstance(err.value, EngineError)


def test_unknown_object_type_and_field_type() -> None:
    with pytest.raises(CatalogError) as err:
        catalog_for("lead")
    assert err.value.code == "unknown_object_type"
    with pytest.raises(CatalogError) as err:
        catalog_for("contact", {"x": "money"})
    assert err.value.code == "invalid_field_type"


@pytest.mark.parametrize("name,ok", [
    ("country", True), ("custom.plan", True), ("a" * 64, True), ("__dict__", False),
    ("custom.a.b", False), ("custom.", False), ("country.name", False), ("x[0]", False), (3, False),
])
def test_is_valid_field_name(name: object, ok: bool) -> None:
    assert is_valid_field_name(name) is ok
