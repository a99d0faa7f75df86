"""The independent oracle for streaming tests: replay the published changes naively and evaluate every
segment from scratch with the naive interpreter (tests/naive_eval.py), plus folding of emitted events."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from engine.rules import normalize_fields
from tests.naive_eval import naive_matches

Member = tuple[str, str]  # (record_id, segment_id)


def merge(fields: Mapping[str, Any], change: Mapping[str, Any], catalog: Mapping[str, Any]) -> dict[str, Any]:
    """A partial update merged into a record's fields: null removes a field (README, Message formats)."""
    merged = dict(fields)
    for name, value in normalize_fields(change.get("fields") or {}, catalog).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


@dataclass
class Oracle:
    """Final record states and the membership transitions a sequential, all-segments evaluation implies."""

    catalog: Mapping[str, Any]
    segments: dict[str, dict[str, Any]]  # segment id -> rule JSON
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # live records only
    versions: dict[str, int] = field(default_factory=dict)
    transitions: list[tuple[str, str, str, int]] = field(default_factory=list)  # (type, record, segment, version)

    def apply(self, change: Mapping[str, Any]) -> None:
        rid = change["id"]
        if change["version"] <= self.versions.get(rid, -1):
            return
        self.versions[rid] = change["version"]
        before = self.members_of(rid)
        if change["op"] == "delete":
            self.records.pop(rid, None)
        else:
            self.records[rid] = merge(self.records.get(rid, {}), change, self.catalog)
        after = self.members_of(rid)
        for sid in sorted(after - before):
            self.transitions.append(("segment.entered", rid, sid, change["version"]))
        for sid in sorted(before - after):
            self.transitions.append(("segment.exited", rid, sid, change["version"]))

    def apply_all(self, changes: Iterable[Mapping[str, Any]]) -> "Oracle":
        for change in changes:
            self.apply(change)
        return self

    def members_of(self, record_id: str) -> set[str]:
        fields = self.records.get(record_id)
        if fields is None:
            return set()
        return {sid for sid, rule in self.segments.items() if naive_matches(rule, fields, self.catalog)}

    def membership(self) -> set[Member]:
        return {(rid, sid) for rid in self.records for sid in self.members_of(rid)}


def fold_events(events: Iterable[Mapping[str, Any]]) -> set[Member]:
    """Membership as a subscriber folds it: entered/exited in topic order, redelivered ids ignored, and a
    segment.deleted at version v ending every membership that segment granted at a version <= v
    (versions order events across partitions, which the topic does not)."""
    seen: set[str] = set()
    latest: dict[Member, tuple[bool, int]] = {}
    deleted_at: dict[str, int] = {}
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        data = event["data"]
        if event["type"] == "segment.deleted":
            deleted_at[data["segment_id"]] = max(deleted_at.get(data["segment_id"], 0), data["segment_version"])
        elif event["type"] in ("segment.entered", "segment.exited"):
            member = (data["record_id"], data["segment_id"])
            latest[member] = (event["type"] == "segment.entered", data["segment_version"])
    return {
        member
        for member, (entered, version) in latest.items()
        if entered and version > deleted_at.get(member[1], 0)
    }


# ---- every cause of a flip -----------------------------------------------------------------------------


def references(rule: Mapping[str, Any] | None) -> set[str]:
    """The segment ids a rule reads with memberOf / notMemberOf (any depth)."""
    if rule is None:
        return set()
    if "rules" in rule:
        return set().union(*(references(child) for child in rule["rules"]))
    return {rule["value"]} if rule.get("field") == "segment" else set()


def reference_order(rules: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Segment ids with every referenced segment before its referrers (definitions have no cycles)."""
    order: list[str] = []

    def visit(segment_id: str) -> None:
        if segment_id in order:
            return
        for other in sorted(references(rules[segment_id])):
            visit(other)
        order.append(segment_id)

    for segment_id in sorted(rules):
        visit(segment_id)
    return order


@dataclass
class FullOracle:
    """The from-scratch oracle for every cause of a flip: record changes, behavioural events (each record's
    full raw history, aggregates recomputed from it), the clock (the latest tick, `now`), static imports and
    segment references, with fixed definitions (`rules`: segment id -> rule JSON, None for a static segment).

    Feed it the input in the order one partition holds it (`apply_change`, `apply_import`, `apply_tick` share
    the record-changes topic); behavioural events travel on their own topic, so their order relative to the
    rest is up to timing, and the answer does not depend on it provided a deleted record is never re-created
    (README: events for a deleted record are ignored, a delete drops the record's activity and static
    memberships, and events or imports for a record never seen create it at version 0 with no fields)."""

    catalog: Mapping[str, Any]
    rules: dict[str, dict[str, Any] | None]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # live records only
    versions: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # record -> raw events (epoch ms `at`)
    statics: dict[str, set[str]] = field(default_factory=dict)  # static segment -> imported record ids
    now: int | None = None

    def apply_change(self, change: Mapping[str, Any]) -> None:
        rid = change["id"]
        if change["version"] <= self.versions.get(rid, -1):
            return
        known = rid in self.records
        self.versions[rid] = change["version"]
        if change["op"] == "delete":
            self.records.pop(rid, None)
            self.history.pop(rid, None)
            for members in self.statics.values():
                members.discard(rid)
            return
        self.records[rid] = merge(self.records[rid] if known else {}, change, self.catalog)

    def _touch(self, rid: str) -> bool:
        """Create a record the engine would create at version 0; False for a deleted record."""
        if rid in self.records:
            return True
        if rid in self.versions:  # deleted
            return False
        self.records[rid], self.versions[rid] = {}, 0
        return True

    def apply_event(self, event: Mapping[str, Any]) -> None:
        if self._touch(event["record_id"]):
            self.history.setdefault(event["record_id"], []).append(dict(event))

    def apply_import(self, segment_id: str, record_ids: Iterable[str], add: bool) -> None:
        for rid in record_ids:
            if self._touch(rid):
                members = self.statics.setdefault(segment_id, set())
                if add:
                    members.add(rid)
                else:
                    members.discard(rid)

    def apply_tick(self, now: int) -> None:
        self.now = now if self.now is None else max(self.now, now)

    def members_of(self, record_id: str) -> set[str]:
        fields = self.records.get(record_id)
        if fields is None:
            return set()
        members: set[str] = set()
        events = self.history.get(record_id, ())
        for segment_id in reference_order(self.rules):
            rule = self.rules[segment_id]
            if rule is None:
                hit = record_id in self.statics.get(segment_id, ())
            else:
                hit = naive_matches(rule, fields, self.catalog, self.now, members, events)
            if hit:
                members.add(segment_id)
        return members

    def membership(self) -> set[Member]:
        return {(rid, sid) for rid in self.records for sid in self.members_of(rid)}
