"""The input topics a fetch at a time (engine/consumer.py): a partition's fetched records reach the agent
as one Faust message, and Faust's commit must still cover every one of them. A backlog of single-change
messages, read in fetches of many records, is applied exactly as the oracle says; the consumer group's
committed offsets reach the end of every input partition; and a worker restarted on the same data
directory re-reads nothing (had the earlier offsets of a fetch not been accounted for, Faust's commit
would stop at the first fetch and every restart would re-read the partition from there)."""
from __future__ import annotations

import asyncio
import random
import re
import urllib.request

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

import topics
from engine.sample_data import contact_changes
from engine.true_ends import true_ends
from tests.conftest import Harness
from tests.oracle import Oracle, fold_events


def redelivered(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(r"^segment_engine_redelivered_messages_total (\S+)$", text, re.M)
    assert found, "the redelivered counter is exported from start"
    return float(found.group(1))


def test_a_backlog_read_a_fetch_at_a_time_is_applied_and_committed_through_its_last_record(harness: Harness) -> None:
    rules = harness.define_fixture_segments()
    changes = list(contact_changes(random.Random(5), 3000, records=300))
    oracle = Oracle(harness.catalog(), rules)

    def backlog(part: list[dict]) -> None:  # one change per message, published faster than read: fetches of many
        oracle.apply_all(part)
        for change in part:
            harness.publisher.publish_change("acme", change)
        harness.publisher.flush()

    backlog(changes[:2000])  # before the worker starts
    worker = harness.start_worker("data")
    expected = oracle.membership()
    harness.wait_for(lambda: fold_events(harness.events()) == expected, timeout=120, what="folded events == oracle")
    harness.wait_for(lambda: committed_to_the_end(harness), timeout=60,
                     what="committed offsets at the end of every input partition")
    assert redelivered(worker.web_port) == 0

    # Restarted on the same data directory, the worker resumes at the committed offsets (its first fetch
    # starts right after them) and re-reads nothing; a new backlog is committed through its end again.
    worker.stop()
    again = harness.start_worker("data")
    backlog(changes[2000:])
    expected = oracle.membership()
    harness.wait_for(lambda: fold_events(harness.events()) == expected, timeout=120, what="folded events == oracle")
    harness.wait_for(lambda: committed_to_the_end(harness), timeout=60, what="the restarted worker committed its backlog")
    assert redelivered(again.web_port) == 0, "a restart on the same data directory re-read applied messages"


def committed_to_the_end(harness: Harness) -> bool:
    """The worker's consumer group has committed every input partition through its last message."""
    settings = harness.settings
    names = [spec.full_name(settings.topic_prefix)
             for spec in (topics.RECORD_CHANGES, topics.BEHAVIOUR_EVENTS, topics.CONVERSATIONS)]
    partitions = [TopicPartition(name, p) for name in names for p in range(settings.partitions)]
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        reported = consumer.end_offsets(partitions)
        ends = asyncio.run(true_ends(settings.bootstrap_servers, {(tp.topic, tp.partition): reported[tp] for tp in partitions}))
        committed = {tp: meta.offset for tp, meta in admin.list_group_offsets({settings.app_id: partitions})[settings.app_id].items()}
        return all(committed.get(tp, 0) == ends[(tp.topic, tp.partition)] for tp in partitions)
    finally:
        consumer.close()
        admin.close()
