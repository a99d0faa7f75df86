"""Membership queries over HTTP.

Record questions (profile, is X in S, explain, current results) are answered by the worker that owns
the record's partition; segment questions (count, members, export, previews) fan out to every worker
and merge. Cached answers come from the state the stream keeps; `evaluate` and previews evaluate now.
"""
from __future__ import annotations

import base64
import heapq
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import urlencode

import orjson
from aiohttp import web

from engine.api.cluster import Cluster
from engine.api.errors import ApiError, bad_request, not_found
from engine.api.scope import visible, visible_segment, workspace_of
from engine.api.server import Context, ExportInterrupted, Routes, reply
from engine.costs import TOO_HEAVY_CPU_MS_PER_S
from engine.envelope import record_key, segment_key, utc_now_iso
from engine.membership import RecordState
from engine.registry import Segment, reference_problems
from engine.rules import CompiledRule, Context as RuleContext, InvalidRule, explain, load_rule
from engine.rules.catalog import OBJECT_TYPES, FieldType

MAX_PAGE = 1000
EXPORT_PAGE = 1000
MAX_SAMPLE = 100
SCAN_BUDGET = 5_000  # members a search or filter examines per partition for one page (then the page is partial)
SCAN_CHUNK = 500  # member ids read from the index at a time


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
    routes.add("POST", ws + "/segments/{segment_id}/preview", preview_edit)
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


# ---- members you can read: chosen fields, search, filter -----------------------------------------


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        return base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise bad_request("cursor is not one this API issued", parameter="cursor") from None


def encode_cursor(record_id: str) -> str:
    return base64.urlsafe_b64encode(record_id.encode()).decode()


def iso_utc(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def cell_text(value: Any, ftype: FieldType | None) -> str:
    """A stored value as a person reads it (search, CSV): dates as ISO-8601 UTC, lists and objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if ftype is FieldType.DATETIME and isinstance(value, int):
        return iso_utc(value)
    if isinstance(value, (int, float)):
        return str(value)
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class MemberQuery:
    """What a members page or export asks beyond the ids: the fields to return, a case-insensitive search
    over them (over the record id and all fields when none are chosen) and an extra filter rule. `params`
    are the query parameters as given, so the other workers get the very same question."""

    fields: tuple[str, ...]
    q: str
    rule: CompiledRule | None
    catalog: Mapping[str, FieldType]
    params: Mapping[str, str]

    @property
    def loads(self) -> bool:
        """Each member's stored state must be read (else the member index alone answers)."""
        return bool(self.fields or self.q or self.rule)

    @property
    def selective(self) -> bool:
        """Some members may not pass: the walk over the index is bounded (SCAN_BUDGET)."""
        return bool(self.q or self.rule)

    def accepts(self, record_id: str, state: RecordState | None, now: int) -> bool:
        fields = state.fields if state is not None else {}
        if self.rule is not None:
            context = RuleContext(now, state.members, state.activity) if state is not None else RuleContext(now)
            if not self.rule.matches(fields, context):
                return False
        if not self.q or self.q in record_id.casefold():
            return True
        names = self.fields or fields.keys()
        return any(self.q in cell_text(fields.get(name), self.catalog.get(name)).casefold() for name in names)

    def pick(self, state: RecordState | None) -> dict[str, Any] | None:
        if not self.fields:
            return None
        fields = state.fields if state is not None else {}
        return {name: fields.get(name) for name in self.fields}


def member_query(ctx: Context, segment: Segment) -> MemberQuery:
    """`fields`, `q` and `filter` of the request; 400 for an unknown field, 422 invalid_rule for a filter
    that is not a valid rule of the segment's object type."""
    params = {name: value for name in ("fields", "q", "filter") if (value := ctx.query(name))}
    catalog = ctx.engine.registry.workspaces.catalog(segment.workspace, segment.object_type)
    fields = tuple(dict.fromkeys(name.strip() for name in params.get("fields", "").split(",") if name.strip()))
    if unknown := [name for name in fields if name not in catalog]:  # type: ignore[operator]
        raise bad_request(f"`fields` names unknown {segment.object_type} field(s): {', '.join(map(repr, unknown))}",
                          parameter="fields", fields=unknown)
    rule = None
    if "filter" in params:
        try:
            raw_rule = orjson.loads(params["filter"])
        except orjson.JSONDecodeError:
            raise bad_request("filter is not JSON: a rule, URL-encoded", parameter="filter") from None
        rule = proposed_rule(ctx, segment.workspace, segment.object_type, raw_rule)
    return MemberQuery(fields, params.get("q", "").strip().casefold(), rule, catalog, params)  # type: ignore[arg-type]


# A page's items: [record id, chosen fields or None], sorted by id. A partial answer also says how far
# it got (its frontier): every member up to that id was examined; None: to the end of the segment.
Item = list[Any]
Partial = tuple[list[Item], str | None]


def scan_partition(ctx: Context, partition: int, segment: Segment, query: MemberQuery, after: str | None,
                   want: int) -> Partial:
    """Up to `want` members of one partition after `after` that pass `query`, walking the segment's member
    index (never the partition's records). A search or filter examines at most SCAN_BUDGET members, so a
    selective one over a big segment answers part of the way rather than scanning for long."""
    store = ctx.engine.state
    seg_key = segment_key(segment.workspace, segment.object_type, segment.id)
    prefix = f"{segment.workspace}/{segment.object_type}/"
    budget = SCAN_BUDGET if query.selective else want
    now = ctx.engine.now_of(partition)
    found: list[Item] = []
    examined = 0
    while examined < budget:
        chunk = min(SCAN_CHUNK, budget - examined)
        ids = store.members(partition, seg_key, after, chunk)
        for record_id in ids:
            state = store.get(partition, (prefix + record_id).encode()) if query.loads else None
            if not query.selective or query.accepts(record_id, state, now):
                found.append([record_id, query.pick(state)])
                if len(found) >= want:
                    return found, record_id
        examined += len(ids)
        if len(ids) < chunk:
            return found, None
        after = ids[-1]
    return found, after


def merge_partials(partials: list[Partial], want: int) -> Partial:
    """One answer from several: the items up to the lowest frontier (beyond it some part is unknown), at
    most `want` of them (the frontier moves back to the last one kept)."""
    frontiers = [frontier for _, frontier in partials if frontier is not None]
    frontier = min(frontiers) if frontiers else None
    items = []
    for item in heapq.merge(*(items for items, _ in partials), key=lambda item: item[0]):
        if frontier is not None and item[0] > frontier:
            break
        items.append(item)
        if len(items) >= want:
            return items, item[0]
    return items, frontier


def local_members(ctx: Context, segment: Segment, query: MemberQuery, after: str | None, limit: int) -> dict[str, Any]:
    """This worker's share of a page: over the partitions it answers for (listed), the first limit + 1
    members after `after` that pass the query, and its frontier."""
    partitions = cluster(ctx).available()
    items, frontier = merge_partials([scan_partition(ctx, p, segment, query, after, limit + 1) for p in partitions],
                                     limit + 1)
    return {"partitions": partitions, "items": items, "frontier": frontier}


async def member_page(ctx: Context, segment: Segment, query: MemberQuery, after: str | None,
                      limit: int) -> tuple[list[Item], str | None]:
    """Up to `limit` members after `after` over every partition (503 unless all could answer), and where
    the next page starts (None: no more). A page can be short with more to come: the bounded walk of a
    search or filter stopped somewhere in a partition."""
    local = local_members(ctx, segment, query, after, limit)
    params = {"limit": str(limit), **query.params}
    if after is not None:
        params["cursor"] = encode_cursor(after)
    rel_url = f"/v1/workspaces/{segment.workspace}/segments/{segment.id}/members?{urlencode(params)}"
    answers = await cluster(ctx).gather(ctx, local, rel_url=rel_url)
    items, frontier = merge_partials([(a["items"], a["frontier"]) for a in answers], limit + 1)
    if len(items) > limit:
        return items[:limit], items[limit - 1][0]
    return items, frontier


def page_size(ctx: Context) -> int:
    raw = ctx.query("limit", "100") or "100"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise bad_request(f"limit must be an integer from 1 to {MAX_PAGE}", parameter="limit")
    return int(raw)


async def members_page(ctx: Context) -> web.StreamResponse:
    """A page of members sorted by record id, with their chosen fields; `next_cursor` continues after the
    page, so a member present throughout is listed exactly once however membership changes meanwhile."""
    segment = await visible_segment(ctx)
    limit = page_size(ctx)
    after = decode_cursor(ctx.query("cursor"))
    query = member_query(ctx, segment)
    if ctx.forwarded:
        return reply(local_members(ctx, segment, query, after, limit))
    items, next_after = await member_page(ctx, segment, query, after, limit)
    body: dict[str, Any] = {"segment_id": segment.id, "members": [item[0] for item in items]}
    if query.fields:
        body["records"] = [{"id": record_id, "fields": fields} for record_id, fields in items]
    body["next_cursor"] = None if next_after is None else encode_cursor(next_after)
    return reply(body)


async def export_members(ctx: Context) -> web.StreamResponse:
    """Every member that passes the query, streamed page by page (never built in memory), as CSV (columns
    record_id and the chosen fields) or NDJSON (the same as keys)."""
    segment = await visible_segment(ctx)
    fmt = ctx.query("format", "csv")
    if fmt not in ("csv", "ndjson"):
        raise bad_request("format must be csv or ndjson", parameter="format")
    query = member_query(ctx, segment)
    items, next_after = await member_page(ctx, segment, query, None, EXPORT_PAGE)  # a refusal here is a plain 503
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
        "Content-Disposition": f'attachment; filename="{segment.id}.{fmt}"',
    })
    await response.prepare(ctx.request)
    if fmt == "csv":
        await response.write(csv_line(["record_id", *query.fields]))
    while True:
        await response.write(b"".join(export_line(fmt, query, item) for item in items))
        if next_after is None:
            break
        try:
            items, next_after = await member_page(ctx, segment, query, next_after, EXPORT_PAGE)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the list is not whole
            # Headers and part of the body are out: only a broken transfer (no final chunk) tells the client
            # that this is not the whole list.
            raise ExportInterrupted(f"export of {segment.id!r} interrupted: {exc}") from exc
    await response.write_eof()
    return response


def csv_line(cells: list[str]) -> bytes:
    """One CSV record; a cell holding a comma, quote or line break is quoted (RFC 4180)."""
    return ",".join(('"' + c.replace('"', '""') + '"') if any(x in c for x in ',"\n\r') else c
                    for c in cells).encode() + b"\n"


#: A cell starting with one of these is a formula to a spreadsheet (CSV injection): a contact's name typed
#: into a web form as `=HYPERLINK(...)` would run when a marketer opens the export.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any, text: str) -> str:
    """A text value that a spreadsheet would run as a formula, prefixed with `'` (OWASP's advice); numbers,
    dates and every other value as they are. NDJSON keeps values unchanged."""
    return "'" + text if isinstance(value, str) and text.startswith(FORMULA_STARTS) else text


def export_line(fmt: str, query: MemberQuery, item: Item) -> bytes:
    record_id, fields = item
    if fmt == "ndjson":
        return orjson.dumps({"record_id": record_id, **(fields or {})}) + b"\n"
    return csv_line([record_id, *(spreadsheet_safe(fields[name], cell_text(fields[name], query.catalog.get(name)))
                                  for name in query.fields)])


# ---- an unsaved rule -----------------------------------------------------------------------------


def proposed_rule(ctx: Context, workspace: str, object_type: str, raw: Any, segment_id: str = "") -> CompiledRule:
    """A rule not saved (yet), checked like a saved one: 422 invalid_rule naming each problem. `memberOf`
    a segment the caller cannot see is refused like one that does not exist; with `segment_id` (the
    segment the rule is for) a reference back to it is a cycle."""
    catalog = ctx.engine.registry.workspaces.catalog(workspace, object_type)
    rule = load_rule(raw, catalog)  # type: ignore[arg-type]
    shown = {sid: seg for sid, seg in ctx.engine.registry.segment_set(workspace, object_type).segments.items()
             if visible(ctx.principal, seg)}
    if problems := reference_problems(shown, segment_id, rule):
        raise InvalidRule(problems)
    return rule


def sample_size_of(body: dict[str, Any]) -> int:
    sample_size = body.get("sample_size", 10)
    if not isinstance(sample_size, int) or isinstance(sample_size, bool) or not 0 <= sample_size <= MAX_SAMPLE:
        raise bad_request(f"sample_size must be an integer from 0 to {MAX_SAMPLE}")
    return sample_size


class Tally:
    """Records counted, and the first `size` ids of each partition (sorted, merged when done)."""

    __slots__ = ("count", "samples", "size")

    def __init__(self, size: int) -> None:
        self.count = 0
        self.samples: list[list[str]] = []
        self.size = size

    def add(self, record_id: str) -> None:
        self.count += 1
        if len(self.samples[-1]) < self.size:
            self.samples[-1].append(record_id)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "sample": list(heapq.merge(*self.samples))[:self.size]}


def evaluate_stored(ctx: Context, workspace: str, object_type: str, rule: CompiledRule, sample_size: int,
                    segment_id: str | None = None) -> dict[str, Any]:
    """This worker's share of a preview, over the stored records of the type in the partitions it answers
    for (listed): the records the rule matches now and, with `segment_id`, those saving it would add to
    the segment (match, not a member) and remove from it (a member, no match)."""
    prefix = f"{workspace}/{object_type}/".encode()
    matched, added, removed = Tally(sample_size), Tally(sample_size), Tally(sample_size)
    scanned = 0
    partitions = cluster(ctx).available()
    for partition in partitions:
        for tally in (matched, added, removed):
            tally.samples.append([])
        now = ctx.engine.now_of(partition)
        for key, raw_state in ctx.engine.state.records(partition, prefix):
            state = RecordState.from_bytes(raw_state)
            if state.deleted:
                continue
            scanned += 1
            matches = rule.matches(state.fields, RuleContext(now, state.members, state.activity))
            if matches:
                matched.add(key[len(prefix):].decode())
            if segment_id is not None and matches != (segment_id in state.members):
                (added if matches else removed).add(key[len(prefix):].decode())
    local: dict[str, Any] = {"partitions": partitions, "scanned": scanned, **matched.to_json()}
    if segment_id is not None:
        local.update(added=added.to_json(), removed=removed.to_json())
    return local


async def merged_preview(ctx: Context, local: dict[str, Any], body: dict[str, Any], sample_size: int,
                         started: float) -> dict[str, Any]:
    """A preview over every worker (each evaluates the same body over its partitions), merged: counts
    added up, samples the first ids overall."""
    if not ctx.forwarded:
        answers = await cluster(ctx).gather(ctx, local, body=orjson.dumps(body))

        def tally(part: str | None) -> dict[str, Any]:
            parts = [a if part is None else a[part] for a in answers]
            return {"count": sum(p["count"] for p in parts),
                    "sample": sorted(rid for p in parts for rid in p["sample"])[:sample_size]}

        local = {**tally(None), "scanned": sum(a["scanned"] for a in answers)}
        if "added" in answers[0]:
            local.update(added=tally("added"), removed=tally("removed"))
    local["took_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return local


async def preview_rule(ctx: Context) -> web.StreamResponse:
    """Count and a sample of the records an unsaved rule matches, evaluated now over stored records."""
    workspace = await workspace_of(ctx)
    body = await ctx.json()
    if not isinstance(body, dict) or body.get("object_type") not in OBJECT_TYPES or "rule" not in body:
        raise bad_request("body must be {object_type, rule, sample_size?}")
    sample_size = sample_size_of(body)
    rule = proposed_rule(ctx, workspace, body["object_type"], body["rule"])
    started = time.perf_counter()
    local = evaluate_stored(ctx, workspace, body["object_type"], rule, sample_size)
    return reply(await merged_preview(ctx, local, body, sample_size, started))


async def preview_edit(ctx: Context) -> web.StreamResponse:
    """What saving a new rule for a dynamic segment would do to its members now: the records it matches,
    those it would add and those it would remove (the blast radius of an edit, before it is saved)."""
    segment = await visible_segment(ctx)
    body = await ctx.json()
    if not isinstance(body, dict) or "rule" not in body:
        raise bad_request("body must be {rule, sample_size?}")
    if segment.rule is None:
        raise ApiError(409, "not_dynamic", f"segment {segment.id!r} is static: its members come from imports, "
                       "not a rule")
    sample_size = sample_size_of(body)
    rule = proposed_rule(ctx, segment.workspace, segment.object_type, body["rule"], segment.id)
    started = time.perf_counter()
    local = evaluate_stored(ctx, segment.workspace, segment.object_type, rule, sample_size, segment.id)
    answer = await merged_preview(ctx, local, body, sample_size, started)
    return reply(answer if ctx.forwarded else {"segment_id": segment.id, **answer})
