"""`GET /v1/openapi.json`: an OpenAPI 3.1 description of every HTTP route in engine/api.

Each module's routes are described in a module-level list of `Operation`s below; `document()` builds
the OpenAPI document from them. A test checks that every route registered in engine/api
(segments, queries, health) is described here, so the description cannot drift from the route table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.api.server import Context, Routes, reply
from engine.rules import OBJECT_TYPES


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    """One (method, path): what it does, its query parameters, request body and responses.

    `responses` maps a status to (description, schema name in components/schemas or None); the error
    statuses every authenticated route can answer (401, 404 for a foreign workspace, 413, 500) are added
    by `document()`.
    """

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    responses: dict[int, tuple[str, str | None]]
    query: tuple[Param, ...] = ()
    body: str | None = None
    public: bool = False
    description: str = ""


SEGMENTS = "/v1/workspaces/{workspace}/segments"
SEGMENT = SEGMENTS + "/{segment_id}"
WRITE_ERRORS: dict[int, tuple[str, str | None]] = {
    403: ("the token's role may not change segments (`forbidden`)", "Error"),
    504: ("published but not applied by this worker in time (`not_applied`); retry the read", "Error"),
}
BODY_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("the body is not a JSON object (`bad_request`)", "Error"),
    409: ("`name_taken` (name used by another segment of the object type) or `id_taken`", "Error"),
    422: (
        "`invalid_rule` (with `problems`), `missing_<attribute>`, `invalid_<attribute>`, `unknown_attribute`,"
        " `immutable_attribute`, `not_supported` (kind static), `unknown_team_member` (with `attribute`, `member`)",
        "Error",
    ),
}

SEGMENT_OPERATIONS: list[Operation] = [
    Operation(
        "GET", SEGMENTS, "listSegments", "List, filter, search and sort segments", "segments",
        {200: ("segments visible to the caller", "SegmentList"),
         400: ("a query parameter is invalid (`invalid_parameter`)", "Error")},
        query=(
            Param("object_type", "only segments of this object type", {"enum": list(OBJECT_TYPES)}),
            Param("owner", "only segments owned by this team member"),
            Param("status", "only active or inactive segments", {"enum": ["active", "inactive"]}),
            Param("visible_to", "only segments not hidden from this team member"),
            Param("q", "case-insensitive search in name and description"),
            Param("sort", "sort order; `-` prefix for descending (default `name`)",
                  {"enum": ["name", "-name", "created_at", "-created_at"]}),
        ),
        description="An agent never sees segments hidden from them.",
    ),
    Operation(
        "POST", SEGMENTS, "createSegment", "Create a segment", "segments",
        {201: ("the created segment, already applied by this worker", "Segment"), **BODY_ERRORS, **WRITE_ERRORS},
        body="SegmentInput",
        description="Publishes `segment.defined`; the engine backfills it over every record and emits `segment.entered` events.",
    ),
    Operation(
        "POST", SEGMENTS + "/recalculate", "recalculateAllSegments", "Recalculate every active segment", "segments",
        {202: ("the new versions; backfills run in the background", "RecalculationList"), **WRITE_ERRORS},
    ),
    Operation(
        "GET", SEGMENT, "getSegment", "Get a segment with its figures", "segments",
        {200: ("the segment", "Segment")},
    ),
    Operation(
        "PUT", SEGMENT, "replaceSegment", "Replace a segment (omitted optional attributes are cleared)", "segments",
        {200: ("the segment, already applied by this worker", "Segment"), **BODY_ERRORS, **WRITE_ERRORS},
        body="SegmentInput",
    ),
    Operation(
        "PATCH", SEGMENT, "updateSegment", "Change some attributes of a segment (`null` clears an optional one)",
        "segments",
        {200: ("the segment, already applied by this worker", "Segment"), **BODY_ERRORS, **WRITE_ERRORS},
        body="SegmentInput",
    ),
    Operation(
        "DELETE", SEGMENT, "deleteSegment", "Delete a segment (records are never touched)", "segments",
        {204: ("deleted; one `segment.deleted` event follows", None), **WRITE_ERRORS},
    ),
    Operation(
        "POST", SEGMENT + "/recalculate", "recalculateSegment", "Recalculate one segment", "segments",
        {202: ("the new version; the backfill runs in the background", "Recalculation"),
         409: ("the segment is inactive (`segment_inactive`)", "Error"), **WRITE_ERRORS},
    ),
]

# ---- QUERY ROUTES GO HERE ------------------------------------------------------------------------
# engine/api/queries.py: every route it registers is described here as an `Operation` (schemas it
# references go into EXTRA_SCHEMAS). Add a route there → add it here; the API test checks both match.
WS = "/v1/workspaces/{workspace}"
RECORD = WS + "/records/{object_type}/{record_id}"
_OBJECT = ("a JSON object", "Object")
MEMBER_QUERY = (
    Param("fields", "comma-separated catalog fields to return with each member (e.g. `email,custom.plan`)"),
    Param("q", "case-insensitive search in the record id and the chosen fields (all fields when none chosen)"),
    Param("filter", "an extra rule (JSON, URL-encoded) the members must also match"),
)
QUERY_OPERATIONS: list[Operation] = [
    Operation("GET", RECORD, "getRecord", "A record as the engine knows it and the segments it is in (cached)",
              "queries", {200: _OBJECT}),
    Operation("GET", RECORD + "/evaluate", "evaluateRecord", "Current results: every active segment evaluated now",
              "queries", {200: _OBJECT}),
    Operation("GET", SEGMENT + "/members/{record_id}", "isMember", "Is the record in the segment (cached)",
              "queries", {200: _OBJECT}),
    Operation("GET", SEGMENT + "/explain/{record_id}", "explainRecord",
              "Why the record matches or not, condition by condition", "queries", {200: _OBJECT}),
    Operation("GET", SEGMENT + "/count", "countMembers", "Member count of the segment", "queries", {200: _OBJECT}),
    Operation("GET", SEGMENT + "/members", "listMembers",
              "A page of members sorted by record id, with chosen fields, searched and filtered", "queries",
              {200: ("`{segment_id, members: [ids], records: [{id, fields}] (with `fields`), next_cursor}`", "Object"),
               400: ("bad `limit`, `cursor`, `fields` or `filter` JSON (`bad_request`, with `parameter`)", "Error"),
               422: ("`filter` is not a valid rule (`invalid_rule` with `problems`)", "Error")},
              query=(Param("limit", "page size, 1-1000 (default 100)", {"type": "integer"}),
                     Param("cursor", "`next_cursor` of the previous page"), *MEMBER_QUERY),
              description="A search or filter examines at most 5,000 members per partition for one page: a page "
                          "can then hold fewer than `limit` members with a `next_cursor` to go on from."),
    Operation("GET", SEGMENT + "/export", "exportMembers",
              "Every member (searched and filtered like the members page), streamed as CSV or NDJSON", "queries",
              {200: ("text/csv (columns record_id and the fields; dates ISO-8601, lists as JSON) or "
                     "application/x-ndjson (the fields as keys)", None),
               400: ("bad `format`, `fields` or `filter` JSON (`bad_request`)", "Error"),
               422: ("`filter` is not a valid rule (`invalid_rule` with `problems`)", "Error")},
              query=(Param("format", "csv (default) or ndjson", {"enum": ["csv", "ndjson"]}), *MEMBER_QUERY)),
    Operation("POST", WS + "/preview", "previewRule", "Count and sample of the records an unsaved rule matches",
              "queries", {200: _OBJECT, 400: ("bad body (`bad_request`)", "Error"),
                          422: ("`invalid_rule` with `problems`", "Error")}, body="Object"),
    Operation("POST", SEGMENT + "/preview", "previewEdit",
              "What saving a new rule would do to a dynamic segment's members now (`{rule, sample_size?}`)",
              "queries", {200: ("`{segment_id, count, sample, added: {count, sample}, removed: {count, sample}, "
                                "scanned, took_ms}`", "Object"),
                          400: ("bad body (`bad_request`)", "Error"),
                          409: ("the segment is static (`not_dynamic`)", "Error"),
                          422: ("`invalid_rule` with `problems`", "Error")}, body="Object",
              description="added: records the rule matches that are not members; removed: members it does not "
                          "match. Samples are the first record ids in order."),
    Operation("GET", WS + "/events/stream", "eventStream",
              "The live feed: segment and chat assignment events as they happen (server-sent events)", "queries",
              {200: ("`text/event-stream`: `data: <event JSON>` per event, `: keepalive` every 15 s, "
                     "`event: overflow` before closing a client more than 1,000 events behind", None),
               400: ("bad `limit` (`bad_request`)", "Error"),
               503: ("the event topics cannot be reached (`not_ready`)", "Error")},
              query=(Param("segment_id", "only this segment's events (repeat for several; conversation "
                                         "events always come)"),
                     Param("limit", "close the stream after this many events (default: never)", {"type": "integer"})),
              description="New events only. segment.entered / exited / deleted of the segments the caller may see, "
                          "and conversation.assigned / unassigned (for an agent without the ids of segments hidden "
                          "from them). Read it with fetch() to send the bearer token."),
    Operation("GET", WS + "/segment-figures", "segmentFigures",
              "Per segment key (`ws/type/id`): member_count and evaluation_cost (evaluations and CPU per second, too_heavy)",
              "queries", {200: _OBJECT}),
    Operation("POST", SEGMENT + "/members", "importMembers",
              "Static segments: add or remove record ids (`{record_ids, mode: add|remove}`)", "queries",
              {202: _OBJECT, 400: ("bad body (`bad_request`)", "Error"), 403: ("agents may not import (`forbidden`)", "Error"),
               409: ("`not_static` or `segment_inactive`", "Error"), 413: ("too many ids (`payload_too_large`)", "Error")},
              body="Object"),
    Operation("DELETE", SEGMENT + "/members/{record_id}", "removeMember", "Static segments: remove one record",
              "queries", {202: _OBJECT, 403: ("agents may not remove (`forbidden`)", "Error"),
                          409: ("`not_static` or `segment_inactive`", "Error")}),
]
ASSIGNMENT_OPERATIONS: list[Operation] = [
    Operation("GET", WS + "/assignment-rules", "getAssignmentRules",
              "The workspace's chat assignment rules (in order) and groups", "assignment",
              {200: ("`{version, rules: [{id, segment_id, assign_to: {member} | {group}}], groups: {name: [members]}}`",
                     "Object")}),
    Operation("PUT", WS + "/assignment-rules", "putAssignmentRules",
              "Replace the chat assignment rules and groups (first matching rule wins)", "assignment",
              {200: ("the saved document with its new version", "Object"),
               400: ("the body is not JSON (`bad_request`)", "Error"),
               403: ("the token's role may not change assignment rules (`forbidden`)", "Error"),
               409: ("`version_conflict`: the body's `version` is not the stored one", "Error"),
               422: ("`invalid_assignment_rules` with `problems` (code, JSON pointer path, message): unknown "
                     "segment or group, duplicate rule id, bad assignee, a member outside the team (`unknown_team_member`)", "Error"),
               504: WRITE_ERRORS[504]},
              body="Object",
              description="A conversation.created is answered with conversation.assigned by the first rule whose "
                          "segment the contact is in, else conversation.unassigned. A group rule rotates over "
                          "the group's members."),
]
ACCOUNT_OPERATIONS: list[Operation] = [
    Operation("GET", "/v1/me", "getMe", "Who the token belongs to and the workspaces it may act in", "account",
              {200: ("`{role, member, workspace (null for a superadmin), workspaces: [names]}`", "Object")}),
    Operation("GET", "/v1/workspaces", "listWorkspaces",
              "The workspaces the token may act in (every one for a superadmin: the \"All companies\" filter)",
              "account", {200: ("`{workspaces: [{name, segments}]}`", "Object")}),
]
CATALOG_OPERATIONS: list[Operation] = [
    Operation("GET", WS + "/catalog/{object_type}", "getCatalog",
              "The fields a rule may read for the object type (custom fields included) and the operators each takes",
              "catalog", {200: ("`{object_type, fields: [{name, type, custom, operators}], segment: {field, operators}, "
                                "aggregates: {prefix, functions: [{function, type, needs_property, operators}], takes}, "
                                "relative_operators}`", "Object")}),
]
TEAM_OPERATIONS: list[Operation] = [
    Operation("GET", WS + "/team", "listTeam", "The workspace's team members (from the workspaces file)", "team",
              {200: ("`{members: [{name, role: admin|agent, group (null when none)}]}`, by name", "Object")},
              description="The names `hidden_from`, `default_for` and chat assignment rules may use; any other name "
                          "is refused with 422 `unknown_team_member`."),
    Operation("GET", WS + "/defaults", "getDefaults", "Default segments: shared, the caller's pins, per member",
              "team", {200: ("`{shared: {object_type: segment_id}, mine: {object_type: segment_id}, for_members: "
                             "{member: {object_type: segment_id}}}` (an agent sees only their own for_members)",
                             "Object")},
              description="`for_members` comes from segments' `default_for`. A default naming a deleted segment, "
                          "or one hidden from the caller, is left out."),
    Operation("GET", WS + "/defaults/resolved", "resolveDefaults",
              "The segment each object type opens on for a member: pin, else per-member default, else shared",
              "team", {200: ("`{member, defaults: {object_type: {segment_id, source: pin|member|shared}}}`; object "
                             "types with none are absent", "Object"),
                       403: ("an agent asked for another member (`forbidden`)", "Error"),
                       422: ("`member` is not a team member (`unknown_team_member`)", "Error")},
              query=(Param("member", "team member to resolve for (admins only; default: the caller)"),)),
    Operation("PUT", WS + "/defaults/shared/{object_type}", "putSharedDefault",
              "Set or clear (`null`) the workspace's shared default segment of an object type (admins)", "team",
              {200: ("the defaults as GET .../defaults answers them", "Object"),
               400: ("unknown object type (`invalid_parameter`) or a body other than `{segment_id}` (`bad_request`)",
                     "Error"),
               403: WRITE_ERRORS[403], 422: ("no such segment of the object type (`unknown_segment`)", "Error"),
               504: WRITE_ERRORS[504]}, body="Object"),
    Operation("PUT", WS + "/defaults/mine/{object_type}", "putMyDefault",
              "Pin or unpin (`null`) the caller's own default segment of an object type (any team member)", "team",
              {200: ("the defaults as GET .../defaults answers them", "Object"),
               400: ("unknown object type (`invalid_parameter`) or a body other than `{segment_id}` (`bad_request`)",
                     "Error"),
               403: ("the token's member is not in the workspace's team (`not_team_member`)", "Error"),
               422: ("no such segment of the object type visible to the caller (`unknown_segment`)", "Error"),
               504: WRITE_ERRORS[504]}, body="Object"),
    Operation("POST", WS + "/imports", "importIntoNewSegment",
              "Import record ids into a new static segment named after the import (`{object_type, record_ids, name?}`)",
              "queries", {202: ("`{segment_id, name, accepted}`", "Object"),
                          400: ("bad `record_ids` (`bad_request`)", "Error"),
                          403: ("agents may not import (`forbidden`)", "Error"),
                          409: ("`name_taken` (a concurrent create took the name)", "Error"),
                          413: ("too many ids (`payload_too_large`)", "Error"),
                          422: ("`missing_object_type`, `invalid_object_type`, `invalid_name`, `unknown_attribute`",
                                "Error"), 504: WRITE_ERRORS[504]},
              body="Object",
              description="The name defaults to `Import YYYY-MM-DD HH:MM` (UTC); a name already taken gets ` (2)`, "
                          "` (3)` ..."),
]
EXTRA_SCHEMAS: dict[str, dict[str, Any]] = {"Object": {"type": "object"}}
# --------------------------------------------------------------------------------------------------

META_OPERATIONS: list[Operation] = [
    Operation(
        "GET", "/v1/openapi.json", "getOpenApi", "This document", "meta",
        {200: ("OpenAPI 3.1 description of the HTTP API", None)}, public=True,
    ),
    Operation(
        "GET", "/health", "getHealth",
        "Readiness, the partitions this worker owns, who owns the rest, running backfills and lag", "meta",
        {200: ("ready", "Object"), 503: ("loading segment definitions or recovering tables", "Object")}, public=True,
    ),
    Operation("GET", "/health/live", "getLiveness", "Liveness: 200 while the worker serves", "meta",
              {200: ("live", "Object")}, public=True),
    Operation("GET", "/health/ready", "getReadiness",
              "Readiness: 200 once definitions are loaded and tables recovered, else 503", "meta",
              {200: ("ready", "Object"), 503: ("not ready: `registry_loaded`, `recovering`", "Object")}, public=True),
]


def operations() -> list[Operation]:
    return [*SEGMENT_OPERATIONS, *QUERY_OPERATIONS, *TEAM_OPERATIONS, *ASSIGNMENT_OPERATIONS, *ACCOUNT_OPERATIONS, *CATALOG_OPERATIONS,
            *META_OPERATIONS]


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string", "description": "for humans"},
                "attribute": {"type": "string", "description": "the body attribute at fault, where there is one"},
                "parameter": {"type": "string", "description": "the query parameter at fault, where there is one"},
                "problems": {
                    "type": "array",
                    "description": "`invalid_rule` only: every problem of the rule",
                    "items": {
                        "type": "object",
                        "properties": {
                            "code": {"type": "string"},
                            "path": {"type": "string", "description": "JSON pointer into the rule, e.g. /rules/2/rules/0"},
                            "field": {"type": ["string", "null"]},
                            "operator": {"type": ["string", "null"]},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
            "additionalProperties": True,
        }
    },
}

_WRITABLE_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$", "description": "generated when absent on create"},
    "object_type": {"enum": list(OBJECT_TYPES)},
    "name": {"type": "string", "minLength": 1, "maxLength": 200, "description": "unique per workspace and object type (case-insensitive)"},
    "description": {"type": ["string", "null"], "maxLength": 2000},
    "colour": {"type": ["string", "null"], "pattern": "^#[0-9A-Fa-f]{6}$"},
    "owner": {"type": ["string", "null"], "maxLength": 200},
    "hidden_from": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 1000,
                    "description": "team members who never see the segment (GET .../team lists them)"},
    "default_for": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 1000,
                    "description": "team members whose default view of the object type this is, unless they pinned "
                                   "another (see GET .../defaults/resolved)"},
    "status": {"enum": ["active", "inactive"], "default": "active"},
    "kind": {"enum": ["dynamic", "static"], "default": "dynamic", "description": "`static` answers 422 `not_supported` for now"},
    "rule": {"type": "object", "description": "react-querybuilder group {combinator, not, rules}; see README, Rules"},
    "recalculation_interval_minutes": {"type": ["integer", "null"], "minimum": 1, "maximum": 525600},
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": ERROR_SCHEMA,
    "SegmentInput": {
        "type": "object",
        "description": "Create/PUT need object_type, name and rule; PATCH takes any subset. Read-only attributes are ignored.",
        "properties": _WRITABLE_PROPERTIES,
    },
    "Segment": {
        "type": "object",
        "properties": {
            **_WRITABLE_PROPERTIES,
            "workspace": {"type": "string"},
            "version": {"type": "integer", "description": "epoch ms; grows with every write; events carry it"},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "modified_at": {"type": ["string", "null"], "format": "date-time"},
            "member_count": {"type": ["integer", "null"]},
            "last_counted": {"type": ["string", "null"], "format": "date-time"},
            "evaluation_cost": {
                "type": ["object", "null"],
                "description": "measured on live traffic (sampled): too_heavy when cpu_ms_per_s >= 100",
                "properties": {"evaluations_per_s": {"type": "number"}, "cpu_ms_per_s": {"type": "number"},
                               "too_heavy": {"type": "boolean"}},
            },
        },
    },
    "SegmentList": {
        "type": "object",
        "properties": {"segments": {"type": "array", "items": {"$ref": "#/components/schemas/Segment"}},
                       "total": {"type": "integer"}},
    },
    "Recalculation": {
        "type": "object",
        "properties": {"segment_id": {"type": "string"}, "object_type": {"type": "string"}, "version": {"type": "integer"}},
    },
    "RecalculationList": {
        "type": "object",
        "properties": {
            "recalculated": {"type": "array", "items": {"$ref": "#/components/schemas/Recalculation"}},
            "skipped_inactive": {"type": "array", "items": {"type": "string"}},
        },
    },
}

_PATH_PARAM = re.compile(r"{([^}/]+)}")


def _responses(op: Operation) -> dict[str, Any]:
    responses = dict(op.responses)
    if not op.public:
        responses.setdefault(401, ("no or unknown bearer token (`unauthenticated`)", "Error"))
        responses.setdefault(404, ("unknown workspace, a workspace the token may not see, or unknown / hidden segment (`not_found`)", "Error"))
        responses.setdefault(413, ("request body too large (`payload_too_large`)", "Error"))
        responses.setdefault(431, ("an Authorization header over 8,192 characters (`token_too_large`); a header "
                                   "far larger gets `header_too_large`", "Error"))
    responses.setdefault(500, ("a bug (`internal_error`)", "Error"))
    out: dict[str, Any] = {}
    for status, (description, schema) in sorted(responses.items()):
        entry: dict[str, Any] = {"description": description}
        if schema is not None:
            entry["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
        out[str(status)] = entry
    return out


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations():
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(op.path)
        ] + [
            {"name": p.name, "in": "query", "required": False, "description": p.description, "schema": p.schema}
            for p in op.query
        ]
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters,
            "responses": _responses(op),
        }
        if op.description:
            entry["description"] = op.description
        if op.public:
            entry["security"] = []
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.body}"}}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "segment-engine",
            "version": "1",
            "description": "Segment management and membership queries. Errors are `{\"error\": {\"code\", \"message\", ...}}` with a stable `code`.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**SCHEMAS, **EXTRA_SCHEMAS},
        },
    }


async def openapi_json(ctx: Context) -> web.Response:
    return reply(document())


def register(routes: Routes) -> None:
    routes.add("GET", "/v1/openapi.json", openapi_json, public=True)
