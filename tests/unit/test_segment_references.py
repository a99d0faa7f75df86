"""Segments that reference other segments (`segment memberOf/notMemberOf <id>`): evaluation order,
transitive flips within one call, imports into referenced static segments, refused cycles, unknown
references, who references whom, and removal of a referenced segment."""
from __future__ import annotations

from typing import Any

import pytest

from engine.membership import (
    ENTERED,
    EXITED,
    Change,
    Event,
    apply_change,
    apply_event,
    apply_import,
    apply_time,
    backfill,
)
from engine.registry import SegmentRegistry, SegmentSet, reference_problems, referrers
from engine.rules import InvalidRule, catalog_for, load_rule
from engine.workspaces import Workspaces

NOW = 1_790_000_000_000
DAY = 86_400_000
CATALOG = catalog_for("contact")


def rule(*conditions: dict[str, Any], combinator: str = "and") -> dict[str, Any]:
    return {"combinator": combinator, "rules": list(conditions)}


def member_of(sid: str) -> dict[str, Any]:
    return {"field": "segment", "operator": "memberOf", "value": sid}


def not_member_of(sid: str) -> dict[str, Any]:
    return {"field": "segment", "operator": "notMemberOf", "value": sid}


PL = rule({"field": "country", "operator": "=", "value": "PL"})
CUSTOMER = rule({"field": "status", "operator": "=", "value": "customer"})
STATIC = None  # a static segment: members come from imports


def registry(**rules: dict[str, Any] | None) -> SegmentRegistry:
    """Segments defined in the order given (version 1, 2, ...); a None rule defines a static segment."""
    reg = SegmentRegistry(Workspaces({("acme", "contact"): CATALOG}))
    for version, (sid, r) in enumerate(rules.items(), start=1):
        define(reg, sid, r, version)
    return reg


def define(reg: SegmentRegistry, sid: str, r: dict[str, Any] | None, version: int) -> None:
    data: dict[str, Any] = {"id": sid, "object_type": "contact", "name": sid, "version": version}
    if r is None:
        data["kind"] = "static"
    else:
        data["rule"] = r
    reg.apply({"type": "segment.defined", "workspace": "acme", "data": data})


def remove(reg: SegmentRegistry, sid: str, version: int) -> None:
    reg.apply({"type": "segment.removed", "workspace": "acme", "data": {"id": sid, "object_type": "contact",
                                                                         "version": version}})


def segments_of(reg: SegmentRegistry) -> SegmentSet:
    return reg.segment_set("acme", "contact")


def upsert(version: int, **fields: Any) -> Change:
    return Change("upsert", "contact", "c1", version, fields)


def flips(transitions: list[Any]) -> list[tuple[str, str, str, str]]:
    return [(t.event_type, t.segment_id, t.cause, t.nonce) for t in transitions]


def chain() -> SegmentRegistry:
    """a_top -> b_mid -> c_base (country = PL). Referrers are defined before what they reference, and
    their ids sort before it, so only the reference order can put c_base first."""
    return registry(a_top=rule(member_of("b_mid")), b_mid=rule(member_of("c_base")), c_base=PL)


# ---- evaluation order and transitive flips -----------------------------------------------------


def test_evaluation_ranks_referenced_segments_first() -> None:
    assert segments_of(chain()).rank == {"c_base": 0, "b_mid": 1, "a_top": 2}


def test_a_new_record_enters_a_chain_of_references_in_reference_order() -> None:
    segments = segments_of(chain())
    outcome = apply_change(None, upsert(1, country="PL"), segments, NOW)
    assert outcome.state is not None and outcome.state.members == {"a_top", "b_mid", "c_base"}
    assert [(t.event_type, t.segment_id, t.segment_version, t.record_version, t.cause) for t in outcome.transitions] == [
        (ENTERED, "c_base", 3, 1, "change"), (ENTERED, "b_mid", 2, 1, "change"), (ENTERED, "a_top", 1, 1, "change")]


def test_a_change_that_flips_the_base_flips_every_referrer_in_the_same_outcome() -> None:
    segments = segments_of(chain())
    state = apply_change(None, upsert(1, country="PL", city="Krakow"), segments, NOW).state
    unrelated = apply_change(state, upsert(2, city="Gdansk"), segments, NOW)
    assert unrelated.transitions == []
    left = apply_change(unrelated.state, upsert(3, country="DE"), segments, NOW)
    assert flips(left.transitions) == [(EXITED, "c_base", "change", ""), (EXITED, "b_mid", "change", ""),
                                       (EXITED, "a_top", "change", "")]
    assert left.state is not None and left.state.members == set()
    back = apply_change(left.state, upsert(4, country="pl"), segments, NOW)
    assert [t.segment_id for t in back.transitions] == ["c_base", "b_mid", "a_top"]
    assert {t.event_type for t in back.transitions} == {ENTERED}


def test_not_member_of_leaves_when_the_referenced_segment_is_entered() -> None:
    segments = segments_of(registry(customers=CUSTOMER, prospects=rule(not_member_of("customers"))))
    lead = apply_change(None, upsert(1, status="lead"), segments, NOW)
    assert flips(lead.transitions) == [(ENTERED, "prospects", "change", "")]
    won = apply_change(lead.state, upsert(2, status="customer"), segments, NOW)
    assert flips(won.transitions) == [(ENTERED, "customers", "change", ""), (EXITED, "prospects", "change", "")]


def test_a_segment_referencing_two_flipped_segments_is_evaluated_once_after_both() -> None:
    segments = segments_of(registry(
        both=rule(member_of("left"), member_of("right")),
        left=rule(member_of("base")),
        right=rule(member_of("base"), {"field": "lifetime_value", "operator": ">", "value": 100}),
        base=PL,
    ))
    outcome = apply_change(None, upsert(1, country="PL", lifetime_value=500), segments, NOW)
    order = [t.segment_id for t in outcome.transitions]
    assert order[0] == "base" and set(order[1:3]) == {"left", "right"} and order[3:] == ["both"]
    assert {t.event_type for t in outcome.transitions} == {ENTERED}


def test_a_field_change_re_evaluates_a_referrer_that_also_reads_the_field() -> None:
    # `pl_big` reads lifetime_value and references `pl`: a change to lifetime_value alone decides it.
    segments = segments_of(registry(pl=PL, pl_big=rule(member_of("pl"),
                                                       {"field": "lifetime_value", "operator": ">", "value": 1000})))
    state = apply_change(None, upsert(1, country="PL", lifetime_value=10), segments, NOW).state
    assert state is not None and state.members == {"pl"}
    grown = apply_change(state, upsert(2, lifetime_value=5000), segments, NOW)
    assert flips(grown.transitions) == [(ENTERED, "pl_big", "change", "")]


def test_time_flipping_a_referenced_segment_flips_its_referrers_with_cause_time() -> None:
    old = rule({"field": "created_at", "operator": "moreThanAgo", "value": "30 days"})
    segments = segments_of(registry(loyal_pl=rule(member_of("old"), {"field": "country", "operator": "=", "value": "PL"}),
                                    old=old))
    created = NOW - 10 * DAY
    state = apply_change(None, upsert(1, country="PL", created_at=created), segments, NOW).state
    assert state is not None and state.members == set()
    due = created + 30 * DAY + 1
    assert state.due == due
    assert flips(apply_time(state, segments, due)) == [(ENTERED, "old", "time", f"t{due}"),
                                                       (ENTERED, "loyal_pl", "time", f"t{due}")]


def test_an_event_flipping_a_referenced_segment_flips_its_referrers_with_the_event_id() -> None:
    segments = segments_of(registry(
        buyer_pl=rule(member_of("buyer"), {"field": "country", "operator": "=", "value": "PL"}),
        buyer=rule({"field": "events.purchase.count", "operator": ">=", "value": 1}),
    ))
    state = apply_change(None, upsert(1, country="PL"), segments, NOW).state
    outcome = apply_event(state, Event("ev-9", "contact", "c1", "purchase", NOW, {}), segments, NOW)
    assert flips(outcome.transitions) == [(ENTERED, "buyer", "event", "ev-9"), (ENTERED, "buyer_pl", "event", "ev-9")]


# ---- static segments referenced by dynamic ones ------------------------------------------------


def import_registry() -> SegmentRegistry:
    return registry(vip_list=STATIC,
                    vip_pl=rule(member_of("vip_list"), {"field": "country", "operator": "=", "value": "PL"}),
                    vip_pl_alert=rule(member_of("vip_pl")))


def test_an_import_into_a_static_segment_re_evaluates_its_referrers_transitively() -> None:
    segments = segments_of(import_registry())
    state = apply_change(None, upsert(1, country="PL"), segments, NOW).state
    assert state is not None and state.members == set()
    added = apply_import(state, "vip_list", 1, True, "imp-1", segments, NOW)
    assert [(t.event_type, t.segment_id, t.record_version, t.cause, t.nonce) for t in added.transitions] == [
        (ENTERED, "vip_list", 1, "import", "imp-1"), (ENTERED, "vip_pl", 1, "import", "imp-1"),
        (ENTERED, "vip_pl_alert", 1, "import", "imp-1")]
    removed = apply_import(added.state, "vip_list", 1, False, "imp-2", segments, NOW)
    assert flips(removed.transitions) == [(EXITED, "vip_list", "import", "imp-2"), (EXITED, "vip_pl", "import", "imp-2"),
                                          (EXITED, "vip_pl_alert", "import", "imp-2")]
    assert removed.state is not None and removed.state.members == set()


def test_an_import_that_does_not_satisfy_the_referrer_only_enters_the_static_segment() -> None:
    segments = segments_of(import_registry())
    state = apply_change(None, upsert(1, country="DE"), segments, NOW).state
    added = apply_import(state, "vip_list", 1, True, "imp-1", segments, NOW)
    assert flips(added.transitions) == [(ENTERED, "vip_list", "import", "imp-1")]
    moved = apply_change(added.state, upsert(2, country="PL"), segments, NOW)
    assert flips(moved.transitions) == [(ENTERED, "vip_pl", "change", ""), (ENTERED, "vip_pl_alert", "change", "")]


def test_a_record_imported_before_its_first_change_enters_referrers_on_that_change() -> None:
    segments = segments_of(import_registry())
    imported = apply_import(None, "vip_list", 1, True, "imp-1", segments, NOW)
    assert flips(imported.transitions) == [(ENTERED, "vip_list", "import", "imp-1")]  # no country yet
    first = apply_change(imported.state, upsert(1, country="PL"), segments, NOW)
    assert flips(first.transitions) == [(ENTERED, "vip_pl", "change", ""), (ENTERED, "vip_pl_alert", "change", "")]


# ---- cycles ------------------------------------------------------------------------------------


def cycle_refused(reg: SegmentRegistry, sid: str, r: dict[str, Any], version: int) -> str:
    with pytest.raises(InvalidRule) as caught:
        define(reg, sid, r, version)
    assert [p.code for p in caught.value.problems] == ["reference_cycle"]
    return caught.value.problems[0].message


def test_a_segment_referencing_itself_is_refused() -> None:
    reg = registry()
    message = cycle_refused(reg, "loop", rule(member_of("loop")), 1)
    assert "loop -> loop" in message
    assert reg.get("acme", "contact", "loop") is None and reg.generation == 0 and reg.stamps == {}


def test_two_segments_referencing_each_other_are_refused() -> None:
    reg = registry(x=rule(member_of("y")))
    assert "y -> x -> y" in cycle_refused(reg, "y", rule(member_of("x")), 2)
    assert reg.get("acme", "contact", "y") is None


def test_an_edit_that_closes_a_cycle_is_refused_and_the_old_definition_stays_in_effect() -> None:
    reg = chain()  # a_top -> b_mid -> c_base
    generation = reg.generation
    assert "c_base -> a_top -> b_mid -> c_base" in cycle_refused(
        reg, "c_base", rule(member_of("a_top"), combinator="or"), 9)
    assert reg.generation == generation and reg.get("acme", "contact", "c_base").version == 3  # type: ignore[union-attr]
    segments = segments_of(reg)
    assert [t.segment_id for t in apply_change(None, upsert(1, country="PL"), segments, NOW).transitions] == [
        "c_base", "b_mid", "a_top"]
    define(reg, "c_base", rule({"field": "country", "operator": "=", "value": "DE"}), 10)  # an acyclic edit is fine
    assert reg.get("acme", "contact", "c_base").version == 10  # type: ignore[union-attr]


# ---- reference problems and referrers ----------------------------------------------------------


def test_reference_problems_reports_unknown_segments_with_the_condition_path() -> None:
    segments = segments_of(registry(pl=PL))
    compiled = load_rule(rule({"field": "country", "operator": "=", "value": "PL"},
                              rule(member_of("pl"), not_member_of("ghost"), combinator="or"),
                              member_of("phantom")), CATALOG)
    problems = reference_problems(segments.segments, "new", compiled)
    assert [(p.code, p.path, p.field, p.operator) for p in problems] == [
        ("unknown_segment", "/rules/1/rules/1", "segment", "notMemberOf"),
        ("unknown_segment", "/rules/2", "segment", "memberOf")]
    assert "'ghost'" in problems[0].message and "'phantom'" in problems[1].message
    assert reference_problems(segments.segments, "new", load_rule(rule(member_of("pl")), CATALOG)) == []


def test_reference_problems_reports_a_cycle_before_saving() -> None:
    segments = segments_of(chain())
    problems = reference_problems(segments.segments, "c_base", load_rule(rule(member_of("a_top")), CATALOG))
    assert [p.code for p in problems] == ["reference_cycle"]
    assert reference_problems(segments.segments, "c_base", load_rule(rule(member_of("other")), CATALOG))[0].code == \
        "unknown_segment"


def test_referrers_lists_the_segments_that_reference_one_directly() -> None:
    segments = segments_of(registry(
        customers=CUSTOMER,
        prospects=rule(not_member_of("customers")),
        pl_customers=rule(member_of("customers"), {"field": "country", "operator": "=", "value": "PL"}),
        pl_customers_alert=rule(member_of("pl_customers")),
    )).segments
    assert referrers(segments, "customers") == ["pl_customers", "prospects"]
    assert referrers(segments, "pl_customers") == ["pl_customers_alert"]  # direct referrers only
    assert referrers(segments, "pl_customers_alert") == []
    assert referrers(segments, "nobody") == []


# ---- removal of a referenced segment -----------------------------------------------------------


def removal_registry() -> SegmentRegistry:
    return registry(pl=PL, pl_fans=rule(member_of("pl"), {"field": "lifetime_value", "operator": ">", "value": 100}),
                    not_pl=rule(not_member_of("pl")))


def test_after_removal_a_backfill_of_the_referrers_treats_the_removed_segment_as_not_a_member() -> None:
    reg = removal_registry()
    state = apply_change(None, upsert(1, country="PL", lifetime_value=500), segments_of(reg), NOW).state
    assert state is not None and state.members == {"pl", "pl_fans"}
    remove(reg, "pl", 9)
    segments = segments_of(reg)
    assert set(segments.dependents["pl"]) == {"pl_fans", "not_pl"} == set(referrers(segments.segments, "pl"))
    transitions = backfill(state, segments.dependents["pl"], segments, NOW)
    # No exit for the removed segment itself (a removal emits one segment.deleted, not per-record exits).
    assert sorted(flips(transitions)) == [(ENTERED, "not_pl", "backfill", ""), (EXITED, "pl_fans", "backfill", "")]
    assert state.members == {"not_pl"}


def test_after_removal_a_change_evaluates_referrers_without_the_removed_membership() -> None:
    reg = removal_registry()
    state = apply_change(None, upsert(1, country="PL", lifetime_value=50), segments_of(reg), NOW).state
    assert state is not None and state.members == {"pl"}
    remove(reg, "pl", 9)
    segments = segments_of(reg)
    grown = apply_change(state, upsert(2, lifetime_value=5000), segments, NOW)
    assert grown.state is not None and grown.transitions == [] and "pl" not in grown.state.members
    fresh = apply_change(None, Change("upsert", "contact", "c2", 1, {"country": "PL", "lifetime_value": 500}),
                         segments, NOW)
    assert flips(fresh.transitions) == [(ENTERED, "not_pl", "change", "")]


def test_after_removal_time_evaluates_referrers_without_the_removed_membership() -> None:
    reg = registry(pl=PL, old_pl=rule(member_of("pl"), {"field": "created_at", "operator": "moreThanAgo",
                                                          "value": "30 days"}))
    created = NOW - 10 * DAY
    state = apply_change(None, upsert(1, country="PL", created_at=created), segments_of(reg), NOW).state
    assert state is not None and state.members == {"pl"} and state.due == created + 30 * DAY + 1
    remove(reg, "pl", 9)
    assert apply_time(state, segments_of(reg), created + 30 * DAY + 1) == []
    assert state.members == set()


def test_after_removal_an_event_evaluates_referrers_without_the_removed_membership() -> None:
    reg = registry(pl=PL, pl_buyer=rule(member_of("pl"), {"field": "events.purchase.count", "operator": ">=",
                                                           "value": 1}))
    state = apply_change(None, upsert(1, country="PL"), segments_of(reg), NOW).state
    assert state is not None and state.members == {"pl"}
    remove(reg, "pl", 9)
    outcome = apply_event(state, Event("e1", "contact", "c1", "purchase", NOW, {}), segments_of(reg), NOW)
    assert outcome.transitions == []
    assert outcome.state is not None and outcome.state.members == set()


def test_after_removal_an_import_evaluates_referrers_without_the_removed_membership() -> None:
    reg = registry(pl=PL, vip=STATIC, vip_pl=rule(member_of("vip"), member_of("pl")))
    state = apply_change(None, upsert(1, country="PL"), segments_of(reg), NOW).state
    assert state is not None and state.members == {"pl"}
    remove(reg, "pl", 9)
    outcome = apply_import(state, "vip", 2, True, "imp-1", segments_of(reg), NOW)
    assert flips(outcome.transitions) == [(ENTERED, "vip", "import", "imp-1")]
    assert outcome.state is not None and outcome.state.members == {"vip"}


def test_a_referrer_of_a_segment_that_does_not_exist_never_matches() -> None:
    # The registry accepts it (definitions may arrive in any order); until `later` exists nobody is in it.
    reg = registry(needs_later=rule(member_of("later")), anti_later=rule(not_member_of("later")))
    outcome = apply_change(None, upsert(1, country="PL"), segments_of(reg), NOW)
    assert flips(outcome.transitions) == [(ENTERED, "anti_later", "change", "")]
    define(reg, "later", PL, 3)
    segments = segments_of(reg)
    state = outcome.state
    assert state is not None
    transitions = flips(backfill(state, {"later"} | segments.dependents["later"], segments, NOW))
    assert transitions[0] == (ENTERED, "later", "backfill", "")
    assert sorted(transitions[1:]) == [(ENTERED, "needs_later", "backfill", ""), (EXITED, "anti_later", "backfill", "")]
    assert state.members == {"later", "needs_later"}
