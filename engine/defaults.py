"""Default segments: which segment a data section (an object type's list) opens on for a team member.

Three layers, first found wins: the member's own pin, a segment made the default for them (its
`default_for` names them), the workspace's shared default. The stored choices (shared defaults and pins)
come from the compacted default-segments topic, which every worker follows (`DefaultsBook`); `resolve`
is pure. A choice naming a segment that is gone, of another object type, or hidden from the member is
skipped, so the next layer answers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple

SHARED = "shared"
MEMBER = "member"
PIN, PER_MEMBER = "pin", "member"  # sources of a resolved default, with SHARED


class SegmentFacts(NamedTuple):
    """What resolution needs to know about one segment."""

    id: str
    object_type: str
    version: int  # the latest saved wins when two segments are the default of one member
    default_for: frozenset[str]
    hidden_from: frozenset[str]


class Resolved(NamedTuple):
    segment_id: str
    source: str  # PIN | PER_MEMBER | SHARED

    def to_json(self) -> dict[str, str]:
        return {"segment_id": self.segment_id, "source": self.source}


def usable(segment: SegmentFacts | None, object_type: str, member: str | None) -> bool:
    """A default may open this section for this member: it exists, is of the type, is not hidden from them."""
    return segment is not None and segment.object_type == object_type and member not in segment.hidden_from


def member_defaults(member: str, segments: Iterable[SegmentFacts]) -> dict[str, str]:
    """Object type -> the segment made the default for `member` (the latest saved one when several are)."""
    best: dict[str, SegmentFacts] = {}
    for segment in segments:
        if member in segment.default_for and member not in segment.hidden_from:
            held = best.get(segment.object_type)
            if held is None or (segment.version, segment.id) > (held.version, held.id):
                best[segment.object_type] = segment
    return {object_type: segment.id for object_type, segment in best.items()}


def resolve(
    member: str | None, pins: Mapping[str, str], shared: Mapping[str, str], segments: Mapping[str, SegmentFacts]
) -> dict[str, Resolved]:
    """Per object type, the segment `member` opens on: pin -> per-member default -> shared default.
    Object types with none are absent. `pins` and `shared` map object type -> segment id; `segments`
    holds the workspace's segments by id."""
    per_member = member_defaults(member, segments.values()) if member is not None else {}
    out: dict[str, Resolved] = {}
    for object_type in sorted({*pins, *per_member, *shared}):
        for source, chosen in ((PIN, pins), (PER_MEMBER, per_member), (SHARED, shared)):
            segment_id = chosen.get(object_type)
            if segment_id is not None and usable(segments.get(segment_id), object_type, member):
                out[object_type] = Resolved(segment_id, source)
                break
    return out


class Stored(NamedTuple):
    segment_id: str | None  # None: cleared
    version: int


@dataclass
class WorkspaceDefaults:
    shared: dict[str, Stored] = field(default_factory=dict)  # object type -> choice
    pins: dict[str, dict[str, Stored]] = field(default_factory=dict)  # member -> object type -> choice


def chosen(choices: Mapping[str, Stored]) -> dict[str, str]:
    return {object_type: c.segment_id for object_type, c in choices.items() if c.segment_id is not None}


def default_key(workspace: str, scope: str, member: str | None, object_type: str) -> str:
    """The topic key: one compacted message per (workspace, scope, member, object type)."""
    return f"{workspace}/{SHARED}/{object_type}" if scope == SHARED else f"{workspace}/{MEMBER}/{member}/{object_type}"


class DefaultsBook:
    """Every workspace's shared defaults and pins, as read from the default-segments topic."""

    def __init__(self) -> None:
        self.by_workspace: dict[str, WorkspaceDefaults] = {}

    def shared(self, workspace: str) -> dict[str, str]:
        found = self.by_workspace.get(workspace)
        return chosen(found.shared) if found is not None else {}

    def pins(self, workspace: str, member: str | None) -> dict[str, str]:
        found = self.by_workspace.get(workspace)
        return chosen(found.pins.get(member or "", {})) if found is not None else {}

    def version(self, workspace: str, scope: str, member: str | None, object_type: str) -> int:
        found = self.by_workspace.get(workspace)
        if found is None:
            return 0
        choices = found.shared if scope == SHARED else found.pins.get(member or "", {})
        stored = choices.get(object_type)
        return stored.version if stored is not None else 0

    def apply(self, workspace: str, data: Mapping[str, Any]) -> bool:
        """Apply one default.segment message's data; older or equal versions are ignored (replays)."""
        scope, member, object_type = data["scope"], data.get("member"), data["object_type"]
        version = int(data["version"])
        if version <= self.version(workspace, scope, member, object_type):
            return False
        found = self.by_workspace.setdefault(workspace, WorkspaceDefaults())
        choices = found.shared if scope == SHARED else found.pins.setdefault(member, {})
        choices[object_type] = Stored(data.get("segment_id"), version)
        return True
