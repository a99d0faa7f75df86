"""The segment definitions a worker knows, compiled and indexed per (workspace, object type).

Fed from the compacted definitions topic. Every accepted change bumps `generation`, which is how the
record agent notices that a partition needs a backfill.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from engine.envelope import segment_key
from engine.costs import CostMeter, SegmentCost
from engine.errors import UnknownWorkspace
from engine.rules import CompiledRule, FieldIndex, GuardIndex, InvalidRule, RuleProblem, load_rule
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
    cost: SegmentCost = field(default_factory=SegmentCost)  # what evaluating it costs (engine/costs.py)

    @property
    def evaluated(self) -> bool:
        """Active dynamic segments are evaluated; inactive ones are frozen, static ones imported."""
        return self.active and self.rule is not None


@dataclass
class SegmentSet:
    """The segments of one workspace and object type, with what the hot path needs precomputed:
    the field index over the evaluated ones, which of them time can flip, who references whom (and an
    evaluation order in which a referenced segment comes first), and the filtered activity streams."""

    segments: dict[str, Segment] = field(default_factory=dict)
    index: FieldIndex = field(default_factory=FieldIndex)
    guards: GuardIndex = field(default_factory=GuardIndex)  # over the evaluated ones: who can match a record
    evaluated_ids: frozenset[str] = frozenset()
    timed_ids: frozenset[str] = frozenset()  # evaluated segments with relative dates or windows
    time_fields: frozenset[str] = frozenset()  # fields whose change moves a time boundary
    dependents: dict[str, frozenset[str]] = field(default_factory=dict)  # id -> evaluated ids referencing it
    rank: dict[str, int] = field(default_factory=dict)  # evaluation order: references before referrers
    filters: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)  # event -> (property, value)
    stale: bool = False  # derived attributes lag behind `segments` until `fresh()` (see put)

    def put(self, segment: Segment) -> None:
        """Add or replace a segment; raises InvalidRule if its references would form a cycle."""
        if segment.rule is not None and segment.rule.references:
            check_no_cycle(self.segments, segment)
        self.segments[segment.id] = segment
        self.index.remove(segment.id)
        self.guards.remove(segment.id)
        if segment.evaluated:
            self.index.add(segment.id, segment.rule.fields)  # type: ignore[union-attr]
            self.guards.add(segment.id, segment.rule.guard)  # type: ignore[union-attr]
        self.stale = True

    def drop(self, segment_id: str) -> None:
        self.segments.pop(segment_id, None)
        self.index.remove(segment_id)
        self.guards.remove(segment_id)
        self.stale = True

    def fresh(self) -> "SegmentSet":
        """Recompute the derived attributes once after any number of puts and drops: a worker loading
        10,000 definitions would otherwise redo this over every segment per definition (O(n²))."""
        if self.stale:
            self._refresh()
            self.stale = False
        return self

    def _refresh(self) -> None:
        evaluated = [s for s in self.segments.values() if s.evaluated]
        rules = {s.id: s.rule for s in evaluated}
        self.evaluated_ids = frozenset(rules)
        self.timed_ids = frozenset(sid for sid, r in rules.items() if r.next_change is not None)  # type: ignore[union-attr]
        self.time_fields = frozenset(f for r in rules.values() for f in r.time_fields)  # type: ignore[union-attr]
        dependents: dict[str, set[str]] = {}
        filters: dict[str, set[tuple[str, str]]] = {}
        for sid, rule in rules.items():
            for ref in rule.references:  # type: ignore[union-attr]
                dependents.setdefault(ref, set()).add(sid)
            for event, where in rule.streams:  # type: ignore[union-attr]
                if where is not None:
                    filters.setdefault(event, set()).add((where[0], where[1].casefold()))
        self.dependents = {k: frozenset(v) for k, v in dependents.items()}
        self.filters = {k: frozenset(v) for k, v in filters.items()}
        self.rank = evaluation_order(self.segments)


def _references(segment: Segment | None) -> frozenset[str]:
    return segment.rule.references if segment is not None and segment.rule is not None else frozenset()


def check_no_cycle(segments: Mapping[str, Segment], new: Segment) -> None:
    """Refuse a definition whose segment references lead back to itself."""
    def path_back(sid: str, trail: list[str]) -> list[str] | None:
        if sid == new.id:
            return trail
        if sid in seen:
            return None
        seen.add(sid)
        for ref in sorted(_references(segments.get(sid))):
            found = path_back(ref, trail + [ref])
            if found is not None:
                return found
        return None

    seen: set[str] = set()
    for ref in sorted(_references(new)):
        cycle = path_back(ref, [new.id, ref])
        if cycle is not None:
            raise InvalidRule([RuleProblem(
                "reference_cycle", "", "segment", "memberOf",
                f"segment references form a cycle: {' -> '.join(cycle)}")])


def reference_problems(segments: Mapping[str, Segment], segment_id: str, rule: CompiledRule) -> list[RuleProblem]:
    """What is wrong with a rule's segment references before it is saved: unknown segments (they must
    exist in the same workspace and object type) and cycles."""
    problems = []
    for node in _reference_conditions(rule.tree):
        if node.value not in segments and node.value != segment_id:  # a self-reference is a cycle, below
            problems.append(RuleProblem(
                "unknown_segment", node.path, node.field, node.operator,
                f"segment {node.value!r} does not exist in this workspace and object type"))
    if not problems:
        probe = Segment("", "", segment_id, "", 0, True, rule, {})
        try:
            check_no_cycle(segments, probe)
        except InvalidRule as exc:
            problems.extend(exc.problems)
    return problems


def _reference_conditions(tree: Any) -> list[Any]:
    stack, found = [tree], []
    while stack:
        node = stack.pop()
        if hasattr(node, "rules"):
            stack.extend(node.rules)
        elif node.field == "segment":
            found.append(node)
    return sorted(found, key=lambda n: n.path)


def referrers(segments: Mapping[str, Segment], segment_id: str) -> list[str]:
    """Ids of the segments whose rules reference `segment_id`."""
    return sorted(s.id for s in segments.values() if segment_id in _references(s))


def evaluation_order(segments: Mapping[str, Segment]) -> dict[str, int]:
    """Rank of every segment: 0 without references, else 1 + the highest rank it references."""
    rank: dict[str, int] = {}

    def of(sid: str) -> int:
        if sid not in rank:
            rank[sid] = 0  # a guard only: put() refuses cycles
            rank[sid] = 1 + max((of(ref) for ref in _references(segments.get(sid)) if ref in segments), default=-1)
        return rank[sid]

    for sid in segments:
        of(sid)
    return rank


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
        self.removals: dict[str, int] = {}  # segment key -> version of its latest removal
        self.generation = 0

    def recreated_since(self, key: str, applied: list[Any] | None) -> bool:
        """Whether a segment a partition applied (stamp `applied`, not a removal) was removed after that
        and is defined again now: the stamps alone only show the latest version. (Definitions are read
        from the compacted topic: a removal compacted away before a worker started is not seen.)"""
        removal = self.removals.get(key)
        current = self.stamps.get(key)
        return (applied is not None and not applied[1] and removal is not None and current is not None
                and not current[1] and applied[0] < removal)

    def segment_set(self, workspace: str, object_type: str) -> SegmentSet:
        return self.sets.get((workspace, object_type), EMPTY_SET).fresh()

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
            self.removals[key] = version
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
                cost=self.meter.cost(key),
            )
            self.sets.setdefault(scope, SegmentSet()).put(segment)
            self.stamps[key] = [version, False]
        self.generation += 1
        return True
