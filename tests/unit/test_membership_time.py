"""Time and behaviour in the membership fold: relative dates evaluated at `now`, the record's `due`
instant, apply_time at (and not before) that instant, behavioural events with dedupe, windows that
expire and where-filtered streams."""
from __future__ import annotations

from typing import Any

from engine.membership import (
    ENTERED,
    EXITED,
    Change,
    Event,
    Outcome,
    RecordState,
    apply_change,
    apply_event,
    apply_import,
    apply_time,
    backfill,
)
from engine.registry import SegmentRegistry, SegmentSet
from engine.rules import catalog_for
from engine.workspaces import Workspaces

NOW = 1_790_000_000_000  # not on a minute boundary (20 s into its minute), on purpose
MINUTE = 60_000
DAY = 86_400_000


def rule(*conditions: dict[str, Any], combinator: str = "and") -> dict[str, Any]:
    return {"combinator": combinator, "rules": list(conditions)}


OLD = rule({"field": "created_at", "operator": "moreThanAgo", "value": "30 days"})
RECENT = rule({"field": "last_contact_at", "operator": "withinLast", "value": "7 days"})
UPCOMING = rule({"field": "last_contact_at", "operator": "withinNext", "value": "7 days"})
PL = rule({"field": "country", "operator": "=", "value": "PL"})
UNTAGGED = rule({"field": "tags", "operator": "null"})
BUYER = rule({"field": "events.purchase.count", "operator": ">=", "value": 1})
LOGGED_IN = rule({"field": "events.login.count", "operator": ">=", "value": 1})
BOUGHT_30D = rule({"field": "events.purchase.count", "operator": ">=", "value": 1, "window": "30 days"})
ACTIVE_7D = rule({"field": "events.login.last_seen", "operator": "withinLast", "value": "7 days"})
EUR_BUYER = rule({"field": "events.purchase.count", "operator": ">=", "value": 2, "where": {"currency": "EUR"}})
HIGH_VALUE = {"combinator": "or", "rules": [
    {"field": "events.purchase.count", "operator": ">=", "value": 2, "window": "30 days"},
    {"field": "events.purchase.sum.amount", "operator": ">=", "value": 1000, "window": "30 days"},
]}


def registry(**rules: dict[str, Any]) -> SegmentRegistry:
    reg = SegmentRegistry(Workspaces({("acme", "contact"): catalog_for("contact")}))
    for version, (sid, r) in enumerate(rules.items(), start=1):
        define(reg, sid, r, version)
    return reg


def define(reg: SegmentRegistry, sid: str, r: dict[str, Any], version: int) -> None:
    reg.apply({"type": "segment.defined", "workspace": "acme",
               "data": {"id": sid, "object_type": "contact", "name": sid, "version": version, "rule": r}})


def segments_of(**rules: dict[str, Any]) -> SegmentSet:
    return registry(**rules).segment_set("acme", "contact")


def upsert(version: int, **fields: Any) -> Change:
    return Change("upsert", "contact", "c1", version, fields)


def event(eid: str, name: str, at: int, **properties: Any) -> Event:
    return Event(eid, "contact", "c1", name, at, properties)


def flips(transitions: list[Any]) -> list[tuple[str, str, str, str]]:
    return [(t.event_type, t.segment_id, t.cause, t.nonce) for t in transitions]


def window_exit(at: int, days: int) -> int:
    """When an event at `at` leaves a window of `days` (minute resolution, see activity.py)."""
    return (at // MINUTE + days * 1_440) * MINUTE


# ---- relative dates ----------------------------------------------------------------------------


def test_more_than_ago_enters_by_apply_time_exactly_one_ms_after_the_duration() -> None:
    segments = segments_of(old=OLD)
    created = NOW - 10 * DAY
    first = apply_change(None, upsert(1, created_at=created), segments, NOW)
    assert first.state is not None and first.transitions == [] and first.state.members == set()
    due = created + 30 * DAY + 1
    assert first.state.due == due
    state = first.state
    assert apply_time(state, segments, due - 1) == []  # exactly 30 days is not "more than" 30 days ago
    assert state.members == set() and state.due == due
    assert flips(apply_time(state, segments, due)) == [(ENTERED, "old", "time", f"t{due}")]
    assert state.members == {"old"}
    assert state.due is None  # nothing can flip it back as time passes


def test_within_last_is_evaluated_at_now_and_exits_at_the_end_of_the_window() -> None:
    segments = segments_of(recent=RECENT)
    contacted = NOW - DAY
    first = apply_change(None, upsert(1, last_contact_at=contacted), segments, NOW)
    assert first.state is not None
    assert flips(first.transitions) == [(ENTERED, "recent", "change", "")]
    state = first.state
    end = contacted + 7 * DAY + 1
    assert state.due == end
    assert apply_time(state, segments, end - 1) == [] and state.members == {"recent"}
    assert flips(apply_time(state, segments, end)) == [(EXITED, "recent", "time", f"t{end}")]
    assert state.members == set() and state.due is None


def test_within_next_due_moves_from_one_boundary_to_the_next() -> None:
    segments = segments_of(upcoming=UPCOMING)
    call = NOW + 10 * DAY
    state = apply_change(None, upsert(1, last_contact_at=call), segments, NOW).state
    assert state is not None and state.members == set()
    assert state.due == call - 7 * DAY
    assert flips(apply_time(state, segments, call - 7 * DAY)) == [(ENTERED, "upcoming", "time", f"t{call - 7 * DAY}")]
    assert state.due == call + 1
    assert apply_time(state, segments, call) == [] and state.members == {"upcoming"}  # the instant itself is inside
    assert flips(apply_time(state, segments, call + 1)) == [(EXITED, "upcoming", "time", f"t{call + 1}")]
    assert state.due is None


def test_a_change_no_time_rule_reads_keeps_due_and_a_change_to_the_date_moves_it() -> None:
    segments = segments_of(old=OLD, pl=PL)
    created = NOW - 10 * DAY
    state = apply_change(None, upsert(1, created_at=created, country="DE"), segments, NOW).state
    assert state is not None and state.due == created + 30 * DAY + 1
    later = NOW + DAY
    moved = apply_change(state, upsert(2, country="PL"), segments, later)
    assert moved.state is not None
    assert flips(moved.transitions) == [(ENTERED, "pl", "change", "")]
    assert moved.state.due == created + 30 * DAY + 1  # unchanged
    newer = later + 1_000
    redated = apply_change(moved.state, upsert(3, created_at=NOW - 5 * DAY), segments, newer)
    assert redated.state is not None and redated.transitions == []
    assert redated.state.due == NOW - 5 * DAY + 30 * DAY + 1
    backdated = apply_change(redated.state, upsert(4, created_at=NOW - 40 * DAY), segments, newer)
    assert backdated.state is not None
    assert flips(backdated.transitions) == [(ENTERED, "old", "change", "")]  # at once, not at a tick
    assert backdated.state.due is None


def test_a_change_after_due_also_re_evaluates_the_time_segments() -> None:
    segments = segments_of(old=OLD, pl=PL)
    created = NOW - 10 * DAY
    state = apply_change(None, upsert(1, created_at=created, country="DE"), segments, NOW).state
    assert state is not None
    due = created + 30 * DAY + 1
    assert state.due == due
    # The tick has not run yet, but the change arrives after the due instant: the time segment catches up.
    late = apply_change(state, upsert(2, country="PL"), segments, due + 5 * MINUTE)
    assert late.state is not None
    assert sorted(flips(late.transitions)) == [(ENTERED, "old", "change", ""), (ENTERED, "pl", "change", "")]
    assert late.state.members == {"old", "pl"} and late.state.due is None


def test_an_event_after_due_also_re_evaluates_the_time_segments() -> None:
    segments = segments_of(old=OLD, buyer=BUYER)
    created = NOW - 10 * DAY
    state = apply_change(None, upsert(1, created_at=created), segments, NOW).state
    assert state is not None
    due = created + 30 * DAY + 1
    outcome = apply_event(state, event("e1", "purchase", due + MINUTE), segments, due + MINUTE)
    assert sorted(flips(outcome.transitions)) == [(ENTERED, "buyer", "event", "e1"), (ENTERED, "old", "event", "e1")]
    assert outcome.state is not None and outcome.state.due is None


def test_delete_clears_due_and_time_no_longer_touches_the_record() -> None:
    segments = segments_of(old=OLD)
    created = NOW - 10 * DAY
    state = apply_change(None, upsert(1, created_at=created), segments, NOW).state
    assert state is not None and state.due is not None
    gone = apply_change(state, Change("delete", "contact", "c1", 2, {}), segments, NOW)
    assert gone.state is not None and gone.state.deleted and gone.state.due is None
    assert apply_time(gone.state, segments, created + 31 * DAY) == [] and gone.state.members == set()


# ---- records first known from events or imports ------------------------------------------------


def test_an_event_for_an_unseen_record_creates_it_at_version_0() -> None:
    segments = segments_of(buyer=BUYER, pl=PL)
    outcome = apply_event(None, event("e1", "purchase", NOW, amount=30), segments, NOW)
    assert outcome.state is not None
    assert (outcome.state.version, outcome.state.fields, outcome.state.members) == (0, {}, {"buyer"})
    assert [(t.event_type, t.segment_id, t.record_version, t.cause, t.nonce) for t in outcome.transitions] == [
        (ENTERED, "buyer", 0, "event", "e1")]


def test_first_change_of_a_record_known_from_events_evaluates_every_segment() -> None:
    segments = segments_of(buyer=BUYER, pl=PL, untagged=UNTAGGED, old=OLD)
    state = apply_event(None, event("e1", "purchase", NOW), segments, NOW).state
    assert state is not None and state.members == {"buyer"}
    created = NOW - 10 * DAY
    first = apply_change(state, upsert(1, country="PL", created_at=created), segments, NOW + MINUTE)
    assert first.state is not None
    # `untagged` reads no field of this change: it is evaluated because the record's first change sees all.
    assert sorted(flips(first.transitions)) == [(ENTERED, "pl", "change", ""), (ENTERED, "untagged", "change", "")]
    assert first.state.members == {"buyer", "pl", "untagged"}
    assert first.state.activity["purchase"]["c"] == 1  # the activity is kept
    assert first.state.due == created + 30 * DAY + 1  # and the time boundary is computed


def test_first_change_of_a_record_known_from_an_import_evaluates_every_segment() -> None:
    reg = registry(untagged=UNTAGGED, old=OLD)
    reg.apply({"type": "segment.defined", "workspace": "acme",
               "data": {"id": "vip", "object_type": "contact", "name": "vip", "version": 3, "kind": "static"}})
    segments = reg.segment_set("acme", "contact")
    imported = apply_import(None, "vip", 3, True, "m1", segments, NOW)
    assert imported.state is not None and imported.state.version == 0 and imported.state.due is None
    first = apply_change(imported.state, upsert(1, created_at=NOW - 40 * DAY), segments, NOW)
    assert first.state is not None
    assert sorted(flips(first.transitions)) == [(ENTERED, "old", "change", ""), (ENTERED, "untagged", "change", "")]
    assert first.state.members == {"vip", "old", "untagged"}


# ---- behavioural events ------------------------------------------------------------------------


def test_a_duplicate_event_id_is_ignored_even_after_a_change() -> None:
    segments = segments_of(twice=rule({"field": "events.purchase.count", "operator": ">=", "value": 2}), pl=PL)
    state = apply_event(None, event("p1", "purchase", NOW), segments, NOW).state
    assert state is not None
    assert apply_event(state, event("p1", "purchase", NOW), segments, NOW + 1) == Outcome(None, [])
    changed = apply_change(state, upsert(1, country="PL"), segments, NOW + 2).state
    assert changed is not None
    assert apply_event(changed, event("p1", "purchase", NOW), segments, NOW + 3) == Outcome(None, [])
    assert changed.activity["purchase"]["c"] == 1 and "twice" not in changed.members
    second = apply_event(changed, event("p2", "purchase", NOW + 4), segments, NOW + 4)
    assert flips(second.transitions) == [(ENTERED, "twice", "event", "p2")]


def test_events_for_deleted_records_are_ignored() -> None:
    segments = segments_of(buyer=BUYER)
    tombstone = RecordState(3, {}, set(), deleted=True)
    assert apply_event(tombstone, event("e1", "purchase", NOW), segments, NOW) == Outcome(None, [])
    state = apply_event(None, event("e1", "purchase", NOW), segments, NOW).state
    gone = apply_change(state, Change("delete", "contact", "c1", 1, {}), segments, NOW)
    assert flips(gone.transitions) == [(EXITED, "buyer", "delete", "")]
    assert apply_event(gone.state, event("e2", "purchase", NOW), segments, NOW) == Outcome(None, [])


def test_an_event_re_evaluates_only_segments_that_read_it() -> None:
    segments = segments_of(buyer=BUYER, logged_in=LOGGED_IN)
    # Membership of `logged_in` is deliberately stale: a purchase may not touch it.
    state = RecordState(1, {}, {"logged_in"})
    outcome = apply_event(state, event("e1", "purchase", NOW), segments, NOW)
    assert outcome.state is not None and outcome.state.members == {"logged_in", "buyer"}
    assert flips(outcome.transitions) == [(ENTERED, "buyer", "event", "e1")]


def test_where_filter_counts_only_matching_events_case_insensitively() -> None:
    segments = segments_of(eur_buyer=EUR_BUYER, buyer=BUYER)
    first = apply_event(None, event("e1", "purchase", NOW, currency="EUR", amount=10), segments, NOW)
    assert flips(first.transitions) == [(ENTERED, "buyer", "event", "e1")]
    usd = apply_event(first.state, event("e2", "purchase", NOW + 1, currency="USD"), segments, NOW + 1)
    assert usd.transitions == []  # one EUR purchase so far: still below 2
    no_currency = apply_event(usd.state, event("e3", "purchase", NOW + 2), segments, NOW + 2)
    assert no_currency.transitions == []
    eur = apply_event(no_currency.state, event("e4", "purchase", NOW + 3, currency="eur"), segments, NOW + 3)
    assert flips(eur.transitions) == [(ENTERED, "eur_buyer", "event", "e4")]
    assert eur.state is not None and eur.state.activity["purchase"]["c"] == 4


def test_where_filter_counts_events_from_when_a_segment_uses_it() -> None:
    reg = registry(buyer=BUYER)
    before = apply_event(None, event("e1", "purchase", NOW, currency="EUR"), reg.segment_set("acme", "contact"), NOW)
    state = before.state
    assert state is not None
    define(reg, "eur_once", rule({"field": "events.purchase.count", "operator": ">=", "value": 1,
                                  "where": {"currency": "EUR"}}), 2)
    segments = reg.segment_set("acme", "contact")
    # By design the EUR purchase made before a segment filtered on it is not in the filtered stream.
    assert backfill(state, {"eur_once"}, segments, NOW + MINUTE) == []
    after = apply_event(state, event("e2", "purchase", NOW + 2 * MINUTE, currency="EUR"), segments, NOW + 2 * MINUTE)
    assert flips(after.transitions) == [(ENTERED, "eur_once", "event", "e2")]


# ---- windows -----------------------------------------------------------------------------------


def test_high_value_customer_enters_on_the_second_purchase_and_exits_exactly_when_the_window_expires() -> None:
    segments = segments_of(high_value=HIGH_VALUE)
    first_at = NOW
    first = apply_event(None, event("p1", "purchase", first_at, amount=120), segments, first_at)
    assert first.state is not None and first.transitions == []
    assert first.state.due == window_exit(first_at, 30)
    second_at = NOW + 5 * DAY
    second = apply_event(first.state, event("p2", "purchase", second_at, amount=80), segments, second_at)
    assert second.state is not None
    assert [(t.event_type, t.segment_id, t.record_version, t.cause, t.nonce) for t in second.transitions] == [
        (ENTERED, "high_value", 0, "event", "p2")]
    state = second.state
    due = window_exit(first_at, 30)  # when the first purchase's minute leaves the 30-day window
    assert state.due == due
    assert apply_time(state, segments, due - 1) == []  # one ms earlier: both purchases still count
    assert state.members == {"high_value"} and state.due == due
    assert flips(apply_time(state, segments, due)) == [(EXITED, "high_value", "time", f"t{due}")]
    assert state.members == set()
    assert state.due == window_exit(second_at, 30)  # the second purchase can still leave the window
    assert apply_time(state, segments, state.due) == [] and state.due is None


def test_high_value_customer_enters_on_one_large_purchase() -> None:
    segments = segments_of(high_value=HIGH_VALUE)
    outcome = apply_event(None, event("p1", "purchase", NOW, amount=1_200, currency="EUR"), segments, NOW)
    assert flips(outcome.transitions) == [(ENTERED, "high_value", "event", "p1")]
    state = outcome.state
    assert state is not None and state.due == window_exit(NOW, 30)
    assert flips(apply_time(state, segments, state.due)) == [(EXITED, "high_value", "time", f"t{window_exit(NOW, 30)}")]


def test_a_late_event_counts_in_all_time_figures_but_not_in_a_window_it_has_left() -> None:
    segments = segments_of(buyer=BUYER, bought_30d=BOUGHT_30D)
    late = apply_event(None, event("old", "purchase", NOW - 31 * DAY), segments, NOW)
    assert flips(late.transitions) == [(ENTERED, "buyer", "event", "old")]
    assert late.state is not None and late.state.due is None  # nothing left to expire
    recent_at = NOW - 29 * DAY
    recent = apply_event(late.state, event("new", "purchase", recent_at), segments, NOW)
    assert flips(recent.transitions) == [(ENTERED, "bought_30d", "event", "new")]
    assert recent.state is not None and recent.state.due == window_exit(recent_at, 30)


def test_an_event_from_a_later_minute_counts_in_a_window_from_its_minute() -> None:
    segments = segments_of(bought_30d=BOUGHT_30D)
    at = NOW + 10 * MINUTE  # a client clock ahead of the engine's
    outcome = apply_event(None, event("e1", "purchase", at), segments, NOW)
    state = outcome.state
    assert state is not None and outcome.transitions == []
    start = at // MINUTE * MINUTE
    assert state.due == start
    assert apply_time(state, segments, start - 1) == []
    assert flips(apply_time(state, segments, start)) == [(ENTERED, "bought_30d", "time", f"t{start}")]
    assert state.due == window_exit(at, 30)


def test_a_new_login_pushes_back_the_exit_from_an_active_in_last_7_days_segment() -> None:
    segments = segments_of(active=ACTIVE_7D)
    first = apply_event(None, event("l1", "login", NOW), segments, NOW)
    assert flips(first.transitions) == [(ENTERED, "active", "event", "l1")]
    assert first.state is not None and first.state.due == NOW + 7 * DAY + 1
    again_at = NOW + 3 * DAY
    again = apply_event(first.state, event("l2", "login", again_at), segments, again_at)
    assert again.transitions == []
    state = again.state
    assert state is not None and state.due == again_at + 7 * DAY + 1
    assert apply_time(state, segments, NOW + 7 * DAY + 1) == []  # the first login's expiry no longer matters
    assert flips(apply_time(state, segments, again_at + 7 * DAY + 1)) == [
        (EXITED, "active", "time", f"t{again_at + 7 * DAY + 1}")]
    assert state.due is None


# ---- backfill and persistence ------------------------------------------------------------------


def test_backfill_computes_due_for_new_changed_and_removed_time_segments() -> None:
    reg = registry(pl=PL)
    created = NOW - 10 * DAY
    state = apply_change(None, upsert(1, created_at=created, country="PL"), reg.segment_set("acme", "contact"), NOW).state
    assert state is not None and state.due is None  # no time rule yet
    define(reg, "old", OLD, 2)
    assert backfill(state, {"old"}, reg.segment_set("acme", "contact"), NOW) == []
    assert state.due == created + 30 * DAY + 1
    define(reg, "old", rule({"field": "created_at", "operator": "moreThanAgo", "value": "5 days"}), 3)
    assert flips(backfill(state, {"old"}, reg.segment_set("acme", "contact"), NOW)) == [(ENTERED, "old", "backfill", "")]
    assert state.due is None
    define(reg, "old", rule({"field": "created_at", "operator": "moreThanAgo", "value": "20 days"}), 4)
    assert flips(backfill(state, {"old"}, reg.segment_set("acme", "contact"), NOW)) == [(EXITED, "old", "backfill", "")]
    assert state.due == created + 20 * DAY + 1
    reg.apply({"type": "segment.removed", "workspace": "acme", "data": {"id": "old", "object_type": "contact", "version": 5}})
    assert backfill(state, set(), reg.segment_set("acme", "contact"), NOW) == []
    assert state.due is None and state.members == {"pl"}


def test_state_round_trips_due_activity_and_seen_and_keeps_working_after_loading() -> None:
    segments = segments_of(high_value=HIGH_VALUE)
    state = apply_event(None, event("p1", "purchase", NOW, amount=600.5), segments, NOW).state
    state = apply_event(state, event("p2", "purchase", NOW + DAY, amount=500), segments, NOW + DAY).state
    assert state is not None and state.due is not None and state.members == {"high_value"}
    loaded = RecordState.from_bytes(state.to_bytes())
    assert (loaded.version, loaded.fields, loaded.members, loaded.deleted) == (0, {}, {"high_value"}, False)
    assert loaded.due == state.due and loaded.activity == state.activity and loaded.seen == ["p1", "p2"]
    assert loaded.scheduled == state.due  # the store knows where the record's schedule entry is
    assert apply_event(loaded, event("p2", "purchase", NOW + DAY, amount=500), segments, NOW + DAY) == Outcome(None, [])
    due = loaded.due
    assert flips(apply_time(loaded, segments, due)) == [(EXITED, "high_value", "time", f"t{due}")]
    plain = RecordState(2, {"country": "PL"}, set())
    again = RecordState.from_bytes(plain.to_bytes())
    assert again == plain and again.due is None and again.scheduled is None
