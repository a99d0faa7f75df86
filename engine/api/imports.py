"""Members of static segments over HTTP: add or remove record ids (an import), one id removed at a time.

Imports travel like record changes: `segment.import` messages grouped by the records' partitions, so
each owner applies its part in order with the record's other changes.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.auth import check_write
from engine.api.errors import ApiError, bad_request
from engine.api.scope import visible_segment
from engine.api.server import Context, Routes, reply
from engine.client import IMPORT_CHUNK, group_by_partition
from engine.envelope import encode, envelope, record_key
from engine.registry import Segment

MAX_IDS_PER_REQUEST = 100_000


def register(routes: Routes) -> None:
    segment = "/v1/workspaces/{workspace}/segments/{segment_id}"
    routes.add("POST", segment + "/members", import_members)
    routes.add("DELETE", segment + "/members/{record_id}", remove_member)


async def static_segment(ctx: Context) -> Segment:
    segment = await visible_segment(ctx)
    check_write(ctx.principal)
    if segment.rule is not None:
        raise ApiError(409, "not_static", "members of a dynamic segment come from its rule; only static segments import")
    if not segment.active:
        raise ApiError(409, "segment_inactive", "an inactive segment keeps its members frozen; activate it first")
    return segment


async def import_members(ctx: Context) -> web.StreamResponse:
    """Body `{"record_ids": [...], "mode": "add" | "remove"}`; 202 once every message is acknowledged."""
    segment = await static_segment(ctx)
    body = await ctx.json()
    ids = body.get("record_ids") if isinstance(body, dict) else None
    mode = body.get("mode", "add") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and 0 < len(i) <= 200 for i in ids):
        raise bad_request("record_ids must be a non-empty list of record ids (strings of 1-200 characters)")
    if len(ids) > MAX_IDS_PER_REQUEST:
        raise ApiError(413, "payload_too_large", f"at most {MAX_IDS_PER_REQUEST} ids per request; send several")
    if mode not in ("add", "remove"):
        raise bad_request("mode must be add or remove")
    await publish_import(ctx, segment, ids, mode)
    return reply({"segment_id": segment.id, "mode": mode, "accepted": len(ids)}, 202)


async def remove_member(ctx: Context) -> web.StreamResponse:
    segment = await static_segment(ctx)
    await publish_import(ctx, segment, [ctx.params["record_id"]], "remove")
    return reply({"segment_id": segment.id, "mode": "remove", "accepted": 1}, 202)


async def publish_import(ctx: Context, segment: Segment, ids: list[str], mode: str) -> None:
    engine = ctx.engine
    key_of = lambda rid: record_key(segment.workspace, segment.object_type, rid)  # noqa: E731
    out: list[tuple[str, bytes | None, bytes, int]] = []
    for partition, chunk in group_by_partition(ids, key_of, engine.settings.partitions, IMPORT_CHUNK):
        data: dict[str, Any] = {"object_type": segment.object_type, "segment_id": segment.id, "mode": mode,
                                "record_ids": chunk, "segment_version": segment.version}
        value = encode(envelope("segment.import", data, workspace=segment.workspace, source="segment-engine-api"))
        out.append((engine.records_topic_name, key_of(chunk[0]).encode(), value, partition))
    futures = [await engine.app.producer.send(topic, key, value, p, None, None) for topic, key, value, p in out]
    for future in futures:
        await future
