"""Default segments over HTTP: the shared default per object type (admins), each member's own pins (any
team member), and what a member's sections open on, resolved pin -> per-member default -> shared.

Like assignment rules, a write publishes to a compacted topic (default-segments) and answers once this
worker applied it (read-your-writes). Nothing here names a segment hidden from the caller.
"""
from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from engine.api.auth import check_write
from engine.api.errors import ApiError, bad_request
from engine.api.scope import visible, workspace_of
from engine.api.server import Context, Routes, reply, until_applied
from engine.api.team import unknown_member
from engine.defaults import MEMBER, SHARED, SegmentFacts, default_key, member_defaults, resolve, usable
from engine.envelope import encode, envelope, utc_now_iso
from engine.errors import SchemaViolation
from engine.registry import Segment
from engine.rules import OBJECT_TYPES
from engine.schemas import validate_message

SOURCE = "segment-engine-api"


def register(routes: Routes) -> None:
    base = "/v1/workspaces/{workspace}/defaults"
    routes.add("GET", base, get_defaults)
    routes.add("GET", base + "/resolved", get_resolved)
    routes.add("PUT", base + "/shared/{object_type}", put_shared)
    routes.add("PUT", base + "/mine/{object_type}", put_mine)


def facts_of(segment: Segment) -> SegmentFacts:
    d = segment.definition
    return SegmentFacts(segment.id, segment.object_type, segment.version, frozenset(d.get("default_for") or ()),
                        frozenset(d.get("hidden_from") or ()))


def segment_facts(ctx: Context, workspace: str) -> dict[str, SegmentFacts]:
    """The workspace's segments the caller may see, by id: nothing else can surface in an answer."""
    return {s.id: facts_of(s) for s in ctx.engine.registry.in_workspace(workspace) if visible(ctx.principal, s)}


def usable_only(choices: dict[str, str], facts: dict[str, SegmentFacts], member: str | None) -> dict[str, str]:
    return {ot: sid for ot, sid in choices.items() if usable(facts.get(sid), ot, member)}


def document(ctx: Context, workspace: str) -> dict[str, Any]:
    """`{shared, mine, for_members}`; an agent sees only their own per-member defaults."""
    book, me = ctx.engine.defaults, ctx.principal.member
    facts = segment_facts(ctx, workspace)
    team = ctx.engine.registry.workspaces.team(workspace)
    members = sorted(team) if ctx.principal.can_write else [m for m in (me,) if m in team]
    for_members = {m: chosen for m in members if (chosen := member_defaults(m, facts.values()))}
    return {"shared": usable_only(book.shared(workspace), facts, None),
            "mine": usable_only(book.pins(workspace, me), facts, me) if me is not None else {},
            "for_members": for_members}


async def get_defaults(ctx: Context) -> web.StreamResponse:
    workspace = await workspace_of(ctx)
    return reply(document(ctx, workspace))


async def get_resolved(ctx: Context) -> web.StreamResponse:
    """`?member=` (admins; default: the caller) -> {member, defaults: {object_type: {segment_id, source}}}."""
    workspace = await workspace_of(ctx)
    me = ctx.principal.member
    member = ctx.query("member") or me
    if member != me:
        if not ctx.principal.can_write:
            raise ApiError(403, "forbidden", "an agent may resolve only their own defaults")
        if member not in ctx.engine.registry.workspaces.team(workspace):
            raise unknown_member(str(member), workspace, parameter="member")
    book = ctx.engine.defaults
    facts = {s.id: facts_of(s) for s in ctx.engine.registry.in_workspace(workspace)}  # hidden_from checked per member
    resolved = resolve(member, book.pins(workspace, member), book.shared(workspace), facts)
    return reply({"member": member, "defaults": {ot: r.to_json() for ot, r in resolved.items()}})


async def put_shared(ctx: Context) -> web.StreamResponse:
    workspace = await workspace_of(ctx)
    check_write(ctx.principal)
    await save(ctx, workspace, SHARED, None)
    return reply(document(ctx, workspace))


async def put_mine(ctx: Context) -> web.StreamResponse:
    workspace = await workspace_of(ctx)
    member = ctx.principal.member
    if member is None or member not in ctx.engine.registry.workspaces.team(workspace):
        raise ApiError(403, "not_team_member", f"only a team member of {workspace!r} may pin a default; "
                       f"{member!r} is not one")
    await save(ctx, workspace, MEMBER, member)
    return reply(document(ctx, workspace))


async def save(ctx: Context, workspace: str, scope: str, member: str | None) -> None:
    """Check the body `{"segment_id": id | null}`, publish the choice and wait until this worker applied it."""
    object_type = ctx.params["object_type"]
    if object_type not in OBJECT_TYPES:
        raise ApiError(400, "invalid_parameter", f"object type must be one of {', '.join(OBJECT_TYPES)}",
                       parameter="object_type")
    body = await ctx.json()
    if not isinstance(body, dict) or "segment_id" not in body or set(body) - {"segment_id"}:
        raise bad_request('the body must be {"segment_id": ID or null}')
    segment_id = body["segment_id"]
    if segment_id is not None:
        segment = ctx.engine.registry.find(workspace, segment_id) if isinstance(segment_id, str) else None
        # Hidden from the member who pins it: the same answer as a segment that does not exist.
        if segment is None or not visible(ctx.principal, segment) or not usable(facts_of(segment), object_type, member):
            raise ApiError(422, "unknown_segment", f"no {object_type} segment {segment_id!r} in this workspace",
                           attribute="segment_id")
    book = ctx.engine.defaults
    version = max(int(time.time() * 1000), book.version(workspace, scope, member, object_type) + 1)
    data = {"scope": scope, "member": member, "object_type": object_type, "segment_id": segment_id,
            "version": version, "updated_at": utc_now_iso(), "updated_by": ctx.principal.member}
    message = envelope("default.segment", data, workspace=workspace, source=SOURCE)
    try:
        validate_message(message)
    except SchemaViolation as exc:  # the checks above are stricter; this guards the two drifting apart
        raise ApiError(422, "invalid_default", str(exc)) from None
    engine = ctx.engine
    key = default_key(workspace, scope, member, object_type)
    await (await engine.app.producer.send(engine.defaults_topic_name, key.encode(), encode(message), None, None, None))
    await until_applied(lambda: book.version(workspace, scope, member, object_type) >= version, key, version)
