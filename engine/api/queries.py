"""Membership queries over HTTP.

Record questions (profile, is X in S, explain, current results) are answered by the worker that owns
the record's partition; segment questions (count, members, export, preview) fan out to every worker
and merge. Cached answers come from the state the stream keeps; `evaluate` and `preview` evaluate now.
"""
from __future__ import annotations

import base64
import heapq
import time
from typing import Any

import orjson
from aiohttp import web

from engine.api.cluster import Cluster
from engine.api.errors import bad_request, not_found
from engine.api.scope import visible, visible_segment, workspace_of
from engine.api.server import Context, ExportInterrupted, Routes, reply
from engine.costs import TOO_HEAVY_CPU_MS_PER_S
from engine.envelope import record_key, segment_key, utc_now_iso
from engine.membership import RecordState
from engine.registry import Segment, reference_problems
from engine.rules import Context as RuleContext, InvalidRule, explain, load_rule
from engine.rules.catalog import OBJECT_TYPES

MAX_PAGE = 1000
EXPORT_PAGE = 1000
MAX_SAMPLE = 100


def register(routes: Routes) -> None:
    ws = "/v1/workspaces/{workspace}"
    routes.add("GET", ws + "/records/{object_type}/{record_id}", record_profile)
    routes.add("GET", ws + "/records/{object_type}/{record_id}/evaluate", record_current_results)
    routes.add("GET", ws + "/segments/{segment_id}/members/{record_id}", is_member)
    routes.add("GET", ws + "/segments/{segment_id}/explain/{record_id}", explain_record)
    routes.add("GET", ws + "/segments/{segment_id}/count", segment_count)
    routes.add("GET", ws + "/segments/{segment_id}/members", members_page)
    routes.add("GET", ws + "/segments/{segment_id}/export", export_members)
    routes.add("POST", ws + "/preview", preview_rule)
    routes.add("GET", ws + "/segment-figures", workspace_figures)


# ---- scoping -------------------------------------------------------------------------------------


def cluster(ctx: Context) -> Cluster:
    return ctx.engine.cluster


async def record_scope(ctx: Context, object_type: str) -> tuple[str, str]:
    workspace = await workspace_of(ctx)
    if object_type not in OBJECT_TYPES:
        raise not_found(f"object type {object_type!r}")
    return workspace, object_type


async def on_owner(ctx: Context, key: str) -> web.StreamResponse | None:
    """Forward to the record's owner; None when this worker holds the record's partition, recovered."""
    return await cluster(ctx).on_owner(ctx, cluster(ctx).partition_of(key))


def stored_record(ctx: Context, key: str) -> RecordState:
    state = ctx.engine.state.get(cluster(ctx).partition_of(key), key.encode())
    if state is None:
        raise not_found(f"record {key!r}")
    return state


# ---- one record ----------------------------------------------------------------------------------


async def record_profile(ctx: Context) -> web.StreamResponse:
    """The record as the engine knows it, and the segments it is in (cached membership)."""
    workspace, object_type = await record_scope(ctx, ctx.params["object_type"])
    key = record_key(workspace, object_type, ctx.params["record_id"])
    if (forwarded := await on_owner(ctx, key)) is not None:
        return forwarded
    state = stored_record(ctx, key)
    segments = ctx.engine.registry.segment_set(workspace, object_type).segments
    members = [
        {"id": sid, "name": segments[sid].name, "segment_version": segments[sid].version}
        for sid in sorted(state.members)
        if sid in segments and visible(ctx.principal, segments[sid])
    ]
    return reply({"workspace": workspace, "object_type": object_type, "id": ctx.params["record_id"],
                  "version": state.version, "deleted": state.deleted, "fields": state.fields, "segments": members})


def record_context(ctx: Context, key: str, state: RecordState) -> "RuleContext":
    """What the record's rules see now: its partition's time, its memberships and activity."""
    return RuleContext(ctx.engine.now_of(cluster(ctx).partition_of(key)), state.members, state.activity)


async def record_current_results(ctx: Context) -> web.StreamResponse:
    """Every active segment of the record's type evaluated now against its stored fields."""
    workspace, object_type = await record_scope(ctx, ctx.params["object_type"])
    key = record_key(workspace, object_type, ctx.params["record_id"])
    if (forwarded := await on_owner(ctx, key)) is not None:
        return forwarded
    state = stored_record(ctx, key)
    started = time.perf_counter()
    context = record_context(ctx, key, state)
    results = [
        {"id": seg.id, "name": seg.name, "matches": (not state.deleted) and seg.rule.matches(state.fields, context),  # type: ignore[union-attr]
         "member": seg.id in state.members}
        for seg in sorted(ctx.engine.registry.segment_set(workspace, object_type).segments.values(), key=lambda s: s.id)
        if seg.evaluated and visible(ctx.principal, seg)
    ]
    return reply({"id": ctx.params["record_id"], "version": state.version, "results": results,
                  "took_ms": round((time.perf_counter() - started) * 1000, 3)})


async def is_member(ctx: Context) -> web.StreamResponse:
    segment = await visible_segment(ctx)
    key = record_key(segment.workspace, segment.object_type, ctx.params["record_id"])
    if (forwarded := await on_owner(ctx, key)) is not None:
        return forwarded
    state = ctx.engine.state.get(cluster(ctx).partition_of(key), key.encode())
    member = state is not None and segment.id in state.members
    return reply({"segment_id": segment.id, "record_id": ctx.params["record_id"], "member": member,
                  "record_version": None if state is None else state.version})


async def explain_record(ctx: Context) -> web.StreamResponse:
    """Why the record is or is not in the segment: each condition with the value it saw and its result."""
    segment = await visible_segment(ctx)
    key = record_key(segment.workspace, segment.object_type, ctx.params["record_id"])
    if (forwarded := await on_owner(ctx, key)) is not None:
        return forwarded
    state = stored_record(ctx, key)
    member = segment.id in state.members
    if segment.rule is None:  # static: membership is the imported list, there is no rule to explain
        return reply({"segment_id": segment.id, "segment_version": segment.version, "record_id": ctx.params["record_id"],
                      "record_version": state.version, "member": member, "matches": member,
                      "explanation": {"kind": "static", "result": member, "reason": "imported" if member else "not imported"}})
    catalog = ctx.engine.registry.workspaces.catalog(segment.workspace, segment.object_type)
    context = record_context(ctx, key, state)
    tree = explain(segment.rule.tree, catalog, {} if state.deleted else state.fields, context)  # type: ignore[arg-type]
    return reply({"segment_id": segment.id, "segment_version": segment.version, "record_id": ctx.params["record_id"],
                  "record_version": state.version, "member": segment.id in state.members,
                  "matches": tree.result, "explanation": tree.to_json()})


# ---- one segment, all partitions -----------------------------------------------------------------


def local_figures(ctx: Context, workspace: str) -> dict[str, Any]:
    """This worker's share of each segment's figures: members in the partitions it answers for (listed as
    "partitions"), evaluation cost here."""
    prefix = f"{workspace}/"
    shown = {segment_key(workspace, s.object_type, s.id) for s in ctx.engine.registry.in_workspace(workspace)
             if visible(ctx.principal, s)}
    figures: dict[str, dict[str, float]] = {}
    partitions = cluster(ctx).available()
    for partition in partitions:
        for seg_key, n in ctx.engine.state.counts(partition).items():
            if seg_key in shown:
                entry = figures.setdefault(seg_key, {"member_count": 0})
                entry["member_count"] += n
    for seg_key, cost in ctx.engine.registry.meter.snapshot(prefix).items():
        if seg_key in shown:
            figures.setdefault(seg_key, {"member_count": 0}).update(cost)
    return {"partitions": partitions, "figures": figures}


async def segment_figures(ctx: Context, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Per segment key (`ws/type/id`) over every worker: `member_count`, and `evaluation_cost` with
    evaluations and CPU per second and the `too_heavy` flag (see engine/costs.py for the threshold)."""
    workspace = ctx.params["workspace"]
    answers = await cluster(ctx).gather(ctx, local_figures(ctx, workspace),
                                        rel_url=f"/v1/workspaces/{workspace}/segment-figures")
    totals: dict[str, dict[str, Any]] = {}
    for key in keys:
        parts = [answer["figures"].get(key, {}) for answer in answers]
        cpu = sum(p.get("cpu_ms_per_s", 0.0) for p in parts)
        totals[key] = {
            "member_count": int(sum(p.get("member_count", 0) for p in parts)),
            "evaluation_cost": {
                "evaluations_per_s": round(sum(p.get("evaluations_per_s", 0.0) for p in parts), 3),
                "cpu_ms_per_s": round(cpu, 3),
                "too_heavy": cpu >= TOO_HEAVY_CPU_MS_PER_S,
            },
        }
    return totals


async def workspace_figures(ctx: Context) -> web.StreamResponse:
    """Figures of every segment of the workspace (this worker's share only, when forwarded)."""
    workspace = await workspace_of(ctx)
    if ctx.forwarded:
        return reply(local_figures(ctx, workspace))
    keys = [segment_key(workspace, s.object_type, s.id) for s in ctx.engine.registry.in_workspace(workspace)
            if visible(ctx.principal, s)]
    return reply(await segment_figures(ctx, keys))


async def segment_count(ctx: Context) -> web.StreamResponse:
    segment = await visible_segment(ctx)
    key = segment_key(segment.workspace, segment.object_type, segment.id)
    figures = await segment_figures(ctx, [key])
    return reply({"segment_id": segment.id, "member_count": figures[key]["member_count"], "counted_at": utc_now_iso()})


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        return base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise bad_request("cursor is not one this API issued") from None


def encode_cursor(record_id: str) -> str:
    return base64.urlsafe_b64encode(record_id.encode()).decode()


def local_members(ctx: Context, seg_key: str, after: str | None, limit: int) -> dict[str, Any]:
    """The first `limit` member ids after `after` over the partitions this worker answers for (each one is
    sorted), and those partitions."""
    partitions = cluster(ctx).available()
    pages = [ctx.engine.state.members(p, seg_key, after, limit) for p in partitions]
    return {"partitions": partitions, "ids": list(heapq.merge(*pages))[:limit]}


async def members_after(ctx: Context, segment: Segment, after: str | None, limit: int) -> list[str]:
    """The first `limit` member ids after `after` over every partition (503 unless all could answer)."""
    seg_key = segment_key(segment.workspace, segment.object_type, segment.id)
    local = local_members(ctx, seg_key, after, limit)
    query = f"limit={limit}" + (f"&cursor={encode_cursor(after)}" if after is not None else "")
    rel_url = f"/v1/workspaces/{segment.workspace}/segments/{segment.id}/members?{query}"
    answers = await cluster(ctx).gather(ctx, local, rel_url=rel_url)
    return list(heapq.merge(*(a["ids"] for a in answers)))[:limit]


def page_size(ctx: Context) -> int:
    raw = ctx.query("limit", "100") or "100"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise bad_request(f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


async def members_page(ctx: Context) -> web.StreamResponse:
    """A page of members sorted by record id; `next_cursor` continues after the last one, so a member
    present throughout is listed exactly once however membership changes meanwhile."""
    segment = await visible_segment(ctx)
    limit = page_size(ctx)
    after = decode_cursor(ctx.query("cursor"))
    if ctx.forwarded:
        seg_key = segment_key(segment.workspace, segment.object_type, segment.id)
        return reply(local_members(ctx, seg_key, after, limit))
    ids = await members_after(ctx, segment, after, limit + 1)
    more = len(ids) > limit
    ids = ids[:limit]
    return reply({"segment_id": segment.id, "members": ids,
                  "next_cursor": encode_cursor(ids[-1]) if more else None})


async def export_members(ctx: Context) -> web.StreamResponse:
    """Every member, streamed page by page (never built in memory), as CSV or NDJSON."""
    segment = await visible_segment(ctx)
    fmt = ctx.query("format", "csv")
    if fmt not in ("csv", "ndjson"):
        raise bad_request("format must be csv or ndjson")
    ids = await members_after(ctx, segment, None, EXPORT_PAGE)  # a refusal here is a plain 503
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv" if fmt == "csv" else "application/x-ndjson",
        "Content-Disposition": f'attachment; filename="{segment.id}.{fmt}"',
    })
    await response.prepare(ctx.request)
    if fmt == "csv":
        await response.write(b"record_id\n")
    while ids:
        await response.write(b"".join(export_line(fmt, rid) for rid in ids))
        try:
            ids = await members_after(ctx, segment, ids[-1], EXPORT_PAGE)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the list is not whole
            # Headers and part of the body are out: only a broken transfer (no final chunk) tells the client
            # that this is not the whole list.
            raise ExportInterrupted(f"export of {segment.id!r} interrupted: {exc}") from exc
    await response.write_eof()
    return response


def export_line(fmt: str, record_id: str) -> bytes:
    if fmt == "ndjson":
        return orjson.dumps({"record_id": record_id}) + b"\n"
    needs_quotes = any(c in record_id for c in ',"\n\r')
    return (('"' + record_id.replace('"', '""') + '"') if needs_quotes else record_id).encode() + b"\n"


# ---- an unsaved rule -----------------------------------------------------------------------------


async def preview_rule(ctx: Context) -> web.StreamResponse:
    """Count and a sample of the records an unsaved rule matches, evaluated now over stored records."""
    workspace = await workspace_of(ctx)
    body = await ctx.json()
    if not isinstance(body, dict) or body.get("object_type") not in OBJECT_TYPES or "rule" not in body:
        raise bad_request("body must be {object_type, rule, sample_size?}")
    sample_size = body.get("sample_size", 10)
    if not isinstance(sample_size, int) or not 0 <= sample_size <= MAX_SAMPLE:
        raise bad_request(f"sample_size must be an integer from 0 to {MAX_SAMPLE}")
    catalog = ctx.engine.registry.workspaces.catalog(workspace, body["object_type"])
    rule = load_rule(body["rule"], catalog)  # type: ignore[arg-type]  # InvalidRule → 422 with problems
    # `memberOf` a segment the caller cannot see is refused like one that does not exist.
    shown = {sid: seg for sid, seg in ctx.engine.registry.segment_set(workspace, body["object_type"]).segments.items()
             if visible(ctx.principal, seg)}
    if problems := reference_problems(shown, "", rule):
        raise InvalidRule(problems)
    started = time.perf_counter()
    prefix = f"{workspace}/{body['object_type']}/".encode()
    count, scanned, sample = 0, 0, []
    partitions = cluster(ctx).available()
    for partition in partitions:
        now = ctx.engine.now_of(partition)
        for key, raw_state in ctx.engine.state.records(partition, prefix):
            state = RecordState.from_bytes(raw_state)
            if state.deleted:
                continue
            scanned += 1
            if rule.matches(state.fields, RuleContext(now, state.members, state.activity)):
                count += 1
                if len(sample) < sample_size:
                    sample.append(key[len(prefix):].decode())
    local: dict[str, Any] = {"partitions": partitions, "count": count, "scanned": scanned, "sample": sample}
    if not ctx.forwarded:
        answers = await cluster(ctx).gather(ctx, local, body=orjson.dumps(body))
        local = {"count": sum(a["count"] for a in answers), "scanned": sum(a["scanned"] for a in answers),
                 "sample": sorted(rid for a in answers for rid in a["sample"])[:sample_size]}
    local["took_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return reply(local)
