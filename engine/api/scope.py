"""Scoping shared by every route: the path's workspace and segment, as the caller may see them.

An unknown workspace, a foreign one, an unknown segment and a segment hidden from the calling agent all
answer 404 alike, so nothing leaks.
"""
from __future__ import annotations

import asyncio

from engine.api.auth import Principal, check_workspace
from engine.api.cluster import RETRY_AFTER_BUSY
from engine.api.errors import ApiError, not_found
from engine.api.server import Context
from engine.registry import Segment

READY_TIMEOUT = 10.0  # seconds a request waits for the registry to finish loading at worker start


async def workspace_of(ctx: Context) -> str:
    """The path's workspace after the auth check (404 for an unknown or foreign one); waits for the registry."""
    workspace = ctx.params["workspace"]
    check_workspace(ctx.principal, workspace, known=workspace in ctx.engine.registry.workspaces)
    if not ctx.engine.registry_ready.is_set():
        try:
            await asyncio.wait_for(ctx.engine.registry_ready.wait(), READY_TIMEOUT)
        except asyncio.TimeoutError:
            raise ApiError(503, "not_ready", "this worker is still loading segment definitions; retry shortly",
                           retry_after=RETRY_AFTER_BUSY) from None
    return workspace


def visible(principal: Principal, segment: Segment) -> bool:
    """An agent never sees a segment hidden from them; admins see every segment of their workspace."""
    if principal.role != "agent":
        return True
    return principal.member not in (segment.definition.get("hidden_from") or ())


def find_segment(ctx: Context, workspace: str) -> Segment:
    """The path's segment; 404 when it does not exist or is hidden from the calling agent."""
    segment_id = ctx.params["segment_id"]
    segment = ctx.engine.registry.find(workspace, segment_id)
    if segment is None or not visible(ctx.principal, segment):
        raise not_found(f"segment {segment_id!r}")
    return segment


async def visible_segment(ctx: Context) -> Segment:
    return find_segment(ctx, await workspace_of(ctx))
