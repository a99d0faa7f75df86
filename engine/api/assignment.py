"""Chat assignment rules over HTTP: read and replace a workspace's ordered rules and groups.

The document is replaced as a whole (an ordered list is edited as a whole in any UI); a PUT may carry
the `version` it edits, and answers 409 `version_conflict` if someone saved in between. Like segments,
a write publishes to a compacted topic and answers once this worker applied it (read-your-writes).
"""
from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from engine.api.auth import check_write
from engine.api.errors import ApiError
from engine.api.scope import workspace_of
from engine.api.server import Context, Routes, reply, until_applied
from engine.assignment import InvalidAssignment, parse_assignment
from engine.envelope import encode, envelope, utc_now_iso
from engine.errors import SchemaViolation
from engine.schemas import validate_message

SOURCE = "segment-engine-api"


def current(ctx: Context, workspace: str) -> dict[str, Any]:
    rules = ctx.engine.assignment.get(workspace)
    if rules is None:
        return {"version": 0, "rules": [], "groups": {}}
    return rules.to_json()


async def get_rules(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    return reply(current(ctx, workspace))


async def put_rules(ctx: Context) -> web.Response:
    workspace = await workspace_of(ctx)
    check_write(ctx.principal)
    body = await ctx.json()
    engine = ctx.engine
    contact_segments = engine.registry.segment_set(workspace, "contact").segments
    try:
        rules = parse_assignment(body, workspace, 0, contact_segments, engine.registry.workspaces.team(workspace))
    except InvalidAssignment as exc:
        raise ApiError(422, exc.code, str(exc), problems=[p.to_json() for p in exc.problems]) from None
    stored = engine.assignment.version(workspace)
    expected = body.get("version")
    if expected is not None and expected != stored:
        raise ApiError(409, "version_conflict", f"the rules are at version {stored}, not {expected}; reload and retry",
                       version=stored)
    version = max(int(time.time() * 1000), stored + 1)
    data = {**rules.to_json(), "version": version, "updated_at": utc_now_iso(), "updated_by": ctx.principal.member}
    message = envelope("assignment.rules", data, workspace=workspace, source=SOURCE)
    try:
        validate_message(message)
    except SchemaViolation as exc:  # parse_assignment is stricter; this guards the two drifting apart
        raise ApiError(422, "invalid_assignment_rules", str(exc)) from None
    future = await engine.app.producer.send(engine.assignment_rules_topic_name, workspace.encode(), encode(message),
                                            None, None, None)
    await future
    await until_applied(lambda: engine.assignment.version(workspace) >= version, "the assignment rules", version)
    return reply(current(ctx, workspace))


def register(routes: Routes) -> None:
    path = "/v1/workspaces/{workspace}/assignment-rules"
    routes.add("GET", path, get_rules)
    routes.add("PUT", path, put_rules)
