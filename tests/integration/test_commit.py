"""The commit protocol (engine/commit.py) on the real broker and a real RocksDB file: with groups handed over
while earlier ones are still in flight, each partition's events arrive once and in the order they were
applied, and a group's state is written only after all its events were acknowledged."""
from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from rocksdict import Options, Rdict

from engine.broker import LocalBroker
from engine.commit import Checkpoint
from engine.intake import partition_for
from engine.state import POSITION_KEY, OneDatabase, StateStore

PARTITIONS = 3


Log = list[tuple[str, int]]  # ("acked", an event's offset) and ("state", a group's applied position), in order


async def _run(address: str, events_topic: str, changelog: str, db: Any, seed: int) -> tuple[list[tuple[str, int]], Log]:
    producer = AIOKafkaProducer(bootstrap_servers=address, linger_ms=0)
    await producer.start()
    store = StateStore(OneDatabase(db))
    app = SimpleNamespace(producer=SimpleNamespace(_producer=producer))  # what Checkpoint reads of the Faust app
    checkpoint = Checkpoint(app, store, OneDatabase(db), changelog, {events_topic: PARTITIONS})
    log: Log = []
    send = checkpoint.send

    async def logged_send(out: list[Any]) -> list[Any]:
        acks = await send(out)
        offsets = [int(value.rsplit(b":", 1)[1]) for _, _, value in out]
        asyncio.gather(*acks).add_done_callback(lambda _: log.extend(("acked", o) for o in offsets))
        return acks

    commit = checkpoint.commit

    async def logged_commit(writes: Any) -> None:
        log.append(("state", int(writes.pending[POSITION_KEY + b"in"])))
        await commit(writes)

    checkpoint.send = logged_send  # type: ignore[method-assign]
    checkpoint.commit = logged_commit  # type: ignore[method-assign]
    rng = random.Random(seed)
    applied: list[tuple[str, int]] = []
    try:
        for offset in range(1_500):
            key = f"rec-{rng.randrange(40)}"
            store.begin(0)
            checkpoint.group.out.append((events_topic, key.encode(), f"{key}:{offset}".encode()))
            store.set_position("in", offset)
            checkpoint.group.records += 1
            applied.append((key, offset))
            if rng.random() < 0.2:
                await checkpoint.commit_behind()
            if rng.random() < 0.5:
                await asyncio.sleep(0)
        await checkpoint.commit_pending()
    finally:
        await producer.stop()
    return applied, log


def test_pipelined_commits_keep_event_order_and_write_state_after_acks(broker: LocalBroker, tmp_path: Path) -> None:
    events_topic, changelog = f"events-{uuid.uuid4().hex[:8]}", f"changelog-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.address)
    admin.create_topics([NewTopic(events_topic, PARTITIONS, 1), NewTopic(changelog, 1, 1)])
    admin.close()
    db = Rdict(str(tmp_path / "state"), Options(raw_mode=True))
    try:
        applied, log = asyncio.run(_run(broker.address, events_topic, changelog, db, seed=7))
        assert StateStore(OneDatabase(db)).applied_position(0, "in") == len(applied) - 1
    finally:
        db.close()

    consumer = KafkaConsumer(bootstrap_servers=broker.address, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(events_topic, p) for p in range(PARTITIONS)])
    received: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}

    def poll() -> None:
        for records in consumer.poll(timeout_ms=500).values():
            for message in records:
                received[message.partition].append(message.value.decode())

    deadline = time.monotonic() + 30
    while sum(map(len, received.values())) < len(applied) and time.monotonic() < deadline:
        poll()
    poll()  # anything beyond them (each event once)
    consumer.close()
    for partition in range(PARTITIONS):
        expected = [f"{key}:{offset}" for key, offset in applied if partition_for(key, PARTITIONS) == partition]
        assert received[partition] == expected, f"partition {partition}: each event once, in applied order"

    # Each state write (the applied position of its group's last record) comes after every event up to it.
    acked: set[int] = set()
    states = 0
    for what, position in log:
        if what == "acked":
            acked.add(position)
        else:
            states += 1
            missing = set(range(position + 1)) - acked
            assert not missing, f"state at offset {position} written before events {sorted(missing)[:5]} were acked"
    assert states > 10, "the run handed over many groups"
