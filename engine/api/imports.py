"""Members of static segments over HTTP: add or remove record ids (an import), one id removed at a time,
or import into a new static segment named after the import.

Imports travel like record changes: `segment.import` messages grouped by the records' partitions, so
each owner applies its part in order with the record's other changes.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from engine.api.auth import check_write
from engine.api.errors import ApiError, bad_request
from engine.api.scope import visible_segment, workspace_of
from engine.api.segments import MAX_NAME, check_attributes, missing, new_segment_id, save
from engine.api.server import Context, Routes, reply
from engine.client import IMPORT_CHUNK, group_by_partition
from engine.envelope import encode, envelope, record_key
from engine.registry import Segment

MAX_IDS_PER_REQUEST = 100_000


def register(routes: Routes) -> None:
    segment = "/v1/workspaces/{workspace}/segments/{segment_id}"
    routes.add("POST", segment + "/members", import_members)
    routes.add("DELETE", segment + "/members/{record_id}", remove_member)
    routes.add("POST", "/v1/workspaces/{workspace}/imports", import_into_new_segment)


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
    ids = record_ids_of(body)
    mode = body.get("mode", "add")
    if mode not in ("add", "remove"):
        raise bad_request("mode must be add or remove")
    await publish_import(ctx, segment, ids, mode)
    return reply({"segment_id": segment.id, "mode": mode, "accepted": len(ids)}, 202)


def record_ids_of(body: Any) -> list[str]:
    ids = body.get("record_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and 0 < len(i) <= 200 for i in ids):
        raise bad_request("record_ids must be a non-empty list of record ids (strings of 1-200 characters)")
    if len(ids) > MAX_IDS_PER_REQUEST:
        raise ApiError(413, "payload_too_large", f"at most {MAX_IDS_PER_REQUEST} ids per request; send several")
    return ids


async def import_into_new_segment(ctx: Context) -> web.StreamResponse:
    """Body `{"object_type", "record_ids", "name"?}`: a new static segment, named after the import unless a
    name is given (" (2)", " (3)" ... when taken), receives the ids. 202 `{segment_id, name, accepted}`."""
    workspace = await workspace_of(ctx)
    check_write(ctx.principal)
    body = await ctx.json()
    ids = record_ids_of(body)
    extra = sorted(set(body) - {"object_type", "record_ids", "name"})
    if extra:
        raise ApiError(422, "unknown_attribute", f"unknown attribute `{extra[0]}`", attribute=extra[0])
    if body.get("object_type") is None:
        raise missing("object_type")
    name = body.get("name") or f"Import {datetime.now(timezone.utc):%Y-%m-%d %H:%M}"
    attrs = check_attributes({"object_type": body["object_type"], "name": name})
    taken = {s.name.strip().casefold() for s in ctx.engine.registry.segment_set(workspace, attrs["object_type"]).segments.values()}
    attrs.update(id=new_segment_id(), kind="static", name=free_name(attrs["name"], taken))
    segment = await save(ctx, workspace, attrs, created_at=None)
    await publish_import(ctx, segment, ids, "add")
    return reply({"segment_id": segment.id, "name": segment.name, "accepted": len(ids)}, 202)


def free_name(name: str, taken: set[str]) -> str:
    """`name`, or `name (2)`, `name (3)` ... whichever is not taken (names compare ignoring case)."""
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        suffix = f" ({n})"
        candidate = name[:MAX_NAME - len(suffix)] + suffix
    return candidate


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
