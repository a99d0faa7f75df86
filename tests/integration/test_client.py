"""engine.client against the real local broker: the batch helper's changes and events are all applied by a
real worker, and a broker that is gone (or was never there) makes publishing raise within a bounded
time instead of dropping messages silently."""
from __future__ import annotations

import random
import re
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

import topics
from engine.admin import ensure_topics
from engine.broker import LocalBroker, free_port
from engine.client import Publisher, PublishFailed, Versions
from engine.settings import Settings
from tests.conftest import FIXTURES, Harness
from tests.oracle import fold_events

POLES = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"}]}
BUYERS = {"combinator": "and", "rules": [{"field": "events.purchase.count", "operator": ">=", "value": 2}]}
# Short timeouts so a dead broker is reported in seconds (kafka-python defaults: 30 s to bootstrap, 60 s
# max_block_ms for metadata, 120 s delivery_timeout_ms).
FAST_FAIL = {"bootstrap_timeout_ms": 1500, "max_block_ms": 1500, "request_timeout_ms": 1000,
             "delivery_timeout_ms": 2500, "retry_backoff_ms": 100}


def metric(port: int, name: str, outcome: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(rf'^{name}{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_batch_helper_publishes_changes_and_events_that_the_engine_applies(harness: Harness) -> None:
    rng = random.Random(17)
    with Publisher(harness.settings, source="client-test", versions=Versions()) as publisher:
        publisher.define_segment("acme", {"id": "poles", "object_type": "contact", "name": "Poles", "rule": POLES})
        publisher.define_segment("acme", {"id": "buyers", "object_type": "contact", "name": "Buyers", "rule": BUYERS})
        publisher.flush(timeout=30)
        worker = harness.start_worker()

        country: dict[str, str] = {}
        purchases: dict[str, int] = {}
        deleted = {f"c{i}" for i in range(0, 80, 9)}
        with publisher.batch("acme", size=7, timeout=30) as batch:
            for _ in range(400):
                rid = f"c{rng.randrange(80)}"
                country[rid] = rng.choice(["PL", "DE", "US"])
                batch.upsert("contact", rid, {"country": country[rid], "lead_score": rng.randrange(100)})
                if rid not in deleted and rng.random() < 0.4:
                    purchases[rid] = purchases.get(rid, 0) + 1
                    batch.event("contact", rid, "purchase", datetime.now(timezone.utc), {"amount": 10},
                                id=f"o-{rid}-{purchases[rid]}")
            for rid in sorted(deleted & set(country)):
                batch.delete("contact", rid)  # after that record's upserts: versions only grow
            for i in range(3):  # records known from their events only
                for n in range(2):
                    batch.event("contact", f"e{i}", "purchase", int(time.time() * 1000), id=f"e{i}-{n}")
                    purchases[f"e{i}"] = purchases.get(f"e{i}", 0) + 1
        # Leaving the block sent the rest and flushed without PublishFailed.
        assert batch.messages > 2 * harness.settings.partitions, "full batches went out while filling"

    expected = ({(rid, "poles") for rid, c in country.items() if c == "PL" and rid not in deleted}
                | {(rid, "buyers") for rid, n in purchases.items() if n >= 2 and rid not in deleted})
    assert len(expected) > 20
    harness.wait_for(lambda: metric(worker.web_port, "segment_engine_changes_total", "applied") >= batch.changes
                     and metric(worker.web_port, "segment_engine_behaviour_events_total", "applied") >= batch.events,
                     timeout=30, what="every change and event applied")
    harness.wait_for(lambda: fold_events(harness.events()) == expected, timeout=20, what="membership == expected")
    assert metric(worker.web_port, "segment_engine_changes_total", "applied") == batch.changes
    assert metric(worker.web_port, "segment_engine_changes_total", "stale") == 0
    assert metric(worker.web_port, "segment_engine_behaviour_events_total", "applied") == batch.events
    assert harness.read_topic(topics.DEAD_LETTERS) == []


def test_flush_raises_when_the_broker_goes_away(tmp_path: Path) -> None:
    """The case kafka-python keeps quiet about: send() succeeds (metadata is cached), the broker is gone,
    the records expire, and producer.flush() returns normally."""
    with LocalBroker() as own:
        settings = Settings(broker=own.address, topic_prefix="gone-", partitions=2,
                            workspaces_file=FIXTURES / "workspaces.json")
        ensure_topics(settings)
        publisher = Publisher(settings, source="client-test", versions=Versions(), producer_config=FAST_FAIL)
        publisher.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c1", "fields": {}})
        publisher.flush()  # the broker is there: acknowledged
        assert own.process is not None
        own.process.kill()  # the broker crashes
        own.process.wait()
    started = time.monotonic()
    with pytest.raises(PublishFailed) as info:
        with publisher.batch("acme", size=3) as batch:
            for i in range(10):
                batch.upsert("contact", f"c{i}", {"country": "PL"})
    elapsed = time.monotonic() - started
    assert info.value.failed == info.value.total == batch.messages > 0
    assert "not delivered" in str(info.value) and info.value.first is not None
    assert elapsed < 15, f"took {elapsed:.1f}s"
    publisher.close(timeout=2)  # failures were reported once; nothing left to report


def test_a_broker_that_is_not_there_raises_within_a_bounded_time() -> None:
    settings = Settings(broker=f"127.0.0.1:{free_port()}", partitions=2)  # nothing listens there
    change = {"op": "upsert", "object_type": "contact", "id": "c1", "version": 1}

    started = time.monotonic()
    with pytest.raises(PublishFailed, match="cannot connect to Kafka"):
        Publisher(settings, producer_config=FAST_FAIL)
    assert time.monotonic() - started < 10

    # Without the bootstrap (a given api_version), the first send waits max_block_ms for metadata and raises.
    publisher = Publisher(settings, producer_config=dict(FAST_FAIL, api_version=(2, 8)))
    started = time.monotonic()
    with pytest.raises(PublishFailed, match="metadata"):
        publisher.publish_change("acme", change)
        publisher.flush()
    assert time.monotonic() - started < 10
    publisher.close(timeout=1)
