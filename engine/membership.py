"""Pure membership logic: fold one change, behavioural event, import or tick of time into a record's
state and say which segments it entered or left.

No Kafka, no Faust, no disk: the agent calls these functions and does the I/O around them, and the
unit tests call them directly. ``now`` is always given (the engine's clock), never read here.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple

import orjson

from engine.costs import SAMPLE_EVERY, timed
from engine.registry import SegmentSet
from engine.rules import Context
from engine.rules.activity import add_event, numeric_properties, stream_name

ENTERED = "segment.entered"
EXITED = "segment.exited"
SEEN_EVENT_IDS = 1_000  # behavioural event ids remembered per record, to drop duplicates


@dataclass(slots=True)
class RecordState:
    """What the engine keeps per record: merged fields, last applied version, segments it is in, when
    time can next flip one of its segments (``due``), its behavioural activity and recent event ids.

    ``scheduled`` is the ``due`` that is in the schedule index now (not serialised): the store compares
    the two to move the record's schedule entry.
    """

    version: int
    fields: dict[str, Any]
    members: set[str]
    deleted: bool = False
    due: int | None = None
    activity: dict[str, Any] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    conversations: list[str] = field(default_factory=list)  # recent conversation ids (chat assignment)
    scheduled: int | None = None

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {"v": self.version, "f": self.fields, "m": sorted(self.members), "d": self.deleted}
        if self.due is not None:
            doc["t"] = self.due
        if self.activity:
            doc["a"] = self.activity
        if self.seen:
            doc["e"] = self.seen
        if self.conversations:
            doc["c"] = self.conversations
        return orjson.dumps(doc)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "RecordState":
        doc = orjson.loads(raw)
        due = doc.get("t")
        return cls(version=doc["v"], fields=doc["f"], members=set(doc["m"]), deleted=doc["d"], due=due,
                   activity=doc.get("a", {}), seen=doc.get("e", []), conversations=doc.get("c", []), scheduled=due)


class Change(NamedTuple):
    """One validated, normalised record change."""

    op: str  # "upsert" | "delete"
    object_type: str
    record_id: str
    version: int
    fields: dict[str, Any]


class Event(NamedTuple):
    """One validated behavioural event on a record."""

    id: str
    object_type: str
    record_id: str
    name: str
    at: int  # epoch ms
    properties: dict[str, Any]


class Transition(NamedTuple):
    """A membership change of one record in one segment, and the versions that caused it."""

    event_type: str  # ENTERED | EXITED
    segment_id: str
    segment_version: int
    record_version: int
    cause: str  # "change" | "delete" | "backfill" | "import" | "event" | "time"
    nonce: str = ""  # what makes a repeat distinct: an import or behavioural event id, or the instant


class Outcome(NamedTuple):
    state: RecordState | None  # None: the input was stale (or a duplicate) and ignored
    transitions: list[Transition]
    evaluated: int = 0  # segments evaluated directly (a change's metric; dependents not counted)


STALE = Outcome(None, [])


def apply_change(prev: RecordState | None, change: Change, segments: SegmentSet, now: int) -> Outcome:
    """Merge `change` into `prev` and re-evaluate only the segments that read a changed field (and, if
    the record's time boundary has passed, the time-dependent ones).

    A version not newer than the stored one is stale. A delete leaves every active segment and keeps a
    tombstone with the version, so late updates older than the delete stay ignored. A record the engine
    knows only from imports or behavioural events (version 0) is evaluated against every segment.
    """
    if prev is not None and change.version <= prev.version:
        return STALE
    known = prev is not None and not prev.deleted
    defined = segments.segments
    # Memberships of segments that were removed are dropped silently: a removal emits one
    # segment.deleted event, never per-record exits. (Iterate the record's few memberships, not
    # every defined segment.)
    members = {sid for sid in prev.members if sid in defined} if known else set()  # type: ignore[union-attr]
    scheduled = prev.scheduled if prev is not None else None
    if change.op == "delete":
        exits = [
            Transition(EXITED, sid, defined[sid].version, change.version, "delete")
            for sid in sorted(members)
            if defined[sid].active
        ]
        return Outcome(RecordState(change.version, {}, set(), deleted=True, scheduled=scheduled), exits)

    fields = dict(prev.fields) if known else {}  # type: ignore[union-attr]
    changed: list[str] = []
    for name, value in change.fields.items():
        if value is None:
            if name in fields:
                del fields[name]
                changed.append(name)
        elif fields.get(name) != value:
            fields[name] = value
            changed.append(name)
    state = RecordState(change.version, fields, members, due=prev.due if known else None,  # type: ignore[union-attr]
                        activity=prev.activity if known else {}, seen=prev.seen if known else [],  # type: ignore[union-attr]
                        conversations=prev.conversations if known else [], scheduled=scheduled)  # type: ignore[union-attr]
    if not known or prev.version == 0:  # type: ignore[union-attr]
        candidates: Iterable[str] = segments.evaluated_ids
        retime = True
    else:
        candidates = segments.index.affected(changed)
        retime = not segments.time_fields.isdisjoint(changed)
        if state.due is not None and state.due <= now:
            candidates = set(candidates) | segments.timed_ids  # type: ignore[arg-type]
            retime = True
    candidates = segments.guards.narrow(candidates, fields, members)  # type: ignore[arg-type]
    transitions = evaluate(state, candidates, segments, now, "change")
    if retime:
        state.due = next_due(state, segments, now)
    return Outcome(state, transitions, len(candidates))  # type: ignore[arg-type]


def apply_event(prev: RecordState | None, event: Event, segments: SegmentSet, now: int) -> Outcome:
    """Count a behavioural event in the record's activity (in place: ``prev.activity`` is updated) and
    re-evaluate the segments that read it.

    A duplicate (an id among the record's last SEEN_EVENT_IDS) is ignored; so is an event for a deleted
    record. A record not seen yet starts at version 0 with no fields. Late events count where they
    belong: in all-time figures, and in a window while their minute is inside it.
    """
    if prev is not None and prev.deleted:
        return STALE
    if prev is not None and event.id in prev.seen:
        return STALE
    streams = [event.name]
    for prop, value in segments.filters.get(event.name, ()):
        actual = event.properties.get(prop)
        if isinstance(actual, str) and actual.casefold() == value:
            streams.append(stream_name(event.name, (prop, value)))
    if prev is None:
        state = RecordState(0, {}, set())
    else:
        # The activity is updated in place (copying a busy record's buckets per event would dominate
        # the cost): `prev` is the message's private copy of the record, freshly loaded or pending.
        state = RecordState(prev.version, prev.fields, {sid for sid in prev.members if sid in segments.segments},
                            due=prev.due, activity=prev.activity, seen=list(prev.seen),
                            conversations=prev.conversations, scheduled=prev.scheduled)
    state.seen.append(event.id)
    if len(state.seen) > SEEN_EVENT_IDS:
        del state.seen[: len(state.seen) - SEEN_EVENT_IDS]
    add_event(state.activity, streams, event.at, numeric_properties(event.properties), now)
    candidates: set[str] = segments.index.affected(("events." + event.name,))
    if state.due is not None and state.due <= now:
        candidates |= segments.timed_ids
    candidates = segments.guards.narrow(candidates, state.fields, state.members)  # type: ignore[assignment]
    transitions = evaluate(state, candidates, segments, now, "event", event.id)
    state.due = next_due(state, segments, now)
    return Outcome(state, transitions)


def apply_time(state: RecordState, segments: SegmentSet, now: int) -> list[Transition]:
    """Time reached the record's due instant: re-evaluate its time-dependent segments (updates `state`)."""
    if state.deleted:
        state.due = None
        return []
    state.members = {sid for sid in state.members if sid in segments.segments}
    due = segments.guards.narrow(segments.timed_ids, state.fields, state.members)
    transitions = evaluate(state, due, segments, now, "time", f"t{now}")
    state.due = next_due(state, segments, now)
    return transitions


def next_due(state: RecordState, segments: SegmentSet, now: int) -> int | None:
    """The earliest instant after `now` at which time can flip one of the record's segments."""
    if not segments.timed_ids:
        return None
    context = Context(now, state.members, state.activity)
    defined = segments.segments
    best: int | None = None
    for sid in segments.timed_ids:
        t = defined[sid].rule.next_change(state.fields, context)  # type: ignore[union-attr,misc]
        if t is not None and (best is None or t < best):
            best = t
    return best


def evaluate(
    state: RecordState,
    segment_ids: Iterable[str],
    segments: SegmentSet,
    now: int,
    cause: str,
    nonce: str = "",
) -> list[Transition]:
    """Evaluate the given segments for one record, updating `state.members` in place; return the flips.

    Segments that reference others are evaluated after them (by rank), and a flip re-evaluates the
    segments that reference the flipped one, so nested segments update transitively in one pass.
    """
    transitions: list[Transition] = []
    defined = segments.segments
    members = state.members
    fields = state.fields
    context = Context(now, members, state.activity)
    if not segments.dependents:
        for sid in segment_ids:
            _flip(defined[sid], fields, members, context, state.version, cause, nonce, transitions)
        return transitions
    rank, dependents = segments.rank, segments.dependents
    queue = [(rank.get(sid, 0), sid) for sid in segment_ids]
    heapq.heapify(queue)
    done: set[str] = set()
    while queue:
        _, sid = heapq.heappop(queue)
        if sid in done:
            continue
        done.add(sid)
        if _flip(defined[sid], fields, members, context, state.version, cause, nonce, transitions):
            for dep in dependents.get(sid, ()):
                if dep not in done:
                    heapq.heappush(queue, (rank.get(dep, 0), dep))
    return transitions


def _flip(segment: Any, fields: Mapping[str, Any], members: set[str], context: Context, record_version: int,
          cause: str, nonce: str, transitions: list[Transition]) -> bool:
    sid = segment.id
    if not segment.evaluated:  # a referenced static or inactive segment: its membership is given
        return False
    cost = segment.cost
    cost.calls += 1
    if cost.calls % SAMPLE_EVERY:
        now = segment.rule.matches(fields, context)
    else:
        now = timed(cost, segment.rule.matches, fields, context)
    if now == (sid in members):
        return False
    if now:
        members.add(sid)
        transitions.append(Transition(ENTERED, sid, segment.version, record_version, cause, nonce))
    else:
        members.discard(sid)
        transitions.append(Transition(EXITED, sid, segment.version, record_version, cause, nonce))
    return True


def backfill(state: RecordState, segment_ids: Iterable[str], segments: SegmentSet, now: int) -> list[Transition]:
    """Re-evaluate a stored record against new or changed segments (updates `state` in place)."""
    if state.deleted:
        return []
    defined = segments.segments
    state.members = {sid for sid in state.members if sid in defined}
    transitions = evaluate(state, segment_ids, segments, now, "backfill")
    state.due = next_due(state, segments, now)
    return transitions


def apply_import(
    prev: RecordState | None, segment_id: str, segment_version: int, add: bool, nonce: str,
    segments: SegmentSet, now: int,
) -> Outcome:
    """Add a record to (or remove it from) a static segment, then re-evaluate the segments that reference
    it. A record the engine has not seen yet gets an empty state at version 0, so its first real change
    (version >= 1) still applies; a deleted record cannot be imported."""
    if prev is not None and prev.deleted:
        return STALE
    state = prev if prev is not None else RecordState(0, {}, set())
    if add == (segment_id in state.members):
        return Outcome(state, [])
    members = {sid for sid in state.members if sid in segments.segments}
    state = RecordState(state.version, state.fields, members, due=state.due, activity=state.activity,
                        seen=state.seen, conversations=state.conversations, scheduled=state.scheduled)
    if add:
        state.members.add(segment_id)
    else:
        state.members.discard(segment_id)
    event_type = ENTERED if add else EXITED
    transitions = [Transition(event_type, segment_id, segment_version, state.version, "import", nonce)]
    dependents = segments.dependents.get(segment_id)
    if dependents:
        transitions += evaluate(state, dependents, segments, now, "import", nonce)
    return Outcome(state, transitions)
