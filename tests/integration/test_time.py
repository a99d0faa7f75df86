"""Time on the real broker with the manual clock: a record joins "created more than 30 days ago" at the
exact simulated instant its age crosses 30 days, with no record change, and a replacement worker (its
data directory lost) restores the schedule from the changelog and flips the next record on time."""
from __future__ import annotations

import dataclasses

from tests.conftest import Harness
from tests.oracle import fold_events

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
AGED = {"combinator": "and", "rules": [{"field": "created_at", "operator": "moreThanAgo", "value": "30 days"}]}


def entered(harness: Harness, record_id: str) -> list[dict]:
    """The record's entered events, a redelivered one (same id, after the kill) counted once."""
    unique = {e["id"]: e for e in harness.events() if e["type"] == "segment.entered" and e["data"]["record_id"] == record_id}
    return list(unique.values())


def test_created_more_than_30_days_ago_flips_at_the_exact_instant_across_a_restart(harness: Harness) -> None:
    harness.settings = dataclasses.replace(harness.settings, clock="manual")
    publisher = harness.publisher
    publisher.define_segment("acme", {"id": "aged", "object_type": "contact", "name": "Aged", "rule": AGED})
    publisher.set_clock(T0)
    created = {"c1": T0, "c2": T0 + DAY, "c3": T0 - 40 * DAY}
    for rid, at in created.items():
        publisher.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": rid, "version": 1,
                                          "fields": {"created_at": at, "country": "PL"}})
    publisher.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c4", "version": 1,
                                      "fields": {"country": "PL"}})  # no created_at: never ages
    publisher.flush()
    first = harness.start_worker("data-1")

    harness.wait_for(lambda: entered(harness, "c3"), what="c3 (created 40 days ago) to enter at once")
    assert entered(harness, "c3")[0]["data"]["cause"] == "change"

    # Exactly 30 days is not "more than 30 days": nothing flips. One ms later c1 does, with no change.
    publisher.set_clock(T0 + 30 * DAY)
    publisher.set_clock(T0 + 30 * DAY + 1)
    publisher.flush()
    [c1] = harness.wait_for(lambda: entered(harness, "c1"), what="c1 to enter when its age crosses 30 days")
    assert c1["data"]["cause"] == "time" and c1["data"]["at"] == T0 + 30 * DAY + 1
    assert entered(harness, "c2") == []

    # The worker dies with its data; a new one restores state and schedule from the changelog.
    first.kill()
    harness.start_worker("data-2")
    publisher.set_clock(T0 + 31 * DAY)  # c2 is exactly 30 days old: not yet
    publisher.set_clock(T0 + 31 * DAY + 1)
    publisher.flush()
    [c2] = harness.wait_for(lambda: entered(harness, "c2"), what="c2 to enter after the restart")
    assert c2["data"]["cause"] == "time" and c2["data"]["at"] == T0 + 31 * DAY + 1

    # A later change that makes the record younger leaves the segment at once; time brings it back.
    publisher.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c1", "version": 2,
                                      "fields": {"created_at": T0 + 10 * DAY}})
    publisher.flush()
    harness.wait_for(lambda: ("c1", "aged") not in fold_events(harness.events()), what="c1 to leave on the change")
    publisher.set_clock(T0 + 40 * DAY + 1)
    publisher.flush()
    harness.wait_for(lambda: len(entered(harness, "c1")) == 2, what="c1 to re-enter when time catches up")
    assert entered(harness, "c1")[1]["data"]["at"] == T0 + 40 * DAY + 1
    assert fold_events(harness.events()) == {("c1", "aged"), ("c2", "aged"), ("c3", "aged")}
    assert all(e["data"].get("record_id") != "c4" for e in harness.events())
