"""Field catalogs: which fields a rule may read for each object type, and their types.

A catalog is the only source of field names, so rules can never address anything
(dunders, attribute paths, indexes) that is not a declared field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from enum import Enum
from types import MappingProxyType

from .errors import CatalogError


class FieldType(str, Enum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    TAGS = "tags"  # list of strings: tags and list relations such as campaigns


OBJECT_TYPES: tuple[str, ...] = ("contact", "company", "deal", "ticket", "task", "product")

FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CUSTOM_PREFIX = "custom."

_S, _N, _B, _D, _T = (
    FieldType.STRING,
    FieldType.NUMBER,
    FieldType.BOOLEAN,
    FieldType.DATETIME,
    FieldType.TAGS,
)

STANDARD_FIELDS: Mapping[str, Mapping[str, FieldType]] = MappingProxyType(
    {
        "contact": MappingProxyType(
            {
                "first_name": _S, "last_name": _S, "email": _S, "phone": _S, "owner": _S,
                "source": _S, "status": _S, "priority": _S, "country": _S, "city": _S,
                "language": _S, "lifetime_value": _N, "lead_score": _N, "is_subscribed": _B,
                "created_at": _D, "updated_at": _D, "last_contact_at": _D,
                "tags": _T, "campaigns": _T,
            }
        ),
        "company": MappingProxyType(
            {
                "name": _S, "domain": _S, "industry": _S, "owner": _S, "status": _S,
                "country": _S, "city": _S, "employees": _N, "annual_revenue": _N,
                "created_at": _D, "updated_at": _D, "tags": _T,
            }
        ),
        "deal": MappingProxyType(
            {
                "name": _S, "stage": _S, "status": _S, "owner": _S, "currency": _S,
                "amount": _N, "probability": _N, "close_date": _D,
                "created_at": _D, "updated_at": _D, "tags": _T,
            }
        ),
        "ticket": MappingProxyType(
            {
                "subject": _S, "status": _S, "priority": _S, "owner": _S, "channel": _S,
                "category": _S, "is_escalated": _B, "created_at": _D, "updated_at": _D,
                "resolved_at": _D, "tags": _T,
            }
        ),
        "task": MappingProxyType(
            {
                "title": _S, "status": _S, "priority": _S, "owner": _S, "type": _S,
                "is_completed": _B, "due_at": _D, "completed_at": _D,
                "created_at": _D, "updated_at": _D, "tags": _T,
            }
        ),
        "product": MappingProxyType(
            {
                "name": _S, "sku": _S, "category": _S, "status": _S, "owner": _S,
                "currency": _S, "price": _N, "stock_quantity": _N, "is_active": _B,
                "created_at": _D, "updated_at": _D, "tags": _T,
            }
        ),
    }
)


def is_valid_field_name(name: object) -> bool:
    """True for ``snake_name`` or ``custom.snake_name``; nothing else can ever be a field."""
    if not isinstance(name, str):
        return False
    if name.startswith(CUSTOM_PREFIX):
        name = name[len(CUSTOM_PREFIX):]
    return FIELD_NAME_RE.fullmatch(name) is not None


class Catalog(Mapping[str, FieldType]):
    """Immutable field name -> FieldType mapping for one object type."""

    __slots__ = ("_fields", "object_type")

    def __init__(self, object_type: str, fields: Mapping[str, FieldType]) -> None:
        for name, ftype in fields.items():
            if not is_valid_field_name(name):
                raise CatalogError(f"invalid field name {name!r}", code="invalid_field_name")
            if not isinstance(ftype, FieldType):
                raise CatalogError(
                    f"field {name!r} has invalid type {ftype!r}", code="invalid_field_type"
                )
        self.object_type = object_type
        self._fields: Mapping[str, FieldType] = MappingProxyType(dict(fields))

    def __getitem__(self, name: str) -> FieldType:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Catalog({self.object_type!r}, {dict(self._fields)!r})"


def catalog_for(object_type: str, custom: Mapping[str, FieldType | str] | None = None) -> Catalog:
    """Standard fields of ``object_type`` plus ``custom`` fields addressed as ``custom.<name>``.

    Custom keys may be given bare (``plan``) or already prefixed (``custom.plan``);
    type values may be FieldType members or their string values (``"number"``).
    """
    standard = STANDARD_FIELDS.get(object_type)
    if standard is None:
        raise CatalogError(
            f"unknown object type {object_type!r}; expected one of {', '.join(OBJECT_TYPES)}",
            code="unknown_object_type",
        )
    fields: dict[str, FieldType] = dict(standard)
    for raw_name, raw_type in (custom or {}).items():
        bare: object = raw_name
        if isinstance(raw_name, str) and raw_name.startswith(CUSTOM_PREFIX):
            bare = raw_name[len(CUSTOM_PREFIX):]
        if not isinstance(bare, str) or FIELD_NAME_RE.fullmatch(bare) is None:
            raise CatalogError(
                f"invalid custom field name {raw_name!r}: must match {FIELD_NAME_RE.pattern}",
                code="invalid_field_name",
            )
        try:
            ftype = FieldType(raw_type)
        except ValueError:
            raise CatalogError(
                f"custom field {raw_name!r} has invalid type {raw_type!r}", code="invalid_field_type"
            ) from None
        fields[CUSTOM_PREFIX + bare] = ftype
    return Catalog(object_type, fields)


# ---- fields that are not record fields: behavioural aggregates and segment membership -----------

EVENTS_PREFIX = "events."
SEGMENT_FIELD = "segment"
AGGREGATE_FUNCTIONS: Mapping[str, FieldType] = MappingProxyType({
    "count": FieldType.NUMBER, "sum": FieldType.NUMBER, "min": FieldType.NUMBER,
    "max": FieldType.NUMBER, "last_seen": FieldType.DATETIME,
})
_NEEDS_PROPERTY = frozenset({"sum", "min", "max"})


class AggregateField(tuple[str, str, "str | None"]):
    """``events.<event>.<function>[.<property>]`` split into its parts."""

    __slots__ = ()

    @property
    def event(self) -> str:
        return self[0]

    @property
    def function(self) -> str:
        return self[1]

    @property
    def prop(self) -> str | None:
        return self[2]

    @property
    def field_type(self) -> FieldType:
        return AGGREGATE_FUNCTIONS[self[1]]


def parse_aggregate_field(name: str) -> AggregateField | str:
    """The parts of an aggregate field, or a message saying what is wrong with it."""
    parts = name[len(EVENTS_PREFIX):].split(".")
    if len(parts) not in (2, 3) or any(FIELD_NAME_RE.fullmatch(p) is None for p in parts):
        return ("aggregate fields look like events.<event>.count, events.<event>.last_seen or "
                "events.<event>.sum|min|max.<property> (names in lower snake case)")
    event, function = parts[0], parts[1]
    prop = parts[2] if len(parts) == 3 else None
    if function not in AGGREGATE_FUNCTIONS:
        return f"unknown aggregate {function!r}; expected one of {', '.join(AGGREGATE_FUNCTIONS)}"
    if (function in _NEEDS_PROPERTY) != (prop is not None):
        return (f"aggregate {function!r} needs a numeric property (events.{event}.{function}.<property>)"
                if function in _NEEDS_PROPERTY else f"aggregate {function!r} takes no property")
    return AggregateField((event, function, prop))
