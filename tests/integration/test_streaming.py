"""End to end on the real broker: random changes in, membership folded from the emitted events must equal
a from-scratch naive evaluation of the final record states, for every segment."""
from __future__ import annotations

import base64
import random
import urllib.request

import orjson

import topics
from engine.envelope import encode, envelope, record_key
from engine.intake import partition_for
from engine.sample_data import contact_changes
from tests.conftest import Harness
from tests.oracle import Oracle, fold_events


def test_single_and_batched_changes_match_the_oracle(harness: Harness) -> None:
    rules = harness.define_fixture_segments()
    rng = random.Random(7)
    changes = list(contact_changes(rng, 3000, records=400))
    # Stale replays: old versions re-sent after newer ones must be ignored.
    stale = [dict(c) for c in rng.sample(changes[:1500], 60)]
    harness.start_worker()
    for change in changes[:1500]:
        harness.publisher.publish_change("acme", change)
    for change in stale:
        harness.publisher.publish_change("acme", change)
    harness.publisher.publish_batches("acme", changes[1500:], batch_size=25)
    harness.publisher.flush()

    oracle = Oracle(harness.catalog(), rules).apply_all(changes + stale)
    expected = oracle.membership()
    assert len(expected) > 50, "workload too unselective to prove anything"
    harness.wait_for(lambda: fold_events(harness.events()) == expected, what="folded events == oracle")

    events = harness.events()
    # Every transition the sequential all-segments oracle implies was emitted, with its record version.
    emitted = {(e["type"], e["data"]["record_id"], e["data"]["segment_id"], e["data"]["record_version"]) for e in events}
    assert set(oracle.transitions) <= emitted
    assert all(e["workspace"] == "acme" and e["data"]["object_type"] == "contact" for e in events)


def test_poison_pills_are_dead_lettered_and_the_stream_goes_on(harness: Harness) -> None:
    rules = harness.define_fixture_segments()
    harness.start_worker()
    good = list(contact_changes(random.Random(3), 200, records=50))
    # Pick a partition and surround bad messages with good ones on that same partition.
    target = partition_for(record_key("acme", "contact", good[0]["id"]), harness.settings.partitions)
    bad_messages = {
        "malformed_json": b'{"specversion": "1.0", "id": "x", "sour',
        "schema_violation": encode(envelope("record.change", {"op": "upsert", "object_type": "contact", "id": "c1", "version": "seven"}, workspace="acme")),
        "unknown_workspace": encode(envelope("record.change", {"op": "upsert", "object_type": "contact", "id": "c1", "version": 1}, workspace="initech")),
        "message_too_large": b"{" + b" " * (harness.settings.max_message_bytes + 1) + b"}",
    }
    for change in good[:100]:
        harness.publisher.publish_change("acme", change)
    for payload in bad_messages.values():
        harness.publisher.publish_raw(payload, key=b"poison", partition=target)
    # A batch with one bad change (wrong field type): the rest of the batch is applied.
    batch_items = [c for c in good[100:] if partition_for(record_key("acme", "contact", c["id"]), 4) == target]
    bad_change = {"op": "upsert", "object_type": "contact", "id": batch_items[0]["id"], "version": 10**9,
                  "fields": {"lifetime_value": "a lot"}}
    batch = envelope("record.changes", {"changes": batch_items[:3] + [bad_change] + batch_items[3:]}, workspace="acme")
    harness.publisher.publish_raw(encode(batch), key=b"batch", partition=target)
    others = [c for c in good[100:] if c not in batch_items]
    for change in others:
        harness.publisher.publish_change("acme", change)
    harness.publisher.flush()

    expected = Oracle(harness.catalog(), rules).apply_all(good[:100] + batch_items + others).membership()
    harness.wait_for(lambda: fold_events(harness.events()) == expected, what="valid changes all applied")

    letters = harness.wait_for(lambda: (l := harness.read_topic(topics.DEAD_LETTERS)) and len(l) >= 5 and l, what="dead letters")
    by_code = {l["data"]["code"]: l["data"] for l in letters}
    for code, payload in bad_messages.items():
        assert code in by_code, f"{code} not dead-lettered: {sorted(by_code)}"
        letter = by_code[code]
        assert base64.b64decode(letter["value_b64"]) == payload  # nothing lost: the original bytes
        assert letter["partition"] == target and letter["offset"] >= 0 and letter["reason"]
    # The worker's /metrics counts each rejection by code, and the applied changes.
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{harness.workers[0].web_port}/metrics", timeout=5).read().decode()
    for code in [*bad_messages, "field_type"]:
        assert f'segment_engine_dead_letters_total{{code="{code}"}} 1.0' in metrics
    assert 'segment_engine_changes_total{outcome="deadlettered"} 5.0' in metrics  # 4 messages + 1 change of a batch
    field_letter = by_code["field_type"]
    assert field_letter["change_index"] == 3 and "lifetime_value" in field_letter["reason"]
    assert orjson.loads(base64.b64decode(field_letter["value_b64"]))["data"]["changes"][3] == bad_change
