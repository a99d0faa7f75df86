"""Segment management over HTTP: CRUD, list/filter/search/sort, recalculation, figures.

The segment registry every worker already follows (the compacted definitions topic) is the store:
reads come from this worker's registry, writes publish `segment.defined` / `segment.removed` and then
wait until this worker's registry has applied that version, so a read right after a write sees it
(read-your-writes on the worker that answered the write; other workers follow within moments).

Checks are local to the answering worker: two simultaneous creates of the same name (or id) on two
workers can both pass; the later version wins on the topic.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any, Mapping

from aiohttp import web

from engine.api.auth import check_write
from engine.api.errors import ApiError, bad_request, not_found
from engine.api.queries import segment_figures
from engine.api.scope import find_segment, visible, workspace_of
from engine.api.server import Context, Routes, reply, until_applied
from engine.api.team import check_team_members
from engine.envelope import encode, envelope, segment_key, utc_now_iso
from engine.errors import SchemaViolation
from engine.registry import Segment, reference_problems, referrers
from engine.rules import OBJECT_TYPES, InvalidRule, load_rule
from engine.schemas import validate_message

log = logging.getLogger("segment_engine.api.segments")

SOURCE = "segment-engine-api"

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
COLOUR_PATTERN = re.compile(r"^#[0-9A-Fa-f]{6}$")
STATUSES = ("active", "inactive")
KINDS = ("dynamic", "static")
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_MEMBER = 200
MAX_HIDDEN_FROM = 1000  # and default_for
TEAM_LISTS = ("hidden_from", "default_for")  # attributes that list team members
MAX_INTERVAL_MINUTES = 525_600  # one year

# Attributes a client writes; everything else in a segment's JSON is computed.
WRITABLE = (
    "id", "object_type", "name", "description", "colour", "owner", "hidden_from", "default_for",
    "status", "kind", "rule", "recalculation_interval_minutes",
)
# Computed attributes: ignored in a PUT/PATCH body so a client may send back what it got.
READ_ONLY = (
    "workspace", "version", "created_at", "modified_at", "member_count", "last_counted", "evaluation_cost",
)
OPTIONAL_TEXT = ("description", "colour", "owner")
SORTS = ("name", "created_at")


# ---- errors --------------------------------------------------------------------------------------


def missing(attribute: str) -> ApiError:
    return ApiError(422, f"missing_{attribute}", f"`{attribute}` is required", attribute=attribute)


def invalid(attribute: str, message: str) -> ApiError:
    return ApiError(422, f"invalid_{attribute}", f"`{attribute}` {message}", attribute=attribute)


def invalid_parameter(parameter: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"query parameter `{parameter}` {message}", parameter=parameter)


# ---- attribute validation ------------------------------------------------------------------------


def _text(body: Mapping[str, Any], attribute: str, max_length: int, *, strip: bool = False) -> str:
    value = body[attribute]
    if not isinstance(value, str):
        raise invalid(attribute, "must be a string")
    if strip:
        value = value.strip()
    if not value and attribute != "description":
        raise invalid(attribute, "must not be empty")
    if len(value) > max_length:
        raise invalid(attribute, f"must be at most {max_length} characters")
    return value


def check_attributes(body: Any) -> dict[str, Any]:
    """The writable attributes present in a request body, each checked; `None` means "clear" (optional ones)."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    unknown = sorted(k for k in body if k not in WRITABLE and k not in READ_ONLY)
    if unknown:
        raise ApiError(422, "unknown_attribute", f"unknown attribute `{unknown[0]}`", attribute=unknown[0])
    out: dict[str, Any] = {}
    for attribute in WRITABLE:
        if attribute not in body:
            continue
        value = body[attribute]
        if value is None and attribute in (*OPTIONAL_TEXT, *TEAM_LISTS, "recalculation_interval_minutes", "id"):
            out[attribute] = None
            continue
        if value is None:
            raise invalid(attribute, "must not be null")
        if attribute == "id":
            if not isinstance(value, str) or not ID_PATTERN.match(value):
                raise invalid("id", "must be 1-100 characters of letters, digits, `_`, `.` or `-`")
        elif attribute == "object_type":
            if value not in OBJECT_TYPES:
                raise invalid("object_type", f"must be one of {', '.join(OBJECT_TYPES)}")
        elif attribute == "name":
            value = _text(body, "name", MAX_NAME, strip=True)
        elif attribute == "description":
            value = _text(body, "description", MAX_DESCRIPTION)
        elif attribute == "colour":
            if not isinstance(value, str) or not COLOUR_PATTERN.match(value):
                raise invalid("colour", "must be a hex colour such as #1f77b4")
        elif attribute == "owner":
            value = _text(body, "owner", MAX_MEMBER, strip=True)
        elif attribute in TEAM_LISTS:
            if not isinstance(value, list) or not all(isinstance(m, str) and 0 < len(m) <= MAX_MEMBER for m in value):
                raise invalid(attribute, f"must be a list of team members (non-empty strings of at most {MAX_MEMBER} characters)")
            value = list(dict.fromkeys(value))
            if len(value) > MAX_HIDDEN_FROM:
                raise invalid(attribute, f"must list at most {MAX_HIDDEN_FROM} team members")
        elif attribute == "status":
            if value not in STATUSES:
                raise invalid("status", "must be `active` or `inactive`")
        elif attribute == "kind":
            if value not in KINDS:
                raise invalid("kind", "must be `dynamic` or `static`")
        elif attribute == "recalculation_interval_minutes":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INTERVAL_MINUTES:
                raise invalid("recalculation_interval_minutes", f"must be an integer from 1 to {MAX_INTERVAL_MINUTES}")
        out[attribute] = value
    return out


def writable_of(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The writable attributes of a stored definition (what a PATCH merges into)."""
    return {k: definition[k] for k in WRITABLE if k in definition}


def check_team_lists(ctx: Context, workspace: str, attrs: Mapping[str, Any], stored: Segment | None) -> None:
    """Names a write adds to `hidden_from` / `default_for` must be team members (names already stored are
    kept, so a member leaving the team does not block every later edit); a segment cannot be the default
    of someone it is hidden from."""
    for attribute in TEAM_LISTS:
        kept = set(stored.definition.get(attribute, ())) if stored is not None else set()
        check_team_members(ctx, workspace, attribute, [m for m in attrs.get(attribute) or () if m not in kept])
    both = [m for m in attrs.get("default_for") or () if m in set(attrs.get("hidden_from") or ())]
    if both:
        raise invalid("default_for", f"names {both[0]!r}, from whom the segment is hidden")


# ---- presentation --------------------------------------------------------------------------------


def view(segment: Segment) -> dict[str, Any]:
    d = segment.definition
    return {
        "id": segment.id,
        "workspace": segment.workspace,
        "object_type": segment.object_type,
        "name": segment.name,
        "description": d.get("description"),
        "colour": d.get("colour"),
        "owner": d.get("owner"),
        "hidden_from": list(d.get("hidden_from", ())),
        "default_for": list(d.get("default_for", ())),
        "status": d.get("status", "active"),
        "kind": d.get("kind", "dynamic"),
        "rule": d.get("rule"),  # null for a static segment
        "recalculation_interval_minutes": d.get("recalculation_interval_minutes"),
        "created_at": d.get("created_at"),
        "modified_at": d.get("modified_at"),
        "version": segment.version,
        "member_count": None,
        "last_counted": None,
        "evaluation_cost": None,
    }


async def with_figures(ctx: Context, segments: list[Segment]) -> list[dict[str, Any]]:
    """Views with `member_count`, `last_counted` and `evaluation_cost` (null where they cannot be had)."""
    views = [view(s) for s in segments]
    if not segments:
        return views
    keys = [segment_key(s.workspace, s.object_type, s.id) for s in segments]
    try:
        figures = await segment_figures(ctx, keys)
    except Exception:  # noqa: BLE001 - figures are decoration: the segment is served, with null figures
        log.exception("figures failed for %d segments", len(keys))
        return views
    counted_at = utc_now_iso()
    for key, v in zip(keys, views):
        v["member_count"] = figures[key]["member_count"]
        v["last_counted"] = counted_at
        v["evaluation_cost"] = figures[key]["evaluation_cost"]
    return views


# ---- shared steps --------------------------------------------------------------------------------


def new_segment_id() -> str:
    return f"seg-{uuid.uuid4().hex[:16]}"


def next_version(ctx: Context, key: str) -> int:
    """A version (epoch ms) strictly above every version this worker has seen for the key."""
    stamp = ctx.engine.registry.stamps.get(key)
    current = int(stamp[0]) if stamp else 0
    return max(int(time.time() * 1000), current + 1)


async def send(ctx: Context, workspace: str, type_: str, data: dict[str, Any]) -> tuple[str, int]:
    """Validate a definition message against its schema and publish it; returns (key, version)."""
    key = segment_key(workspace, data["object_type"], data["id"])
    message = envelope(type_, data, workspace=workspace, source=SOURCE)
    try:
        validate_message(message)
    except SchemaViolation as exc:
        raise ApiError(422, "invalid_segment", str(exc)) from None
    engine = ctx.engine
    future = await engine.app.producer.send(engine.definitions_topic_name, key.encode(), encode(message), None, None, None)
    await future
    return key, int(data["version"])


async def wait_applied(ctx: Context, key: str, version: int) -> int:
    """Until this worker's registry holds `version` (or newer) of `key`: read-your-writes."""
    def applied() -> bool:
        stamp = ctx.engine.registry.stamps.get(key)
        return stamp is not None and stamp[0] >= version

    await until_applied(applied, key, version)
    return version


async def publish(ctx: Context, workspace: str, type_: str, data: dict[str, Any]) -> int:
    """Publish a definition message, then wait until this worker's registry applied it."""
    key, version = await send(ctx, workspace, type_, data)
    return await wait_applied(ctx, key, version)


async def save(
    ctx: Context, workspace: str, attrs: dict[str, Any], *, created_at: str | None
) -> Segment:
    """Check a complete set of writable attributes, publish them as a new version and return the applied segment."""
    registry = ctx.engine.registry
    for attribute in ("object_type", "name"):
        if attrs.get(attribute) is None:
            raise missing(attribute)
    kind = attrs.get("kind") or "dynamic"
    object_type = attrs["object_type"]
    segment_id = attrs["id"]
    catalog = registry.workspaces.catalog(workspace, object_type)
    if catalog is None:  # every configured workspace has a catalog for every object type
        raise invalid("object_type", f"is not configured for workspace {workspace!r}")
    if kind == "static":  # members come from imports (POST .../members, `segments import`), not a rule
        if attrs.get("rule") is not None:
            raise ApiError(422, "rule_not_allowed", "a static segment has no rule; its members are imported",
                           attribute="rule")
    elif attrs.get("rule") is None:
        raise missing("rule")
    else:
        rule = load_rule(attrs["rule"], catalog)  # raises InvalidRule: 422 invalid_rule with every problem
        problems = reference_problems(registry.segment_set(workspace, object_type).segments, segment_id, rule)
        if problems:
            raise InvalidRule(problems)
    check_team_lists(ctx, workspace, attrs, registry.get(workspace, object_type, segment_id))
    name_key = attrs["name"].casefold()
    for other in registry.segment_set(workspace, object_type).segments.values():
        if other.id != segment_id and other.name.strip().casefold() == name_key:
            raise ApiError(
                409, "name_taken", f"a {object_type} segment named {attrs['name']!r} already exists",
                attribute="name", segment_id=other.id,
            )
    now = utc_now_iso()
    key = segment_key(workspace, object_type, segment_id)
    data: dict[str, Any] = {
        "id": segment_id,
        "object_type": object_type,
        "name": attrs["name"],
        "status": attrs.get("status") or "active",
        "kind": kind,
        "hidden_from": attrs.get("hidden_from") or [],
        "default_for": attrs.get("default_for") or [],
        "created_at": created_at or now,
        "modified_at": now,
        "version": next_version(ctx, key),
    }
    if kind == "dynamic":
        data["rule"] = attrs["rule"]
    for attribute in (*OPTIONAL_TEXT, "recalculation_interval_minutes"):
        if attrs.get(attribute) is not None:
            data[attribute] = attrs[attribute]
    await publish(ctx, workspace, "segment.defined", data)
    segment = registry.get(workspace, object_type, segment_id)
    if segment is None:  # removed again by a concurrent write between publish and now
        raise not_found(f"segment {segment_id!r}")
    return segment


# ---- handlers ------------------------------------------------------------------------------------


async def list_segments(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    object_type = ctx.query("object_type")
    if object_type is not None and object_type not in OBJECT_TYPES:
        raise invalid_parameter("object_type", f"must be one of {', '.join(OBJECT_TYPES)}")
    status = ctx.query("status")
    if status is not None and status not in STATUSES:
        raise invalid_parameter("status", "must be `active` or `inactive`")
    sort = ctx.query("sort") or "name"
    if sort.removeprefix("-") not in SORTS:
        raise invalid_parameter("sort", "must be `name`, `created_at`, `-name` or `-created_at`")
    owner = ctx.query("owner")
    visible_to = ctx.query("visible_to")
    q = (ctx.query("q") or "").strip().casefold()

    def keep(s: Segment) -> bool:
        d = s.definition
        return (
            visible(ctx.principal, s)
            and (object_type is None or s.object_type == object_type)
            and (status is None or d.get("status", "active") == status)
            and (owner is None or d.get("owner") == owner)
            and (visible_to is None or visible_to not in d.get("hidden_from", ()))
            and (not q or q in s.name.casefold() or q in (d.get("description") or "").casefold())
        )

    found = [s for s in ctx.engine.registry.in_workspace(workspace) if keep(s)]
    field = sort.removeprefix("-")
    if field == "name":
        found.sort(key=lambda s: (s.name.casefold(), s.id), reverse=sort.startswith("-"))
    else:
        found.sort(key=lambda s: (s.definition.get("created_at") or "", s.id), reverse=sort.startswith("-"))
    return reply({"segments": await with_figures(ctx, found), "total": len(found)})


async def create_segment(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    check_write(ctx.principal)
    attrs = check_attributes(await ctx.json())
    segment_id = attrs.get("id") or new_segment_id()
    attrs["id"] = segment_id
    existing = ctx.engine.registry.find(workspace, segment_id)
    if existing is not None:
        raise ApiError(409, "id_taken", f"segment id {segment_id!r} is already used in this workspace", attribute="id")
    segment = await save(ctx, workspace, attrs, created_at=None)
    return reply((await with_figures(ctx, [segment]))[0], 201)


async def get_segment(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    segment = find_segment(ctx, workspace)
    return reply((await with_figures(ctx, [segment]))[0])


def _same_identity(attrs: dict[str, Any], segment: Segment) -> None:
    if attrs.get("id") not in (None, segment.id):
        raise ApiError(422, "immutable_attribute", "`id` cannot change; create a new segment instead", attribute="id")
    if attrs.get("object_type") not in (None, segment.object_type):
        raise ApiError(
            422, "immutable_attribute", "`object_type` cannot change; create a new segment instead", attribute="object_type"
        )


async def replace_segment(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    check_write(ctx.principal)
    segment = find_segment(ctx, workspace)
    attrs = check_attributes(await ctx.json())
    _same_identity(attrs, segment)
    attrs.update(id=segment.id, object_type=segment.object_type)
    saved = await save(ctx, workspace, attrs, created_at=segment.definition.get("created_at"))
    return reply((await with_figures(ctx, [saved]))[0])


async def update_segment(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    check_write(ctx.principal)
    segment = find_segment(ctx, workspace)
    changes = check_attributes(await ctx.json())
    _same_identity(changes, segment)
    attrs = writable_of(segment.definition)
    attrs.update(changes)
    attrs.update(id=segment.id, object_type=segment.object_type)
    saved = await save(ctx, workspace, attrs, created_at=segment.definition.get("created_at"))
    return reply((await with_figures(ctx, [saved]))[0])


async def delete_segment(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    check_write(ctx.principal)
    segment = find_segment(ctx, workspace)
    using = referrers(ctx.engine.registry.segment_set(workspace, segment.object_type).segments, segment.id)
    if using:
        raise ApiError(409, "segment_in_use", f"segment {segment.id!r} is referenced by {', '.join(using)}; "
                       "change or delete those first", referenced_by=using)
    rules = ctx.engine.assignment.get(workspace)
    routing = rules.using(segment.id) if rules is not None and segment.object_type == "contact" else []
    if routing:
        raise ApiError(409, "segment_in_use", f"chat assignment rules {', '.join(routing)} route by segment "
                       f"{segment.id!r}; change those first", assignment_rules=routing)
    key = segment_key(workspace, segment.object_type, segment.id)
    data = {"id": segment.id, "object_type": segment.object_type, "version": next_version(ctx, key)}
    await publish(ctx, workspace, "segment.removed", data)
    return web.Response(status=204)


async def _republish(ctx: Context, workspace: str, segment: Segment) -> tuple[str, dict[str, Any]]:
    """Send the same definition under a new version: every partition backfills it and emits the difference."""
    key = segment_key(workspace, segment.object_type, segment.id)
    data = dict(segment.definition, version=next_version(ctx, key))
    key, version = await send(ctx, workspace, "segment.defined", data)
    return key, {"segment_id": segment.id, "object_type": segment.object_type, "version": version}


async def recalculate_segment(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    check_write(ctx.principal)
    segment = find_segment(ctx, workspace)
    if not segment.active:
        raise ApiError(409, "segment_inactive", f"segment {segment.id!r} is inactive; activate it to recalculate it")
    key, result = await _republish(ctx, workspace, segment)
    await wait_applied(ctx, key, result["version"])
    return reply(result, 202)


async def recalculate_all(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    check_write(ctx.principal)
    segments = sorted(ctx.engine.registry.in_workspace(workspace), key=lambda s: s.id)
    sent = [await _republish(ctx, workspace, s) for s in segments if s.active]
    await asyncio.gather(*(wait_applied(ctx, key, result["version"]) for key, result in sent))
    done = [result for _, result in sent]
    skipped = [s.id for s in segments if not s.active]
    return reply({"recalculated": done, "skipped_inactive": skipped}, 202)


def register(routes: Routes) -> None:
    base = "/v1/workspaces/{workspace}/segments"
    routes.add("GET", base, list_segments)
    routes.add("POST", base, create_segment)
    routes.add("POST", base + "/recalculate", recalculate_all)
    routes.add("GET", base + "/{segment_id}", get_segment)
    routes.add("PUT", base + "/{segment_id}", replace_segment)
    routes.add("PATCH", base + "/{segment_id}", update_segment)
    routes.add("DELETE", base + "/{segment_id}", delete_segment)
    routes.add("POST", base + "/{segment_id}/recalculate", recalculate_segment)
