"""The segment definitions a worker knows, compiled and indexed per (workspace, object type).

Fed from the compacted definitions topic. Every accepted change bumps `generation`, which is how the
record agent notices that a partition needs a backfill.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from engine.envelope import segment_key
from engine.costs import CostMeter
from engine.errors import UnknownWorkspace
from engine.rules import CompiledRule, FieldIndex, load_rule
from engine.workspaces import Workspaces

Scope = tuple[str, str]  # (workspace, object type)


@dataclass(frozen=True)
class Segment:
    """One segment definition at one version; `rule` is compiled once when the definition arrives."""

    workspace: str
    object_type: str
    id: str
    name: str
    version: int
    active: bool
    rule: CompiledRule | None  # None: a static segment, whose members come from imports
    definition: Mapping[str, Any]
    matches: Callable[[Mapping[str, Any]], bool] | None = None  # the rule, metered (see engine/costs.py)

    @property
    def evaluated(self) -> bool:
        """Active dynamic segments are evaluated; inactive ones are frozen, static ones imported."""
        return self.active and self.rule is not None


@dataclass
class SegmentSet:
    """The segments of one workspace and object type, with the field index over the active ones."""

    segments: dict[str, Segment] = field(default_factory=dict)
    index: FieldIndex = field(default_factory=FieldIndex)
    evaluated_ids: frozenset[str] = frozenset()

    def put(self, segment: Segment) -> None:
        self.segments[segment.id] = segment
        self.index.remove(segment.id)
        if segment.evaluated:
            self.index.add(segment.id, segment.rule.fields)  # type: ignore[union-attr]
        self._refresh()

    def drop(self, segment_id: str) -> None:
        self.segments.pop(segment_id, None)
        self.index.remove(segment_id)
        self._refresh()

    def _refresh(self) -> None:
        self.evaluated_ids = frozenset(s.id for s in self.segments.values() if s.evaluated)


EMPTY_SET = SegmentSet()

# Version stamp per segment key: [version, removed]; what a partition stores as "applied".
Stamps = dict[str, list[Any]]


class SegmentRegistry:
    """Latest definition of every segment; older or equal versions are ignored, so replays are harmless."""

    def __init__(self, workspaces: Workspaces, meter: CostMeter | None = None) -> None:
        self.workspaces = workspaces
        self.meter = meter or CostMeter()
        self.sets: dict[Scope, SegmentSet] = {}
        self.stamps: Stamps = {}
        self.generation = 0

    def segment_set(self, workspace: str, object_type: str) -> SegmentSet:
        return self.sets.get((workspace, object_type), EMPTY_SET)

    def get(self, workspace: str, object_type: str, segment_id: str) -> Segment | None:
        return self.segment_set(workspace, object_type).segments.get(segment_id)

    def in_workspace(self, workspace: str) -> list[Segment]:
        """Every defined (not removed) segment of a workspace, all object types."""
        return [seg for (ws, _), group in self.sets.items() if ws == workspace for seg in group.segments.values()]

    def find(self, workspace: str, segment_id: str) -> Segment | None:
        """A segment by id within its workspace (ids are unique per workspace across object types)."""
        for (ws, _), group in self.sets.items():
            if ws == workspace and segment_id in group.segments:
                return group.segments[segment_id]
        return None

    def apply(self, message: Mapping[str, Any]) -> bool:
        """Apply a validated segment.defined / segment.removed message; True if it changed anything.

        Raises InvalidRule for a rule that does not validate against the workspace's catalog and
        UnknownWorkspace for a workspace not configured.
        """
        workspace = message["workspace"]
        data = message["data"]
        object_type = data["object_type"]
        key = segment_key(workspace, object_type, data["id"])
        version = int(data["version"])
        current = self.stamps.get(key)
        if current is not None and current[0] >= version:
            return False
        catalog = self.workspaces.catalog(workspace, object_type)
        if catalog is None:
            raise UnknownWorkspace(f"workspace {workspace!r} is not configured")
        scope = (workspace, object_type)
        if message["type"] == "segment.removed":
            self.sets.setdefault(scope, SegmentSet()).drop(data["id"])
            self.stamps[key] = [version, True]
        else:
            rule = load_rule(data["rule"], catalog) if data.get("kind", "dynamic") == "dynamic" else None
            segment = Segment(
                workspace=workspace,
                object_type=object_type,
                id=data["id"],
                name=data["name"],
                version=version,
                active=data.get("status", "active") == "active",
                rule=rule,
                definition=data,
                matches=self.meter.wrap(key, rule.matches) if rule is not None else None,
            )
            self.sets.setdefault(scope, SegmentSet()).put(segment)
            self.stamps[key] = [version, False]
        self.generation += 1
        return True
