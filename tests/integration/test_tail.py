"""`segment-engine tail` as the reference subscriber, run as a subprocess against a real worker on the real
local broker: consumer-group resume (no repeats, no gaps), replay from offsets, segment filters, dedupe."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

import topics
from engine.admin import ensure_topics
from engine.broker import LocalBroker
from engine.settings import Settings
from tests.conftest import FIXTURES, Harness

REPO = Path(__file__).resolve().parents[2]

# (record id, fields) -> the fixture segments each one enters
WAVE_1 = [
    ("t1", {"country": "PL", "lifetime_value": 2000}),  # pl-high-value
    ("t2", {"is_subscribed": True, "tags": ["vip"]}),  # subscribed-vips
    ("t3", {"country": "PL", "lifetime_value": 5000, "is_subscribed": True, "tags": ["partner"]}),  # both
    ("t4", {"custom.plan": "enterprise", "language": "de"}),  # enterprise-de-pl
    *[(f"t{i}", {"country": "PL", "lifetime_value": 1500}) for i in range(5, 13)],  # pl-high-value
]
WAVE_1_EVENTS = 13
WAVE_2 = [
    ("t1", 2, {"lifetime_value": 10}),  # exits pl-high-value
    ("t2", 2, {"tags": []}),  # exits subscribed-vips
    ("t13", 1, {"country": "PL", "lifetime_value": 3000}),  # enters pl-high-value
]


@pytest.fixture(scope="module")
def engine(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One worker for the module (a worker start costs seconds), with the first wave of events on the topic."""
    run = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("tail")
    settings = Settings(broker=broker.address, app_id=f"test-{run}", topic_prefix=f"t{run}-", partitions=4,
                        data_dir=tmp / "data", workspaces_file=FIXTURES / "workspaces.json", session_timeout=3.0)
    ensure_topics(settings)
    harness = Harness(settings=settings, tmp=tmp)
    try:
        harness.define_fixture_segments()
        harness.start_worker()
        for record_id, fields in WAVE_1:
            harness.publisher.publish_change("acme", change(record_id, 1, fields))
        harness.publisher.flush()
        harness.wait_for(lambda: len(harness.events()) == WAVE_1_EVENTS, timeout=60, what="the first wave of events")
        yield harness
    finally:
        harness.close()


def change(record_id: str, version: int, fields: dict[str, Any]) -> dict[str, Any]:
    return {"op": "upsert", "object_type": "contact", "id": record_id, "version": version, "fields": fields}


def tail(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SEGMENT_ENGINE_BROKER=settings.broker, SEGMENT_ENGINE_TOPIC_PREFIX=settings.topic_prefix,
               SEGMENT_ENGINE_PARTITIONS=str(settings.partitions),
               SEGMENT_ENGINE_SESSION_TIMEOUT=str(settings.session_timeout))
    result = subprocess.run([sys.executable, "-m", "engine.cli", "tail", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def json_ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [orjson.loads(line)["id"] for line in result.stdout.splitlines()]


def positioned(settings: Settings) -> list[tuple[int, int, bytes]]:
    """(partition, offset, raw value) of every message on segment-events, read independently of tail."""
    name = topics.SEGMENT_EVENTS.full_name(settings.topic_prefix)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(name, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        found: list[tuple[int, int, bytes]] = []
        empty_polls = 0
        while empty_polls < 3:  # the local broker's end offsets can lag, so read until polls come back empty
            batch = consumer.poll(timeout_ms=300)
            empty_polls = 0 if batch else empty_polls + 1
            for records in batch.values():
                found.extend((r.partition, r.offset, r.value) for r in records)
        return sorted(found)
    finally:
        consumer.close()


def test_a_group_resumes_after_the_last_printed_event(engine: Harness) -> None:
    group = f"{engine.settings.topic_prefix}automation"
    before = engine.events()
    first = tail(engine.settings, "--group", group, "--from-beginning", "--json")
    assert Counter(json_ids(first)) == Counter(e["id"] for e in before)
    assert "0 duplicate(s) skipped" in first.stderr

    for record_id, version, fields in WAVE_2:
        engine.publisher.publish_change("acme", change(record_id, version, fields))
    engine.publisher.flush()
    engine.wait_for(lambda: len(engine.events()) == WAVE_1_EVENTS + len(WAVE_2), timeout=30, what="the second wave")
    new = Counter(e["id"] for e in engine.events()) - Counter(e["id"] for e in before)
    assert sum(new.values()) == len(WAVE_2)

    # --from-beginning only applies without a committed offset: the group resumes exactly after `first`.
    second = tail(engine.settings, "--group", group, "--from-beginning", "--json")
    assert Counter(json_ids(second)) == new
    assert not set(json_ids(second)) & set(json_ids(first))
    printed = [orjson.loads(line) for line in second.stdout.splitlines()]
    assert {(e["type"], e["data"]["record_id"]) for e in printed} == {
        ("segment.exited", "t1"), ("segment.exited", "t2"), ("segment.entered", "t13")}


def test_b_seek_replays_from_offsets_and_text_lines_show_them(engine: Harness) -> None:
    messages = positioned(engine.settings)
    per_partition = Counter(p for p, _, _ in messages)
    busiest, second = (p for p, _ in per_partition.most_common(2))
    assert per_partition[busiest] >= 2
    # Replay the busiest partition from its second event and another one from its start; park the rest at
    # their end (explicit, as the local broker's "latest" can lag behind the data).
    end = {p: max(o for q, o, _ in messages if q == p) + 1 if per_partition[p] else 0 for p in range(4)}
    start = {p: end[p] for p in range(4)} | {busiest: 1, second: 0}
    result = tail(engine.settings, *[arg for p, o in start.items() for arg in ("--seek", f"{p}:{o}")])

    expected = [(p, o, raw) for p, o, raw in messages if o >= start[p]]
    assert len(expected) == per_partition[busiest] - 1 + per_partition[second]
    lines = result.stdout.splitlines()
    shown = sorted((int(line[1:line.index("@")]), int(line[line.index("@") + 1:line.index(" ")]), line)
                   for line in lines)
    assert [(p, o) for p, o, _ in shown] == [(p, o) for p, o, _ in expected]
    for (_, _, line), (_, _, raw) in zip(shown, expected):
        data = orjson.loads(raw)["data"]
        assert f"acme/contact/{data['record_id']}" in line and data["segment_id"] in line
    # Per partition, lines come in offset order.
    for p in (busiest, second):
        offsets = [int(line[line.index("@") + 1:line.index(" ")]) for line in lines if line.startswith(f"p{p}@")]
        assert offsets == sorted(offsets)


def test_c_segment_filter_is_repeatable(engine: Harness) -> None:
    wanted = {"subscribed-vips", "enterprise-de-pl"}
    expected = Counter(e["id"] for e in engine.events() if e["data"]["segment_id"] in wanted)
    assert expected and len(expected) < len(engine.events())  # the filter has something to leave out
    result = tail(engine.settings, "--from-beginning", "--json", "--segment", "subscribed-vips",
                  "--segment", "enterprise-de-pl")
    assert Counter(json_ids(result)) == expected


def test_d_redelivered_events_are_printed_once(engine: Harness, harness: Harness) -> None:
    """The engine's events, each sent twice (as a redelivery would) to a fresh topic: printed once each, byte
    for byte, and the skipped count reported on stderr."""
    messages = positioned(engine.settings)
    producer = KafkaProducer(bootstrap_servers=harness.settings.bootstrap_servers)
    name = topics.SEGMENT_EVENTS.full_name(harness.settings.topic_prefix)
    try:
        for _, _, raw in messages + messages:
            event = orjson.loads(raw)
            key = f"acme/contact/{event['data'].get('record_id') or event['data']['segment_id']}"
            producer.send(name, key=key.encode(), value=raw)
        producer.flush()
    finally:
        producer.close()
    result = tail(harness.settings, "--from-beginning", "--json")
    assert Counter(result.stdout.splitlines()) == Counter(raw.decode() for _, _, raw in messages)
    assert f"{len(messages)} event(s) printed, {len(messages)} duplicate(s) skipped" in result.stderr
