"""Pure membership logic: fold one change into a record's state and say which segments it entered or left.

No Kafka, no Faust, no disk: the agent calls these functions and does the I/O around them, and the
unit tests call them directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

import orjson

from engine.registry import SegmentSet

ENTERED = "segment.entered"
EXITED = "segment.exited"


@dataclass(slots=True)
class RecordState:
    """What the engine keeps per record: merged fields, last applied version, segments it is in."""

    version: int
    fields: dict[str, Any]
    members: set[str]
    deleted: bool = False

    def to_bytes(self) -> bytes:
        return orjson.dumps({"v": self.version, "f": self.fields, "m": sorted(self.members), "d": self.deleted})

    @classmethod
    def from_bytes(cls, raw: bytes) -> "RecordState":
        doc = orjson.loads(raw)
        return cls(version=doc["v"], fields=doc["f"], members=set(doc["m"]), deleted=doc["d"])


class Change(NamedTuple):
    """One validated, normalised record change."""

    op: str  # "upsert" | "delete"
    object_type: str
    record_id: str
    version: int
    fields: dict[str, Any]


class Transition(NamedTuple):
    """A membership change of one record in one segment, and the versions that caused it."""

    event_type: str  # ENTERED | EXITED
    segment_id: str
    segment_version: int
    record_version: int
    cause: str  # "change" | "delete" | "backfill" | "import"
    nonce: str = ""  # an import's message id: re-importing after a removal is a new transition


class Outcome(NamedTuple):
    state: RecordState | None  # None: the change was stale and ignored
    transitions: list[Transition]


STALE = Outcome(None, [])


def apply_change(prev: RecordState | None, change: Change, segments: SegmentSet) -> Outcome:
    """Merge `change` into `prev` and re-evaluate only the segments that read a changed field.

    A version not newer than the stored one is stale. A delete leaves every active segment and keeps a
    tombstone with the version, so late updates older than the delete stay ignored.
    """
    if prev is not None and change.version <= prev.version:
        return STALE
    live = prev is not None and not prev.deleted
    defined = segments.segments
    # Memberships of segments that were removed are dropped silently: a removal emits one
    # segment.deleted event, never per-record exits. (Iterate the record's few memberships, not
    # every defined segment.)
    members = {sid for sid in prev.members if sid in defined} if live else set()  # type: ignore[union-attr]
    if change.op == "delete":
        exits = [
            Transition(EXITED, sid, defined[sid].version, change.version, "delete")
            for sid in sorted(members)
            if defined[sid].active
        ]
        return Outcome(RecordState(change.version, {}, set(), deleted=True), exits)

    fields = dict(prev.fields) if live else {}  # type: ignore[union-attr]
    changed: list[str] = []
    for name, value in change.fields.items():
        if value is None:
            if name in fields:
                del fields[name]
                changed.append(name)
        elif fields.get(name) != value:
            fields[name] = value
            changed.append(name)
    candidates: Iterable[str] = segments.index.affected(changed) if live else segments.evaluated_ids
    transitions = evaluate(fields, members, candidates, segments, change.version, "change")
    return Outcome(RecordState(change.version, fields, members), transitions)


def evaluate(
    fields: dict[str, Any],
    members: set[str],
    segment_ids: Iterable[str],
    segments: SegmentSet,
    record_version: int,
    cause: str,
) -> list[Transition]:
    """Evaluate the given segments for one record, updating `members` in place; return the flips."""
    transitions: list[Transition] = []
    defined = segments.segments
    for sid in segment_ids:
        segment = defined[sid]
        now = segment.matches(fields)  # type: ignore[misc]  # only evaluated (rule) segments get here
        if now != (sid in members):
            if now:
                members.add(sid)
                transitions.append(Transition(ENTERED, sid, segment.version, record_version, cause))
            else:
                members.discard(sid)
                transitions.append(Transition(EXITED, sid, segment.version, record_version, cause))
    return transitions


def backfill(state: RecordState, segment_ids: Iterable[str], segments: SegmentSet) -> list[Transition]:
    """Re-evaluate a stored record against new or changed segments (updates `state.members` in place)."""
    if state.deleted:
        return []
    defined = segments.segments
    state.members = {sid for sid in state.members if sid in defined}
    return evaluate(state.fields, state.members, segment_ids, segments, state.version, "backfill")


def apply_import(
    prev: RecordState | None, segment_id: str, segment_version: int, add: bool, nonce: str
) -> Outcome:
    """Add a record to (or remove it from) a static segment. A record the engine has not seen yet gets
    an empty state at version 0, so its first real change (version >= 1) still applies; a deleted
    record cannot be imported."""
    if prev is not None and prev.deleted:
        return STALE
    state = prev if prev is not None else RecordState(0, {}, set())
    if add == (segment_id in state.members):
        return Outcome(state, [])
    members = set(state.members)
    if add:
        members.add(segment_id)
    else:
        members.discard(segment_id)
    event_type = ENTERED if add else EXITED
    transition = Transition(event_type, segment_id, segment_version, state.version, "import", nonce)
    return Outcome(RecordState(state.version, state.fields, members), [transition])
