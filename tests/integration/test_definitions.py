"""Segment definitions as a stream: a new or edited rule is backfilled over existing records and only the
difference is emitted; removal emits one segment.deleted and touches no record; inactive segments freeze."""
from __future__ import annotations

import random
import urllib.request
from typing import Any

import orjson

from engine.sample_data import contact_changes
from tests.conftest import Harness
from tests.oracle import Oracle, fold_events
from tests.reliability.workload import metric_value

BIG_SPENDERS = {"combinator": "and", "rules": [{"field": "lifetime_value", "operator": ">=", "value": 2500}]}
GERMANS = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "DE"}]}


def define(harness: Harness, segment_id: str, rule: dict[str, Any], version: int, status: str = "active") -> None:
    harness.publisher.define_segment(
        "acme", {"id": segment_id, "object_type": "contact", "name": segment_id, "rule": rule, "version": version, "status": status}
    )
    harness.publisher.flush()


def segment_version(harness: Harness, segment_id: str) -> int | None:
    """The version the (first) worker's registry holds, read over HTTP with the sample admin token."""
    url = f"http://127.0.0.1:{harness.workers[0].web_port}/v1/workspaces/acme/segments/{segment_id}"
    request = urllib.request.Request(url, headers={"Authorization": "Bearer acme-admin-token"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(orjson.loads(response.read())["version"])
    except OSError:
        return None


def test_backfill_edit_remove_and_inactive(harness: Harness) -> None:
    rules = harness.define_fixture_segments()
    changes = list(contact_changes(random.Random(5), 800, records=200))
    harness.start_worker()
    for change in changes:
        harness.publisher.publish_change("acme", change)
    harness.publisher.flush()
    catalog = harness.catalog()

    def members(events: list[dict[str, Any]], live: dict[str, Any]) -> set[tuple[str, str]]:
        return {m for m in fold_events(events) if m[1] in live}

    def settle(live: dict[str, Any], all_changes: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        expected = Oracle(catalog, live).apply_all(all_changes).membership()
        harness.wait_for(lambda: members(harness.events(), live) == expected, what=what)
        return harness.events()

    before = settle(dict(rules), changes, "initial membership")
    scanned_before = metric_value(harness.workers[0], "segment_engine_backfill_records_total", {}) or 0.0

    # A new segment is backfilled over every stored record; its events say so, and so does the progress
    # counter operators watch.
    define(harness, "big-spenders", BIG_SPENDERS, version=1)
    live = dict(rules, **{"big-spenders": BIG_SPENDERS})
    after = settle(live, changes, "backfill of a new segment")
    new_events = [e for e in after if e not in before]
    assert new_events and all(e["data"]["segment_id"] == "big-spenders" for e in new_events)
    assert all(e["data"]["cause"] == "backfill" and e["type"] == "segment.entered" for e in new_events)
    scanned = metric_value(harness.workers[0], "segment_engine_backfill_records_total", {})
    assert scanned is not None and scanned - scanned_before == len({c["id"] for c in changes})

    # Editing a rule emits only the difference, under the new segment version.
    define(harness, "big-spenders", GERMANS, version=2)
    live["big-spenders"] = GERMANS
    edited = settle(live, changes, "backfill of an edited segment")
    v2 = [e for e in edited if e["data"].get("segment_id") == "big-spenders" and e["data"].get("segment_version") == 2]
    assert v2 and {e["type"] for e in v2} == {"segment.entered", "segment.exited"}

    # Removal: one segment.deleted event, no per-record exits; later changes ignore the segment.
    harness.publisher.remove_segment("acme", "contact", "warm-leads")  # version: now, in ms
    harness.publisher.flush()
    harness.wait_for(lambda: any(e["type"] == "segment.deleted" for e in harness.events()), what="segment.deleted")
    del live["warm-leads"]
    more = list(contact_changes(random.Random(6), 300, records=200))
    more = [dict(c, version=c["version"] + 1000) for c in more]
    for change in more:
        harness.publisher.publish_change("acme", change)
    harness.publisher.flush()
    final = settle(live, changes + more, "membership after removal")
    deleted = [e for e in final if e["type"] == "segment.deleted"]
    assert len({e["id"] for e in deleted}) == 1 and deleted[0]["data"]["segment_id"] == "warm-leads"
    # Changes published after the removal was announced never produce warm-leads events.
    assert not [e for e in final if e["data"].get("segment_id") == "warm-leads"
                and e["type"] != "segment.deleted" and e["data"]["record_version"] > 1000]

    # Re-created under the same id: it starts empty and fills by backfill, from scratch.
    harness.publisher.define_segment("acme", {"id": "warm-leads", "object_type": "contact", "name": "again", "rule": GERMANS})
    harness.publisher.flush()
    live["warm-leads"] = GERMANS
    settle(live, changes + more, "re-created segment")

    # Inactive: members frozen, nothing emitted; reactivation catches up with the difference.
    define(harness, "big-spenders", GERMANS, version=4, status="inactive")
    harness.wait_for(lambda: segment_version(harness, "big-spenders") == 4, what="inactive version applied")
    frozen = {m for m in fold_events(harness.events()) if m[1] == "big-spenders"}
    flip = [{"op": "upsert", "object_type": "contact", "id": rid, "version": 10**6, "fields": {"country": "PL"}}
            for rid, sid in sorted(frozen)[:5]]
    for change in flip:
        harness.publisher.publish_change("acme", change)
    harness.publisher.flush()
    without = {k: v for k, v in live.items() if k != "big-spenders"}
    settle(without, changes + more + flip, "other segments see the flip")
    assert {m for m in fold_events(harness.events()) if m[1] == "big-spenders"} == frozen
    define(harness, "big-spenders", GERMANS, version=5, status="active")
    settle(live, changes + more + flip, "reactivated segment caught up")


def test_an_invalid_definition_is_dead_lettered_and_the_rest_still_apply(harness: Harness) -> None:
    from engine.envelope import encode, envelope

    bad_rule = {"combinator": "and", "rules": [{"field": "lifetime_value", "operator": "beginsWith", "value": "9"}]}
    bad = envelope("segment.defined", {"id": "broken", "object_type": "contact", "name": "broken", "version": 1,
                                       "rule": bad_rule}, workspace="acme")
    harness.publisher.producer.send(harness.publisher.definitions_topic, key=b"acme/contact/broken", value=encode(bad))
    define(harness, "big-spenders", BIG_SPENDERS, version=1)
    harness.start_worker()
    changes = list(contact_changes(random.Random(9), 200, records=50))
    for change in changes:
        harness.publisher.publish_change("acme", change)
    harness.publisher.flush()
    expected = Oracle(harness.catalog(), {"big-spenders": BIG_SPENDERS}).apply_all(changes).membership()
    harness.wait_for(lambda: fold_events(harness.events()) == expected, what="valid segment applied")
    import topics

    letters = harness.wait_for(lambda: harness.read_topic(topics.DEAD_LETTERS), what="dead letter")
    assert letters[0]["data"]["code"] == "invalid_rule"
    assert "lifetime_value" in letters[0]["data"]["reason"] and "beginsWith" in letters[0]["data"]["reason"]


def test_a_recalculation_interval_republishes_the_segment_when_it_passes(harness: Harness) -> None:
    """The batch-parity safety net: a segment last (re)calculated longer ago than its interval gets a new
    version, so every partition backfills it; one that is not due keeps its version."""
    import time

    now = int(time.time() * 1000)
    for segment_id, version in (("stale", now - 2 * 60_000), ("fresh", now)):
        harness.publisher.define_segment("acme", {
            "id": segment_id, "object_type": "contact", "name": segment_id, "rule": GERMANS, "version": version,
            "recalculation_interval_minutes": 1})
    harness.publisher.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "r1", "version": 1,
                                              "fields": {"country": "DE"}})
    harness.publisher.flush()
    harness.start_worker()
    harness.wait_for(lambda: (segment_version(harness, "stale") or 0) > now, timeout=40,
                     what="the stale segment to be republished")
    assert segment_version(harness, "fresh") == now
    assert fold_events(harness.events()) == {("r1", "stale"), ("r1", "fresh")}
