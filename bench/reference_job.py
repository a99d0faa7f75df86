"""REFERENCE, not the engine: the plain asyncio job. The best plain Python does with the engine's rules and the
engine's durability order, to compare the engine against (issue 17). No Faust, no consumer group.

One process, one event loop, a loop of fetches. Per fetch (`getmany` over every partition of the record-changes
topic, all assigned from the start):

1. `orjson.loads` of every message (`record.change` or `record.changes`); per change `normalize_fields` against
   the workspace's catalog and `engine.membership.apply_change` over the segment set of an
   `engine.registry.SegmentRegistry` loaded with the same definitions as the engine: the engine's own compiled
   rules (`engine.rules.load_rule`), chosen through its field index and guard index (engine/rules/guards.py),
   i.e. the engine's pure core. The record's state is read from RocksDB (or from this fetch's pending states:
   a record changed twice in one fetch is read once);
2. the `segment.entered` / `segment.exited` events (the engine's envelope and ids) produced as record batches
   per partition (`create_batch` / `send_batch`, like `Engine.send_batches`) and ACKNOWLEDGED;
3. only then one RocksDB `WriteBatch` with every record the fetch changed (`RecordState.to_bytes`, the engine's
   encoding) and each partition's position (offsets in state, like the engine);
4. one changelog record per changed record (and the position, last) produced to a changelog topic as record
   batches on the input partition; not awaited per fetch (the engine does not either), all awaited before the
   clock stops.

Left out, on purpose: schema validation and the partition check of each change (a bad message would crash it:
no dead letters), the member index and per-segment counts (no API to serve), the scheduler and behavioural
events (the workload has neither), metrics, rebalancing and restore. So it does less than the engine.

Configured by env: BENCH_BROKER, BENCH_WARMUP_TOPIC + BENCH_WARMUP_EXPECT (messages applied first, untimed: the
same full creates the engine gets before a phase), BENCH_TOPIC + BENCH_EXPECT (the measured messages),
BENCH_EVENTS_TOPIC, BENCH_CHANGELOG_TOPIC, BENCH_PARTITIONS, BENCH_DATA_DIR, BENCH_SEGMENTS_FILE (JSON list of
segment definitions), BENCH_TIMEOUT. Prints one JSON line: messages, changes, events, records stored, the
monotonic times of the first measured fetch and of the end (last changelog batch acknowledged), peak RSS (kB).
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rocksdict import BlockBasedIndexType, BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from bench.raw_consumer import vm_hwm_kb
from engine.envelope import encode, envelope, record_key, transition_id, utc_now_iso
from engine.intake import partition_for
from engine.membership import Change, RecordState, apply_change
from engine.registry import SegmentRegistry, SegmentSet
from engine.rules import normalize_fields
from engine.settings import SAMPLES, Settings
from engine.state import POSITION_KEY
from engine.workspaces import load_workspaces

WORKSPACE = "demo"
# The engine producer's record batch size (engine/app.py: half the message limit). aiokafka's default 16 KiB
# takes ~35 round trips for a fetch's 2 MB of events: one request in flight per broker, one batch per partition.
BATCH_BYTES = Settings.max_message_bytes // 2


async def send_batches(producer: AIOKafkaProducer, topic: str, partition: int,
                       records: Iterable[tuple[bytes | None, bytes]]) -> list[Any]:
    """Record batches on one partition, one send per batch (as Checkpoint.send_batches); their futures."""
    futures = []
    batch, count = producer.create_batch(), 0
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch, count = producer.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None)
        count += 1
    if count:
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


def rocksdb_options() -> Options:
    """Faust's RocksDB options (faust.stores.rocksdb.RocksDBOptions, rocksdict driver), without importing Faust."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(67_108_864)
    options.set_target_file_size_base(67_108_864)
    options.set_max_write_buffer_number(3)
    table = BlockBasedOptions()
    table.set_bloom_filter(3, block_based=True)
    table.set_block_cache(Cache(2 * 1024 ** 3))
    table.set_index_type(BlockBasedIndexType.binary_search())
    options.set_block_based_table_factory(table)
    return options


class Job:
    def __init__(self, env: dict[str, str]) -> None:
        self.broker = env["BENCH_BROKER"]
        self.partitions = int(env.get("BENCH_PARTITIONS", "4"))
        self.events_topic = env["BENCH_EVENTS_TOPIC"]
        self.changelog_topic = env["BENCH_CHANGELOG_TOPIC"]
        self.registry = SegmentRegistry(load_workspaces(SAMPLES / "workspaces.json"))
        for definition in orjson.loads(Path(env["BENCH_SEGMENTS_FILE"]).read_bytes()):
            self.registry.apply({"type": "segment.defined", "workspace": WORKSPACE,
                                 "data": dict(definition, version=1, status="active")})
        self.sets: dict[tuple[str, str], SegmentSet] = {}
        self.db = Rdict(str(Path(env["BENCH_DATA_DIR"]) / "state"), options=rocksdb_options())
        self.producer: AIOKafkaProducer | None = None
        self.event_partitions = self.partitions
        self.changelog_futures: list[Any] = []
        self.changes = self.events = 0
        self.records: set[bytes] = set()

    def segment_set(self, workspace: str, object_type: str) -> SegmentSet:
        scope = (workspace, object_type)
        found = self.sets.get(scope)
        if found is None:
            found = self.sets[scope] = self.registry.segment_set(workspace, object_type)
        return found

    async def apply_fetch(self, topic: str, fetched: dict[TopicPartition, list[Any]]) -> int:
        """Everything the fetch's messages change: events acknowledged, then one state write batch, then the
        changelog. Returns the messages applied."""
        now = time.time_ns() // 1_000_000
        stamp = utc_now_iso()
        db = self.db
        pending: dict[bytes, RecordState] = {}
        changed: dict[int, dict[bytes, RecordState]] = {}  # input partition -> record key -> new state
        positions: dict[int, int] = {}
        events: dict[int, list[tuple[bytes, bytes]]] = {}
        messages = 0
        for tp, records in fetched.items():
            part = changed.setdefault(tp.partition, {})
            for record in records:
                message = orjson.loads(record.value)
                kind = message["type"]
                if kind == "record.change":
                    items = (message["data"],)
                elif kind == "record.changes":
                    items = message["data"]["changes"]
                else:
                    continue
                workspace = message["workspace"]
                for item in items:
                    object_type, record_id = item["object_type"], item["id"]
                    segments = self.segment_set(workspace, object_type)
                    catalog = self.registry.workspaces.catalog(workspace, object_type)
                    fields = normalize_fields(item.get("fields") or {}, catalog) if item["op"] == "upsert" else {}
                    key_text = record_key(workspace, object_type, record_id)
                    key = key_text.encode()
                    prev = pending.get(key)
                    if prev is None:
                        raw = db.get(key)
                        prev = RecordState.from_bytes(raw) if raw is not None else None
                    outcome = apply_change(prev, Change(item["op"], object_type, record_id, item["version"], fields),
                                           segments, now)
                    self.changes += 1
                    if outcome.state is None:
                        continue  # stale
                    pending[key] = part[key] = outcome.state
                    if outcome.transitions:
                        out = events.setdefault(partition_for(key_text, self.event_partitions), [])
                        for t in outcome.transitions:
                            data = {"object_type": object_type, "segment_id": t.segment_id, "record_id": record_id,
                                    "record_version": t.record_version, "segment_version": t.segment_version,
                                    "cause": t.cause, "at": now}
                            event_id = transition_id(workspace, object_type, record_id, t.segment_id, t.segment_version,
                                                     t.record_version, t.event_type, t.nonce)
                            out.append((key, encode(envelope(t.event_type, data, workspace=workspace, id_=event_id,
                                                             time=stamp))))
                        self.events += len(outcome.transitions)
                messages += 1
            if records:
                positions[tp.partition] = records[-1].offset
        # 1. events produced and acknowledged before any state is written
        acks = []
        for partition, records in events.items():
            acks.extend(await send_batches(self.producer, self.events_topic, partition, records))
        if acks:
            await asyncio.gather(*acks)
        # 2. one RocksDB write batch: every changed record, then each partition's position
        batch = WriteBatch(raw_mode=True)
        changelog: dict[int, list[tuple[bytes, bytes]]] = {}
        for partition, states in changed.items():
            log = changelog.setdefault(partition, [])
            for key, state in states.items():
                value = state.to_bytes()
                batch.put(key, value)
                log.append((key, value))
            self.records.update(states)
        for partition, offset in positions.items():
            key = POSITION_KEY + f"{topic}/{partition}".encode()
            value = str(offset).encode()
            batch.put(key, value)
            changelog[partition].append((key, value))
        db.write(batch)
        # 3. the changelog (acknowledgements collected, awaited before the end)
        for partition, records in changelog.items():
            if records:
                self.changelog_futures.extend(await send_batches(self.producer, self.changelog_topic, partition,
                                                                  records))
        if len(self.changelog_futures) > 256:
            self.changelog_futures = [f for f in self.changelog_futures if not f.done()]
        return messages

    async def consume(self, topic: str, expect: int, deadline: float) -> tuple[float | None, float | None, int]:
        """Apply `expect` messages of `topic` (every partition assigned, from the beginning); the times of the
        first non-empty fetch and of the end (every changelog batch acknowledged)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.broker, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=2 * 1_048_576)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            messages = 0
            first = None
            while messages < expect and time.monotonic() < deadline:
                fetched = await consumer.getmany(timeout_ms=200)
                if not fetched:
                    continue
                if first is None:
                    first = time.monotonic()
                messages += await self.apply_fetch(topic, fetched)
            if self.changelog_futures:
                await asyncio.gather(*self.changelog_futures)
                self.changelog_futures = []
            return first, time.monotonic(), messages
        finally:
            await consumer.stop()

    async def run(self, env: dict[str, str]) -> dict[str, Any]:
        timeout = float(env.get("BENCH_TIMEOUT", "180"))
        self.producer = AIOKafkaProducer(bootstrap_servers=self.broker, acks="all", linger_ms=0,
                                         max_request_size=2 * 1_048_576, max_batch_size=BATCH_BYTES)
        await self.producer.start()
        try:
            self.event_partitions = len(await self.producer.partitions_for(self.events_topic))
            warm_expect = int(env.get("BENCH_WARMUP_EXPECT", "0"))
            if warm_expect:
                await self.consume(env["BENCH_WARMUP_TOPIC"], warm_expect, time.monotonic() + timeout)
            self.changes = self.events = 0
            expect = int(env["BENCH_EXPECT"])
            first, last, messages = await self.consume(env["BENCH_TOPIC"], expect, time.monotonic() + timeout)
        finally:
            await self.producer.stop()
            self.db.close()
        return {"messages": messages, "changes": self.changes, "events": self.events, "records": len(self.records),
                "first": first, "last": last, "vm_hwm_kb": vm_hwm_kb()}


def main() -> int:
    env = dict(os.environ)
    result = asyncio.run(Job(env).run(env))
    print(orjson.dumps(result).decode(), flush=True)
    return 0 if result["messages"] >= int(env["BENCH_EXPECT"]) else 1


if __name__ == "__main__":
    sys.exit(main())
