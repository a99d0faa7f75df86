"""`GET /v1/workspaces/{ws}/catalog/{object_type}`: the fields a rule may read and the operators each takes.

A segment builder offers only what the validator accepts, so both read the same tables
(engine/rules/catalog.py for fields and types, engine/rules/validate.py for operators per type).
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.errors import not_found
from engine.api.scope import workspace_of
from engine.api.server import Context, Routes, reply
from engine.rules.catalog import (
    _NEEDS_PROPERTY,  # one definition of which aggregates take a property
    AGGREGATE_FUNCTIONS,
    CUSTOM_PREFIX,
    EVENTS_PREFIX,
    OBJECT_TYPES,
    SEGMENT_FIELD,
    Catalog,
    FieldType,
)
from engine.rules.validate import OPERATORS_BY_TYPE, RELATIVE_OPS, SEGMENT_OPS

# The order a builder lists operators in: the common ones first.
OPERATOR_ORDER: tuple[str, ...] = (
    "=", "!=", "<", ">", "<=", ">=", "between", "notBetween", "in", "notIn",
    "contains", "doesNotContain", "beginsWith", "doesNotBeginWith", "endsWith", "doesNotEndWith",
    "hasAny", "hasAll", "hasNone", "withinLast", "moreThanAgo", "withinNext", "before", "after",
    "memberOf", "notMemberOf", "null", "notNull",
)


def register(routes: Routes) -> None:
    routes.add("GET", "/v1/workspaces/{workspace}/catalog/{object_type}", field_catalog)


def ordered(operators: frozenset[str]) -> list[str]:
    return [op for op in OPERATOR_ORDER if op in operators] + sorted(operators.difference(OPERATOR_ORDER))


def operators_of(ftype: FieldType) -> list[str]:
    return ordered(OPERATORS_BY_TYPE[ftype])


def describe(workspace_catalog: Catalog) -> dict[str, Any]:
    """The catalog as a builder needs it: record fields (standard, then custom), the segment field and the
    behavioural aggregate functions (`events.<event>.<function>[.<property>]`)."""
    fields = [{"name": name, "type": ftype.value, "custom": name.startswith(CUSTOM_PREFIX), "operators": operators_of(ftype)}
              for name, ftype in workspace_catalog.items()]
    return {
        "object_type": workspace_catalog.object_type,
        "fields": fields,
        "segment": {"field": SEGMENT_FIELD, "operators": ordered(SEGMENT_OPS)},
        "aggregates": {
            "prefix": EVENTS_PREFIX,
            "functions": [{"function": fn, "type": ftype.value, "needs_property": fn in _NEEDS_PROPERTY,
                           "operators": operators_of(ftype)} for fn, ftype in AGGREGATE_FUNCTIONS.items()],
            "takes": ["window", "where"],
        },
        "relative_operators": ordered(RELATIVE_OPS),
    }


async def field_catalog(ctx: Context) -> web.StreamResponse:
    workspace = await workspace_of(ctx)
    object_type = ctx.params["object_type"]
    catalog = ctx.engine.registry.workspaces.catalog(workspace, object_type) if object_type in OBJECT_TYPES else None
    if catalog is None:
        raise not_found(f"object type {object_type!r}")
    return reply(describe(catalog))
