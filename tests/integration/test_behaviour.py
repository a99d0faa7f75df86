"""Behavioural aggregates on the real broker with the manual clock: the "High-value customer" segment
(>= 2 purchases OR total spend >= 1000 in the last 30 days) over a random purchase stream with late
(out-of-order) and duplicate events. At every checkpoint of simulated time, the membership folded from
the emitted events equals an oracle that recomputes every aggregate from the full event history."""
from __future__ import annotations

import dataclasses
import random
from typing import Any

import urllib.request

import orjson

from tests.conftest import FIXTURES, Harness
from tests.naive_eval import naive_matches
from tests.oracle import fold_events

DAY, HOUR = 86_400_000, 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HIGH_VALUE = {"combinator": "or", "rules": [
    {"field": "events.purchase.count", "operator": ">=", "value": 2, "window": "30 days"},
    {"field": "events.purchase.sum.amount", "operator": ">=", "value": 1000, "window": "30 days"},
]}
RECORDS = [f"c{i}" for i in range(16)]


def member_count(harness: Harness) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{harness.workers[0].web_port}/v1/workspaces/acme/segments/high-value/count",
        headers={"Authorization": "Bearer acme-admin"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(orjson.loads(response.read())["member_count"])


def test_high_value_customers_match_a_full_history_oracle_over_simulated_time(harness: Harness) -> None:
    harness.settings = dataclasses.replace(harness.settings, clock="manual", tokens_file=FIXTURES / "tokens.json")
    rng = random.Random(7)
    publisher = harness.publisher
    catalog = harness.catalog()
    publisher.define_segment("acme", {"id": "high-value", "object_type": "contact", "name": "High-value customer",
                                      "rule": HIGH_VALUE})
    publisher.set_clock(T0)
    publisher.flush()
    harness.start_worker()

    history: dict[str, list[dict[str, Any]]] = {rid: [] for rid in RECORDS}
    sent: list[dict[str, Any]] = []
    now = T0
    for step in range(14):
        now += rng.randrange(HOUR, 9 * DAY)
        batch: list[dict[str, Any]] = []
        for rid in rng.sample(RECORDS, 6):
            for _ in range(rng.choice((1, 1, 2))):
                at = now - rng.randrange(0, 6 * DAY)  # late: up to 6 days after it happened
                event = {"id": f"e{len(sent)}", "object_type": "contact", "record_id": rid, "name": "purchase",
                         "at": at, "properties": {"amount": rng.choice((80, 150, 400, 700, 950)), "currency": "EUR"}}
                sent.append(event)
                batch.append(event)
        batch += [dict(rng.choice(sent)) for _ in range(3)]  # duplicates: the same ids again
        rng.shuffle(batch)
        for e in batch:
            history[e["record_id"]].append(e)
        if step % 2:
            publisher.publish_events("acme", batch, batch_size=5)
        else:
            publisher.publish_events("acme", batch)
        publisher.set_clock(now)
        publisher.flush()

        expected = {(rid, "high-value") for rid in RECORDS
                    if naive_matches(HIGH_VALUE, {}, catalog, now=now, events=history[rid])}
        harness.wait_for(lambda: fold_events(harness.events()) == expected,
                         what=f"membership at checkpoint {step} (t0 + {(now - T0) / DAY:.2f} days) == oracle")
        # The segment's member count (kept per partition as memberships change, whichever topic changed
        # them: events here, ticks for expiries) agrees.
        harness.wait_for(lambda: member_count(harness) == len(expected), timeout=30,
                         what=f"member count at checkpoint {step}")

    # Let every window run out: everybody still in leaves, by time alone, with no event or change.
    now += 40 * DAY
    publisher.set_clock(now)
    publisher.flush()
    harness.wait_for(lambda: fold_events(harness.events()) == set(), what="every window to expire")
    exits = [e for e in harness.events() if e["type"] == "segment.exited"]
    assert exits and all(e["data"]["cause"] == "time" for e in exits)


def test_a_duplicate_purchase_is_counted_once(harness: Harness) -> None:
    harness.settings = dataclasses.replace(harness.settings, clock="manual")
    publisher = harness.publisher
    publisher.define_segment("acme", {"id": "high-value", "object_type": "contact", "name": "High-value customer",
                                      "rule": HIGH_VALUE})
    publisher.set_clock(T0)
    purchase = {"id": "p1", "object_type": "contact", "record_id": "d1", "name": "purchase", "at": T0 - HOUR,
                "properties": {"amount": 600}}
    publisher.publish_events("acme", [purchase, purchase])
    publisher.publish_events("acme", [dict(purchase, record_id="d2"), dict(purchase, id="p2", record_id="d2")])
    publisher.flush()
    harness.start_worker()
    harness.wait_for(lambda: fold_events(harness.events()) == {("d2", "high-value")}, what="d2 to enter")
    publisher.publish_events("acme", [dict(purchase, id="p3", properties={"amount": 400})])
    publisher.flush()
    harness.wait_for(lambda: ("d1", "high-value") in fold_events(harness.events()), what="d1 to enter on p3")
    entered = [e for e in harness.events() if e["type"] == "segment.entered" and e["data"]["record_id"] == "d1"]
    assert entered[0]["data"]["cause"] == "event"
