"""The pure membership fold: partial merges, stale versions, deletes, and only affected segments evaluated."""
from __future__ import annotations

from typing import Any

from engine.membership import ENTERED, EXITED, Change, RecordState, apply_change, backfill
from engine.registry import SegmentRegistry
from engine.workspaces import Workspaces
from engine.rules import catalog_for

NOW = 1_790_000_000_000
PL_HIGH = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"},
                                          {"field": "lifetime_value", "operator": ">", "value": 1000}]}
VIP = {"combinator": "and", "rules": [{"field": "tags", "operator": "hasAny", "value": ["vip"]}]}


def registry(**rules: dict[str, Any]) -> SegmentRegistry:
    reg = SegmentRegistry(Workspaces({("acme", "contact"): catalog_for("contact")}))
    for version, (sid, rule) in enumerate(rules.items(), start=1):
        reg.apply({"type": "segment.defined", "workspace": "acme",
                   "data": {"id": sid, "object_type": "contact", "name": sid, "version": version, "rule": rule}})
    return reg


def upsert(version: int, **fields: Any) -> Change:
    return Change("upsert", "contact", "c1", version, fields)


def test_partial_updates_merge_and_flip_membership() -> None:
    segments = registry(pl=PL_HIGH, vip=VIP).segment_set("acme", "contact")
    first = apply_change(None, upsert(1, country="PL", lifetime_value=500), segments, NOW)
    assert first.state is not None and first.transitions == []
    second = apply_change(first.state, upsert(2, lifetime_value=1500), segments, NOW)
    assert second.state is not None and second.state.fields == {"country": "PL", "lifetime_value": 1500}
    assert [(t.event_type, t.segment_id, t.record_version) for t in second.transitions] == [(ENTERED, "pl", 2)]
    cleared = apply_change(second.state, upsert(3, country=None), segments, NOW)
    assert cleared.state is not None and "country" not in cleared.state.fields
    assert [(t.event_type, t.segment_id) for t in cleared.transitions] == [(EXITED, "pl")]


def test_stale_and_duplicate_versions_are_ignored() -> None:
    segments = registry(pl=PL_HIGH).segment_set("acme", "contact")
    state = apply_change(None, upsert(5, country="PL", lifetime_value=2000), segments, NOW).state
    assert state is not None and state.members == {"pl"}
    assert apply_change(state, upsert(5, country="DE"), segments, NOW).state is None
    assert apply_change(state, upsert(4, country="DE"), segments, NOW).state is None


def test_only_segments_reading_a_changed_field_are_evaluated() -> None:
    reg = registry(pl=PL_HIGH, vip=VIP)
    segments = reg.segment_set("acme", "contact")
    state = RecordState(1, {"country": "PL", "lifetime_value": 5000, "tags": ["vip"]}, set())
    # Stored membership is deliberately stale; a change to `tags` may only touch `vip`.
    outcome = apply_change(state, upsert(2, tags=["vip", "new"]), segments, NOW)
    assert outcome.state is not None and outcome.state.members == {"vip"}


def test_delete_leaves_every_segment_and_blocks_older_updates() -> None:
    segments = registry(pl=PL_HIGH, vip=VIP).segment_set("acme", "contact")
    state = apply_change(None, upsert(1, country="PL", lifetime_value=5000, tags=["vip"]), segments, NOW).state
    assert state is not None and state.members == {"pl", "vip"}
    gone = apply_change(state, Change("delete", "contact", "c1", 2, {}), segments, NOW)
    assert gone.state is not None and gone.state.deleted and gone.state.members == set()
    assert {(t.event_type, t.segment_id, t.cause) for t in gone.transitions} == {(EXITED, "pl", "delete"), (EXITED, "vip", "delete")}
    assert apply_change(gone.state, upsert(1, country="PL"), segments, NOW).state is None
    reborn = apply_change(gone.state, upsert(3, tags=["vip"]), segments, NOW)
    assert reborn.state is not None and reborn.state.fields == {"tags": ["vip"]} and reborn.state.members == {"vip"}


def test_backfill_evaluates_new_segments_and_drops_removed_ones() -> None:
    reg = registry(pl=PL_HIGH)
    state = RecordState(7, {"tags": ["vip"], "country": "PL", "lifetime_value": 2000}, {"pl"})
    reg.apply({"type": "segment.defined", "workspace": "acme",
               "data": {"id": "vip", "object_type": "contact", "name": "vip", "version": 9, "rule": VIP}})
    transitions = backfill(state, {"vip"}, reg.segment_set("acme", "contact"), NOW)
    assert [(t.event_type, t.segment_id, t.segment_version, t.record_version, t.cause) for t in transitions] == [
        (ENTERED, "vip", 9, 7, "backfill")]
    reg.apply({"type": "segment.removed", "workspace": "acme", "data": {"id": "pl", "object_type": "contact", "version": 10}})
    assert backfill(state, set(), reg.segment_set("acme", "contact"), NOW) == [] and state.members == {"vip"}


def test_state_round_trips_through_bytes() -> None:
    state = RecordState(3, {"country": "PL", "tags": ["a"]}, {"x", "y"})
    assert RecordState.from_bytes(state.to_bytes()) == state


def test_imports_add_and_remove_static_members_with_distinct_transitions() -> None:
    from engine.membership import apply_import

    none = registry().segment_set("acme", "contact")
    first = apply_import(None, "vip", 4, True, "m1", none, NOW)
    assert first.state is not None and first.state.version == 0 and first.state.members == {"vip"}
    assert [(t.event_type, t.cause, t.nonce) for t in first.transitions] == [(ENTERED, "import", "m1")]
    assert apply_import(first.state, "vip", 4, True, "m2", none, NOW).transitions == []  # already a member
    removed = apply_import(first.state, "vip", 4, False, "m3", none, NOW)
    assert removed.state is not None and removed.state.members == set() and removed.transitions[0].event_type == EXITED
    # A real change (version >= 1) still applies after an import created the record.
    segments = registry(pl=PL_HIGH).segment_set("acme", "contact")
    later = apply_change(first.state, upsert(1, country="PL", lifetime_value=5000), segments, NOW)
    assert later.state is not None and later.state.members == {"pl"}  # "vip" is not defined in this registry
    tombstone = RecordState(3, {}, set(), deleted=True)
    assert apply_import(tombstone, "vip", 4, True, "m4", none, NOW).state is None


def test_the_registry_remembers_a_removal_between_two_definitions() -> None:
    """A partition that applied version 1 and was away while the segment was removed (2) and re-created (3)
    must be told, though the latest stamp alone ([3, defined]) looks like an ordinary edit."""
    reg = registry(pl=PL_HIGH)
    key = "acme/contact/pl"
    assert not reg.recreated_since(key, [1, False])
    reg.apply({"type": "segment.removed", "workspace": "acme", "data": {"id": "pl", "object_type": "contact", "version": 2}})
    reg.apply({"type": "segment.defined", "workspace": "acme",
               "data": {"id": "pl", "object_type": "contact", "name": "pl", "version": 3, "rule": PL_HIGH}})
    assert reg.recreated_since(key, [1, False])
    assert not reg.recreated_since(key, [2, True])  # it applied the removal itself
    assert not reg.recreated_since(key, [3, False])
    assert not reg.recreated_since(key, None)  # never synced: a plain backfill
