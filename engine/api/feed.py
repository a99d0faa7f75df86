"""`GET /v1/workspaces/{ws}/events/stream`: the live feed as server-sent events.

Each event is `data: <its JSON envelope>` as published: segment.entered / exited / deleted of the
segments the caller may see (only the listed ones when `segment_id` is given) and the workspace's
conversation.assigned / unassigned (for an agent, without the ids of segments hidden from them). New
events only; a `: keepalive` comment every 15 s. The reader behind it is engine/feed.py.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from engine.api.auth import Principal
from engine.api.cluster import RETRY_AFTER_BUSY
from engine.api.errors import ApiError, bad_request, not_found
from engine.api.scope import visible, workspace_of
from engine.api.server import Context, Routes
from engine.feed import Accept, FeedUnavailable
from engine.registry import SegmentRegistry

KEEPALIVE_S = 15.0
POLL_S = 1.0  # how often a quiet stream checks that its client is still there
SEGMENT_EVENTS = frozenset({"segment.entered", "segment.exited", "segment.deleted"})
CONVERSATION_EVENTS = frozenset({"conversation.assigned", "conversation.unassigned"})


def register(routes: Routes) -> None:
    routes.add("GET", "/v1/workspaces/{workspace}/events/stream", event_stream)


def event_filter(principal: Principal, registry: SegmentRegistry, workspace: str, wanted: set[str]) -> Accept:
    """What one subscriber receives. An agent never receives a hidden segment's events: visibility is
    checked per event (hidden_from can change while the stream is open) and remembered, so the events
    that follow a segment's deletion are judged by what it was."""
    agent = principal.role == "agent"
    known = {seg.id: True for seg in registry.in_workspace(workspace) if visible(principal, seg)} if agent else {}

    def shown(object_type: Any, segment_id: Any) -> bool:
        if not agent:
            return True
        segment = registry.get(workspace, object_type, segment_id) if isinstance(object_type, str) else None
        if segment is not None:
            known[segment_id] = visible(principal, segment)
        return known.get(segment_id, False)

    def accept(event: dict[str, Any], raw: bytes) -> bytes | None:
        kind, data = event.get("type"), event["data"]
        if kind in SEGMENT_EVENTS:
            segment_id = data.get("segment_id")
            if wanted and segment_id not in wanted:
                return None
            return raw if shown(data.get("object_type"), segment_id) else None
        if kind not in CONVERSATION_EVENTS:
            return None
        if not agent:
            return raw
        # The decision is the agent's business (it may be theirs); the ids of hidden segments are not.
        segments = data.get("segments")
        kept = [s for s in segments if shown("contact", s)] if isinstance(segments, list) else None
        hides_rule = "segment_id" in data and not shown("contact", data["segment_id"])
        if not hides_rule and (kept is None or len(kept) == len(segments)):
            return raw
        redacted = {k: v for k, v in data.items() if not (k == "segment_id" and hides_rule)}
        if kept is not None:
            redacted["segments"] = kept
        return orjson.dumps({**event, "data": redacted})

    return accept


async def event_stream(ctx: Context) -> web.StreamResponse:
    """Server-sent events until the client goes, `limit` events were sent, or the worker stops."""
    workspace = await workspace_of(ctx)
    registry = ctx.engine.registry
    wanted = set(ctx.request.query.getall("segment_id", []))
    for segment_id in sorted(wanted):  # like every route naming a segment: hidden answers as unknown
        segment = registry.find(workspace, segment_id)
        if segment is None or not visible(ctx.principal, segment):
            raise not_found(f"segment {segment_id!r}")
    raw_limit = ctx.query("limit")
    if raw_limit is not None and not raw_limit.isdigit():
        raise bad_request("limit must be a whole number of events", parameter="limit")
    limit = None if raw_limit is None else int(raw_limit)
    feed = ctx.engine.feed
    try:
        sub = await feed.subscribe(workspace, event_filter(ctx.principal, registry, workspace, wanted))
    except FeedUnavailable as exc:
        raise ApiError(503, "not_ready", f"the live feed cannot start: {exc}; retry shortly",
                       retry_after=RETRY_AFTER_BUSY) from None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(ctx.request)
        await response.write(b": subscribed\n\n")  # the feed is at the end from here: what follows is new
        sent, last_write = 0, time.monotonic()
        while limit is None or sent < limit:
            if sub.overflowed:
                await response.write(b"event: overflow\ndata: " + orjson.dumps({
                    "message": f"more than {sub.queue.maxsize} events behind: reconnect to resume from now"}) + b"\n\n")
                break
            transport = ctx.request.transport
            if sub.closed or transport is None or transport.is_closing():
                break
            try:
                data = await asyncio.wait_for(sub.queue.get(), POLL_S)
            except asyncio.TimeoutError:
                if time.monotonic() - last_write >= KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")
                    last_write = time.monotonic()
                continue
            await response.write(b"data: " + data + b"\n\n")
            sent, last_write = sent + 1, time.monotonic()
        await response.write_eof()
    except ConnectionError:  # the client went away mid-write
        pass
    finally:
        feed.unsubscribe(sub)
    return response
