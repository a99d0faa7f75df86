"""The independent oracle for streaming tests: replay the published changes naively and evaluate every
segment from scratch with the naive interpreter (tests/naive_eval.py), plus folding of emitted events."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from engine.rules import normalize_fields
from tests.naive_eval import naive_matches

Member = tuple[str, str]  # (record_id, segment_id)


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
            merged = dict(self.records.get(rid, {}))
            for name, value in normalize_fields(change.get("fields") or {}, self.catalog).items():
                if value is None:
                    merged.pop(name, None)
                else:
                    merged[name] = value
            self.records[rid] = merged
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
